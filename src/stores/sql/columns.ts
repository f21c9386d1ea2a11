/**
 * The record's columns, derived from the record schema (`record/schema.ts`), and the counter
 * columns that only the store uses. Both dialects, the DDL and migrations, the row decoder and the
 * patch builder read these lists, so a field added to the schema reaches every one of them.
 */
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
 * The counter columns beside `use_count`, mirroring `CounterState` of `policy/limits`: the UTC day
 * index `day` with its `day_count`, and the token bucket level `tokens` (NULL = never drawn from,
 * hence full) at `tokens_at`, the latest admitted instant in epoch milliseconds. They belong to the
 * first version of the table.
 */
export const COUNTER_COLUMNS = ['day', 'day_count', 'tokens', 'tokens_at'] as const;
