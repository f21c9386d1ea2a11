/**
 * The PostgreSQL dialect: runs the statements of `postgres-sql.ts` through the user's `pg` client
 * and turns rows into records and outcomes. One round trip per operation.
 */
import { invalidRecord, ownValue } from '../../record/decode.js';
import { QUOTA_WINDOWS } from '../../policy/windows.js';
import type { ApiKeyRecord } from '../../types.js';
import type { ApiKeyPatch, ConsumeOutcome, ConsumeRefusal, ConsumeRequest, StoreListQuery, StorePurge, StoreRotation } from '../store.js';
import { isLimitRefusal, retiredKeyCannotRotate, revokedKeyCannotChangeStatus } from '../toolkit.js';
import type { PostgresClient, PostgresQueryResult } from './clients.js';
import { PATCHABLE_COLUMNS } from './columns.js';
import { PURGE_BATCH_SIZE, type SqlEngine } from './dialect.js';
import { migratePostgres } from './migrate.js';
import { parameterOf, recordParameters } from './parameters.js';
import {
  type ListShape,
  type PostgresStatements,
  consumeParameters,
  listStatement,
  postgresStatements,
  rotationParameters,
  updateStatement,
  usedColumn,
} from './postgres-sql.js';
import { type Row, recordFromRow } from './row.js';
import type { TableName } from './table-name.js';
import { insertingOnce } from './unique-violation.js';
import { timestamptzLiteral } from './values.js';

function rowsOf(result: PostgresQueryResult | PostgresQueryResult[]): Row[] {
  const single = Array.isArray(result) ? result[result.length - 1] : result;
  return (single?.rows ?? []) as Row[];
}

/** {@link SqlEngine} for PostgreSQL. */
export class PostgresEngine implements SqlEngine {
  readonly #client: PostgresClient;
  readonly #table: TableName;
  readonly #statements: PostgresStatements;
  readonly #updates = new Map<string, string>();
  readonly #lists = new Map<string, string>();

  constructor(client: PostgresClient, table: TableName) {
    this.#client = client;
    this.#table = table;
    this.#statements = postgresStatements(table);
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
   * Batches of one statement each (see `purgeStatement`), each its own transaction: every batch
   * commits before the next starts, so a huge purge never holds many row locks, nor one statement
   * long enough for the pool's `statement_timeout`. `removed` hears each batch's ids once it
   * committed. Stops when a batch finds fewer than `batchSize` rows to remove.
   */
  async purge(purge: StorePurge, removed: (ids: readonly string[]) => void, batchSize = PURGE_BATCH_SIZE): Promise<number> {
    const deletedBefore = timestamptzLiteral(purge.deletedBefore);
    let total = 0;
    for (;;) {
      const [row] = await this.#rows(this.#statements.purge, [deletedBefore, batchSize]);
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

  /** One statement (see `releaseStatement`), which writes the row only when it holds the lease. */
  async release(id: string, lease: string): Promise<void> {
    await this.#client.query(this.#statements.release, [id, lease]);
  }
}
