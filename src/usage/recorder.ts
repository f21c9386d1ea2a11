/**
 * Usage analytics in the process: each request a key authenticated is added to a cell (key, UTC
 * day, route, outcome) in memory when its response ends, and the cells are written to the store in
 * one batch per flush (on an interval, on `flushUsage()` and on `close()`), never on a request's path.
 *
 * What it promises about losses: a batch that fails keeps its id and is sent again, first, on the
 * next flush, and stores apply a batch id once, so a retried batch never counts twice. Requests are
 * lost only where they are counted as dropped: when the buffer is full (`maxBufferedCells`), and at
 * `close()` when the store still fails.
 */
import { failureReason } from '../errors.js';
import { randomUUID } from 'node:crypto';
import type { UsageBatch, UsageCell } from './cells.js';

/** Where batches go: the key store's `addUsage`. */
export interface UsageSink {
  addUsage(batch: UsageBatch): Promise<void>;
}

/** Counters of the recorder, for `keys.usageStats()` and metrics. */
export interface UsageStats {
  /** Cells waiting in the process (buffered, and in a batch being retried). */
  bufferedCells: number;
  /** Requests in those cells. */
  bufferedRequests: number;
  /** Requests recorded in the store. */
  flushedRequests: number;
  /** Requests never recorded, and why: the buffer was full, or the store still failed at `close()`. */
  dropped: number;
  /** Flushes that failed (each is retried). */
  failedFlushes: number;
}

/** Settings of a {@link UsageRecorder}. */
export interface UsageRecorderSettings {
  flushIntervalMs: number;
  maxBufferedCells: number;
  /** Runs a store call under keygate's store timeout. */
  call: <T>(operation: () => Promise<T>) => Promise<T>;
  now: () => number;
  /** Told about every batch once it is stored (error-rate alerts read the days it touched). */
  onFlushed?: (batch: UsageBatch) => void;
}

const DAY_MS = 86_400_000;

/**
 * Most distinct routes recorded per key and UTC day in a process; the requests of any further
 * route are counted under {@link OTHER_ROUTES}. Routes come from the app's patterns, but a pattern
 * Express matched on a regular expression or case-insensitively carries what the client typed:
 * without a bound, one key could mint a cell per request and crowd every other key out.
 */
export const MAX_ROUTES_PER_KEY_DAY = 64;

/** The route that stands for every route of a key and day past {@link MAX_ROUTES_PER_KEY_DAY}. */
export const OTHER_ROUTES = '(other routes)';

/** Keys whose routes of the day are remembered; the least recent is forgotten past this. */
const ROUTE_MEMORY_KEYS = 10_000;

/** A status code's class field, or `undefined` for no response. */
function statusField(statusCode: number | undefined): 'status2xx' | 'status3xx' | 'status4xx' | 'status5xx' | undefined {
  if (statusCode === undefined) return undefined;
  if (statusCode >= 500) return 'status5xx';
  if (statusCode >= 400) return 'status4xx';
  if (statusCode >= 300) return 'status3xx';
  if (statusCode >= 200) return 'status2xx';
  return undefined;
}

let warnedAboutFlush = false;

/** Buffers usage cells and flushes them to a store. */
export class UsageRecorder {
  #cells = new Map<string, UsageCell>();
  /** The batch that failed, sent again (same id) before anything newer. */
  #retry: UsageBatch | undefined;
  #flushing: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** Per key, the routes recorded on its latest UTC day (kept across flushes, so a day stays bounded). */
  readonly #routes = new Map<string, { day: number; routes: Set<string | null> }>();
  readonly #stats: UsageStats = { bufferedCells: 0, bufferedRequests: 0, flushedRequests: 0, dropped: 0, failedFlushes: 0 };

  constructor(
    private readonly sink: UsageSink,
    private readonly settings: UsageRecorderSettings,
  ) {}

  /**
   * Adds one request. Cheap and synchronous: a map lookup and a few additions. Starts the flush
   * timer on first use, so an instance that records nothing holds no timer.
   */
  record(keyId: string, at: number, route: string | null, outcome: string, statusCode: number | undefined, micros: number): void {
    if (this.#closed) {
      this.#stats.dropped++;
      return;
    }
    const day = Math.floor(at / DAY_MS);
    route = this.#boundedRoute(keyId, day, route);
    const id = `${keyId}\u0000${day}\u0000${route === null ? '\u0001' : route}\u0000${outcome}`;
    let cell = this.#cells.get(id);
    if (cell === undefined) {
      if (this.#cells.size + (this.#retry?.cells.length ?? 0) >= this.settings.maxBufferedCells) {
        this.#stats.dropped++;
        return;
      }
      cell = { keyId, day, route, outcome, requests: 0, status2xx: 0, status3xx: 0, status4xx: 0, status5xx: 0, totalResponseMicros: 0, maxResponseMicros: 0 };
      this.#cells.set(id, cell);
    }
    cell.requests++;
    const status = statusField(statusCode);
    if (status !== undefined) cell[status]++;
    const whole = Math.max(0, Math.round(micros));
    cell.totalResponseMicros += whole;
    if (whole > cell.maxResponseMicros) cell.maxResponseMicros = whole;
    this.#timer ??= this.#startTimer();
  }

  /** `route`, or {@link OTHER_ROUTES} once the key has its day's share of distinct routes. */
  #boundedRoute(keyId: string, day: number, route: string | null): string | null {
    let seen = this.#routes.get(keyId);
    if (seen === undefined || seen.day !== day) {
      if (seen === undefined && this.#routes.size >= ROUTE_MEMORY_KEYS) {
        const oldest = this.#routes.keys().next().value;
        if (oldest !== undefined) this.#routes.delete(oldest);
      }
      seen = { day, routes: new Set() };
      this.#routes.set(keyId, seen);
    }
    if (seen.routes.has(route)) return route;
    if (seen.routes.size >= MAX_ROUTES_PER_KEY_DAY) return OTHER_ROUTES;
    seen.routes.add(route);
    return route;
  }

  /** Writes what is buffered (a failed batch first). Never rejects; concurrent calls share one flush. */
  flush(): Promise<void> {
    // A flush already running may have taken its cells before this call's requests arrived: run
    // another after it, so that everything recorded before this call is written when it resolves.
    const previous = this.#flushing ?? Promise.resolve();
    const next = previous.then(() => this.#flushOnce());
    this.#flushing = next;
    void next.then(() => {
      if (this.#flushing === next) this.#flushing = undefined;
    });
    return next;
  }

  /**
   * Stops the timer and flushes; what the store still refuses then is counted as dropped. The
   * batch to retry and the cells buffered behind it each get their attempt: a retry that fails
   * again does not hold back the newer cells, and whatever is not written is dropped, never left
   * waiting for a flush that no longer comes.
   */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.flush();
    // The flush stops at a retry that fails again, leaving newer cells buffered: give them their
    // own attempt (a new batch), since no later flush will.
    if (this.#retry && this.#cells.size > 0) {
      const rest: UsageBatch = { id: randomUUID(), cells: [...this.#cells.values()], now: new Date(this.settings.now()) };
      this.#cells = new Map();
      if (!(await this.#send(rest))) this.#dropCells(rest.cells);
    }
    if (this.#retry) this.#dropCells(this.#retry.cells);
    this.#retry = undefined;
    // Nothing is recorded once closed, but be exact whatever the interleaving: what is left is lost.
    if (this.#cells.size > 0) {
      this.#dropCells([...this.#cells.values()]);
      this.#cells = new Map();
    }
  }

  #dropCells(cells: readonly UsageCell[]): void {
    this.#stats.dropped += cells.reduce((sum, cell) => sum + cell.requests, 0);
  }

  /** A snapshot of the counters. */
  stats(): UsageStats {
    const waiting = [...this.#cells.values(), ...(this.#retry?.cells ?? [])];
    return { ...this.#stats, bufferedCells: waiting.length, bufferedRequests: waiting.reduce((sum, cell) => sum + cell.requests, 0) };
  }

  #startTimer(): NodeJS.Timeout {
    const timer = setInterval(() => void this.flush(), this.settings.flushIntervalMs);
    // A pending flush never keeps a process alive: close() writes what is left.
    timer.unref();
    return timer;
  }

  async #flushOnce(): Promise<void> {
    if (this.#retry && !(await this.#send(this.#retry))) return;
    this.#retry = undefined;
    if (this.#cells.size === 0) return;
    const batch: UsageBatch = { id: randomUUID(), cells: [...this.#cells.values()], now: new Date(this.settings.now()) };
    this.#cells = new Map();
    if (!(await this.#send(batch))) this.#retry = batch;
  }

  /** Sends a batch; `false` (reported once) when the store failed. */
  async #send(batch: UsageBatch): Promise<boolean> {
    try {
      await this.settings.call(() => this.sink.addUsage(batch));
    } catch (error) {
      this.#stats.failedFlushes++;
      if (!warnedAboutFlush) {
        warnedAboutFlush = true;
        const reason = failureReason(error);
        process.emitWarning(`keygate: usage could not be written to the store (${reason}); it is kept and sent again on the next flush. Later failures are not reported.`, {
          code: 'KEYGATE_USAGE_FLUSH_FAILED',
        });
      }
      return false;
    }
    this.#stats.flushedRequests += batch.cells.reduce((sum, cell) => sum + cell.requests, 0);
    try {
      this.settings.onFlushed?.(batch);
    } catch {
      // Alerts are best effort and report their own failures; a flush is done either way.
    }
    return true;
  }
}
