/**
 * `keygate/redis`: the Redis store, for keys and exact limits shared by every process.
 * Loads nothing itself: pass your own ioredis client.
 *
 * @packageDocumentation
 */
export { RedisStore } from './stores/redis/redis-store.js';
export type { RedisStoreOptions, RedisClient } from './stores/redis/redis-store.js';
