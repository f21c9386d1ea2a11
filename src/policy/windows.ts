/**
 * The one description of keygate's quota windows and counters. The TypeScript engine
 * (`policy/limits.ts`) reads it, and the Redis consume script and the PostgreSQL consume statement
 * are generated from it (their window constants and counter names are interpolated from this table
 * when their modules load), so the three implementations cannot disagree on a window's length, its
 * order or its counter's name. The store contract's property test (fast-check) then drives random
 * clocks through every store and this engine and requires the same outcomes.
 *
 * A window is a fixed UTC interval: minute, hour and day are fixed lengths from the epoch (a UTC
 * day starts at 00:00:00Z; UTC has no daylight saving and keygate ignores leap seconds, as
 * JavaScript, Lua and PostgreSQL epoch arithmetic all do); the month is the UTC calendar month.
 */
import type { RateLimit } from '../types.js';

/** The name of a quota window, as in `RateLimit-Policy` (`"minute";q=…;w=60`). */
export type QuotaWindowName = 'minute' | 'hour' | 'day' | 'month';

/** One quota window. */
export interface QuotaWindow {
  readonly name: QuotaWindowName;
  /** The `rateLimit` field that sets its quota. */
  readonly limit: 'perMinute' | 'perHour' | 'perDay' | 'perMonth';
  /** The counter state fields of the window: its index and the requests counted in it. */
  readonly indexField: 'minute' | 'hour' | 'day' | 'month';
  readonly countField: 'minuteCount' | 'hourCount' | 'dayCount' | 'monthCount';
  /** Length in milliseconds, or `null` for the calendar month. */
  readonly lengthMs: number | null;
}

/**
 * Every quota window, from the most lasting to the least: the order in which refusals are
 * reported (after `usage_exhausted`, before `rate_limited`).
 */
export const QUOTA_WINDOWS: readonly QuotaWindow[] = [
  { name: 'month', limit: 'perMonth', indexField: 'month', countField: 'monthCount', lengthMs: null },
  { name: 'day', limit: 'perDay', indexField: 'day', countField: 'dayCount', lengthMs: 86_400_000 },
  { name: 'hour', limit: 'perHour', indexField: 'hour', countField: 'hourCount', lengthMs: 3_600_000 },
  { name: 'minute', limit: 'perMinute', indexField: 'minute', countField: 'minuteCount', lengthMs: 60_000 },
];

/**
 * The index of the window holding instant `at` (epoch ms): `floor(at / length)` for fixed windows,
 * `year × 12 + month` (month 0–11, UTC) for the calendar month.
 */
export function windowIndex(window: QuotaWindow, at: number): number {
  if (window.lengthMs !== null) return Math.floor(at / window.lengthMs);
  // Every consume asks for the month: the last month's bounds answer without building a Date.
  if (at >= lastMonth.start && at < lastMonth.end) return lastMonth.index;
  // Floor, as the fixed windows do: a Date truncates a fraction toward zero, which would put
  // -0.5 ms in January 1970 instead of December 1969.
  const date = new Date(Math.floor(at));
  const index = date.getUTCFullYear() * 12 + date.getUTCMonth();
  lastMonth = { index, start: windowStart(window, index), end: windowStart(window, index + 1) };
  return index;
}

let lastMonth = { index: 0, start: 0, end: 0 };

/** The instant (epoch ms) the window of index `index` starts. */
export function windowStart(window: QuotaWindow, index: number): number {
  if (window.lengthMs !== null) return index * window.lengthMs;
  const year = Math.floor(index / 12);
  const date = new Date(0);
  date.setUTCFullYear(year, index - year * 12, 1);
  return date.getTime();
}

/** Whole seconds from `at` to the end of its window (at least 1). */
export function secondsToWindowEnd(window: QuotaWindow, at: number): number {
  const end = windowStart(window, windowIndex(window, at) + 1);
  return Math.max(1, Math.ceil((end - at) / 1000));
}

/** The length in whole seconds of the window holding `at` (a month's varies: 28 to 31 days). */
export function windowSeconds(window: QuotaWindow, at: number): number {
  const index = windowIndex(window, at);
  return Math.round((windowStart(window, index + 1) - windowStart(window, index)) / 1000);
}

/** The quota windows a rate limit sets, most lasting first. */
export function windowsOf(rateLimit: RateLimit | null): readonly QuotaWindow[] {
  if (!rateLimit) return [];
  return QUOTA_WINDOWS.filter((window) => rateLimit[window.limit] !== undefined);
}
