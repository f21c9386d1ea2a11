/**
 * IETF RateLimit header fields in the structured-field form of
 * draft-ietf-httpapi-ratelimit-headers-10: `RateLimit-Policy` lists every policy a key has,
 * `RateLimit` reports the one closest to refusing.
 */
import { closestToRefusing, type LimitStatus } from '../policy/limits.js';
import { QUOTA_WINDOWS, windowIndex, windowSeconds, windowStart } from '../policy/windows.js';
import type { RateLimit } from '../types.js';

/**
 * The `RateLimit-Policy` value for a key's limits at `now`, or `undefined` when it has none:
 * shortest window first. Only a month's window (`w`, its length in seconds) depends on `now`.
 */
export function rateLimitPolicyHeader(rateLimit: RateLimit | null, now: number): string | undefined {
  if (!rateLimit) return undefined;
  const items: string[] = [];
  if (rateLimit.perSecond !== undefined) items.push(`"second";q=${rateLimit.perSecond};w=1`);
  for (let i = QUOTA_WINDOWS.length - 1; i >= 0; i--) {
    const window = QUOTA_WINDOWS[i] as (typeof QUOTA_WINDOWS)[number];
    const quota = rateLimit[window.limit];
    if (quota !== undefined) items.push(`"${window.name}";q=${quota};w=${windowSeconds(window, now)}`);
  }
  return items.length > 0 ? items.join(', ') : undefined;
}

/**
 * Until when (epoch ms) a key's policy header computed at `now` stays right: the end of the UTC
 * month for a key with a month quota, else for ever.
 */
export function policyHeaderValidUntil(rateLimit: RateLimit | null, now: number): number {
  const month = QUOTA_WINDOWS[0] as (typeof QUOTA_WINDOWS)[number];
  return rateLimit?.perMonth === undefined ? Number.POSITIVE_INFINITY : windowStart(month, windowIndex(month, now) + 1);
}

/** The `RateLimit` value: remaining and reset of the policy closest to refusing. */
export function rateLimitHeader(policies: readonly LimitStatus[]): string | undefined {
  const closest = closestToRefusing(policies);
  return closest ? `"${closest.policy}";r=${closest.remaining};t=${closest.reset}` : undefined;
}
