/**
 * The PostgreSQL dialect: runs the statements of `postgres-sql.ts` through the user's `pg` client
 * and turns rows into records and outcomes. One round trip per operation.
 */
import { crc32 } from '../../key/checksum.js';
import { invalidRecord } from '../../record/decode.js';
import { bucketCapacity } from '../../policy/limits.js';
import type { ApiKeyRecord } from '../../types.js';
import type { ApiKeyPatch, ConsumeOutcome, ConsumeRefusal, ConsumeRequest, StoreListQuery, StoreRotation } from '../store.js';
import type { PostgresClient, PostgresQueryResult } from './clients.js';
import { type Column, PATCHABLE_FIELDS, RECORD_COLUMNS, columnOf } from './columns.js';
import type { SqlEngine } from './dialect.js';
import {
  type ListShape,
  type PostgresStatements,
  guardedUpdateStatement,
  listStatement,
  postgresStatements,
  updateStatement,
} from './postgres-sql.js';
import { isLimitRefusal, retiredKeyCannotRotate, revokedKeyCannotChangeStatus } from '../toolkit.js';
import { type Row, recordFromRow } from './row.js';
import { schemaStatements } from './schema.js';
import type { TableName } from './table-name.js';
import { insertingOnce } from './unique-violation.js';
import { timestamptzLiteral } from './values.js';

/** First half of the advisory lock key of `migrate()`: "kgat". */
const MIGRATION_LOCK_CLASS = 0x6b676174;

/** A record field's value as a pg parameter for its column's cast. */
function parameter(column: Column, value: unknown): unknown {
  if (value === null || value === undefined) return null;
  switch (column.kind) {
    case 'list':
      return [...(value as string[])];
    case 'json':
    case 'rateLimit':
      return JSON.stringify(value);
    case 'instant':
    case 'nullableInstant':
      return timestamptzLiteral(value as Date);
    default:
      return value;
  }
}

function recordParameters(record: ApiKeyRecord): unknown[] {
  return RECORD_COLUMNS.map((column) => parameter(column, record[column.field]));
}

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

  /**
   * One simple-protocol query holding every statement: PostgreSQL runs such a query as a single
   * transaction, so the advisory lock taken first is held until the last index exists. Two
   * processes migrating at once therefore take turns instead of racing on the catalog (which
   * `IF NOT EXISTS` alone does not prevent), and it works on a Pool, whose successive queries may
   * use different connections.
   */
  async migrate(): Promise<void> {
    const lockKey = crc32(`keygate:migrate:${this.#table.text}`) | 0;
    const script = [`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_CLASS}, ${lockKey})`, ...schemaStatements('postgres', this.#table)];
    await this.#client.query(`${script.join(';\n')};`);
  }

  async insert(record: ApiKeyRecord): Promise<void> {
    await insertingOnce(record, () => this.#client.query(this.#statements.insert, recordParameters(record)));
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
   * One statement. A patch that sets `status` to anything but `revoked` runs the guarded form,
   * which locks the row and refuses (changing nothing) when the stored key is revoked.
   */
  async update(id: string, patch: ApiKeyPatch): Promise<ApiKeyRecord | null> {
    const fields = PATCHABLE_FIELDS.filter((field) => patch[field] !== undefined);
    const columns = fields.map(columnOf);
    if (columns.length === 0) return this.findById(id);
    const guarded = patch.status !== undefined && patch.status !== 'revoked';
    const key = `${guarded ? 'guarded:' : ''}${fields.join(',')}`;
    let text = this.#updates.get(key);
    if (text === undefined) {
      text = guarded ? guardedUpdateStatement(this.#table, columns) : updateStatement(this.#table, columns);
      this.#updates.set(key, text);
    }
    const values = [id, ...columns.map((column) => parameter(column, patch[column.field as keyof ApiKeyPatch]))];
    const [row] = await this.#rows(text, values);
    if (!row) return null;
    if (guarded) {
      if (row.refused === 'true') throw revokedKeyCannotChangeStatus();
      if (row.id === null || row.id === undefined) return null; // the row vanished under us
    }
    return recordFromRow(row);
  }

  async rotate(rotation: StoreRotation): Promise<{ old: ApiKeyRecord; replacement: ApiKeyRecord } | null> {
    const values = [
      rotation.oldId,
      ...recordParameters(rotation.replacement),
      timestamptzLiteral(rotation.oldRevokedAt),
      timestamptzLiteral(rotation.now),
      rotation.oldStatus ?? null,
    ];
    const rows = await insertingOnce(rotation.replacement, () => this.#rows(this.#statements.rotate, values));
    if (rows.some((row) => row.role === 'refused')) throw retiredKeyCannotRotate();
    const old = rows.find((row) => row.role === 'old');
    const replacement = rows.find((row) => row.role === 'replacement');
    return old && replacement ? { old: recordFromRow(old), replacement: recordFromRow(replacement) } : null;
  }

  async list(query: StoreListQuery): Promise<ApiKeyRecord[]> {
    const shape: ListShape = {
      ownerId: query.ownerId !== undefined,
      tenantId: query.tenantId !== undefined,
      status: query.status !== undefined,
      after: query.after !== undefined,
    };
    const key = `${+shape.ownerId}${+shape.tenantId}${+shape.status}${+shape.after}`;
    let text = this.#lists.get(key);
    if (text === undefined) {
      text = listStatement(this.#table, shape);
      this.#lists.set(key, text);
    }
    const values: unknown[] = [];
    if (query.ownerId !== undefined) values.push(query.ownerId);
    if (query.tenantId !== undefined) values.push(query.tenantId);
    if (query.status !== undefined) values.push(query.status);
    if (query.after) values.push(timestamptzLiteral(query.after.createdAt), query.after.id);
    values.push(query.limit);
    return (await this.#rows(text, values)).map(recordFromRow);
  }

  async consume(id: string, request: ConsumeRequest): Promise<ConsumeOutcome | null> {
    const { rateLimit, maxUses } = request;
    const perSecond = rateLimit?.perSecond;
    const perDay = rateLimit?.perDay;
    const [row] = await this.#rows(this.#statements.consume, [
      id,
      request.now,
      maxUses,
      perDay ?? null,
      perSecond ?? null,
      rateLimit && perSecond !== undefined ? bucketCapacity(rateLimit) : null,
      timestampLiteralOf(request.now),
      request.deadline ?? null,
    ]);
    if (!row) return null;
    const refusal = row.refusal as ConsumeRefusal | null;
    const admitted = Number(row.applied) === 1;
    if (!admitted && refusal === null) return null; // the row vanished under us
    const useCount = Number(row.use_count);
    // A count edited by hand below zero would let maxUses pass: the statement refused it, fail closed.
    if (refusal === ('invalid_counters' as string)) throw invalidRecord(id, 'useCount', 'is negative');
    // A deadline or lifecycle refusal reports the lifetime count only: no limit was looked at.
    if (!admitted && !isLimitRefusal(refusal as ConsumeRefusal)) return { admitted: false, refusal: refusal as ConsumeRefusal, useCount };
    const dayUsed = Number(row.day_used);
    const level = row.level === null ? Number.NaN : Number(row.level);
    const outcome: ConsumeOutcome = admitted
      ? { admitted: true, useCount: useCount + 1 }
      : { admitted: false, refusal: refusal as ConsumeRefusal, useCount };
    if (perDay !== undefined) outcome.dayCount = admitted ? dayUsed + 1 : dayUsed;
    if (perSecond !== undefined) outcome.tokens = admitted ? level - 1 : level;
    return outcome;
  }
}

/** `last_used_at` is the caller's `now`, as a Date would hold it (whole milliseconds). */
function timestampLiteralOf(now: number): string {
  return timestamptzLiteral(new Date(now));
}
