/**
 * The tables that live next to the key table and are named from it: the audit trail, the usage
 * cells, the usage batch ids applied, and the alert claims (`keygate_api_keys` →
 * `keygate_api_keys_audit`, `…_usage`, `…_usage_batches`, `…_alert_claims`; `auth.api_keys` →
 * `auth.api_keys_audit`, …, in the same schema). `migrate()` creates them after the key table, in
 * the same transaction, and `sqlSchema()` lists them.
 *
 * None of them has a column of the record, so unlike the key table they are written out here
 * rather than derived from the record schema. They came with record schema version 4; a later
 * column of theirs would be added the way the key table's are (`ALTER TABLE … ADD COLUMN`).
 *
 * Index and constraint names are made from the KEY table's name (`TableName.indexName`) with
 * suffixes of at most 17 characters, the budget `MAX_TABLE_NAME_LENGTH` leaves (45 + `_` + 17 =
 * 63 bytes, PostgreSQL's identifier limit): a longer name would be truncated, and two truncated
 * names could collide, which `CREATE INDEX IF NOT EXISTS` would take for "already there".
 */
import type { TableName } from './table-name.js';
import type { SqlDialect } from './values.js';

/** The longest index or constraint suffix that keeps every name within PostgreSQL's 63 bytes. */
export const MAX_INDEX_SUFFIX_LENGTH = 17;

/** What each companion table is, as the suffix of its name. */
export type CompanionKind = 'audit' | 'usage' | 'usage_batches' | 'alert_claims';

/** The quoted, schema-qualified name of a companion table of `table`. */
export function companionName(table: TableName, kind: CompanionKind): string {
  const name = `"${table.text.split('.').pop() as string}_${kind}"`;
  return table.schema === undefined ? name : `"${table.schema}".${name}`;
}

/** The quoted names of the four companion tables of one key table. */
export interface CompanionNames {
  readonly audit: string;
  readonly usage: string;
  readonly usageBatches: string;
  readonly alertClaims: string;
}

/** Every companion table's quoted name, for the statements of one key table. */
export function companionNames(table: TableName): CompanionNames {
  return {
    audit: companionName(table, 'audit'),
    usage: companionName(table, 'usage'),
    usageBatches: companionName(table, 'usage_batches'),
    alertClaims: companionName(table, 'alert_claims'),
  };
}

/** One column: its name and its definition per dialect, with an optional comment for the DDL. */
interface CompanionColumn {
  readonly name: string;
  readonly postgres: string;
  readonly sqlite: string;
  readonly comment?: { readonly postgres?: string; readonly sqlite?: string };
}

/** One companion table: its columns, primary key, secondary indexes and SQLite table options. */
interface CompanionTable {
  readonly kind: CompanionKind;
  readonly columns: readonly CompanionColumn[];
  readonly primaryKey: { readonly suffix: string; readonly columns: readonly string[] };
  readonly indexes: readonly { readonly suffix: string; readonly columns: readonly string[] }[];
  /**
   * SQLite `WITHOUT ROWID`: the rows are stored in the primary key's B-tree, which is what every
   * lookup of these small rows goes through. Not for the audit trail, whose `changes` may be
   * tens of kilobytes (SQLite advises against WITHOUT ROWID for large rows).
   */
  readonly withoutRowid: boolean;
}

/** An instant: `timestamptz(3)` like the key table's, epoch milliseconds in SQLite. */
const INSTANT = { postgres: 'timestamptz(3) NOT NULL', sqlite: 'INTEGER NOT NULL', comment: { sqlite: 'epoch milliseconds' } } as const;
/** A count that only grows: bigint, so that a busy key's sums never overflow. */
const COUNT = { postgres: 'bigint NOT NULL', sqlite: 'INTEGER NOT NULL' } as const;
/**
 * Text compared byte for byte (`COLLATE "C"` in PostgreSQL; SQLite's default is already binary):
 * ids and names are exact strings, and the audit trail's (at, id) order must not depend on the
 * database's collation.
 */
const EXACT_TEXT = { postgres: 'text COLLATE "C" NOT NULL', sqlite: 'TEXT NOT NULL' } as const;
const OPTIONAL_TEXT = { postgres: 'text', sqlite: 'TEXT' } as const;

/** The usage cell's columns that add up (and `max_response_micros`), in `USAGE_COUNT_FIELDS` order. */
export const USAGE_COUNT_COLUMNS = ['requests', 'status_2xx', 'status_3xx', 'status_4xx', 'status_5xx', 'total_response_micros'] as const;

/** The stored value of a `null` route: never a route (a route string is never empty), and the primary key holds no NULL. */
export const NO_ROUTE = '';

/**
 * The four tables. Audit: every `listAudit` filter is served by an index leading with it and
 * followed by the (at, id) order, so a filtered page is one index range read from the keyset
 * position; without a filter, (at, id) itself. Usage: the primary key is the cell's identity,
 * which the upsert's `ON CONFLICT` needs and which `readUsage` (key, day range) and purge (key)
 * read through its leading columns. Batch ids: the primary key answers "applied already?", the
 * index on `applied_at` finds the ids old enough to forget. Alert claims: the name, and an index
 * on `expires_at` to clean lapsed claims up.
 */
const COMPANION_TABLES: readonly CompanionTable[] = [
  {
    kind: 'audit',
    columns: [
      { name: 'id', ...EXACT_TEXT },
      { name: 'at', ...INSTANT },
      // No CHECK on the action: an action added by a later keygate must not need a migration to be written.
      { name: 'action', postgres: 'text NOT NULL', sqlite: 'TEXT NOT NULL', comment: { postgres: 'key.created, key.updated, …', sqlite: 'key.created, key.updated, …' } },
      { name: 'key_id', postgres: 'text COLLATE "C"', sqlite: 'TEXT', comment: { postgres: 'NULL for key.purged', sqlite: 'NULL for key.purged' } },
      { name: 'actor_id', ...OPTIONAL_TEXT, comment: { postgres: 'NULL: no actor given', sqlite: 'NULL: no actor given' } },
      { name: 'actor_key_prefix', ...OPTIONAL_TEXT },
      { name: 'tenant_id', ...OPTIONAL_TEXT },
      { name: 'environment', ...OPTIONAL_TEXT },
      { name: 'changes', postgres: 'jsonb NOT NULL', sqlite: 'TEXT NOT NULL', comment: { sqlite: 'JSON object' } },
    ],
    primaryKey: { suffix: 'audit_pkey', columns: ['id'] },
    indexes: [
      { suffix: 'audit_at_idx', columns: ['at', 'id'] },
      { suffix: 'audit_key_idx', columns: ['key_id', 'at', 'id'] },
      { suffix: 'audit_actor_idx', columns: ['actor_id', 'at', 'id'] },
      { suffix: 'audit_tenant_idx', columns: ['tenant_id', 'at', 'id'] },
      { suffix: 'audit_env_idx', columns: ['environment', 'at', 'id'] },
    ],
    withoutRowid: false,
  },
  {
    kind: 'usage',
    columns: [
      { name: 'key_id', ...EXACT_TEXT },
      { name: 'day', postgres: 'bigint NOT NULL', sqlite: 'INTEGER NOT NULL', comment: { postgres: 'UTC day index (epoch ms / 86400000)', sqlite: 'UTC day index (epoch ms / 86400000)' } },
      { name: 'route', ...EXACT_TEXT, comment: { postgres: "'' = no route matched", sqlite: "'' = no route matched" } },
      { name: 'outcome', ...EXACT_TEXT, comment: { postgres: 'admitted, or the refusal code', sqlite: 'admitted, or the refusal code' } },
      ...USAGE_COUNT_COLUMNS.map((name) => ({ name, ...COUNT, ...(name === 'total_response_micros' ? { comment: { postgres: 'microseconds', sqlite: 'microseconds' } } : {}) })),
      { name: 'max_response_micros', ...COUNT, comment: { postgres: 'microseconds', sqlite: 'microseconds' } },
    ],
    primaryKey: { suffix: 'usage_pkey', columns: ['key_id', 'day', 'route', 'outcome'] },
    indexes: [],
    withoutRowid: true,
  },
  {
    kind: 'usage_batches',
    columns: [
      { name: 'id', ...EXACT_TEXT },
      { name: 'applied_at', ...INSTANT, comment: { postgres: "the batch's now", sqlite: "the batch's now, epoch milliseconds" } },
    ],
    primaryKey: { suffix: 'usage_batch_pkey', columns: ['id'] },
    indexes: [{ suffix: 'usage_applied_idx', columns: ['applied_at'] }],
    withoutRowid: true,
  },
  {
    kind: 'alert_claims',
    columns: [
      { name: 'name', ...EXACT_TEXT },
      { name: 'expires_at', ...INSTANT },
    ],
    primaryKey: { suffix: 'alert_claims_pkey', columns: ['name'] },
    indexes: [{ suffix: 'alert_expiry_idx', columns: ['expires_at'] }],
    withoutRowid: true,
  },
];

function quoted(name: string): string {
  return `"${name}"`;
}

function columnList(columns: readonly string[]): string {
  return columns.map(quoted).join(', ');
}

function createCompanion(dialect: SqlDialect, table: TableName, companion: CompanionTable): string {
  const lines = companion.columns.map((column) => ({
    text: `  ${quoted(column.name).padEnd(23)} ${column[dialect]},`,
    comment: column.comment?.[dialect],
  }));
  lines.push({ text: `  CONSTRAINT ${table.indexName(companion.primaryKey.suffix)} PRIMARY KEY (${columnList(companion.primaryKey.columns)})`, comment: undefined });
  const width = Math.max(...lines.filter((line) => line.comment !== undefined).map((line) => line.text.length));
  const body = lines.map((line) => (line.comment === undefined ? line.text : `${line.text.padEnd(width)} -- ${line.comment}`)).join('\n');
  const options = dialect === 'sqlite' ? (companion.withoutRowid ? ' STRICT, WITHOUT ROWID' : ' STRICT') : '';
  return `CREATE TABLE IF NOT EXISTS ${companionName(table, companion.kind)} (\n${body}\n)${options}`;
}

/**
 * The DDL of the companion tables of `table`, statement by statement without semicolons: each
 * table's `CREATE TABLE IF NOT EXISTS` followed by its `CREATE INDEX IF NOT EXISTS`s. Idempotent.
 */
export function companionStatements(dialect: SqlDialect, table: TableName): readonly string[] {
  return COMPANION_TABLES.flatMap((companion) => [
    createCompanion(dialect, table, companion),
    ...companion.indexes.map(
      (index) => `CREATE INDEX IF NOT EXISTS ${table.indexName(index.suffix)} ON ${companionName(table, companion.kind)} (${columnList(index.columns)})`,
    ),
  ]);
}

/** Every index and constraint suffix of the companion tables (for the name-length test). */
export const COMPANION_NAME_SUFFIXES: readonly string[] = COMPANION_TABLES.flatMap((companion) => [
  companion.primaryKey.suffix,
  ...companion.indexes.map((index) => index.suffix),
]);
