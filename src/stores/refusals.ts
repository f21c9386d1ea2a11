/**
 * What every built-in store refuses in the same words: a status change of a revoked key, a
 * rotation of a retired one; and which consume refusals carry counters.
 */
import { invalidArgument } from '../errors.js';
import type { KeygateError } from '../errors.js';
import type { ConsumeRefusal } from './store.js';

/** `update` of a revoked key's status to anything but `revoked`: `invalid_argument` (field `status`). */
export function revokedKeyCannotChangeStatus(): KeygateError {
  return invalidArgument('status', 'a revoked key cannot be reactivated or suspended; create a new key');
}

/** `rotate` of a key already revoked or rotated: `invalid_argument` (field `id`). */
export function retiredKeyCannotRotate(): KeygateError {
  return invalidArgument('id', 'this key was already rotated or revoked; rotate its replacement instead');
}

/** True for the limit refusals, which carry the counters that caused them. */
export function isLimitRefusal(refusal: ConsumeRefusal | undefined): refusal is 'usage_exhausted' | 'quota_exceeded' | 'rate_limited' {
  return refusal === 'usage_exhausted' || refusal === 'quota_exceeded' || refusal === 'rate_limited';
}
