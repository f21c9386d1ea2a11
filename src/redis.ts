/**
 * `keygate/redis`: the Redis store. Not implemented in this release; the entry point exists so the
 * exports map is stable and a premature import fails with a clear message.
 */

/** Placeholder for the Redis store (coming in a later release). */
export class RedisStore {
  constructor() {
    throw new Error('keygate/redis: RedisStore is not implemented yet in this version of keygate. Use MemoryStore for now.');
  }
}
