/**
 * Limit arithmetic as pure functions of (counter state, limits, now): lifetime uses, the quota
 * windows (UTC minute, hour, day and calendar month, described once in `policy/windows.ts`) and the
 * token bucket. Stores that count in their own language (Lua, SQL) implement the same rules from
 * the same description; the store contract's property test checks they agree.
 */
import type { RateLimit } from '../types.js';
import { QUOTA_WINDOWS, type QuotaWindow, type QuotaWindowName, secondsToWindowEnd, windowIndex, windowSeconds } from './windows.js';

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
  /**
   * The request's claim on a concurrency slot, when the key has `maxConcurrent`. Absent: the
   * consume neither counts nor takes a slot, whatever leases the key holds.
   */
  concurrency?: ConcurrencyClaim;
}

/**
 * A request's claim on one of a key's `maxConcurrent` slots. Admitted, the store records the lease
 * (`lease` → `at + leaseMs`, `at` being the instant it counted at) in the same atomic step as the
 * counters; `release(id, lease)` removes it when the response is done, and a lease never released
 * (its process died) stops counting once its instant has passed.
 */
export interface ConcurrencyClaim {
  /** The key's `maxConcurrent`: at most this many leases may be live at once. */
  limit: number;
  /** This request's slot: unique across every process sharing the store. */
  lease: string;
  /** How long the slot lasts unless released (`concurrencyLeaseMs`). */
  leaseMs: number;
}

/**
 * A key's concurrency leases: lease → the instant (epoch ms, on the consumes' counting clock) it
 * lapses. A lease is live at `at` while its instant is later than `at`.
 */
export type Leases = Readonly<Record<string, number>>;

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
  | 'rate_limited'
  | 'concurrency_limited';

/** The outcome fields that carry a quota window's count. */
export type WindowCountField = 'minuteCount' | 'hourCount' | 'dayCount' | 'monthCount';

/**
 * The result of one consume. When refused, nothing was counted and no slot taken (all-or-nothing).
 * A limit refusal (`usage_exhausted`, `quota_exceeded`, `rate_limited`, `concurrency_limited`)
 * carries the counters that caused it; a lifecycle or deadline refusal carries `useCount` only.
 */
export interface ConsumeOutcome {
  admitted: boolean;
  /** The most lasting limit that refused, when `admitted` is false. */
  refusal?: ConsumeRefusal;
  /** Lifetime admitted uses, including this one when admitted. */
  useCount: number;
  /** Requests counted in the current UTC minute (present when `perMinute` is set). */
  minuteCount?: number;
  /** Requests counted in the current UTC hour (present when `perHour` is set). */
  hourCount?: number;
  /** Requests counted in the current UTC day (present when `perDay` is set). */
  dayCount?: number;
  /** Requests counted in the current UTC calendar month (present when `perMonth` is set). */
  monthCount?: number;
  /** Tokens left in the bucket after this request (present when `perSecond` is set). */
  tokens?: number;
  /**
   * The key's live leases after this request, its own included when admitted (present when the
   * request has a `concurrency` claim).
   */
  inFlight?: number;
  /**
   * The instant the limits were decided at, when it is later than `request.now`: the caller's
   * clock lags the key's latest admitted use, and counters never move back in time. Windows,
   * resets and `Retry-After` are those of this instant. Present only on limit decisions.
   */
  countedAt?: number;
}



/**
 * The counters one key carries. Every admitted use is counted in every window, whether or not the
 * key has a quota for it, so a quota added later applies to the uses already made in its window.
 */
export interface CounterState {
  useCount: number;
  /** UTC minute index (`floor(epochMs / 60 000)`) that `minuteCount` belongs to. */
  minute: number;
  minuteCount: number;
  /** UTC hour index (`floor(epochMs / 3 600 000)`) that `hourCount` belongs to. */
  hour: number;
  hourCount: number;
  /** UTC day index (`floor(epochMs / 86 400 000)`) that `dayCount` belongs to. */
  day: number;
  dayCount: number;
  /** UTC calendar month index (`year × 12 + month`, month 0–11) that `monthCount` belongs to. */
  month: number;
  monthCount: number;
  /** Bucket level at `tokensAt`; `null` is a bucket never drawn from, hence full. */
  tokens: number | null;
  /** Latest `now` of an admitted consume (0 before the first): the instant `tokens` describes. */
  tokensAt: number;
}

/** The counters of a key that has never been used (window index -1 with a count of 0: no window yet). */
export function initialCounters(useCount: number): CounterState {
  return { useCount, minute: -1, minuteCount: 0, hour: -1, hourCount: 0, day: -1, dayCount: 0, month: -1, monthCount: 0, tokens: null, tokensAt: 0 };
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

/**
 * The instant a consume counts at: the caller's clock, or the key's latest admitted instant when
 * the caller's clock lags it (counters never move back in time).
 */
export function countingInstant(state: Pick<CounterState, 'tokensAt'>, now: number): number {
  return Math.max(now, state.tokensAt);
}

/** The leases still live at `at` (their instant is later than `at`): what a consume keeps. */
export function liveLeases(leases: Leases | null | undefined, at: number): Record<string, number> {
  // No prototype: a lease named `__proto__` (a hand-edited store) stays a lease.
  const live = Object.create(null) as Record<string, number>;
  if (leases) {
    for (const lease of Object.keys(leases)) {
      const until = leases[lease];
      if (typeof until === 'number' && until > at) live[lease] = until;
    }
  }
  return live;
}

/**
 * A key's leases after an admitted consume that carried `claim`: the live ones at `at`, plus the
 * claim's own, lapsing `leaseMs` after `at`. (The key's latest instant is now `at`, so the leases
 * lapsed by then can never count again.) A refused consume leaves the leases as they were, lapsed
 * ones included: a later caller whose clock lags counts at an earlier instant, where they may
 * still be live.
 */
export function leasesAfter(leases: Leases | null | undefined, claim: ConcurrencyClaim, at: number): Record<string, number> {
  const live = liveLeases(leases, at);
  live[claim.lease] = at + claim.leaseMs;
  return live;
}

/**
 * Decides one consume without side effects. Returns the outcome and, when admitted, the counter
 * state to store. A refusal by any limit leaves every counter as it was.
 *
 * `inFlight` is the number of the key's leases live at the counting instant
 * (`Object.keys(liveLeases(leases, countingInstant(state, request.now))).length`); it matters only
 * to a request with a `concurrency` claim, whose admission the store then records with
 * {@link leasesAfter} (a refusal changes no lease).
 *
 * A key's counters never move back in time: a caller whose clock lags the latest admitted consume
 * (another process with a skewed clock) is counted at that latest instant and day. Otherwise each
 * such interleaving would credit the same refill twice, or reset the day's quota at midnight again.
 */
export function decideConsume(
  state: CounterState,
  request: ConsumeRequest,
  inFlight = 0,
): { outcome: ConsumeOutcome; next: CounterState | null } {
  const { maxUses, rateLimit, concurrency } = request;
  const at = countingInstant(state, request.now);
  const hasBucket = rateLimit !== null && rateLimit.perSecond !== undefined;
  const tokens = hasBucket ? refilledTokens(state, rateLimit, at) : Number.NaN;

  // This runs on every admitted request, so the windows of QUOTA_WINDOWS are written out field by
  // field (a loop with computed keys cost eight times as much). The engine states its windows in
  // ENGINE_WINDOWS below, checked against the table when this module loads.
  const minute = windowIndex(MINUTE, at);
  const hour = windowIndex(HOUR, at);
  const day = windowIndex(DAY, at);
  const month = windowIndex(MONTH, at);
  const minuteUsed = state.minute === minute ? state.minuteCount : 0;
  const hourUsed = state.hour === hour ? state.hourCount : 0;
  const dayUsed = state.day === day ? state.dayCount : 0;
  const monthUsed = state.month === month ? state.monthCount : 0;

  let refusal: ConsumeRefusal | undefined;
  if (maxUses !== null && state.useCount >= maxUses) refusal = 'usage_exhausted';
  else if (rateLimit !== null && (over(rateLimit.perMonth, monthUsed) || over(rateLimit.perDay, dayUsed) || over(rateLimit.perHour, hourUsed) || over(rateLimit.perMinute, minuteUsed))) {
    refusal = 'quota_exceeded';
  } else if (hasBucket && tokens < 1) refusal = 'rate_limited';
  else if (concurrency !== undefined && inFlight >= concurrency.limit) refusal = 'concurrency_limited';

  const admitted = refusal === undefined;
  const added = admitted ? 1 : 0;
  const outcome: ConsumeOutcome = admitted ? { admitted: true, useCount: state.useCount + 1 } : { admitted: false, refusal, useCount: state.useCount };
  if (rateLimit !== null) {
    if (rateLimit.perMinute !== undefined) outcome.minuteCount = minuteUsed + added;
    if (rateLimit.perHour !== undefined) outcome.hourCount = hourUsed + added;
    if (rateLimit.perDay !== undefined) outcome.dayCount = dayUsed + added;
    if (rateLimit.perMonth !== undefined) outcome.monthCount = monthUsed + added;
  }
  if (hasBucket) outcome.tokens = tokens - added;
  if (concurrency !== undefined) outcome.inFlight = inFlight + added;
  if (at > request.now) outcome.countedAt = at;
  if (!admitted) return { outcome, next: null };
  const next: CounterState = {
    useCount: state.useCount + 1,
    minute,
    minuteCount: minuteUsed + 1,
    hour,
    hourCount: hourUsed + 1,
    day,
    dayCount: dayUsed + 1,
    month,
    monthCount: monthUsed + 1,
    tokens: hasBucket ? tokens - 1 : null,
    tokensAt: at,
  };
  return { outcome, next };
}

function over(quota: number | undefined, used: number): boolean {
  return quota !== undefined && used >= quota;
}

/**
 * The windows `decideConsume` writes out, most lasting first, as `QUOTA_WINDOWS` lists them. A
 * window added to the table and not to the engine fails here, when the module loads (and so in
 * every test run), instead of being silently ignored.
 */
const ENGINE_WINDOWS = ['month', 'day', 'hour', 'minute'] as const;
const [MONTH, DAY, HOUR, MINUTE] = ENGINE_WINDOWS.map((name, i) => {
  const window = QUOTA_WINDOWS[i];
  if (!window || window.name !== name || QUOTA_WINDOWS.length !== ENGINE_WINDOWS.length) {
    throw new Error(`keygate: decideConsume writes out the windows ${ENGINE_WINDOWS.join(', ')}, but QUOTA_WINDOWS lists ${QUOTA_WINDOWS.map((w) => w.name).join(', ')}`);
  }
  return window;
}) as [QuotaWindow, QuotaWindow, QuotaWindow, QuotaWindow];

/** One limit as reported in headers and `verify` results. */
export interface LimitStatus {
  /** Policy name: `second` (the token bucket) or a quota window (`minute`, `hour`, `day`, `month`). */
  policy: 'second' | QuotaWindowName;
  /** Quota of the window (`perSecond`, `perMinute`, …). */
  quota: number;
  /** Window in seconds (1, 60, 3600, 86400, or the seconds of the current UTC month). */
  window: number;
  /** Requests left in the window after this one. */
  remaining: number;
  /** Seconds until the window is fully reset (bucket full / the window's end). */
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
  /** The key's `maxConcurrent` and its requests in flight after this one (present for such keys). */
  concurrency?: { limit: number; inFlight: number };
}

/** `Retry-After` of a `concurrency_limited` refusal, in seconds. */
export const CONCURRENCY_RETRY_AFTER_SECONDS = 1;

/** Turns a consume outcome into the figures the headers and `verify` report. */
export function describeLimits(request: ConsumeRequest, outcome: ConsumeOutcome): LimitsSnapshot {
  const { rateLimit, maxUses } = request;
  // The windows of the instant the store counted at: a lagging caller's own clock would put a
  // reset (and Retry-After) in a window that is already over.
  const now = outcome.countedAt ?? request.now;
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
  if (rateLimit !== null) {
    // Shortest window first, as the RateLimit-Policy field lists them.
    const admitted = outcome.admitted;
    retryAfter = windowStatus(policies, MINUTE, rateLimit.perMinute, outcome.minuteCount, now, admitted, retryAfter);
    retryAfter = windowStatus(policies, HOUR, rateLimit.perHour, outcome.hourCount, now, admitted, retryAfter);
    retryAfter = windowStatus(policies, DAY, rateLimit.perDay, outcome.dayCount, now, admitted, retryAfter);
    retryAfter = windowStatus(policies, MONTH, rateLimit.perMonth, outcome.monthCount, now, admitted, retryAfter);
  }
  // A slot frees when a request of the key ends, which no counter predicts: try again shortly.
  if (outcome.refusal === 'concurrency_limited') retryAfter = CONCURRENCY_RETRY_AFTER_SECONDS;
  const snapshot: LimitsSnapshot = {
    policies,
    usesRemaining: maxUses === null ? null : Math.max(0, maxUses - outcome.useCount),
  };
  if (request.concurrency !== undefined && outcome.inFlight !== undefined) {
    snapshot.concurrency = { limit: request.concurrency.limit, inFlight: outcome.inFlight };
  }
  if (!outcome.admitted && outcome.refusal !== 'usage_exhausted' && retryAfter !== undefined) {
    snapshot.retryAfter = retryAfter;
  }
  return snapshot;
}

/**
 * Adds a quota window's status to `policies` when the key has that quota; returns `retryAfter`,
 * raised to the window's end when the window refused.
 */
function windowStatus(
  policies: LimitStatus[],
  window: QuotaWindow,
  quota: number | undefined,
  counted: number | undefined,
  now: number,
  admitted: boolean,
  retryAfter: number | undefined,
): number | undefined {
  if (quota === undefined) return retryAfter;
  const untilEnd = secondsToWindowEnd(window, now);
  const used = counted ?? 0;
  policies.push({ policy: window.name, quota, window: windowSeconds(window, now), remaining: Math.max(0, quota - used), reset: untilEnd });
  return !admitted && used >= quota ? Math.max(retryAfter ?? 0, untilEnd) : retryAfter;
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
