/**
 * Quota thresholds, as pure functions of (the consume's request, its outcome, the fractions). The
 * store counts every admitted use one by one in its atomic consume, so the count a request brings
 * a window to is reached by exactly one request in all processes sharing the store: the request
 * whose count equals a threshold's mark is the one that reports it, with no shared state and no
 * second round trip.
 */
import type { QuotaWindow as EventWindow } from '../events/events.js';
import type { ConsumeOutcome, ConsumeRequest } from '../policy/limits.js';
import { QUOTA_WINDOWS, windowIndex, windowStart } from '../policy/windows.js';

/** A threshold one admitted request reached. */
export interface QuotaCrossing {
  window: EventWindow;
  threshold: number;
  used: number;
  limit: number;
  /** Start of the window (epoch ms); absent for `lifetime`. */
  windowStart?: number;
}

/** The count at which `fraction` of `limit` is reached: at least 1, at most `limit`. */
export function thresholdMark(fraction: number, limit: number): number {
  return Math.min(limit, Math.max(1, Math.ceil(fraction * limit - 1e-9)));
}

const DAY = QUOTA_WINDOWS.find((window) => window.name === 'day')!;
const MONTH = QUOTA_WINDOWS.find((window) => window.name === 'month')!;

/**
 * The thresholds the admitted request of `outcome` reached, for `maxUses`, the day quota and the
 * month quota, or `[]`. `fractions` are in (0, 1], ascending. `countedAt` is the instant the store
 * counted at (the outcome's, when the caller's clock lagged).
 */
export function quotaCrossings(request: Pick<ConsumeRequest, 'maxUses' | 'rateLimit' | 'now'>, outcome: ConsumeOutcome, fractions: readonly number[]): QuotaCrossing[] {
  if (!outcome.admitted) return [];
  const crossings: QuotaCrossing[] = [];
  const check = (window: EventWindow, used: number | undefined, limit: number | undefined, start?: number): void => {
    if (used === undefined || limit === undefined) return;
    for (const threshold of fractions) {
      if (used === thresholdMark(threshold, limit)) crossings.push({ window, threshold, used, limit, ...(start === undefined ? {} : { windowStart: start }) });
    }
  };
  const at = outcome.countedAt ?? request.now;
  check('lifetime', outcome.useCount, request.maxUses ?? undefined);
  const perDay = request.rateLimit?.perDay;
  if (perDay !== undefined) check('day', outcome.dayCount, perDay, windowStart(DAY, windowIndex(DAY, at)));
  const perMonth = request.rateLimit?.perMonth;
  if (perMonth !== undefined) check('month', outcome.monthCount, perMonth, windowStart(MONTH, windowIndex(MONTH, at)));
  return crossings;
}
