/**
 * Lifecycle checks: status, scheduled revocation (rotation grace) and expiry. Pure functions of
 * (record, now); they run only after the secret verified, so they never reveal whether a key exists.
 */
import type { ApiKeyRecord } from '../types.js';
import { ADMIT, type PolicyResult } from './result.js';

type Lifecycle = Pick<ApiKeyRecord, 'status' | 'revokedAt' | 'expiresAt'>;

/** Refuses revoked keys (including a rotated-out key past its grace) and suspended keys. */
export function checkStatus(record: Lifecycle, now: number): PolicyResult {
  if (record.status === 'revoked') return { ok: false, code: 'api_key_revoked' };
  if (record.revokedAt !== null && record.revokedAt.getTime() <= now) return { ok: false, code: 'api_key_revoked' };
  if (record.status === 'suspended') return { ok: false, code: 'api_key_disabled' };
  return ADMIT;
}

/** Refuses a key whose `expiresAt` is at or before now. */
export function checkExpiry(record: Lifecycle, now: number): PolicyResult {
  if (record.expiresAt !== null && record.expiresAt.getTime() <= now) return { ok: false, code: 'api_key_expired' };
  return ADMIT;
}

/** `isActive` of the public view: status active, not expired, not revoked at `now`. */
export function isActiveAt(record: Lifecycle, now: number): boolean {
  return checkStatus(record, now).ok && checkExpiry(record, now).ok;
}
