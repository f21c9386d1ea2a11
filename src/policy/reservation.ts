/**
 * Leased admission (`keygate({ consistency: 'leased' })`) as pure functions: a process reserves a
 * batch of a key's uses in one atomic step of the store, spends them locally without a round
 * trip, and gives back what it did not spend. Every reserved unit is counted in the store at
 * reservation, against every limit at once, so the processes sharing a store can never admit more
 * than the limits allow: leasing trades only early refusals (units another process holds), never
 * an over-admission.
 *
 * The lifetime uses and the quota windows are plain counts: a unit reserved in a window is counted
 * in it, and a process spends it only while that window lasts. The token bucket needs more: a
 * bucket refills while tokens are held, so without care a process could spend its held tokens just
 * as the bucket, full again, lets another process take a whole burst. The store therefore keeps
 * each reservation as a *hold* (lease → instant it lapses, units, tokens, counting instant), and
 * the bucket refills only up to its capacity minus the tokens of live holds: at every instant the
 * bucket's level plus every token held is at most its capacity, so in any interval the admissions
 * of all processes together are at most what one exact bucket would admit.
 *
 * Stores implement these rules in their own language (Lua, SQL) or call these functions inside
 * their atomic step; the store contract's `leases` group checks them.
 */
import type { RateLimit } from '../types.js';
import { type ConsumeOutcome, type ConsumeRefusal, type CounterState, bucketCapacity, countingInstant } from './limits.js';
import { QUOTA_WINDOWS, windowIndex } from './windows.js';

/** One atomic reservation of up to `units` uses of a key. */
export interface ReserveRequest {
  /** Caller's clock, epoch milliseconds. */
  now: number;
  maxUses: number | null;
  rateLimit: RateLimit | null;
  /** As for a consume: after this wall-clock instant the store applies nothing (`deadline_exceeded`). */
  deadline?: number;
  /** How many uses the caller would like (an integer, at least 1). */
  units: number;
  /** This reservation's name: unique across every process sharing the store. */
  lease: string;
  /** How long the hold lasts: it lapses `leaseMs` after the instant it was counted at. */
  leaseMs: number;
}

/**
 * The result of a reservation. Admitted, `granted` units (1 to `units`) were counted in the
 * store and the counters are those after them; refused, nothing was counted and the counters are
 * the ones that refused, exactly as for a consume.
 */
export interface ReserveOutcome extends ConsumeOutcome {
  /** Units counted for the caller: at least 1 when admitted, 0 when refused. */
  granted: number;
}

/** A reservation as the store keeps it, until it is settled or lapses. */
export interface Hold {
  /** Instant (counting clock, epoch ms) at which the hold lapses. */
  until: number;
  /** Units granted. */
  units: number;
  /** Bucket tokens granted (the units, for a key with `perSecond`; else 0). */
  tokens: number;
  /** The instant the reservation counted at: the windows its units belong to. */
  at: number;
}

/** A key's holds: lease → hold. */
export type Holds = Readonly<Record<string, Hold>>;

/** The end of a reservation: the caller will spend no more of it. */
export interface Settlement {
  /** The reservation's `lease`. */
  lease: string;
  /** Units of it the caller did not spend (0 to its `granted`). */
  unspent: number;
  /** Caller's clock, epoch milliseconds. */
  now: number;
  /** The key's rate limit, as for a consume: the bucket's capacity and refill. */
  rateLimit: RateLimit | null;
}

/** Tokens held at `at` by holds still live then. */
export function heldTokens(holds: Holds | null | undefined, at: number): number {
  let held = 0;
  if (holds) {
    for (const lease of Object.keys(holds)) {
      const hold = holds[lease];
      if (hold !== undefined && hold.until > at) held += hold.tokens;
    }
  }
  return held;
}

/** The holds still live at `at` (a fresh object without prototype: a lease named `__proto__` stays data). */
export function liveHolds(holds: Holds | null | undefined, at: number): Record<string, Hold> {
  const live = Object.create(null) as Record<string, Hold>;
  if (holds) {
    for (const lease of Object.keys(holds)) {
      const hold = holds[lease];
      if (hold !== undefined && hold.until > at) live[lease] = hold;
    }
  }
  return live;
}

/** The bucket level at `at`: refilled since `tokensAt`, capped at capacity minus the tokens held. */
export function bucketLevel(state: Pick<CounterState, 'tokens' | 'tokensAt'>, limit: RateLimit, at: number, held: number): number {
  const cap = Math.max(0, bucketCapacity(limit) - held);
  if (state.tokens === null) return cap;
  const elapsedMs = Math.max(0, at - state.tokensAt);
  return Math.min(cap, state.tokens + (elapsedMs * (limit.perSecond ?? 0)) / 1000);
}

/**
 * Decides one reservation without side effects: the outcome, and when admitted the counters and
 * holds to store (lapsed holds dropped, the new one added). A refusal changes nothing, lapsed holds
 * included, as a refused consume changes no lease.
 *
 * Counted at `countingInstant(state, request.now)`; the grant is the smallest of `units`, the
 * lifetime uses left, each quota's room in its current window and the whole tokens of the bucket
 * (refilled up to capacity minus live holds). A grant of 0 is a refusal, reported as a consume
 * would report it: `usage_exhausted`, then the quotas from the most lasting, then `rate_limited`.
 */
export function decideReservation(
  state: CounterState,
  holds: Holds | null | undefined,
  request: ReserveRequest,
): { outcome: ReserveOutcome; next: CounterState | null; holds: Record<string, Hold> | null } {
  const { maxUses, rateLimit } = request;
  const at = countingInstant(state, request.now);
  const hasBucket = rateLimit !== null && rateLimit.perSecond !== undefined;
  const live = liveHolds(holds, at);
  const tokens = hasBucket ? bucketLevel(state, rateLimit, at, heldTokens(live, at)) : Number.NaN;

  const used = {} as Record<'minute' | 'hour' | 'day' | 'month', { index: number; count: number }>;
  let granted = Math.max(1, Math.floor(request.units));
  let refusal: ConsumeRefusal | undefined;
  if (maxUses !== null) {
    granted = Math.min(granted, maxUses - state.useCount);
    if (granted < 1) refusal = 'usage_exhausted';
  }
  for (const window of QUOTA_WINDOWS) {
    const index = windowIndex(window, at);
    const count = state[window.indexField] === index ? state[window.countField] : 0;
    used[window.indexField] = { index, count };
    const quota = rateLimit?.[window.limit];
    if (quota === undefined || refusal !== undefined) continue;
    granted = Math.min(granted, quota - count);
    if (granted < 1) refusal = 'quota_exceeded';
  }
  if (hasBucket && refusal === undefined) {
    granted = Math.min(granted, Math.floor(tokens));
    if (granted < 1) refusal = 'rate_limited';
  }
  if (refusal !== undefined) granted = 0;

  const outcome: ReserveOutcome =
    refusal === undefined
      ? { admitted: true, granted, useCount: state.useCount + granted }
      : { admitted: false, refusal, granted: 0, useCount: state.useCount };
  for (const window of QUOTA_WINDOWS) {
    if (rateLimit?.[window.limit] !== undefined) outcome[window.countField] = used[window.indexField].count + granted;
  }
  if (hasBucket) outcome.tokens = tokens - granted;
  if (at > request.now) outcome.countedAt = at;
  if (refusal !== undefined) return { outcome, next: null, holds: null };

  const next: CounterState = {
    useCount: state.useCount + granted,
    minute: used.minute.index,
    minuteCount: used.minute.count + granted,
    hour: used.hour.index,
    hourCount: used.hour.count + granted,
    day: used.day.index,
    dayCount: used.day.count + granted,
    month: used.month.index,
    monthCount: used.month.count + granted,
    tokens: hasBucket ? tokens - granted : null,
    tokensAt: at,
  };
  live[request.lease] = { until: at + request.leaseMs, units: granted, tokens: hasBucket ? granted : 0, at };
  return { outcome, next, holds: live };
}

/**
 * Decides one settlement without side effects: the counters and holds to store, or `null` when
 * there is nothing to do (no hold of that lease: settled before, or lapsed and dropped), which
 * makes a settlement idempotent: a retry after a lost answer gives nothing back twice.
 *
 * The unspent units (at most the hold's) come off `useCount`, and off each window count whose
 * window is still the one the reservation counted in (a window since ended keeps its history).
 * Bucket tokens go back only while the hold is live at the counting instant: once it lapsed, the
 * bucket has refilled past them. The hold is removed either way, with every lapsed one.
 */
export function decideSettlement(
  state: CounterState,
  holds: Holds | null | undefined,
  settlement: Settlement,
): { next: CounterState; holds: Record<string, Hold> } | null {
  const hold = holds?.[settlement.lease];
  if (hold === undefined || !Object.prototype.hasOwnProperty.call(holds, settlement.lease)) return null;
  const at = countingInstant(state, settlement.now);
  const unspent = Math.min(hold.units, Math.max(0, Math.floor(settlement.unspent)));
  const rest = liveHolds(holds, at);
  delete rest[settlement.lease];

  const next: CounterState = { ...state, useCount: Math.max(0, state.useCount - unspent) };
  for (const window of QUOTA_WINDOWS) {
    if (next[window.indexField] === windowIndex(window, hold.at)) next[window.countField] = Math.max(0, next[window.countField] - unspent);
  }
  const limit = settlement.rateLimit;
  if (limit !== null && limit.perSecond !== undefined && hold.until > at) {
    // The level with this hold still held, then with its unspent tokens back and its cap raised.
    const level = bucketLevel(state, limit, at, heldTokens(rest, at) + hold.tokens);
    next.tokens = Math.min(Math.max(0, bucketCapacity(limit) - heldTokens(rest, at)), level + Math.min(unspent, hold.tokens));
    next.tokensAt = at;
  }
  return { next, holds: rest };
}
