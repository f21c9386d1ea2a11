/** The public view of a record: what users see, never the hash. */
import { isActiveAt } from '../policy/status.js';
import type { ApiKey, ApiKeyRecord } from '../types.js';

/** The `ApiKey` view of a record at `now`: every field but `keyHash`, plus `isActive`. */
export function toApiKey(record: ApiKeyRecord, now: number): ApiKey {
  const { keyHash: _hash, ...visible } = record;
  return { ...visible, isActive: isActiveAt(record, now) };
}
