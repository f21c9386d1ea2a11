/**
 * The DDL of the key table, per dialect, derived from the record's columns: what `migrate()` runs
 * and what `docs/sql/*.sql` ship for teams that run migrations with their own tool.
 *
 * The first version of the table (every column with `since` 1, and the first version's counters)
 * keeps its column definitions, so the DDL of existing installations never changes. A column of a
 * later version (a record field's, a counter's such as the minute, hour and month windows of
 * version 2, the concurrency leases of version 2, or the holds of leased mode of version 5) is
 * appended after the first version's counters, where `ALTER TABLE … ADD COLUMN` puts it on an
 * existing table, with one definition for both statements whose default is the field's `initial`
 * value (a counter's: -1 for a window index, 0 for a count; the leases' and the holds': `{}`,
 * none): a fresh table and an upgraded one come out the same, and existing rows read back as new
 * records would be written.
 */
import { ALERT_FIELDS, API_KEY_STATUSES, RATE_LIMIT_FIELDS } from '../../record/schema.js';
import { companionStatements } from './companions.js';
import { COUNTER_COLUMNS, type Column, type ColumnKind, type CounterColumn, type CounterKind, HOLDS_COLUMN, LEASES_COLUMN, RECORD_COLUMNS } from './columns.js';
import { parameterOf } from './parameters.js';
import { type TableName, parseTableName } from './table-name.js';
import type { SqlDialect } from './values.js';

/** A column's SQL type, whether it accepts NULL, and the default of a first-version column. */
interface ColumnType {
  readonly type: string;
  readonly nullable?: true;
  readonly default?: string;
}

const COLUMN_TYPES: Record<SqlDialect, Record<ColumnKind, ColumnType>> = {
  postgres: {
    text: { type: 'text' },
    optionalText: { type: 'text', nullable: true },
    status: { type: 'text' },
    list: { type: 'text[]', default: "'{}'" },
    json: { type: 'jsonb', default: "'{}'" },
    rateLimit: { type: 'jsonb', nullable: true },
    alerts: { type: 'jsonb', nullable: true },
    count: { type: 'bigint', default: '0' },
    nullableCount: { type: 'bigint', nullable: true },
    instant: { type: 'timestamptz(3)' },
    nullableInstant: { type: 'timestamptz(3)', nullable: true },
    boolean: { type: 'boolean', default: 'false' },
  },
  sqlite: {
    text: { type: 'TEXT' },
    optionalText: { type: 'TEXT', nullable: true },
    status: { type: 'TEXT' },
    list: { type: 'TEXT', default: "'[]'" },
    json: { type: 'TEXT', default: "'{}'" },
    rateLimit: { type: 'TEXT', nullable: true },
    alerts: { type: 'TEXT', nullable: true },
    count: { type: 'INTEGER', default: '0' },
    nullableCount: { type: 'INTEGER', nullable: true },
    instant: { type: 'INTEGER' },
    nullableInstant: { type: 'INTEGER', nullable: true },
    boolean: { type: 'INTEGER', default: '0' },
  },
};

const RATE_LIMIT_SHAPE = `{ ${RATE_LIMIT_FIELDS.map((field) => `${field}?`).join(', ')} }`;
const ALERTS_SHAPE = `{ ${ALERT_FIELDS.map((field) => `${field}?`).join(', ')} }`;

const COMMENTS: Record<SqlDialect, Partial<Record<ColumnKind, string>>> = {
  postgres: {
    rateLimit: `${RATE_LIMIT_SHAPE} or NULL`,
    alerts: `${ALERTS_SHAPE} or NULL`,
  },
  sqlite: {
    list: 'JSON array of strings',
    json: 'JSON object',
    rateLimit: `JSON ${RATE_LIMIT_SHAPE} or NULL`,
    alerts: `JSON ${ALERTS_SHAPE} or NULL`,
    instant: 'epoch milliseconds',
    nullableInstant: 'epoch milliseconds',
    boolean: '0 or 1',
  },
};

/**
 * A counter column's definition after its name. A window's index starts at -1 (no window yet) and
 * its count at 0, as `initialCounters` has them, which is also what `ADD COLUMN` writes into the
 * existing rows of a table created before the window: their next use starts counting it.
 */
const COUNTER_TYPES: Record<SqlDialect, Record<CounterKind, string>> = {
  postgres: {
    windowIndex: 'bigint NOT NULL DEFAULT -1',
    windowCount: 'bigint NOT NULL DEFAULT 0',
    tokens: 'double precision',
    tokensAt: 'double precision NOT NULL DEFAULT 0',
  },
  sqlite: {
    windowIndex: 'INTEGER NOT NULL DEFAULT -1',
    windowCount: 'INTEGER NOT NULL DEFAULT 0',
    tokens: 'REAL',
    tokensAt: 'REAL NOT NULL DEFAULT 0',
  },
};

/**
 * The concurrency leases' column (`LEASES_COLUMN`) after its name: a JSON object of lease → lapse
 * instant, `{}` (no lease) for a new key and, through `ADD COLUMN`, for every existing row.
 */
const LEASES_TYPES: Record<SqlDialect, string> = {
  postgres: "jsonb NOT NULL DEFAULT '{}'",
  sqlite: "TEXT NOT NULL DEFAULT '{}'",
};

const LEASES_COMMENT = 'concurrency leases: JSON object, lease -> lapse instant in epoch milliseconds';

/**
 * The holds' column (`HOLDS_COLUMN`, leased mode) after its name: a JSON object of lease → hold,
 * `{}` (no hold) for a new key and, through `ADD COLUMN`, for every existing row.
 */
const HOLDS_TYPES: Record<SqlDialect, string> = {
  postgres: "jsonb NOT NULL DEFAULT '{}'",
  sqlite: "TEXT NOT NULL DEFAULT '{}'",
};

const HOLDS_COMMENT = 'leased mode: JSON object, lease -> { until, units, tokens, at } (instants in epoch ms)';

/** The comment of a counter column in `CREATE TABLE`. */
function counterComment(counter: CounterColumn): string {
  const window = counter.window;
  switch (counter.kind) {
    case 'tokens':
      return 'counters: token bucket level at tokens_at (NULL = full)';
    case 'tokensAt':
      return 'counters: latest admitted instant, epoch milliseconds';
    case 'windowCount':
      return `counters: requests admitted in that UTC ${window?.lengthMs === null ? 'calendar month' : window?.name}`;
    case 'windowIndex': {
      const count = COUNTER_COLUMNS.find((column) => column.kind === 'windowCount' && column.window === window)?.name;
      const index = window?.lengthMs === null ? 'calendar month index (year * 12 + month 0-11)' : `${window?.name} index (epoch ms / ${window?.lengthMs})`;
      return `counters: UTC ${index} that ${count} belongs to`;
    }
  }
}

/** The id and key prefix compare byte for byte, whatever the database's collation. */
const BINARY_COLLATED = new Set(['id', 'key_prefix']);

/**
 * Indexes: the key lookup, then list order, then each list filter followed by list order, then
 * the deleted keys (version 3) for `purge`. That last one is partial: it holds only the rows whose
 * `deleted_at` is set, so it costs nothing for live keys and lets `purge` find what it removes
 * without reading the table. `list` leaves deleted keys out with a filter on the list indexes:
 * deleted keys are few once purged regularly.
 */
const INDEXES: readonly { suffix: string; unique?: true; columns: readonly string[]; where?: string }[] = [
  { suffix: 'key_prefix_key', unique: true, columns: ['key_prefix'] },
  { suffix: 'created_at_id_idx', columns: ['created_at', 'id'] },
  { suffix: 'owner_id_idx', columns: ['owner_id', 'created_at', 'id'] },
  { suffix: 'tenant_id_idx', columns: ['tenant_id', 'created_at', 'id'] },
  { suffix: 'status_idx', columns: ['status', 'created_at', 'id'] },
  { suffix: 'deleted_at_idx', columns: ['deleted_at'], where: '"deleted_at" IS NOT NULL' },
];

function quoted(name: string): string {
  return `"${name}"`;
}

function quotedText(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/** A constant as SQL, for a DEFAULT: the value encoded as the store binds it, then written out. */
function literal(dialect: SqlDialect, column: Column, value: unknown): string {
  const encoded = parameterOf(dialect, column, value);
  if (typeof encoded === 'number' && Number.isSafeInteger(encoded)) return String(encoded);
  if (typeof encoded === 'boolean') return String(encoded);
  if (typeof encoded === 'string') return quotedText(encoded);
  if (Array.isArray(encoded)) return encoded.length === 0 ? "'{}'" : `ARRAY[${encoded.map((item) => quotedText(String(item))).join(', ')}]::text[]`;
  throw new Error(`keygate: the initial value of field ${column.field} cannot be a column default`);
}

/** The CHECK that holds a status column to the known statuses. */
function statusCheck(column: Column): string {
  return `CHECK (${quoted(column.name)} IN (${API_KEY_STATUSES.map(quotedText).join(', ')}))`;
}

/**
 * A column's definition after its name. A first-version column keeps the definition it was
 * shipped with (its kind's default). A later column's default is its field's `initial` value,
 * which `ADD COLUMN` writes into every existing row; without one it must accept NULL, or adding
 * it to a table that has rows would fail.
 */
function columnDefinition(dialect: SqlDialect, column: Column, table: TableName): string {
  const spec = COLUMN_TYPES[dialect][column.kind];
  const type = dialect === 'postgres' && BINARY_COLLATED.has(column.name) ? `${spec.type} COLLATE "C"` : spec.type;
  let fallback = spec.default;
  if (column.since > 1) {
    const initial = column.initial?.();
    fallback = initial === undefined || initial === null ? undefined : literal(dialect, column, initial);
    if (!spec.nullable && fallback === undefined) {
      throw new Error(`keygate: field ${column.field} (since version ${column.since}) must accept null or have an initial value`);
    }
  }
  const parts = [type];
  if (!spec.nullable) parts.push('NOT NULL');
  if (fallback !== undefined) parts.push(`DEFAULT ${fallback}`);
  // A later status column carries its check itself: ADD COLUMN cannot add a table constraint in SQLite.
  if (column.kind === 'status' && column.since > 1) parts.push(`CONSTRAINT ${table.indexName(`${column.name}_check`)} ${statusCheck(column)}`);
  return parts.join(' ');
}

function firstVersion(columns: readonly Column[]): readonly Column[] {
  return columns.filter((column) => column.since <= 1);
}

/** A column's name and definition, and the version that introduced it: a record's, a counter's, the leases' or the holds'. */
interface ColumnLine {
  readonly name: string;
  readonly since: number;
  readonly definition: string;
  readonly comment: string | undefined;
}

/**
 * The store's own columns, which no record field holds, in table order: the counters, then the
 * concurrency leases, then the holds of leased mode.
 */
function stateColumns(dialect: SqlDialect): readonly ColumnLine[] {
  return [
    ...COUNTER_COLUMNS.map((counter) => ({ name: counter.name, since: counter.since, definition: COUNTER_TYPES[dialect][counter.kind], comment: counterComment(counter) })),
    { name: LEASES_COLUMN.name, since: LEASES_COLUMN.since, definition: LEASES_TYPES[dialect], comment: LEASES_COMMENT },
    { name: HOLDS_COLUMN.name, since: HOLDS_COLUMN.since, definition: HOLDS_TYPES[dialect], comment: HOLDS_COMMENT },
  ];
}

/**
 * Columns added after the first version, in the order migrations add them (the order of a fresh
 * table's `CREATE TABLE`, so a fresh table and an upgraded one come out the same): by version,
 * and within a version the store's own columns first (counters, then the leases, then the holds),
 * then the record's columns.
 */
function laterColumns(dialect: SqlDialect, table: TableName, columns: readonly Column[]): readonly ColumnLine[] {
  const state = stateColumns(dialect).filter((column) => column.since > 1);
  const fields = columns
    .filter((column) => column.since > 1)
    .map((column) => ({ name: column.name, since: column.since, definition: columnDefinition(dialect, column, table), comment: COMMENTS[dialect][column.kind] }));
  return [...state, ...fields].sort((a, b) => a.since - b.since);
}

function createTable(dialect: SqlDialect, table: TableName, columns: readonly Column[]): string {
  const lines: { text: string; comment?: string | undefined }[] = [];
  const line = (name: string, definition: string, comment: string | undefined) => lines.push({ text: `  ${quoted(name).padEnd(18)} ${definition},`, comment });
  for (const column of firstVersion(columns)) line(column.name, columnDefinition(dialect, column, table), COMMENTS[dialect][column.kind]);
  for (const column of stateColumns(dialect)) if (column.since <= 1) line(column.name, column.definition, column.comment);
  for (const column of laterColumns(dialect, table, columns)) line(column.name, column.definition, column.comment);
  const constraints = [`CONSTRAINT ${table.indexName('pkey')} PRIMARY KEY ("id")`];
  for (const column of firstVersion(columns)) {
    if (column.kind === 'status') constraints.push(`CONSTRAINT ${table.indexName(`${column.name}_check`)} ${statusCheck(column)}`);
  }
  lines.push(...constraints.map((constraint, i) => ({ text: `  ${constraint}${i < constraints.length - 1 ? ',' : ''}` })));
  const width = Math.max(...lines.filter((entry) => entry.comment).map((entry) => entry.text.length));
  const body = lines.map((entry) => (entry.comment ? `${entry.text.padEnd(width)} -- ${entry.comment}` : entry.text)).join('\n');
  return `CREATE TABLE IF NOT EXISTS ${table.qualified} (\n${body}\n)${dialect === 'sqlite' ? ' STRICT' : ''}`;
}

/** The DDL of one table, statement by statement, without trailing semicolons. */
export interface TableSchema {
  /** `CREATE TABLE IF NOT EXISTS` with every column, of every version. */
  readonly createTable: string;
  /**
   * One `ALTER TABLE … ADD COLUMN` per column of a later version, oldest version first. On
   * PostgreSQL it says `IF NOT EXISTS`; SQLite has no such clause, so `migrate()` runs it only for a
   * column the table lacks.
   */
  readonly addColumns: readonly { readonly column: string; readonly statement: string }[];
  /** `CREATE [UNIQUE] INDEX IF NOT EXISTS …`, after the columns they may cover exist. */
  readonly indexes: readonly string[];
  /**
   * The tables next to the key table (`companions.ts`: audit trail, usage cells, usage batch ids,
   * alert claims), each `CREATE TABLE IF NOT EXISTS` followed by its `CREATE INDEX IF NOT EXISTS`s.
   */
  readonly companions: readonly string[];
}

/**
 * The DDL of `table` for `columns` (the record's columns unless a test describes a later schema).
 * Throws when a later column could not be added to a table that has rows.
 */
export function tableSchema(dialect: SqlDialect, table: TableName, columns: readonly Column[] = RECORD_COLUMNS): TableSchema {
  const addColumns = laterColumns(dialect, table, columns).map((column) => ({
    column: column.name,
    statement: `ALTER TABLE ${table.qualified} ADD COLUMN ${dialect === 'postgres' ? 'IF NOT EXISTS ' : ''}${quoted(column.name)} ${column.definition}`,
  }));
  const indexes = INDEXES.map(
    (index) =>
      `CREATE ${index.unique ? 'UNIQUE ' : ''}INDEX IF NOT EXISTS ${table.indexName(index.suffix)} ` +
      `ON ${table.qualified} (${index.columns.map(quoted).join(', ')})${index.where === undefined ? '' : ` WHERE ${index.where}`}`,
  );
  return { createTable: createTable(dialect, table, columns), addColumns, indexes, companions: companionStatements(dialect, table) };
}

/**
 * The script of {@link sqlSchema} for `columns`. PostgreSQL: every statement, as `migrate()` runs
 * them. SQLite: the idempotent statements, with the `ADD COLUMN`s of later versions as comments
 * to run once on a table created before them.
 */
export function schemaScript(dialect: SqlDialect, table: TableName, columns: readonly Column[] = RECORD_COLUMNS): string {
  const schema = tableSchema(dialect, table, columns);
  if (dialect === 'postgres') return `${[schema.createTable, ...schema.addColumns.map((add) => add.statement), ...schema.indexes, ...schema.companions].join(';\n\n')};\n`;
  const upgrades =
    schema.addColumns.length === 0
      ? []
      : [
          '-- Columns of later versions (CREATE TABLE above already has them). SQLite has no ADD COLUMN\n' +
            '-- IF NOT EXISTS: on a table created before them, run each of these once, before the indexes\n' +
            '-- below (an index may cover a later column).\n' +
            schema.addColumns.map((add) => `-- ${add.statement};`).join('\n'),
        ];
  return `${schema.createTable};\n\n${[...upgrades, ...[...schema.indexes, ...schema.companions].map((statement) => `${statement};`)].join('\n\n')}\n`;
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
 * Upgrades: a record field added after the first version of the table (its `since` in the record
 * schema is above 1), or a column of the store's own added later (the minute, hour and month quota
 * windows' counters and the concurrency leases of version 2, the holds of leased mode of version
 * 5), is a column `CREATE TABLE` lists after the first version's counters and that an existing
 * table gets with `ALTER TABLE … ADD COLUMN`, its default being the field's initial value
 * (existing rows read back as a new record would be written; a window's counters start at index
 * -1, count 0; the leases and the holds at `{}`); a field
 * added later must accept null or have an initial value. On PostgreSQL the script carries that `ALTER TABLE … ADD COLUMN IF NOT EXISTS`
 * after the `CREATE TABLE`, so the same script creates a table or upgrades one, and can run again.
 * SQLite has no `IF NOT EXISTS` for columns: its script carries the `ALTER TABLE`s as comments, to
 * run once on a table created before them (`migrate()` checks the table's columns and adds the
 * missing ones by itself). Regenerate the script when you upgrade keygate.
 *
 * After the key table and its indexes come the tables named from it (version 4): `<table>_audit`
 * (the audit trail), `<table>_usage` (usage cells), `<table>_usage_batches` (usage batch ids
 * applied, for exactly-once flushes) and `<table>_alert_claims`, each with its indexes, all
 * `IF NOT EXISTS`.
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
  return schemaScript(dialect, parseTableName(options.table, dialect === 'postgres', 'sqlSchema()'));
}
