/**
 * The PostgreSQL dialect: runs the statements of `postgres-sql.ts` through the user's `pg` client
 * and turns rows into records and outcomes. One round trip per operation, except leased mode's
 * `reserve` and `settle`: a short transaction (`postgres-reservations.ts`).
 */
import { invalidRecord, ownValue } from '../../record/decode.js';
import { QUOTA_WINDOWS } from '../../policy/windows.js';
import { lifecycleRefusal } from '../../policy/status.js';
import type { ApiKeyRecord } from '../../types.js';
import type {
  ApiKeyPatch,
  ConsumeOutcome,
  ConsumeRefusal,
  ConsumeRequest,
  ReserveOutcome,
  ReserveRequest,
  Settlement,
  StoreListQuery,
  StorePurge,
  StoreRotation,
} from '../store.js';
import { isLimitRefusal, retiredKeyCannotRotate, revokedKeyCannotChangeStatus } from '../toolkit.js';
import { type PostgresClient, type PostgresQueryResult, poolOf } from './clients.js';
import { COUNTER_COLUMNS, HOLDS_COLUMN, PATCHABLE_COLUMNS } from './columns.js';
import { PURGE_BATCH_SIZE, type SqlEngine } from './dialect.js';
import { migratePostgres } from './migrate.js';
import { parameterOf, recordParameters } from './parameters.js';
import {
  type ListShape,
  type PostgresStatements,
  consumeParameters,
  listStatement,
  postgresStatements,
  purgeStatements,
  rotationParameters,
  updateStatement,
  usedColumn,
} from './postgres-sql.js';
import type { AuditEntry, StoreAuditQuery } from '../../audit/entry.js';
import type { AlertClaim } from '../../alerts/claim.js';
import type { StoreUsageQuery, UsageBatch, UsageCell } from '../../usage/cells.js';
import { alreadyExists } from '../toolkit.js';
import { auditEntryFromRow, auditFilters, auditRowValues, checkedBatch, checkedClaim, usageCellFromRow, usageColumnArrays, usageRange } from './observability.js';
import { type AuditListShape, type ObservabilityStatements, auditListStatement, observabilityStatements } from './postgres-observability.js';
import { type RowVersion, doubleFromHex, lockStatement, writeParameters, writeStatement } from './postgres-reservations.js';
import { type LockedRow, reservationOnRow, settlementOnRow } from './reservations.js';
import { type Row, recordFromRow } from './row.js';
import type { TableName } from './table-name.js';
import { insertingOnce } from './unique-violation.js';
import { POSTGRES_MIN_INSTANT, timestamptzLiteral } from './values.js';

/**
 * PostgreSQL's `deadlock_detected` SQLSTATE. Two statements that lock rows in different orders
 * can meet in a deadlock; PostgreSQL then rolls one of them back whole. Usage batches and purges
 * lock the key rows they share in one order, (`deleted_at`, `id`), and batches lock their cells
 * in one order, so they are not expected to; a batch rolled back for one all the same runs again.
 */
const POSTGRES_DEADLOCK_DETECTED = '40P01';

/** How many times `addUsage` runs its statement when PostgreSQL rolled it back for a deadlock. */
const USAGE_ATTEMPTS = 3;

function isDeadlock(error: unknown): boolean {
  return error !== null && typeof error === 'object' && (error as { code?: unknown }).code === POSTGRES_DEADLOCK_DETECTED;
}

/** An instant as a timestamptz parameter, moved up to the earliest one PostgreSQL holds. */
function timestamptzAtLeast(epochMs: number): string {
  return timestamptzLiteral(new Date(Math.max(epochMs, POSTGRES_MIN_INSTANT)));
}

function rowsOf(result: PostgresQueryResult | PostgresQueryResult[]): Row[] {
  const single = Array.isArray(result) ? result[result.length - 1] : result;
  return (single?.rows ?? []) as Row[];
}

/**
 * How many times `reserve` or `settle` reads the row again after its guarded write found the row
 * changed. In a Pool's transaction the lock keeps the row as read, so a second read is the most
 * ever needed (the deadline passed between the two round trips: the second read refuses); on a
 * single connection a write of another process between the read and the write costs one more
 * read, and only a row written faster than this store can read and write it exhausts them.
 */
const GUARDED_ATTEMPTS = 50;

/** One read-decide-write of `reserve` or `settle`: its result, or `undefined` when the guarded write found the row changed. */
type GuardedStep<T> = (client: PostgresClient) => Promise<{ value: T } | undefined>;

/** Runs `step` until its write goes through (or it writes nothing), at most {@link GUARDED_ATTEMPTS} times. */
async function guarded<T>(step: GuardedStep<T>, client: PostgresClient): Promise<T> {
  for (let attempt = 1; attempt <= GUARDED_ATTEMPTS; attempt++) {
    const done = await step(client);
    if (done !== undefined) return done.value;
  }
  throw new Error(`keygate: the key's row changed between the read and the write ${GUARDED_ATTEMPTS} times in a row; nothing was written`);
}

/**
 * The locked row of the lock statement (`postgres-reservations.ts`) in the form `reservations.ts`
 * decodes: counts as numbers (NULL stays NULL, for the decoder to refuse), float8 counters from
 * their bytes, the holds as their JSON text.
 */
function lockedRow(row: Row): LockedRow {
  const locked: Record<string, unknown> = { use_count: row.use_count === null ? null : Number(row.use_count), [HOLDS_COLUMN.name]: row[HOLDS_COLUMN.name] };
  for (const counter of COUNTER_COLUMNS) {
    const value = row[counter.name];
    locked[counter.name] = counter.kind === 'tokens' || counter.kind === 'tokensAt' ? doubleFromHex(value) : value === null ? null : Number(value);
  }
  return locked;
}

function versionOf(row: Row): RowVersion {
  return { xmin: String(row.xmin), ctid: String(row.ctid) };
}

/** {@link SqlEngine} for PostgreSQL. */
export class PostgresEngine implements SqlEngine {
  readonly #client: PostgresClient;
  readonly #table: TableName;
  readonly #statements: PostgresStatements;
  readonly #updates = new Map<string, string>();
  readonly #lists = new Map<string, string>();
  readonly #observability: ObservabilityStatements;
  readonly #auditLists = new Map<string, string>();
  readonly #lockRow: string;
  readonly #writeRow: string;

  constructor(client: PostgresClient, table: TableName) {
    this.#client = client;
    this.#table = table;
    this.#statements = postgresStatements(table);
    this.#observability = observabilityStatements(table);
    this.#lockRow = lockStatement(table);
    this.#writeRow = writeStatement(table);
  }

  async #rows(text: string, values: unknown[]): Promise<Row[]> {
    return rowsOf(await this.#client.query(text, values));
  }

  /** See `migratePostgres`: one transaction, under an advisory lock. */
  async migrate(): Promise<void> {
    await migratePostgres(this.#client, this.#table);
  }

  async insert(record: ApiKeyRecord): Promise<void> {
    await insertingOnce(record, () => this.#client.query(this.#statements.insert, recordParameters('postgres', record)));
  }

  async findById(id: string): Promise<ApiKeyRecord | null> {
    const [row] = await this.#rows(this.#statements.findById, [id]);
    return row ? recordFromRow(row) : null;
  }

  async findByKeyPrefix(keyPrefix: string): Promise<ApiKeyRecord | null> {
    const [row] = await this.#rows(this.#statements.findByKeyPrefix, [keyPrefix]);
    return row ? recordFromRow(row) : null;
  }

  /**
   * One statement (see `updateStatement`): a patch with a `status` locks the row, refuses to
   * revive a revoked key and stamps a revocation, atomically with the write.
   */
  async update(id: string, patch: ApiKeyPatch): Promise<ApiKeyRecord | null> {
    // Own properties only: an inherited `status` or `scopes` (a polluted Object.prototype) is no change.
    const columns = PATCHABLE_COLUMNS.filter((column) => ownValue(patch, column.field) !== undefined);
    if (columns.length === 0) return this.findById(id);
    const key = columns.map((column) => column.name).join(',');
    let text = this.#updates.get(key);
    if (text === undefined) {
      text = updateStatement(this.#table, columns);
      this.#updates.set(key, text);
    }
    const values = [id, ...columns.map((column) => parameterOf('postgres', column, ownValue(patch, column.field)))];
    const [row] = await this.#rows(text, values);
    if (!row) return null;
    if (columns.some((column) => column.field === 'status')) {
      if (row.refused === 'true') throw revokedKeyCannotChangeStatus();
      if (row.id === null || row.id === undefined) return null; // the row vanished under us
    }
    return recordFromRow(row);
  }

  async rotate(rotation: StoreRotation): Promise<{ old: ApiKeyRecord; replacement: ApiKeyRecord } | null> {
    const rows = await insertingOnce(rotation.replacement, () => this.#rows(this.#statements.rotate, rotationParameters(rotation)));
    if (rows.some((row) => row.role === 'refused')) throw retiredKeyCannotRotate();
    const old = rows.find((row) => row.role === 'old');
    const replacement = rows.find((row) => row.role === 'replacement');
    return old && replacement ? { old: recordFromRow(old), replacement: recordFromRow(replacement) } : null;
  }

  async list(query: StoreListQuery): Promise<ApiKeyRecord[]> {
    // Own properties only: an inherited `ownerId` (a polluted Object.prototype) is no filter.
    const ownerId = ownValue(query, 'ownerId') as string | undefined;
    const tenantId = ownValue(query, 'tenantId') as string | undefined;
    const status = ownValue(query, 'status') as string | undefined;
    const after = ownValue(query, 'after') as StoreListQuery['after'];
    const shape: ListShape = {
      ownerId: ownerId !== undefined,
      tenantId: tenantId !== undefined,
      status: status !== undefined,
      after: after !== undefined,
      includeDeleted: ownValue(query, 'includeDeleted') === true,
    };
    const key = `${+shape.ownerId}${+shape.tenantId}${+shape.status}${+shape.after}${+shape.includeDeleted}`;
    let text = this.#lists.get(key);
    if (text === undefined) {
      text = listStatement(this.#table, shape);
      this.#lists.set(key, text);
    }
    const values: unknown[] = [];
    if (ownerId !== undefined) values.push(ownerId);
    if (tenantId !== undefined) values.push(tenantId);
    if (status !== undefined) values.push(status);
    if (after) values.push(timestamptzLiteral(after.createdAt), after.id);
    values.push(query.limit);
    return (await this.#rows(text, values)).map(recordFromRow);
  }

  /**
   * Batches of one query each (see `purgeStatements`: its lock and its removal, two statements
   * sent at once, run as one transaction), each its own transaction: every batch commits before
   * the next starts, so a huge purge never holds many row locks, nor one statement long enough for
   * the pool's `statement_timeout`. `removed` hears each batch's ids once it committed. Stops when
   * a batch finds fewer than `batchSize` rows to remove.
   */
  async purge(purge: StorePurge, removed: (ids: readonly string[]) => void, batchSize = PURGE_BATCH_SIZE): Promise<number> {
    const { lock, remove } = purgeStatements(this.#table, purge.deletedBefore, batchSize);
    const script = `${lock};\n${remove}`;
    let total = 0;
    for (;;) {
      // No values: the simple protocol, which runs both statements in one transaction.
      const [row] = rowsOf(await this.#client.query(script));
      const ids = JSON.parse(String(row?.removed ?? '[]')) as string[];
      total += ids.length;
      if (ids.length > 0) removed(ids);
      if (Number(row?.selected ?? 0) < batchSize) return total;
    }
  }

  /**
   * One statement (see `consumeStatement`); its claim variant when the request has a concurrency
   * claim, which also counts, checks and records the key's leases under the same row lock.
   */
  async consume(id: string, request: ConsumeRequest): Promise<ConsumeOutcome | null> {
    const claim = request.concurrency;
    const text = claim === undefined ? this.#statements.consume : this.#statements.consumeClaim;
    const [row] = await this.#rows(text, consumeParameters(id, request));
    if (!row) return null;
    const refusal = row.refusal as ConsumeRefusal | null;
    const admitted = Number(row.applied) === 1;
    if (!admitted && refusal === null) return null; // the row vanished under us
    const useCount = Number(row.use_count);
    // A count edited by hand below zero would let maxUses pass: the statement refused it, fail closed.
    if (refusal === ('invalid_counters' as string)) throw invalidRecord(id, 'useCount', 'is negative');
    // Leases edited by hand into something else than an object of instants: never read as none.
    if (refusal === ('invalid_leases' as string)) throw invalidRecord(id, 'concurrencyLeases', '(column concurrency_leases) is not a JSON object of lapse instants');
    // A deadline or lifecycle refusal reports the lifetime count only: no limit was looked at.
    if (!admitted && !isLimitRefusal(refusal as ConsumeRefusal)) return { admitted: false, refusal: refusal as ConsumeRefusal, useCount };
    const outcome: ConsumeOutcome = admitted
      ? { admitted: true, useCount: useCount + 1 }
      : { admitted: false, refusal: refusal as ConsumeRefusal, useCount };
    const { rateLimit } = request;
    // The count of each window the key has a quota for, as decideConsume reports it.
    for (const window of QUOTA_WINDOWS) {
      if (rateLimit?.[window.limit] === undefined) continue;
      const used = Number(row[usedColumn(window)]);
      outcome[window.countField] = admitted ? used + 1 : used;
    }
    if (rateLimit?.perSecond !== undefined) {
      const level = row.level === null ? Number.NaN : Number(row.level);
      outcome.tokens = admitted ? level - 1 : level;
    }
    // The key's live leases, this request's own included when admitted.
    if (claim !== undefined) outcome.inFlight = Number(row.in_flight) + (admitted ? 1 : 0);
    // The instant the statement counted at (the key's latest use, when this caller's clock lags).
    const countedAt = Number(row.at);
    if (countedAt > request.now) outcome.countedAt = countedAt;
    return outcome;
  }

  /**
   * A reservation: the lock statement (`postgres-reservations.ts`: the row `FOR UPDATE`, the
   * deadline against `clock_timestamp()` once the lock is held, the lifecycle at `request.now`, the
   * counters and holds), `reservationOnRow` (`decideReservation`) in TypeScript, and when admitted
   * the write statement (counters, holds, `last_used_at`), in one transaction: see
   * {@link #onLockedRow}. A refusal writes nothing. `null` for an unknown id.
   */
  async reserve(id: string, request: ReserveRequest): Promise<ReserveOutcome | null> {
    const now = timestamptzLiteral(new Date(request.now));
    return this.#onLockedRow(async (client) => {
      const [row] = rowsOf(await client.query(this.#lockRow, [id, now, request.deadline ?? null]));
      if (!row) return { value: null };
      // The comparisons with now were made in SQL, on the stored instants (infinity included): each
      // passed on as an instant at now (reached) or none (not reached), which lifecycleRefusal reads alike.
      const lifecycle = lifecycleRefusal(String(row.status), row.revoked === 'true' ? request.now : null, row.expired === 'true' ? request.now : null, request.now);
      const { outcome, write } = reservationOnRow(id, lockedRow(row), { late: row.late === 'true', lifecycle }, request);
      if (write === null) return { value: outcome };
      const written = rowsOf(await client.query(this.#writeRow, writeParameters(id, versionOf(row), request.deadline, request.now, write)));
      return written.length > 0 ? { value: outcome } : undefined;
    });
  }

  /**
   * A settlement: the lock statement, `settlementOnRow` (`decideSettlement`), and the write when
   * the row holds a hold of that lease, in one transaction (see {@link #onLockedRow}). An unknown
   * id or lease writes nothing.
   */
  async settle(id: string, settlement: Settlement): Promise<void> {
    await this.#onLockedRow(async (client) => {
      const [row] = rowsOf(await client.query(this.#lockRow, [id, null, null]));
      const write = row ? settlementOnRow(id, lockedRow(row), settlement) : null;
      if (!row || write === null) return { value: undefined };
      const written = rowsOf(await client.query(this.#writeRow, writeParameters(id, versionOf(row), undefined, null, write)));
      return written.length > 0 ? { value: undefined } : undefined;
    });
  }

  /**
   * Runs a read-decide-write of leased mode atomically.
   *
   * On a Pool: in one transaction (`BEGIN ISOLATION LEVEL READ COMMITTED`, whatever the pool's
   * default: the lock statement relies on a row lock returning the row as last committed) on a
   * connection the Pool lends for it alone, so no other statement can slip into it. The row stays
   * locked from the read to the COMMIT, so the guarded write finds it as read unless the deadline
   * passed meanwhile, and then the step reads again and refuses. Any failure rolls the transaction
   * back, so nothing is half written; a connection whose ROLLBACK failed too is closed, not reused.
   *
   * On a single connection (a `Client` or `PoolClient`): no transaction, which would take in every
   * statement sent on that connection meanwhile (a consume of the same key among them would then
   * not wait for the lock, and be overwritten). Each statement is atomic on its own; the write is
   * guarded by the row version the read saw, so it applies only to the state it was decided on,
   * and the step runs again on the new state when another writer came between.
   */
  async #onLockedRow<T>(step: GuardedStep<T>): Promise<T> {
    const pool = poolOf(this.#client);
    if (pool === undefined) return guarded(step, this.#client);
    const session = await pool.connect();
    let reusable = true;
    try {
      await session.query('BEGIN ISOLATION LEVEL READ COMMITTED');
      const value = await guarded(step, session);
      await session.query('COMMIT');
      return value;
    } catch (error) {
      reusable = await session.query('ROLLBACK').then(
        () => true,
        () => false,
      );
      throw error;
    } finally {
      session.release(!reusable);
    }
  }

  /** One statement (see `releaseStatement`), which writes the row only when it holds the lease. */
  async release(id: string, lease: string): Promise<void> {
    await this.#client.query(this.#statements.release, [id, lease]);
  }

  /** One `INSERT … ON CONFLICT ("id") DO NOTHING`: no row back means the id was taken, and nothing changed. */
  async appendAudit(entry: AuditEntry): Promise<void> {
    const row = auditRowValues(entry, 'postgres');
    const values = [
      row.id,
      timestamptzLiteral(new Date(row.at)),
      row.action,
      row.keyId,
      row.actorId,
      row.actorKeyPrefix,
      row.tenantId,
      row.environment,
      row.changes,
    ];
    const inserted = await this.#rows(this.#observability.appendAudit, values);
    if (inserted.length === 0) throw alreadyExists('id', row.id);
  }

  /**
   * One statement per shape of filters (see `auditListStatement`), cached. An instant before the
   * earliest PostgreSQL holds (4714 BC, which no stored entry can be at) is no bound for `from` and
   * `after` (every entry is past it), and is that earliest instant for `to` (no entry is before it).
   */
  async listAudit(query: StoreAuditQuery): Promise<AuditEntry[]> {
    const filters = auditFilters(query, 'postgres');
    if (filters.limit === 0) return [];
    const from = filters.from !== undefined && filters.from > POSTGRES_MIN_INSTANT ? filters.from : undefined;
    const after = filters.after !== undefined && filters.after.at >= POSTGRES_MIN_INSTANT ? filters.after : undefined;
    const shape: AuditListShape = {
      keyId: filters.keyId !== undefined,
      actorId: filters.actorId !== undefined,
      tenantId: filters.tenantId !== undefined,
      environment: filters.environment !== undefined,
      from: from !== undefined,
      to: filters.to !== undefined,
      after: after !== undefined,
    };
    const key = Object.values(shape).map(Number).join('');
    let text = this.#auditLists.get(key);
    if (text === undefined) {
      text = auditListStatement(this.#table, shape);
      this.#auditLists.set(key, text);
    }
    const values: unknown[] = [];
    for (const field of ['keyId', 'actorId', 'tenantId', 'environment'] as const) if (filters[field] !== undefined) values.push(filters[field]);
    if (from !== undefined) values.push(timestamptzLiteral(new Date(from)));
    if (filters.to !== undefined) values.push(timestamptzAtLeast(filters.to));
    if (after !== undefined) values.push(timestamptzLiteral(new Date(after.at)), after.id);
    values.push(filters.limit);
    return (await this.#rows(text, values)).map(auditEntryFromRow);
  }

  /**
   * One statement (see `addUsageStatement`): the batch id recorded and every cell of a key the
   * table holds added (the others dropped), or nothing. A statement PostgreSQL rolled back for a
   * deadlock changed nothing, so it runs again; any other failure rejects (a retry with the same
   * batch id is safe: an applied id adds nothing).
   */
  async addUsage(batch: UsageBatch): Promise<void> {
    const checked = checkedBatch(batch, 'postgres');
    const values = [checked.id, timestamptzLiteral(new Date(checked.now)), timestamptzAtLeast(checked.forgetBefore), ...usageColumnArrays(checked.cells)];
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#client.query(this.#observability.addUsage, values);
        return;
      } catch (error) {
        if (!isDeadlock(error) || attempt >= USAGE_ATTEMPTS) throw error;
      }
    }
  }

  /** One statement through the usage table's primary key (`key_id`, then `day`). */
  async readUsage(query: StoreUsageQuery): Promise<UsageCell[]> {
    const range = usageRange(query, 'postgres');
    if (range === null) return [];
    const rows = await this.#rows(this.#observability.readUsage, [range.keyId, range.fromDay, range.toDay]);
    return rows.map((row) => usageCellFromRow(range.keyId, row));
  }

  /** One statement (see `claimAlertStatement`): a row back means this caller has the claim. */
  async claimAlert(claim: AlertClaim): Promise<boolean> {
    const checked = checkedClaim(claim, 'postgres');
    const rows = await this.#rows(this.#observability.claimAlert, [
      checked.name,
      timestamptzLiteral(new Date(checked.expiresAt)),
      timestamptzLiteral(new Date(checked.now)),
    ]);
    return rows.length > 0;
  }
}
