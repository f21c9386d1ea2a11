/**
 * IETF RateLimit header fields in the structured-field form of
 * draft-ietf-httpapi-ratelimit-headers-10: `RateLimit-Policy` lists every policy a key has,
 * `RateLimit` reports the one closest to refusing.
 */
import { closestToRefusing, type LimitStatus } from '../policy/limits.js';
import type { RateLimit } from '../types.js';

/** The `RateLimit-Policy` value for a key's limits, or `undefined` when it has none. Computed once per cached key. */
export function rateLimitPolicyHeader(rateLimit: RateLimit | null): string | undefined {
  if (!rateLimit) return undefined;
  const items: string[] = [];
  if (rateLimit.perSecond !== undefined) items.push(`"second";q=${rateLimit.perSecond};w=1`);
  if (rateLimit.perDay !== undefined) items.push(`"day";q=${rateLimit.perDay};w=86400`);
  return items.length > 0 ? items.join(', ') : undefined;
}

/** The `RateLimit` value: remaining and reset of the policy closest to refusing. */
export function rateLimitHeader(policies: readonly LimitStatus[]): string | undefined {
  const closest = closestToRefusing(policies);
  return closest ? `"${closest.policy}";r=${closest.remaining};t=${closest.reset}` : undefined;
}
