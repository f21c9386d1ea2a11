/**
 * The manager: creates, reads, lists, changes, revokes and rotates keys, verifies them, and hands
 * out the middleware. Every argument is validated before the store is touched; every timestamp
 * comes from the `now` clock; every write drops the key from the verification cache at once.
 */
import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import { type KeygateError, invalidArgument, isKeygateError, notFound, refusalError } from '../errors.js';
import { mintKey } from '../key/generate.js';
import { type HashingOptions, hashSecret } from '../key/hash.js';
import { HashPool } from '../key/hash-pool.js';
import { FailureBudget } from '../verification/failure-budget.js';
import { createAuthenticate } from '../middleware/authenticate.js';
import { type AuthenticateOptions, resolveAuthenticate } from '../middleware/authenticate-options.js';
import type { LimitsSnapshot } from '../policy/limits.js';
import { checkExpiry, isRevokedAt } from '../policy/status.js';
import { decodeStoredRecord } from '../record/decode.js';
import { CREATE_FIELDS, initialValues } from '../record/schema.js';
import type { ApiKeyPatch, ApiKeyStore } from '../stores/store.js';
import type {
  ApiKey,
  ApiKeyPage,
  ApiKeyRecord,
  CreateApiKeyInput,
  CreatedApiKey,
  ListApiKeysInput,
  PurgeApiKeysInput,
  UpdateApiKeyInput,
} from '../types.js';
import { toApiKey } from '../verification/principal.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { withDeadline } from '../verification/timeout.js';
import { type VerifyContext, Verifier } from '../verification/verifier.js';
import { requestOrigin } from '../policy/origin.js';
import { normalizeFingerprint } from '../policy/transport.js';
import { type KeygateOptions, type ResolvedOptions, resolveOptions } from './options.js';
import { type AdminRouterOptions, createAdminRouter } from '../admin/router.js';
import { type OpenApiDocument, adminOpenApi } from '../admin/openapi.js';
import { count, recordId, requireFields, requiredScopes, validateCreate, validateList, validatePurge, validateUpdate } from './validate.js';

/** Options of `keys.rotate()`. */
export interface RotateOptions {
  /** How long the old key keeps working, in milliseconds; 0 revokes it at once. @default 0 */
  gracePeriodMs?: number;
}

/** Options of `keys.verify()`. */
export interface VerifyOptions {
  /** Client address, checked against the key's `allowedIps`. */
  ip?: string;
  /** Every one of these scopes is required. */
  scopes?: string[];
  /** At least one of these scopes is required. */
  anyScopes?: string[];
  /** Count the use and enforce the limits; `false` runs every check before the consume. @default true */
  consume?: boolean;
  /** The request's origin (`https://app.example.com`), checked against the key's `allowedOrigins`. */
  origin?: string;
  /** Whether the request arrived over TLS, for keys with `requireHttps`. @default false */
  secure?: boolean;
  /** SHA-256 fingerprint of the client certificate presented, for keys with `clientCertificateSha256`. */
  clientCertificateSha256?: string;
}

/** The result of `keys.verify()`: never a rejection. */
export type VerifyResult =
  | {
      ok: true;
      apiKey: ApiKey;
      limits: LimitsSnapshot | null;
      /**
       * Present when the key has `maxConcurrent` (and the use was counted): the request holds one
       * of the key's slots until this is called, or until `concurrencyLeaseMs` passes. Call it
       * when the work the key was verified for is done. Idempotent; never rejects.
       */
      release?: () => Promise<void>;
    }
  | { ok: false; error: KeygateError; limits?: LimitsSnapshot };

const MINT_ATTEMPTS = 3;

/** The longest rotation grace period: a year. */
const MAX_GRACE_PERIOD_MS = 365 * 86_400_000;

/**
 * An API-key manager bound to one store and prefix. Create it with {@link keygate}.
 */
export class Keygate {
  // ES private fields: neither util.inspect nor JSON.stringify can reach the store, its hashes or the pepper.
  readonly #options: ResolvedOptions;
  readonly #verifier: Verifier;
  readonly #hashing: HashingOptions;
  readonly #pool: HashPool | undefined;
  #unsubscribe: (() => void) | undefined;

  constructor(options: KeygateOptions) {
    this.#options = resolveOptions(options);
    const { hashThreads, maxHashQueue, failedAttemptLimit } = this.#options;
    this.#pool = hashThreads > 0 ? new HashPool({ threads: hashThreads, maxQueue: maxHashQueue }) : undefined;
    this.#verifier = new Verifier({
      ...this.#options,
      pool: this.#pool,
      failureBudget: failedAttemptLimit ? new FailureBudget(failedAttemptLimit, hashThreads) : undefined,
    });
    this.#hashing = { algorithm: this.#options.hashing, bcryptCost: this.#options.bcryptCost, pepper: this.#options.pepper, pool: this.#pool };
    // Writes made through any keygate instance sharing the store drop the key from this cache too.
    this.#unsubscribe = this.#options.store.subscribe?.((id) => this.#verifier.invalidate(id));
  }

  /** The key prefix this instance mints and accepts (with one prefix per environment: the first environment's). */
  get prefix(): string {
    return this.#options.prefix;
  }

  /** Environment → prefix, when the instance has one prefix per environment; `undefined` otherwise. */
  get environments(): Readonly<Record<string, string>> | undefined {
    const environments = this.#options.environments;
    return environments === undefined ? undefined : Object.freeze(Object.fromEntries(environments));
  }

  /** The store this instance uses. */
  get store(): ApiKeyStore {
    return this.#options.store;
  }

  /**
   * Mints a key. The returned `key` is the only time the raw key exists outside its holder:
   * show it once, never store it.
   *
   * @example
   * ```ts
   * const { key, apiKey } = await keys.create({ name: 'CI', scopes: ['leads:read'], rateLimit: { perSecond: 10 } });
   * ```
   */
  async create(input: CreateApiKeyInput): Promise<CreatedApiKey> {
    const fields = validateCreate(input);
    this.#requireConcurrencySupport(fields.maxConcurrent);
    const prefix = this.#prefixFor(fields.environment, 'environment');
    const now = new Date(this.#options.now());
    if (fields.expiresAt !== null && fields.expiresAt.getTime() <= now.getTime()) {
      throw invalidArgument('expiresAt', 'must be in the future');
    }
    const created = await this.#mint(
      (identity) => ({ ...initialValues(), ...fields, ...identity, revokedAt: fields.status === 'revoked' ? now : null }) as ApiKeyRecord,
      async (record) => {
        await this.#call(() => this.#options.store.insert(record), 'to insert a key');
        return record;
      },
      now,
      prefix,
    );
    return { key: created.key, apiKey: toApiKey(created.stored, now.getTime()) };
  }

  /** The key with this id, or `null`. */
  async get(id: string): Promise<ApiKey | null> {
    const validId = recordId(id);
    const record = await this.#read(validId);
    return record ? toApiKey(record, this.#options.now()) : null;
  }

  /**
   * One page of keys, oldest first, filtered by owner, tenant and status. Pass `nextCursor` back as
   * `cursor` for the next page; it is absent on the last page.
   */
  async list(query: ListApiKeysInput = {}): Promise<ApiKeyPage> {
    const input = validateList(query);
    const { cursor, limit, ...filters } = input;
    const position = cursor === undefined ? undefined : decodeCursor(cursor, 'list()');
    const after = position && { createdAt: position.at, id: position.id };
    const records = (
      await this.#call(() => this.#options.store.list({ ...filters, ...(after ? { after } : {}), limit: limit + 1 }), 'to list keys')
    ).map(decodeStoredRecord);
    const now = this.#options.now();
    const page = records.slice(0, limit);
    const result: ApiKeyPage = { items: page.map((record) => toApiKey(record, now)) };
    const last = page[page.length - 1];
    if (records.length > limit && last) result.nextCursor = encodeCursor(last.createdAt, last.id);
    return result;
  }

  /**
   * Changes a key's settings; `null` clears a nullable field. Setting `status: 'revoked'` revokes
   * it (sets `revokedAt`); a revoked key cannot be made active again.
   */
  async update(id: string, patch: UpdateApiKeyInput): Promise<ApiKey> {
    const validId = recordId(id);
    // One store call, no read first: the store refuses a revived key and stamps a revocation in
    // the same atomic step, so two administrators racing cannot undo each other.
    const changes = validateUpdate(patch);
    this.#requireConcurrencySupport(changes.maxConcurrent);
    return this.#write(validId, { ...changes, updatedAt: new Date(this.#options.now()) });
  }

  /**
   * Revokes a key at once, in this process and every instance sharing the store. Revoking twice is
   * harmless: the key keeps the instant it was first revoked.
   */
  async revoke(id: string): Promise<ApiKey> {
    return this.#write(recordId(id), { status: 'revoked', updatedAt: new Date(this.#options.now()) });
  }

  /**
   * Deletes a key: revokes it (in every process at once, like `revoke`) and marks it `deletedAt`,
   * in one store call. A deleted key is left out of `list()` unless `includeDeleted`, `get()` still
   * shows it, and `purge()` removes it for good. Deleting twice keeps the first `deletedAt`.
   */
  async delete(id: string): Promise<ApiKey> {
    const now = new Date(this.#options.now());
    return this.#write(recordId(id), { status: 'revoked', deletedAt: now, updatedAt: now });
  }

  /**
   * Removes for good every key deleted before `deletedBefore` (with its counters and index
   * entries), and returns how many. Keys not deleted are never touched. Not bounded by
   * `storeTimeoutMs`: it runs until the store has removed them all.
   *
   * @example
   * ```ts
   * // Keep deleted keys 30 days for audits, then let them go.
   * const removed = await keys.purge({ deletedBefore: Date.now() - 30 * 86_400_000 });
   * ```
   */
  async purge(input: PurgeApiKeysInput): Promise<number> {
    const purge = validatePurge(input);
    // Not bounded by storeTimeoutMs: a purge of many keys takes as long as it takes (stores work in
    // batches), and a 503 while it carries on would only invite a second, overlapping purge.
    const removed = await withDeadline(() => this.#options.store.purge(purge), Number.POSITIVE_INFINITY, 'to purge deleted keys');
    // Stores notify their subscribers; a store without subscribe leaves this cache to its TTL.
    if (removed > 0 && !this.#options.store.subscribe) this.#verifier.invalidate(null);
    return removed;
  }

  /**
   * Replaces a key with a new one holding the same settings and the uses the old one has left. The
   * old key keeps working until `now + gracePeriodMs` (0 revokes it at once).
   *
   * @example
   * ```ts
   * const { key } = await keys.rotate(id, { gracePeriodMs: 24 * 3600_000 });
   * ```
   */
  async rotate(id: string, options: RotateOptions = {}): Promise<CreatedApiKey> {
    const validId = recordId(id);
    const input = requireFields(options, 'options', ['gracePeriodMs']);
    const gracePeriodMs = input.gracePeriodMs === undefined ? 0 : count(input.gracePeriodMs, 'gracePeriodMs');
    // Two keys of a lineage live together only for a hand-over, never indefinitely.
    if (gracePeriodMs > MAX_GRACE_PERIOD_MS) throw invalidArgument('gracePeriodMs', `must be at most ${MAX_GRACE_PERIOD_MS} (a year)`);
    const nowMs = this.#options.now();
    const now = new Date(nowMs);
    const old = await this.#read(validId);
    if (!old) throw notFound(validId);
    // A key rotated once (its revokedAt is set, grace or not) is retired: rotating it again would
    // mint another key with its remaining uses. The store refuses it too, atomically.
    if (isRevokedAt(old, nowMs)) throw invalidArgument('id', 'a revoked key cannot be rotated');
    if (old.revokedAt !== null) throw invalidArgument('id', 'this key was already rotated; rotate its replacement instead');
    if (!checkExpiry(old, nowMs).ok) throw invalidArgument('id', 'an expired key cannot be rotated');
    // While the key this one replaced is still in its grace period, a rotation would put a third
    // key of the lineage in service, each holding the uses left: at most two keys live at once.
    const predecessor = old.rotatedFromId === undefined ? null : await this.#read(old.rotatedFromId);
    if (predecessor && !isRevokedAt(predecessor, nowMs) && predecessor.revokedAt !== null) {
      throw invalidArgument('id', `the key this one replaced is in its grace period until ${predecessor.revokedAt.toISOString()}; rotate after that, or revoke it first`);
    }

    const oldRevokedAt = new Date(nowMs + gracePeriodMs);
    // The replacement holds what the caller set on the old key; everything keygate and the store
    // keep (counters, timestamps, revocation) starts afresh.
    const settings = Object.fromEntries(CREATE_FIELDS.filter((field) => old[field] !== undefined).map((field) => [field, old[field]]));
    const rotated = await this.#mint(
      (identity) => ({ ...initialValues(), ...settings, ...identity, rotatedFromId: old.id }) as ApiKeyRecord,
      async (replacement) => {
        const result = await this.#call(
          () =>
            this.#options.store.rotate({
              oldId: validId,
              replacement,
              oldRevokedAt,
              ...(gracePeriodMs === 0 ? { oldStatus: 'revoked' as const } : {}),
              now,
            }),
          'to rotate a key',
        );
        if (!result) throw notFound(validId);
        return decodeStoredRecord(result.replacement);
      },
      now,
      this.#prefixOf(old),
    );
    this.#verifier.invalidate(validId);
    return { key: rotated.key, apiKey: toApiKey(rotated.stored, nowMs) };
  }

  /**
   * Runs the middleware's pipeline on a raw key, consume included unless `consume: false`.
   * Refusals and store failures come back as `{ ok: false, error }`, never as a rejection. It
   * rejects only on a fault that is not an answer about the key: a bug in keygate, a `now` clock
   * that throws, a hashing thread that died.
   *
   * @example
   * ```ts
   * const result = await keys.verify(key, { ip: '203.0.113.7', scopes: ['leads:read'] });
   * if (!result.ok) console.log(result.error.code);
   * ```
   */
  async verify(rawKey: string, options: VerifyOptions = {}): Promise<VerifyResult> {
    let context: VerifyContext;
    try {
      context = this.#verifyContext(options);
    } catch (error) {
      return { ok: false, error: error as KeygateError };
    }
    if (typeof rawKey !== 'string') return { ok: false, error: refusalError('malformed_api_key') };
    const result = await this.#verifier.verify(rawKey, context);
    if (result.ok) {
      return result.release
        ? { ok: true, apiKey: result.apiKey, limits: result.limits, release: result.release }
        : { ok: true, apiKey: result.apiKey, limits: result.limits };
    }
    return result.limits ? { ok: false, error: result.error, limits: result.limits } : { ok: false, error: result.error };
  }

  /**
   * The middleware. Mount it once for every route below it, or per route with `scopes`.
   *
   * @example
   * ```ts
   * app.use(keys.authenticate());
   * app.get('/x', keys.authenticate({ scopes: ['x:read'] }), handler);
   * ```
   */
  authenticate(options?: AuthenticateOptions): RequestHandler {
    const settings = resolveAuthenticate(options);
    const known = this.#options.environments;
    const unknown = known && settings.environments?.find((environment) => !known.has(environment));
    if (known !== undefined && unknown !== undefined) {
      throw new TypeError(`authenticate(): \`environments\` names ${JSON.stringify(unknown)}, which is not one of ${[...known.keys()].join(', ')}`);
    }
    return createAuthenticate(this.#verifier, settings);
  }

  /**
   * The admin HTTP API of this manager: create, list, get, update, rotate, revoke and delete keys
   * over JSON, and `GET /openapi.json`. Guarded by this instance's own `authenticate()`: the
   * calling key needs `scope` (default `keys:admin`), or `authorize` decides. A caller never
   * creates or manages a key more powerful than its own, and a caller whose key has a `tenantId`
   * sees only that tenant's keys (another tenant's key is `404`). Errors are problem+json.
   *
   * @example
   * ```ts
   * app.use('/v1/api-keys', keys.adminRouter());
   * ```
   */
  adminRouter(options?: AdminRouterOptions): RequestHandler {
    return createAdminRouter(this, options);
  }

  /**
   * The OpenAPI 3.1 document of `adminRouter()` (the one it serves at `/openapi.json`), to merge
   * into your own API description. `scope`: the router's, if you gave it another.
   */
  openapi(options: { scope?: string } = {}): OpenApiDocument {
    return adminOpenApi({ scope: options.scope ?? 'keys:admin' });
  }

  /** A secret-free summary for logs: prefix and hashing only. */
  toJSON(): { prefix: string; hashing: string } {
    return { prefix: this.#options.prefix, hashing: this.#options.hashing };
  }

  /** Ends what this instance started (its store subscription, its hashing threads) and empties its cache. Never closes the store's client. */
  async close(): Promise<void> {
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    this.#verifier.cache.clear();
    await this.#pool?.close();
  }

  /** Refuses a `maxConcurrent` the store could not enforce (it holds no leases: no `release`). */
  #requireConcurrencySupport(maxConcurrent: number | null | undefined): void {
    if (maxConcurrent !== null && maxConcurrent !== undefined && typeof this.#options.store.release !== 'function') {
      throw invalidArgument('maxConcurrent', 'cannot be enforced by this key store: it has no release() method to hold concurrency slots');
    }
  }

  #verifyContext(options: VerifyOptions): VerifyContext {
    requireFields(options, 'options', ['ip', 'scopes', 'anyScopes', 'consume', 'origin', 'secure', 'clientCertificateSha256']);
    const context: VerifyContext = {};
    if (options.ip !== undefined) {
      if (typeof options.ip !== 'string') throw invalidArgument('ip', 'must be a string');
      context.ip = options.ip;
    }
    if (options.scopes !== undefined) context.scopes = requiredScopes(options.scopes, 'scopes');
    if (options.anyScopes !== undefined) context.anyScopes = requiredScopes(options.anyScopes, 'anyScopes');
    if (options.consume !== undefined) {
      if (typeof options.consume !== 'boolean') throw invalidArgument('consume', 'must be a boolean');
      context.consume = options.consume;
    }
    if (options.origin !== undefined) {
      if (typeof options.origin !== 'string') throw invalidArgument('origin', 'must be a string such as "https://app.example.com"');
      context.origin = requestOrigin(options.origin, undefined);
    }
    if (options.secure !== undefined) {
      if (typeof options.secure !== 'boolean') throw invalidArgument('secure', 'must be a boolean');
      context.secure = options.secure;
    }
    if (options.clientCertificateSha256 !== undefined) {
      const fingerprint = typeof options.clientCertificateSha256 === 'string' ? normalizeFingerprint(options.clientCertificateSha256) : null;
      if (fingerprint === null) throw invalidArgument('clientCertificateSha256', 'must be a SHA-256 fingerprint: 64 hex digits, optionally colon-separated');
      context.clientCertificate = fingerprint;
    }
    return context;
  }

  async #write(id: string, patch: ApiKeyPatch): Promise<ApiKey> {
    const updated = await this.#call(() => this.#options.store.update(id, patch), 'to update a key');
    this.#verifier.invalidate(id);
    if (!updated) throw notFound(id);
    return toApiKey(decodeStoredRecord(updated), this.#options.now());
  }

  /**
   * The one mint step of `create` and `rotate`: mints a key, hashes its secret, builds the record
   * around that identity and hands it to `store` (an insert or a rotation). A keyPrefix or id
   * collision (astronomically rare) mints another key rather than failing the caller.
   */
  async #mint(
    build: (identity: Pick<ApiKeyRecord, 'id' | 'keyPrefix' | 'keyHash' | 'createdAt' | 'updatedAt'>) => ApiKeyRecord,
    store: (record: ApiKeyRecord) => Promise<ApiKeyRecord>,
    now: Date,
    prefix: string,
  ): Promise<{ key: string; stored: ApiKeyRecord }> {
    for (let attempt = 1; ; attempt++) {
      const minted = mintKey(prefix);
      const keyHash = await hashSecret(minted.secret, this.#hashing);
      const record = build({ id: randomUUID(), keyPrefix: minted.keyPrefix, keyHash, createdAt: now, updatedAt: now });
      try {
        return { key: minted.key, stored: await store(record) };
      } catch (error) {
        if (!(isKeygateError(error) && error.code === 'already_exists') || attempt >= MINT_ATTEMPTS) throw error;
      }
    }
  }

  /**
   * The prefix a key of `environment` is minted with: the one prefix of a single-prefix instance,
   * or the environment's. With one prefix per environment, a key must name one of them.
   */
  #prefixFor(environment: string | undefined, field: string): string {
    const { environments, prefix } = this.#options;
    if (environments === undefined) return prefix;
    const chosen = environment === undefined ? undefined : environments.get(environment);
    if (chosen === undefined) {
      const names = [...environments.keys()].join(', ');
      throw invalidArgument(field === 'id' ? 'id' : 'environment', field === 'id' ? `this key's environment is not one of ${names}` : `must be one of ${names}`);
    }
    return chosen;
  }

  /**
   * The prefix a replacement is minted with: the old key's own, so a rotation never moves a key to
   * another prefix (or environment), whichever instance sharing the store performs it.
   */
  #prefixOf(old: ApiKeyRecord): string {
    const prefix = old.keyPrefix.slice(0, old.keyPrefix.lastIndexOf('_'));
    if (!this.#options.prefixes.has(prefix)) {
      throw invalidArgument('id', `this key's prefix ${prefix} is not one this keygate instance mints; rotate it with an instance that has it`);
    }
    return prefix;
  }

  /** The record with this id, validated, or `null`. */
  async #read(id: string): Promise<ApiKeyRecord | null> {
    const record = await this.#call(() => this.#options.store.findById(id), 'to read a key');
    return record === null ? null : decodeStoredRecord(record);
  }

  #call<T>(operation: () => Promise<T>, what: string): Promise<T> {
    return withDeadline(operation, this.#options.storeTimeoutMs, what);
  }
}

/**
 * Creates a key manager and middleware factory.
 *
 * @example
 * ```ts
 * import express from 'express';
 * import { keygate, MemoryStore } from 'keygate';
 *
 * const keys = keygate({ store: new MemoryStore(), prefix: 'pk_live' });
 * const app = express();
 * app.use(keys.authenticate());
 * ```
 */
export function keygate(options: KeygateOptions): Keygate {
  return new Keygate(options);
}
