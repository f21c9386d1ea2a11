/**
 * Lifecycle checks: status, scheduled revocation (rotation grace) and expiry. Pure functions of
 * (record, now); they run only after the secret verified, so they never reveal whether a key exists.
 *
 * Status is an allow-list: only `active` admits. A status keygate does not know (a row edited by
 * hand to `disabled`, `Revoked`, …) is refused as revoked, never admitted.
 */
import type { ApiKeyRecord } from '../types.js';
import { ADMIT, type PolicyResult } from './result.js';

type Lifecycle = Pick<ApiKeyRecord, 'status' | 'revokedAt' | 'expiresAt'>;

/** A lifecycle refusal code. */
export type LifecycleRefusal = 'api_key_revoked' | 'api_key_disabled' | 'api_key_expired';

/**
 * The lifecycle refusal of a key at `now`, from plain values (epoch milliseconds or `null`), or
 * `undefined` when it may be used. Stores that count in process apply it inside their atomic
 * consume; the Lua and SQL consumes state the same rules.
 */
export function lifecycleRefusal(status: string, revokedAt: number | null, expiresAt: number | null, now: number): LifecycleRefusal | undefined {
  if (status !== 'active' && status !== 'suspended') return 'api_key_revoked';
  if (revokedAt !== null && revokedAt <= now) return 'api_key_revoked';
  if (status === 'suspended') return 'api_key_disabled';
  if (expiresAt !== null && expiresAt <= now) return 'api_key_expired';
  return undefined;
}

/** Refuses revoked keys (including a rotated-out key past its grace), suspended keys and any unknown status. */
export function checkStatus(record: Lifecycle, now: number): PolicyResult {
  const code = lifecycleRefusal(record.status, epochOf(record.revokedAt), null, now);
  return code === undefined ? ADMIT : { ok: false, code };
}

/** Refuses a key whose `expiresAt` is at or before now. */
export function checkExpiry(record: Lifecycle, now: number): PolicyResult {
  if (record.expiresAt !== null && record.expiresAt.getTime() <= now) return { ok: false, code: 'api_key_expired' };
  return ADMIT;
}

/** True when the key can no longer come back: status `revoked` (or unknown), or `revokedAt` passed. */
export function isRevokedAt(record: Pick<ApiKeyRecord, 'status' | 'revokedAt'>, now: number): boolean {
  return lifecycleRefusal(record.status, epochOf(record.revokedAt), null, now) === 'api_key_revoked';
}

/** Epoch milliseconds of a nullable date: the form {@link lifecycleRefusal} takes. */
export function epochOf(date: Date | null): number | null {
  return date === null ? null : date.getTime();
}

/** `isActive` of the public view: status active, not expired, not revoked at `now`. */
export function isActiveAt(record: Lifecycle, now: number): boolean {
  return checkStatus(record, now).ok && checkExpiry(record, now).ok;
}
