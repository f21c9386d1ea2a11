/**
 * The record's columns, derived from the record schema (`record/schema.ts`), and the counter
 * columns that only the store uses. Both dialects, the DDL and migrations, the row decoder and the
 * patch builder read these lists, so a field added to the schema reaches every one of them.
 */
import type { CounterState } from '../../policy/limits.js';
import { QUOTA_WINDOWS, type QuotaWindow, type QuotaWindowName } from '../../policy/windows.js';
import { type FieldKind, type FieldSpec, PATCHABLE_FIELDS, RECORD_FIELDS, type RecordField } from '../../record/schema.js';

/**
 * How a column is stored: the record schema's {@link FieldKind}. The SQL side maps each kind to
 * its column type (`schema.ts`), parameter encoding (`parameters.ts`), select expression and row
 * decoding (`row.ts`).
 */
export type ColumnKind = FieldKind;

/** One record field and its column. */
export interface Column {
  /** The record field the column holds. */
  readonly field: RecordField;
  /** The column's name (snake_case), always used double-quoted. */
  readonly name: string;
  /** What the column holds, which decides its SQL type, encoding and decoding. */
  readonly kind: ColumnKind;
  /**
   * The record schema version that introduced the column: 1 for the columns of the first table,
   * more for a column `migrate()` adds to existing tables with `ALTER TABLE … ADD COLUMN`.
   */
  readonly since: number;
  /** What a new record (and, for a column added later, every existing row) starts with. */
  readonly initial?: () => unknown;
}

/**
 * The columns of a list of record fields, in the same order. Takes the fields as a parameter so
 * that tests can describe a schema with fields the record does not have yet (a migration to a
 * later version).
 */
export function columnsOf(fields: readonly { readonly field: RecordField; readonly spec: FieldSpec }[]): readonly Column[] {
  return fields.map(({ field, spec }) => ({
    field,
    name: spec.column,
    kind: spec.kind,
    since: spec.since ?? 1,
    ...(spec.initial ? { initial: spec.initial } : {}),
  }));
}

/** Every record field's column, in table order. */
export const RECORD_COLUMNS: readonly Column[] = columnsOf(RECORD_FIELDS);

/**
 * The record's column names, quoted, in table order: the column list of an INSERT, and SQLite's
 * select list (which needs no casts).
 */
export const COLUMN_LIST = RECORD_COLUMNS.map((column) => `"${column.name}"`).join(', ');

const BY_FIELD = new Map(RECORD_COLUMNS.map((column) => [column.field, column]));

/** The column of a record field. */
export function columnOf(field: RecordField): Column {
  const column = BY_FIELD.get(field);
  if (!column) throw new Error(`keygate: no column for field ${String(field)}`);
  return column;
}

/**
 * The columns `update` may change (the fields of `ApiKeyPatch`, the schema's `PATCHABLE_FIELDS`),
 * in that fixed order, so that one patch shape always builds one statement.
 */
export const PATCHABLE_COLUMNS: readonly Column[] = PATCHABLE_FIELDS.map(columnOf);

/**
 * The column of `deletedAt`, which `update` sets by a rule (a key is deleted once: a stored instant
 * stays) and which `list` and `purge` filter on.
 */
export const DELETED_AT_COLUMN: Column = columnOf('deletedAt');

/** What a counter column holds: a window's index or count, or the token bucket's level or instant. */
export type CounterKind = 'windowIndex' | 'windowCount' | 'tokens' | 'tokensAt';

/** One counter column beside `use_count`: a field of `CounterState` (`policy/limits`) that only the store uses. */
export interface CounterColumn {
  /** The `CounterState` field the column holds. */
  readonly field: Exclude<keyof CounterState, 'useCount'>;
  /** The column's name (snake_case), always used double-quoted. */
  readonly name: string;
  readonly kind: CounterKind;
  /** The quota window whose index or count it holds. */
  readonly window?: QuotaWindow;
  /** The record schema version that introduced it, as {@link Column.since}. */
  readonly since: number;
}

/**
 * The schema version that introduced each window's counter columns. Typed by the window names, so
 * a window added to `QUOTA_WINDOWS` does not compile until it says which version adds its columns
 * (`migrate()` then adds them to existing tables, with no other edit).
 */
const WINDOW_SINCE: Record<QuotaWindowName, number> = { day: 1, month: 2, hour: 2, minute: 2 };

function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);
}

function windowCounters(window: QuotaWindow): CounterColumn[] {
  const since = WINDOW_SINCE[window.name];
  return [
    { field: window.indexField, name: snakeCase(window.indexField), kind: 'windowIndex', window, since },
    { field: window.countField, name: snakeCase(window.countField), kind: 'windowCount', window, since },
  ];
}

/**
 * The counter columns beside `use_count`, mirroring `CounterState` of `policy/limits` and derived
 * from `QUOTA_WINDOWS` (`policy/windows`): each quota window's index (`day`, …; -1 before the
 * first use) with its count (`day_count`, …), and the token bucket level `tokens` (NULL = never
 * drawn from, hence full) at `tokens_at`, the latest admitted instant in epoch milliseconds.
 *
 * In table order: the first version's (`day`, `day_count`, `tokens`, `tokens_at`), then those of
 * later versions (the minute, hour and month windows, version 2), which `migrate()` adds to an
 * existing table with `ALTER TABLE … ADD COLUMN` like a record column of a later version.
 */
export const COUNTER_COLUMNS: readonly CounterColumn[] = [
  ...QUOTA_WINDOWS.filter((window) => WINDOW_SINCE[window.name] <= 1).flatMap(windowCounters),
  { field: 'tokens', name: 'tokens', kind: 'tokens', since: 1 },
  { field: 'tokensAt', name: 'tokens_at', kind: 'tokensAt', since: 1 },
  ...QUOTA_WINDOWS.filter((window) => WINDOW_SINCE[window.name] > 1)
    .sort((a, b) => WINDOW_SINCE[a.name] - WINDOW_SINCE[b.name])
    .flatMap(windowCounters),
];

/** The counter columns' names, quoted, in table order: a select list. */
export const COUNTER_LIST = COUNTER_COLUMNS.map((column) => `"${column.name}"`).join(', ');

/**
 * The column holding a key's concurrency leases (`maxConcurrent`): a JSON object of lease →
 * the instant it lapses (epoch milliseconds), `{}` when the key holds none. Like the counters it
 * is the store's own, never part of a record, and it lives in the key's row so that the consume's
 * row lock covers it: PostgreSQL's `FOR UPDATE` re-reads a row it waited for (READ COMMITTED
 * re-checks the locked row only), so a consume sees the leases every earlier consume left, where
 * a table of its own would be read from the statement's snapshot and over-admit. Only a consume
 * that carries a claim, and `release`, read or write it.
 */
export interface LeasesColumn {
  /** The column's name (snake_case), always used double-quoted. */
  readonly name: string;
  /** The record schema version that introduced it, as {@link Column.since}. */
  readonly since: number;
}

/** The concurrency leases' column: version 2, which `migrate()` adds to an existing table with `{}` in every row. */
export const LEASES_COLUMN: LeasesColumn = { name: 'concurrency_leases', since: 2 };

/**
 * The column holding a key's holds of leased mode (`reserve` / `settle`): a JSON object of lease →
 * `{ until, units, tokens, at }` (the `Hold` of `policy/reservation`: instants in epoch
 * milliseconds, units and bucket tokens), `{}` when the key holds none. Like the concurrency
 * leases it lives in the key's row, read and written with the counters under the row's lock (one
 * `FOR UPDATE` reads both, one `UPDATE` writes both), and it goes with the row when `purge` removes
 * it, in the same statement. Numbers are stored as JSON numbers: `JSON.stringify` writes the
 * shortest decimal that reads back as the same double, which PostgreSQL's `jsonb` (arbitrary
 * precision `numeric`) and SQLite's text keep digit for digit, so every hold reads back exactly.
 * Only `reserve` and `settle` read or write it.
 */
export interface HoldsColumn {
  /** The column's name (snake_case), always used double-quoted. */
  readonly name: string;
  /** The record schema version that introduced it, as {@link Column.since}. */
  readonly since: number;
}

/** The holds' column: version 5, which `migrate()` adds to an existing table with `{}` (no hold) in every row. */
export const HOLDS_COLUMN: HoldsColumn = { name: 'lease_holds', since: 5 };
