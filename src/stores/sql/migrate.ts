/**
 * `migrate()`, per dialect: create the table and its indexes when missing, add the columns of
 * later record schema versions to a table created before them (see `schema.ts`), and create the
 * tables named from it (audit trail, usage cells, usage batch ids, alert claims: `companions.ts`)
 * and their indexes when missing. Idempotent, and safe when several processes migrate the same
 * table at once.
 *
 * Both take the column list as a parameter (the record's columns by default) so that tests can
 * migrate a table to a schema with fields the record does not have yet.
 */
import { crc32 } from '../../key/checksum.js';
import type { PostgresClient, SqliteDatabase } from './clients.js';
import { type Column, RECORD_COLUMNS } from './columns.js';
import { tableSchema } from './schema.js';
import type { TableName } from './table-name.js';

/** First half of the advisory lock key of `migrate()`: "kgat". */
const MIGRATION_LOCK_CLASS = 0x6b676174;

/**
 * PostgreSQL: one simple-protocol query holding every statement. PostgreSQL runs such a query as a
 * single transaction, so the advisory lock taken first is held until the last index exists: two
 * processes migrating at once take turns instead of racing on the catalog (which `IF NOT EXISTS`
 * alone does not prevent), and it works on a Pool, whose successive queries may use different
 * connections. Added columns are `ADD COLUMN IF NOT EXISTS`, inside the same transaction.
 */
export async function migratePostgres(client: PostgresClient, table: TableName, columns: readonly Column[] = RECORD_COLUMNS): Promise<void> {
  const schema = tableSchema('postgres', table, columns);
  const lockKey = crc32(`keygate:migrate:${table.text}`) | 0;
  const script = [
    `SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_CLASS}, ${lockKey})`,
    schema.createTable,
    ...schema.addColumns.map((add) => add.statement),
    ...schema.indexes,
    ...schema.companions,
  ];
  try {
    await client.query(`${script.join(';\n')};`);
  } catch (error) {
    throw missingSchema(error, table) ?? error;
  }
}

/** PostgreSQL's `invalid_schema_name` SQLSTATE: the schema of a qualified name does not exist. */
const POSTGRES_INVALID_SCHEMA_NAME = '3F000';

/**
 * The error `migrate()` rejects with when the table's schema does not exist (`3F000`), or
 * `undefined` for any other error. The raw pg error says `schema "auth" does not exist` with no
 * word of what to do; this one says it, keeps the driver's `code` for code that matches on it,
 * and the driver's error as `cause`. Without a schema in the name, PostgreSQL raises `3F000` when
 * the connection's `search_path` names no schema that exists.
 */
function missingSchema(error: unknown, table: TableName): Error | undefined {
  if (error === null || typeof error !== 'object' || (error as { code?: unknown }).code !== POSTGRES_INVALID_SCHEMA_NAME) return undefined;
  const schema = table.schema;
  // Unquoted identifiers fold to lower case: quote a schema that has capitals.
  const written = schema === undefined || schema === schema.toLowerCase() ? schema : `"${schema}"`;
  const message =
    schema === undefined
      ? `keygate: no schema to create table "${table.text}" in: the connection's search_path names no schema that exists ` +
        '(create one, set search_path, or give the table as "schema.name")'
      : `keygate: schema "${schema}" does not exist: create it first (CREATE SCHEMA ${written}) ` +
        `before migrate() creates table "${table.text}"`;
  return Object.assign(new Error(message, { cause: error }), { code: POSTGRES_INVALID_SCHEMA_NAME });
}

/**
 * SQLite: one `BEGIN IMMEDIATE` transaction, which holds the database's write lock from the start,
 * so a concurrent migrate in another process waits and then sees the finished table. SQLite has no
 * `ADD COLUMN IF NOT EXISTS`: the table's columns are read (`PRAGMA table_info`) inside that
 * transaction, and only the missing ones are added.
 */
export function migrateSqlite(db: SqliteDatabase, table: TableName, columns: readonly Column[] = RECORD_COLUMNS): void {
  const schema = tableSchema('sqlite', table, columns);
  db.transaction(() => {
    db.exec(schema.createTable);
    if (schema.addColumns.length > 0) {
      const present = new Set(db.prepare('SELECT "name" FROM pragma_table_info(?)').all(table.text).map((row) => (row as { name: string }).name));
      for (const add of schema.addColumns) if (!present.has(add.column)) db.exec(add.statement);
    }
    for (const index of schema.indexes) db.exec(index);
    for (const statement of schema.companions) db.exec(statement);
  }).immediate();
}
