/**
 * Validation of everything a caller hands the manager. Each function either returns a clean,
 * copied value or throws `invalid_argument` naming the field, before any store call, so bad input
 * never writes anything.
 */
import { invalidArgument } from '../errors.js';
import { checkStringList } from '../options/checks.js';
import { parseIpRange } from '../policy/ip.js';
import { parseOriginPattern } from '../policy/origin.js';
import { normalizeFingerprint } from '../policy/transport.js';
import { GRANTED_SCOPE_RULE, REQUIRED_SCOPE_RULE, isValidGrantedScope, isValidRequiredScope } from '../policy/scopes.js';
import { isPlainObject } from '../record/decode.js';
import { parseAlerts } from '../record/alerts.js';
import {
  API_KEY_STATUSES,
  CREATE_FIELDS,
  type CreateField,
  type FieldKind,
  type FieldSpec,
  RATE_LIMIT_FIELDS,
  RECORD_SCHEMA,
  SETTINGS_FIELDS,
  type SettingsField,
} from '../record/schema.js';
import type { ApiKeyPatch, StoreAuditQuery } from '../stores/store.js';
import type { ApiKeyAlerts, ApiKeyRecord, ApiKeyStatus, ListApiKeysInput, RateLimit } from '../types.js';

const MAX_TEXT = 200;
const MAX_DESCRIPTION = 2_000;
const MAX_METADATA_BYTES = 64 * 1024;
const MAX_METADATA_DEPTH = 16;

/** The fields of a new record that come from the caller, validated (with initial values for those not given). */
export type ValidatedCreate = Pick<ApiKeyRecord, CreateField>;

/** Names of whole arguments: their fields are named bare (`colour`), not `input.colour`. */
const ARGUMENTS = new Set(['input', 'patch', 'query', 'options']);


/**
 * Requires a plain object, rejects fields outside `allowed` (naming the first unknown one), and
 * returns its own fields only, so nothing inherited (a polluted `Object.prototype.scopes`) is read.
 */
export function requireFields(value: unknown, field: string, allowed: readonly string[]): Record<string, unknown> {
  if (!isPlainObject(value)) throw invalidArgument(field, 'must be a plain object');
  const own: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) throw invalidArgument(ARGUMENTS.has(field) ? key : `${field}.${key}`, 'is not a known field');
    own[key] = value[key];
  }
  return own;
}

/** A non-empty string of at most `max` characters. */
export function text(value: unknown, field: string, max = MAX_TEXT): string {
  if (typeof value !== 'string' || value.trim().length === 0) throw invalidArgument(field, 'must be a non-empty string');
  if (value.length > max) throw invalidArgument(field, `must be at most ${max} characters`);
  return value;
}

function stringList(value: unknown, field: string, check: (entry: string) => boolean, what: string): string[] {
  const checked = checkStringList(value, check, what);
  if (checked.ok) return checked.list;
  throw invalidArgument(checked.index === undefined ? field : `${field}[${checked.index}]`, checked.problem);
}

/**
 * A list whose entries have a canonical form (`canonical` returns it, or `null` for an entry
 * that is not one): each entry stored in that form, once, in the order first given.
 */
function canonicalList(value: unknown, field: string, canonical: (entry: string) => string | null, what: string): string[] {
  const forms = new Map<string, string | null>();
  const entries = stringList(value, field, (entry) => {
    const form = canonical(entry);
    forms.set(entry, form);
    return form !== null;
  }, what);
  return [...new Set(entries.map((entry) => forms.get(entry) as string))];
}

/** Granted scopes: `:`-separated segments, `*` only as a whole segment. */
export function grantedScopes(value: unknown, field = 'scopes'): string[] {
  return stringList(value, field, isValidGrantedScope, GRANTED_SCOPE_RULE);
}

/** Required scopes: literal. */
export function requiredScopes(value: unknown, field = 'scopes'): string[] {
  return stringList(value, field, isValidRequiredScope, REQUIRED_SCOPE_RULE);
}

/** IP addresses or CIDR ranges, v4 or v6. */
export function allowedIps(value: unknown, field = 'allowedIps'): string[] {
  return stringList(value, field, (entry) => parseIpRange(entry) !== null, 'an IP address or CIDR range such as "10.0.0.0/8"');
}

/**
 * Browser origins: `scheme://host[:port]`, lower-cased, with `*` only as a whole left-most label
 * (`https://*.example.com`).
 */
export function allowedOrigins(value: unknown, field = 'allowedOrigins'): string[] {
  return canonicalList(value, field, parseOriginPattern, 'an origin such as "https://app.example.com" or "https://*.example.com"');
}

/** SHA-256 fingerprints of client certificates: 64 hex digits, colons and upper case accepted, stored lower case without colons. */
export function certificateFingerprints(value: unknown, field = 'clientCertificateSha256'): string[] {
  return canonicalList(value, field, normalizeFingerprint, 'a SHA-256 fingerprint: 64 hex digits, optionally colon-separated');
}

/** Short free-form labels. */
export function tags(value: unknown, field = 'tags'): string[] {
  return stringList(value, field, (entry) => entry.trim().length > 0 && entry.length <= MAX_TEXT, `a non-empty string of at most ${MAX_TEXT} characters`);
}

/** A non-negative safe integer. */
export function count(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw invalidArgument(field, 'must be a non-negative integer');
  }
  return value;
}

function positive(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw invalidArgument(field, 'must be a positive integer');
  }
  return value;
}

/**
 * Most requests of one key in flight at once. Every consume of such a key counts its live slots,
 * so the bound keeps that work (and a store's row of leases) small.
 */
export const MAX_CONCURRENT = 1_000;

/** `null`, or 1 to {@link MAX_CONCURRENT}: 0 concurrent requests would refuse every request (that is `status: 'suspended'`). */
function concurrencyLimit(value: unknown, field: string): number | null {
  if (value === null) return null;
  const limit = positive(value, field);
  if (limit > MAX_CONCURRENT) throw invalidArgument(field, `must be at most ${MAX_CONCURRENT}`);
  return limit;
}

/** `null`, or a non-negative integer. */
export function maxUses(value: unknown, field = 'maxUses'): number | null {
  return value === null ? null : count(value, field);
}

/** `null`, or `{ perSecond?, burst?, perDay? }` with positive integers; `{}` means no limit. */
export function rateLimit(value: unknown, field = 'rateLimit'): RateLimit | null {
  if (value === null) return null;
  const input = requireFields(value, field, RATE_LIMIT_FIELDS);
  const out: RateLimit = {};
  for (const limit of RATE_LIMIT_FIELDS) {
    if (input[limit] !== undefined) out[limit] = positive(input[limit], `${field}.${limit}`);
  }
  if (out.burst !== undefined && out.perSecond === undefined) throw invalidArgument(`${field}.burst`, 'needs perSecond');
  return Object.keys(out).length === 0 ? null : out;
}

/** The longest rotation schedule: a hundred years. */
export const MAX_ROTATION_FREQUENCY_DAYS = 36_500;

/** `null`, or 1 to {@link MAX_ROTATION_FREQUENCY_DAYS} days. */
function rotationFrequencyDays(value: unknown, field: string): number | null {
  if (value === null) return null;
  const days = positive(value, field);
  if (days > MAX_ROTATION_FREQUENCY_DAYS) throw invalidArgument(field, `must be at most ${MAX_ROTATION_FREQUENCY_DAYS} days`);
  return days;
}

/** `null`, or `{ quotaThreshold?, errorRateThreshold?, webhookUrl? }`; `{}` means keygate's defaults. */
export function alerts(value: unknown, field = 'alerts'): ApiKeyAlerts | null {
  const parsed = parseAlerts(value, field);
  if ('problem' in parsed) throw invalidArgument(parsed.field, parsed.problem);
  return parsed.value;
}

/** ISO 8601 as keygate accepts it: a UTC date, or a date-time with `Z` or an explicit offset. */
const ISO_INSTANT = /^(\d{4})-(\d{2})-(\d{2})(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2}))?$/;

/** Parses an ISO string, refusing local-time forms (ambiguous) and dates that would roll over (`02-30`). */
function parseIsoInstant(value: string): Date | undefined {
  const match = ISO_INSTANT.exec(value);
  if (!match) return undefined;
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const calendar = new Date(Date.UTC(year, month - 1, day));
  if (calendar.getUTCMonth() !== month - 1 || calendar.getUTCDate() !== day) return undefined;
  return new Date(value);
}

/** `null`, or an instant as a Date, an ISO 8601 string with a time zone, or epoch milliseconds. */
export function instant(value: unknown, field: string): Date | null {
  if (value === null) return null;
  let date: Date | undefined;
  if (Object.prototype.toString.call(value) === '[object Date]') date = new Date((value as Date).getTime());
  else if (typeof value === 'number' && Number.isFinite(value)) date = new Date(value);
  else if (typeof value === 'string') date = parseIsoInstant(value);
  if (!date || Number.isNaN(date.getTime())) {
    throw invalidArgument(field, 'must be a Date, an ISO 8601 string with a time zone (e.g. "2027-01-01T00:00:00Z"), epoch milliseconds or null');
  }
  return date;
}

/** One of `active`, `suspended`, `revoked`. */
export function status(value: unknown, field = 'status'): ApiKeyStatus {
  if (typeof value !== 'string' || !API_KEY_STATUSES.includes(value as ApiKeyStatus)) {
    throw invalidArgument(field, `must be one of ${API_KEY_STATUSES.join(', ')}`);
  }
  return value as ApiKeyStatus;
}

/**
 * JSON-compatible metadata, deep-copied. `__proto__` keys are refused so that no consumer merging
 * metadata into an object can have its prototype replaced.
 */
export function metadata(value: unknown, field = 'metadata'): Record<string, unknown> {
  if (!isPlainObject(value)) throw invalidArgument(field, 'must be a plain object');
  const copy = jsonValue(value, field, 0) as Record<string, unknown>;
  if (Buffer.byteLength(JSON.stringify(copy), 'utf8') > MAX_METADATA_BYTES) throw invalidArgument(field, `must serialise to at most ${MAX_METADATA_BYTES} bytes`);
  return copy;
}

function jsonValue(value: unknown, path: string, depth: number): unknown {
  if (depth > MAX_METADATA_DEPTH) throw invalidArgument(path, `nests deeper than ${MAX_METADATA_DEPTH} levels`);
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw invalidArgument(path, 'must be a finite number');
    return value;
  }
  if (Array.isArray(value)) return value.map((item, index) => jsonValue(item, `${path}[${index}]`, depth + 1));
  if (typeof value === 'object') {
    const prototype = Object.getPrototypeOf(value);
    if (prototype !== Object.prototype && prototype !== null) throw invalidArgument(path, 'must hold only plain objects, arrays and JSON values');
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value)) {
      if (key === '__proto__') throw invalidArgument(`${path}.${key}`, 'is not allowed');
      out[key] = jsonValue((value as Record<string, unknown>)[key], `${path}.${key}`, depth + 1);
    }
    return out;
  }
  throw invalidArgument(path, 'must be a JSON value (string, number, boolean, null, array or object)');
}

/** How a caller's value of each kind is checked, unless the field has a rule of its own. */
const KIND_VALIDATORS: { readonly [K in FieldKind]: (value: unknown, field: string) => unknown } = {
  text: (value, field) => text(value, field),
  optionalText: (value, field) => text(value, field),
  status: (value, field) => status(value, field),
  list: (value, field) => tags(value, field),
  json: (value, field) => metadata(value, field),
  rateLimit: (value, field) => rateLimit(value, field),
  alerts: (value, field) => alerts(value, field),
  count: (value, field) => count(value, field),
  nullableCount: (value, field) => maxUses(value, field),
  instant: (value, field) => {
    if (value === null) throw invalidArgument(field, 'must not be null');
    return instant(value, field);
  },
  nullableInstant: (value, field) => instant(value, field),
  boolean: (value, field) => {
    if (typeof value !== 'boolean') throw invalidArgument(field, 'must be true or false');
    return value;
  },
};

/**
 * Fields whose rule is stricter than their kind's. A new field of the record schema is validated
 * by its kind without an entry here; add one only when the field means more (a scope grammar, an
 * address, a longer text).
 */
const FIELD_VALIDATORS: { readonly [F in CreateField]?: (value: unknown, field: F) => ApiKeyRecord[F] } = {
  description: (value, field) => text(value, field, MAX_DESCRIPTION),
  scopes: (value, field) => grantedScopes(value, field),
  allowedIps: (value, field) => allowedIps(value, field),
  allowedOrigins: (value, field) => allowedOrigins(value, field),
  clientCertificateSha256: (value, field) => certificateFingerprints(value, field),
  maxConcurrent: (value, field) => concurrencyLimit(value, field),
  rotationFrequencyDays: (value, field) => rotationFrequencyDays(value, field),
};

function validateField<F extends CreateField>(field: F, value: unknown): ApiKeyRecord[F] {
  // Own entries only: a polluted Object.prototype must not stand in for a field's validator.
  const own = Object.hasOwn(FIELD_VALIDATORS, field) ? FIELD_VALIDATORS[field] : undefined;
  return (own ? own(value, field) : KIND_VALIDATORS[RECORD_SCHEMA[field].kind](value, field)) as ApiKeyRecord[F];
}

/** Validates the input of `create`: every field the caller may set, with the schema's initial value for those not given. */
export function validateCreate(value: unknown): ValidatedCreate {
  const input = requireFields(value, 'input', CREATE_FIELDS);
  const out: Record<string, unknown> = {};
  for (const field of CREATE_FIELDS) {
    const given = input[field];
    const spec: FieldSpec = RECORD_SCHEMA[field];
    if (given !== undefined) out[field] = validateField(field, given);
    else if (spec.initial) out[field] = spec.initial();
    else if (spec.kind !== 'optionalText') out[field] = validateField(field, given); // required: names the field
  }
  return out as ValidatedCreate;
}

/**
 * Validates the patch of `update`; `updatedAt` is left for the caller to stamp. `null` clears an
 * optional field (such as `description`).
 */
export function validateUpdate(value: unknown): Omit<ApiKeyPatch, 'updatedAt'> {
  const input = requireFields(value, 'patch', SETTINGS_FIELDS);
  const patch: Record<string, unknown> = {};
  for (const field of SETTINGS_FIELDS) {
    const given = input[field];
    if (given === undefined) continue;
    patch[field] = given === null && RECORD_SCHEMA[field].kind === 'optionalText' ? null : validateField(field as SettingsField, given);
  }
  return patch as Omit<ApiKeyPatch, 'updatedAt'>;
}

/** Validated `list` input, with the page size defaulted. */
export interface ValidatedList {
  ownerId?: string;
  tenantId?: string;
  status?: ApiKeyStatus;
  limit: number;
  cursor?: string;
  includeDeleted?: boolean;
}

/** The page size of `list` and `auditLog` when none is given. */
const DEFAULT_PAGE = 100;

/** A page size: 1 to 1000. */
function pageSize(value: unknown): number {
  const limit = positive(value, 'limit');
  if (limit > 1000) throw invalidArgument('limit', 'must be at most 1000');
  return limit;
}

/** Validates the input of `list`. */
export function validateList(value: unknown): ValidatedList {
  const input = requireFields(value ?? {}, 'query', ['ownerId', 'tenantId', 'status', 'limit', 'cursor', 'includeDeleted']) as ListApiKeysInput;
  const out: ValidatedList = { limit: input.limit === undefined ? DEFAULT_PAGE : pageSize(input.limit) };
  if (input.ownerId !== undefined) out.ownerId = text(input.ownerId, 'ownerId');
  if (input.tenantId !== undefined) out.tenantId = text(input.tenantId, 'tenantId');
  if (input.status !== undefined) out.status = status(input.status);
  if (input.cursor !== undefined) out.cursor = text(input.cursor, 'cursor', 512);
  if (input.includeDeleted !== undefined) {
    if (typeof input.includeDeleted !== 'boolean') throw invalidArgument('includeDeleted', 'must be true or false');
    out.includeDeleted = input.includeDeleted;
  }
  return out;
}

/** Validates the input of `purge`: the instant before which deleted keys go. */
export function validatePurge(value: unknown): { deletedBefore: Date } {
  const input = requireFields(value, 'input', ['deletedBefore', 'actor']) as { deletedBefore?: unknown };
  if (input.deletedBefore === undefined || input.deletedBefore === null) throw invalidArgument('deletedBefore', 'is required: purge removes the keys deleted before it');
  return { deletedBefore: instant(input.deletedBefore, 'deletedBefore') as Date };
}

/** A record id: a non-empty string (stores decide what else is valid). */
export function recordId(value: unknown): string {
  return text(value, 'id', 128);
}

/** `keys.auditLog()`'s query, checked: the store's filters, the page size and the cursor. */
export type ValidatedAuditQuery = Omit<StoreAuditQuery, 'after'> & { cursor?: string };

/** Validates the input of `auditLog`. */
export function validateAuditQuery(value: unknown): ValidatedAuditQuery {
  const input = requireFields(value, 'query', ['keyId', 'actor', 'from', 'to', 'tenantId', 'environment', 'limit', 'cursor']);
  const out: ValidatedAuditQuery = { limit: input.limit === undefined ? DEFAULT_PAGE : pageSize(input.limit) };
  if (input.keyId !== undefined) out.keyId = recordId(input.keyId);
  if (input.actor !== undefined) out.actorId = text(input.actor, 'actor', 256);
  if (input.tenantId !== undefined) out.tenantId = text(input.tenantId, 'tenantId');
  if (input.environment !== undefined) out.environment = text(input.environment, 'environment');
  for (const bound of ['from', 'to'] as const) {
    const given = input[bound];
    if (given === undefined) continue;
    const at = instant(given, bound);
    if (at === null) throw invalidArgument(bound, 'must be an instant (a Date, an ISO string or epoch milliseconds)');
    out[bound] = at;
  }
  if (out.from && out.to && out.from.getTime() > out.to.getTime()) throw invalidArgument('to', 'must not be before from');
  if (input.cursor !== undefined) out.cursor = text(input.cursor, 'cursor', 512);
  return out;
}
