/**
 * Limit arithmetic as pure functions of (counter state, limits, now): the token bucket, the UTC-day
 * quota and lifetime uses. Stores that count in their own language (Lua, SQL) implement the same
 * rules; the store contract suite checks they agree.
 */
import type { RateLimit } from '../types.js';

/**
 * One atomic consume: the limits to enforce and the caller's clock. The limits travel with the
 * request (they come from the record the caller verified), so a store need not read the record.
 */
export interface ConsumeRequest {
  /** Caller's clock, epoch milliseconds. */
  now: number;
  maxUses: number | null;
  rateLimit: RateLimit | null;
  /**
   * Wall-clock instant (epoch milliseconds on the `Date.now()` scale, never the injected clock)
   * after which the caller has given up and answered `503 store_unavailable`. A store that gets
   * to the consume after it (a queued command, a wait for a row lock or a connection) must not
   * apply it: it refuses with `deadline_exceeded` and counts nothing, so a request answered 503
   * is never counted. Compare it with the clock of the place that applies the consume (Redis
   * `TIME`, PostgreSQL `clock_timestamp()`, `Date.now()` in process). Absent: no deadline.
   */
  deadline?: number;
}

/**
 * Why a consume was refused. The lifecycle codes come first (the record in the store is no longer
 * usable, whatever the caller's cache says), then the limits, most lasting first.
 */
export type ConsumeRefusal =
  | 'deadline_exceeded'
  | 'api_key_revoked'
  | 'api_key_disabled'
  | 'api_key_expired'
  | 'usage_exhausted'
  | 'quota_exceeded'
  | 'rate_limited';

/**
 * The result of one consume. When refused, nothing was counted (all-or-nothing). A limit refusal
 * (`usage_exhausted`, `quota_exceeded`, `rate_limited`) carries the counters that caused it; a
 * lifecycle or deadline refusal carries `useCount` only.
 */
export interface ConsumeOutcome {
  admitted: boolean;
  /** The most lasting limit that refused, when `admitted` is false. */
  refusal?: ConsumeRefusal;
  /** Lifetime admitted uses, including this one when admitted. */
  useCount: number;
  /** Requests counted in the current UTC day (present when `perDay` is set). */
  dayCount?: number;
  /** Tokens left in the bucket after this request (present when `perSecond` is set). */
  tokens?: number;
}


/** Milliseconds in a UTC day. */
export const DAY_MS = 86_400_000;

/** The counters one key carries besides `useCount`. */
export interface CounterState {
  useCount: number;
  /** UTC day index (`floor(epochMs / DAY_MS)`) that `dayCount` belongs to. */
  day: number;
  dayCount: number;
  /** Bucket level at `tokensAt`; `null` is a bucket never drawn from, hence full. */
  tokens: number | null;
  /** Latest `now` of an admitted consume (0 before the first): the instant `tokens` describes. */
  tokensAt: number;
}

/** The counters of a key that has never been used. */
export function initialCounters(useCount: number): CounterState {
  return { useCount, day: -1, dayCount: 0, tokens: null, tokensAt: 0 };
}

/** Capacity of the token bucket: `burst`, or `perSecond` when no burst is given. */
export function bucketCapacity(limit: RateLimit): number {
  return limit.burst ?? limit.perSecond ?? 0;
}

/** The bucket level at `now`, refilled since `state.tokensAt` and capped at capacity. */
export function refilledTokens(state: Pick<CounterState, 'tokens' | 'tokensAt'>, limit: RateLimit, now: number): number {
  const capacity = bucketCapacity(limit);
  if (state.tokens === null) return capacity;
  const elapsedMs = Math.max(0, now - state.tokensAt);
  return Math.min(capacity, state.tokens + (elapsedMs * (limit.perSecond ?? 0)) / 1000);
}

/** UTC day index of an instant. */
export function utcDay(now: number): number {
  return Math.floor(now / DAY_MS);
}

/** Whole seconds from `now` to the next 00:00:00Z (at least 1). */
export function secondsToUtcMidnight(now: number): number {
  return Math.max(1, Math.ceil(((utcDay(now) + 1) * DAY_MS - now) / 1000));
}

/**
 * Decides one consume without side effects. Returns the outcome and, when admitted, the counter
 * state to store. A refusal by any limit leaves every counter as it was.
 *
 * A key's counters never move back in time: a caller whose clock lags the latest admitted consume
 * (another process with a skewed clock) is counted at that latest instant and day. Otherwise each
 * such interleaving would credit the same refill twice, or reset the day's quota at midnight again.
 */
export function decideConsume(
  state: CounterState,
  request: ConsumeRequest,
): { outcome: ConsumeOutcome; next: CounterState | null } {
  const { maxUses, rateLimit } = request;
  const now = Math.max(request.now, state.tokensAt);
  const today = utcDay(now);
  const dayCount = state.day === today ? state.dayCount : 0;
  const perDay = rateLimit?.perDay;
  const hasBucket = rateLimit?.perSecond !== undefined;
  const tokens = hasBucket && rateLimit ? refilledTokens(state, rateLimit, now) : Number.NaN;

  let refusal: ConsumeRefusal | undefined;
  if (maxUses !== null && state.useCount >= maxUses) refusal = 'usage_exhausted';
  else if (perDay !== undefined && dayCount >= perDay) refusal = 'quota_exceeded';
  else if (hasBucket && tokens < 1) refusal = 'rate_limited';

  if (refusal) {
    const outcome: ConsumeOutcome = { admitted: false, refusal, useCount: state.useCount };
    if (perDay !== undefined) outcome.dayCount = dayCount;
    if (hasBucket) outcome.tokens = tokens;
    return { outcome, next: null };
  }

  const next: CounterState = {
    useCount: state.useCount + 1,
    day: today,
    dayCount: dayCount + 1,
    tokens: hasBucket ? tokens - 1 : null,
    tokensAt: now,
  };
  const outcome: ConsumeOutcome = { admitted: true, useCount: next.useCount };
  if (perDay !== undefined) outcome.dayCount = next.dayCount;
  if (hasBucket) outcome.tokens = tokens - 1;
  return { outcome, next };
}

/** One limit as reported in headers and `verify` results. */
export interface LimitStatus {
  /** Policy name: `second` or `day`. */
  policy: 'second' | 'day';
  /** Quota of the window (`perSecond` or `perDay`). */
  quota: number;
  /** Window in seconds (1 or 86400). */
  window: number;
  /** Requests left in the window after this one. */
  remaining: number;
  /** Seconds until the window is fully reset (bucket full / next UTC midnight). */
  reset: number;
}

/** What the limits of a key looked like after one consume. */
export interface LimitsSnapshot {
  /** One entry per rate-limit policy the key has (`maxUses` is not a policy). */
  policies: LimitStatus[];
  /** Lifetime uses left, or `null` when unlimited. */
  usesRemaining: number | null;
  /** When refused: whole seconds until the request could succeed (absent for `usage_exhausted`). */
  retryAfter?: number;
}

/** Turns a consume outcome into the figures the headers and `verify` report. */
export function describeLimits(request: ConsumeRequest, outcome: ConsumeOutcome): LimitsSnapshot {
  const { rateLimit, maxUses, now } = request;
  const policies: LimitStatus[] = [];
  let retryAfter: number | undefined;
  if (rateLimit?.perSecond !== undefined) {
    const perSecond = rateLimit.perSecond;
    const tokens = outcome.tokens ?? bucketCapacity(rateLimit);
    const capacity = bucketCapacity(rateLimit);
    policies.push({
      policy: 'second',
      quota: perSecond,
      window: 1,
      remaining: Math.max(0, Math.floor(tokens)),
      reset: perSecond > 0 ? Math.ceil(Math.max(0, capacity - tokens) / perSecond) : 0,
    });
    if (!outcome.admitted && tokens < 1) {
      retryAfter = perSecond > 0 ? Math.max(1, Math.ceil((1 - tokens) / perSecond)) : undefined;
    }
  }
  if (rateLimit?.perDay !== undefined) {
    const untilMidnight = secondsToUtcMidnight(now);
    const used = outcome.dayCount ?? 0;
    policies.push({
      policy: 'day',
      quota: rateLimit.perDay,
      window: 86_400,
      remaining: Math.max(0, rateLimit.perDay - used),
      reset: untilMidnight,
    });
    if (!outcome.admitted && used >= rateLimit.perDay) retryAfter = Math.max(retryAfter ?? 0, untilMidnight);
  }
  const snapshot: LimitsSnapshot = {
    policies,
    usesRemaining: maxUses === null ? null : Math.max(0, maxUses - outcome.useCount),
  };
  if (!outcome.admitted && outcome.refusal !== 'usage_exhausted' && retryAfter !== undefined) {
    snapshot.retryAfter = retryAfter;
  }
  return snapshot;
}

/**
 * The policy closest to refusing: the smallest share `remaining / quota` left; ties go to the
 * shorter window. `undefined` when the key has no rate-limit policy.
 */
export function closestToRefusing(policies: readonly LimitStatus[]): LimitStatus | undefined {
  let closest: LimitStatus | undefined;
  for (const policy of policies) {
    if (!closest) {
      closest = policy;
      continue;
    }
    const share = policy.quota > 0 ? policy.remaining / policy.quota : 0;
    const closestShare = closest.quota > 0 ? closest.remaining / closest.quota : 0;
    if (share < closestShare || (share === closestShare && policy.window < closest.window)) closest = policy;
  }
  return closest;
}
