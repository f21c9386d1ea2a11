import fc from 'fast-check';
import {
  CONCURRENCY_RETRY_AFTER_SECONDS,
  bucketCapacity,
  closestToRefusing,
  countingInstant,
  decideConsume,
  describeLimits,
  initialCounters,
  leasesAfter,
  liveLeases,
  refilledTokens,
  type ConcurrencyClaim,
  type CounterState,
  type Leases,
  type LimitStatus,
} from '../../src/policy/limits';
import { QUOTA_WINDOWS, secondsToWindowEnd, windowIndex } from '../../src/policy/windows';
import type { ConsumeOutcome, ConsumeRequest } from '../../src/stores/store';
import type { RateLimit } from '../../src/types';

const DAY_MS = 86_400_000;
const DAY = QUOTA_WINDOWS.find((window) => window.name === 'day')!;
const utcDay = (at: number): number => windowIndex(DAY, at);
const secondsToUtcMidnight = (at: number): number => secondsToWindowEnd(DAY, at);

/** Wed 2025-01-15 12:00:00.000Z: an injected clock, never Date.now(). */
const NOON = Date.UTC(2025, 0, 15, 12, 0, 0);
const MIDNIGHT = Date.UTC(2025, 0, 16, 0, 0, 0);

function request(now: number, rateLimit: RateLimit | null, maxUses: number | null = null): ConsumeRequest {
  return { now, rateLimit, maxUses };
}

/** A counter store of one key driven by decideConsume, as a store would. */
class Counter {
  state: CounterState;
  constructor(useCount = 0) {
    this.state = initialCounters(useCount);
  }
  consume(req: ConsumeRequest): ConsumeOutcome {
    const { outcome, next } = decideConsume(this.state, req);
    if (next) this.state = next;
    return outcome;
  }
  /** Consumes `n` times at one instant and returns how many were admitted. */
  burst(n: number, req: ConsumeRequest): number {
    let admitted = 0;
    for (let i = 0; i < n; i++) if (this.consume(req).admitted) admitted++;
    return admitted;
  }
}

describe('token bucket', () => {
  it.each([
    [{ perSecond: 5 }, 5],
    [{ perSecond: 5, burst: 20 }, 20],
    [{ perSecond: 10, burst: 1 }, 1],
    [{ perSecond: 3, perDay: 100 }, 3],
  ])('has capacity burst ?? perSecond: %j → %d', (limit, capacity) => {
    expect(bucketCapacity(limit)).toBe(capacity);
  });

  it.each([
    [{ perSecond: 5 }, 5],
    [{ perSecond: 5, burst: 20 }, 20],
    [{ perSecond: 100, burst: 1 }, 1],
  ])('starts full: %j admits %d requests at one instant, then refuses rate_limited', (limit, capacity) => {
    const counter = new Counter();
    expect(counter.burst(capacity, request(NOON, limit))).toBe(capacity);
    const refused = counter.consume(request(NOON, limit));
    expect(refused.admitted).toBe(false);
    expect(refused.refusal).toBe('rate_limited');
  });

  it('refills fractionally at perSecond per second', () => {
    const limit = { perSecond: 4, burst: 1 };
    const counter = new Counter();
    expect(counter.consume(request(NOON, limit)).admitted).toBe(true);
    expect(refilledTokens(counter.state, limit, NOON + 125)).toBeCloseTo(0.5, 10);
    const early = counter.consume(request(NOON + 125, limit));
    expect(early).toMatchObject({ admitted: false, refusal: 'rate_limited' });
    expect(early.tokens).toBeCloseTo(0.5, 10);
    expect(counter.consume(request(NOON + 250, limit)).admitted).toBe(true);
  });

  it('admits one request per 1/perSecond seconds once the burst is spent (perSecond 3)', () => {
    const limit = { perSecond: 3 };
    const counter = new Counter();
    expect(counter.burst(3, request(NOON, limit))).toBe(3);
    expect(counter.consume(request(NOON + 333, limit)).admitted).toBe(false);
    expect(counter.consume(request(NOON + 334, limit)).admitted).toBe(true);
    expect(counter.consume(request(NOON + 600, limit)).admitted).toBe(false);
    expect(counter.consume(request(NOON + 668, limit)).admitted).toBe(true);
  });

  it('never holds more tokens than its capacity, however long the key was idle', () => {
    const limit = { perSecond: 5 };
    const counter = new Counter();
    expect(counter.consume(request(NOON, limit)).admitted).toBe(true);
    const hourLater = NOON + 3_600_000;
    expect(refilledTokens(counter.state, limit, hourLater)).toBe(5);
    expect(counter.burst(5, request(hourLater, limit))).toBe(5);
    expect(counter.consume(request(hourLater, limit)).admitted).toBe(false);
  });

  it('reports the tokens left after an admitted request', () => {
    const limit = { perSecond: 2, burst: 10 };
    const counter = new Counter();
    expect(counter.consume(request(NOON, limit)).tokens).toBe(9);
    expect(counter.consume(request(NOON, limit)).tokens).toBe(8);
    expect(counter.consume(request(NOON + 500, limit)).tokens).toBe(8);
  });

  it('neither adds nor removes tokens when the clock goes backwards', () => {
    const limit = { perSecond: 2, burst: 4 };
    const counter = new Counter();
    counter.burst(4, request(NOON, limit));
    expect(refilledTokens(counter.state, limit, NOON - 10_000)).toBe(0);
    expect(counter.consume(request(NOON - 10_000, limit)).admitted).toBe(false);
  });

  it('has no bucket (and no tokens in the outcome) without perSecond', () => {
    const counter = new Counter();
    const outcome = counter.consume(request(NOON, { perDay: 5 }));
    expect(outcome.admitted).toBe(true);
    expect(outcome.tokens).toBeUndefined();
    expect(counter.burst(4, request(NOON, { perDay: 5 }))).toBe(4);
  });
});

describe('UTC-day quota', () => {
  it.each([
    [Date.UTC(2025, 0, 16, 0, 0, 0, 0), 86_400],
    [Date.UTC(2025, 0, 16, 0, 0, 0, 1), 86_400],
    [Date.UTC(2025, 0, 15, 12, 0, 0, 0), 43_200],
    [Date.UTC(2025, 0, 15, 23, 0, 0, 0), 3_600],
    [Date.UTC(2025, 0, 15, 23, 59, 58, 500), 2],
    [Date.UTC(2025, 0, 15, 23, 59, 59, 0), 1],
    [Date.UTC(2025, 0, 15, 23, 59, 59, 999), 1],
    [0, 86_400],
  ])('counts whole seconds (rounded up) from %d to the next 00:00:00Z: %d', (now, seconds) => {
    expect(secondsToUtcMidnight(now)).toBe(seconds);
  });

  it('numbers UTC days so that midnight starts a new one', () => {
    expect(utcDay(MIDNIGHT - 1)).toBe(utcDay(NOON));
    expect(utcDay(MIDNIGHT)).toBe(utcDay(NOON) + 1);
    expect(utcDay(MIDNIGHT)).toBe(MIDNIGHT / DAY_MS);
  });

  it('admits perDay requests in a day, refuses quota_exceeded after, and resets at next UTC midnight', () => {
    const limit = { perDay: 3 };
    const late = Date.UTC(2025, 0, 15, 23, 59, 58, 500);
    const counter = new Counter();
    expect(counter.burst(3, request(late, limit))).toBe(3);
    const refused = counter.consume(request(late, limit));
    expect(refused).toMatchObject({ admitted: false, refusal: 'quota_exceeded', dayCount: 3 });
    expect(describeLimits(request(late, limit), refused).retryAfter).toBe(2);
    expect(counter.consume(request(MIDNIGHT - 1, limit)).admitted).toBe(false);
    const next = counter.consume(request(MIDNIGHT, limit));
    expect(next).toMatchObject({ admitted: true, dayCount: 1 });
  });

  it('counts the day in UTC, not in any local time zone', () => {
    const limit = { perDay: 1 };
    const counter = new Counter();
    expect(counter.consume(request(Date.UTC(2025, 0, 15, 0, 30), limit)).admitted).toBe(true);
    expect(counter.consume(request(Date.UTC(2025, 0, 15, 23, 30), limit)).admitted).toBe(false);
    expect(counter.consume(request(Date.UTC(2025, 0, 16, 0, 0), limit)).admitted).toBe(true);
  });

  it('does not reopen yesterday for a caller whose clock lags the latest admitted use', () => {
    const limit = { perDay: 1 };
    const counter = new Counter();
    expect(counter.consume(request(MIDNIGHT - 1, limit)).admitted).toBe(true);
    expect(counter.consume(request(MIDNIGHT, limit))).toMatchObject({ admitted: true, dayCount: 1 });
    // A process whose clock is 1 ms behind must not find yesterday's (spent) count reset to 0.
    expect(counter.consume(request(MIDNIGHT - 1, limit))).toMatchObject({ admitted: false, refusal: 'quota_exceeded' });
  });

  it('starts the count afresh on a later day even after days of silence', () => {
    const limit = { perDay: 2 };
    const counter = new Counter();
    counter.burst(2, request(NOON, limit));
    expect(counter.consume(request(NOON + 10 * DAY_MS, limit))).toMatchObject({ admitted: true, dayCount: 1 });
  });
});

describe('maxUses', () => {
  it('admits exactly maxUses requests over the key life, then refuses usage_exhausted', () => {
    const counter = new Counter();
    expect(counter.burst(3, request(NOON, null, 3))).toBe(3);
    expect(counter.consume(request(NOON + DAY_MS, null, 3))).toMatchObject({ admitted: false, refusal: 'usage_exhausted', useCount: 3 });
  });

  it('refuses at once when maxUses is 0, and counts from the carried useCount', () => {
    expect(new Counter().consume(request(NOON, null, 0))).toMatchObject({ admitted: false, refusal: 'usage_exhausted' });
    const carried = new Counter(9);
    expect(carried.consume(request(NOON, null, 10))).toMatchObject({ admitted: true, useCount: 10 });
    expect(carried.consume(request(NOON, null, 10)).admitted).toBe(false);
  });

  it('counts every admitted use even with no limits at all', () => {
    const counter = new Counter();
    for (let i = 1; i <= 5; i++) expect(counter.consume(request(NOON, null))).toEqual({ admitted: true, useCount: i });
  });
});

describe('all-or-nothing consume', () => {
  const frozen = (state: CounterState) => Object.freeze({ ...state });

  it('returns next: null and leaves the state untouched when the bucket refuses', () => {
    const limit = { perSecond: 1, perDay: 100 };
    const counter = new Counter();
    counter.consume(request(NOON, limit, 50));
    const before = frozen(counter.state);
    const { outcome, next } = decideConsume(before, request(NOON + 100, limit, 50));
    expect(outcome.refusal).toBe('rate_limited');
    expect(next).toBeNull();
    expect(before).toEqual(counter.state);
    expect(outcome.useCount).toBe(1);
    expect(outcome.dayCount).toBe(1);
  });

  it('does not spend a token when the day quota refuses', () => {
    const limit = { perSecond: 1, perDay: 1 };
    const counter = new Counter();
    counter.consume(request(NOON, limit));
    const { outcome, next } = decideConsume(frozen(counter.state), request(NOON + 5_000, limit));
    expect(outcome.refusal).toBe('quota_exceeded');
    expect(next).toBeNull();
    expect(outcome.tokens).toBe(1);
  });

  it('counts neither the day nor the bucket when maxUses refuses', () => {
    const limit = { perSecond: 5, perDay: 10 };
    const counter = new Counter();
    counter.consume(request(NOON, limit, 1));
    const { outcome, next } = decideConsume(frozen(counter.state), request(NOON, limit, 1));
    expect(outcome).toMatchObject({ admitted: false, refusal: 'usage_exhausted', useCount: 1, dayCount: 1, tokens: 4 });
    expect(next).toBeNull();
  });

  it('lets a refused request use up nothing: the next admitted one counts as if it never happened', () => {
    const limit = { perSecond: 1, burst: 1, perDay: 10 };
    const counter = new Counter();
    counter.consume(request(NOON, limit));
    for (let i = 0; i < 20; i++) expect(counter.consume(request(NOON + 10 + i, limit)).admitted).toBe(false);
    expect(counter.consume(request(NOON + 1000, limit))).toMatchObject({ admitted: true, useCount: 2, dayCount: 2 });
  });

  it('never mutates the state it is given, admitted or not', () => {
    const limit = { perSecond: 2, perDay: 3 };
    const state = frozen(initialCounters(0));
    expect(() => decideConsume(state, request(NOON, limit, 10))).not.toThrow();
    expect(state).toEqual(initialCounters(0));
  });
});

describe('refusal order', () => {
  // Each row: maxUses exhausted?, quota used up?, bucket empty? → the reported refusal.
  it.each([
    [true, true, true, 'usage_exhausted'],
    [true, true, false, 'usage_exhausted'],
    [true, false, true, 'usage_exhausted'],
    [true, false, false, 'usage_exhausted'],
    [false, true, true, 'quota_exceeded'],
    [false, true, false, 'quota_exceeded'],
    [false, false, true, 'rate_limited'],
    [false, false, false, undefined],
  ])('usage %p, quota %p, bucket %p → %p (most lasting first)', (usage, quota, bucket, expected) => {
    const state: CounterState = {
      ...initialCounters(0),
      useCount: usage ? 5 : 1,
      day: utcDay(NOON),
      dayCount: quota ? 10 : 1,
      tokens: bucket ? 0 : 2,
      tokensAt: NOON,
    };
    const { outcome, next } = decideConsume(state, request(NOON, { perSecond: 1, burst: 2, perDay: 10 }, 5));
    expect(outcome.refusal).toBe(expected);
    expect(outcome.admitted).toBe(expected === undefined);
    expect(next === null).toBe(expected !== undefined);
  });
});

describe('describeLimits', () => {
  it('reports no policy and unlimited uses for a key without limits', () => {
    expect(describeLimits(request(NOON, null), { admitted: true, useCount: 3 })).toEqual({ policies: [], usesRemaining: null });
  });

  it('reports maxUses as uses remaining, not as a rate-limit policy', () => {
    expect(describeLimits(request(NOON, null, 10), { admitted: true, useCount: 3 })).toEqual({ policies: [], usesRemaining: 7 });
    expect(describeLimits(request(NOON, null, 3), { admitted: false, refusal: 'usage_exhausted', useCount: 3 })).toEqual({
      policies: [],
      usesRemaining: 0,
    });
  });

  it('describes the spec example: "day";q=10000;w=86400 with r=9995 and t=43200 at noon', () => {
    const snapshot = describeLimits(request(NOON, { perDay: 10_000 }), { admitted: true, useCount: 5, dayCount: 5 });
    expect(snapshot.policies).toEqual([{ policy: 'day', quota: 10_000, window: 86_400, remaining: 9_995, reset: 43_200 }]);
    expect(snapshot.retryAfter).toBeUndefined();
  });

  it('describes the bucket: q = perSecond, w = 1, r = whole tokens left, t = seconds until full, rounded up', () => {
    const limit = { perSecond: 10, burst: 20 };
    const snapshot = describeLimits(request(NOON, limit), { admitted: true, useCount: 1, tokens: 19 });
    expect(snapshot.policies).toEqual([{ policy: 'second', quota: 10, window: 1, remaining: 19, reset: 1 }]);
    const drained = describeLimits(request(NOON, limit), { admitted: true, useCount: 15, tokens: 4.5 });
    expect(drained.policies[0]).toMatchObject({ remaining: 4, reset: 2 });
  });

  it('reports t = 0 for a full bucket and lists the second policy before the day policy', () => {
    const snapshot = describeLimits(request(NOON, { perSecond: 5, perDay: 100 }), { admitted: true, useCount: 1, tokens: 5, dayCount: 1 });
    expect(snapshot.policies.map((p) => p.policy)).toEqual(['second', 'day']);
    expect(snapshot.policies[0]!.reset).toBe(0);
    expect(snapshot.policies[1]).toMatchObject({ remaining: 99, reset: 43_200 });
  });

  it('never reports negative remaining', () => {
    const snapshot = describeLimits(request(NOON, { perSecond: 1, perDay: 1 }), {
      admitted: false,
      refusal: 'quota_exceeded',
      useCount: 1,
      dayCount: 1,
      tokens: 0.2,
    });
    for (const policy of snapshot.policies) expect(policy.remaining).toBe(0);
  });

  it('gives Retry-After in whole seconds for an empty bucket, at least 1', () => {
    const limit = { perSecond: 10 };
    const outcome: ConsumeOutcome = { admitted: false, refusal: 'rate_limited', useCount: 10, tokens: 0.95 };
    expect(describeLimits(request(NOON, limit), outcome).retryAfter).toBe(1);
  });

  it.each([
    [1, 0, 1],
    [1, 0.999, 1],
    [0.5, 0, 2],
    [0.4, 0, 3],
    [0.25, 0.5, 2],
  ])('rounds the wait up: perSecond %p with %p tokens → Retry-After %p', (perSecond, tokens, expected) => {
    const outcome: ConsumeOutcome = { admitted: false, refusal: 'rate_limited', useCount: 1, tokens };
    expect(describeLimits(request(NOON, { perSecond }), outcome).retryAfter).toBe(expected);
  });

  it('gives Retry-After to the next UTC midnight for a spent quota', () => {
    const outcome: ConsumeOutcome = { admitted: false, refusal: 'quota_exceeded', useCount: 1, dayCount: 100 };
    expect(describeLimits(request(NOON, { perDay: 100 }), outcome).retryAfter).toBe(43_200);
  });

  it('gives the later of the two waits when both the quota and the bucket refuse', () => {
    const outcome: ConsumeOutcome = { admitted: false, refusal: 'quota_exceeded', useCount: 1, dayCount: 100, tokens: 0 };
    const late = MIDNIGHT - 400;
    expect(describeLimits(request(late, { perSecond: 1, perDay: 100 }), outcome).retryAfter).toBe(1);
    expect(describeLimits(request(NOON, { perSecond: 1, perDay: 100 }), outcome).retryAfter).toBe(43_200);
    expect(describeLimits(request(late, { perSecond: 0.25, perDay: 100 }), outcome).retryAfter).toBe(4);
  });

  it('gives no Retry-After when admitted or when uses are exhausted (nothing frees them)', () => {
    const limit = { perSecond: 1, perDay: 1 };
    expect(describeLimits(request(NOON, limit, 5), { admitted: true, useCount: 1, tokens: 0, dayCount: 1 }).retryAfter).toBeUndefined();
    expect(
      describeLimits(request(NOON, limit, 1), { admitted: false, refusal: 'usage_exhausted', useCount: 1, tokens: 0, dayCount: 1 }).retryAfter,
    ).toBeUndefined();
  });

  it('never tells a client to retry before the request could succeed, nor a whole second later than needed', () => {
    const limitArb = fc.record(
      {
        perSecond: fc.integer({ min: 1, max: 50 }),
        burst: fc.integer({ min: 1, max: 60 }),
        perDay: fc.integer({ min: 1, max: 40 }),
      },
      { requiredKeys: [] },
    ).filter((limit) => limit.burst === undefined || limit.perSecond !== undefined);
    const start = fc.integer({ min: Date.UTC(2025, 0, 1), max: Date.UTC(2026, 0, 1) });
    const gaps = fc.array(fc.integer({ min: 0, max: 2_000 }), { minLength: 1, maxLength: 80 });
    const seen = new Set<string | undefined>();
    fc.assert(
      fc.property(limitArb, start, gaps, (limit, t0, steps) => {
        let state = initialCounters(0);
        let now = t0;
        for (const step of steps) {
          now += step;
          const req = request(now, limit);
          const { outcome, next } = decideConsume(state, req);
          if (next) {
            state = next;
            continue;
          }
          seen.add(outcome.refusal);
          const retryAfter = describeLimits(req, outcome).retryAfter;
          expect(Number.isInteger(retryAfter)).toBe(true);
          expect(retryAfter).toBeGreaterThanOrEqual(1);
          expect(decideConsume(state, request(now + retryAfter! * 1000, limit)).outcome.admitted).toBe(true);
          expect(decideConsume(state, request(now + (retryAfter! - 1) * 1000, limit)).outcome.admitted).toBe(false);
        }
      }),
      { numRuns: 300 },
    );
    expect(seen).toEqual(new Set(['rate_limited', 'quota_exceeded']));
  });
});

describe('closestToRefusing', () => {
  const second = (remaining: number, quota: number): LimitStatus => ({ policy: 'second', quota, window: 1, remaining, reset: 1 });
  const day = (remaining: number, quota: number): LimitStatus => ({ policy: 'day', quota, window: 86_400, remaining, reset: 100 });

  it('is undefined for a key with no rate-limit policy', () => {
    expect(closestToRefusing([])).toBeUndefined();
  });

  it('is the only policy when there is one', () => {
    expect(closestToRefusing([day(5, 10)])).toEqual(day(5, 10));
  });

  it.each([
    ['the day, with the smaller share left', [second(10, 10), day(9_995, 10_000)], 'day', 9_995],
    ['the bucket, with the smaller share left', [second(1, 10), day(9_995, 10_000)], 'second', 1],
    ['the share, not the absolute count', [second(5, 10), day(40, 100)], 'day', 40],
    ['the shorter window on a tie', [second(5, 10), day(50, 100)], 'second', 5],
    ['the shorter window on a tie, in either order', [day(50, 100), second(5, 10)], 'second', 5],
    ['the shorter window when both are spent', [day(0, 100), second(0, 10)], 'second', 0],
    ['the spent one', [second(3, 10), day(0, 100)], 'day', 0],
  ])('picks %s', (_what, policies, name, remaining) => {
    expect(closestToRefusing(policies)).toMatchObject({ policy: name, remaining });
  });
});

describe('quota windows: minute, hour, day and month', () => {
  const MINUTE_W = QUOTA_WINDOWS.find((window) => window.name === 'minute')!;
  const HOUR_W = QUOTA_WINDOWS.find((window) => window.name === 'hour')!;
  const MONTH_W = QUOTA_WINDOWS.find((window) => window.name === 'month')!;

  it.each([
    ['perMinute', 'minuteCount', Date.UTC(2025, 0, 15, 12, 34), Date.UTC(2025, 0, 15, 12, 35)],
    ['perHour', 'hourCount', Date.UTC(2025, 0, 15, 12), Date.UTC(2025, 0, 15, 13)],
    ['perDay', 'dayCount', Date.UTC(2024, 1, 29), Date.UTC(2024, 2, 1)],
    ['perMonth', 'monthCount', Date.UTC(2024, 1, 1), Date.UTC(2024, 2, 1)],
    ['perMonth', 'monthCount', Date.UTC(2100, 1, 1), Date.UTC(2100, 2, 1)],
    ['perMonth', 'monthCount', Date.UTC(2025, 0, 1), Date.UTC(2025, 1, 1)],
    ['perMonth', 'monthCount', Date.UTC(2025, 11, 1), Date.UTC(2026, 0, 1)],
  ] as const)('%s refuses at its count and resets at the window end (%s, from %d)', (quota, count, start, end) => {
    const limit: RateLimit = { [quota]: 2 };
    const counter = new Counter();
    expect(counter.consume(request(start, limit))).toEqual({ admitted: true, useCount: 1, [count]: 1 });
    expect(counter.consume(request(end - 2, limit))).toEqual({ admitted: true, useCount: 2, [count]: 2 });
    expect(counter.consume(request(end - 1, limit))).toEqual({ admitted: false, refusal: 'quota_exceeded', useCount: 2, [count]: 2 });
    expect(counter.consume(request(end, limit))).toEqual({ admitted: true, useCount: 3, [count]: 1 });
  });

  it('counts every admitted use in every window, with or without a quota for it', () => {
    const counter = new Counter();
    counter.burst(3, request(NOON, null));
    const at = Date.UTC(2025, 0, 15, 12, 0);
    expect(counter.state).toMatchObject({
      useCount: 3,
      minute: windowIndex(MINUTE_W, at),
      minuteCount: 3,
      hour: windowIndex(HOUR_W, at),
      hourCount: 3,
      day: utcDay(at),
      dayCount: 3,
      month: windowIndex(MONTH_W, at),
      monthCount: 3,
    });
    // A quota set later sees those uses.
    expect(counter.consume(request(NOON + 1, { perMonth: 3 }))).toEqual({ admitted: false, refusal: 'quota_exceeded', useCount: 3, monthCount: 3 });
    expect(counter.consume(request(NOON + 1, { perMinute: 4 }))).toEqual({ admitted: true, useCount: 4, minuteCount: 4 });
  });

  it('reports a window count only for the quotas set', () => {
    const counter = new Counter();
    expect(counter.consume(request(NOON, { perSecond: 2, perHour: 5 }))).toEqual({ admitted: true, useCount: 1, hourCount: 1, tokens: 1 });
    expect(counter.consume(request(NOON, { perMinute: 5, perMonth: 5 }))).toEqual({ admitted: true, useCount: 2, minuteCount: 2, monthCount: 2 });
    expect(counter.consume(request(NOON, { perDay: 5 }, 2))).toEqual({ admitted: false, refusal: 'usage_exhausted', useCount: 2, dayCount: 2 });
  });

  it('counts nothing in any window when one refuses', () => {
    const limit: RateLimit = { perMinute: 1, perHour: 10, perDay: 10, perMonth: 10 };
    const counter = new Counter();
    counter.consume(request(NOON, limit));
    const before = { ...counter.state };
    const { outcome, next } = decideConsume(counter.state, request(NOON + 1, limit));
    expect(outcome).toEqual({ admitted: false, refusal: 'quota_exceeded', useCount: 1, minuteCount: 1, hourCount: 1, dayCount: 1, monthCount: 1 });
    expect(next).toBeNull();
    expect(counter.state).toEqual(before);
    expect(counter.consume(request(NOON + 60_000, limit))).toEqual({ admitted: true, useCount: 2, minuteCount: 1, hourCount: 2, dayCount: 2, monthCount: 2 });
  });

  it('counts a caller whose clock lags a month boundary in the new month', () => {
    const counter = new Counter();
    const march = Date.UTC(2024, 2, 1);
    const limit: RateLimit = { perMonth: 2 };
    expect(counter.consume(request(march + 5, limit))).toEqual({ admitted: true, useCount: 1, monthCount: 1 });
    expect(counter.consume(request(march - 5, limit))).toEqual({ admitted: true, useCount: 2, monthCount: 2, countedAt: march + 5 });
    expect(counter.consume(request(march - 5, limit)).refusal).toBe('quota_exceeded');
  });

  // Each of usage, month, day, hour, minute, bucket spent or not: the most lasting one is reported.
  const combinations = Array.from({ length: 64 }, (_, bits) => [0, 1, 2, 3, 4, 5].map((bit) => (bits & (1 << bit)) !== 0));
  it.each(combinations)('refusal order: usage %p, month %p, day %p, hour %p, minute %p, bucket %p', (usage, month, day, hour, minute, bucket) => {
    const at = NOON;
    const state: CounterState = {
      ...initialCounters(usage ? 5 : 1),
      minute: windowIndex(MINUTE_W, at),
      minuteCount: minute ? 4 : 1,
      hour: windowIndex(HOUR_W, at),
      hourCount: hour ? 6 : 1,
      day: utcDay(at),
      dayCount: day ? 8 : 1,
      month: windowIndex(MONTH_W, at),
      monthCount: month ? 10 : 1,
      tokens: bucket ? 0 : 2,
      tokensAt: at,
    };
    const limit: RateLimit = { perSecond: 1, burst: 2, perMinute: 4, perHour: 6, perDay: 8, perMonth: 10 };
    const req = request(at, limit, 5);
    const { outcome, next } = decideConsume(state, req);
    const expected = usage ? 'usage_exhausted' : month || day || hour || minute ? 'quota_exceeded' : bucket ? 'rate_limited' : undefined;
    expect(outcome.refusal).toBe(expected);
    expect(next === null).toBe(expected !== undefined);
    if (expected !== undefined) {
      expect(outcome).toEqual({
        admitted: false,
        refusal: expected,
        useCount: state.useCount,
        minuteCount: state.minuteCount,
        hourCount: state.hourCount,
        dayCount: state.dayCount,
        monthCount: state.monthCount,
        tokens: state.tokens,
      });
      // Retry-After is the end of the longest exhausted window (or the bucket's wait), none for usage.
      const ends = [month && secondsToWindowEnd(MONTH_W, at), day && secondsToUtcMidnight(at), hour && secondsToWindowEnd(HOUR_W, at), minute && secondsToWindowEnd(MINUTE_W, at)];
      const longest = ends.find((end): end is number => typeof end === 'number');
      const retryAfter = describeLimits(req, outcome).retryAfter;
      expect(retryAfter).toBe(usage ? undefined : (longest ?? 1));
    }
  });
});

describe('describeLimits with quota windows', () => {
  /** 2024-02-10T12:30:15Z: in a 29-day February. */
  const AT = Date.UTC(2024, 1, 10, 12, 30, 15);
  const ALL: RateLimit = { perSecond: 2, burst: 4, perMinute: 5, perHour: 50, perDay: 500, perMonth: 5_000 };

  it('reports every policy, shortest window first, with quota, window, remaining and reset', () => {
    const outcome: ConsumeOutcome = { admitted: true, useCount: 1, minuteCount: 1, hourCount: 2, dayCount: 3, monthCount: 4, tokens: 3 };
    expect(describeLimits(request(AT, ALL), outcome)).toEqual({
      policies: [
        { policy: 'second', quota: 2, window: 1, remaining: 3, reset: 1 },
        { policy: 'minute', quota: 5, window: 60, remaining: 4, reset: 45 },
        { policy: 'hour', quota: 50, window: 3_600, remaining: 48, reset: 29 * 60 + 45 },
        { policy: 'day', quota: 500, window: 86_400, remaining: 497, reset: 11 * 3_600 + 29 * 60 + 45 },
        { policy: 'month', quota: 5_000, window: 29 * 86_400, remaining: 4_996, reset: (Date.UTC(2024, 2, 1) - AT) / 1000 },
      ],
      usesRemaining: null,
    });
  });

  it.each([
    [2024, 1, 29],
    [2023, 1, 28],
    [2100, 1, 28],
    [2025, 0, 31],
    [2025, 3, 30],
  ])('gives the month policy the seconds of its month: %d-%d → %d days', (year, month, days) => {
    const snapshot = describeLimits(request(Date.UTC(year, month, 3), { perMonth: 10 }), { admitted: true, useCount: 1, monthCount: 1 });
    expect(snapshot.policies).toEqual([{ policy: 'month', quota: 10, window: days * 86_400, remaining: 9, reset: (days - 2) * 86_400 }]);
  });

  it.each([
    ['minute', { minuteCount: 5 }, 45],
    ['hour (and minute)', { minuteCount: 5, hourCount: 50 }, 29 * 60 + 45],
    ['day (and minute)', { minuteCount: 5, dayCount: 500 }, 11 * 3_600 + 29 * 60 + 45],
    ['month (and hour)', { hourCount: 50, monthCount: 5_000 }, (Date.UTC(2024, 2, 1) - AT) / 1000],
  ])('gives Retry-After to the end of the longest exhausted window: %s', (_what, counts, retryAfter) => {
    const outcome: ConsumeOutcome = { admitted: false, refusal: 'quota_exceeded', useCount: 1, minuteCount: 1, hourCount: 1, dayCount: 1, monthCount: 1, tokens: 0, ...counts };
    const snapshot = describeLimits(request(AT, ALL), outcome);
    expect(snapshot.retryAfter).toBe(retryAfter);
    for (const policy of snapshot.policies) expect(policy.remaining).toBeGreaterThanOrEqual(0);
  });

  it('never tells a client to retry before the request could succeed, nor a whole second later than needed, in any window', () => {
    const limitArb = fc
      .record(
        {
          perSecond: fc.integer({ min: 1, max: 5 }),
          burst: fc.integer({ min: 1, max: 5 }),
          perMinute: fc.integer({ min: 1, max: 5 }),
          perHour: fc.integer({ min: 1, max: 8 }),
          perDay: fc.integer({ min: 1, max: 12 }),
          perMonth: fc.integer({ min: 1, max: 16 }),
        },
        { requiredKeys: [] },
      )
      .filter((limit) => limit.burst === undefined || limit.perSecond !== undefined);
    // Starts just before the end of a month (29-day February included) or anywhere in a year.
    const start = fc.oneof(
      fc.constantFrom(Date.UTC(2024, 2, 1), Date.UTC(2100, 2, 1), Date.UTC(2025, 1, 1), Date.UTC(2026, 0, 1)).chain((end) => fc.integer({ min: end - 2 * 3_600_000, max: end })),
      fc.integer({ min: Date.UTC(2025, 0, 1), max: Date.UTC(2026, 0, 1) }),
    );
    const gaps = fc.array(fc.oneof(fc.integer({ min: 0, max: 2_000 }), fc.integer({ min: 0, max: 3_600_000 })), { minLength: 1, maxLength: 60 });
    const seen = new Set<string | undefined>();
    fc.assert(
      fc.property(limitArb, start, gaps, (limit, t0, steps) => {
        let state = initialCounters(0);
        let now = t0;
        for (const step of steps) {
          now += step;
          const req = request(now, limit);
          const { outcome, next } = decideConsume(state, req);
          if (next) {
            state = next;
            continue;
          }
          seen.add(outcome.refusal);
          const retryAfter = describeLimits(req, outcome).retryAfter;
          expect(Number.isInteger(retryAfter)).toBe(true);
          expect(decideConsume(state, request(now + retryAfter! * 1000, limit)).outcome.admitted).toBe(true);
          expect(decideConsume(state, request(now + (retryAfter! - 1) * 1000, limit)).outcome.admitted).toBe(false);
        }
      }),
      { numRuns: 300 },
    );
    expect(seen).toEqual(new Set(['rate_limited', 'quota_exceeded']));
  });
});

describe('concurrency leases', () => {
  const claim = (limit: number, lease = 'lease', leaseMs = 1_000): ConcurrencyClaim => ({ limit, lease, leaseMs });
  const claiming = (req: ConsumeRequest, c: ConcurrencyClaim): ConsumeRequest => ({ ...req, concurrency: c });

  /** One key's counters and leases, driven as a store drives them (MemoryStore's consume and release). */
  class LeasedCounter extends Counter {
    leases: Leases = {};
    claim(req: ConsumeRequest): ConsumeOutcome {
      const at = countingInstant(this.state, req.now);
      const { outcome, next } = decideConsume(this.state, req, Object.keys(liveLeases(this.leases, at)).length);
      if (req.concurrency && next) this.leases = leasesAfter(this.leases, req.concurrency, at);
      if (next) this.state = next;
      return outcome;
    }
    release(lease: string): void {
      const { [lease]: _released, ...rest } = this.leases;
      this.leases = rest;
    }
  }

  it.each([
    [NOON, 0, NOON],
    [NOON, NOON - 1, NOON],
    [NOON, NOON, NOON],
    [NOON, NOON + 1, NOON + 1],
    [-5_000, 0, 0],
  ])('counts at max(now, tokensAt): now %p, tokensAt %p → %p', (now, tokensAt, at) => {
    expect(countingInstant({ tokensAt }, now)).toBe(at);
  });

  it('liveLeases keeps the leases lapsing after `at`: one lapsing at `at` no longer counts', () => {
    const leases: Leases = Object.freeze({ later: NOON + 1, now: NOON, earlier: NOON - 1, long: NOON + 60_000 });
    expect({ ...liveLeases(leases, NOON) }).toEqual({ later: NOON + 1, long: NOON + 60_000 });
    expect({ ...liveLeases(leases, NOON - 1) }).toEqual({ later: NOON + 1, now: NOON, long: NOON + 60_000 });
    expect({ ...liveLeases(leases, NOON + 60_000) }).toEqual({});
    expect(leases).toEqual({ later: NOON + 1, now: NOON, earlier: NOON - 1, long: NOON + 60_000 });
  });

  it('liveLeases reads no leases from null or undefined, and skips what is not an instant', () => {
    expect(Object.keys(liveLeases(null, NOON))).toEqual([]);
    expect(Object.keys(liveLeases(undefined, NOON))).toEqual([]);
    const edited = { text: String(NOON + 5) as unknown as number, nan: Number.NaN, ok: NOON + 5 };
    expect({ ...liveLeases(edited, NOON) }).toEqual({ ok: NOON + 5 });
  });

  it('liveLeases keeps a lease named __proto__ as data, in a map without a prototype', () => {
    const leases = JSON.parse(`{"__proto__": ${NOON + 5}, "constructor": ${NOON + 5}, "old": ${NOON - 5}}`) as Leases;
    const live = liveLeases(leases, NOON);
    expect(Object.getPrototypeOf(live)).toBeNull();
    expect(Object.keys(live).sort()).toEqual(['__proto__', 'constructor']);
    expect(live['__proto__']).toBe(NOON + 5);
  });

  it('leasesAfter adds the admitted claim, lapsing leaseMs after `at`, and drops the lapsed ones', () => {
    const leases: Leases = Object.freeze({ held: NOON + 10, lapsed: NOON });
    expect({ ...leasesAfter(leases, claim(3, 'mine', 250), NOON) }).toEqual({ held: NOON + 10, mine: NOON + 250 });
    expect({ ...leasesAfter(null, claim(1, '__proto__', 1), NOON) }).toEqual({ ['__proto__']: NOON + 1 });
    expect(leases).toEqual({ held: NOON + 10, lapsed: NOON });
  });

  it('admits while fewer than `limit` leases are live, reporting them with its own', () => {
    for (let inFlight = 0; inFlight < 3; inFlight++) {
      const { outcome, next } = decideConsume(initialCounters(4), claiming(request(NOON, null), claim(3)), inFlight);
      expect(outcome).toEqual({ admitted: true, useCount: 5, inFlight: inFlight + 1 });
      expect(next).toMatchObject({ useCount: 5, tokensAt: NOON });
    }
  });

  it.each([3, 4, 10])('refuses with concurrency_limited at %p live leases of 3, counting nothing', (inFlight) => {
    const limit: RateLimit = { perSecond: 2, perDay: 10 };
    const counter = new Counter();
    counter.consume(request(NOON, limit));
    const { outcome, next } = decideConsume(Object.freeze({ ...counter.state }), claiming(request(NOON + 100, limit), claim(3)), inFlight);
    expect(outcome).toEqual({ admitted: false, refusal: 'concurrency_limited', useCount: 1, dayCount: 1, tokens: 1.2, inFlight });
    expect(next).toBeNull();
  });

  it('counts no live leases unless told (inFlight defaults to 0)', () => {
    expect(decideConsume(initialCounters(0), claiming(request(NOON, null), claim(1))).outcome).toEqual({ admitted: true, useCount: 1, inFlight: 1 });
  });

  it('ignores the leases of a request without a claim, and reports no inFlight', () => {
    expect(decideConsume(initialCounters(0), request(NOON, null), 99).outcome).toEqual({ admitted: true, useCount: 1 });
    const refused = decideConsume(initialCounters(1), request(NOON, null, 1), 99).outcome;
    expect(refused).toEqual({ admitted: false, refusal: 'usage_exhausted', useCount: 1 });
    expect(Object.keys(refused)).not.toContain('inFlight');
  });

  it('reports countedAt on a concurrency refusal of a lagging caller', () => {
    const state: CounterState = { ...initialCounters(1), tokensAt: NOON };
    expect(decideConsume(state, claiming(request(NOON - 10, null), claim(1)), 1).outcome).toEqual({
      admitted: false,
      refusal: 'concurrency_limited',
      useCount: 1,
      inFlight: 1,
      countedAt: NOON,
    });
  });

  // Each of usage, quota, bucket, concurrency spent or not: concurrency_limited is the least lasting.
  const combinations = Array.from({ length: 16 }, (_, bits) => [0, 1, 2, 3].map((bit) => (bits & (1 << bit)) !== 0));
  it.each(combinations)('refusal order: usage %p, quota %p, bucket %p, concurrency %p', (usage, quota, bucket, full) => {
    const state: CounterState = {
      ...initialCounters(usage ? 5 : 1),
      day: utcDay(NOON),
      dayCount: quota ? 10 : 1,
      tokens: bucket ? 0 : 2,
      tokensAt: NOON,
    };
    const { outcome, next } = decideConsume(state, claiming(request(NOON, { perSecond: 1, burst: 2, perDay: 10 }, 5), claim(2)), full ? 2 : 1);
    const expected = usage ? 'usage_exhausted' : quota ? 'quota_exceeded' : bucket ? 'rate_limited' : full ? 'concurrency_limited' : undefined;
    expect(outcome.refusal).toBe(expected);
    expect(next === null).toBe(expected !== undefined);
    // The leases seen are reported whatever refused; the request's own is added only when admitted.
    expect(outcome.inFlight).toBe(expected === undefined ? 2 : full ? 2 : 1);
  });

  it('a key driven like a store holds `limit` leases, frees one per release, and lets one lapse at its instant', () => {
    const counter = new LeasedCounter();
    const take = (now: number, lease: string) => counter.claim(claiming(request(now, null), claim(2, lease, 1_000)));
    expect(take(NOON, 'a')).toEqual({ admitted: true, useCount: 1, inFlight: 1 });
    expect(take(NOON + 10, 'b')).toEqual({ admitted: true, useCount: 2, inFlight: 2 });
    expect(take(NOON + 20, 'c')).toEqual({ admitted: false, refusal: 'concurrency_limited', useCount: 2, inFlight: 2 });
    counter.release('a');
    expect(take(NOON + 30, 'c')).toEqual({ admitted: true, useCount: 3, inFlight: 2 });
    // b lapses at NOON + 1 010: live a millisecond before, gone at that instant.
    expect(take(NOON + 1_009, 'd')).toEqual({ admitted: false, refusal: 'concurrency_limited', useCount: 3, inFlight: 2 });
    expect(take(NOON + 1_010, 'd')).toEqual({ admitted: true, useCount: 4, inFlight: 2 });
    expect(Object.keys(counter.leases).sort()).toEqual(['c', 'd']);
  });

  it('a lease taken by a lagging caller lapses leaseMs after the instant it counted at', () => {
    const counter = new LeasedCounter();
    counter.consume(request(NOON + 5_000, null));
    expect(counter.claim(claiming(request(NOON, null), claim(1, 'a', 1_000)))).toEqual({ admitted: true, useCount: 2, inFlight: 1, countedAt: NOON + 5_000 });
    expect(counter.leases).toEqual({ a: NOON + 6_000 });
  });

  it('never holds more than `limit` live leases, and reports exactly those it holds', () => {
    const step = fc.record({
      gap: fc.oneof(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 3_000 })),
      skew: fc.oneof(fc.constant(0), fc.integer({ min: -2_000, max: 0 })),
      limit: fc.integer({ min: 1, max: 4 }),
      leaseMs: fc.integer({ min: 1, max: 2_000 }),
      release: fc.option(fc.nat(), { freq: 4 }),
    });
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 60 }), (steps) => {
        const counter = new LeasedCounter();
        const taken: string[] = [];
        let now = NOON;
        for (const [i, { gap, skew, limit, leaseMs, release }] of steps.entries()) {
          now += gap;
          if (release !== null && taken.length > 0) {
            counter.release(taken[release % taken.length]!);
            continue;
          }
          const req = claiming(request(now + skew, null), claim(limit, `lease-${i}`, leaseMs));
          const at = countingInstant(counter.state, req.now);
          const before = Object.keys(liveLeases(counter.leases, at)).length;
          const outcome = counter.claim(req);
          const after = Object.keys(liveLeases(counter.leases, at)).length;
          expect(outcome.admitted).toBe(before < limit);
          expect(outcome.inFlight).toBe(after);
          expect(after).toBe(before + (outcome.admitted ? 1 : 0));
          if (outcome.admitted) {
            taken.push(`lease-${i}`);
            expect(after).toBeLessThanOrEqual(limit);
            expect(counter.leases[`lease-${i}`]).toBe(at + leaseMs);
          }
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('describeLimits with concurrency', () => {
  const withClaim = (req: ConsumeRequest, limit: number): ConsumeRequest => ({ ...req, concurrency: { limit, lease: 'lease', leaseMs: 60_000 } });

  it('gives a concurrency_limited refusal Retry-After 1 and reports the limit and the requests in flight', () => {
    expect(CONCURRENCY_RETRY_AFTER_SECONDS).toBe(1);
    const snapshot = describeLimits(withClaim(request(NOON, null), 3), { admitted: false, refusal: 'concurrency_limited', useCount: 7, inFlight: 3 });
    expect(snapshot).toEqual({ policies: [], usesRemaining: null, retryAfter: 1, concurrency: { limit: 3, inFlight: 3 } });
  });

  it('gives Retry-After 1 to a concurrency refusal of a key with quotas and a bucket, which still reports its policies', () => {
    const limit: RateLimit = { perSecond: 2, burst: 4, perDay: 100 };
    const outcome: ConsumeOutcome = { admitted: false, refusal: 'concurrency_limited', useCount: 5, tokens: 3, dayCount: 5, inFlight: 2 };
    const snapshot = describeLimits(withClaim(request(NOON, limit, 10), 2), outcome);
    expect(snapshot.retryAfter).toBe(1);
    expect(snapshot.usesRemaining).toBe(5);
    expect(snapshot.concurrency).toEqual({ limit: 2, inFlight: 2 });
    expect(snapshot.policies.map((policy) => [policy.policy, policy.remaining])).toEqual([
      ['second', 3],
      ['day', 95],
    ]);
  });

  it('reports the requests in flight of an admitted request, with no Retry-After', () => {
    const snapshot = describeLimits(withClaim(request(NOON, { perDay: 10 }), 5), { admitted: true, useCount: 1, dayCount: 1, inFlight: 2 });
    expect(snapshot.concurrency).toEqual({ limit: 5, inFlight: 2 });
    expect(snapshot.retryAfter).toBeUndefined();
  });

  it('gives a more lasting refusal its own Retry-After (or none), still reporting the requests in flight', () => {
    const quota = describeLimits(withClaim(request(NOON, { perDay: 1 }), 1), { admitted: false, refusal: 'quota_exceeded', useCount: 1, dayCount: 1, inFlight: 1 });
    expect(quota.retryAfter).toBe(43_200);
    expect(quota.concurrency).toEqual({ limit: 1, inFlight: 1 });
    const usage = describeLimits(withClaim(request(NOON, null, 1), 1), { admitted: false, refusal: 'usage_exhausted', useCount: 1, inFlight: 1 });
    expect(usage.retryAfter).toBeUndefined();
    expect(usage.concurrency).toEqual({ limit: 1, inFlight: 1 });
  });

  it('reports no concurrency for a request without a claim, nor for a refusal that never reached the limits', () => {
    expect(describeLimits(request(NOON, null), { admitted: true, useCount: 1, inFlight: 1 })).toEqual({ policies: [], usesRemaining: null });
    const lifecycle = describeLimits(withClaim(request(NOON, null), 2), { admitted: false, refusal: 'api_key_revoked', useCount: 1 });
    expect(lifecycle.concurrency).toBeUndefined();
    expect(lifecycle.retryAfter).toBeUndefined();
  });
});

describe('the engine and the window table stay in step', () => {
  it('refuses to load when QUOTA_WINDOWS lists a window decideConsume does not write out', () => {
    jest.isolateModules(() => {
      jest.doMock('../../src/policy/windows', () => {
        const actual = jest.requireActual<typeof import('../../src/policy/windows')>('../../src/policy/windows');
        return { ...actual, QUOTA_WINDOWS: [...actual.QUOTA_WINDOWS, { name: 'week', limit: 'perWeek', indexField: 'week', countField: 'weekCount', lengthMs: 604_800_000 }] };
      });
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- isolateModules loads synchronously
      expect(() => require('../../src/policy/limits')).toThrow(/decideConsume writes out the windows month, day, hour, minute, but QUOTA_WINDOWS lists month, day, hour, minute, week/);
    });
    jest.dontMock('../../src/policy/windows');
  });
});
