/**
 * Record values as driver parameters, per dialect. Both engines bind every record value through
 * here, and the DDL writes a column's default from the same encoding, so a value is stored one way
 * whichever statement writes it.
 */
import { ownValue } from '../../record/decode.js';
import type { ApiKeyRecord } from '../../types.js';
import { type Column, RECORD_COLUMNS } from './columns.js';
import { type SqlDialect, timestamptzLiteral } from './values.js';

/**
 * A record field's value as a parameter of its column. `null` and `undefined` (an absent optional
 * field) are SQL NULL. Lists are pg arrays (bound as `text[]`) or JSON text in SQLite; objects are
 * JSON text (PostgreSQL casts it to `jsonb`); instants are `timestamptz` literals exact to the
 * millisecond, or epoch milliseconds in SQLite.
 */
export function parameterOf(dialect: SqlDialect, column: Column, value: unknown): unknown {
  if (value === null || value === undefined) return null;
  switch (column.kind) {
    case 'list':
      return dialect === 'postgres' ? [...(value as string[])] : JSON.stringify(value);
    case 'json':
    case 'rateLimit':
    case 'alerts':
      return JSON.stringify(value);
    case 'instant':
    case 'nullableInstant':
      return dialect === 'postgres' ? timestamptzLiteral(value as Date) : (value as Date).getTime();
    case 'boolean':
      return dialect === 'postgres' ? value : value === true ? 1 : 0;
    default:
      return value;
  }
}

/**
 * Every column's parameter for `record`, in `RECORD_COLUMNS` order (the insert's placeholders).
 * Own properties only: a field the record does not have is NULL (absent), whatever a polluted
 * `Object.prototype` holds under its name.
 */
export function recordParameters(dialect: SqlDialect, record: ApiKeyRecord): unknown[] {
  return RECORD_COLUMNS.map((column) => parameterOf(dialect, column, ownValue(record, column.field)));
}
