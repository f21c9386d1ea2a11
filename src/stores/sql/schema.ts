/**
 * The DDL of the key table, per dialect: what `migrate()` runs, statement by statement, and what
 * `docs/sql/*.sql` ship for teams that run migrations with their own tool. Every statement is
 * idempotent (`IF NOT EXISTS`).
 */
import { COUNTER_COLUMNS, type ColumnKind, RECORD_COLUMNS } from './columns.js';
import { DEFAULT_TABLE, type TableName, parseTableName } from './table-name.js';
import type { SqlDialect } from './values.js';

type CounterColumn = (typeof COUNTER_COLUMNS)[number];

const POSTGRES_TYPES: Record<ColumnKind, string> = {
  text: 'text NOT NULL',
  optionalText: 'text',
  list: "text[] NOT NULL DEFAULT '{}'",
  json: "jsonb NOT NULL DEFAULT '{}'",
  rateLimit: 'jsonb',
  count: 'bigint NOT NULL DEFAULT 0',
  nullableCount: 'bigint',
  instant: 'timestamptz(3) NOT NULL',
  nullableInstant: 'timestamptz(3)',
};

const SQLITE_TYPES: Record<ColumnKind, string> = {
  text: 'TEXT NOT NULL',
  optionalText: 'TEXT',
  list: "TEXT NOT NULL DEFAULT '[]'",
  json: "TEXT NOT NULL DEFAULT '{}'",
  rateLimit: 'TEXT',
  count: 'INTEGER NOT NULL DEFAULT 0',
  nullableCount: 'INTEGER',
  instant: 'INTEGER NOT NULL',
  nullableInstant: 'INTEGER',
};

const POSTGRES_COMMENTS: Partial<Record<ColumnKind, string>> = {
  rateLimit: '{ perSecond?, burst?, perDay? } or NULL',
};

const SQLITE_COMMENTS: Partial<Record<ColumnKind, string>> = {
  list: 'JSON array of strings',
  json: 'JSON object',
  rateLimit: 'JSON { perSecond?, burst?, perDay? } or NULL',
  instant: 'epoch milliseconds',
  nullableInstant: 'epoch milliseconds',
};

const COUNTER_TYPES: Record<SqlDialect, Record<CounterColumn, string>> = {
  postgres: {
    day: 'bigint NOT NULL DEFAULT -1',
    day_count: 'bigint NOT NULL DEFAULT 0',
    tokens: 'double precision',
    tokens_at: 'double precision NOT NULL DEFAULT 0',
  },
  sqlite: {
    day: 'INTEGER NOT NULL DEFAULT -1',
    day_count: 'INTEGER NOT NULL DEFAULT 0',
    tokens: 'REAL',
    tokens_at: 'REAL NOT NULL DEFAULT 0',
  },
};

const COUNTER_COMMENTS: Record<CounterColumn, string> = {
  day: 'counters: UTC day index (epoch ms / 86400000) that day_count belongs to',
  day_count: 'counters: requests admitted in that UTC day',
  tokens: 'counters: token bucket level at tokens_at (NULL = full)',
  tokens_at: 'counters: latest admitted instant, epoch milliseconds',
};

/** The id and key prefix compare byte for byte, whatever the database's collation. */
const BINARY_COLLATED = new Set(['id', 'key_prefix']);

/** Indexes: the key lookup, then list order, then each list filter followed by list order. */
const INDEXES: readonly { suffix: string; unique?: true; columns: readonly string[] }[] = [
  { suffix: 'key_prefix_key', unique: true, columns: ['key_prefix'] },
  { suffix: 'created_at_id_idx', columns: ['created_at', 'id'] },
  { suffix: 'owner_id_idx', columns: ['owner_id', 'created_at', 'id'] },
  { suffix: 'tenant_id_idx', columns: ['tenant_id', 'created_at', 'id'] },
  { suffix: 'status_idx', columns: ['status', 'created_at', 'id'] },
];

function columnLines(dialect: SqlDialect): { definition: string; comment?: string }[] {
  const lines: { definition: string; comment?: string }[] = [];
  for (const column of RECORD_COLUMNS) {
    const quoted = `"${column.name}"`.padEnd(18);
    if (dialect === 'postgres') {
      const type = POSTGRES_TYPES[column.kind];
      const collated = BINARY_COLLATED.has(column.name) ? type.replace('text', 'text COLLATE "C"') : type;
      const comment = POSTGRES_COMMENTS[column.kind];
      lines.push({ definition: `${quoted} ${collated}`, ...(comment ? { comment } : {}) });
    } else {
      const comment = SQLITE_COMMENTS[column.kind];
      lines.push({ definition: `${quoted} ${SQLITE_TYPES[column.kind]}`, ...(comment ? { comment } : {}) });
    }
  }
  for (const counter of COUNTER_COLUMNS) {
    lines.push({ definition: `${`"${counter}"`.padEnd(18)} ${COUNTER_TYPES[dialect][counter]}`, comment: COUNTER_COMMENTS[counter] });
  }
  return lines;
}

function createTable(dialect: SqlDialect, table: TableName): string {
  const lines = columnLines(dialect).map((line) => ({ text: `  ${line.definition},`, comment: line.comment }));
  lines.push({ text: `  CONSTRAINT ${table.indexName('pkey')} PRIMARY KEY ("id"),`, comment: undefined });
  lines.push({
    text: `  CONSTRAINT ${table.indexName('status_check')} CHECK ("status" IN ('active', 'suspended', 'revoked'))`,
    comment: undefined,
  });
  const width = Math.max(...lines.filter((line) => line.comment).map((line) => line.text.length));
  const body = lines.map((line) => (line.comment ? `${line.text.padEnd(width)} -- ${line.comment}` : line.text)).join('\n');
  return `CREATE TABLE IF NOT EXISTS ${table.qualified} (\n${body}\n)${dialect === 'sqlite' ? ' STRICT' : ''}`;
}

/**
 * The statements that create the table and its indexes, in order, without trailing semicolons.
 * `migrate()` runs exactly these (PostgreSQL: in one transaction under an advisory lock; SQLite:
 * in one `BEGIN IMMEDIATE` transaction).
 */
export function schemaStatements(dialect: SqlDialect, table: TableName): string[] {
  const indexes = INDEXES.map(
    (index) =>
      `CREATE ${index.unique ? 'UNIQUE ' : ''}INDEX IF NOT EXISTS ${table.indexName(index.suffix)} ` +
      `ON ${table.qualified} (${index.columns.map((column) => `"${column}"`).join(', ')})`,
  );
  return [createTable(dialect, table), ...indexes];
}

/** Options of {@link sqlSchema}. */
export interface SqlSchemaOptions {
  /** The dialect to write DDL for. */
  dialect: SqlDialect;
  /** The table name, as given to `SqlStore`. @default 'keygate_api_keys' */
  table?: string;
}

/**
 * The SQL script `SqlStore#migrate()` runs, for teams that apply migrations with their own tool
 * (Flyway, Prisma migrate, node-pg-migrate, …). Idempotent: every statement is `IF NOT EXISTS`.
 *
 * @example
 * ```ts
 * import { writeFileSync } from 'node:fs';
 * import { sqlSchema } from 'keygate/sql';
 * writeFileSync('migrations/0042_api_keys.sql', sqlSchema({ dialect: 'postgres', table: 'auth.api_keys' }));
 * ```
 */
export function sqlSchema(options: SqlSchemaOptions): string {
  const { dialect } = options;
  if (dialect !== 'postgres' && dialect !== 'sqlite') throw new TypeError("sqlSchema(): `dialect` must be 'postgres' or 'sqlite'");
  const table = parseTableName(options.table ?? DEFAULT_TABLE, dialect === 'postgres', 'sqlSchema()');
  return `${schemaStatements(dialect, table).join(';\n\n')};\n`;
}
