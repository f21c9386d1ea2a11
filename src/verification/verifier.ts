/**
 * The verification pipeline shared by the middleware and `keys.verify()`:
 * key format → cache / store lookup → secret → status → expiry → IP → scopes → one atomic consume.
 * It decides; it never writes HTTP. Each step before the consume is pure or cached, so a refusal
 * before the consume counts nothing.
 */
import { type CacheOptions, VerificationCache, keyDigest } from '../cache/verification-cache.js';
import { KeygateError, type RefusalCode } from '../errors.js';
import { MAX_KEY_LENGTH, parseKey } from '../key/format.js';
import { hashAlgorithmOf, verifySecret } from '../key/hash.js';
import type { HashPool } from '../key/hash-pool.js';
import { LRUCache } from 'lru-cache';
import { type IpRange, checkIp, compileAllowedIps } from '../policy/ip.js';
import { type LimitsSnapshot, describeLimits } from '../policy/limits.js';
import type { PolicyResult } from '../policy/result.js';
import { type CompiledScopes, checkAllScopes, checkAnyScope, compileScopes } from '../policy/scopes.js';
import { checkExpiry, checkStatus } from '../policy/status.js';
import { rateLimitPolicyHeader } from '../http/rate-limit-headers.js';
import type { ApiKeyStore, ConsumeRequest } from '../stores/store.js';
import type { ApiKey, ApiKeyRecord } from '../types.js';
import { type VisibleRecord, toApiKey, withoutHash } from './principal.js';
import type { FailureBudget } from './failure-budget.js';
import { withDeadline } from './timeout.js';

/** A key whose secret verified, with everything the hot path needs precomputed. */
export interface VerifiedKey {
  readonly id: string;
  /** The record without its hash: nothing in memory past verification needs it. */
  readonly record: VisibleRecord;
  readonly ipRanges: readonly IpRange[];
  readonly scopes: CompiledScopes;
  /** `RateLimit-Policy` value, or `undefined` for a key without rate limits. */
  readonly policyHeader: string | undefined;
}

/** What the request asks of the key. */
export interface VerifyContext {
  /**
   * Client address, or a function returning it: the middleware passes `() => req.ip`, so Express
   * computes the address (trust proxy, X-Forwarded-For) only for keys that have an allowlist.
   */
  ip?: string | (() => string | undefined) | undefined;
  /** Every one of these scopes is required. */
  scopes?: readonly string[] | undefined;
  /** At least one of these scopes is required. */
  anyScopes?: readonly string[] | undefined;
  /** Count the use and enforce the limits. @default true */
  consume?: boolean;
}

/** A verified and (unless `consume: false`) counted request. */
export interface Admission {
  ok: true;
  apiKey: ApiKey;
  /** The limits after this request, or `null` when nothing was consumed. */
  limits: LimitsSnapshot | null;
  key: VerifiedKey;
}

/** A refusal, with the limits when a limit refused. */
export interface Refusal {
  ok: false;
  error: KeygateError;
  limits?: LimitsSnapshot;
  key?: VerifiedKey;
}

/** Settings of a {@link Verifier}. */
export interface VerifierSettings {
  store: ApiKeyStore;
  prefix: string;
  pepper: string | undefined;
  cache: CacheOptions | false;
  now: () => number;
  storeTimeoutMs: number;
  /** Threads for bcrypt compares, or `undefined` to compare on the event loop. */
  pool: HashPool | undefined;
  /** Budget of failed bcrypt verifications per keyPrefix, or `undefined` for none. */
  failureBudget: FailureBudget | undefined;
}

const REFUSAL_MESSAGES: Partial<Record<RefusalCode, string>> = {
  malformed_api_key: 'The API key is not in the expected format.',
  invalid_api_key: 'The API key is not valid.',
  api_key_revoked: 'The API key has been revoked.',
  api_key_expired: 'The API key has expired.',
  api_key_disabled: 'The API key is suspended.',
  ip_not_allowed: 'The API key may not be used from this address.',
  usage_exhausted: 'The API key has used all of its allowed requests.',
  quota_exceeded: 'The API key has used its daily quota.',
  rate_limited: 'Too many requests for this API key; slow down.',
  too_many_failed_attempts: 'Too many failed attempts with this API key; retry later.',
};

/** A refusal error for a policy code, with a client-safe message. */
export function refusalError(code: RefusalCode, details: { retryAfter?: number; requiredScopes?: readonly string[] } = {}): KeygateError {
  const message =
    code === 'insufficient_scope' && details.requiredScopes
      ? `The API key lacks the required scope: ${details.requiredScopes.join(' ')}.`
      : REFUSAL_MESSAGES[code];
  // A refusal is an expected answer, not a fault: its stack trace would say nothing and capturing
  // one is the most expensive part of building it (it matters under a flood of bad requests).
  const stackTraceLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new KeygateError(code, message, details);
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
  }
}

/** Runs the verification pipeline against one store with one cache. */
export class Verifier {
  readonly cache: VerificationCache<VerifiedKey>;
  private readonly inflight = new Map<string, Promise<VerifiedKey | null>>();
  /**
   * Digests of keys that recently failed (unknown keyPrefix or wrong secret): the same wrong key
   * sent again is refused without a store lookup or a hash. A secret never changes, so a failed
   * digest cannot become valid; the TTL only bounds memory.
   */
  private readonly rejected: LRUCache<string, true>;

  constructor(private readonly settings: VerifierSettings) {
    this.cache = new VerificationCache<VerifiedKey>(settings.cache, settings.now);
    this.rejected = new LRUCache<string, true>({ max: 10_000, ttl: 60_000, perf: { now: settings.now } });
  }

  /** Drops a record (or, with `null`, every record) from the cache and forgets lookups that began before the change. */
  invalidate(id: string | null): void {
    if (id === null) this.cache.clear();
    else this.cache.invalidate(id);
    this.inflight.clear();
  }

  /** Verifies a raw key for a request context; never rejects. */
  async verify(rawKey: string, context: VerifyContext): Promise<Admission | Refusal> {
    try {
      if (rawKey.length > MAX_KEY_LENGTH) return { ok: false, error: refusalError('malformed_api_key') };
      // The digest first: a cached key was parsed when it was verified, so the warm path skips the
      // format and checksum work. Anything not cached is parsed before any store call.
      const digest = keyDigest(rawKey);
      let key = this.cache.get(digest);
      if (!key) {
        const parsed = parseKey(rawKey, this.settings.prefix);
        if (!parsed) return { ok: false, error: refusalError('malformed_api_key') };
        const found = this.rejected.has(digest) ? null : await this.lookup(digest, parsed.keyPrefix, parsed.secret);
        if (!found) return { ok: false, error: refusalError('invalid_api_key') };
        key = found;
      }
      const now = this.settings.now();
      const refused = this.checkPolicies(key, context, now);
      if (refused) return { ok: false, error: refused, key };
      if (context.consume === false) return { ok: true, apiKey: toApiKey(key.record, now), limits: null, key };
      return await this.consume(key, now);
    } catch (error) {
      if (!(error instanceof KeygateError)) {
        return { ok: false, error: new KeygateError('store_unavailable', 'verification failed', { cause: error }) };
      }
      const delayMs = this.settings.failureBudget?.delayMs ?? 0;
      if (error.code === 'too_many_failed_attempts' && delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
      return { ok: false, error };
    }
  }

  /** Status → expiry → IP → scopes, as pure checks; the first refusal, or `undefined`. */
  checkPolicies(key: VerifiedKey, context: VerifyContext, now: number): KeygateError | undefined {
    const refusal =
      failed(checkStatus(key.record, now)) ??
      failed(checkExpiry(key.record, now)) ??
      (key.ipRanges.length === 0 ? undefined : failed(checkIp(key.ipRanges, typeof context.ip === 'function' ? context.ip() : context.ip)));
    if (refusal) return refusalError(refusal);
    return this.checkScopes(key, context);
  }

  /** The scope part of the policies, also used alone by a second `authenticate()` and the guards. */
  checkScopes(key: Pick<VerifiedKey, 'scopes'>, context: VerifyContext): KeygateError | undefined {
    if (context.scopes && context.scopes.length > 0 && !checkAllScopes(key.scopes, context.scopes).ok) {
      return refusalError('insufficient_scope', { requiredScopes: context.scopes });
    }
    if (context.anyScopes && context.anyScopes.length > 0 && !checkAnyScope(key.scopes, context.anyScopes).ok) {
      return refusalError('insufficient_scope', { requiredScopes: context.anyScopes });
    }
    return undefined;
  }

  private async consume(key: VerifiedKey, now: number): Promise<Admission | Refusal> {
    const { store, storeTimeoutMs } = this.settings;
    const request: ConsumeRequest = { now, maxUses: key.record.maxUses, rateLimit: key.record.rateLimit };
    const outcome = await withDeadline(() => store.consume(key.id, request), storeTimeoutMs, 'to count a use');
    if (!outcome) {
      // The record vanished behind the cache's back: treat the key as unknown from now on.
      this.invalidate(key.id);
      return { ok: false, error: refusalError('invalid_api_key') };
    }
    const limits = describeLimits(request, outcome);
    if (!outcome.admitted) {
      const code = outcome.refusal ?? 'usage_exhausted';
      const details = limits.retryAfter === undefined ? {} : { retryAfter: limits.retryAfter };
      return { ok: false, error: refusalError(code, details), limits, key };
    }
    const apiKey = toApiKey(key.record, now);
    apiKey.useCount = outcome.useCount;
    apiKey.lastUsedAt = new Date(now);
    return { ok: true, apiKey, limits, key };
  }

  /** Store lookup and secret check, coalesced so concurrent first uses of a key hash once. */
  private lookup(digest: string, keyPrefix: string, secret: string): Promise<VerifiedKey | null> {
    const pending = this.inflight.get(digest);
    if (pending) return pending;
    const epoch = this.cache.epoch;
    const promise = this.load(keyPrefix, secret).then(
      (key) => {
        if (this.inflight.get(digest) === promise) this.inflight.delete(digest);
        if (key) this.cache.set(digest, key, epoch);
        else this.rejected.set(digest, true);
        return key;
      },
      (error: unknown) => {
        if (this.inflight.get(digest) === promise) this.inflight.delete(digest);
        throw error;
      },
    );
    this.inflight.set(digest, promise);
    return promise;
  }

  private async load(keyPrefix: string, secret: string): Promise<VerifiedKey | null> {
    const { store, storeTimeoutMs, pepper, pool, failureBudget, now } = this.settings;
    // A keyPrefix whose budget is spent is refused before the store lookup too: under a flood that
    // lookup would be the largest cost left. (Only bcrypt records ever spend a budget.)
    const spent = failureBudget?.wait(keyPrefix, now()) ?? 0;
    if (spent > 0) throw refusalError('too_many_failed_attempts', { retryAfter: spent });
    const record = await withDeadline(() => store.findByKeyPrefix(keyPrefix), storeTimeoutMs, 'to look up a key');
    if (!record) return null;
    // Only slow hashes need a budget: a wrong secret against an HMAC hash costs a microsecond.
    const budget = hashAlgorithmOf(record.keyHash) === 'bcrypt' ? failureBudget : undefined;
    const wait = budget?.reserve(keyPrefix, now()) ?? 0;
    if (wait > 0) throw refusalError('too_many_failed_attempts', { retryAfter: wait });
    let verified: boolean;
    try {
      verified = await verifySecret(secret, record.keyHash, pepper, pool);
    } catch (error) {
      budget?.release(keyPrefix); // a busy or failed pool is not a wrong secret
      throw error;
    }
    if (!verified) return null; // the reservation stays spent: this was a failure
    budget?.release(keyPrefix);
    return compileKey(record);
  }
}

/** Precomputes what the hot path needs from a verified record. */
export function compileKey(record: ApiKeyRecord): VerifiedKey {
  return {
    id: record.id,
    record: withoutHash(record),
    ipRanges: compileAllowedIps(record.allowedIps),
    scopes: compileScopes(record.scopes),
    policyHeader: rateLimitPolicyHeader(record.rateLimit),
  };
}

function failed(result: PolicyResult): RefusalCode | undefined {
  return result.ok ? undefined : result.code;
}
