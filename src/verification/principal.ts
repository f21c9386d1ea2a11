/**
 * The public view of a record: what users see, never the hash. Every view is a deep copy: an app
 * that changes `req.apiKey.expiresAt`, `.metadata` or `.rateLimit` changes its own copy, never the
 * record keygate makes its next decision from.
 */
import { copyJsonObject } from '../record/decode.js';
import { isActiveAt } from '../policy/status.js';
import type { ApiKey, ApiKeyRecord } from '../types.js';

/** A record with its hash removed: what the verification cache keeps. */
export type VisibleRecord = Omit<ApiKeyRecord, 'keyHash'>;

/** The record without `keyHash` (sharing its nested values: for keygate's private use). */
export function withoutHash(record: ApiKeyRecord | VisibleRecord): VisibleRecord {
  if (!('keyHash' in record)) return record;
  const { keyHash: _hash, ...visible } = record;
  return visible;
}

function copyDate(date: Date | null): Date | null {
  return date === null ? null : new Date(date.getTime());
}

/** The `ApiKey` view of a record at `now`: a deep copy of every field but `keyHash`, plus `isActive`. */
export function toApiKey(record: ApiKeyRecord | VisibleRecord, now: number): ApiKey {
  const view: ApiKey = {
    ...withoutHash(record),
    scopes: [...record.scopes],
    allowedIps: [...record.allowedIps],
    tags: [...record.tags],
    rateLimit: record.rateLimit === null ? null : { ...record.rateLimit },
    metadata: copyJsonObject(record.metadata),
    expiresAt: copyDate(record.expiresAt),
    createdAt: new Date(record.createdAt.getTime()),
    updatedAt: new Date(record.updatedAt.getTime()),
    lastUsedAt: copyDate(record.lastUsedAt),
    revokedAt: copyDate(record.revokedAt),
    isActive: isActiveAt(record, now),
  };
  return view;
}
