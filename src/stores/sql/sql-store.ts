/**
 * `SqlStore`: keys in a PostgreSQL or SQLite table the user already runs, with every counter
 * updated atomically in the database. The dialect engines do the SQL; this class validates the
 * options, refuses values the database would not give back exactly, and notifies listeners.
 */
import { invalidArgument, isKeygateError } from '../../errors.js';
import { ownValue } from '../../record/decode.js';
import type { ApiKeyRecord } from '../../types.js';
import type {
  AlertClaim,
  ApiKeyPatch,
  ApiKeyStore,
  AuditEntry,
  ConsumeOutcome,
  ConsumeRequest,
  ReserveOutcome,
  ReserveRequest,
  Settlement,
  StoreAuditQuery,
  StoreListQuery,
  StorePurge,
  StoreRotation,
  StoreUsageQuery,
  UsageBatch,
  UsageCell,
} from '../store.js';
import type { SqlEngine } from './dialect.js';
import { withoutHashes } from './driver-errors.js';
import type { ChangeListeners } from '../toolkit.js';
import { listenersOf } from './listeners.js';
import { type SqlStoreOptions, resolveSqlStoreOptions } from './options.js';
import { PostgresEngine } from './postgres.js';
import { assertReservable } from './reservations.js';
import { SqliteEngine } from './sqlite.js';
import { type SqlDialect, assertStorable } from './values.js';

/**
 * Keeps keys in a SQL table: PostgreSQL through a `pg` Pool, or SQLite through a `better-sqlite3`
 * Database. You own the client (create, configure, close it); the store never closes it.
 *
 * - **Atomic counters.** On PostgreSQL each `consume` is ONE statement that locks the key's row,
 *   applies keygate's limit arithmetic in SQL and writes only if every limit admits, so any number
 *   of app processes sharing the database together admit exactly `maxUses`. On SQLite it is one
 *   `BEGIN IMMEDIATE` transaction, atomic across processes sharing the file.
 * - **Exact round trips.** Dates to the millisecond, metadata as JSON (PostgreSQL `jsonb`), arrays,
 *   `null` vs absent optional fields. Values a database cannot hold exactly (a lone UTF-16
 *   surrogate; in PostgreSQL, U+0000 or an instant before 4714 BC) are refused with
 *   `invalid_argument` instead of being altered.
 * - **Lifecycle in the consume.** Each consume also reads the key's status, `revokedAt` and
 *   `expiresAt` as stored, under the same lock, and refuses a key that is no longer usable
 *   (`api_key_revoked`, `api_key_disabled`, `api_key_expired`) whatever the caller's cache holds:
 *   a revocation made by any process, or by hand in the database, is final at once. It refuses
 *   with `deadline_exceeded` (counting nothing) when it gets to run after the caller's wall-clock
 *   deadline: PostgreSQL compares `clock_timestamp()` read once the row lock is held (so keep the
 *   app's and the database's clocks in sync, e.g. with NTP); SQLite `Date.now()` inside the transaction.
 * - **Concurrency leases** (`maxConcurrent`). A consume with a concurrency claim counts the key's
 *   live leases, refuses `concurrency_limited` at the limit, and records its lease in the same
 *   atomic step as the counters: the leases are a column of the key's row (`concurrency_leases`,
 *   lease → lapse instant), read and written under the row's lock, so processes sharing the
 *   database together never hold more than `maxConcurrent` live leases. `release` removes one. A
 *   consume without a claim never reads or writes the column.
 * - **Leased mode** (`keygate({ consistency: 'leased' })`; the store capability `leases`).
 *   `reserve` counts a batch of a key's uses against every limit at once and keeps it as a hold;
 *   `settle` gives back what was not spent. The holds are a column of the key's row
 *   (`lease_holds`, lease → { until, units, tokens, at }), read and written with the counters under
 *   the row's lock, and the decision is `decideReservation` / `decideSettlement` of
 *   `policy/reservation` itself. Reservations are rare (one per lease), so each is a short
 *   transaction rather than one statement: on PostgreSQL, on a Pool, `BEGIN`, the row locked
 *   `FOR UPDATE` (the deadline checked against `clock_timestamp()` once the lock is held, the
 *   lifecycle, counters and holds read), the decision in TypeScript, the counters and holds
 *   written, `COMMIT`; any failure rolls it all back. On a single `Client` or `PoolClient`, where a
 *   transaction would take in every other statement sent on that connection meanwhile, the write
 *   is instead guarded by the row version the read saw and the step runs again when another writer
 *   came between. On SQLite, one `BEGIN IMMEDIATE` transaction, as a consume. A refusal writes
 *   nothing; neither changes `updatedAt` nor notifies listeners. A consume counts on the same
 *   counters but never reads the holds (as `decideConsume` does not): its bucket refills to the
 *   full capacity.
 * - **A revoked key stays revoked.** `update` refuses to change a revoked key's status, and
 *   `rotate` a key already revoked or rotated, with `invalid_argument`, atomically with the write.
 * - **Soft delete and purge.** A key is deleted once: `update` keeps a stored `deletedAt`
 *   (`coalesce` in the UPDATE itself). `list` leaves deleted keys out unless `includeDeleted`.
 *   `purge` deletes the rows deleted before its instant, through a partial index on `deleted_at`,
 *   in batches of 1000 rows, each its own transaction, so a huge purge never
 *   holds its locks (SQLite: the database's write lock) for long; a row goes with its counters,
 *   concurrency leases and holds, which live in it, and with its usage cells, deleted in the same
 *   transaction.
 * - **Audit trail, usage analytics, alert claims** (the optional store capabilities `audit`,
 *   `usage` and `alerts`) live in tables named from the key table, which `migrate()` creates:
 *   `<table>_audit` (indexed for every `listAudit` filter in (at, id) order), `<table>_usage` (one
 *   row per key, UTC day, route and outcome, added to by an upsert), `<table>_usage_batches` (the
 *   batch ids applied, so a retried flush counts once) and `<table>_alert_claims`. Every instant
 *   they store is the caller's (`batch.now`, `claim.now`), never the database's clock.
 * - **Faults.** Every driver error rejects; keygate answers 503 `store_unavailable` and never
 *   admits. Key hashes are removed from a driver error's text (PostgreSQL quotes a failing row in
 *   `detail`) before it leaves the store. keygate bounds each call by `storeTimeoutMs`, but give
 *   the pool a `statement_timeout` too, so an abandoned query does not hold a connection. A `pg`
 *   Pool reconnects by itself once the database is back.
 * - **Cache invalidation.** `subscribe` tells listeners in this process (every `SqlStore` on the
 *   same client and table) at once. Other processes are not notified: a change made elsewhere
 *   reaches their verification caches when the entry expires (`cache.ttlMs`, 30 s by default).
 *   A revocation, suspension or expiry does not wait for that: every counted request's consume
 *   reads the row and refuses it. Other changes (scopes, allowed IPs, limits), and checks made
 *   with `consume: false`, follow the cache; lower its TTL when they must reach every process sooner.
 *
 * Run `await store.migrate()` at start (idempotent), or apply `sqlSchema()` with your migration tool.
 *
 * @example
 * ```ts
 * import { Pool } from 'pg';
 * import { keygate } from 'keygate';
 * import { SqlStore } from 'keygate/sql';
 *
 * const pool = new Pool({ connectionString: process.env.DATABASE_URL, statement_timeout: 2_000 });
 * pool.on('error', (err) => console.error('idle PostgreSQL client failed', err));
 * const store = new SqlStore({ dialect: 'postgres', client: pool });
 * await store.migrate();
 * const keys = keygate({ store, prefix: 'pk_live' });
 * ```
 *
 * @example
 * ```ts
 * import Database from 'better-sqlite3';
 * const db = new Database('keys.db');
 * db.pragma('journal_mode = WAL');
 * const store = new SqlStore({ dialect: 'sqlite', client: db });
 * await store.migrate();
 * ```
 */
export class SqlStore implements ApiKeyStore {
  /** The dialect this store speaks. */
  readonly dialect: SqlDialect;
  /** The table name, as given (or the default `keygate_api_keys`). */
  readonly table: string;
  // ES private fields: neither util.inspect nor JSON.stringify reaches the client or the records.
  readonly #engine: SqlEngine;
  readonly #listeners: ChangeListeners;

  constructor(options: SqlStoreOptions) {
    const resolved = resolveSqlStoreOptions(options);
    this.dialect = resolved.dialect;
    this.table = resolved.table.text;
    this.#engine =
      resolved.dialect === 'postgres' ? new PostgresEngine(resolved.client, resolved.table) : new SqliteEngine(resolved.client, resolved.table);
    this.#listeners = listenersOf(resolved.client, resolved.table.text);
  }

  /**
   * Creates the table and its indexes when they do not exist: the unique index on `key_prefix`,
   * `(created_at, id)`, `(owner_id, …)`, `(tenant_id, …)`, `(status, …)` for `list`, and
   * `(deleted_at)` over the deleted keys only (a partial index) for `purge`; adds
   * to a table made by an earlier keygate the columns introduced since (record fields', and the
   * store's own: quota windows, concurrency leases, the holds of leased mode), with their initial
   * values in existing rows; and creates the tables named from it (`<table>_audit`,
   * `<table>_usage`, `<table>_usage_batches`, `<table>_alert_claims`) and their indexes. Idempotent, and safe to run from several processes at
   * once (PostgreSQL: under an advisory lock, in one transaction; SQLite: in one `BEGIN IMMEDIATE`
   * transaction, which also reads the table's columns). It runs the statements `sqlSchema()`
   * returns (on SQLite, its commented `ADD COLUMN`s only for the columns the table lacks).
   */
  migrate(): Promise<void> {
    return this.#engine.migrate();
  }

  /**
   * Inserts a record. Rejects with `already_exists` when its id or keyPrefix is taken, and with
   * `invalid_argument` when a value could not be stored exactly; writes nothing in either case.
   */
  async insert(record: ApiKeyRecord): Promise<void> {
    assertStorable(record, this.dialect);
    await withoutHashes(() => this.#engine.insert(record), ownHashes(record));
  }

  /** The record with this id, or `null`. */
  async findById(id: string): Promise<ApiKeyRecord | null> {
    if (!this.#canHold(id)) return null;
    return withoutHashes(() => this.#engine.findById(id));
  }

  /** The record with this keyPrefix (exact, case-sensitive, through the unique index), or `null`. */
  async findByKeyPrefix(keyPrefix: string): Promise<ApiKeyRecord | null> {
    if (!this.#canHold(keyPrefix)) return null;
    return withoutHashes(() => this.#engine.findByKeyPrefix(keyPrefix));
  }

  /**
   * Applies the patch and returns the updated record (`null` for an unknown id); notifies
   * listeners. With the write, atomically (PostgreSQL: one statement; SQLite: one immediate
   * transaction): a patch setting `status` to anything but `revoked` is refused with
   * `invalid_argument` (field `status`), changing nothing, when the stored key is revoked; a patch
   * setting `revoked` stamps `revokedAt` with the earlier of the stored one and `patch.updatedAt`;
   * a patch setting `deletedAt` leaves a stored one as it is (a key is deleted once).
   */
  async update(id: string, patch: ApiKeyPatch): Promise<ApiKeyRecord | null> {
    if (!this.#canHold(id)) return null;
    assertStorable(patch, this.dialect);
    const updated = await this.#writing(id, () => this.#engine.update(id, patch));
    if (updated) this.#listeners.notify(id);
    return updated;
  }

  /**
   * Inserts the replacement and retires the old record atomically: one statement on PostgreSQL,
   * one immediate transaction on SQLite. Notifies listeners. The replacement keeps its identity
   * and keygate's own fields, and takes every caller-set field (name, status, scopes, allowedIps,
   * limits, expiry, metadata, …) from the old row as stored at that moment, with `maxUses` the uses
   * the old key has left: an update made after the caller read the old key reaches the new one.
   * Refuses with `invalid_argument` (field `id`), changing nothing, when the old key is already
   * revoked or rotated (`revokedAt` set).
   */
  async rotate(rotation: StoreRotation): Promise<{ old: ApiKeyRecord; replacement: ApiKeyRecord } | null> {
    if (!this.#canHold(rotation.oldId)) return null;
    assertStorable(
      { replacement: rotation.replacement, oldRevokedAt: rotation.oldRevokedAt, now: rotation.now },
      this.dialect,
    );
    const rotated = await this.#writing(rotation.oldId, () => this.#engine.rotate(rotation), ownHashes(rotation.replacement));
    if (rotated) this.#listeners.notify(rotation.oldId);
    return rotated;
  }

  /**
   * Records matching the filters after the keyset position, ordered by (createdAt, id), at most
   * `limit`; deleted keys (`deletedAt` set) only with `includeDeleted`.
   */
  async list(query: StoreListQuery): Promise<ApiKeyRecord[]> {
    assertStorable(query, this.dialect);
    return withoutHashes(() => this.#engine.list(query));
  }

  /**
   * Deletes every row whose `deletedAt` is set and before `purge.deletedBefore` (a key deleted at
   * that very instant stays), and returns how many. Batches of at most 1000 rows, each one transaction
   * (PostgreSQL: the rows locked in (`deleted_at`, `id`) order, then a `DELETE … RETURNING` of
   * them, two statements sent at once and run as one transaction; SQLite: one `DELETE … RETURNING`
   * in an immediate transaction), each atomic: a row goes with its index entries, counters,
   * leases and holds, and all its usage cells (every day) in the same transaction, and
   * a consume of a purged key finds no row (`null`: an unknown key). Listeners hear each removed
   * id once its batch committed. When a batch fails in a way that may have come after it took
   * effect, listeners are told `null` (anything may have changed) and the call rejects; the
   * batches before it stay removed, and purging again removes the rest.
   */
  async purge(purge: StorePurge): Promise<number> {
    const deletedBefore = ownValue(purge, 'deletedBefore');
    if (Object.prototype.toString.call(deletedBefore) !== '[object Date]') throw invalidArgument('deletedBefore', 'must be a Date');
    assertStorable({ deletedBefore }, this.dialect);
    const bound = { deletedBefore: deletedBefore as Date };
    try {
      return await withoutHashes(() => this.#engine.purge(bound, (ids) => ids.forEach((id) => this.#listeners.notify(id))));
    } catch (error) {
      this.#listeners.notify(null);
      throw error;
    }
  }

  /**
   * Checks and counts one use atomically, all or nothing: the deadline, the key's lifecycle as
   * stored, then max uses, the quota windows, the token bucket and, with a concurrency claim, the
   * key's live leases, with the caller's clock; an admitted claim's lease is written with the
   * counters. PostgreSQL: one statement; SQLite: one immediate transaction. The leases are a
   * column of the key's row, read and written under its lock, and only for a request with a claim.
   */
  async consume(id: string, request: ConsumeRequest): Promise<ConsumeOutcome | null> {
    if (!this.#canHold(id)) return null;
    return withoutHashes(() => this.#engine.consume(id, request));
  }

  /**
   * Gives back a concurrency slot: removes `lease` from the key's leases, and nothing else (no
   * counter, no `updatedAt`, no notification). Writes the row only when it holds the lease, and
   * resolves for an unknown key or lease. PostgreSQL: one statement; SQLite: one immediate transaction.
   */
  async release(id: string, lease: string): Promise<void> {
    if (!this.#canHold(id) || !this.#canHold(lease)) return;
    await withoutHashes(() => this.#engine.release(id, lease));
  }

  /**
   * Reserves up to `request.units` uses of the key for leased mode, atomically: the deadline, the
   * key's lifecycle as stored, then `decideReservation` (`policy/reservation`) on the counters and
   * holds the row holds; when admitted, the grant counted (use count, every window, the bucket,
   * `lastUsedAt`) and kept as a hold in the same step. A refusal writes nothing. `null` for an
   * unknown id. No `updatedAt`, no notification. PostgreSQL: one transaction that locks the row
   * (on a Pool; on a single connection, a guarded write: see the class notes); SQLite: one
   * immediate transaction. Rejects with `invalid_argument`, writing nothing, for a lease name the
   * database could not give back exactly or a number that is not finite.
   */
  async reserve(id: string, request: ReserveRequest): Promise<ReserveOutcome | null> {
    if (!this.#canHold(id)) return null;
    assertStorable({ lease: request.lease }, this.dialect);
    assertReservable(request);
    return withoutHashes(() => this.#engine.reserve(id, request));
  }

  /**
   * Ends a reservation atomically, as `decideSettlement` decides: its unspent units given back to
   * the use count and the windows still current, its tokens to the bucket while the hold is live,
   * and the hold removed. Without a hold of that lease (settled already, lapsed, or an unknown key)
   * nothing changes, so a retry gives nothing back twice. No `updatedAt`, no notification. The same
   * atomic step as {@link reserve}.
   */
  async settle(id: string, settlement: Settlement): Promise<void> {
    if (!this.#canHold(id) || !this.#canHold(settlement.lease)) return;
    await withoutHashes(() => this.#engine.settle(id, settlement));
  }

  /**
   * Appends an entry to the audit trail, the table `<table>_audit`: one insert, which rejects with
   * `already_exists` (field `id`) and changes nothing when an entry with that id exists, and with
   * `invalid_argument` for a value the table could not give back exactly. `purge` never removes
   * entries; delete old ones yourself when you no longer need them (e.g. `DELETE … WHERE "at" < …`).
   */
  async appendAudit(entry: AuditEntry): Promise<void> {
    await withoutHashes(() => this.#engine.appendAudit(entry));
  }

  /**
   * Audit entries matching every filter of `query` (key, actor id, tenant, environment; `from`
   * inclusive and `to` exclusive on `at`), strictly after the keyset position `after`, ordered by
   * (at, id), at most `limit`: one read of an index that leads with the filter and goes on in
   * (at, id) order.
   */
  async listAudit(query: StoreAuditQuery): Promise<AuditEntry[]> {
    return withoutHashes(() => this.#engine.listAudit(query));
  }

  /**
   * Adds a batch of usage cells to `<table>_usage`, exactly once per batch id, in one transaction
   * (PostgreSQL: one statement; SQLite: one immediate transaction): the batch id is recorded in
   * `<table>_usage_batches` first, and when it was there already (a retried flush) nothing is added.
   * Counts add up and `maxResponseMicros` keeps the larger, under the rows' locks (SQLite: the
   * database's write lock), so batches from any number of processes sum exactly. Each call also
   * forgets a few batch ids applied more than `RETAIN_BATCH_IDS_MS` before `batch.now`. Only the
   * cells of keys the key table holds (deleted ones included) are added, checked in the same
   * transaction: those of a key never inserted, or purged, are dropped (the batch id is recorded
   * all the same). On PostgreSQL the batch locks its keys' rows `FOR KEY SHARE` (which only a
   * purge waits for), so a purge racing it leaves none of a purged key's cells, whichever commits
   * first; `purge` removes a purged key's cells with it.
   */
  async addUsage(batch: UsageBatch): Promise<void> {
    await withoutHashes(() => this.#engine.addUsage(batch));
  }

  /** Every stored usage cell of `query.keyId` with a day in [fromDay, toDay]: one read of the usage table's primary key. */
  async readUsage(query: StoreUsageQuery): Promise<UsageCell[]> {
    return withoutHashes(() => this.#engine.readUsage(query));
  }

  /**
   * Claims the alert `claim.name` until `claim.expiresAt` in `<table>_alert_claims`, atomically
   * across every process sharing the database: `true` when no claim of that name was live at
   * `claim.now` (the caller's clock), `false` otherwise, changing nothing. Of concurrent claims of
   * one name exactly one gets `true`. Each call also deletes a few claims that have lapsed.
   */
  async claimAlert(claim: AlertClaim): Promise<boolean> {
    return withoutHashes(() => this.#engine.claimAlert(claim));
  }

  /**
   * Calls `listener` with the id of every record changed by `update` or `rotate`, or removed by
   * `purge`, through any `SqlStore` of this process sharing this store's client and table. Changes
   * made by other processes are not reported (see the class notes). Returns the unsubscribe function.
   */
  subscribe(listener: (id: string | null) => void): () => void {
    return this.#listeners.add(listener);
  }

  /** A secret-free summary: the dialect and the table. */
  toJSON(): { dialect: SqlDialect; table: string } {
    return { dialect: this.dialect, table: this.table };
  }

  /** False for a lookup key no stored record can have (PostgreSQL text never holds U+0000). */
  #canHold(key: string): boolean {
    return !(this.dialect === 'postgres' && key.includes('\u0000'));
  }

  /**
   * Runs a write of record `id`. When it fails in a way that may have come after the write took
   * effect (a row that could not be decoded once updated, a connection lost around the commit),
   * listeners are told anyway: a needless cache drop costs a lookup, a missed one keeps a stale
   * entry. The store's own refusals (`invalid_argument`, `already_exists`) changed nothing.
   */
  async #writing<T>(id: string, write: () => Promise<T>, hashes: readonly string[] = []): Promise<T> {
    try {
      return await withoutHashes(write, hashes);
    } catch (error) {
      if (!(isKeygateError(error) && (error.code === 'invalid_argument' || error.code === 'already_exists'))) this.#listeners.notify(id);
      throw error;
    }
  }
}

/** The record's own key hash, to redact from driver errors (none when it has no string of its own). */
function ownHashes(record: ApiKeyRecord): string[] {
  const hash = ownValue(record, 'keyHash');
  return typeof hash === 'string' ? [hash] : [];
}
