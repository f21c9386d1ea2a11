/**
 * The one decoder every record read from a store goes through, whichever store it came from
 * (built-in or custom). A record keygate did not write itself (edited in the database, imported,
 * built by a custom store) is checked field by field against the record's shape; anything that
 * does not fit is refused with `invalid_record`, never guessed at. The result is a fresh object
 * holding only the record's own fields, so nothing a store hands back is shared with the caller.
 */
import { KeygateError } from '../errors.js';
import { API_KEY_STATUSES, type ApiKeyRecord, type ApiKeyStatus, type RateLimit } from '../types.js';

/**
 * The error for a stored record that keygate cannot use. The message names the record and the
 * field, never a value (a value could be a hash or a secret someone pasted into the wrong column).
 * Store authors throw it from their own decoding when a row cannot be read at all.
 */
export function invalidRecord(id: unknown, field: string, problem: string): KeygateError {
  const which = typeof id === 'string' && id.length > 0 && id.length <= 128 ? `record ${JSON.stringify(id)}` : 'a record';
  return new KeygateError('invalid_record', `the key store returned ${which} whose ${field} ${problem}`, { field });
}

const RATE_LIMIT_FIELDS = ['perSecond', 'burst', 'perDay'] as const;

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
 * Checks one record as a store returned it and returns a fresh, validated copy. Throws
 * `KeygateError('invalid_record')` naming the first field that does not fit.
 *
 * What is checked: every field's type; `status` is one of `active`, `suspended`, `revoked`;
 * counts are non-negative safe integers; rate limits hold only positive integers; dates are valid
 * Dates; `metadata` is a plain JSON object. `allowedIps` entries must be strings, but an entry
 * that is not an address or CIDR is kept: the IP policy refuses every request of such a key
 * rather than dropping the entry and widening access.
 */
export function decodeStoredRecord(value: unknown): ApiKeyRecord {
  if (!isPlainObject(value)) throw invalidRecord(undefined, 'shape', 'is not an object');
  const raw = value;
  const id = raw.id;
  const fail = (field: string, problem: string): never => {
    throw invalidRecord(id, field, problem);
  };
  const text = (field: string): string => {
    const entry = raw[field];
    if (typeof entry !== 'string' || entry.length === 0) fail(field, 'is not a non-empty string');
    return entry as string;
  };
  const optionalText = (field: string): string | undefined => {
    const entry = raw[field];
    if (entry === undefined || entry === null) return undefined;
    if (typeof entry !== 'string') fail(field, 'is not a string');
    return entry as string;
  };
  const strings = (field: string): string[] => {
    const entry = raw[field];
    if (!Array.isArray(entry) || !entry.every((item) => typeof item === 'string')) fail(field, 'is not an array of strings');
    return [...(entry as string[])];
  };
  const count = (field: string, nullable: boolean): number | null => {
    const entry = raw[field];
    if (entry === null && nullable) return null;
    if (typeof entry !== 'number' || !Number.isSafeInteger(entry) || entry < 0) fail(field, 'is not a non-negative integer');
    return entry as number;
  };
  const instant = (field: string, nullable: boolean): Date | null => {
    const entry = raw[field];
    if (entry === null && nullable) return null;
    if (!isDate(entry)) fail(field, 'is not a valid date');
    return new Date((entry as Date).getTime());
  };

  const status = raw.status;
  if (typeof status !== 'string' || !API_KEY_STATUSES.includes(status as ApiKeyStatus)) {
    fail('status', `is not one of ${API_KEY_STATUSES.join(', ')}`);
  }
  let rateLimit: RateLimit | null = null;
  if (raw.rateLimit !== null) {
    const limit = raw.rateLimit;
    if (!isPlainObject(limit)) fail('rateLimit', 'is not an object or null');
    const source = limit as Record<string, unknown>;
    rateLimit = {};
    for (const field of Object.keys(source)) {
      const entry = source[field];
      if (!(RATE_LIMIT_FIELDS as readonly string[]).includes(field)) fail(`rateLimit.${field}`, 'is not a known limit');
      if (entry === undefined) continue;
      if (typeof entry !== 'number' || !Number.isSafeInteger(entry) || entry < 1) fail(`rateLimit.${field}`, 'is not a positive integer');
      rateLimit[field as (typeof RATE_LIMIT_FIELDS)[number]] = entry as number;
    }
    if (rateLimit.burst !== undefined && rateLimit.perSecond === undefined) fail('rateLimit.burst', 'is set without perSecond');
    if (Object.keys(rateLimit).length === 0) rateLimit = null;
  }
  let metadata: Record<string, unknown>;
  try {
    if (!isPlainObject(raw.metadata)) throw new TypeError('not an object');
    metadata = copyJson(raw.metadata, 0) as Record<string, unknown>;
  } catch {
    return fail('metadata', 'is not a plain JSON object');
  }

  const record: ApiKeyRecord = {
    id: text('id'),
    keyPrefix: text('keyPrefix'),
    keyHash: text('keyHash'),
    name: text('name'),
    status: status as ApiKeyStatus,
    scopes: strings('scopes'),
    allowedIps: strings('allowedIps'),
    maxUses: count('maxUses', true),
    useCount: count('useCount', false) as number,
    rateLimit,
    expiresAt: instant('expiresAt', true),
    createdAt: instant('createdAt', false) as Date,
    updatedAt: instant('updatedAt', false) as Date,
    lastUsedAt: instant('lastUsedAt', true),
    revokedAt: instant('revokedAt', true),
    metadata,
    tags: strings('tags'),
  };
  const description = optionalText('description');
  if (description !== undefined) record.description = description;
  const ownerId = optionalText('ownerId');
  if (ownerId !== undefined) record.ownerId = ownerId;
  const tenantId = optionalText('tenantId');
  if (tenantId !== undefined) record.tenantId = tenantId;
  const environment = optionalText('environment');
  if (environment !== undefined) record.environment = environment;
  const rotatedFromId = optionalText('rotatedFromId');
  if (rotatedFromId !== undefined) record.rotatedFromId = rotatedFromId;
  return record;
}
