/**
 * `keygate/sql`: the SQL store. Not implemented in this release; the entry point exists so the
 * exports map is stable and a premature import fails with a clear message.
 */

/** Placeholder for the SQL store (coming in a later release). */
export class SqlStore {
  constructor() {
    throw new Error('keygate/sql: SqlStore is not implemented yet in this version of keygate. Use MemoryStore for now.');
  }
}
