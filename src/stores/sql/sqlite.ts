/**
 * The SQLite dialect, on a `better-sqlite3` Database. better-sqlite3 is synchronous, so a
 * read-decide-write inside `db.transaction(…).immediate()` is atomic twice over: no other
 * JavaScript runs in this process meanwhile, and `BEGIN IMMEDIATE` takes the database's write lock
 * first, so other processes on the same file wait (up to the connection's busy timeout) instead of
 * interleaving. The consume's checks are `lifecycleRefusal` and `decideConsume` themselves, after
 * the deadline, read with `Date.now()` once the transaction holds the write lock.
 */
import { type CounterState, decideConsume } from '../../policy/limits.js';
import { invalidRecord } from '../../record/decode.js';
import { lifecycleRefusal } from '../../policy/status.js';
import type { ApiKeyRecord } from '../../types.js';
import type { ApiKeyPatch, ConsumeOutcome, ConsumeRequest, StoreListQuery, StoreRotation } from '../store.js';
import type { SqliteDatabase, SqliteStatement, SqliteTransaction } from './clients.js';
import { type Column, PATCHABLE_FIELDS, RECORD_COLUMNS, columnOf } from './columns.js';
import type { SqlEngine } from './dialect.js';
import { retiredKeyCannotRotate, revokedKeyCannotChangeStatus } from '../toolkit.js';
import { type Row, recordFromRow } from './row.js';
import { schemaStatements } from './schema.js';
import type { TableName } from './table-name.js';
import { insertingOnce } from './unique-violation.js';

/** A record field's value as a SQLite parameter: text, integers, JSON text, epoch milliseconds. */
function parameter(column: Column, value: unknown): unknown {
  if (value === null || value === undefined) return null;
  switch (column.kind) {
    case 'list':
    case 'json':
    case 'rateLimit':
      return JSON.stringify(value);
    case 'instant':
    case 'nullableInstant':
      return (value as Date).getTime();
    default:
      return value;
  }
}

function recordParameters(record: ApiKeyRecord): unknown[] {
  return RECORD_COLUMNS.map((column) => parameter(column, record[column.field]));
}

const SELECT_LIST = RECORD_COLUMNS.map((column) => `"${column.name}"`).join(', ');

/** {@link SqlEngine} for SQLite. */
export class SqliteEngine implements SqlEngine {
  readonly #db: SqliteDatabase;
  readonly #table: TableName;
  readonly #statements = new Map<string, SqliteStatement>();
  readonly #migrate: SqliteTransaction<[], void>;
  readonly #consume: SqliteTransaction<[string, ConsumeRequest], ConsumeOutcome | null>;
  readonly #rotate: SqliteTransaction<[StoreRotation], { old: ApiKeyRecord; replacement: ApiKeyRecord } | null>;
  readonly #guardedUpdate: SqliteTransaction<[string, ApiKeyPatch], ApiKeyRecord | null>;

  constructor(db: SqliteDatabase, table: TableName) {
    this.#db = db;
    this.#table = table;
    this.#migrate = db.transaction(() => {
      for (const statement of schemaStatements('sqlite', table)) db.exec(statement);
    });
    this.#consume = db.transaction((id: string, request: ConsumeRequest) => this.#consumeNow(id, request));
    this.#rotate = db.transaction((rotation: StoreRotation) => this.#rotateNow(rotation));
    this.#guardedUpdate = db.transaction((id: string, patch: ApiKeyPatch) => this.#guardedUpdateNow(id, patch));
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

  #find(column: 'id' | 'key_prefix', value: string): ApiKeyRecord | null {
    const row = this.#statement(`SELECT ${SELECT_LIST} FROM ${this.#table.qualified} WHERE "${column}" = ?`).get(value);
    return row ? recordFromRow(row as Row) : null;
  }

  #insertNow(record: ApiKeyRecord): void {
    const placeholders = RECORD_COLUMNS.map(() => '?').join(', ');
    this.#statement(`INSERT INTO ${this.#table.qualified} (${SELECT_LIST}) VALUES (${placeholders})`).run(...recordParameters(record));
  }

  async migrate(): Promise<void> {
    this.#migrate.immediate();
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
   * One statement; a patch that sets `status` to anything but `revoked` runs in an immediate
   * transaction that first refuses (changing nothing) when the stored key is revoked.
   */
  async update(id: string, patch: ApiKeyPatch): Promise<ApiKeyRecord | null> {
    if (patch.status !== undefined && patch.status !== 'revoked') return this.#guardedUpdate.immediate(id, patch);
    return this.#updateNow(id, patch);
  }

  #guardedUpdateNow(id: string, patch: ApiKeyPatch): ApiKeyRecord | null {
    const stored = this.#statement(`SELECT "status", "revoked_at" FROM ${this.#table.qualified} WHERE "id" = ?`).get(id) as
      | { status: string; revoked_at: number | null }
      | undefined;
    if (!stored) return null;
    if (lifecycleRefusal(stored.status, stored.revoked_at, null, patch.updatedAt.getTime()) === 'api_key_revoked') {
      throw revokedKeyCannotChangeStatus();
    }
    return this.#updateNow(id, patch);
  }

  #updateNow(id: string, patch: ApiKeyPatch): ApiKeyRecord | null {
    const columns = PATCHABLE_FIELDS.filter((field) => patch[field] !== undefined).map(columnOf);
    if (columns.length === 0) return this.#find('id', id);
    const assignments = columns.map((column) => `"${column.name}" = ?`).join(', ');
    const values = columns.map((column) => parameter(column, patch[column.field as keyof ApiKeyPatch]));
    const row = this.#statement(`UPDATE ${this.#table.qualified} SET ${assignments} WHERE "id" = ? RETURNING ${SELECT_LIST}`).get(
      ...values,
      id,
    );
    return row ? recordFromRow(row as Row) : null;
  }

  async rotate(rotation: StoreRotation): Promise<{ old: ApiKeyRecord; replacement: ApiKeyRecord } | null> {
    return insertingOnce(rotation.replacement, () => this.#rotate.immediate(rotation));
  }

  #rotateNow(rotation: StoreRotation): { old: ApiKeyRecord; replacement: ApiKeyRecord } | null {
    const table = this.#table.qualified;
    const uses = this.#statement(`SELECT "status", "revoked_at", "max_uses", "use_count" FROM ${table} WHERE "id" = ?`).get(rotation.oldId) as
      | { status: string; revoked_at: number | null; max_uses: number | null; use_count: number }
      | undefined;
    if (!uses) return null;
    // Already retired or retiring (revoked, or rotated with a grace period): rotating it again
    // would mint another key with the uses it has left.
    if (uses.revoked_at !== null || (uses.status !== 'active' && uses.status !== 'suspended')) throw retiredKeyCannotRotate();
    const replacement: ApiKeyRecord = { ...rotation.replacement };
    if (uses.max_uses !== null) replacement.maxUses = Math.max(0, uses.max_uses - uses.use_count);
    this.#insertNow(replacement);
    const old = this.#statement(
      `UPDATE ${table} SET "revoked_at" = ?, "updated_at" = ?, "status" = coalesce(?, "status") WHERE "id" = ? RETURNING ${SELECT_LIST}`,
    ).get(rotation.oldRevokedAt.getTime(), rotation.now.getTime(), rotation.oldStatus ?? null, rotation.oldId);
    const stored = this.#find('id', replacement.id);
    if (!old || !stored) throw new Error('keygate: the rotated records vanished inside their transaction');
    return { old: recordFromRow(old as Row), replacement: stored };
  }

  async list(query: StoreListQuery): Promise<ApiKeyRecord[]> {
    const conditions: string[] = [];
    const values: unknown[] = [];
    if (query.ownerId !== undefined) {
      conditions.push('"owner_id" = ?');
      values.push(query.ownerId);
    }
    if (query.tenantId !== undefined) {
      conditions.push('"tenant_id" = ?');
      values.push(query.tenantId);
    }
    if (query.status !== undefined) {
      conditions.push('"status" = ?');
      values.push(query.status);
    }
    if (query.after) {
      conditions.push('("created_at", "id") > (?, ?)');
      values.push(query.after.createdAt.getTime(), query.after.id);
    }
    const where = conditions.length > 0 ? ` WHERE ${conditions.join(' AND ')}` : '';
    const sql = `SELECT ${SELECT_LIST} FROM ${this.#table.qualified}${where} ORDER BY "created_at", "id" LIMIT ?`;
    return this.#statement(sql)
      .all(...values, query.limit)
      .map((row) => recordFromRow(row as Row));
  }

  async consume(id: string, request: ConsumeRequest): Promise<ConsumeOutcome | null> {
    return this.#consume.immediate(id, request);
  }

  #consumeNow(id: string, request: ConsumeRequest): ConsumeOutcome | null {
    const table = this.#table.qualified;
    const row = this.#statement(
      `SELECT "status", "revoked_at", "expires_at", "use_count", "day", "day_count", "tokens", "tokens_at" FROM ${table} WHERE "id" = ?`,
    ).get(id) as
      | {
          status: string;
          revoked_at: number | null;
          expires_at: number | null;
          use_count: number;
          day: number;
          day_count: number;
          tokens: number | null;
          tokens_at: number;
        }
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
    const state: CounterState = { useCount: row.use_count, day: row.day, dayCount: row.day_count, tokens: row.tokens, tokensAt: row.tokens_at };
    const { outcome, next } = decideConsume(state, request);
    if (next) {
      this.#statement(
        `UPDATE ${table} SET "use_count" = ?, "day" = ?, "day_count" = ?, "tokens" = ?, "tokens_at" = ?, "last_used_at" = ? WHERE "id" = ?`,
      ).run(next.useCount, next.day, next.dayCount, next.tokens, next.tokensAt, new Date(request.now).getTime(), id);
    }
    return outcome;
  }
}
