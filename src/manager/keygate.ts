/**
 * The manager: creates, reads, lists, changes, revokes and rotates keys, verifies them, and hands
 * out the middleware. Every argument is validated before the store is touched; every timestamp
 * comes from the `now` clock; every write drops the key from the verification cache at once.
 */
import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import { type KeygateError, type RefusalCode, invalidArgument, isKeygateError, notFound, refusalError } from '../errors.js';
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
import type { ApiKeyPatch, ApiKeyStore, UsageBatch } from '../stores/store.js';
import type {
  ApiKey,
  ApiKeyAlerts,
  ApiKeyPage,
  ApiKeyRecord,
  CreateApiKeyInput,
  CreatedApiKey,
  ListApiKeysInput,
  PurgeApiKeysInput,
  AuditLogQuery,
  AuditPage,
  UpdateApiKeyInput,
  WriteOptions,
} from '../types.js';
import { EventHub } from '../events/hub.js';
import type { KeygateEventName, KeygateEvents, KeygateListener } from '../events/events.js';
import type { Actor } from '../audit/entry.js';
import { ManagementLog, parseActor } from './management-log.js';
import { Alerts } from '../alerts/alerts.js';
import { WebhookSender } from '../alerts/webhooks.js';
import { RequestObserver } from '../middleware/request-observer.js';
import { UsageRecorder, type UsageStats } from '../usage/recorder.js';
import { Telemetry } from '../metrics/telemetry.js';
import { instrumentStore } from '../metrics/instrumented-store.js';
import { type MetricsRegistry, registerMetrics } from '../metrics/prometheus.js';
import { rejectUnknownOptions } from '../options/checks.js';
import { type UsageReport, usageReport } from '../usage/report.js';
import { toApiKey } from '../verification/principal.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { withDeadline } from '../verification/timeout.js';
import { type VerifyContext, Verifier } from '../verification/verifier.js';
import { requestOrigin } from '../policy/origin.js';
import { normalizeFingerprint } from '../policy/transport.js';
import { type KeygateOptions, type ResolvedOptions, resolveOptions } from './options.js';
import { type AdminRouterOptions, createAdminRouter } from '../admin/router.js';
import { type OpenApiDocument, adminOpenApi } from '../admin/openapi.js';
import { count, instant, recordId, requireFields, requiredScopes, validateAuditQuery, validateCreate, validateList, validatePurge, validateUpdate } from './validate.js';

/** Options of `keys.rotate()`. */
export interface RotateOptions extends WriteOptions {
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
  readonly #store: ApiKeyStore;
  readonly #verifier: Verifier;
  readonly #hashing: HashingOptions;
  readonly #pool: HashPool | undefined;
  readonly #events = new EventHub();
  readonly #log: ManagementLog;
  readonly #alerts: Alerts;
  readonly #usage: UsageRecorder | undefined;
  readonly #observer: RequestObserver;
  readonly #webhooks: WebhookSender | undefined;
  #telemetry: Telemetry | undefined;
  #unsubscribe: (() => void) | undefined;

  constructor(options: KeygateOptions) {
    this.#options = resolveOptions(options);
    this.#store = this.#options.store;
    const { hashThreads, maxHashQueue, failedAttemptLimit } = this.#options;
    this.#pool = hashThreads > 0 ? new HashPool({ threads: hashThreads, maxQueue: maxHashQueue }) : undefined;
    const { store, usage, webhooks, now } = this.#options;
    const call = <T>(operation: () => Promise<T>): Promise<T> => this.#call(operation, 'to record usage or alerts');
    this.#webhooks = webhooks && new WebhookSender({ secret: webhooks.secret, ...(webhooks.maxAttempts === undefined ? {} : { maxAttempts: webhooks.maxAttempts }), ...(webhooks.timeoutMs === undefined ? {} : { timeoutMs: webhooks.timeoutMs }) });
    this.#alerts = new Alerts(this.#events, {
      quotaThresholds: this.#options.quotaThresholds,
      errorRateMinRequests: usage?.errorRateMinRequests ?? 20,
      webhooks: this.#webhooks,
      allowUrl: webhooks?.allowUrl,
      // Through #options.store, read at each call: keys.metrics() may put a timed store there later.
      claimAlert: store.claimAlert ? (claim) => this.#options.store.claimAlert!(claim) : undefined,
      readUsage: usage && store.readUsage ? (query) => this.#options.store.readUsage!(query) : undefined,
      call,
      now,
    });
    const addUsage = store.addUsage ? (batch: UsageBatch) => this.#options.store.addUsage!(batch) : undefined;
    this.#usage =
      usage && addUsage
        ? new UsageRecorder(
            { addUsage },
            { flushIntervalMs: usage.flushIntervalMs, maxBufferedCells: usage.maxBufferedCells, call, now, onFlushed: (batch) => void this.#alerts.afterFlush(batch) },
          )
        : undefined;
    this.#observer = new RequestObserver(this.#events, this.#usage, this.#alerts, now);
    this.#verifier = new Verifier({
      ...this.#options,
      pool: this.#pool,
      failureBudget: failedAttemptLimit ? new FailureBudget(failedAttemptLimit, hashThreads) : undefined,
      afterAdmission: (key, request, outcome) => this.#alerts.afterAdmission(key, request, outcome),
    });
    this.#hashing = { algorithm: this.#options.hashing, bcryptCost: this.#options.bcryptCost, pepper: this.#options.pepper, pool: this.#pool };
    this.#log = new ManagementLog(this.#events, this.#options.audit, this.#options.storeTimeoutMs);
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

  /** The store this instance uses (the one it was given, even while `metrics()` times its calls). */
  get store(): ApiKeyStore {
    return this.#store;
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
  async create(input: CreateApiKeyInput, options: WriteOptions = {}): Promise<CreatedApiKey> {
    const actor = writeActor(options);
    const fields = validateCreate(input);
    this.#checkWebhookUrl(fields.alerts);
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
    const apiKey = toApiKey(created.stored, now.getTime());
    await this.#log.keyChanged('key.created', apiKey, () => toApiKey(created.stored, now.getTime()), actor, now, fields, {});
    return { key: created.key, apiKey };
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
  async update(id: string, patch: UpdateApiKeyInput, options: WriteOptions = {}): Promise<ApiKey> {
    const validId = recordId(id);
    const actor = writeActor(options);
    // One store call, no read first: the store refuses a revived key and stamps a revocation in
    // the same atomic step, so two administrators racing cannot undo each other.
    const changes = validateUpdate(patch);
    this.#requireConcurrencySupport(changes.maxConcurrent);
    this.#checkWebhookUrl(changes.alerts);
    const now = new Date(this.#options.now());
    return this.#write(validId, { ...changes, updatedAt: now }, 'key.updated', actor, changes, { changes: Object.keys(changes) });
  }

  /**
   * Revokes a key at once, in this process and every instance sharing the store. Revoking twice is
   * harmless: the key keeps the instant it was first revoked.
   */
  async revoke(id: string, options: WriteOptions = {}): Promise<ApiKey> {
    const validId = recordId(id);
    const actor = writeActor(options);
    return this.#write(validId, { status: 'revoked', updatedAt: new Date(this.#options.now()) }, 'key.revoked', actor, { status: 'revoked' }, {});
  }

  /**
   * Deletes a key: revokes it (in every process at once, like `revoke`) and marks it `deletedAt`,
   * in one store call. A deleted key is left out of `list()` unless `includeDeleted`, `get()` still
   * shows it, and `purge()` removes it for good. Deleting twice keeps the first `deletedAt`.
   */
  async delete(id: string, options: WriteOptions = {}): Promise<ApiKey> {
    const validId = recordId(id);
    const actor = writeActor(options);
    const now = new Date(this.#options.now());
    return this.#write(validId, { status: 'revoked', deletedAt: now, updatedAt: now }, 'key.deleted', actor, { status: 'revoked', deletedAt: now }, {});
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
    const actor = parseActor(input.actor);
    // Not bounded by storeTimeoutMs: a purge of many keys takes as long as it takes (stores work in
    // batches), and a 503 while it carries on would only invite a second, overlapping purge.
    const removed = await withDeadline(() => this.#options.store.purge(purge), Number.POSITIVE_INFINITY, 'to purge deleted keys');
    // Stores notify their subscribers; a store without subscribe leaves this cache to its TTL.
    if (removed > 0 && !this.#options.store.subscribe) this.#verifier.invalidate(null);
    await this.#log.purged(removed, purge.deletedBefore, actor, new Date(this.#options.now()));
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
    const input = requireFields(options, 'options', ['gracePeriodMs', 'actor']);
    const actor = parseActor(input.actor);
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
    const replacement = toApiKey(rotated.stored, nowMs);
    // The old key as the rotation left it: retired now, or at the end of its grace period.
    const retired: ApiKeyRecord = { ...old, revokedAt: oldRevokedAt, updatedAt: now, ...(gracePeriodMs === 0 ? { status: 'revoked' as const } : {}) };
    await this.#log.keyChanged('key.rotated', toApiKey(retired, nowMs), () => toApiKey(retired, nowMs), actor, now, { replacementId: replacement.id, gracePeriodMs }, {
      replacement: toApiKey(rotated.stored, nowMs),
      gracePeriodMs,
    });
    return { key: rotated.key, apiKey: replacement };
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
    this.#emitVerified(result, context);
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
    return createAuthenticate(this.#verifier, settings, this.#observer);
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
   * into your own API description. `scope`: the router's, if you gave it another; `audit`: whether
   * to describe the audit routes (by default, when this instance keeps an audit trail).
   */
  openapi(options: { scope?: string; audit?: boolean } = {}): OpenApiDocument {
    return adminOpenApi({ scope: options.scope ?? 'keys:admin', audit: options.audit ?? this.auditing });
  }

  /**
   * A key's usage over a range of UTC days: requests, admitted, refused by code, responses by
   * status class, `successRate`, `errorRate` and response times, per day (`groupBy: 'day'`, every
   * day of the range) or per route (`groupBy: 'route'`, busiest first), with the range's total.
   * Counts what has been flushed: call `flushUsage()` first to include this process's latest.
   * `from` and `to` are instants or `YYYY-MM-DD` days (default: the last 30 days up to today), at
   * most 366 days apart. Needs `keygate({ usage })` (a `TypeError` otherwise).
   *
   * @example
   * ```ts
   * const { items, total } = await keys.usage(id, { from: '2026-11-01', to: '2026-11-30' });
   * console.log(total.requests, total.errorRate, total.averageResponseTimeMs);
   * ```
   */
  async usage(id: string, options: { from?: Date | string | number; to?: Date | string | number; groupBy?: 'day' | 'route' } = {}): Promise<UsageReport> {
    const readUsage = this.#options.store.readUsage;
    if (!this.#usage || !readUsage) throw new TypeError('keys.usage(): this keygate instance records no usage; create it with keygate({ usage: true, … })');
    const keyId = recordId(id);
    const input = requireFields(options, 'options', ['from', 'to', 'groupBy']);
    const groupBy = input.groupBy ?? 'day';
    if (groupBy !== 'day' && groupBy !== 'route') throw invalidArgument('groupBy', "must be 'day' or 'route'");
    const DAY = 86_400_000;
    const dayOf = (value: unknown, field: string): number => {
      const at = instant(value, field);
      if (at === null) throw invalidArgument(field, 'must be an instant or a YYYY-MM-DD day');
      return Math.floor(at.getTime() / DAY);
    };
    const toDay = input.to === undefined ? Math.floor(this.#options.now() / DAY) : dayOf(input.to, 'to');
    const fromDay = input.from === undefined ? toDay - 29 : dayOf(input.from, 'from');
    if (fromDay > toDay) throw invalidArgument('from', 'must not be after to');
    if (toDay - fromDay > 365) throw invalidArgument('from', 'must be at most 366 days before to');
    const store = this.#options.store;
    const cells = await this.#call(() => readUsage.call(store, { keyId, fromDay, toDay }), 'to read usage');
    return usageReport(keyId, fromDay, toDay, groupBy, cells);
  }

  /**
   * Looks through every live key (active, not expired, not deleted) for those expiring within
   * `expiringWithinMs` and those older than their `rotationFrequencyDays`, emits `key.expiring` and
   * `key.rotation_due` for each, and returns them. Run it on a schedule (a cron job, a timer in one
   * process): it reads every key, a thousand at a time, and emits again on every run.
   *
   * @example
   * ```ts
   * keys.on('key.expiring', ({ apiKey, expiresAt }) => notifyOwner(apiKey.ownerId, expiresAt));
   * const { expiring, rotationDue } = await keys.scanKeys({ expiringWithinMs: 7 * 86_400_000 });
   * ```
   */
  async scanKeys(options: { expiringWithinMs?: number } = {}): Promise<{ expiring: ApiKey[]; rotationDue: ApiKey[] }> {
    const input = requireFields(options, 'options', ['expiringWithinMs']);
    const horizon = input.expiringWithinMs === undefined ? 7 * 86_400_000 : count(input.expiringWithinMs, 'expiringWithinMs');
    const expiring: ApiKey[] = [];
    const rotationDue: ApiKey[] = [];
    const nowMs = this.#options.now();
    const at = new Date(nowMs);
    let cursor: string | undefined;
    do {
      const page = await this.list({ limit: 1_000, ...(cursor === undefined ? {} : { cursor }) });
      for (const apiKey of page.items) {
        if (!apiKey.isActive) continue;
        const expiresAt = apiKey.expiresAt?.getTime();
        if (expiresAt !== undefined && expiresAt - nowMs <= horizon) {
          expiring.push(apiKey);
          if (this.#events.wants('key.expiring')) {
            this.#events.emit('key.expiring', { apiKey: toApiKey(apiKey, nowMs), expiresAt: new Date(expiresAt), expiresInMs: expiresAt - nowMs, at });
          }
        }
        const days = apiKey.rotationFrequencyDays;
        const dueAt = days === null ? undefined : apiKey.createdAt.getTime() + days * 86_400_000;
        if (dueAt !== undefined && dueAt <= nowMs) {
          rotationDue.push(apiKey);
          if (this.#events.wants('key.rotation_due')) this.#events.emit('key.rotation_due', { apiKey: toApiKey(apiKey, nowMs), dueAt: new Date(dueAt), at });
        }
      }
      cursor = page.nextCursor;
    } while (cursor !== undefined);
    return { expiring, rotationDue };
  }

  /** Writes this process's buffered usage to the store now (also done on an interval and by `close()`). Never rejects: a failed flush is kept and retried. */
  async flushUsage(): Promise<void> {
    await this.#usage?.flush();
    // The error-rate checks the flush started: an alert it raises is out when this resolves.
    await this.#alerts.settled();
  }

  /**
   * Counters of the usage analytics in this process: cells and requests waiting to be written,
   * requests written, requests dropped (buffer full, or the store still failing at `close()`),
   * failed flushes. `undefined` without `keygate({ usage })`.
   */
  usageStats(): UsageStats | undefined {
    return this.#usage?.stats();
  }

  /** Whether this instance keeps an audit trail (`keygate({ audit })`). */
  get auditing(): boolean {
    return this.#log.auditing;
  }

  /**
   * One page of the audit trail, oldest first: every management event (create, update, revoke,
   * rotate, delete, purge) with its actor, time and changes, filtered by key, actor, tenant,
   * environment and time. Pass `nextCursor` back as `cursor` for the next page. Needs
   * `keygate({ audit })` (a `TypeError` otherwise).
   *
   * @example
   * ```ts
   * const { items } = await keys.auditLog({ keyId: id });
   * // [{ action: 'key.created', actor: { id: 'ops@example.com' }, at, changes: { name: 'CI', … } }, …]
   * ```
   */
  async auditLog(query: AuditLogQuery = {}): Promise<AuditPage> {
    const audit = this.#options.audit;
    if (!audit) throw new TypeError('keys.auditLog(): this keygate instance keeps no audit trail; create it with keygate({ audit: true, … })');
    const { cursor, limit, ...filters } = validateAuditQuery(query);
    const after = cursor === undefined ? undefined : decodeCursor(cursor, 'auditLog()');
    const entries = await this.#call(() => audit.listAudit({ ...filters, ...(after ? { after } : {}), limit: limit + 1 }), 'to read the audit trail');
    const items = entries.slice(0, limit);
    const last = items[items.length - 1];
    return entries.length > limit && last ? { items, nextCursor: encodeCursor(last.at, last.id) } : { items };
  }

  /**
   * Listens to one of keygate's events (`key.created`, `request.refused`, `quota.threshold`, …).
   * The listener runs synchronously after the change or decision; an exception it throws, or a
   * promise it returns that rejects or never settles, neither breaks nor delays keygate. Every
   * event is also published on the `node:diagnostics_channel` channel `keygate:<name>`.
   *
   * @example
   * ```ts
   * keys.on('key.revoked', ({ apiKey, actor }) => log.info({ key: apiKey.keyPrefix, by: actor?.id }, 'key revoked'));
   * ```
   */
  on<E extends KeygateEventName>(name: E, listener: KeygateListener<E>): this {
    this.#events.on(name, listener);
    return this;
  }

  /** Stops a listener added with {@link Keygate.on}. */
  off<E extends KeygateEventName>(name: E, listener: KeygateListener<E>): this {
    this.#events.off(name, listener);
    return this;
  }

  /**
   * Registers keygate's metrics on a prom-client `Registry` (prom-client is an optional peer
   * dependency: keygate uses only the registry you pass). From this call on, this instance
   * measures itself: decisions by outcome, verification time cold and warm, cache hits, bcrypt
   * queue depth and wait, store call time and failures by operation, usage and webhook counters.
   * `prefix` names the metrics (default `keygate_`): give each keygate instance sharing a registry
   * its own. Registering on a second registry shares the same numbers.
   *
   * @example
   * ```ts
   * import { Registry } from 'prom-client';
   * const registry = new Registry();
   * keys.metrics(registry);
   * app.get('/metrics', async (_req, res) => res.type(registry.contentType).send(await registry.metrics()));
   * ```
   */
  metrics(registry: MetricsRegistry, options: { prefix?: string } = {}): this {
    if (registry === null || typeof registry !== 'object' || typeof (registry as { registerMetric?: unknown }).registerMetric !== 'function') {
      throw new TypeError('keys.metrics(): pass a prom-client Registry (new Registry(), or prom-client\'s default `register`)');
    }
    rejectUnknownOptions(options, ['prefix'], 'keys.metrics()');
    const prefix = options.prefix ?? 'keygate_';
    if (typeof prefix !== 'string' || !/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(prefix)) throw new TypeError('keys.metrics(): `prefix` must be a Prometheus metric name prefix such as "keygate_"');
    const telemetry = (this.#telemetry ??= this.#startTelemetry());
    registerMetrics(registry, telemetry, {
      hashQueueDepth: () => this.#pool?.queueDepth ?? 0,
      usage: () => this.#usage?.stats(),
      webhooks: () => this.#webhooks && { delivered: this.#webhooks.delivered, dropped: this.#webhooks.dropped, pending: this.#webhooks.pending },
      auditWriteFailures: () => this.#log.failedWrites,
    }, prefix);
    return this;
  }

  /** Turns measuring on: the verifier, the hashing pool and every store call report to one Telemetry. */
  #startTelemetry(): Telemetry {
    const telemetry = new Telemetry();
    const timed = instrumentStore(this.#options.store, telemetry);
    this.#options.store = timed;
    this.#verifier.useStore(timed);
    this.#verifier.telemetry = telemetry;
    if (this.#pool) this.#pool.onWait = (seconds) => telemetry.hashWait.observe(seconds);
    return telemetry;
  }

  /** A secret-free summary for logs: prefix and hashing only. */
  toJSON(): { prefix: string; hashing: string } {
    return { prefix: this.#options.prefix, hashing: this.#options.hashing };
  }

  /** Ends what this instance started (its store subscription, its hashing threads), gives back unspent leased uses, and empties its cache. Never closes the store's client. */
  async close(): Promise<void> {
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    this.#verifier.cache.clear();
    // Leased units not spent go back to the store, for the processes that go on.
    await this.#verifier.close();
    // Usage first: its last flush may raise alerts, which the sender then gets a moment to send.
    await this.#usage?.close();
    await this.#alerts.close();
    await this.#pool?.close();
  }

  /**
   * `request.admitted` / `request.refused` for a `verify()` call: no route, status or duration (no
   * HTTP response is involved), and only when someone listens.
   */
  #emitVerified(result: Awaited<ReturnType<Verifier['verify']>>, context: VerifyContext): void {
    const name = result.ok ? 'request.admitted' : 'request.refused';
    if (!this.#events.wants(name)) return;
    const ip = typeof context.ip === 'string' ? { ip: context.ip } : {};
    const event = { keyId: result.key?.id ?? null, keyPrefix: result.key?.record.keyPrefix ?? null, route: null, ...ip, at: new Date(this.#options.now()) };
    if (result.ok) this.#events.emit('request.admitted', event);
    else this.#events.emit('request.refused', { ...event, code: result.error.code as RefusalCode });
  }

  /** Refuses a webhook URL the application's `webhooks.allowUrl` does not allow. */
  #checkWebhookUrl(alerts: ApiKeyAlerts | null | undefined): void {
    const allowUrl = this.#options.webhooks?.allowUrl;
    const url = alerts?.webhookUrl;
    if (allowUrl === undefined || url === undefined) return;
    if (allowUrl(new URL(url)) !== true) throw invalidArgument('alerts.webhookUrl', 'is not a destination this API sends webhooks to');
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

  /** One store update, then its event and audit entry (`changes` as the caller asked for them). */
  async #write<A extends 'key.updated' | 'key.revoked' | 'key.deleted'>(
    id: string,
    patch: ApiKeyPatch,
    action: A,
    actor: Actor | null,
    changes: Record<string, unknown>,
    event: Omit<KeygateEvents[A], 'apiKey' | 'actor' | 'at'>,
  ): Promise<ApiKey> {
    const updated = await this.#call(() => this.#options.store.update(id, patch), 'to update a key');
    this.#verifier.invalidate(id);
    if (!updated) throw notFound(id);
    const record = decodeStoredRecord(updated);
    const nowMs = this.#options.now();
    const apiKey = toApiKey(record, nowMs);
    await this.#log.keyChanged(action, apiKey, () => toApiKey(record, nowMs), actor, patch.updatedAt, changes, event);
    return apiKey;
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

/** The actor of a write's options, validated before anything is written. */
function writeActor(options: WriteOptions): Actor | null {
  const input = requireFields(options, 'options', ['actor']);
  return parseActor(input.actor);
}
