/**
 * What a SQL database can hold exactly, and the encodings that keep it exact. A value that could
 * not round-trip is refused with `invalid_argument` before anything is written, rather than
 * stored altered (a lone UTF-16 surrogate would come back as U+FFFD) or failing deep in the driver
 * as a 503.
 */
import { invalidArgument } from '../../errors.js';

/** The SQL dialects the store speaks. */
export type SqlDialect = 'postgres' | 'sqlite';

/** The earliest instant a PostgreSQL `timestamptz` holds: 4714-11-24T00:00:00Z BC. */
export const POSTGRES_MIN_INSTANT = Date.UTC(-4713, 10, 24);

/** A UTF-16 surrogate that is not half of a pair (with the `u` flag, pairs are one code point). */
const LONE_SURROGATE = /\p{Cs}/u;

function checkString(value: string, field: string, dialect: SqlDialect): void {
  if (LONE_SURROGATE.test(value)) throw invalidArgument(field, 'is not well-formed Unicode (it holds a lone surrogate)');
  if (dialect === 'postgres' && value.includes('\u0000')) {
    throw invalidArgument(field, 'cannot contain the character U+0000 (PostgreSQL text cannot hold it)');
  }
}

function checkDate(value: Date, field: string, dialect: SqlDialect): void {
  const time = value.getTime();
  if (Number.isNaN(time)) throw invalidArgument(field, 'is an invalid Date');
  if (dialect === 'postgres' && time < POSTGRES_MIN_INSTANT) {
    throw invalidArgument(field, 'is before 4714-11-24 BC, the earliest instant PostgreSQL stores');
  }
}

function checkValue(value: unknown, field: string, dialect: SqlDialect): void {
  if (typeof value === 'string') checkString(value, field, dialect);
  else if (Array.isArray(value)) value.forEach((item, index) => checkValue(item, `${field}[${index}]`, dialect));
  else if (Object.prototype.toString.call(value) === '[object Date]') checkDate(value as Date, field, dialect);
  else if (value !== null && typeof value === 'object') {
    for (const [key, inner] of Object.entries(value)) {
      checkString(key, `${field} key`, dialect);
      checkValue(inner, `${field}.${key}`, dialect);
    }
  }
}

/**
 * Throws `invalid_argument` naming the first field whose value the database would not give back
 * exactly: a lone surrogate anywhere, U+0000 or an instant before 4714 BC in PostgreSQL.
 */
export function assertStorable(fields: object, dialect: SqlDialect): void {
  for (const [field, value] of Object.entries(fields)) checkValue(value, field, dialect);
}

function pad(value: number, width: number): string {
  return String(value).padStart(width, '0');
}

/**
 * A `timestamptz` input literal for a Date, exact to the millisecond over the whole range both
 * sides share: years past 9999 are written out, years before 1 AD as `… BC` (there is no year 0).
 */
export function timestamptzLiteral(date: Date): string {
  const year = date.getUTCFullYear();
  const bc = year < 1;
  return (
    `${pad(bc ? 1 - year : year, 4)}-${pad(date.getUTCMonth() + 1, 2)}-${pad(date.getUTCDate(), 2)}` +
    `T${pad(date.getUTCHours(), 2)}:${pad(date.getUTCMinutes(), 2)}:${pad(date.getUTCSeconds(), 2)}` +
    `.${pad(date.getUTCMilliseconds(), 3)}+00:00${bc ? ' BC' : ''}`
  );
}
