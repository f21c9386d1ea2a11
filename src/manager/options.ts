/**
 * Option validation for `keygate()` and `authenticate()`, done once at construction so the hot path
 * stays thin. A wrong type or an unknown option is a programming mistake (`TypeError`, with a
 * "did you mean" for typos); a prefix that breaks the key format is `invalid_argument`.
 */
import type { CacheOptions } from '../cache/verification-cache.js';
import { invalidArgument } from '../errors.js';
import type { ErrorHandler } from '../http/respond.js';
import { isValidPrefix } from '../key/format.js';
import type { HashingAlgorithm } from '../key/hash.js';
import { defaultThreads } from '../key/hash-pool.js';
import type { AuthenticateOptions, ResolvedAuthenticate } from '../middleware/authenticate.js';
import type { ApiKeyStore } from '../stores/store.js';
import { requiredScopes } from './validate.js';

/** Options of `keygate()`. */
export interface KeygateOptions {
  /** Where keys live: `new MemoryStore()`, a `RedisStore`, a `SqlStore`, or your own `ApiKeyStore`. */
  store: ApiKeyStore;
  /**
   * Prefix of every key this instance mints and accepts, e.g. `pk_live`. Lower-case letters and
   * digits in `_`-separated parts, at most 32 characters. @default 'kg'
   */
  prefix?: string;
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

/** `keygate()` options with defaults applied. */
export interface ResolvedOptions {
  store: ApiKeyStore;
  prefix: string;
  hashing: HashingAlgorithm;
  bcryptCost: number;
  pepper: string | undefined;
  cache: CacheOptions | false;
  now: () => number;
  storeTimeoutMs: number;
  hashThreads: number;
  maxHashQueue: number;
  failedAttemptLimit: Required<Pick<FailedAttemptLimit, 'burst' | 'perSecond' | 'delayMs'>> & Pick<FailedAttemptLimit, 'processBurst' | 'processPerSecond'> | false;
}

const KEYGATE_OPTIONS = [
  'store', 'prefix', 'hashing', 'bcryptCost', 'pepper', 'cache', 'now', 'storeTimeoutMs', 'hashThreads', 'maxHashQueue', 'failedAttemptLimit',
];
const CACHE_OPTIONS = ['max', 'ttlMs'];
const AUTHENTICATE_OPTIONS = ['scopes', 'anyScopes', 'bearer', 'header', 'query', 'realm', 'rateLimitHeaders', 'onError', 'passErrors'];
const STORE_METHODS = ['insert', 'findById', 'findByKeyPrefix', 'update', 'rotate', 'list', 'consume'] as const;

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j] as number;
      const cost = a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1;
      row[j] = Math.min(above + 1, (row[j - 1] as number) + 1, diagonal + cost);
      diagonal = above;
    }
  }
  return row[b.length] as number;
}

/** Throws a TypeError naming the first unknown option, with the closest known one. */
export function rejectUnknown(options: object, known: readonly string[], where: string): void {
  for (const name of Object.keys(options)) {
    if (known.includes(name)) continue;
    const closest = known
      .map((candidate) => ({ candidate, d: distance(name, candidate) }))
      .sort((a, b) => a.d - b.d)[0];
    const hint = closest && closest.d <= Math.max(2, Math.floor(name.length / 3)) ? `, did you mean \`${closest.candidate}\`?` : '';
    throw new TypeError(`${where}: unsupported option \`${name}\`${hint}`);
  }
}

function positiveInteger(value: unknown, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new TypeError(`${name} must be an integer from ${min} to ${max}`);
  }
  return value;
}

/** Validates `keygate()` options and applies defaults. */
export function resolveOptions(options: unknown): ResolvedOptions {
  if (typeof options === 'function') throw new TypeError('keygate() takes an options object such as { store: new MemoryStore() }');
  if (options === null || typeof options !== 'object') throw new TypeError('keygate() needs options: { store, prefix?, ... }');
  const input = options as KeygateOptions;
  rejectUnknown(input, KEYGATE_OPTIONS, 'keygate()');

  const store = input.store as unknown;
  if (store === null || typeof store !== 'object') {
    throw new TypeError('keygate(): `store` is required, e.g. { store: new MemoryStore() }');
  }
  for (const method of STORE_METHODS) {
    if (typeof (store as Record<string, unknown>)[method] !== 'function') {
      throw new TypeError(`keygate(): \`store\` does not implement ApiKeyStore (no ${method}() method)`);
    }
  }

  const prefix = input.prefix ?? 'kg';
  if (!isValidPrefix(prefix)) {
    throw invalidArgument('prefix', 'must match ^[a-z][a-z0-9]*(_[a-z0-9]+)*$ and be at most 32 characters, e.g. "pk_live"');
  }
  const hashing = input.hashing ?? 'bcrypt';
  if (hashing !== 'bcrypt' && hashing !== 'sha256') throw new TypeError("keygate(): `hashing` must be 'bcrypt' or 'sha256'");
  const bcryptCost = input.bcryptCost === undefined ? 10 : positiveInteger(input.bcryptCost, 'keygate(): `bcryptCost`', 4, 15);
  if (input.pepper !== undefined && (typeof input.pepper !== 'string' || input.pepper.length === 0)) {
    throw new TypeError('keygate(): `pepper` must be a non-empty string');
  }

  let cache: CacheOptions | false = {};
  if (input.cache === false) cache = false;
  else if (input.cache !== undefined) {
    if (input.cache === null || typeof input.cache !== 'object') throw new TypeError('keygate(): `cache` must be { max?, ttlMs? } or false');
    rejectUnknown(input.cache, CACHE_OPTIONS, 'keygate() cache');
    cache = {};
    if (input.cache.max !== undefined) cache.max = positiveInteger(input.cache.max, 'keygate(): `cache.max`', 1);
    if (input.cache.ttlMs !== undefined) cache.ttlMs = positiveInteger(input.cache.ttlMs, 'keygate(): `cache.ttlMs`', 1);
  }
  if (input.now !== undefined && typeof input.now !== 'function') throw new TypeError('keygate(): `now` must be a function returning epoch milliseconds');
  const storeTimeoutMs =
    input.storeTimeoutMs === undefined ? 1000 : positiveInteger(input.storeTimeoutMs, 'keygate(): `storeTimeoutMs`', 1, 2_147_483_647);

  const hashThreads = input.hashThreads === undefined ? defaultThreads() : positiveInteger(input.hashThreads, 'keygate(): `hashThreads`', 0, 64);
  const maxHashQueue = input.maxHashQueue === undefined ? 64 : positiveInteger(input.maxHashQueue, 'keygate(): `maxHashQueue`', 0);
  let failedAttemptLimit: ResolvedOptions['failedAttemptLimit'] = { burst: 10, perSecond: 1, delayMs: 1000 };
  if (input.failedAttemptLimit === false) failedAttemptLimit = false;
  else if (input.failedAttemptLimit !== undefined) {
    const limit: unknown = input.failedAttemptLimit;
    if (limit === null || typeof limit !== 'object') {
      throw new TypeError('keygate(): `failedAttemptLimit` must be { burst?, perSecond?, delayMs?, processBurst?, processPerSecond? } or false');
    }
    rejectUnknown(limit, ['burst', 'perSecond', 'delayMs', 'processBurst', 'processPerSecond'], 'keygate() failedAttemptLimit');
    const { burst, perSecond, delayMs, processBurst, processPerSecond } = limit as Record<string, unknown>;
    failedAttemptLimit = {
      burst: burst === undefined ? 10 : positiveInteger(burst, 'keygate(): `failedAttemptLimit.burst`', 1),
      perSecond: perSecond === undefined ? 1 : positiveInteger(perSecond, 'keygate(): `failedAttemptLimit.perSecond`', 1),
      delayMs: delayMs === undefined ? 1000 : positiveInteger(delayMs, 'keygate(): `failedAttemptLimit.delayMs`', 0, 60_000),
    };
    if (processBurst !== undefined) failedAttemptLimit.processBurst = positiveInteger(processBurst, 'keygate(): `failedAttemptLimit.processBurst`', 1);
    if (processPerSecond !== undefined) {
      failedAttemptLimit.processPerSecond = positiveInteger(processPerSecond, 'keygate(): `failedAttemptLimit.processPerSecond`', 1);
    }
  }

  return {
    store: store as ApiKeyStore,
    prefix,
    hashing,
    bcryptCost,
    pepper: input.pepper,
    cache,
    now: input.now ?? Date.now,
    storeTimeoutMs,
    hashThreads,
    maxHashQueue,
    failedAttemptLimit,
  };
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Validates `authenticate()` options and applies defaults. */
export function resolveAuthenticate(options: unknown): ResolvedAuthenticate {
  if (options === undefined) options = {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError('authenticate() takes an options object, e.g. authenticate({ scopes: ["leads:read"] })');
  }
  const input = options as AuthenticateOptions;
  rejectUnknown(input, AUTHENTICATE_OPTIONS, 'authenticate()');
  const asTypeError = <T>(build: () => T): T => {
    try {
      return build();
    } catch (error) {
      throw new TypeError(`authenticate(): ${(error as Error).message}`);
    }
  };
  const scopes = input.scopes === undefined ? undefined : asTypeError(() => requiredScopes(input.scopes, 'scopes'));
  const anyScopes = input.anyScopes === undefined ? undefined : asTypeError(() => requiredScopes(input.anyScopes, 'anyScopes'));

  const header = input.header === undefined ? 'x-api-key' : input.header;
  if (header !== false && (typeof header !== 'string' || !HEADER_NAME.test(header))) {
    throw new TypeError('authenticate(): `header` must be a header name or false');
  }
  const query = input.query ?? false;
  if (query !== false && (typeof query !== 'string' || query.length === 0)) {
    throw new TypeError('authenticate(): `query` must be a parameter name or false');
  }
  const bearer = input.bearer ?? true;
  if (typeof bearer !== 'boolean') throw new TypeError('authenticate(): `bearer` must be a boolean');
  if (!bearer && header === false && query === false) throw new TypeError('authenticate(): every credential source is turned off');

  const realm = input.realm ?? 'api';
  if (typeof realm !== 'string' || /[\u0000-\u001f\u007f]/.test(realm)) throw new TypeError('authenticate(): `realm` must be a printable string');
  if (input.onError !== undefined && typeof input.onError !== 'function') throw new TypeError('authenticate(): `onError` must be a function');
  const onError: ErrorHandler | undefined = input.onError;
  const passErrors = input.passErrors ?? false;
  if (typeof passErrors !== 'boolean') throw new TypeError('authenticate(): `passErrors` must be a boolean');
  if (passErrors && onError) throw new TypeError('authenticate(): give either `onError` or `passErrors`, not both');
  const rateLimitHeaders = input.rateLimitHeaders ?? true;
  if (typeof rateLimitHeaders !== 'boolean') throw new TypeError('authenticate(): `rateLimitHeaders` must be a boolean');

  return {
    sources: { bearer, header: header === false ? null : header.toLowerCase(), query: query === false ? null : query },
    scopes: scopes && scopes.length > 0 ? scopes : undefined,
    anyScopes: anyScopes && anyScopes.length > 0 ? anyScopes : undefined,
    style: { realm, rateLimitHeaders, onError, passErrors },
  };
}
