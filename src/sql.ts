/**
 * `keygate/sql`: the SQL store, for PostgreSQL (`pg`) and SQLite (`better-sqlite3`).
 *
 * This entry point loads neither driver: you create the client and hand it to `SqlStore`, so only
 * the driver you use needs to be installed, and its types are not required either (the client
 * shapes are described structurally).
 *
 * @packageDocumentation
 */
export { SqlStore } from './stores/sql/sql-store.js';
export type { SqlStoreOptions, PostgresStoreOptions, SqliteStoreOptions } from './stores/sql/options.js';
export type {
  PostgresClient,
  PostgresQueryResult,
  SqliteDatabase,
  SqliteStatement,
  SqliteTransaction,
} from './stores/sql/clients.js';
export { sqlSchema } from './stores/sql/schema.js';
export type { SqlSchemaOptions } from './stores/sql/schema.js';
export { DEFAULT_TABLE } from './stores/sql/table-name.js';
export type { SqlDialect } from './stores/sql/values.js';
