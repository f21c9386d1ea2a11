/**
 * Rows back into records. Both dialects select every column as text, numbers or JSON text (the
 * PostgreSQL statements cast in SQL, so pg's global type parsers, which an application may have
 * changed, play no part), and this one decoder builds the record.
 *
 * Everything is built here, with this realm's `Object`, `Array`, `Date` and `JSON`: never objects
 * made by a driver (see MemoryStore's note on jest realms), and never shared between calls, so a
 * caller mutating a record cannot reach another.
 *
 * A value that cannot be decoded (a row edited in the database: a NULL array element, JSON that is
 * not an object, an infinite timestamp, text in a counter) is refused with `invalid_record`
 * (`invalidRecord` of `record/decode`), naming the record and the field but never the value: a
 * value could be a hash. Nothing is coerced (a NULL scope never becomes the scope `"null"`).
 * Whether a decoded value is acceptable (a known status, a non-negative count, …) is then
 * `decodeStoredRecord`'s call, which keygate applies to every record it reads.
 */
import { invalidRecord, ownValue } from '../../record/decode.js';
import type { ApiKeyRecord } from '../../types.js';
import { type Column, RECORD_COLUMNS } from './columns.js';

/** A database row: column name (every column is selected under its own name) to value. */
export type Row = Readonly<Record<string, unknown>>;

/** Thrown inside this module; `recordFromRow` turns it into `invalid_record` for the row's id and field. */
class Undecodable {
  constructor(readonly problem: string) {}
}

function number(value: unknown): number {
  // Only what the dialects select: a JavaScript number (SQLite), or decimal text (PostgreSQL `::text`).
  let result = Number.NaN;
  if (typeof value === 'number') result = value;
  else if (typeof value === 'bigint') result = Number(value);
  else if (typeof value === 'string' && value.trim() !== '') result = Number(value);
  if (!Number.isFinite(result)) throw new Undecodable('is not a finite number');
  return result;
}

function text(value: unknown): string {
  if (typeof value !== 'string') throw new Undecodable('is not text');
  return value;
}

function json(value: unknown): unknown {
  if (typeof value !== 'string') throw new Undecodable('does not hold JSON text');
  try {
    return JSON.parse(value) as unknown;
  } catch {
    throw new Undecodable('does not hold valid JSON');
  }
}

function stringList(value: unknown): string[] {
  const parsed = json(value);
  if (!Array.isArray(parsed)) throw new Undecodable('does not hold an array');
  // An element that is not a string (a NULL element of a PostgreSQL text[], a nested array, a
  // number in SQLite's JSON) is refused, never turned into a string that could grant something.
  if (!parsed.every((entry) => typeof entry === 'string')) throw new Undecodable('holds an element that is not a string');
  return parsed as string[];
}

function object(value: unknown): Record<string, unknown> {
  const parsed = json(value);
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Undecodable('does not hold a JSON object');
  return parsed as Record<string, unknown>;
}

/** PostgreSQL selects a boolean as the text `true` / `false`; SQLite stores 0 or 1. */
function flag(value: unknown): boolean {
  if (value === 'true' || value === 1) return true;
  if (value === 'false' || value === 0) return false;
  throw new Undecodable('is not a boolean');
}

function instant(value: unknown): Date {
  const date = new Date(number(value));
  if (Number.isNaN(date.getTime())) throw new Undecodable('is not an instant a Date can hold');
  return date;
}

function decode(column: Column, value: unknown): unknown {
  switch (column.kind) {
    case 'text':
    case 'status':
      return text(value);
    case 'optionalText':
      return value === null || value === undefined ? undefined : text(value);
    case 'list':
      return stringList(value);
    case 'json':
      return object(value);
    case 'rateLimit':
    case 'alerts':
      return value === null ? null : object(value);
    case 'count':
      return number(value);
    case 'nullableCount':
      return value === null ? null : number(value);
    case 'instant':
      return instant(value);
    case 'nullableInstant':
      return value === null ? null : instant(value);
    case 'boolean':
      return flag(value);
    default:
      // Every kind is decoded above; a new kind must be added here, or the compiler says so.
      return column.kind satisfies never;
  }
}

/**
 * The record a row holds. Absent optional fields stay absent (no `undefined`-valued keys).
 * Throws `KeygateError('invalid_record')` naming the first field that cannot be decoded.
 */
export function recordFromRow(row: Row): ApiKeyRecord {
  const record: Record<string, unknown> = {};
  for (const column of RECORD_COLUMNS) {
    let value: unknown;
    try {
      value = decode(column, ownValue(row, column.name));
    } catch (error) {
      if (error instanceof Undecodable) throw invalidRecord(ownValue(row, 'id'), column.field, `(column ${column.name}) ${error.problem}`);
      throw error;
    }
    if (value !== undefined) record[column.field] = value;
  }
  return record as unknown as ApiKeyRecord;
}
