/**
 * The one decoder every record read from a store goes through, whichever store it came from
 * (built-in or custom). A record keygate did not write itself (edited in the database, imported,
 * built by a custom store) is checked field by field against the record's shape; anything that
 * does not fit is refused with `invalid_record`, never guessed at. The result is a fresh object
 * holding only the record's own fields, so nothing a store hands back is shared with the caller.
 */
import { KeygateError } from '../errors.js';
import type { ApiKeyAlerts, ApiKeyRecord, ApiKeyStatus, RateLimit } from '../types.js';
import { parseAlerts } from './alerts.js';
import { API_KEY_STATUSES, type FieldKind, type FieldSpec, RATE_LIMIT_FIELDS, RECORD_FIELDS } from './schema.js';

/**
 * The error for a stored record that keygate cannot use. The message names the record and the
 * field, never a value (a value could be a hash or a secret someone pasted into the wrong column).
 * Store authors throw it from their own decoding when a row cannot be read at all.
 */
export function invalidRecord(id: unknown, field: string, problem: string): KeygateError {
  const which = typeof id === 'string' && id.length > 0 && id.length <= 128 ? `record ${JSON.stringify(id)}` : 'a record';
  return new KeygateError('invalid_record', `the key store returned ${which} whose ${field} ${problem}`, { field });
}

/**
 * A field's value if the object has it as its own property, else `undefined`: what every reader of
 * records and patches uses, so that a polluted `Object.prototype` (an `ownerId`, a `status`, a
 * `scopes` set on it by a bug elsewhere in the app) can never fill in an absent field.
 */
export function ownValue(object: object, field: string): unknown {
  return Object.hasOwn(object, field) ? (object as Record<string, unknown>)[field] : undefined;
}

/** True for `{...}` literals and `Object.create(null)` (from any realm): not arrays, Maps, Dates or class instances. */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return prototype === null || Object.getPrototypeOf(prototype) === null;
}

function isDate(value: unknown): value is Date {
  return Object.prototype.toString.call(value) === '[object Date]' && !Number.isNaN((value as Date).getTime());
}

/** Deep copy of stored JSON (metadata): plain objects, arrays and JSON scalars only. */
function copyJson(value: unknown, depth: number): unknown {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError('non-finite number');
    return value;
  }
  if (depth > 64) throw new TypeError('nested too deep');
  if (Array.isArray(value)) return value.map((item) => copyJson(item, depth + 1));
  if (isPlainObject(value)) {
    const copy: Record<string, unknown> = {};
    for (const key of Object.keys(value)) {
      // A plain assignment of "__proto__" would set the prototype instead of a field.
      Object.defineProperty(copy, key, { value: copyJson(value[key], depth + 1), enumerable: true, writable: true, configurable: true });
    }
    return copy;
  }
  throw new TypeError('not JSON');
}

/** A deep copy of a validated metadata object (cheap for the common empty one). */
export function copyJsonObject(value: Record<string, unknown>): Record<string, unknown> {
  for (const _key in value) return copyJson(value, 0) as Record<string, unknown>;
  return {};
}

/**
 * A deep copy of one field's value, already validated, by its kind: what lets a view handed to the
 * app share nothing with the record keygate decides from.
 */
export function copyFieldValue(kind: FieldKind, value: unknown): unknown {
  if (value === null || typeof value !== 'object') return value;
  switch (kind) {
    case 'list':
      return [...(value as string[])];
    case 'instant':
    case 'nullableInstant':
      return new Date((value as Date).getTime());
    case 'rateLimit':
      return { ...(value as RateLimit) };
    case 'alerts':
      return { ...(value as ApiKeyAlerts) };
    case 'json':
      return copyJsonObject(value as Record<string, unknown>);
    default:
      return value;
  }
}

/** Checks one field's value as stored; returns a fresh copy, or the problem as text. */
function decodeField(kind: FieldKind, entry: unknown): { value: unknown } | { problem: string; field?: string } {
  switch (kind) {
    case 'text':
      return typeof entry === 'string' && entry.length > 0 ? { value: entry } : { problem: 'is not a non-empty string' };
    case 'optionalText':
      if (entry === undefined || entry === null) return { value: undefined };
      return typeof entry === 'string' ? { value: entry } : { problem: 'is not a string' };
    case 'status':
      return typeof entry === 'string' && API_KEY_STATUSES.includes(entry as ApiKeyStatus)
        ? { value: entry }
        : { problem: `is not one of ${API_KEY_STATUSES.join(', ')}` };
    case 'list':
      return Array.isArray(entry) && entry.every((item) => typeof item === 'string') ? { value: [...(entry as string[])] } : { problem: 'is not an array of strings' };
    case 'count':
    case 'nullableCount':
      if (entry === null && kind === 'nullableCount') return { value: null };
      return typeof entry === 'number' && Number.isSafeInteger(entry) && entry >= 0 ? { value: entry } : { problem: 'is not a non-negative integer' };
    case 'instant':
    case 'nullableInstant':
      if (entry === null && kind === 'nullableInstant') return { value: null };
      return isDate(entry) ? { value: new Date(entry.getTime()) } : { problem: 'is not a valid date' };
    case 'json':
      try {
        if (!isPlainObject(entry)) throw new TypeError('not an object');
        return { value: copyJson(entry, 0) };
      } catch {
        return { problem: 'is not a plain JSON object' };
      }
    case 'rateLimit':
      return decodeRateLimit(entry);
    case 'alerts':
      return decodeAlerts(entry);
    case 'boolean':
      return typeof entry === 'boolean' ? { value: entry } : { problem: 'is not true or false' };
  }
}

function decodeRateLimit(entry: unknown): { value: RateLimit | null } | { problem: string; field?: string } {
  if (entry === null) return { value: null };
  if (!isPlainObject(entry)) return { problem: 'is not an object or null' };
  const limit: RateLimit = {};
  for (const field of Object.keys(entry)) {
    const value = entry[field];
    if (!(RATE_LIMIT_FIELDS as readonly string[]).includes(field)) return { field, problem: 'is not a known limit' };
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) return { field, problem: 'is not a positive integer' };
    limit[field as (typeof RATE_LIMIT_FIELDS)[number]] = value;
  }
  if (limit.burst !== undefined && limit.perSecond === undefined) return { field: 'burst', problem: 'is set without perSecond' };
  return { value: Object.keys(limit).length === 0 ? null : limit };
}

/** A stored `alerts` value, by the rule the manager validates callers' values with. */
function decodeAlerts(entry: unknown): { value: ApiKeyAlerts | null } | { problem: string; field?: string } {
  const parsed = parseAlerts(entry, 'alerts');
  if (!('problem' in parsed)) return parsed;
  return parsed.field === 'alerts' ? { problem: parsed.problem } : { field: parsed.field.slice('alerts.'.length), problem: parsed.problem };
}

/** A field added after the first version of the record, with an initial value for records that predate it. */
export function isLaterField(spec: FieldSpec): spec is FieldSpec & { initial: () => unknown } {
  return spec.since !== undefined && spec.since > 1 && spec.initial !== undefined;
}

/**
 * Checks one record as a store returned it and returns a fresh, validated copy. Throws
 * `KeygateError('invalid_record')` naming the first field that does not fit.
 *
 * Every field of the record schema is checked against its kind (`record/schema.ts`): `status` is
 * one of `active`, `suspended`, `revoked`; counts are non-negative safe integers; rate limits hold
 * only known limits, as positive integers; dates are valid Dates; `metadata` is a plain JSON
 * object; optional fields are absent or strings. Fields outside the schema are dropped. An
 * `allowedIps` entry must be a string, but one that is not an address or CIDR is kept: the IP
 * policy refuses every request of such a key rather than dropping the entry and widening access.
 */
export function decodeStoredRecord(value: unknown): ApiKeyRecord {
  if (!isPlainObject(value)) throw invalidRecord(undefined, 'shape', 'is not an object');
  const record: Record<string, unknown> = {};
  for (const { field, spec } of RECORD_FIELDS) {
    const entry = ownValue(value, field);
    // A record written before a field existed (a Redis hash, a custom store's JSON) has none: it
    // reads as the field's initial value, as SQL stores' migrate() writes into existing rows.
    if (entry === undefined && isLaterField(spec)) {
      record[field] = spec.initial();
      continue;
    }
    const decoded = decodeField(spec.kind, entry);
    if ('problem' in decoded) {
      throw invalidRecord(ownValue(value, 'id'), decoded.field === undefined ? field : `${field}.${decoded.field}`, decoded.problem);
    }
    if (decoded.value !== undefined) record[field] = decoded.value;
  }
  return record as unknown as ApiKeyRecord;
}
