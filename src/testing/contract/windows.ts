/**
 * Contract feature: the quota windows of `consume`. `perMinute`, `perHour` and `perDay` count in
 * fixed UTC windows, `perMonth` in the UTC calendar month; each refuses at its count with
 * `quota_exceeded` and resets at its window's end, not a millisecond earlier. Every admitted use
 * counts in every window (a quota set later sees the uses already made in its window); a refusal
 * counts in none. The most lasting refusal is reported (`usage_exhausted`, the quotas, then
 * `rate_limited`), with the count of every window that has a quota.
 */
import type { ConsumeOutcome } from '../../stores/store.js';
import type { RateLimit } from '../../types.js';
import { type ContractSuite, consumeTimes, makeRecord, request } from './shared.js';

const MINUTE = 60_000;
const HOUR = 3_600_000;

/** The count field and quota field of each window. */
const WINDOWS = [
  { name: 'minute', quota: 'perMinute', count: 'minuteCount' },
  { name: 'hour', quota: 'perHour', count: 'hourCount' },
  { name: 'day', quota: 'perDay', count: 'dayCount' },
  { name: 'month', quota: 'perMonth', count: 'monthCount' },
] as const;

/** A window instance: where it starts and where the next one starts (epoch ms). */
interface WindowCase {
  window: (typeof WINDOWS)[number];
  label: string;
  start: number;
  end: number;
}

const WINDOW_CASES: WindowCase[] = [
  { window: WINDOWS[0], label: '2025-03-14T12:34Z', start: Date.UTC(2025, 2, 14, 12, 34), end: Date.UTC(2025, 2, 14, 12, 35) },
  { window: WINDOWS[0], label: 'the last minute of 2025', start: Date.UTC(2025, 11, 31, 23, 59), end: Date.UTC(2026, 0, 1) },
  { window: WINDOWS[1], label: '2025-03-14T12Z', start: Date.UTC(2025, 2, 14, 12), end: Date.UTC(2025, 2, 14, 13) },
  { window: WINDOWS[1], label: 'the last hour of 2024-02-29', start: Date.UTC(2024, 1, 29, 23), end: Date.UTC(2024, 2, 1) },
  { window: WINDOWS[2], label: '2024-02-29 (leap day)', start: Date.UTC(2024, 1, 29), end: Date.UTC(2024, 2, 1) },
  { window: WINDOWS[2], label: '2025-02-28 (into March)', start: Date.UTC(2025, 1, 28), end: Date.UTC(2025, 2, 1) },
  { window: WINDOWS[3], label: 'January 2025 (31 days)', start: Date.UTC(2025, 0, 1), end: Date.UTC(2025, 1, 1) },
  { window: WINDOWS[3], label: 'February 2024 (29 days, leap year)', start: Date.UTC(2024, 1, 1), end: Date.UTC(2024, 2, 1) },
  { window: WINDOWS[3], label: 'February 2100 (28 days, not a leap year)', start: Date.UTC(2100, 1, 1), end: Date.UTC(2100, 2, 1) },
  { window: WINDOWS[3], label: 'April 2025 (30 days)', start: Date.UTC(2025, 3, 1), end: Date.UTC(2025, 4, 1) },
  { window: WINDOWS[3], label: 'December 2025 (into 2026)', start: Date.UTC(2025, 11, 1), end: Date.UTC(2026, 0, 1) },
];

/** An admitted outcome with these counts. */
function admitted(useCount: number, counts: Partial<ConsumeOutcome> = {}): ConsumeOutcome {
  return { admitted: true, useCount, ...counts };
}

/** A refused outcome with these counts. */
function refused(refusal: ConsumeOutcome['refusal'], useCount: number, counts: Partial<ConsumeOutcome> = {}): ConsumeOutcome {
  return { admitted: false, refusal, useCount, ...counts };
}

/** Registers the quota window tests. */
export function windowsContract(suite: ContractSuite): void {
  const { describe, test, expect } = suite;

  describe('consume: minute, hour, day and month quotas', () => {
    for (const { window, label, start, end } of WINDOW_CASES) {
      test(`${window.quota} counts in ${label}, refuses at its count and resets at ${new Date(end).toISOString()}`, async (store) => {
        const limits: RateLimit = { [window.quota]: 2 };
        const record = makeRecord({ rateLimit: limits });
        await store.insert(record);

        // The first use at the window's very start, the second in the middle, the refusal at its last millisecond.
        expect(await store.consume(record.id, request(start, null, limits))).toEqual(admitted(1, { [window.count]: 1 }));
        expect(await store.consume(record.id, request(Math.floor((start + end) / 2), null, limits))).toEqual(admitted(2, { [window.count]: 2 }));
        expect(await store.consume(record.id, request(end - 1, null, limits))).toEqual(refused('quota_exceeded', 2, { [window.count]: 2 }));
        // The next window starts from zero at its first millisecond.
        expect(await store.consume(record.id, request(end, null, limits))).toEqual(admitted(3, { [window.count]: 1 }));
        expect(await store.consume(record.id, request(end + 1, null, limits))).toEqual(admitted(4, { [window.count]: 2 }));
        expect(await store.consume(record.id, request(end + 2, null, limits))).toEqual(refused('quota_exceeded', 4, { [window.count]: 2 }));
        expect((await store.findById(record.id))?.useCount).toBe(4);
      });
    }

    test('a month quota spans the days, hours and minutes of the month', async (store) => {
      const limits: RateLimit = { perMonth: 3 };
      const record = makeRecord({ rateLimit: limits });
      await store.insert(record);
      const feb = Date.UTC(2024, 1, 1);
      expect(await store.consume(record.id, request(feb, null, limits))).toEqual(admitted(1, { monthCount: 1 }));
      expect(await store.consume(record.id, request(Date.UTC(2024, 1, 15, 7, 30), null, limits))).toEqual(admitted(2, { monthCount: 2 }));
      // The 29th of February is still February in a leap year.
      expect(await store.consume(record.id, request(Date.UTC(2024, 1, 29, 12), null, limits))).toEqual(admitted(3, { monthCount: 3 }));
      expect(await store.consume(record.id, request(Date.UTC(2024, 1, 29, 23, 59, 59, 999), null, limits))).toEqual(
        refused('quota_exceeded', 3, { monthCount: 3 }),
      );
      // A month with no traffic in between (March) starts from zero, as does April after it.
      expect(await store.consume(record.id, request(Date.UTC(2024, 3, 10), null, limits))).toEqual(admitted(4, { monthCount: 1 }));
    });

    test('reports the count of each window only when its quota is set', async (store) => {
      const all: RateLimit = { perMinute: 100, perHour: 100, perDay: 100, perMonth: 100 };
      const record = makeRecord();
      await store.insert(record);
      const noon = Date.UTC(2025, 2, 14, 12);
      let uses = 0;
      for (const window of WINDOWS) {
        const limits: RateLimit = { [window.quota]: 100 };
        uses += 1;
        expect(await store.consume(record.id, request(noon, null, limits))).toEqual(admitted(uses, { [window.count]: uses }));
        // maxUses 0 shows the refused shape: the same single count, of the uses so far.
        expect(await store.consume(record.id, request(noon, 0, limits))).toEqual(refused('usage_exhausted', uses, { [window.count]: uses }));
      }
      expect(await store.consume(record.id, request(noon, null, all))).toEqual(
        admitted(5, { minuteCount: 5, hourCount: 5, dayCount: 5, monthCount: 5 }),
      );
      expect(await store.consume(record.id, request(noon, null, { perSecond: 5, perMinute: 100 }))).toEqual(admitted(6, { minuteCount: 6, tokens: 4 }));
    });

    test('every admitted use counts in every window: a quota set later sees the uses already made', async (store) => {
      const record = makeRecord();
      await store.insert(record);
      const noon = Date.UTC(2025, 2, 14, 12);
      // Three uses with no quota at all, and one with only a bucket.
      await consumeTimes(store, record.id, 3, request(noon, null, null));
      expect(await store.consume(record.id, request(noon + 1, null, { perSecond: 10 }))).toEqual(admitted(4, { tokens: 9 }));

      expect(await store.consume(record.id, request(noon + 2, null, { perMinute: 4 }))).toEqual(refused('quota_exceeded', 4, { minuteCount: 4 }));
      expect(await store.consume(record.id, request(noon + 3, null, { perHour: 5 }))).toEqual(admitted(5, { hourCount: 5 }));
      expect(await store.consume(record.id, request(noon + 4, null, { perDay: 5 }))).toEqual(refused('quota_exceeded', 5, { dayCount: 5 }));
      expect(await store.consume(record.id, request(noon + 5, null, { perMonth: 6 }))).toEqual(admitted(6, { monthCount: 6 }));
      // A minute later the minute is new, the hour, day and month are not.
      const all: RateLimit = { perMinute: 10, perHour: 10, perDay: 10, perMonth: 10 };
      expect(await store.consume(record.id, request(noon + MINUTE, null, all))).toEqual(
        admitted(7, { minuteCount: 1, hourCount: 7, dayCount: 7, monthCount: 7 }),
      );
      // An hour later the hour is new too; the next day, the day; the next month, everything.
      expect(await store.consume(record.id, request(noon + HOUR + MINUTE, null, all))).toEqual(
        admitted(8, { minuteCount: 1, hourCount: 1, dayCount: 8, monthCount: 8 }),
      );
      expect(await store.consume(record.id, request(Date.UTC(2025, 2, 15, 0, 0), null, all))).toEqual(
        admitted(9, { minuteCount: 1, hourCount: 1, dayCount: 1, monthCount: 9 }),
      );
      expect(await store.consume(record.id, request(Date.UTC(2025, 3, 1), null, all))).toEqual(
        admitted(10, { minuteCount: 1, hourCount: 1, dayCount: 1, monthCount: 1 }),
      );
    });

    test('a refusal by one window counts in none', async (store) => {
      const limits: RateLimit = { perMinute: 2, perHour: 10, perDay: 10, perMonth: 10 };
      const record = makeRecord({ rateLimit: limits });
      await store.insert(record);
      const noon = Date.UTC(2025, 2, 14, 12);
      await consumeTimes(store, record.id, 2, request(noon, null, limits));
      const refusals = await consumeTimes(store, record.id, 5, request(noon + 1_000, null, limits));
      expect(refusals).toEqual(Array(5).fill(refused('quota_exceeded', 2, { minuteCount: 2, hourCount: 2, dayCount: 2, monthCount: 2 })));
      // In the next minute the hour, day and month hold the two admitted uses only.
      expect(await store.consume(record.id, request(noon + MINUTE, null, limits))).toEqual(
        admitted(3, { minuteCount: 1, hourCount: 3, dayCount: 3, monthCount: 3 }),
      );
      // An empty bucket counts in no window either.
      const bucket: RateLimit = { ...limits, perSecond: 1, burst: 1 };
      expect(await store.consume(record.id, request(noon + MINUTE + 1, null, bucket))).toEqual(
        admitted(4, { minuteCount: 2, hourCount: 4, dayCount: 4, monthCount: 4, tokens: 0 }),
      );
      expect(await store.consume(record.id, request(noon + MINUTE + 2, null, { ...bucket, perMinute: 5 }))).toEqual(
        refused('rate_limited', 4, { minuteCount: 2, hourCount: 4, dayCount: 4, monthCount: 4, tokens: 0.001 }),
      );
      expect((await store.findById(record.id))?.useCount).toBe(4);
    });

    test('reports the most lasting refusal: usage, then the quotas, then the bucket, with every count', async (store) => {
      const tight: RateLimit = { perSecond: 1, burst: 1, perMinute: 1, perHour: 1, perDay: 1, perMonth: 1 };
      const record = makeRecord({ maxUses: 1, rateLimit: tight });
      await store.insert(record);
      const noon = Date.UTC(2025, 2, 14, 12);
      expect(await store.consume(record.id, request(noon, 1, tight))).toEqual(
        admitted(1, { minuteCount: 1, hourCount: 1, dayCount: 1, monthCount: 1, tokens: 0 }),
      );
      const counts = { minuteCount: 1, hourCount: 1, dayCount: 1, monthCount: 1, tokens: 0 };
      // Everything refuses: the uses are reported.
      expect(await store.consume(record.id, request(noon, 1, tight))).toEqual(refused('usage_exhausted', 1, counts));
      // Then each quota in turn, most lasting first, until only the bucket is left.
      const raised: RateLimit[] = [
        tight,
        { ...tight, perMonth: 2 },
        { ...tight, perMonth: 2, perDay: 2 },
        { ...tight, perMonth: 2, perDay: 2, perHour: 2 },
      ];
      for (const limits of raised) {
        expect(await store.consume(record.id, request(noon, 2, limits))).toEqual(refused('quota_exceeded', 1, counts));
      }
      const quotasRaised: RateLimit = { perSecond: 1, burst: 1, perMinute: 2, perHour: 2, perDay: 2, perMonth: 2 };
      expect(await store.consume(record.id, request(noon, 2, quotasRaised))).toEqual(refused('rate_limited', 1, counts));
      // A month quota alone refusing is still quota_exceeded, before an empty bucket.
      expect(await store.consume(record.id, request(noon, 2, { ...quotasRaised, perMonth: 1 }))).toEqual(refused('quota_exceeded', 1, counts));
      expect(await store.consume(record.id, request(noon + 1_000, 2, quotasRaised))).toEqual(
        admitted(2, { minuteCount: 2, hourCount: 2, dayCount: 2, monthCount: 2, tokens: 0 }),
      );
    });

    test('a caller whose clock lags past a month boundary is counted in the new month', async (store) => {
      const limits: RateLimit = { perMonth: 2, perMinute: 2 };
      const record = makeRecord({ rateLimit: limits });
      await store.insert(record);
      const march = Date.UTC(2024, 2, 1);
      expect(await store.consume(record.id, request(march + 10, null, limits))).toEqual(admitted(1, { minuteCount: 1, monthCount: 1 }));
      // A process whose clock still reads 2024-02-29 is counted in March, in its first minute.
      expect(await store.consume(record.id, request(march - 10, null, limits))).toEqual(admitted(2, { minuteCount: 2, monthCount: 2, countedAt: march + 10 }));
      expect(await store.consume(record.id, request(march - 5, null, limits))).toEqual(
        refused('quota_exceeded', 2, { minuteCount: 2, monthCount: 2, countedAt: march + 10 }),
      );
      expect(await store.consume(record.id, request(march + MINUTE, null, limits))).toEqual(refused('quota_exceeded', 2, { minuteCount: 0, monthCount: 2 }));
    });
  });
}
