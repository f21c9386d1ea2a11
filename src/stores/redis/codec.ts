/**
 * A record as a Redis hash: one field per record field, each value JSON (Dates as epoch
 * milliseconds), so `update` can set and delete single fields atomically. Counter fields (`c:*`)
 * belong to the consume script and are never part of the record.
 */
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

/** Rebuilds a record from HGETALL's object; `null` for an empty hash (no such key). */
export function decodeRecord(hash: Record<string, string>): ApiKeyRecord | null {
  const fields = Object.keys(hash);
  if (fields.length === 0) return null;
  const record: Record<string, unknown> = {};
  for (const field of fields) {
    if (COUNTER_FIELD.test(field)) continue;
    const parsed: unknown = JSON.parse(hash[field] as string);
    record[field] = DATE_FIELDS.has(field) && parsed !== null ? new Date(parsed as number) : parsed;
  }
  return record as unknown as ApiKeyRecord;
}

/** HGETALL through a Lua script arrives as a flat `[field, value, …]` array. */
export function pairsToHash(pairs: readonly string[]): Record<string, string> {
  const hash: Record<string, string> = {};
  for (let i = 0; i + 1 < pairs.length; i += 2) hash[pairs[i] as string] = pairs[i + 1] as string;
  return hash;
}
