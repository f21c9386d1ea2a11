/**
 * A budget of failed slow-hash verifications per keyPrefix. The keyPrefix is not secret, so anyone
 * can send endless wrong secrets for a known one, and each would cost a bcrypt compare. Each
 * failure takes a token from the keyPrefix's bucket; while it is empty, further cold verifications
 * of that keyPrefix are refused (`too_many_failed_attempts`) without hashing. Keys already verified
 * and cached never reach this check, so their holders keep working during a flood.
 */
import { LRUCache } from 'lru-cache';
import { refilledTokens } from '../policy/limits.js';
import type { RateLimit } from '../types.js';

/** Size of the budget: `burst` failures at once, refilled at `perSecond`. */
export interface FailureBudgetOptions {
  /** Failures allowed in a row before the keyPrefix is paused. @default 10 */
  burst?: number;
  /** Failures allowed per second after that. @default 1 */
  perSecond?: number;
  /** How long a refusal for a spent budget is held before it is answered (a tarpit). @default 1000 */
  delayMs?: number;
}

interface Bucket {
  tokens: number | null;
  tokensAt: number;
}

/** Per-keyPrefix token buckets of failed verifications, in an LRU so a flood of prefixes stays bounded. */
export class FailureBudget {
  readonly #limit: RateLimit;
  /** Milliseconds a `too_many_failed_attempts` refusal waits before it is answered. */
  readonly delayMs: number;
  readonly #buckets = new LRUCache<string, Bucket>({ max: 10_000 });

  constructor(options: FailureBudgetOptions = {}) {
    this.#limit = { perSecond: options.perSecond ?? 1, burst: options.burst ?? 10 };
    this.delayMs = options.delayMs ?? 1000;
  }

  /** Whole seconds until `keyPrefix` has a failure to spend again; 0 when it has one now (or never failed). */
  wait(keyPrefix: string, now: number): number {
    const bucket = this.#buckets.get(keyPrefix);
    if (!bucket) return 0;
    const tokens = refilledTokens(bucket, this.#limit, now);
    return tokens >= 1 ? 0 : Math.max(1, Math.ceil((1 - tokens) / (this.#limit.perSecond as number)));
  }

  /**
   * Reserves one failure for a verification about to run: `0` when granted, otherwise the whole
   * seconds until one is. Reserving before hashing (not counting after) keeps concurrent attempts
   * within the budget: fifty wrong secrets arriving at once get `burst` compares, not fifty.
   */
  reserve(keyPrefix: string, now: number): number {
    const waitSeconds = this.wait(keyPrefix, now);
    if (waitSeconds > 0) return waitSeconds;
    const bucket = this.#buckets.get(keyPrefix);
    const tokens = bucket ? refilledTokens(bucket, this.#limit, now) : (this.#limit.burst as number);
    this.#buckets.set(keyPrefix, { tokens: tokens - 1, tokensAt: Math.max(now, bucket?.tokensAt ?? now) });
    return 0;
  }

  /** Gives a reservation back: the secret was right, so it was not a failure. */
  release(keyPrefix: string): void {
    const bucket = this.#buckets.get(keyPrefix);
    if (bucket && bucket.tokens !== null) bucket.tokens = Math.min(this.#limit.burst as number, bucket.tokens + 1);
  }
}
