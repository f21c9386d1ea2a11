/**
 * Usage analytics' vocabulary. The middleware aggregates, in the process, what each request a key
 * authenticated came to, into cells: one per key, UTC day, route and outcome. The recorder flushes
 * them to the store in batches (optional capability `usage`), where they are added up across
 * processes; `keys.usage()` reads them back.
 */

/**
 * One aggregate of requests: those of one key, on one UTC day, on one route, with one outcome.
 * Every number is a non-negative safe integer; response times are whole microseconds, so that
 * every store adds them up exactly (no floating-point drift between stores or processes).
 */
export interface UsageCell {
  keyId: string;
  /** UTC day index: `Math.floor(epochMs / 86_400_000)`. */
  day: number;
  /**
   * Express's route pattern (`req.baseUrl + req.route.path`, such as `/v1/leads/:id`), never the
   * raw URL; `null` when no route matched (refused before routing, or no route served the request).
   * At most 256 characters.
   */
  route: string | null;
  /** `admitted`, or the refusal code (`rate_limited`, `insufficient_scope`, …). */
  outcome: string;
  /** Requests in this cell. */
  requests: number;
  /** Responses by status class; a request whose connection closed before any response counts in none. */
  status2xx: number;
  status3xx: number;
  status4xx: number;
  status5xx: number;
  /** Sum of response times in microseconds (authentication start to the response's end). */
  totalResponseMicros: number;
  /** Largest response time in microseconds. */
  maxResponseMicros: number;
}

/** The fields of a cell that identify it; the others are added up. */
export type UsageCellKey = Pick<UsageCell, 'keyId' | 'day' | 'route' | 'outcome'>;

/** The fields of a cell that add up, in a fixed order (stores may iterate it); `maxResponseMicros` keeps the larger instead. */
export const USAGE_COUNT_FIELDS = ['requests', 'status2xx', 'status3xx', 'status4xx', 'status5xx', 'totalResponseMicros'] as const;

/**
 * One flush: cells to add. A store applies a batch once: called again with the same `id` (a retry
 * after an answer was lost), it adds nothing, so a retried flush never counts twice.
 */
export interface UsageBatch {
  /** A UUID naming this batch. A store remembers applied ids for at least `retainBatchIdsMs`. */
  id: string;
  /** At most one cell per (keyId, day, route, outcome). */
  cells: UsageCell[];
  /** The caller's clock, for the store's bookkeeping (expiry of remembered batch ids). */
  now: Date;
}

/** How long a store must remember an applied batch id: a flush is never retried later than this. */
export const RETAIN_BATCH_IDS_MS = 24 * 3_600_000;

/** What `readUsage` returns: every cell of one key in a range of days. */
export interface StoreUsageQuery {
  keyId: string;
  /** First UTC day index, inclusive. */
  fromDay: number;
  /** Last UTC day index, inclusive. */
  toDay: number;
}

/** Adds `cell`'s counts into `into` (same key fields assumed): the one merge rule of every store. */
export function mergeCell(into: UsageCell, cell: UsageCell): void {
  for (const field of USAGE_COUNT_FIELDS) into[field] += cell[field];
  into.maxResponseMicros = Math.max(into.maxResponseMicros, cell.maxResponseMicros);
}

/** A cell's identity as one string, for maps. */
export function cellKeyOf(cell: UsageCellKey): string {
  return JSON.stringify([cell.keyId, cell.day, cell.route, cell.outcome]);
}
