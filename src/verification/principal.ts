/**
 * The public view of a record: what users see, never the hash. Every view is a deep copy: an app
 * that changes `req.apiKey.expiresAt`, `.metadata` or `.rateLimit` changes its own copy, never the
 * record keygate makes its next decision from.
 */
import { copyFieldValue, ownValue } from '../record/decode.js';
import { RECORD_FIELDS } from '../record/schema.js';
import { isActiveAt } from '../policy/status.js';
import type { ApiKey, ApiKeyRecord } from '../types.js';

/** Every field of the view, from the record schema: all but the hash. */
const VIEW_FIELDS = RECORD_FIELDS.filter((entry) => entry.field !== 'keyHash');

/** A record with its hash removed: what the verification cache keeps. */
export type VisibleRecord = Omit<ApiKeyRecord, 'keyHash'>;

/** The record without `keyHash` (sharing its nested values: for keygate's private use). */
export function withoutHash(record: ApiKeyRecord | VisibleRecord): VisibleRecord {
  if (!('keyHash' in record)) return record;
  const { keyHash: _hash, ...visible } = record;
  return visible;
}

/** The `ApiKey` view of a record at `now`: a deep copy of every field but `keyHash`, plus `isActive`. */
export function toApiKey(record: ApiKeyRecord | VisibleRecord, now: number): ApiKey {
  const view: Record<string, unknown> = {};
  for (const { field, spec } of VIEW_FIELDS) {
    const value = ownValue(record, field);
    if (value !== undefined) view[field] = copyFieldValue(spec.kind, value);
  }
  view.isActive = isActiveAt(record, now);
  view.isTestKey = record.environment === 'test';
  return view as unknown as ApiKey;
}
