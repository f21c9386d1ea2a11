/**
 * Option validation for `keygate()`, done once at construction so the hot path stays thin. A wrong
 * type or an unknown option is a programming mistake (`TypeError`, with a "did you mean" for
 * typos). The one exception is the public contract's: a prefix that breaks the key format is
 * `invalid_argument` naming `prefix`, like every other value that breaks a key rule. Each default
 * is written once, here, next to the check of its option.
 */
import type { CacheOptions } from '../cache/verification-cache.js';
import { invalidArgument } from '../errors.js';
import { isValidPrefix } from '../key/format.js';
import type { HashingAlgorithm } from '../key/hash.js';
import { defaultThreads } from '../key/hash-pool.js';
import { integerOption, rejectUnknownOptions } from '../options/checks.js';
import type { ApiKeyStore } from '../stores/store.js';
import type { AuditStore } from './management-log.js';
import type { LeaseSettings } from '../verification/lease-book.js';

/** Options of usage analytics (`usage: { … }`). */
export interface UsageOptions {
  /** How often the buffered counts are written to the store, in milliseconds (100 to 3 600 000). @default 10_000 */
  flushIntervalMs?: number;
  /**
   * Most cells (one per key, UTC day, route and outcome) held in the process between flushes;
   * requests that would need one more are not recorded, and are counted in `usageStats().dropped`.
   * @default 10_000
   */
  maxBufferedCells?: number;
  /** Fewest requests in a UTC day before a key's error rate can raise `error_rate.threshold`. @default 20 */
  errorRateMinRequests?: number;
}

/** Where alerts go as webhooks (`webhooks: { secret }`): signed per the Standard Webhooks specification. */
export interface WebhookOptions {
  /** The signing secret, `whsec_` and base64: give the same to the receivers. */
  secret: string;
  /** Attempts per webhook before it is dropped. @default 6 */
  maxAttempts?: number;
  /** Each attempt's timeout, in milliseconds. @default 10_000 */
  timeoutMs?: number;
  /**
   * Decides which `alerts.webhookUrl` values `create` and `update` accept (others are
   * `invalid_argument`). Webhooks are requests your servers make to a URL a key's manager chose,
   * possibly a tenant through the admin API: allow only destinations you expect (say, `https:` on
   * public hosts), not your internal network. @default every http: and https: URL
   */
  allowUrl?: (url: URL) => boolean;
}

/** Options of `keygate()`. */
export interface KeygateOptions {
  /** Where keys live: `new MemoryStore()`, a `RedisStore`, a `SqlStore`, or your own `ApiKeyStore`. */
  store: ApiKeyStore;
  /**
   * Prefix of every key this instance mints and accepts, e.g. `pk_live`: lower-case letters and
   * digits in `_`-separated parts, at most 32 characters. Or one prefix per environment,
   * `{ live: 'pk_live', test: 'pk_test' }`: the instance accepts all of them, `create()` mints with
   * the prefix of the key's `environment`, and `req.apiKey.environment` / `isTestKey` tell the keys
   * apart. @default 'kg'
   */
  prefix?: string | Readonly<Record<string, string>>;
  /**
   * How new secrets are hashed. `bcrypt` is slow on purpose (a stolen table resists brute force);
   * `sha256` (HMAC-SHA-256) is fast, and safe for keygate's 190-bit random secrets, especially with
   * a `pepper`. Existing hashes of either kind keep verifying whatever this says. @default 'bcrypt'
   */
  hashing?: HashingAlgorithm;
  /** bcrypt cost factor (4–15). Each step doubles the time of a cold verification. @default 10 */
  bcryptCost?: number;
  /**
   * Server-side secret for HMAC-SHA-256 hashes, kept outside the database. Changing it makes every
   * sha256 hash written with the old one fail to verify.
   */
  pepper?: string;
  /** The verification cache, or `false` to verify every request against the store. @default { max: 10_000, ttlMs: 30_000 } */
  cache?: CacheOptions | false;
  /** The clock, in epoch milliseconds. Tests inject one to move time without sleeping. @default Date.now */
  now?: () => number;
  /** A store call slower than this refuses the request with 503 `store_unavailable`. @default 1000 */
  storeTimeoutMs?: number;
  /**
   * Worker threads that run bcrypt, so a cold verification (~70 ms of CPU at cost 10) never blocks
   * the event loop. `0` runs bcrypt on the event loop (not recommended). Threads start on first use
   * and stop on `keys.close()`. @default one less than the CPU count, between 1 and 4
   */
  hashThreads?: number;
  /**
   * bcrypt jobs allowed to wait for a thread. One more is refused at once with
   * 503 `verification_busy` instead of queueing without bound under a flood. @default 64
   */
  maxHashQueue?: number;
  /**
   * Budgets of failed bcrypt verifications (an unknown keyPrefix counts as one: it costs a dummy
   * compare). Per keyPrefix and client address, `burst` in a row then `perSecond`; while one is
   * spent, further cold verifications of that pair are refused with 429 `too_many_failed_attempts`
   * without hashing. Attempts from an address (or pair) that failed recently are suspect: they wait
   * behind every other compare and, process-wide, only `processBurst` / `processPerSecond` of them
   * run, so wrong secrets spread over many keyPrefixes cannot starve other customers. Keys that
   * verified before (remembered by digest for 24 h) skip the budgets: nobody else's wrong secrets
   * can lock their holders out. Refusals are answered after `delayMs` (a tarpit), which caps how
   * many requests each attacking connection can send. `false` turns all of it off.
   * @default { burst: 10, perSecond: 1, delayMs: 1000, processPerSecond: 4 × hashThreads (at least 4), processBurst: 2 × processPerSecond }
   */
  failedAttemptLimit?: FailedAttemptLimit | false;
  /**
   * How long a `maxConcurrent` slot lasts when nobody gives it back, in milliseconds. A slot is
   * released when its response ends; only a process that died mid-request (or a request still
   * running after this long) leaves one held, and it stops counting after this. Set it above your
   * slowest request: a request outliving its lease no longer counts, so one more may start.
   * Also used by `keys.verify()` callers that forget `release()`. @default 60_000
   */
  concurrencyLeaseMs?: number;
  /**
   * How uses are counted in a store shared by several processes.
   *
   * - `'exact'` (the default): every admitted request is one atomic consume in the store, so every
   *   process sees every other's uses at once. Each request costs one store round trip.
   * - `'leased'`: a process reserves a batch of a key's uses in one atomic step (counted in the
   *   store at once, against every limit, bucket tokens held), admits from it with no round trip,
   *   and gives back what it did not spend. Never more admissions than the limits allow, in any
   *   process mix; in exchange, a key may be refused early by up to the units other processes hold
   *   (at most `lease.maxUnits`, or `lease.share` of a limit, per process) for at most
   *   `lease.ttlMs`, and a revocation made elsewhere reaches a process within `lease.ttlMs / 2`
   *   (at once when the store notifies changes, as RedisStore does). Keys with `maxConcurrent`
   *   still consume per request. The store must implement `reserve` and `settle` (MemoryStore,
   *   RedisStore and SqlStore do). Every process sharing a store should use the same mode: an
   *   exact consume does not see the tokens other processes hold.
   * @default 'exact'
   */
  consistency?: 'exact' | 'leased';
  /** Sizing and timing of leased mode's reservations (only with `consistency: 'leased'`). */
  lease?: LeaseOptions;
  /**
   * Record every management event (create, update, revoke, rotate, delete, purge) with its actor
   * and changes in an audit trail, read with `keys.auditLog()`. `true` keeps it in the key store,
   * which must implement `appendAudit` and `listAudit`; or pass another store that does.
   * @default false
   */
  audit?: boolean | AuditStore;
  /**
   * Usage analytics: what every request a key authenticated came to (outcome, route, status
   * class, response time), counted in the process and written to the key store in batches (which
   * must implement `addUsage` and `readUsage`); read with `keys.usage()`. @default false
   */
  usage?: boolean | UsageOptions;
  /**
   * The fractions of `maxUses`, the day quota and the month quota at which `quota.threshold` is
   * emitted (a key's `alerts.quotaThreshold` replaces those below 1 for that key). @default [0.8, 1]
   */
  quotaThresholds?: readonly number[];
  /** Send alerts to keys' `alerts.webhookUrl` as signed webhooks. Without it, alerts are events only. */
  webhooks?: WebhookOptions;
}

/** Size of the failed-verification budgets; see {@link KeygateOptions.failedAttemptLimit}. */
export interface FailedAttemptLimit {
  /** Failed bcrypt verifications allowed in a row per keyPrefix and client address. @default 10 */
  burst?: number;
  /** …and per second after that. @default 1 */
  perSecond?: number;
  /** How long a `too_many_failed_attempts` answer is held (a tarpit), in ms. @default 1000 */
  delayMs?: number;
  /**
   * Compares allowed per second, process-wide, for attempts from a client (or keyPrefix and
   * client) that failed recently. They also wait behind every other compare. @default 4 × hashThreads, at least 4
   */
  processPerSecond?: number;
  /** …and in a row. @default 2 × processPerSecond */
  processBurst?: number;
}

/** Leased mode's reservations (`lease: { … }`). */
export interface LeaseOptions {
  /**
   * How long the store holds a reservation, in milliseconds (100 to 60 000, and at least twice
   * `storeTimeoutMs`). This process spends it for half that, and never past the end of the key's
   * shortest quota window. @default 2_000, or twice `storeTimeoutMs` when that is more
   */
  ttlMs?: number;
  /** Most uses one reservation asks for (1 to 1 000 000); sizes adapt to each key's traffic up to it. @default 1_000 */
  maxUnits?: number;
  /**
   * Largest fraction of any one limit of a key (maxUses, each quota, the bucket) one reservation
   * asks for, so one process cannot hold a whole quota (0 < share ≤ 1; at least 1 use). @default 0.1
   */
  share?: number;
}

/** `keygate()` options with defaults applied. */
export interface ResolvedOptions {
  store: ApiKeyStore;
  /** The prefix of a single-prefix instance, or of the first environment. */
  prefix: string;
  /** Every prefix accepted, with its environment (`undefined` for a single-prefix instance). */
  prefixes: ReadonlyMap<string, string | undefined>;
  /** Environment → prefix, or `undefined` for a single-prefix instance. */
  environments: ReadonlyMap<string, string> | undefined;
  hashing: HashingAlgorithm;
  bcryptCost: number;
  pepper: string | undefined;
  cache: CacheOptions | false;
  now: () => number;
  storeTimeoutMs: number;
  hashThreads: number;
  maxHashQueue: number;
  failedAttemptLimit: Required<Pick<FailedAttemptLimit, 'burst' | 'perSecond' | 'delayMs'>> & Pick<FailedAttemptLimit, 'processBurst' | 'processPerSecond'> | false;
  concurrencyLeaseMs: number;
  /** Leased mode's settings, or `undefined` in exact mode. */
  lease: LeaseSettings | undefined;
  audit: AuditStore | undefined;
  usage: Required<UsageOptions> | undefined;
  quotaThresholds: readonly number[];
  webhooks: WebhookOptions | undefined;
}

/** The failure budgets' defaults; the process-wide ones depend on the thread count (see FailureBudget). */
const FAILED_ATTEMPT_DEFAULTS = { burst: 10, perSecond: 1, delayMs: 1000 } as const;

const KEYGATE_OPTIONS = [
  'store', 'prefix', 'hashing', 'bcryptCost', 'pepper', 'cache', 'now', 'storeTimeoutMs', 'hashThreads', 'maxHashQueue', 'failedAttemptLimit',
  'concurrencyLeaseMs', 'audit', 'usage', 'quotaThresholds', 'webhooks', 'consistency', 'lease',
];
const CACHE_OPTIONS = ['max', 'ttlMs'];
const STORE_METHODS = ['insert', 'findById', 'findByKeyPrefix', 'update', 'rotate', 'list', 'consume', 'purge'] as const;

const PREFIX_RULE = 'must match ^[a-z][a-z0-9]*(_[a-z0-9]+)*$ and be at most 32 characters, e.g. "pk_live"';
const ENVIRONMENT_NAME = /^[a-z][a-z0-9_-]{0,31}$/;

/** The `prefix` option: one prefix, or one per environment (each prefix at most once). */
function resolvePrefixes(option: unknown): Pick<ResolvedOptions, 'prefix' | 'prefixes' | 'environments'> {
  if (typeof option === 'string') {
    if (!isValidPrefix(option)) throw invalidArgument('prefix', PREFIX_RULE);
    return { prefix: option, prefixes: new Map([[option, undefined]]), environments: undefined };
  }
  if (option === null || typeof option !== 'object' || Array.isArray(option)) {
    throw invalidArgument('prefix', 'must be a prefix such as "pk_live", or one per environment such as { live: "pk_live", test: "pk_test" }');
  }
  const entries = Object.entries(option as Record<string, unknown>);
  if (entries.length === 0) throw invalidArgument('prefix', 'must name at least one environment');
  const environments = new Map<string, string>();
  const prefixes = new Map<string, string | undefined>();
  for (const [environment, prefix] of entries) {
    if (!ENVIRONMENT_NAME.test(environment)) throw invalidArgument(`prefix.${environment}`, 'is not an environment name: lower-case letters, digits, "_" and "-", at most 32');
    if (!isValidPrefix(prefix)) throw invalidArgument(`prefix.${environment}`, PREFIX_RULE);
    if (prefixes.has(prefix)) throw invalidArgument(`prefix.${environment}`, `repeats the prefix of environment ${JSON.stringify(prefixes.get(prefix))}`);
    environments.set(environment, prefix);
    prefixes.set(prefix, environment);
  }
  return { prefix: (entries[0] as [string, string])[1], prefixes, environments };
}

/** Validates `keygate()` options and applies defaults. */
export function resolveOptions(options: unknown): ResolvedOptions {
  if (typeof options === 'function') throw new TypeError('keygate() takes an options object such as { store: new MemoryStore() }');
  if (options === null || typeof options !== 'object') throw new TypeError('keygate() needs options: { store, prefix?, ... }');
  const input = options as KeygateOptions;
  rejectUnknownOptions(input, KEYGATE_OPTIONS, 'keygate()');

  const store = input.store as unknown;
  if (store === null || typeof store !== 'object') {
    throw new TypeError('keygate(): `store` is required, e.g. { store: new MemoryStore() }');
  }
  for (const method of STORE_METHODS) {
    if (typeof (store as Record<string, unknown>)[method] !== 'function') {
      throw new TypeError(`keygate(): \`store\` does not implement ApiKeyStore (no ${method}() method)`);
    }
  }

  const { prefix, prefixes, environments } = resolvePrefixes(input.prefix ?? 'kg');
  const hashing = input.hashing ?? 'bcrypt';
  if (hashing !== 'bcrypt' && hashing !== 'sha256') throw new TypeError("keygate(): `hashing` must be 'bcrypt' or 'sha256'");
  const bcryptCost = input.bcryptCost === undefined ? 10 : integerOption(input.bcryptCost, 'keygate(): `bcryptCost`', 4, 15);
  if (input.pepper !== undefined && (typeof input.pepper !== 'string' || input.pepper.length === 0)) {
    throw new TypeError('keygate(): `pepper` must be a non-empty string');
  }

  let cache: CacheOptions | false = {};
  if (input.cache === false) cache = false;
  else if (input.cache !== undefined) {
    if (input.cache === null || typeof input.cache !== 'object') throw new TypeError('keygate(): `cache` must be { max?, ttlMs? } or false');
    rejectUnknownOptions(input.cache, CACHE_OPTIONS, 'keygate() cache');
    cache = {};
    if (input.cache.max !== undefined) cache.max = integerOption(input.cache.max, 'keygate(): `cache.max`', 1);
    if (input.cache.ttlMs !== undefined) cache.ttlMs = integerOption(input.cache.ttlMs, 'keygate(): `cache.ttlMs`', 1);
  }
  if (input.now !== undefined && typeof input.now !== 'function') throw new TypeError('keygate(): `now` must be a function returning epoch milliseconds');
  const storeTimeoutMs =
    input.storeTimeoutMs === undefined ? 1000 : integerOption(input.storeTimeoutMs, 'keygate(): `storeTimeoutMs`', 1, 2_147_483_647);

  const hashThreads = input.hashThreads === undefined ? defaultThreads() : integerOption(input.hashThreads, 'keygate(): `hashThreads`', 0, 64);
  const maxHashQueue = input.maxHashQueue === undefined ? 64 : integerOption(input.maxHashQueue, 'keygate(): `maxHashQueue`', 0);
  let failedAttemptLimit: ResolvedOptions['failedAttemptLimit'] = { ...FAILED_ATTEMPT_DEFAULTS };
  if (input.failedAttemptLimit === false) failedAttemptLimit = false;
  else if (input.failedAttemptLimit !== undefined) {
    const limit: unknown = input.failedAttemptLimit;
    if (limit === null || typeof limit !== 'object') {
      throw new TypeError('keygate(): `failedAttemptLimit` must be { burst?, perSecond?, delayMs?, processBurst?, processPerSecond? } or false');
    }
    rejectUnknownOptions(limit, ['burst', 'perSecond', 'delayMs', 'processBurst', 'processPerSecond'], 'keygate() failedAttemptLimit');
    const { burst, perSecond, delayMs, processBurst, processPerSecond } = limit as Record<string, unknown>;
    failedAttemptLimit = {
      burst: burst === undefined ? FAILED_ATTEMPT_DEFAULTS.burst : integerOption(burst, 'keygate(): `failedAttemptLimit.burst`', 1),
      perSecond: perSecond === undefined ? FAILED_ATTEMPT_DEFAULTS.perSecond : integerOption(perSecond, 'keygate(): `failedAttemptLimit.perSecond`', 1),
      delayMs: delayMs === undefined ? FAILED_ATTEMPT_DEFAULTS.delayMs : integerOption(delayMs, 'keygate(): `failedAttemptLimit.delayMs`', 0, 60_000),
    };
    if (processBurst !== undefined) failedAttemptLimit.processBurst = integerOption(processBurst, 'keygate(): `failedAttemptLimit.processBurst`', 1);
    if (processPerSecond !== undefined) {
      failedAttemptLimit.processPerSecond = integerOption(processPerSecond, 'keygate(): `failedAttemptLimit.processPerSecond`', 1);
    }
  }

  // Up to a day: a lease is a safety net for dead processes, not a way to hold a slot for longer.
  const concurrencyLeaseMs =
    input.concurrencyLeaseMs === undefined ? 60_000 : integerOption(input.concurrencyLeaseMs, 'keygate(): `concurrencyLeaseMs`', 1, 86_400_000);

  return {
    ...resolveObservability(input, store as ApiKeyStore),
    lease: resolveLease(input, store as ApiKeyStore, storeTimeoutMs),
    store: store as ApiKeyStore,
    prefix,
    prefixes,
    environments,
    hashing,
    bcryptCost,
    pepper: input.pepper,
    cache,
    now: input.now ?? Date.now,
    storeTimeoutMs,
    hashThreads,
    maxHashQueue,
    failedAttemptLimit,
    concurrencyLeaseMs,
  };
}

/** `consistency` and `lease`: leased mode's settings, or `undefined` for exact mode. */
function resolveLease(input: KeygateOptions, store: ApiKeyStore, storeTimeoutMs: number): LeaseSettings | undefined {
  const consistency: unknown = input.consistency === undefined ? 'exact' : input.consistency;
  if (consistency !== 'exact' && consistency !== 'leased') throw new TypeError("keygate(): `consistency` must be 'exact' or 'leased'");
  if (consistency === 'exact') {
    if (input.lease !== undefined) throw new TypeError("keygate(): `lease` applies only with consistency: 'leased'");
    return undefined;
  }
  if (!implementsAll(store, ['reserve', 'settle'])) {
    throw new TypeError("keygate(): consistency: 'leased' needs a key store that can reserve uses (reserve and settle); MemoryStore, RedisStore and SqlStore can");
  }
  const given: unknown = input.lease === undefined ? {} : input.lease;
  if (given === null || typeof given !== 'object' || Array.isArray(given) || Object.getPrototypeOf(given) !== Object.prototype) {
    throw new TypeError('keygate(): `lease` must be { ttlMs?, maxUnits?, share? }');
  }
  rejectUnknownOptions(given, ['ttlMs', 'maxUnits', 'share'], 'keygate() lease');
  const { ttlMs, maxUnits, share } = given as LeaseOptions;
  if (share !== undefined && (typeof share !== 'number' || !(share > 0 && share <= 1))) throw new TypeError('keygate(): `lease.share` must be a number above 0 and at most 1');
  // A lease is spent for half its hold, counted from the reservation's request: a reservation
  // answered just within storeTimeoutMs must still arrive with time left to spend it.
  const shortest = 2 * storeTimeoutMs;
  const hold = ttlMs === undefined ? Math.max(2_000, shortest) : integerOption(ttlMs, 'keygate(): `lease.ttlMs`', 100, 60_000);
  if (hold < shortest) {
    throw new TypeError(`keygate(): \`lease.ttlMs\` must be at least twice \`storeTimeoutMs\` (${shortest}): a lease is spent for half its hold, and a reservation may take storeTimeoutMs`);
  }
  return {
    ttlMs: hold,
    maxUnits: maxUnits === undefined ? 1_000 : integerOption(maxUnits, 'keygate(): `lease.maxUnits`', 1, 1_000_000),
    share: share ?? 0.1,
  };
}

/** Whether `value` has every one of `methods`. */
function implementsAll(value: unknown, methods: readonly string[]): boolean {
  return value !== null && typeof value === 'object' && methods.every((method) => typeof (value as Record<string, unknown>)[method] === 'function');
}

/** The audit, usage, threshold and webhook options. */
function resolveObservability(input: KeygateOptions, store: ApiKeyStore): Pick<ResolvedOptions, 'audit' | 'usage' | 'quotaThresholds' | 'webhooks'> {
  let audit: AuditStore | undefined;
  if (input.audit === true) {
    if (!implementsAll(store, ['appendAudit', 'listAudit'])) {
      throw new TypeError('keygate(): `audit: true` needs a key store with an audit trail (appendAudit and listAudit); this one has none: pass `audit` a store that has them');
    }
    audit = store as AuditStore;
  } else if (input.audit !== undefined && input.audit !== false) {
    if (!implementsAll(input.audit, ['appendAudit', 'listAudit'])) throw new TypeError('keygate(): `audit` must be true, false, or a store with appendAudit() and listAudit()');
    audit = input.audit;
  }

  let usage: Required<UsageOptions> | undefined;
  if (input.usage !== undefined && input.usage !== false) {
    if (!implementsAll(store, ['addUsage', 'readUsage'])) {
      throw new TypeError('keygate(): `usage` needs a key store that keeps usage (addUsage and readUsage); MemoryStore, RedisStore and SqlStore do');
    }
    const given: unknown = input.usage === true ? {} : input.usage;
    if (given === null || typeof given !== 'object') throw new TypeError('keygate(): `usage` must be true, false or { flushIntervalMs?, maxBufferedCells?, errorRateMinRequests? }');
    rejectUnknownOptions(given, ['flushIntervalMs', 'maxBufferedCells', 'errorRateMinRequests'], 'keygate() usage');
    const { flushIntervalMs, maxBufferedCells, errorRateMinRequests } = given as UsageOptions;
    usage = {
      flushIntervalMs: flushIntervalMs === undefined ? 10_000 : integerOption(flushIntervalMs, 'keygate(): `usage.flushIntervalMs`', 100, 3_600_000),
      maxBufferedCells: maxBufferedCells === undefined ? 10_000 : integerOption(maxBufferedCells, 'keygate(): `usage.maxBufferedCells`', 1, 10_000_000),
      errorRateMinRequests: errorRateMinRequests === undefined ? 20 : integerOption(errorRateMinRequests, 'keygate(): `usage.errorRateMinRequests`', 1),
    };
  }

  let quotaThresholds: readonly number[] = [0.8, 1];
  if (input.quotaThresholds !== undefined) {
    const given: unknown = input.quotaThresholds;
    if (!Array.isArray(given) || given.some((f) => typeof f !== 'number' || !Number.isFinite(f) || f <= 0 || f > 1)) {
      throw new TypeError('keygate(): `quotaThresholds` must be an array of fractions greater than 0 and at most 1, such as [0.8, 1]');
    }
    quotaThresholds = [...new Set(given as number[])].sort((a, b) => a - b);
  }

  let webhooks: WebhookOptions | undefined;
  if (input.webhooks !== undefined) {
    const given: unknown = input.webhooks;
    if (given === null || typeof given !== 'object') throw new TypeError("keygate(): `webhooks` must be { secret: 'whsec_…', maxAttempts?, timeoutMs? }");
    rejectUnknownOptions(given, ['secret', 'maxAttempts', 'timeoutMs', 'allowUrl'], 'keygate() webhooks');
    webhooks = given as WebhookOptions;
    if (webhooks.allowUrl !== undefined && typeof webhooks.allowUrl !== 'function') throw new TypeError('keygate(): `webhooks.allowUrl` must be a function (url: URL) => boolean');
  }
  return { audit, usage, quotaThresholds, webhooks };
}
