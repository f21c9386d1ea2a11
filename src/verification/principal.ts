/** The public view of a record: what users see, never the hash. */
import { isActiveAt } from '../policy/status.js';
import type { ApiKey, ApiKeyRecord } from '../types.js';

/** A record with its hash removed: what the verification cache keeps. */
export type VisibleRecord = Omit<ApiKeyRecord, 'keyHash'>;

/** The record without `keyHash`. */
export function withoutHash(record: ApiKeyRecord | VisibleRecord): VisibleRecord {
  if (!('keyHash' in record)) return record;
  const { keyHash: _hash, ...visible } = record;
  return visible;
}

/** The `ApiKey` view of a record at `now`: every field but `keyHash`, plus `isActive`. */
export function toApiKey(record: ApiKeyRecord | VisibleRecord, now: number): ApiKey {
  return { ...withoutHash(record), isActive: isActiveAt(record, now) };
}
