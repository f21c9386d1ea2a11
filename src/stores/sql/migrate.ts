/**
 * `migrate()`, per dialect: create the table and its indexes when missing, and add the columns of
 * later record schema versions to a table created before them (see `schema.ts`). Idempotent, and
 * safe when several processes migrate the same table at once.
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
  ];
  await client.query(`${script.join(';\n')};`);
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
  }).immediate();
}
