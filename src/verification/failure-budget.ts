/**
 * Bounds on the slow-hash work that wrong secrets can cause. A keyPrefix is not secret and a
 * well-formed key for an unknown keyPrefix costs a (dummy) compare too, so anyone can make keygate
 * run bcrypt. Three bounds apply to every cold verification that would run one:
 *
 * - **Per keyPrefix and client address** (`burst` in a row, then `perSecond`): one client cannot
 *   grind at one keyPrefix. Keyed by the client too, so an attacker who knows a keyPrefix (it is in
 *   lists, logs and dashboards) cannot lock its holder out: the holder's own address has its own
 *   budget.
 * - **Suspicion.** A verification whose client address, or whose (keyPrefix, client) pair, failed
 *   recently is suspect. Suspect compares run behind clean ones on the hashing threads, and only
 *   while the **process-wide** budget (`processBurst`, then `processPerSecond`) has room; beyond it
 *   they are refused without hashing. So an attacker with many keyPrefixes of their own can spend
 *   at most that much of the hashing threads, and a customer whose key is new to this process
 *   still verifies at once, ahead of the attacker's queue.
 * - **Keys that verified before** (remembered by digest, much longer than the verification cache)
 *   skip the first two bounds: a holder is never refused because of other people's wrong secrets.
 *
 * A reservation is taken before the compare and given back when the secret was right, so
 * concurrent attempts cannot overrun a budget (fifty wrong secrets at once get `burst` compares).
 */
import { LRUCache } from 'lru-cache';
import { refilledTokens } from '../policy/limits.js';
import type { RateLimit } from '../types.js';

/** Size of the budgets (`keygate()`'s `failedAttemptLimit`, with its defaults applied). */
export interface FailureBudgetOptions {
  /** Failures allowed in a row per keyPrefix and client address. */
  burst: number;
  /** Failures allowed per second per keyPrefix and client address after that. */
  perSecond: number;
  /** How long a refusal for a spent budget is held before it is answered (a tarpit). */
  delayMs: number;
  /** Suspect compares allowed in a row across the whole process. @default 2 × processPerSecond */
  processBurst?: number;
  /** Suspect compares allowed per second across the whole process. @default 4 × hashing threads, at least 4 */
  processPerSecond?: number;
}

/** Which queue of the hashing threads a compare waits in: clean attempts go first. */
export type HashLane = 'clean' | 'suspect';

interface Bucket {
  tokens: number | null;
  tokensAt: number;
}

/** A reservation made for one compare: settle it with {@link FailureBudget.settle}. */
export interface Attempt {
  readonly lane: HashLane;
  readonly pairKey: string;
  readonly clientKey: string;
  readonly tookProcessToken: boolean;
}

/** Whole seconds until a bucket of `limit` has a token again; 0 when it has one now. */
function waitFor(bucket: Bucket | undefined, limit: RateLimit, now: number): number {
  if (!bucket) return 0;
  const tokens = refilledTokens(bucket, limit, now);
  return tokens >= 1 ? 0 : Math.max(1, Math.ceil((1 - tokens) / (limit.perSecond as number)));
}

function hasHistory(bucket: Bucket | undefined, limit: RateLimit, now: number): boolean {
  return bucket !== undefined && refilledTokens(bucket, limit, now) < (limit.burst as number);
}

function take(bucket: Bucket | undefined, limit: RateLimit, now: number): Bucket {
  const tokens = bucket ? refilledTokens(bucket, limit, now) : (limit.burst as number);
  return { tokens: tokens - 1, tokensAt: Math.max(now, bucket?.tokensAt ?? now) };
}

function giveBack(bucket: Bucket | undefined, limit: RateLimit): void {
  if (bucket && bucket.tokens !== null) bucket.tokens = Math.min(limit.burst as number, bucket.tokens + 1);
}

/** The failure budgets of one keygate instance. */
export class FailureBudget {
  readonly #pairLimit: RateLimit;
  readonly #processLimit: RateLimit;
  /** Milliseconds a `too_many_failed_attempts` refusal waits before it is answered. */
  readonly delayMs: number;
  readonly #pairs = new LRUCache<string, Bucket>({ max: 10_000 });
  readonly #clients = new LRUCache<string, Bucket>({ max: 10_000 });
  #process: Bucket | undefined;

  constructor(options: FailureBudgetOptions, hashThreads = 1) {
    this.#pairLimit = { perSecond: options.perSecond, burst: options.burst };
    const processPerSecond = options.processPerSecond ?? Math.max(4, 4 * hashThreads);
    this.#processLimit = { perSecond: processPerSecond, burst: options.processBurst ?? 2 * processPerSecond };
    this.delayMs = options.delayMs;
  }

  /** Whole seconds until this keyPrefix may fail again from this client; 0 when it may now. */
  wait(keyPrefix: string, client: string, now: number): number {
    return waitFor(this.#pairs.get(pairKeyOf(keyPrefix, client)), this.#pairLimit, now);
  }

  /**
   * Reserves a failure for a compare about to run: the {@link Attempt} (with the lane to queue
   * the compare in), or the whole seconds until one would be granted.
   */
  begin(keyPrefix: string, client: string, now: number): Attempt | number {
    const pairKey = pairKeyOf(keyPrefix, client);
    const pair = this.#pairs.get(pairKey);
    const pairWait = waitFor(pair, this.#pairLimit, now);
    if (pairWait > 0) return pairWait;
    const clientBucket = this.#clients.get(client);
    const suspect = hasHistory(pair, this.#pairLimit, now) || hasHistory(clientBucket, this.#pairLimit, now);
    if (suspect) {
      const processWait = waitFor(this.#process, this.#processLimit, now);
      if (processWait > 0) return processWait;
      this.#process = take(this.#process, this.#processLimit, now);
    }
    this.#pairs.set(pairKey, take(pair, this.#pairLimit, now));
    this.#clients.set(client, take(clientBucket, this.#pairLimit, now));
    return { lane: suspect ? 'suspect' : 'clean', pairKey, clientKey: client, tookProcessToken: suspect };
  }

  /**
   * Settles a reservation: a right secret gives everything back; a wrong one keeps it spent, and a
   * clean failure also draws on the process-wide budget, so failures from many fresh addresses
   * make later suspect attempts wait.
   */
  settle(attempt: Attempt, failed: boolean, now: number): void {
    if (failed) {
      if (!attempt.tookProcessToken && waitFor(this.#process, this.#processLimit, now) === 0) {
        this.#process = take(this.#process, this.#processLimit, now);
      }
      return;
    }
    giveBack(this.#pairs.get(attempt.pairKey), this.#pairLimit);
    giveBack(this.#clients.get(attempt.clientKey), this.#pairLimit);
    if (attempt.tookProcessToken) giveBack(this.#process, this.#processLimit);
  }
}

function pairKeyOf(keyPrefix: string, client: string): string {
  return `${keyPrefix} ${client}`;
}
