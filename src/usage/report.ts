/**
 * `keys.usage()`'s answer, built from stored cells: pure arithmetic, so that every store gives the
 * same series for the same cells.
 */
import type { UsageCell } from './cells.js';

/** One point of a usage series: a UTC day, or a route over the whole range. */
export interface UsagePoint {
  /** The UTC day, `YYYY-MM-DD` (with `groupBy: 'day'`). */
  day?: string;
  /** The route pattern, or `null` for requests no route matched (with `groupBy: 'route'`). */
  route?: string | null;
  /** Requests the key made. */
  requests: number;
  /** Of which admitted. */
  admitted: number;
  /** Of which refused, by refusal code. */
  refused: Record<string, number>;
  /** Responses by status class (a request whose connection closed first has none). */
  status: { '2xx': number; '3xx': number; '4xx': number; '5xx': number };
  /** Share of requests answered 2xx or 3xx; `null` without requests. */
  successRate: number | null;
  /** Share of requests answered 4xx or 5xx (refusals included); `null` without requests. */
  errorRate: number | null;
  /** Mean time from authentication to the end of the response, in milliseconds; `null` without requests. */
  averageResponseTimeMs: number | null;
  /** Longest response time, in milliseconds. */
  maxResponseTimeMs: number;
  /** Sum of response times, in milliseconds. */
  totalResponseTimeMs: number;
}

/** What `keys.usage()` returns. */
export interface UsageReport {
  keyId: string;
  /** First and last UTC day of the range, `YYYY-MM-DD`. */
  from: string;
  to: string;
  groupBy: 'day' | 'route';
  /** With `groupBy: 'day'` one point per day of the range, days without requests included; with `'route'` one per route used, busiest first. */
  items: UsagePoint[];
  /** The whole range. */
  total: UsagePoint;
}

const DAY_MS = 86_400_000;

/** A point's running sums. */
interface Sums {
  requests: number;
  admitted: number;
  refused: Record<string, number>;
  status2xx: number;
  status3xx: number;
  status4xx: number;
  status5xx: number;
  totalMicros: number;
  maxMicros: number;
}

function emptySums(): Sums {
  return { requests: 0, admitted: 0, refused: {}, status2xx: 0, status3xx: 0, status4xx: 0, status5xx: 0, totalMicros: 0, maxMicros: 0 };
}

function add(sums: Sums, cell: UsageCell): void {
  sums.requests += cell.requests;
  if (cell.outcome === 'admitted') sums.admitted += cell.requests;
  else sums.refused[cell.outcome] = (sums.refused[cell.outcome] ?? 0) + cell.requests;
  sums.status2xx += cell.status2xx;
  sums.status3xx += cell.status3xx;
  sums.status4xx += cell.status4xx;
  sums.status5xx += cell.status5xx;
  sums.totalMicros += cell.totalResponseMicros;
  if (cell.maxResponseMicros > sums.maxMicros) sums.maxMicros = cell.maxResponseMicros;
}

/** Milliseconds from microseconds, to the microsecond. */
function ms(micros: number): number {
  return Math.round(micros) / 1_000;
}

function point(sums: Sums): UsagePoint {
  const { requests } = sums;
  const rate = (part: number): number | null => (requests === 0 ? null : part / requests);
  return {
    requests,
    admitted: sums.admitted,
    refused: Object.fromEntries(Object.entries(sums.refused).sort(([a], [b]) => (a < b ? -1 : 1))),
    status: { '2xx': sums.status2xx, '3xx': sums.status3xx, '4xx': sums.status4xx, '5xx': sums.status5xx },
    successRate: rate(sums.status2xx + sums.status3xx),
    errorRate: rate(sums.status4xx + sums.status5xx),
    averageResponseTimeMs: requests === 0 ? null : ms(sums.totalMicros / requests),
    maxResponseTimeMs: ms(sums.maxMicros),
    totalResponseTimeMs: ms(sums.totalMicros),
  };
}

/** The UTC day of an index, `YYYY-MM-DD`. */
export function dayString(day: number): string {
  return new Date(day * DAY_MS).toISOString().slice(0, 10);
}

/** Builds the report of `keyId` over the days `[fromDay, toDay]` from its stored cells. */
export function usageReport(keyId: string, fromDay: number, toDay: number, groupBy: 'day' | 'route', cells: readonly UsageCell[]): UsageReport {
  const total = emptySums();
  const groups = new Map<string | number | null, Sums>();
  if (groupBy === 'day') for (let day = fromDay; day <= toDay; day++) groups.set(day, emptySums());
  for (const cell of cells) {
    // Stores return the range asked for; anything else (another key, another day) is not counted.
    if (cell.keyId !== keyId || cell.day < fromDay || cell.day > toDay) continue;
    add(total, cell);
    const group = groupBy === 'day' ? cell.day : cell.route;
    let sums = groups.get(group);
    if (!sums) groups.set(group, (sums = emptySums()));
    add(sums, cell);
  }
  const entries = [...groups.entries()];
  const items =
    groupBy === 'day'
      ? entries.map(([day, sums]) => ({ day: dayString(day as number), ...point(sums) }))
      : entries
          .sort(([routeA, a], [routeB, b]) => b.requests - a.requests || String(routeA).localeCompare(String(routeB)))
          .map(([route, sums]) => ({ route: route as string | null, ...point(sums) }));
  return { keyId, from: dayString(fromDay), to: dayString(toDay), groupBy, items, total: point(total) };
}
