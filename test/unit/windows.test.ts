import fc from 'fast-check';
import {
  QUOTA_WINDOWS,
  type QuotaWindow,
  type QuotaWindowName,
  secondsToWindowEnd,
  windowIndex,
  windowSeconds,
  windowStart,
  windowsOf,
} from '../../src/policy/windows';

const DAY_S = 86_400;

function window(name: QuotaWindowName): QuotaWindow {
  const found = QUOTA_WINDOWS.find((candidate) => candidate.name === name);
  if (!found) throw new Error(`no ${name} window`);
  return found;
}
const MINUTE = window('minute');
const HOUR = window('hour');
const DAY = window('day');
const MONTH = window('month');

/** An instant from ISO text, so that years 0–99 and before 0 mean what they say (`Date.UTC(50, …)` is 1950). */
function iso(text: string): number {
  const at = Date.parse(text);
  if (Number.isNaN(at)) throw new Error(`bad instant ${text}`);
  return at;
}

/** The month index (year × 12 + month 0–11) as the spec defines it. */
function monthIndex(year: number, month: number): number {
  return year * 12 + month;
}

describe('QUOTA_WINDOWS', () => {
  it('lists month, day, hour, minute: most lasting first, the order refusals are reported in', () => {
    expect(QUOTA_WINDOWS.map((w) => w.name)).toEqual(['month', 'day', 'hour', 'minute']);
    expect(QUOTA_WINDOWS.map((w) => w.limit)).toEqual(['perMonth', 'perDay', 'perHour', 'perMinute']);
    expect(QUOTA_WINDOWS.map((w) => w.lengthMs)).toEqual([null, 86_400_000, 3_600_000, 60_000]);
  });

  it('names each window’s counters after it', () => {
    for (const w of QUOTA_WINDOWS) {
      expect(w.indexField).toBe(w.name);
      expect(w.countField).toBe(`${w.name}Count`);
    }
  });
});

describe('windowsOf', () => {
  it('is empty without a rate limit or with only a bucket', () => {
    expect(windowsOf(null)).toEqual([]);
    expect(windowsOf({})).toEqual([]);
    expect(windowsOf({ perSecond: 5, burst: 10 })).toEqual([]);
  });

  it('returns the windows with a quota, most lasting first, whatever the order of the fields', () => {
    expect(windowsOf({ perMinute: 1, perMonth: 2 }).map((w) => w.name)).toEqual(['month', 'minute']);
    expect(windowsOf({ perMinute: 1, perHour: 1, perDay: 1, perMonth: 1, perSecond: 1 }).map((w) => w.name)).toEqual([
      'month',
      'day',
      'hour',
      'minute',
    ]);
  });
});

describe('fixed windows (minute, hour, day)', () => {
  it('number windows from the epoch: floor(at / length)', () => {
    expect(windowIndex(MINUTE, 0)).toBe(0);
    expect(windowIndex(MINUTE, 59_999)).toBe(0);
    expect(windowIndex(MINUTE, 60_000)).toBe(1);
    expect(windowIndex(HOUR, iso('2025-03-14T12:59:59.999Z'))).toBe(Math.floor(iso('2025-03-14T12:00:00Z') / 3_600_000));
    expect(windowIndex(DAY, iso('2024-02-29T23:59:59.999Z')) + 1).toBe(windowIndex(DAY, iso('2024-03-01T00:00:00Z')));
  });

  it('number the windows before 1970 negatively, rounding down, not toward zero', () => {
    expect(windowIndex(MINUTE, -1)).toBe(-1);
    expect(windowIndex(MINUTE, -60_000)).toBe(-1);
    expect(windowIndex(MINUTE, -60_001)).toBe(-2);
    expect(windowIndex(HOUR, iso('1969-12-31T23:00:00Z'))).toBe(-1);
    expect(windowIndex(DAY, iso('1969-12-31T00:00:00Z'))).toBe(-1);
    expect(windowIndex(DAY, iso('1969-12-30T23:59:59.999Z'))).toBe(-2);
    expect(windowStart(DAY, -1)).toBe(iso('1969-12-31T00:00:00Z'));
    expect(windowStart(HOUR, -1)).toBe(iso('1969-12-31T23:00:00Z'));
  });

  it('have a fixed length in seconds, in any year', () => {
    for (const at of [0, -1, iso('2024-02-29T12:00:00Z'), iso('0050-06-01T00:00:00Z'), iso('2100-02-28T23:59:59.999Z')]) {
      expect(windowSeconds(MINUTE, at)).toBe(60);
      expect(windowSeconds(HOUR, at)).toBe(3_600);
      expect(windowSeconds(DAY, at)).toBe(DAY_S);
    }
  });

  it('count whole seconds to the window’s end, rounded up, at least 1', () => {
    const start = iso('2025-03-14T12:34:00Z');
    expect(secondsToWindowEnd(MINUTE, start)).toBe(60);
    expect(secondsToWindowEnd(MINUTE, start + 1)).toBe(60);
    expect(secondsToWindowEnd(MINUTE, start + 1_000)).toBe(59);
    expect(secondsToWindowEnd(MINUTE, start + 59_000)).toBe(1);
    expect(secondsToWindowEnd(MINUTE, start + 59_999)).toBe(1);
    expect(secondsToWindowEnd(HOUR, iso('2025-03-14T12:30:00Z'))).toBe(1_800);
    expect(secondsToWindowEnd(DAY, iso('2025-03-14T12:00:00Z'))).toBe(43_200);
    expect(secondsToWindowEnd(DAY, -1)).toBe(1);
    expect(secondsToWindowEnd(HOUR, iso('1969-12-31T23:30:00Z'))).toBe(1_800);
  });
});

describe('the calendar month', () => {
  it('is numbered year × 12 + month (0–11), in UTC', () => {
    expect(windowIndex(MONTH, 0)).toBe(monthIndex(1970, 0));
    expect(windowIndex(MONTH, iso('2025-03-14T12:00:00Z'))).toBe(monthIndex(2025, 2));
    expect(windowIndex(MONTH, iso('2025-12-31T23:59:59.999Z'))).toBe(monthIndex(2025, 11));
    expect(windowIndex(MONTH, iso('2026-01-01T00:00:00Z'))).toBe(monthIndex(2026, 0));
    // A local time zone never matters: 23:30 on the 31st in UTC is still that month, in any zone.
    expect(windowIndex(MONTH, iso('2025-01-31T23:30:00Z'))).toBe(monthIndex(2025, 0));
  });

  it.each([
    ['2024-02-29T23:59:59.999Z', '2024-03-01T00:00:00.000Z', monthIndex(2024, 1)],
    ['2100-02-28T23:59:59.999Z', '2100-03-01T00:00:00.000Z', monthIndex(2100, 1)],
    ['2000-02-29T23:59:59.999Z', '2000-03-01T00:00:00.000Z', monthIndex(2000, 1)],
    ['1900-02-28T23:59:59.999Z', '1900-03-01T00:00:00.000Z', monthIndex(1900, 1)],
    ['2025-01-31T23:59:59.999Z', '2025-02-01T00:00:00.000Z', monthIndex(2025, 0)],
    ['2025-04-30T23:59:59.999Z', '2025-05-01T00:00:00.000Z', monthIndex(2025, 3)],
    ['1969-12-31T23:59:59.999Z', '1970-01-01T00:00:00.000Z', monthIndex(1969, 11)],
    ['0049-12-31T23:59:59.999Z', '0050-01-01T00:00:00.000Z', monthIndex(49, 11)],
    ['0000-02-29T23:59:59.999Z', '0000-03-01T00:00:00.000Z', monthIndex(0, 1)],
  ])('ends at %s and the next starts at %s', (last, first, index) => {
    expect(windowIndex(MONTH, iso(last))).toBe(index);
    expect(windowIndex(MONTH, iso(first))).toBe(index + 1);
    expect(windowStart(MONTH, index + 1)).toBe(iso(first));
    expect(secondsToWindowEnd(MONTH, iso(last))).toBe(1);
  });

  it.each([
    ['2024-02-10T00:00:00Z', 29, 'February of a leap year'],
    ['2023-02-10T00:00:00Z', 28, 'February of a common year'],
    ['2000-02-10T00:00:00Z', 29, 'February 2000 (divisible by 400: leap)'],
    ['2100-02-10T00:00:00Z', 28, 'February 2100 (divisible by 100: not leap)'],
    ['1900-02-10T00:00:00Z', 28, 'February 1900 (divisible by 100: not leap)'],
    ['1968-02-10T00:00:00Z', 29, 'February 1968 (before the epoch, leap)'],
    ['0000-02-10T00:00:00Z', 29, 'February of year 0 (proleptic Gregorian, divisible by 400)'],
    ['0099-02-10T00:00:00Z', 28, 'February of year 99'],
    ['2025-01-10T00:00:00Z', 31, 'January'],
    ['2025-04-10T00:00:00Z', 30, 'April'],
    ['2025-12-10T00:00:00Z', 31, 'December'],
    ['1969-12-31T23:59:59.999Z', 31, 'December 1969'],
  ])('has the length of its month: %s → %d days (%s)', (at, days) => {
    expect(windowSeconds(MONTH, iso(at))).toBe(days * DAY_S);
  });

  it('starts on the 1st at 00:00:00.000Z, for years 0–99 and before year 0 too', () => {
    expect(windowStart(MONTH, monthIndex(2025, 2))).toBe(iso('2025-03-01T00:00:00Z'));
    expect(windowStart(MONTH, monthIndex(1970, 0))).toBe(0);
    expect(windowStart(MONTH, monthIndex(1969, 11))).toBe(iso('1969-12-01T00:00:00Z'));
    expect(windowStart(MONTH, monthIndex(50, 0))).toBe(iso('0050-01-01T00:00:00Z'));
    expect(windowStart(MONTH, monthIndex(99, 11))).toBe(iso('0099-12-01T00:00:00Z'));
    expect(windowStart(MONTH, monthIndex(0, 0))).toBe(iso('0000-01-01T00:00:00Z'));
    expect(windowStart(MONTH, -1)).toBe(iso('-000001-12-01T00:00:00Z'));
    expect(windowIndex(MONTH, iso('0050-06-15T12:00:00Z'))).toBe(monthIndex(50, 5));
    expect(windowIndex(MONTH, iso('-000001-12-31T23:59:59.999Z'))).toBe(-1);
  });

  it('counts whole seconds to the month’s end, rounded up', () => {
    expect(secondsToWindowEnd(MONTH, iso('2024-02-01T00:00:00Z'))).toBe(29 * DAY_S);
    expect(secondsToWindowEnd(MONTH, iso('2024-02-29T00:00:00Z'))).toBe(DAY_S);
    expect(secondsToWindowEnd(MONTH, iso('2024-02-29T23:59:58.001Z'))).toBe(2);
    expect(secondsToWindowEnd(MONTH, iso('1969-12-31T00:00:00Z'))).toBe(DAY_S);
  });
});

describe('every window, for any instant from year 0 to 9999 and before (property)', () => {
  const instants = fc.oneof(
    fc.integer({ min: iso('0000-01-01T00:00:00Z'), max: iso('9999-12-31T23:59:59.999Z') }),
    fc.integer({ min: iso('1960-01-01T00:00:00Z'), max: iso('2110-01-01T00:00:00Z') }),
    fc.integer({ min: -3 * 86_400_000, max: 3 * 86_400_000 }),
    fc.integer({ min: -400 * 366 * 86_400_000, max: 0 }),
  );

  it('holds `at` in [windowStart(index), windowStart(index + 1)), and the start maps back to its index', () => {
    fc.assert(
      fc.property(instants, fc.constantFrom(...QUOTA_WINDOWS), (at, w) => {
        const index = windowIndex(w, at);
        const start = windowStart(w, index);
        const end = windowStart(w, index + 1);
        expect(start).toBeLessThanOrEqual(at);
        expect(at).toBeLessThan(end);
        expect(windowIndex(w, start)).toBe(index);
        expect(windowIndex(w, start - 1)).toBe(index - 1);
        expect(windowIndex(w, end)).toBe(index + 1);
        expect(secondsToWindowEnd(w, at)).toBe(Math.max(1, Math.ceil((end - at) / 1000)));
        expect(secondsToWindowEnd(w, at)).toBeGreaterThanOrEqual(1);
        expect(secondsToWindowEnd(w, at)).toBeLessThanOrEqual(windowSeconds(w, at));
      }),
      { numRuns: 2_000 },
    );
  });

  it('starts every month on its 1st at midnight UTC, 28 to 31 days long, as the calendar says', () => {
    fc.assert(
      fc.property(instants, (at) => {
        const date = new Date(at);
        const index = windowIndex(MONTH, at);
        expect(index).toBe(monthIndex(date.getUTCFullYear(), date.getUTCMonth()));
        const start = new Date(windowStart(MONTH, index));
        expect([start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate()]).toEqual([date.getUTCFullYear(), date.getUTCMonth(), 1]);
        expect([start.getUTCHours(), start.getUTCMinutes(), start.getUTCSeconds(), start.getUTCMilliseconds()]).toEqual([0, 0, 0, 0]);
        const year = date.getUTCFullYear();
        const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
        const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][date.getUTCMonth()];
        expect(windowSeconds(MONTH, at)).toBe((days ?? 0) * DAY_S);
      }),
      { numRuns: 2_000 },
    );
  });

  it('nests the windows: a month starts on a day boundary, a day on an hour, an hour on a minute', () => {
    fc.assert(
      fc.property(instants, (at) => {
        const monthStart = windowStart(MONTH, windowIndex(MONTH, at));
        expect(windowStart(DAY, windowIndex(DAY, monthStart))).toBe(monthStart);
        const dayStart = windowStart(DAY, windowIndex(DAY, at));
        expect(windowStart(HOUR, windowIndex(HOUR, dayStart))).toBe(dayStart);
        const hourStart = windowStart(HOUR, windowIndex(HOUR, at));
        expect(windowStart(MINUTE, windowIndex(MINUTE, hourStart))).toBe(hourStart);
        // Hence a longer window never ends before a shorter one holding the same instant.
        expect(secondsToWindowEnd(MONTH, at)).toBeGreaterThanOrEqual(secondsToWindowEnd(DAY, at));
        expect(secondsToWindowEnd(DAY, at)).toBeGreaterThanOrEqual(secondsToWindowEnd(HOUR, at));
        expect(secondsToWindowEnd(HOUR, at)).toBeGreaterThanOrEqual(secondsToWindowEnd(MINUTE, at));
      }),
      { numRuns: 1_000 },
    );
  });
});
