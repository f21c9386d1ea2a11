/**
 * The verification pipeline shared by the middleware and `keys.verify()`:
 * key format → cache / store lookup → secret → status → expiry → IP → scopes → one atomic consume.
 * It decides; it never writes HTTP. Each step before the consume is pure or cached, so a refusal
 * before the consume counts nothing.
 */
import { type CacheOptions, VerificationCache, keyDigest } from '../cache/verification-cache.js';
import { type KeygateError, type RefusalCode, failureReason, isKeygateError, refusalError } from '../errors.js';
import { MAX_KEY_LENGTH, parseKey } from '../key/format.js';
import { type HashingAlgorithm, dummyHash, hashAlgorithmOf, verifySecret } from '../key/hash.js';
import type { HashPool } from '../key/hash-pool.js';
import { LRUCache } from 'lru-cache';
import { randomBytes } from 'node:crypto';
import { type IpRange, checkIp, compileAllowedIps } from '../policy/ip.js';
import { type LimitsSnapshot, describeLimits } from '../policy/limits.js';
import type { PolicyResult } from '../policy/result.js';
import { type CompiledScopes, checkAllScopes, checkAnyScope, compileScopes } from '../policy/scopes.js';
import { checkExpiry, checkStatus } from '../policy/status.js';
import { checkOrigin } from '../policy/origin.js';
import { checkClientCertificate, checkHttps } from '../policy/transport.js';
import { policyHeaderValidUntil, rateLimitPolicyHeader } from '../http/rate-limit-headers.js';
import { decodeStoredRecord, invalidRecord } from '../record/decode.js';
import { isLimitRefusal } from '../stores/toolkit.js';
import type { ApiKeyStore, ConsumeOutcome, ConsumeRequest } from '../stores/store.js';
import type { ApiKey, ApiKeyRecord } from '../types.js';
import { type VisibleRecord, toApiKey, withoutHash } from './principal.js';
import type { Attempt, FailureBudget, HashLane } from './failure-budget.js';
import { storeDeadline, storeUnavailable, withDeadline } from './timeout.js';
import { performance } from 'node:perf_hooks';
import type { Telemetry } from '../metrics/telemetry.js';
import { LeaseBook, type LeaseSettings, type LocalLease, RECORD_CHANGED } from './lease-book.js';

/**
 * A key whose secret verified, with everything the hot path needs precomputed. It is private to
 * the verifier: what callers get (`req.apiKey`, `verify()` results) are copies made from it, so
 * nothing an app does to them can change a later decision.
 */
export interface VerifiedKey {
  readonly id: string;
  /** The record without its hash: nothing in memory past verification needs it. Never handed out. */
  readonly record: VisibleRecord;
  /** Compiled `allowedIps` (`[]`: any address), or `null` when an entry does not parse: refuse every address. */
  readonly ipRanges: readonly IpRange[] | null;
  readonly scopes: CompiledScopes;
  /**
   * `RateLimit-Policy` value, or `undefined` for a key without rate limits. A month quota's window
   * is the length of the current month, so the value is recomputed once `policyHeaderUntil` passes.
   */
  policyHeader: string | undefined;
  /** Until when (epoch ms) `policyHeader` is right: the month's end for a month quota, else for ever. */
  policyHeaderUntil: number;
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
  /** The key's environment must be one of these (`authenticate({ environments })`). */
  environments?: readonly string[] | undefined;
  /** Count the use and enforce the limits. @default true */
  consume?: boolean;
  /**
   * The origin the request comes from (`scheme://host[:port]`), or a function returning it (the
   * middleware reads `Origin`, else `Referer`, only for keys with `allowedOrigins`); `null`: none.
   */
  origin?: string | null | (() => string | null) | undefined;
  /** Whether the request arrived over TLS (`req.secure`), or a function returning it. */
  secure?: boolean | (() => boolean) | undefined;
  /** The route requires HTTPS whatever the key says (`authenticate({ requireHttps: true })`). */
  requireHttps?: boolean | undefined;
  /** SHA-256 fingerprint (stored form) of the client certificate, or a function returning it; `null`: none. */
  clientCertificate?: string | null | (() => string | null) | undefined;
}

/**
 * A verified and (unless `consume: false`) counted request. Its `apiKey`, the copy handed to the
 * app, is built on first read (most requests are decided without anyone reading it) and then kept.
 */
export class Admission {
  readonly ok = true;
  #view: ApiKey | undefined;

  /**
   * @param key - the verified key (private to the verifier)
   * @param limits - the limits after this request, or `null` when nothing was consumed
   * @param at - the decision's instant: the view's `isActive` and `lastUsedAt`
   * @param useCount - the key's uses counting this request, or `undefined` when nothing was consumed
   * @param release - gives back the concurrency slot this request took (keys with `maxConcurrent`);
   *   absent when it took none. Idempotent, never rejects.
   */
  constructor(
    readonly key: VerifiedKey,
    readonly limits: LimitsSnapshot | null,
    private readonly at: number,
    private readonly useCount: number | undefined,
    readonly release?: () => Promise<void>,
  ) {}

  /** The app's copy of the key: a deep copy of the record as verified, with this request counted. */
  get apiKey(): ApiKey {
    if (this.#view === undefined) {
      const view = toApiKey(this.key.record, this.at);
      if (this.useCount !== undefined) {
        view.useCount = this.useCount;
        view.lastUsedAt = new Date(this.at);
      }
      this.#view = view;
    }
    return this.#view;
  }
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
  /** Every prefix accepted, with its environment (`undefined` for a single-prefix instance). */
  prefixes: ReadonlyMap<string, string | undefined>;
  pepper: string | undefined;
  cache: CacheOptions | false;
  now: () => number;
  storeTimeoutMs: number;
  /** Threads for bcrypt compares, or `undefined` to compare on the event loop. */
  pool: HashPool | undefined;
  /** Budgets of failed bcrypt verifications, or `undefined` for none. */
  failureBudget: FailureBudget | undefined;
  /** The algorithm new keys are hashed with: an unknown keyPrefix costs a compare of this kind. */
  hashing: HashingAlgorithm;
  bcryptCost: number;
  /** How long a concurrency slot lasts unless released. */
  concurrencyLeaseMs: number;
  /** Told about every admitted consume and reservation (quota thresholds); it must be cheap and never throw. */
  afterAdmission?: ((key: VerifiedKey, request: ConsumeRequest, outcome: ConsumeOutcome) => void) | undefined;
  /** Leased mode's sizing and timing (`consistency: 'leased'`); `undefined`: exact mode, one consume per request. */
  lease?: LeaseSettings | undefined;
}

/** What verification answers: at once when nothing had to wait (a cached key on an in-process store, a leased unit), else a promise. */
export type Verdict = Admission | Refusal | Promise<Admission | Refusal>;

/** Codes a store may throw that are not answers to a request. */
const NOT_REFUSALS = new Set(['invalid_record', 'invalid_argument', 'not_found', 'already_exists']);

/** How many digests of keys that verified are remembered, and for how long (see FailureBudget). */
const KNOWN_GOOD_MAX = 100_000;
const KNOWN_GOOD_TTL_MS = 24 * 3_600_000;

/** Emits a warning once per record and problem, naming the record, never the key. */
const warned = new LRUCache<string, true>({ max: 10_000 });
function warnOnce(id: string, problem: string, code: string): void {
  const key = `${code} ${id}`;
  if (warned.has(key)) return;
  warned.set(key, true);
  process.emitWarning(`keygate: API key record ${JSON.stringify(id)} ${problem}`, { code });
}

let warnedAboutRelease = false;

/** Runs the verification pipeline against one store with one cache. */
export class Verifier {
  readonly cache: VerificationCache<VerifiedKey>;
  /** Set by `keys.metrics()`: from then on every verification is timed and counted. */
  telemetry: Telemetry | undefined;
  private readonly inflight = new Map<string, Promise<VerifiedKey | null>>();
  /**
   * Digests of keys that recently failed (unknown keyPrefix or wrong secret): the same wrong key
   * sent again is refused without a store lookup or a hash. A secret never changes, so a failed
   * digest cannot become valid; the TTL only bounds memory.
   */
  private readonly rejected: LRUCache<string, true>;
  /**
   * Digests of keys whose secret verified, kept far longer than the cache: their holders skip the
   * failure budgets, so nobody else's wrong secrets can lock them out. Only the budgets: such a
   * key is still looked up and compared like any other once its cache entry is gone.
   */
  private readonly knownGood: LRUCache<string, true>;
  private readonly dummy: string;
  /** Names this verifier's concurrency leases apart from every other process's (72 random bits). */
  private readonly leaseSpace = randomBytes(9).toString('base64url');
  private leaseCount = 0;

  /** Leased units of each key, in leased mode. */
  private readonly leases: LeaseBook | undefined;

  constructor(private readonly settings: VerifierSettings) {
    this.cache = new VerificationCache<VerifiedKey>(settings.cache, settings.now);
    if (settings.lease) {
      const { storeTimeoutMs } = settings;
      this.leases = new LeaseBook(
        settings.lease,
        (id, request) => withDeadline(() => (this.settings.store.reserve as NonNullable<ApiKeyStore['reserve']>).call(this.settings.store, id, request), storeTimeoutMs, 'to reserve uses'),
        (id, settlement) => withDeadline(async () => this.settings.store.settle?.(id, settlement), storeTimeoutMs, 'to give back unspent uses'),
        settings.now,
        storeTimeoutMs,
        (key, request, outcome) => this.settings.afterAdmission?.(key as VerifiedKey, request, outcome),
      );
    }
    this.rejected = new LRUCache<string, true>({ max: 10_000, ttl: 60_000, perf: { now: settings.now } });
    this.knownGood = new LRUCache<string, true>({ max: KNOWN_GOOD_MAX, ttl: KNOWN_GOOD_TTL_MS, perf: { now: settings.now } });
    this.dummy = dummyHash(settings.hashing, settings.bcryptCost);
  }

  /** Drops a record (or, with `null`, every record) from the cache and forgets lookups that began before the change. */
  invalidate(id: string | null): void {
    if (id === null) this.cache.clear();
    else this.cache.invalidate(id);
    this.inflight.clear();
    // Leased units were reserved under the record as it was: give them back, reserve again under the new one.
    this.leases?.drop(id);
  }

  /** Gives back every leased unit not spent (leased mode); resolves once the store has them. */
  async close(): Promise<void> {
    await this.leases?.close();
  }

  /**
   * Verifies a raw key for a request context. Refusals and store failures are answers
   * (`{ ok: false }`); it rejects only on a fault in keygate itself, which the caller must not
   * mistake for a refusal.
   */
  verify(rawKey: string, context: VerifyContext): Promise<Admission | Refusal> {
    try {
      return Promise.resolve(this.admit(rawKey, context));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * {@link verify}, answered at once when nothing has to wait: a cached key whose use is counted by
   * an in-process store (`consumeNow`) or from a leased unit is admitted or refused before this
   * returns, with no promise. Otherwise a promise, as from `verify`. It throws (or rejects) only on
   * a fault in keygate itself.
   */
  admit(rawKey: string, context: VerifyContext): Verdict {
    const telemetry = this.telemetry;
    if (telemetry === undefined) return this.decide(rawKey, context, undefined);
    const started = performance.now();
    const trace = { cold: false };
    const verdict = this.decide(rawKey, context, trace);
    if (!isPromise(verdict)) return this.measured(telemetry, started, trace, verdict);
    return verdict.then((result) => this.measured(telemetry, started, trace, result));
  }

  /**
   * A request this verifier admitted was refused after all by a later check of the same admission
   * (a route's own scopes, a scope guard): the metrics count it under that code, not as admitted.
   */
  refusedAfterAdmission(code: RefusalCode): void {
    const telemetry = this.telemetry;
    if (!telemetry) return;
    telemetry.decisions.inc('admitted', -1);
    telemetry.decisions.inc(code);
  }

  /** Points the verifier at another store (the timed one of `keys.metrics()`). */
  useStore(store: ApiKeyStore): void {
    this.settings.store = store;
  }

  private measured(telemetry: Telemetry, started: number, trace: { cold: boolean }, result: Admission | Refusal): Admission | Refusal {
    telemetry.verification.observe(trace.cold ? 'cold' : 'warm', (performance.now() - started) / 1_000);
    telemetry.decisions.inc(result.ok ? 'admitted' : result.error.code);
    return result;
  }

  /** The pipeline: synchronous up to the first step that has to wait (a store lookup, a consume over I/O, a reservation). */
  private decide(rawKey: string, context: VerifyContext, trace: { cold: boolean } | undefined): Verdict {
    let verdict: Verdict;
    try {
      if (rawKey.length > MAX_KEY_LENGTH) return { ok: false, error: refusalError('malformed_api_key') };
      // The digest first: a cached key was parsed when it was verified, so the warm path skips the
      // format and checksum work. Anything not cached is parsed before any store call.
      const digest = keyDigest(rawKey);
      const key = this.cache.get(digest);
      if (trace) this.telemetry?.cache.inc(key ? 'hit' : 'miss');
      verdict = key ? this.decideFor(key, context, rawKey) : this.decideCold(digest, rawKey, context, trace);
    } catch (error) {
      return this.failure(error);
    }
    return isPromise(verdict) ? verdict.then(undefined, (error: unknown) => this.failure(error)) : verdict;
  }

  private async decideCold(digest: string, rawKey: string, context: VerifyContext, trace: { cold: boolean } | undefined): Promise<Admission | Refusal> {
    if (trace) trace.cold = true;
    const parsed = parseKey(rawKey, this.settings.prefixes);
    if (!parsed) return { ok: false, error: refusalError('malformed_api_key') };
    const found = this.rejected.has(digest) ? null : await this.lookup(digest, parsed.keyPrefix, parsed.secret, context);
    if (!found) return { ok: false, error: refusalError('invalid_api_key') };
    return this.decideFor(found, context, rawKey);
  }

  /** The policies, then the count, for a key whose secret verified. */
  private decideFor(key: VerifiedKey, context: VerifyContext, rawKey: string): Verdict {
    const now = this.settings.now();
    const refused = this.checkPolicies(key, context, now);
    if (refused) return { ok: false, error: refused, key };
    if (context.consume === false) return new Admission(key, null, now, undefined);
    if (key.record.maxConcurrent === null) {
      // A concurrency slot is one request's: keys with maxConcurrent always consume, one by one.
      if (this.leases) return this.spendLeased(key, now, rawKey, context);
      const store = this.settings.store;
      if (store.consumeNow) {
        const request: ConsumeRequest = { now, maxUses: key.record.maxUses, rateLimit: key.record.rateLimit };
        return this.counted(key, request, store.consumeNow(key.id, request), now);
      }
    }
    return this.consume(key, now);
  }

  /**
   * A thrown error as an answer. Every store call goes through withDeadline, so a store failure is
   * a KeygateError by now. Any other error is a fault in keygate itself or in what the app gave it
   * (a bug, a clock that throws, a hashing thread that died): it surfaces as what it is, never as a
   * 503 that hides it.
   */
  private failure(error: unknown): Refusal | Promise<Refusal> {
    if (!isKeygateError(error)) throw error;
    // A store answering with a record or counters keygate cannot use fails closed.
    if (NOT_REFUSALS.has(error.code)) return { ok: false, error: storeUnavailable('verification failed', error) };
    const delayMs = this.settings.failureBudget?.delayMs ?? 0;
    if (error.code === 'too_many_failed_attempts' && delayMs > 0) {
      return new Promise((resolve) => setTimeout(() => resolve({ ok: false, error }), delayMs));
    }
    return { ok: false, error };
  }

  /**
   * Status → expiry → IP → origin → HTTPS → client certificate → scopes, as pure checks; the
   * first refusal, or `undefined`. Each check a key does not use costs one comparison.
   */
  checkPolicies(key: VerifiedKey, context: VerifyContext, now: number): KeygateError | undefined {
    const record = key.record;
    const refusal =
      failed(checkStatus(record, now)) ??
      failed(checkExpiry(record, now)) ??
      (key.ipRanges !== null && key.ipRanges.length === 0 ? undefined : failed(checkIp(key.ipRanges, valueOf(context.ip)))) ??
      (record.allowedOrigins.length === 0 ? undefined : failed(checkOrigin(record.allowedOrigins, valueOf(context.origin) ?? null))) ??
      (!record.requireHttps && !context.requireHttps ? undefined : this.checkHttps(key, context)) ??
      (record.clientCertificateSha256.length === 0
        ? undefined
        : failed(checkClientCertificate(record.clientCertificateSha256, valueOf(context.clientCertificate) ?? null)));
    if (refusal) return refusalError(refusal);
    if (context.environments !== undefined && !context.environments.includes(record.environment as string)) {
      return refusalError('environment_not_allowed');
    }
    return this.checkScopes(key, context);
  }

  /**
   * The HTTPS requirement. A key that requires HTTPS and arrived in clear text has been exposed
   * to everyone on the path: besides refusing, keygate warns once per key so that it gets rotated.
   */
  private checkHttps(key: VerifiedKey, context: VerifyContext): RefusalCode | undefined {
    const secure = valueOf(context.secure);
    const refused = failed(checkHttps(true, secure === true));
    // Only a request known to have come in clear exposed the key (verify() without `secure` did not).
    if (refused && key.record.requireHttps && secure === false) {
      warnOnce(key.id, `(${key.record.keyPrefix}) was sent without TLS: treat it as exposed and rotate it`, 'KEYGATE_KEY_SENT_IN_CLEAR');
    }
    return refused;
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

  /** Leased mode: a unit of the key's lease at once, else one reserved first. */
  private spendLeased(key: VerifiedKey, now: number, rawKey: string, context: VerifyContext): Verdict {
    const leases = this.leases as LeaseBook;
    const lease = leases.take(key.id, now);
    if (lease) return this.leasedAdmission(key, lease, now);
    return leases.reserve(key).then((reserved) => {
      // The record changed while this request waited: decided again, from the store's record.
      if (reserved === RECORD_CHANGED) return this.decide(rawKey, context, undefined);
      if (reserved !== null && 'lease' in reserved) return this.leasedAdmission(key, reserved, this.settings.now());
      return this.counted(key, { now, maxUses: key.record.maxUses, rateLimit: key.record.rateLimit }, reserved, now);
    });
  }

  /**
   * An admission from a leased unit. Its figures are the store's at the reservation plus the units
   * this process still holds: what is left counts what other processes used up to then, not since.
   */
  private leasedAdmission(key: VerifiedKey, lease: LocalLease, now: number): Admission {
    const reserved = lease.outcome;
    const left = lease.left;
    refreshPolicyHeader(key, now);
    const outcome: ConsumeOutcome = { admitted: true, useCount: reserved.useCount - left };
    if (reserved.minuteCount !== undefined) outcome.minuteCount = reserved.minuteCount - left;
    if (reserved.hourCount !== undefined) outcome.hourCount = reserved.hourCount - left;
    if (reserved.dayCount !== undefined) outcome.dayCount = reserved.dayCount - left;
    if (reserved.monthCount !== undefined) outcome.monthCount = reserved.monthCount - left;
    if (reserved.tokens !== undefined) outcome.tokens = reserved.tokens + left;
    if (reserved.countedAt !== undefined && reserved.countedAt > now) outcome.countedAt = reserved.countedAt;
    return new Admission(key, describeLimits({ now, maxUses: key.record.maxUses, rateLimit: key.record.rateLimit }, outcome), now, outcome.useCount);
  }

  private async consume(key: VerifiedKey, now: number): Promise<Admission | Refusal> {
    const { store, storeTimeoutMs } = this.settings;
    const request: ConsumeRequest = {
      now,
      maxUses: key.record.maxUses,
      rateLimit: key.record.rateLimit,
      deadline: storeDeadline(storeTimeoutMs),
    };
    const maxConcurrent = key.record.maxConcurrent;
    if (maxConcurrent !== null) {
      // A store that cannot hold leases would admit without limit: refuse, as for any store fault.
      if (typeof store.release !== 'function') {
        warnOnce(key.id, 'has maxConcurrent, but the key store has no release() method to hold concurrency slots: every request with it is refused (503)', 'KEYGATE_CONCURRENCY_UNSUPPORTED');
        return { ok: false, error: storeUnavailable('the key store cannot hold concurrency slots') };
      }
      request.concurrency = { limit: maxConcurrent, lease: `${this.leaseSpace}.${(this.leaseCount++).toString(36)}`, leaseMs: this.settings.concurrencyLeaseMs };
    }
    let outcome: Awaited<ReturnType<ApiKeyStore['consume']>>;
    try {
      outcome = await withDeadline(() => store.consume(key.id, request), storeTimeoutMs, 'to count a use');
    } catch (error) {
      // A consume that timed out may still have taken its slot: give it back rather than wait for the lease.
      if (request.concurrency) void this.release(key.id, request.concurrency.lease);
      throw error;
    }
    return this.counted(key, request, outcome, now);
  }

  /** The answer to a consume's (or a refused reservation's) outcome. */
  private counted(key: VerifiedKey, request: ConsumeRequest, outcome: ConsumeOutcome | null, now: number): Admission | Refusal {
    if (!outcome) {
      // The record vanished behind the cache's back: treat the key as unknown from now on.
      this.invalidate(key.id);
      return { ok: false, error: refusalError('invalid_api_key') };
    }
    if (outcome.admitted !== true) {
      const code = outcome.refusal;
      if (isLimitRefusal(code)) {
        refreshPolicyHeader(key, outcome.countedAt ?? now);
        const limits = describeLimits(request, outcome);
        const details = limits.retryAfter === undefined ? {} : { retryAfter: limits.retryAfter };
        return { ok: false, error: refusalError(code, details), limits, key };
      }
      if (code === 'api_key_revoked' || code === 'api_key_disabled' || code === 'api_key_expired') {
        // The store knows better than this cache: the key changed in another process, or by hand.
        this.invalidate(key.id);
        return { ok: false, error: refusalError(code), key };
      }
      return { ok: false, error: storeUnavailable(code === 'deadline_exceeded' ? 'the key store got to the consume after its deadline' : 'the key store refused a consume without a known reason') };
    }
    refreshPolicyHeader(key, outcome.countedAt ?? now);
    this.settings.afterAdmission?.(key, request, outcome);
    const limits = describeLimits(request, outcome);
    if (!request.concurrency) return new Admission(key, limits, now, outcome.useCount);
    const lease = request.concurrency.lease;
    let released: Promise<void> | undefined;
    return new Admission(key, limits, now, outcome.useCount, () => (released ??= this.release(key.id, lease)));
  }

  /**
   * Gives a concurrency slot back. A failure is not the request's: the slot lapses after
   * `concurrencyLeaseMs` anyway, so it is reported once as a warning, never thrown.
   */
  private async release(id: string, lease: string): Promise<void> {
    const { store, storeTimeoutMs } = this.settings;
    try {
      await withDeadline(async () => store.release?.(id, lease), storeTimeoutMs, 'to release a concurrency slot');
    } catch (error) {
      if (warnedAboutRelease) return;
      warnedAboutRelease = true;
      const reason = failureReason(error);
      process.emitWarning(`keygate: a concurrency slot could not be released (${reason}); such slots lapse after concurrencyLeaseMs`, { code: 'KEYGATE_RELEASE_FAILED' });
    }
  }

  /** Store lookup and secret check, coalesced so concurrent first uses of a key hash once. */
  private lookup(digest: string, keyPrefix: string, secret: string, context: VerifyContext): Promise<VerifiedKey | null> {
    const pending = this.inflight.get(digest);
    if (pending) return pending;
    const epoch = this.cache.epoch;
    const promise = this.load(keyPrefix, secret, this.knownGood.has(digest), valueOf(context.ip) ?? '').then(
      (key) => {
        if (this.inflight.get(digest) === promise) this.inflight.delete(digest);
        if (key) {
          this.cache.set(digest, key, epoch);
          this.knownGood.set(digest, true);
        } else this.rejected.set(digest, true);
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

  /**
   * Looks the keyPrefix up and compares the secret. An unknown keyPrefix, or a record keygate
   * cannot read, costs a compare against a dummy hash of the configured algorithm and counts as a
   * failure like a wrong secret: both answers take the same work, so timing tells them apart no
   * better than the body does.
   */
  private async load(keyPrefix: string, secret: string, trusted: boolean, client: string): Promise<VerifiedKey | null> {
    const { pepper, pool, failureBudget, now } = this.settings;
    // A spent budget is refused before the store lookup too: under a flood that lookup would be
    // the largest cost left.
    const spent = trusted ? 0 : (failureBudget?.wait(keyPrefix, client, now()) ?? 0);
    if (spent > 0) throw refusalError('too_many_failed_attempts', { retryAfter: spent });
    const record = await this.find(keyPrefix);
    const hash = record?.keyHash ?? this.dummy;
    // Only slow hashes need a budget: a wrong secret against an HMAC hash costs a microsecond.
    let attempt: Attempt | undefined;
    if (!trusted && failureBudget && hashAlgorithmOf(hash) === 'bcrypt') {
      const granted = failureBudget.begin(keyPrefix, client, now());
      if (typeof granted === 'number') throw refusalError('too_many_failed_attempts', { retryAfter: granted });
      attempt = granted;
    }
    const lane: HashLane = attempt?.lane ?? 'clean';
    let verified: boolean;
    try {
      verified = (await verifySecret(secret, hash, pepper, pool, lane)) && record !== null;
    } catch (error) {
      if (attempt) failureBudget?.settle(attempt, false, now()); // a busy or failed pool is not a wrong secret
      throw error;
    }
    if (attempt) failureBudget?.settle(attempt, !verified, now());
    return verified && record ? compileKey(record, now()) : null;
  }

  /**
   * The stored record of a keyPrefix, validated; `null` when there is none, and also (with a
   * warning) when keygate cannot use it, whether the store itself could not decode it or
   * {@link decodeStoredRecord} refused it.
   */
  private async find(keyPrefix: string): Promise<ApiKeyRecord | null> {
    const { store, storeTimeoutMs } = this.settings;
    let found: unknown = null;
    try {
      found = await withDeadline(() => store.findByKeyPrefix(keyPrefix), storeTimeoutMs, 'to look up a key');
      if (found === null) return null;
      const record = decodeStoredRecord(found);
      if (record.keyPrefix !== keyPrefix) throw invalidRecord(record.id, 'keyPrefix', 'is not the keyPrefix that was looked up');
      // A key's environment is its prefix's: a record edited into another environment cannot
      // carry a test key into live (or back).
      const environment = this.settings.prefixes.get(keyPrefix.slice(0, keyPrefix.lastIndexOf('_')));
      if (environment !== undefined && record.environment !== environment) {
        // A key minted before the instance named its environments has none: its prefix says it.
        if (record.environment !== undefined) {
          throw invalidRecord(record.id, 'environment', `is not ${JSON.stringify(environment)}, the environment of its prefix`);
        }
        record.environment = environment;
      }
      return record;
    } catch (error) {
      if (!isKeygateError(error) || error.code !== 'invalid_record') throw error;
      const id = (found as { id?: unknown } | null)?.id;
      warnOnce(typeof id === 'string' ? id : keyPrefix, `was refused: ${error.message}`, 'KEYGATE_INVALID_RECORD');
      return null;
    }
  }
}

/** Precomputes what the hot path needs from a verified record. */
export function compileKey(record: ApiKeyRecord, now: number): VerifiedKey {
  const ipRanges = compileAllowedIps(record.allowedIps);
  if (ipRanges === null) {
    warnOnce(record.id, 'has an allowedIps entry that is not an IP address or CIDR range: every request with it is refused (ip_not_allowed)', 'KEYGATE_INVALID_ALLOWED_IPS');
  }
  return {
    id: record.id,
    record: withoutHash(record),
    ipRanges,
    scopes: compileScopes(record.scopes),
    policyHeader: rateLimitPolicyHeader(record.rateLimit, now),
    policyHeaderUntil: policyHeaderValidUntil(record.rateLimit, now),
  };
}

/** Recomputes a key's `RateLimit-Policy` when a new month has begun since it was computed. */
function refreshPolicyHeader(key: VerifiedKey, now: number): void {
  if (now < key.policyHeaderUntil) return;
  key.policyHeader = rateLimitPolicyHeader(key.record.rateLimit, now);
  key.policyHeaderUntil = policyHeaderValidUntil(key.record.rateLimit, now);
}

/** Whether a verdict has to be waited for (the verifier's own promises are native ones). */
export function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return value instanceof Promise;
}

/** A context value given as itself or as a function computing it on demand. */
function valueOf<T>(value: T | (() => T) | undefined): T | undefined {
  return typeof value === 'function' ? (value as () => T)() : value;
}


function failed(result: PolicyResult): RefusalCode | undefined {
  return result.ok ? undefined : result.code;
}
