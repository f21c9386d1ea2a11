/**
 * Rows back into records. Both dialects select every column as text, numbers or JSON text (the
 * PostgreSQL statements cast in SQL, so pg's global type parsers, which an application may have
 * changed, play no part), and this one decoder builds the record.
 *
 * Everything is built here, with this realm's `Object`, `Array`, `Date` and `JSON`: never objects
 * made by a driver (see MemoryStore's note on jest realms), and never shared between calls, so a
 * caller mutating a record cannot reach another.
 */
import type { ApiKeyRecord } from '../../types.js';
import { type Column, RECORD_COLUMNS } from './columns.js';

/** A database row: column name (every column is selected under its own name) to value. */
export type Row = Readonly<Record<string, unknown>>;

function number(value: unknown, column: string): number {
  const result = typeof value === 'number' ? value : typeof value === 'bigint' || typeof value === 'string' ? Number(value) : Number.NaN;
  if (Number.isNaN(result)) throw new Error(`keygate: column ${column} holds ${String(value)}, not a number`);
  return result;
}

function json(value: unknown, column: string): unknown {
  if (typeof value !== 'string') throw new Error(`keygate: column ${column} does not hold JSON text`);
  return JSON.parse(value) as unknown;
}

function stringList(value: unknown, column: string): string[] {
  const parsed = json(value, column);
  if (!Array.isArray(parsed)) throw new Error(`keygate: column ${column} does not hold a JSON array`);
  return parsed.map((entry) => String(entry));
}

function object(value: unknown, column: string): Record<string, unknown> {
  const parsed = json(value, column);
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new Error(`keygate: column ${column} does not hold a JSON object`);
  }
  return parsed as Record<string, unknown>;
}

function decode(column: Column, value: unknown): unknown {
  switch (column.kind) {
    case 'text':
      return String(value);
    case 'optionalText':
      return value === null || value === undefined ? undefined : String(value);
    case 'list':
      return stringList(value, column.name);
    case 'json':
      return object(value, column.name);
    case 'rateLimit':
      return value === null ? null : object(value, column.name);
    case 'count':
      return number(value, column.name);
    case 'nullableCount':
      return value === null ? null : number(value, column.name);
    case 'instant':
      return new Date(number(value, column.name));
    case 'nullableInstant':
      return value === null ? null : new Date(number(value, column.name));
  }
}

/** The record a row holds. Absent optional fields stay absent (no `undefined`-valued keys). */
export function recordFromRow(row: Row): ApiKeyRecord {
  const record: Record<string, unknown> = {};
  for (const column of RECORD_COLUMNS) {
    const value = decode(column, row[column.name]);
    if (value !== undefined) record[column.field] = value;
  }
  return record as unknown as ApiKeyRecord;
}
