/**
 * A record as a Redis hash: one field per record field, each value JSON (instants as epoch
 * milliseconds), so `update` can set and delete single fields atomically. Counter fields (`c:*`)
 * belong to the consume script and are never part of the record.
 *
 * Which fields are instants and which are removed (rather than set to `null`) both come from the
 * record schema (`record/schema.ts`), so a new record field needs no change here.
 */
import { initialCounters } from '../../policy/limits.js';
import { QUOTA_WINDOWS } from '../../policy/windows.js';
import { invalidRecord, isLaterField, ownValue } from '../../record/decode.js';
import { INSTANT_FIELDS, OPTIONAL_FIELDS, RECORD_FIELDS } from '../../record/schema.js';
import type { ApiKeyPatch } from '../store.js';
import type { ApiKeyRecord } from '../../types.js';
import { counterField } from './scripts.js';

/** Fields kept as epoch milliseconds (a JSON number) rather than as a Date's JSON text. */
const INSTANTS: ReadonlySet<string> = new Set(INSTANT_FIELDS);
/** Fields that are absent rather than `null`: a `null` in a patch deletes the hash field. */
const REMOVED_BY_NULL: ReadonlySet<string> = new Set(OPTIONAL_FIELDS);
const COUNTER_FIELD = /^c:/;

/**
 * The counter state of a record that has never been consumed (see CONSUME_SCRIPT), as hash
 * field/value pairs: `initialCounters` for the bucket and every quota window of `QUOTA_WINDOWS`.
 */
const EMPTY_COUNTERS: readonly string[] = (() => {
  const empty = initialCounters(0);
  const pairs = [counterField('tokens'), empty.tokens === null ? 'null' : String(empty.tokens), counterField('tokensAt'), String(empty.tokensAt)];
  for (const window of QUOTA_WINDOWS) {
    pairs.push(counterField(window.indexField), String(empty[window.indexField]), counterField(window.countField), String(empty[window.countField]));
  }
  return pairs;
})();

function encodeValue(field: string, value: unknown): string {
  if (INSTANTS.has(field)) return value === null ? 'null' : String((value as Date).getTime());
  return JSON.stringify(value);
}

/**
 * Field/value pairs for HSET of a new record, with an empty counter state. Only the schema's fields
 * are written: anything else on the object (or a field named like a counter) would otherwise land
 * in the hash beside the counters. Only the record's own properties are read: a field set on a
 * polluted `Object.prototype` is not the record's. Fields in `omit` are left out (the rotate
 * script fills them in from the old record).
 */
export function encodeRecord(record: ApiKeyRecord, omit?: ReadonlySet<string>): string[] {
  const args: string[] = [];
  for (const { field } of RECORD_FIELDS) {
    if (omit?.has(field)) continue;
    const value = ownValue(record, field);
    // An optional field given as null is absent, as a patch setting it to null makes it.
    if (value === undefined || (value === null && REMOVED_BY_NULL.has(field))) continue;
    args.push(field, encodeValue(field, value));
  }
  args.push(...EMPTY_COUNTERS);
  return args;
}

/**
 * The UPDATE script's arguments: `[n, ...pairs, ...fieldsToDelete]`. Own enumerable properties
 * only (`Object.entries`), so nothing inherited from a polluted `Object.prototype` is written.
 */
export function encodePatch(patch: ApiKeyPatch): string[] {
  const pairs: string[] = [];
  const deletions: string[] = [];
  for (const [field, value] of Object.entries(patch)) {
    if (value === undefined) continue;
    if (value === null && REMOVED_BY_NULL.has(field)) deletions.push(field);
    else pairs.push(field, encodeValue(field, value));
  }
  return [String(pairs.length / 2), ...pairs, ...deletions];
}

/**
 * Rebuilds a record from HGETALL's object; `null` for an empty hash (no such key). A field that is
 * not JSON (a value written by hand, such as a bare `Revoked`) throws `invalid_record` naming the
 * record and the field, never a SyntaxError quoting the value. Types are not checked here (an
 * instant becomes a Date only when it holds a number): every record keygate reads goes through
 * `decodeStoredRecord` (src/record/decode.ts).
 */
export function decodeRecord(hash: Record<string, string>): ApiKeyRecord | null {
  const fields = Object.keys(hash);
  if (fields.length === 0) return null;
  const id = parseOrUndefined(ownValue(hash, 'id') as string | undefined);
  const record: Record<string, unknown> = {};
  for (const field of fields) {
    if (COUNTER_FIELD.test(field)) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(hash[field] as string);
    } catch {
      throw invalidRecord(id, field, 'is not valid JSON');
    }
    // Only a number is an instant; anything else is left for the record decoder to refuse (the Lua
    // scripts likewise treat such a date as unreadable).
    const value = INSTANTS.has(field) && typeof parsed === 'number' ? new Date(parsed) : parsed;
    // defineProperty: a hand-written field named "__proto__" must stay a field, not a prototype.
    Object.defineProperty(record, field, { value, enumerable: true, writable: true, configurable: true });
  }
  // A hash written before a field existed reads as the field's initial value (`deletedAt`: null, a
  // live record; `allowedOrigins`: [], …): every later field of the schema has one (`isLaterField`).
  for (const { field, spec } of RECORD_FIELDS) if (!Object.hasOwn(record, field) && isLaterField(spec)) record[field] = spec.initial();
  return record as unknown as ApiKeyRecord;
}

/**
 * A record exactly as the store keeps it, without a round trip: encoded for HSET and decoded back
 * (a fresh object sharing nothing with `record`). For returning what the store just wrote.
 */
export function asStored(record: ApiKeyRecord): ApiKeyRecord {
  return decodeRecord(pairsToHash(encodeRecord(record))) as ApiKeyRecord;
}

function parseOrUndefined(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** HGETALL through a Lua script arrives as a flat `[field, value, …]` array. */
export function pairsToHash(pairs: readonly string[]): Record<string, string> {
  const hash: Record<string, string> = {};
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    // defineProperty: a hand-written field named "__proto__" must stay a field, not a prototype.
    Object.defineProperty(hash, pairs[i] as string, { value: pairs[i + 1], enumerable: true, writable: true, configurable: true });
  }
  return hash;
}
