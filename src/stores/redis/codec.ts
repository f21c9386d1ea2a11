/**
 * A record as a Redis hash: one field per record field, each value JSON (Dates as epoch
 * milliseconds), so `update` can set and delete single fields atomically. Counter fields (`c:*`)
 * belong to the consume script and are never part of the record.
 */
import { invalidRecord } from '../../record/decode.js';
import type { ApiKeyPatch } from '../store.js';
import type { ApiKeyRecord } from '../../types.js';

const DATE_FIELDS = new Set(['expiresAt', 'createdAt', 'updatedAt', 'lastUsedAt', 'revokedAt']);
const COUNTER_FIELD = /^c:/;

function encodeValue(field: string, value: unknown): string {
  if (DATE_FIELDS.has(field)) return value === null ? 'null' : String((value as Date).getTime());
  return JSON.stringify(value);
}

/** Field/value pairs for HSET of a new record, with an empty counter state. */
export function encodeRecord(record: ApiKeyRecord): string[] {
  const args: string[] = [];
  for (const [field, value] of Object.entries(record)) {
    if (value !== undefined) args.push(field, encodeValue(field, value));
  }
  args.push('c:tokens', 'null', 'c:tokensAt', '0', 'c:day', '-1', 'c:dayCount', '0');
  return args;
}

/** The UPDATE script's arguments: `[n, ...pairs, ...fieldsToDelete]`. */
export function encodePatch(patch: ApiKeyPatch): string[] {
  const pairs: string[] = [];
  const deletions: string[] = [];
  for (const [field, value] of Object.entries(patch)) {
    if (value === undefined) continue;
    if (field === 'description' && value === null) deletions.push(field);
    else pairs.push(field, encodeValue(field, value));
  }
  return [String(pairs.length / 2), ...pairs, ...deletions];
}

/**
 * Rebuilds a record from HGETALL's object; `null` for an empty hash (no such key). A field that is
 * not JSON (a value written by hand, such as a bare `Revoked`) throws `invalid_record` naming the
 * record and the field, never a SyntaxError quoting the value. Types are not checked here (a date
 * field becomes a Date only when it holds a number): every record keygate reads goes through
 * `decodeStoredRecord` (src/record/decode.ts).
 */
export function decodeRecord(hash: Record<string, string>): ApiKeyRecord | null {
  const fields = Object.keys(hash);
  if (fields.length === 0) return null;
  const id = parseOrUndefined(hash.id);
  const record: Record<string, unknown> = {};
  for (const field of fields) {
    if (COUNTER_FIELD.test(field)) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(hash[field] as string);
    } catch {
      throw invalidRecord(id, field, 'is not valid JSON');
    }
    // Only a number is a date; anything else is left for the record decoder to refuse (the Lua
    // scripts likewise treat such a date as unreadable).
    const value = DATE_FIELDS.has(field) && typeof parsed === 'number' ? new Date(parsed) : parsed;
    // defineProperty: a hand-written field named "__proto__" must stay a field, not a prototype.
    Object.defineProperty(record, field, { value, enumerable: true, writable: true, configurable: true });
  }
  return record as unknown as ApiKeyRecord;
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
  for (let i = 0; i + 1 < pairs.length; i += 2) hash[pairs[i] as string] = pairs[i + 1] as string;
  return hash;
}
