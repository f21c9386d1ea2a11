/**
 * The SQLite dialect, on a `better-sqlite3` Database. better-sqlite3 is synchronous, so a
 * read-decide-write inside `db.transaction(…).immediate()` is atomic twice over: no other
 * JavaScript runs in this process meanwhile, and `BEGIN IMMEDIATE` takes the database's write lock
 * first, so other processes on the same file wait (up to the connection's busy timeout) instead of
 * interleaving. The consume's checks are `lifecycleRefusal` and `decideConsume` themselves, after
 * the deadline, read with `Date.now()` once the transaction holds the write lock; leased mode's
 * reservations and settlements are `decideReservation` and `decideSettlement` the same way
 * (`reservations.ts`).
 */
import { type CounterState, countingInstant, decideConsume, leasesAfter, liveLeases } from '../../policy/limits.js';
import { invalidRecord, ownValue } from '../../record/decode.js';
import { lifecycleRefusal } from '../../policy/status.js';
import type { ApiKeyRecord } from '../../types.js';
import type {
  ApiKeyPatch,
  ConsumeOutcome,
  ConsumeRequest,
  ReserveOutcome,
  ReserveRequest,
  Settlement,
  StoreListQuery,
  StorePurge,
  StoreRotation,
} from '../store.js';
import { isRetired, replacementFor, retiredKeyCannotRotate, revokedAtAfterUpdate, revokedKeyCannotChangeStatus } from '../toolkit.js';
import type { SqliteDatabase, SqliteStatement, SqliteTransaction } from './clients.js';
import { COLUMN_LIST, COUNTER_COLUMNS, COUNTER_LIST, DELETED_AT_COLUMN, HOLDS_COLUMN, LEASES_COLUMN, PATCHABLE_COLUMNS, RECORD_COLUMNS } from './columns.js';
import { PURGE_BATCH_SIZE, type SqlEngine } from './dialect.js';
import { migrateSqlite } from './migrate.js';
import { parameterOf, recordParameters } from './parameters.js';
import type { AuditEntry, StoreAuditQuery } from '../../audit/entry.js';
import type { AlertClaim } from '../../alerts/claim.js';
import type { StoreUsageQuery, UsageBatch, UsageCell } from '../../usage/cells.js';
import { alreadyExists } from '../toolkit.js';
import { type CompanionNames, USAGE_COUNT_COLUMNS, companionNames } from './companions.js';
import {
  AUDIT_TEXT_FILTERS,
  type CheckedBatch,
  type CheckedClaim,
  type UsageRowValues,
  auditEntryFromRow,
  auditFilters,
  auditRowValues,
  checkedBatch,
  checkedClaim,
  usageCellFromRow,
  usageRange,
} from './observability.js';
import { type HoldsWrite, type LockedRow, reservationOnRow, settlementOnRow } from './reservations.js';
import { type Row, recordFromRow } from './row.js';
import type { TableName } from './table-name.js';
import { insertingOnce } from './unique-violation.js';

/** At most this many cells per upsert statement: 128 × 11 parameters, far below SQLite's limit. */
const USAGE_CHUNK = 128;

/** How many forgotten batch ids (or lapsed alert claims) one call deletes at most (as on PostgreSQL). */
const CLEANUP_LIMIT = 100;

/** The usage row's columns, in the order the upsert binds each cell's values. */
const USAGE_COLUMNS = ['key_id', 'day', 'route', 'outcome', ...USAGE_COUNT_COLUMNS, 'max_response_micros'].map((name) => `"${name}"`);

/**
 * The sizes of the upsert statements a batch of `count` cells is written with: whole chunks of
 * {@link USAGE_CHUNK}, then the rest as a sum of powers of two, so that at most eight statement
 * shapes are ever prepared (a statement per size up to the chunk would be 128).
 */
export function usageChunkSizes(count: number): number[] {
  const sizes: number[] = Array.from({ length: Math.floor(count / USAGE_CHUNK) }, () => USAGE_CHUNK);
  for (let size = USAGE_CHUNK / 2; size >= 1; size /= 2) if (count % USAGE_CHUNK & size) sizes.push(size);
  return sizes;
}

/** `"day" = ?, "day_count" = ?, …`: the counters an admitted consume writes, in `COUNTER_COLUMNS` order. */
const COUNTER_ASSIGNMENTS = COUNTER_COLUMNS.map((counter) => `"${counter.name}" = ?`).join(', ');

/** A row's lifecycle columns, as `lifecycleRefusal` and `isRetired` take them. */
interface StoredLifecycle {
  status: string;
  revoked_at: number | null;
}

/** {@link SqlEngine} for SQLite. */
export class SqliteEngine implements SqlEngine {
  readonly #db: SqliteDatabase;
  readonly #table: TableName;
  readonly #statements = new Map<string, SqliteStatement>();
  readonly #consume: SqliteTransaction<[string, ConsumeRequest], ConsumeOutcome | null>;
  // The write transactions return rows, decoded once committed: a row edited by hand into
  // something undecodable must not roll back a write (a revocation) that the database took.
  readonly #rotate: SqliteTransaction<[StoreRotation], { old: Row; replacement: Row } | null>;
  readonly #statusUpdate: SqliteTransaction<[string, ApiKeyPatch], Row | undefined>;
  readonly #release: SqliteTransaction<[string, string], void>;
  readonly #reserve: SqliteTransaction<[string, ReserveRequest], ReserveOutcome | null>;
  readonly #settle: SqliteTransaction<[string, Settlement], void>;
  readonly #purgeBatch: SqliteTransaction<[number, number], string[]>;
  readonly #addUsage: SqliteTransaction<[CheckedBatch], void>;
  readonly #claimAlert: SqliteTransaction<[CheckedClaim], boolean>;
  readonly #companions: CompanionNames;

  constructor(db: SqliteDatabase, table: TableName) {
    this.#db = db;
    this.#table = table;
    this.#companions = companionNames(table);
    this.#purgeBatch = db.transaction((before: number, batchSize: number) => this.#purgeBatchNow(before, batchSize));
    this.#addUsage = db.transaction((batch: CheckedBatch) => this.#addUsageNow(batch));
    this.#claimAlert = db.transaction((claim: CheckedClaim) => this.#claimAlertNow(claim));
    this.#consume = db.transaction((id: string, request: ConsumeRequest) => this.#consumeNow(id, request));
    this.#rotate = db.transaction((rotation: StoreRotation) => this.#rotateNow(rotation));
    this.#statusUpdate = db.transaction((id: string, patch: ApiKeyPatch) => this.#statusUpdateNow(id, patch));
    this.#release = db.transaction((id: string, lease: string) => this.#releaseNow(id, lease));
    this.#reserve = db.transaction((id: string, request: ReserveRequest) => this.#reserveNow(id, request));
    this.#settle = db.transaction((id: string, settlement: Settlement) => this.#settleNow(id, settlement));
  }

  /**
   * A prepared statement, cached (statements are prepared on first use, once the table exists).
   * 64-bit integers always come back as numbers, even on a database set to `defaultSafeIntegers()`.
   */
  #statement(sql: string): SqliteStatement {
    let statement = this.#statements.get(sql);
    if (!statement) {
      statement = this.#db.prepare(sql).safeIntegers(false);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  #row(column: 'id' | 'key_prefix', value: string): Row | undefined {
    return this.#statement(`SELECT ${COLUMN_LIST} FROM ${this.#table.qualified} WHERE "${column}" = ?`).get(value) as Row | undefined;
  }

  #find(column: 'id' | 'key_prefix', value: string): ApiKeyRecord | null {
    const row = this.#row(column, value);
    return row ? recordFromRow(row) : null;
  }

  #insertNow(record: ApiKeyRecord): void {
    const placeholders = RECORD_COLUMNS.map(() => '?').join(', ');
    this.#statement(`INSERT INTO ${this.#table.qualified} (${COLUMN_LIST}) VALUES (${placeholders})`).run(...recordParameters('sqlite', record));
  }

  /** See `migrateSqlite`: one immediate transaction, adding the columns the table lacks. */
  async migrate(): Promise<void> {
    migrateSqlite(this.#db, this.#table);
  }

  async insert(record: ApiKeyRecord): Promise<void> {
    await insertingOnce(record, () => this.#insertNow(record));
  }

  async findById(id: string): Promise<ApiKeyRecord | null> {
    return this.#find('id', id);
  }

  async findByKeyPrefix(keyPrefix: string): Promise<ApiKeyRecord | null> {
    return this.#find('key_prefix', keyPrefix);
  }

  /**
   * One statement; a patch with a `status` runs in an immediate transaction that reads the stored
   * lifecycle first, to refuse reviving a revoked key and to stamp a revocation. A key is deleted
   * once: `deleted_at` is assigned `coalesce("deleted_at", ?)` in the UPDATE itself (the toolkit's
   * `deletedAtAfterUpdate`), so a stored instant stays.
   */
  async update(id: string, patch: ApiKeyPatch): Promise<ApiKeyRecord | null> {
    // Own properties only: an inherited `status` (a polluted Object.prototype) is no change.
    const row = ownValue(patch, 'status') !== undefined ? this.#statusUpdate.immediate(id, patch) : this.#updateNow(id, patch);
    return row ? recordFromRow(row) : null;
  }

  #lifecycleOf(id: string): StoredLifecycle | undefined {
    return this.#statement(`SELECT "status", "revoked_at" FROM ${this.#table.qualified} WHERE "id" = ?`).get(id) as StoredLifecycle | undefined;
  }

  #statusUpdateNow(id: string, patch: ApiKeyPatch): Row | undefined {
    const stored = this.#lifecycleOf(id);
    if (!stored) return undefined;
    if (ownValue(patch, 'status') !== 'revoked' && lifecycleRefusal(stored.status, stored.revoked_at, null, patch.updatedAt.getTime()) === 'api_key_revoked') {
      throw revokedKeyCannotChangeStatus();
    }
    const revokedAt = revokedAtAfterUpdate(stored.revoked_at, patch);
    return this.#updateNow(id, revokedAt === undefined ? patch : { ...patch, revokedAt: revokedAt === null ? null : new Date(revokedAt) });
  }

  #updateNow(id: string, patch: ApiKeyPatch): Row | undefined {
    const columns = PATCHABLE_COLUMNS.filter((column) => ownValue(patch, column.field) !== undefined);
    if (columns.length === 0) return this.#row('id', id);
    const assignments = columns.map((column) => `"${column.name}" = ${column === DELETED_AT_COLUMN ? `coalesce("${column.name}", ?)` : '?'}`).join(', ');
    const values = columns.map((column) => parameterOf('sqlite', column, ownValue(patch, column.field)));
    const sql = `UPDATE ${this.#table.qualified} SET ${assignments} WHERE "id" = ? RETURNING ${COLUMN_LIST}`;
    return this.#statement(sql).get(...values, id) as Row | undefined;
  }

  async rotate(rotation: StoreRotation): Promise<{ old: ApiKeyRecord; replacement: ApiKeyRecord } | null> {
    const rows = await insertingOnce(rotation.replacement, () => this.#rotate.immediate(rotation));
    return rows ? { old: recordFromRow(rows.old), replacement: recordFromRow(rows.replacement) } : null;
  }

  /**
   * Inside the immediate transaction: reads the old row as it stands (after every write committed
   * before this transaction took the write lock), refuses a retired one, and inserts the toolkit's
   * `replacementFor(rotation, old)`: the replacement's identity and keygate's own fields with every
   * caller-set field of the old record, so an update made since the caller read the old key (a
   * suspension, narrowed scopes or IPs) reaches the new key.
   */
  #rotateNow(rotation: StoreRotation): { old: Row; replacement: Row } | null {
    const table = this.#table.qualified;
    const stored = this.#row('id', rotation.oldId) as (Row & StoredLifecycle) | undefined;
    if (!stored) return null;
    // Rotating a retired or retiring key again would mint another key with the uses it has left.
    if (isRetired(stored.status, stored.revoked_at, rotation.now.getTime())) throw retiredKeyCannotRotate();
    // A row that cannot be decoded throws invalid_record here, and the transaction changes nothing.
    const replacement = replacementFor(rotation, recordFromRow(stored));
    this.#insertNow(replacement);
    const oldStatus = ownValue(rotation, 'oldStatus') ?? null;
    const old = this.#statement(
      `UPDATE ${table} SET "revoked_at" = ?, "updated_at" = ?, "status" = coalesce(?, "status") WHERE "id" = ? RETURNING ${COLUMN_LIST}`,
    ).get(rotation.oldRevokedAt.getTime(), rotation.now.getTime(), oldStatus, rotation.oldId) as Row | undefined;
    const inserted = this.#row('id', replacement.id);
    if (!old || !inserted) throw new Error('keygate: the rotated records vanished inside their transaction');
    return { old, replacement: inserted };
  }

  async list(query: StoreListQuery): Promise<ApiKeyRecord[]> {
    const conditions: string[] = [];
    const values: unknown[] = [];
    // Own properties only: an inherited `ownerId` (a polluted Object.prototype) is no filter.
    for (const [field, column] of [['ownerId', 'owner_id'], ['tenantId', 'tenant_id'], ['status', 'status']] as const) {
      const value = ownValue(query, field);
      if (value === undefined) continue;
      conditions.push(`"${column}" = ?`);
      values.push(value);
    }
    if (ownValue(query, 'includeDeleted') !== true) conditions.push('"deleted_at" IS NULL');
    const after = ownValue(query, 'after') as StoreListQuery['after'];
    if (after) {
      conditions.push('("created_at", "id") > (?, ?)');
      values.push(after.createdAt.getTime(), after.id);
    }
    const where = conditions.length > 0 ? ` WHERE ${conditions.join(' AND ')}` : '';
    const sql = `SELECT ${COLUMN_LIST} FROM ${this.#table.qualified}${where} ORDER BY "created_at", "id" LIMIT ?`;
    return this.#statement(sql)
      .all(...values, query.limit)
      .map((row) => recordFromRow(row as Row));
  }

  /**
   * Batches of one immediate transaction each: a `DELETE … RETURNING` of the keys, then the usage
   * cells of each removed key (through the usage table's primary key, which leads with `key_id`),
   * so a key goes with all its cells or not at all. The database's write lock is taken for one
   * batch at a time: between batches the event loop and other processes' writers (their consumes)
   * get their turn. The rows are found through the partial index on deleted keys; `deleted_at` is
   * epoch milliseconds, compared with `deletedBefore`'s. `removed` hears each batch's ids once it
   * committed.
   */
  async purge(purge: StorePurge, removed: (ids: readonly string[]) => void, batchSize = PURGE_BATCH_SIZE): Promise<number> {
    const before = purge.deletedBefore.getTime();
    let total = 0;
    for (;;) {
      const ids = this.#purgeBatch.immediate(before, batchSize);
      total += ids.length;
      if (ids.length > 0) removed(ids);
      if (ids.length < batchSize) return total;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  #purgeBatchNow(before: number, batchSize: number): string[] {
    const table = this.#table.qualified;
    const purgeable = '"deleted_at" IS NOT NULL AND "deleted_at" < ?';
    const ids = this.#statement(
      `DELETE FROM ${table} WHERE "id" IN (SELECT "id" FROM ${table} WHERE ${purgeable} ORDER BY "deleted_at" LIMIT ?) AND ${purgeable} RETURNING "id"`,
    )
      .all(before, batchSize, before)
      .map((row) => (row as { id: string }).id);
    const cells = this.#statement(`DELETE FROM ${this.#companions.usage} WHERE "key_id" = ?`);
    for (const id of ids) cells.run(id);
    return ids;
  }

  async consume(id: string, request: ConsumeRequest): Promise<ConsumeOutcome | null> {
    return this.#consume.immediate(id, request);
  }

  /**
   * Inside the immediate transaction: the deadline, `lifecycleRefusal` and `decideConsume`, as
   * MemoryStore runs them. With a concurrency claim, the row's leases are read too (a separate
   * statement, so a consume without a claim never reads or writes them), counted at the counting
   * instant, and written back with the counters, as `leasesAfter`, when admitted.
   */
  #consumeNow(id: string, request: ConsumeRequest): ConsumeOutcome | null {
    const table = this.#table.qualified;
    const claim = request.concurrency;
    const leasesColumn = claim === undefined ? '' : `, "${LEASES_COLUMN.name}"`;
    const row = this.#statement(`SELECT "status", "revoked_at", "expires_at", "use_count", ${COUNTER_LIST}${leasesColumn} FROM ${table} WHERE "id" = ?`).get(id) as
      | ({ status: string; revoked_at: number | null; expires_at: number | null; use_count: number } & Record<string, unknown>)
      | undefined;
    if (!row) return null;
    // Read here, inside BEGIN IMMEDIATE: after any wait for another process's write lock.
    if (request.deadline !== undefined && Date.now() > request.deadline) {
      return { admitted: false, refusal: 'deadline_exceeded', useCount: row.use_count };
    }
    const lifecycle = lifecycleRefusal(row.status, row.revoked_at, row.expires_at, request.now);
    if (lifecycle) return { admitted: false, refusal: lifecycle, useCount: row.use_count };
    // A count edited by hand to a negative or a fraction would let limits pass: fail closed.
    if (!Number.isSafeInteger(row.use_count) || row.use_count < 0) throw invalidRecord(id, 'useCount', 'is not a non-negative integer');
    const state = { useCount: row.use_count } as Record<keyof CounterState, unknown>;
    for (const counter of COUNTER_COLUMNS) state[counter.field] = row[counter.name] ?? null;
    const counters = state as unknown as CounterState;
    if (claim === undefined) {
      const { outcome, next } = decideConsume(counters, request);
      if (next) {
        this.#statement(`UPDATE ${table} SET "use_count" = ?, ${COUNTER_ASSIGNMENTS}, "last_used_at" = ? WHERE "id" = ?`).run(
          next.useCount,
          ...COUNTER_COLUMNS.map((counter) => next[counter.field]),
          new Date(request.now).getTime(),
          id,
        );
      }
      return outcome;
    }
    const leases = storedLeases(id, row[LEASES_COLUMN.name], true);
    const at = countingInstant(counters, request.now);
    const { outcome, next } = decideConsume(counters, request, Object.keys(liveLeases(leases, at)).length);
    if (next) {
      this.#statement(`UPDATE ${table} SET "use_count" = ?, ${COUNTER_ASSIGNMENTS}, "last_used_at" = ?, "${LEASES_COLUMN.name}" = ? WHERE "id" = ?`).run(
        next.useCount,
        ...COUNTER_COLUMNS.map((counter) => next[counter.field]),
        new Date(request.now).getTime(),
        JSON.stringify(leasesAfter(leases, claim, at)),
        id,
      );
    }
    return outcome;
  }

  async reserve(id: string, request: ReserveRequest): Promise<ReserveOutcome | null> {
    return this.#reserve.immediate(id, request);
  }

  /**
   * Inside the immediate transaction, as a consume: the deadline (`Date.now()`, read once the
   * transaction holds the write lock), `lifecycleRefusal`, then `reservationOnRow`
   * (`decideReservation`) on the row's counters and holds; when admitted, the counters, the holds
   * and `last_used_at` written back. A refusal writes nothing.
   */
  #reserveNow(id: string, request: ReserveRequest): ReserveOutcome | null {
    const row = this.#lockedRow(id, '"status", "revoked_at", "expires_at", ') as
      | (LockedRow & { status: string; revoked_at: number | null; expires_at: number | null })
      | undefined;
    if (!row) return null;
    const late = request.deadline !== undefined && Date.now() > request.deadline;
    const lifecycle = lifecycleRefusal(row.status, row.revoked_at, row.expires_at, request.now);
    const { outcome, write } = reservationOnRow(id, row, { late, lifecycle }, request);
    // As a consume writes it: a Date's milliseconds (an INTEGER column of a STRICT table takes no fraction).
    if (write !== null) this.#writeHolds(id, write, new Date(request.now).getTime());
    return outcome;
  }

  async settle(id: string, settlement: Settlement): Promise<void> {
    this.#settle.immediate(id, settlement);
  }

  /** Inside the immediate transaction: `settlementOnRow` (`decideSettlement`), and its result written when the row holds that lease. */
  #settleNow(id: string, settlement: Settlement): void {
    const row = this.#lockedRow(id, '');
    const write = row ? settlementOnRow(id, row, settlement) : null;
    if (write !== null) this.#writeHolds(id, write, null);
  }

  /** The counters and holds of the row (with the columns of `lifecycle` before them), or `undefined` for an unknown id. */
  #lockedRow(id: string, lifecycle: string): LockedRow | undefined {
    return this.#statement(`SELECT ${lifecycle}"use_count", ${COUNTER_LIST}, "${HOLDS_COLUMN.name}" FROM ${this.#table.qualified} WHERE "id" = ?`).get(id) as
      | LockedRow
      | undefined;
  }

  /** Writes a reservation's or a settlement's counters and holds; `last_used_at` too unless `lastUsedAt` is `null`. */
  #writeHolds(id: string, { next, holds }: HoldsWrite, lastUsedAt: number | null): void {
    this.#statement(
      `UPDATE ${this.#table.qualified} SET "use_count" = ?, ${COUNTER_ASSIGNMENTS}, "last_used_at" = coalesce(?, "last_used_at"), "${HOLDS_COLUMN.name}" = ? WHERE "id" = ?`,
    ).run(next.useCount, ...COUNTER_COLUMNS.map((counter) => next[counter.field]), lastUsedAt, holds, id);
  }

  /** Removes the lease in an immediate transaction: read, drop, write back (only when it was there). */
  async release(id: string, lease: string): Promise<void> {
    this.#release.immediate(id, lease);
  }

  /** One `INSERT … ON CONFLICT ("id") DO NOTHING RETURNING`: no row back means the id was taken, and nothing changed. */
  async appendAudit(entry: AuditEntry): Promise<void> {
    const row = auditRowValues(entry, 'sqlite');
    const inserted = this.#statement(
      `INSERT INTO ${this.#companions.audit} ("id", "at", "action", "key_id", "actor_id", "actor_key_prefix", "tenant_id", "environment", "changes") ` +
        'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT ("id") DO NOTHING RETURNING 1 AS "inserted"',
    ).get(row.id, row.at, row.action, row.keyId, row.actorId, row.actorKeyPrefix, row.tenantId, row.environment, row.changes);
    if (inserted === undefined) throw alreadyExists('id', row.id);
  }

  /**
   * One statement per shape of filters (prepared once): each filter column leads an index of the
   * audit table followed by (at, id), read from the keyset position in (at, id) order. SQLite's
   * text comparison is binary (byte order), as `COLLATE "C"` is in PostgreSQL.
   */
  async listAudit(query: StoreAuditQuery): Promise<AuditEntry[]> {
    const filters = auditFilters(query, 'sqlite');
    if (filters.limit === 0) return [];
    const conditions: string[] = [];
    const values: unknown[] = [];
    for (const [field, column] of AUDIT_TEXT_FILTERS) {
      const value = filters[field];
      if (value === undefined) continue;
      conditions.push(`"${column}" = ?`);
      values.push(value);
    }
    if (filters.from !== undefined) {
      conditions.push('"at" >= ?');
      values.push(filters.from);
    }
    if (filters.to !== undefined) {
      conditions.push('"at" < ?');
      values.push(filters.to);
    }
    if (filters.after !== undefined) {
      conditions.push('("at", "id") > (?, ?)');
      values.push(filters.after.at, filters.after.id);
    }
    const where = conditions.length > 0 ? ` WHERE ${conditions.join(' AND ')}` : '';
    const sql =
      `SELECT "id", "at", "action", "key_id", "actor_id", "actor_key_prefix", "tenant_id", "environment", "changes" ` +
      `FROM ${this.#companions.audit}${where} ORDER BY "at", "id" LIMIT ?`;
    return this.#statement(sql)
      .all(...values, filters.limit)
      .map((row) => auditEntryFromRow(row as Row));
  }

  /**
   * One immediate transaction: the batch id recorded (or found: then nothing is added) and every
   * cell of a key the table holds upserted (the others dropped).
   */
  async addUsage(batch: UsageBatch): Promise<void> {
    this.#addUsage.immediate(checkedBatch(batch, 'sqlite'));
  }

  /**
   * Inside the immediate transaction, which holds the database's write lock, so batches from every
   * process sharing the file apply one after another and add up exactly: record the id (an id
   * already there means the batch was applied: add nothing), forget up to {@link CLEANUP_LIMIT}
   * ids applied more than `RETAIN_BATCH_IDS_MS` before `batch.now` (through the index on
   * `applied_at`), then upsert the cells in multi-row statements ({@link usageChunkSizes}), each
   * keeping only the cells of keys the key table holds: the cells of a key never inserted, or
   * purged, are dropped. The write lock makes that check and the upsert one step with respect to a
   * purge (also one immediate transaction): a purge before the batch leaves no record to add to,
   * a purge after it removes what the batch added.
   */
  #addUsageNow(batch: CheckedBatch): void {
    const batches = this.#companions.usageBatches;
    const recorded = this.#statement(`INSERT INTO ${batches} ("id", "applied_at") VALUES (?, ?) ON CONFLICT ("id") DO NOTHING RETURNING 1 AS "recorded"`).get(
      batch.id,
      batch.now,
    );
    this.#statement(
      `DELETE FROM ${batches} WHERE "id" IN (SELECT "id" FROM ${batches} WHERE "applied_at" < ? ORDER BY "applied_at" LIMIT ${CLEANUP_LIMIT})`,
    ).run(batch.forgetBefore);
    if (recorded === undefined) return;
    let offset = 0;
    for (const size of usageChunkSizes(batch.cells.length)) {
      const chunk = batch.cells.slice(offset, offset + size);
      offset += size;
      this.#statement(this.#usageUpsert(size)).run(...chunk.flatMap((cell: UsageRowValues) => [cell.keyId, cell.day, cell.route, cell.outcome, ...cell.counts]));
    }
  }

  /**
   * The upsert of `size` cells, those of keys the key table holds only (through its primary key):
   * counts added to a stored cell, the larger maximum kept. (The `WHERE` also settles SQLite's
   * parsing ambiguity of an upsert from a `SELECT`.)
   */
  #usageUpsert(size: number): string {
    const row = `(${USAGE_COLUMNS.map(() => '?').join(', ')})`;
    const sums = USAGE_COUNT_COLUMNS.map((column) => `"${column}" = "${column}" + excluded."${column}"`);
    return (
      `WITH "c" (${USAGE_COLUMNS.join(', ')}) AS (VALUES ${Array.from({ length: size }, () => row).join(', ')}) ` +
      `INSERT INTO ${this.#companions.usage} (${USAGE_COLUMNS.join(', ')}) ` +
      `SELECT * FROM "c" WHERE EXISTS (SELECT 1 FROM ${this.#table.qualified} AS "k" WHERE "k"."id" = "c"."key_id") ` +
      `ON CONFLICT ("key_id", "day", "route", "outcome") DO UPDATE SET ${sums.join(', ')}, ` +
      '"max_response_micros" = max("max_response_micros", excluded."max_response_micros")'
    );
  }

  /** One statement through the usage table's primary key (`key_id`, then `day`). */
  async readUsage(query: StoreUsageQuery): Promise<UsageCell[]> {
    const range = usageRange(query, 'sqlite');
    if (range === null) return [];
    const counts = [...USAGE_COUNT_COLUMNS, 'max_response_micros'].map((column) => `"${column}"`).join(', ');
    return this.#statement(`SELECT "day", "route", "outcome", ${counts} FROM ${this.#companions.usage} WHERE "key_id" = ? AND "day" BETWEEN ? AND ?`)
      .all(range.keyId, range.fromDay, range.toDay)
      .map((row) => usageCellFromRow(range.keyId, row as Row));
  }

  /** One immediate transaction: see `#claimAlertNow`. */
  async claimAlert(claim: AlertClaim): Promise<boolean> {
    return this.#claimAlert.immediate(checkedClaim(claim, 'sqlite'));
  }

  /**
   * Inside the immediate transaction (claims from every process sharing the file take turns):
   * delete up to {@link CLEANUP_LIMIT} other claims lapsed by the caller's clock, then insert the
   * claim or take over a lapsed one; a live claim fails the upsert's `WHERE` (where the bare
   * column is the stored row's) and no row comes back.
   */
  #claimAlertNow(claim: CheckedClaim): boolean {
    const claims = this.#companions.alertClaims;
    this.#statement(
      `DELETE FROM ${claims} WHERE "name" IN (SELECT "name" FROM ${claims} WHERE "expires_at" <= ? AND "name" <> ? ORDER BY "expires_at" LIMIT ${CLEANUP_LIMIT})`,
    ).run(claim.now, claim.name);
    const claimed = this.#statement(
      `INSERT INTO ${claims} ("name", "expires_at") VALUES (?, ?) ON CONFLICT ("name") DO UPDATE SET "expires_at" = excluded."expires_at" ` +
        'WHERE "expires_at" <= ? RETURNING 1 AS "claimed"',
    ).get(claim.name, claim.expiresAt, claim.now);
    return claimed !== undefined;
  }

  #releaseNow(id: string, lease: string): void {
    const table = this.#table.qualified;
    const column = `"${LEASES_COLUMN.name}"`;
    const row = this.#statement(`SELECT ${column} AS "leases" FROM ${table} WHERE "id" = ?`).get(id) as { leases: unknown } | undefined;
    if (!row) return;
    let leases: Record<string, unknown>;
    try {
      leases = storedLeases(id, row.leases, false);
    } catch {
      return; // not an object (written by hand): the consumes of a claim refuse it; leave it be
    }
    if (!Object.hasOwn(leases, lease)) return;
    delete leases[lease];
    this.#statement(`UPDATE ${table} SET ${column} = ? WHERE "id" = ?`).run(JSON.stringify(leases), id);
  }
}

/**
 * The leases a row holds: its column's JSON text, an object of lease → lapse instant. Anything
 * else (text edited by hand that is not JSON, an array, a number; with `instants`, a lapse instant
 * that is not a number) is refused with `invalid_record`, never read as no lease: the consume
 * fails closed. `release` removes a lease from any object, whatever its instant (as PostgreSQL's
 * `jsonb - lease` does).
 */
function storedLeases(id: string, text: unknown, instants: true): Record<string, number>;
function storedLeases(id: string, text: unknown, instants: false): Record<string, unknown>;
function storedLeases(id: string, text: unknown, instants: boolean): Record<string, unknown> {
  const refuse = (problem: string) => invalidRecord(id, 'concurrencyLeases', `(column ${LEASES_COLUMN.name}) ${problem}`);
  if (typeof text !== 'string') throw refuse('does not hold JSON text');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw refuse('does not hold valid JSON');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw refuse('does not hold a JSON object');
  // JSON.parse keeps a "__proto__" key as an own property: it stays a lease like any other.
  if (instants) for (const until of Object.values(parsed)) if (typeof until !== 'number') throw refuse('holds a lapse instant that is not a number');
  return parsed as Record<string, unknown>;
}
