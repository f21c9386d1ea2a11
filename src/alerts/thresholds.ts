/**
 * Quota thresholds, as pure functions of (the consume's request, its outcome, the fractions). The
 * store counts every admitted use one by one in its atomic consume, so the count a request brings
 * a window to is reached by exactly one request in all processes sharing the store: the request
 * whose count equals a threshold's mark is the one that reports it, with no shared state and no
 * second round trip.
 *
 * A reservation of leased mode counts a batch of uses at once: it reports the thresholds whose mark
 * lies in the batch, when it is made (up to one lease before the use that reaches it is admitted).
 * Units given back unspent can be reserved again, so a mark may then be reached twice: it is
 * reported again, with the same webhook id, rather than never.
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

/**
 * The count at which `fraction` of `limit` is reached: the smallest count at or above
 * `fraction × limit`, at least 1, at most `limit`. The product is taken in binary floating point,
 * where one that is whole in decimal arithmetic (0.07 × 10¹¹) can come out a hair above the whole
 * number: a product within its rounding error (1.5 ε, relative) of a whole number is that number.
 * That is exact for fractions of up to three decimals and limits up to 10¹²; a fixed epsilon
 * (1e-9) put the mark one count late from limits of 10¹¹.
 */
export function thresholdMark(fraction: number, limit: number): number {
  const exact = fraction * limit;
  const nearest = Math.round(exact);
  const mark = Math.abs(exact - nearest) <= Math.abs(exact) * 1.5 * Number.EPSILON ? nearest : Math.ceil(exact);
  return Math.min(limit, Math.max(1, mark));
}

const DAY = QUOTA_WINDOWS.find((window) => window.name === 'day')!;
const MONTH = QUOTA_WINDOWS.find((window) => window.name === 'month')!;

/**
 * The thresholds the admitted request of `outcome` reached, for `maxUses`, the day quota and the
 * month quota, or `[]`. `fractions` are in (0, 1], ascending. `countedAt` is the instant the store
 * counted at (the outcome's, when the caller's clock lagged).
 */
export function quotaCrossings(
  request: Pick<ConsumeRequest, 'maxUses' | 'rateLimit' | 'now'>,
  outcome: ConsumeOutcome & { granted?: number },
  fractions: readonly number[],
): QuotaCrossing[] {
  if (!outcome.admitted) return [];
  const crossings: QuotaCrossing[] = [];
  // The counts this outcome brought the windows through: one for a consume, the grant for a reservation.
  const span = outcome.granted ?? 1;
  const check = (window: EventWindow, used: number | undefined, limit: number | undefined, start?: number): void => {
    if (used === undefined || limit === undefined) return;
    for (const threshold of fractions) {
      const mark = thresholdMark(threshold, limit);
      if (mark <= used && mark > used - span) crossings.push({ window, threshold, used, limit, ...(start === undefined ? {} : { windowStart: start }) });
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
