/**
 * Leased mode in SqlStore (`reserve`, `settle`) on each dialect's own terms. What every store must
 * do is the contract's (src/testing/contract/leases.ts, run by the two SQL contract files); these
 * tests look at the SQL side:
 *
 * - the `lease_holds` column and the counters hold exactly what `decideReservation` and
 *   `decideSettlement` decided, to the last bit of a fractional bucket level;
 * - a refusal writes nothing; neither method changes `updated_at` or tells listeners; a column or a
 *   counter edited by hand fails closed; values the row could not hold are refused before the step;
 * - PostgreSQL on a Pool: one transaction on a connection of its own (its clock read once the row
 *   lock is held, a revocation made while it waited seen), rolled back whole when any part fails;
 * - PostgreSQL on a single connection (Client, PoolClient): no transaction, and a write made by
 *   another connection between the read and the guarded write is never overwritten;
 * - a table created by version 4's DDL (test/sql/fixtures/version-4-*.sql, frozen) gains
 *   `lease_holds` through migrate() or today's docs/sql script, and reserves at once.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Client, Pool, type PoolClient } from 'pg';
import { type ApiKeyRecord, isKeygateError } from 'keygate';
import { type PostgresClient, SqlStore } from 'keygate/sql';
import { type CounterState, decideConsume, initialCounters } from '../../src/policy/limits';
import { type Hold, type ReserveRequest, type Settlement, decideReservation, decideSettlement } from '../../src/policy/reservation';
import type { RateLimit } from '../../src/types';
import { poolOf } from '../../src/stores/sql/clients';
import { COUNTER_COLUMNS } from '../../src/stores/sql/columns';
import { postgresStatements } from '../../src/stores/sql/postgres-sql';
import { lockStatement } from '../../src/stores/sql/postgres-reservations';
import { parseTableName } from '../../src/stores/sql/table-name';
import { describePostgres, postgresWithPool } from '../helpers/postgres-server';
import { testRecord } from '../helpers/records';
import { rejection } from '../helpers/rejection';

jest.setTimeout(60_000);

const T = Date.UTC(2026, 3, 1, 12);

type Dialect = 'postgres' | 'sqlite';
type Row = Record<string, unknown>;

let tables = 0;
let leases = 0;

function reservation(now: number, units: number, maxUses: number | null, rateLimit: RateLimit | null, overrides: Partial<ReserveRequest> = {}): ReserveRequest {
  return { now, units, maxUses, rateLimit, leaseMs: 10_000, lease: `lease-${++leases}`, ...overrides };
}

function settlement(lease: string, unspent: number, now: number, rateLimit: RateLimit | null): Settlement {
  return { lease, unspent, now, rateLimit };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** What each dialect's block gives its tests. */
interface Fixture {
  dialect: Dialect;
  /** A store on a table of its own, migrated. */
  fresh(table?: string): Promise<SqlStore>;
  /** A store on an existing table, without migrating it. */
  open(table: string): SqlStore;
  /** Rows of one statement written with `?` placeholders (numbered for PostgreSQL). */
  rows(sql: string, ...params: unknown[]): Promise<Row[]>;
  /** Runs a script of several statements. */
  exec(script: string): Promise<void>;
}

function describeDialects(name: string, body: (fixture: Fixture) => void): void {
  describe(`${name} (sqlite)`, () => {
    let dir: string;
    let db: Database.Database;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'keygate-leased-'));
      db = new Database(join(dir, 'keys.db'));
      db.pragma('journal_mode = WAL');
    });
    afterAll(() => {
      db?.close();
      rmSync(dir, { recursive: true, force: true });
    });
    body({
      dialect: 'sqlite',
      fresh: async (table = `leased_${++tables}`) => {
        const store = new SqlStore({ dialect: 'sqlite', client: db, table });
        await store.migrate();
        return store;
      },
      open: (table) => new SqlStore({ dialect: 'sqlite', client: db, table }),
      rows: async (sql, ...params) => {
        const statement = db.prepare(sql);
        if (statement.reader) return statement.all(...params) as Row[];
        statement.run(...params);
        return [];
      },
      exec: async (script) => void db.exec(script),
    });
  });

  describePostgres(`${name} (postgres)`, () => {
    const pg = postgresWithPool(8);
    body({
      dialect: 'postgres',
      fresh: async (table = `leased_${++tables}`) => {
        const store = new SqlStore({ dialect: 'postgres', client: pg.pool, table });
        await store.migrate();
        return store;
      },
      open: (table) => new SqlStore({ dialect: 'postgres', client: pg.pool, table }),
      rows: async (sql, ...params) => {
        let n = 0;
        return (await pg.pool.query(sql.replace(/\?/g, () => `$${++n}`), params)).rows as Row[];
      },
      exec: async (script) => void (await pg.pool.query(script)),
    });
  });
}

/** The key's counters as stored, read with SQL: every one as the double it holds. */
async function storedCounters(fixture: Fixture, table: string, id: string): Promise<CounterState> {
  const select = ['use_count', ...COUNTER_COLUMNS.map((counter) => counter.name)].map((name) => `"${name}"`).join(', ');
  const [row] = await fixture.rows(`SELECT ${select} FROM "${table}" WHERE "id" = ?`, id);
  const state: Record<string, number | null> = { useCount: Number(row?.use_count) };
  for (const counter of COUNTER_COLUMNS) {
    const value = row?.[counter.name];
    state[counter.field] = value === null ? null : Number(value);
  }
  return state as unknown as CounterState;
}

/** The key's holds as stored: the column's JSON, parsed. */
async function storedHolds(fixture: Fixture, table: string, id: string): Promise<Record<string, Hold>> {
  const cast = fixture.dialect === 'postgres' ? '::text' : '';
  const [row] = await fixture.rows(`SELECT "lease_holds"${cast} AS "holds" FROM "${table}" WHERE "id" = ?`, id);
  return JSON.parse(String(row?.holds)) as Record<string, Hold>;
}

/** The whole row as stored (PostgreSQL: with its version, which any write changes). */
async function wholeRow(fixture: Fixture, table: string, id: string): Promise<Row | undefined> {
  const version = fixture.dialect === 'postgres' ? ', "xmin"::text AS "row_version"' : '';
  return (await fixture.rows(`SELECT *${version} FROM "${table}" WHERE "id" = ?`, id))[0];
}

describe('the PostgreSQL statements', () => {
  it('exact consumes never name the holds: leased mode leaves their statements as they were', () => {
    const statements = postgresStatements(parseTableName(undefined, true));
    expect(statements.consume).not.toContain('lease_holds');
    expect(statements.consumeClaim).not.toContain('lease_holds');
  });

  it('the lock statement reads the clock outside the locking CTE, once the row lock is held', () => {
    const text = lockStatement(parseTableName(undefined, true));
    const locking = text.slice(0, text.indexOf('FOR UPDATE'));
    expect(locking).not.toContain('clock_timestamp');
    expect(text.slice(text.indexOf('FOR UPDATE'))).toContain('clock_timestamp()');
  });

  it('takes a pg Pool for one, and never a Client, a PoolClient or a plain query function', async () => {
    const pool = new Pool({ max: 1 });
    const client = new Client();
    try {
      expect(poolOf(pool)).toBe(pool);
      expect(poolOf(client)).toBeUndefined();
      expect(poolOf({ query: async () => ({ rows: [] }) })).toBeUndefined();
      // A PoolClient: a Client with release().
      expect(poolOf(Object.assign(Object.create(client) as Client, { release: () => undefined, totalCount: 1 }))).toBeUndefined();
    } finally {
      await pool.end();
    }
  });
});

describeDialects('leased mode', (fixture) => {
  async function keyed(overrides: Partial<ApiKeyRecord> = {}): Promise<{ store: SqlStore; key: ApiKeyRecord }> {
    const store = await fixture.fresh();
    const key = testRecord(T, { name: 'leased', ...overrides });
    await store.insert(key);
    return { store, key };
  }

  it('stores exactly the counters and holds decideReservation and decideSettlement decide, fractional bucket levels and instants included', async () => {
    const { store, key } = await keyed();
    const limits: RateLimit = { perSecond: 3, burst: 7, perMinute: 40 };
    const first = reservation(T + 0.5, 4, 30, limits, { leaseMs: 1_000.25 });
    const second = reservation(T + 333.3, 5, 30, limits, { leaseMs: 700 });
    const steps: ({ reserve: ReserveRequest } | { settle: Settlement })[] = [
      { reserve: first },
      { reserve: second },
      { settle: settlement(first.lease, 2, T + 500.7, limits) },
      { reserve: reservation(T + 1_400.9, 6, 30, limits) },
      { settle: settlement(second.lease, 5, T + 1_401, limits) }, // lapsed and dropped: nothing
    ];
    let state = initialCounters(0);
    let holds: Record<string, Hold> | null = null;
    for (const step of steps) {
      if ('reserve' in step) {
        const decided = decideReservation(state, holds, step.reserve);
        expect(await store.reserve(key.id, step.reserve)).toEqual(decided.outcome);
        if (decided.next) ({ next: state, holds } = decided as { next: CounterState; holds: Record<string, Hold> });
      } else {
        const decided = decideSettlement(state, holds, step.settle);
        await store.settle(key.id, step.settle);
        if (decided) ({ next: state, holds } = decided);
      }
      expect(await storedCounters(fixture, store.table, key.id)).toEqual(state);
      expect(await storedHolds(fixture, store.table, key.id)).toEqual({ ...holds });
    }
    expect(Number.isInteger(state.tokens)).toBe(false); // the test did reach a fractional level
    expect((await store.findById(key.id))?.lastUsedAt?.getTime()).toBe(T + 1_400);
  });

  it('a refusal writes nothing, lapsed holds included; a settlement of an unknown lease writes nothing', async () => {
    const { store, key } = await keyed();
    const held = reservation(T, 5, 5, null, { leaseMs: 100 });
    expect(await store.reserve(key.id, held)).toMatchObject({ admitted: true, granted: 5 });
    const before = await wholeRow(fixture, store.table, key.id);
    // The hold has lapsed by then, but a refusal does not drop it.
    expect(await store.reserve(key.id, reservation(T + 1_000, 1, 5, null))).toEqual({ admitted: false, refusal: 'usage_exhausted', granted: 0, useCount: 5 });
    await store.settle(key.id, settlement('never-reserved', 3, T + 1_000, null));
    expect(await wholeRow(fixture, store.table, key.id)).toEqual(before);
    expect(Object.keys(await storedHolds(fixture, store.table, key.id))).toEqual([held.lease]);
  });

  it('changes no updated_at and tells no listener; last_used_at is the reservation\'s now', async () => {
    const { store, key } = await keyed();
    const heard: (string | null)[] = [];
    const unsubscribe = store.subscribe((id) => heard.push(id));
    try {
      const held = reservation(T + 5_000, 3, null, null);
      await store.reserve(key.id, held);
      await store.settle(key.id, settlement(held.lease, 1, T + 6_000, null));
    } finally {
      unsubscribe();
    }
    expect(heard).toEqual([]);
    expect(await store.findById(key.id)).toStrictEqual({ ...key, useCount: 2, lastUsedAt: new Date(T + 5_000) });
  });

  it('a lease named __proto__ is a lease like any other', async () => {
    const { store, key } = await keyed();
    expect(await store.reserve(key.id, reservation(T, 3, 10, null, { lease: '__proto__' }))).toMatchObject({ admitted: true, granted: 3, useCount: 3 });
    expect(Object.keys(await storedHolds(fixture, store.table, key.id))).toEqual(['__proto__']);
    await store.settle(key.id, settlement('__proto__', 3, T + 1, null));
    expect(await storedHolds(fixture, store.table, key.id)).toEqual({});
    expect((await store.findById(key.id))?.useCount).toBe(0);
  });

  it('fails closed on holds or counters edited by hand: invalid_record, nothing written', async () => {
    const { store, key } = await keyed();
    const jsonb = fixture.dialect === 'postgres' ? '::jsonb' : '';
    const broken = [
      '[]',
      '{"a": 1}',
      '{"a": {"until": "1", "units": 1, "tokens": 0, "at": 0}}',
      '{"a": {"until": 1, "units": 1, "at": 0}}',
      '{"a": {"until": 1, "units": 1, "tokens": -1, "at": 0}}',
      ...(fixture.dialect === 'sqlite' ? ['not json'] : []),
    ];
    for (const text of broken) {
      await fixture.rows(`UPDATE "${store.table}" SET "lease_holds" = ?${jsonb} WHERE "id" = ?`, text, key.id);
      const before = await wholeRow(fixture, store.table, key.id);
      for (const attempt of [() => store.reserve(key.id, reservation(T, 1, null, null)), () => store.settle(key.id, settlement('a', 1, T, null))]) {
        const error = await rejection(attempt);
        expect(isKeygateError(error) && [error.code, error.field]).toEqual(['invalid_record', 'leaseHolds']);
        expect((error as Error).message).not.toContain(key.keyHash);
      }
      expect(await wholeRow(fixture, store.table, key.id)).toEqual(before);
    }
    await fixture.rows(`UPDATE "${store.table}" SET "lease_holds" = ?${jsonb}, "day_count" = -1 WHERE "id" = ?`, '{}', key.id);
    const counters = await rejection(() => store.reserve(key.id, reservation(T, 1, null, { perDay: 5 })));
    expect(isKeygateError(counters) && [counters.code, counters.field]).toEqual(['invalid_record', 'counters']);
    await fixture.rows(`UPDATE "${store.table}" SET "day_count" = 0, "use_count" = -1 WHERE "id" = ?`, key.id);
    const uses = await rejection(() => store.reserve(key.id, reservation(T, 1, 3, null)));
    expect(isKeygateError(uses) && [uses.code, uses.field]).toEqual(['invalid_record', 'useCount']);
  });

  it('refuses with invalid_argument, writing nothing, a lease name the database could not give back or numbers that are not finite', async () => {
    const { store, key } = await keyed();
    const before = await wholeRow(fixture, store.table, key.id);
    const bad: [Partial<ReserveRequest>, string][] = [
      [{ lease: 'half \ud83d pair' }, 'lease'],
      [{ leaseMs: Number.POSITIVE_INFINITY }, 'leaseMs'],
      [{ units: Number.NaN }, 'units'],
      [{ now: Number.NaN }, 'now'],
      ...(fixture.dialect === 'postgres' ? ([[{ lease: 'nul \u0000 inside' }, 'lease']] as [Partial<ReserveRequest>, string][]) : []),
    ];
    for (const [overrides, field] of bad) {
      const error = await rejection(() => store.reserve(key.id, reservation(T, 2, null, null, overrides)));
      expect(isKeygateError(error) && [error.code, error.field]).toEqual(['invalid_argument', field]);
    }
    expect(await wholeRow(fixture, store.table, key.id)).toEqual(before);
  });

  describe('a table created by version 4', () => {
    function version4(table: string): string {
      return readFileSync(join(__dirname, 'fixtures', `version-4-${fixture.dialect}.sql`), 'utf8').replaceAll('keygate_api_keys', table);
    }

    /** A key version 4 wrote: every column it had, copied from a row today's store wrote. */
    async function keyOfVersion4(table: string): Promise<ApiKeyRecord> {
      const scratch = await fixture.fresh();
      const key = testRecord(T, { name: 'from version 4', useCount: 3, maxUses: 10, tags: ['old'] });
      await scratch.insert(key);
      const columns = (await columnsOf(table)).map((row) => `"${String(row.name)}"`);
      expect(columns).toContain('"alerts"');
      expect(columns).not.toContain('"lease_holds"');
      await fixture.rows(`INSERT INTO "${table}" (${columns.join(', ')}) SELECT ${columns.join(', ')} FROM "${scratch.table}"`);
      return key;
    }

    async function columnsOf(table: string): Promise<Row[]> {
      return fixture.dialect === 'postgres'
        ? fixture.rows(
            `SELECT column_name AS "name", data_type, is_nullable, column_default FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position`,
            table,
          )
        : fixture.rows('SELECT "name", "type", "notnull", "dflt_value", "pk" FROM pragma_table_info(?) ORDER BY cid', table);
    }

    async function indexesOf(table: string): Promise<string[]> {
      const rows =
        fixture.dialect === 'postgres'
          ? await fixture.rows('SELECT indexdef AS "def" FROM pg_indexes WHERE tablename = ? ORDER BY indexname', table)
          : await fixture.rows("SELECT sql AS \"def\" FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL ORDER BY name", table);
      return rows.map((row) => String(row.def).replaceAll(table, 'T'));
    }

    async function expectLikeFresh(table: string): Promise<void> {
      const fresh = await fixture.fresh();
      expect(await columnsOf(table)).toEqual(await columnsOf(fresh.table));
      expect(await indexesOf(table)).toEqual(await indexesOf(fresh.table));
    }

    async function reservesAtOnce(store: SqlStore, key: ApiKeyRecord): Promise<void> {
      expect(await store.findById(key.id)).toStrictEqual(key);
      expect(await storedHolds(fixture, store.table, key.id)).toEqual({});
      const held = reservation(T + 1, 20, 10, { perDay: 100 });
      expect(await store.reserve(key.id, held)).toEqual({ admitted: true, granted: 7, useCount: 10, dayCount: 7 });
      await store.settle(key.id, settlement(held.lease, 4, T + 2, { perDay: 100 }));
      expect((await store.findById(key.id))?.useCount).toBe(6);
      expect(await store.consume(key.id, { now: T + 3, maxUses: 10, rateLimit: { perDay: 100 } })).toEqual({ admitted: true, useCount: 7, dayCount: 4 });
    }

    it('gains lease_holds through migrate() (migrations racing), its rows holding none, and reserves at once', async () => {
      const table = `v4_keys_${++tables}`;
      await fixture.exec(version4(table));
      const key = await keyOfVersion4(table);
      const upgraded = fixture.open(table);
      await Promise.all([upgraded.migrate(), upgraded.migrate(), upgraded.migrate()]);
      await expectLikeFresh(table);
      await upgraded.migrate(); // a no-op now
      await reservesAtOnce(upgraded, key);
    });

    it('gains lease_holds through today\'s docs/sql script too (SQLite: once its commented ADD COLUMN ran), which runs again', async () => {
      const table = `v4_scripted_${++tables}`;
      await fixture.exec(version4(table));
      const key = await keyOfVersion4(table);
      const today = readFileSync(join(__dirname, `../../docs/sql/${fixture.dialect}.sql`), 'utf8').replaceAll('keygate_api_keys', table);
      if (fixture.dialect === 'sqlite') {
        const add = today.match(new RegExp(`^-- (ALTER TABLE "${table}" ADD COLUMN "lease_holds" [^;]*;)$`, 'm'))?.[1];
        expect(add).toBe(`ALTER TABLE "${table}" ADD COLUMN "lease_holds" TEXT NOT NULL DEFAULT '{}';`);
        await fixture.exec(add as string);
      }
      await fixture.exec(today);
      await fixture.exec(today);
      await expectLikeFresh(table);
      await reservesAtOnce(fixture.open(table), key);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// PostgreSQL: the transaction on a Pool, the guarded write on a single connection.

describePostgres('leased mode on PostgreSQL: the atomic step', () => {
  const pg = postgresWithPool(8);

  async function keyed(client: PostgresClient = pg.pool, overrides: Partial<ApiKeyRecord> = {}): Promise<{ store: SqlStore; key: ApiKeyRecord }> {
    const store = new SqlStore({ dialect: 'postgres', client, table: `atomic_${++tables}` });
    await store.migrate();
    const key = testRecord(T, { name: 'atomic', ...overrides });
    await store.insert(key);
    return { store, key };
  }

  async function row(store: SqlStore, id: string): Promise<Row> {
    const { rows } = await pg.pool.query(`SELECT "use_count"::int AS "uses", "lease_holds"::text AS "holds", "xmin"::text AS "version" FROM "${store.table}" WHERE "id" = $1`, [id]);
    return rows[0] as Row;
  }

  /** Another session takes the row lock of `id` in an open transaction; `release()` rolls it back. */
  async function lockRow(store: SqlStore, id: string): Promise<{ session: PoolClient; release: () => Promise<void> }> {
    const session = await pg.pool.connect();
    await session.query('BEGIN');
    await session.query(`SELECT 1 FROM "${store.table}" WHERE "id" = $1 FOR UPDATE`, [id]);
    let released = false;
    return {
      session,
      release: async () => {
        if (released) return;
        released = true;
        await session.query('ROLLBACK');
        session.release();
      },
    };
  }

  /**
   * A Pool of its own whose lent connections record every statement and fail the ones `fails`
   * picks (without sending them), for the transaction's failure paths.
   */
  function faultyPool(fails: (text: string) => boolean): { pool: Pool; sent: string[] } {
    const pool = new Pool({ connectionString: pg.server.connectionString, max: 1 });
    pool.on('error', () => undefined);
    const sent: string[] = [];
    const connect = pool.connect.bind(pool) as () => Promise<PoolClient>;
    const lend = async (): Promise<PoolClient> => {
      const session = await connect();
      const query = session.query.bind(session) as (text: string, values?: unknown[]) => Promise<unknown>;
      (session as unknown as { query: typeof query }).query = (text, values) => {
        sent.push(text.split('\n')[0] as string);
        return fails(text) ? Promise.reject(new Error(`injected failure of: ${text.slice(0, 20)}`)) : query(text, values);
      };
      return session;
    };
    (pool as unknown as { connect: typeof lend }).connect = lend;
    (pool as unknown as { query: () => never }).query = () => {
      throw new Error('leased mode must not send statements outside its transaction');
    };
    return { pool, sent };
  }

  it('on a Pool: BEGIN, the lock, the write and COMMIT on one lent connection, which goes back to the pool', async () => {
    const { store: migrated, key } = await keyed();
    const { pool, sent } = faultyPool(() => false);
    try {
      const store = new SqlStore({ dialect: 'postgres', client: pool, table: migrated.table });
      expect(await store.reserve(key.id, reservation(T, 3, null, null))).toEqual({ admitted: true, granted: 3, useCount: 3 });
      expect(sent).toEqual(['BEGIN ISOLATION LEVEL READ COMMITTED', 'WITH "locked" AS MATERIALIZED (', expect.stringMatching(/^UPDATE /), 'COMMIT']);
      expect([pool.totalCount, pool.idleCount]).toEqual([1, 1]);
    } finally {
      await pool.end();
    }
  });

  it.each([
    ['the write', (text: string) => text.startsWith('UPDATE ')],
    ['the COMMIT', (text: string) => text === 'COMMIT'],
  ])('on a Pool: a failure of %s rolls the whole reservation back, and the connection is reused', async (_, fails) => {
    const { store: migrated, key } = await keyed();
    const before = await row(migrated, key.id);
    const { pool, sent } = faultyPool(fails);
    try {
      const store = new SqlStore({ dialect: 'postgres', client: pool, table: migrated.table });
      expect(String(await rejection(() => store.reserve(key.id, reservation(T, 3, null, null))))).toMatch(/injected failure/);
      expect(sent[sent.length - 1]).toBe('ROLLBACK');
      expect([pool.totalCount, pool.idleCount]).toEqual([1, 1]);
    } finally {
      await pool.end();
    }
    expect(await row(migrated, key.id)).toEqual(before);
    // The row lock went with the transaction: a consume does not wait for it.
    expect(await migrated.consume(key.id, { now: T, maxUses: null, rateLimit: null, deadline: Date.now() + 2_000 })).toEqual({ admitted: true, useCount: 1 });
  });

  it('on a Pool: when the ROLLBACK fails too, the connection is closed, never reused', async () => {
    const { store: migrated, key } = await keyed();
    const before = await row(migrated, key.id);
    const { pool } = faultyPool((text) => text.startsWith('UPDATE ') || text === 'ROLLBACK');
    try {
      const store = new SqlStore({ dialect: 'postgres', client: pool, table: migrated.table });
      await rejection(() => store.reserve(key.id, reservation(T, 3, null, null)));
      expect(pool.totalCount).toBe(0);
    } finally {
      await pool.end();
    }
    // The closed session's transaction ended with it.
    expect(await migrated.consume(key.id, { now: T, maxUses: null, rateLimit: null, deadline: Date.now() + 5_000 })).toEqual({ admitted: true, useCount: 1 });
    expect((await row(migrated, key.id)).holds).toBe(before.holds);
  });

  it('reads its clock once the row lock is held: a reservation that waited past its deadline is refused, writing nothing', async () => {
    const { store, key } = await keyed();
    const before = await row(store, key.id);
    const lock = await lockRow(store, key.id);
    try {
      const waiting = store.reserve(key.id, reservation(T, 3, null, null, { deadline: Date.now() + 150 }));
      await sleep(400);
      await lock.release();
      expect(await waiting).toEqual({ admitted: false, refusal: 'deadline_exceeded', granted: 0, useCount: 0 });
    } finally {
      await lock.release();
    }
    expect(await row(store, key.id)).toEqual(before);
    // The control: with the deadline still ahead, the same wait is admitted.
    const again = await lockRow(store, key.id);
    const patient = store.reserve(key.id, reservation(T, 3, null, null, { deadline: Date.now() + 10_000 }));
    await sleep(200);
    await again.release();
    expect(await patient).toEqual({ admitted: true, granted: 3, useCount: 3 });
  });

  it('sees a revocation committed while it waited for the row lock', async () => {
    const { store, key } = await keyed();
    const session = await pg.pool.connect();
    try {
      await session.query('BEGIN');
      await session.query(`UPDATE "${store.table}" SET "status" = 'revoked', "revoked_at" = now() WHERE "id" = $1`, [key.id]);
      const waiting = store.reserve(key.id, reservation(T, 3, null, null));
      await sleep(200);
      await session.query('COMMIT');
      expect(await waiting).toEqual({ admitted: false, refusal: 'api_key_revoked', granted: 0, useCount: 0 });
    } finally {
      session.release();
    }
  });

  it('whatever the pool\'s default isolation: concurrent reservations on SERIALIZABLE connections all succeed and never over-grant', async () => {
    const { store: migrated, key } = await keyed();
    const serializable = new Pool({ connectionString: pg.server.connectionString, max: 5, options: '-c default_transaction_isolation=serializable' });
    serializable.on('error', () => undefined);
    try {
      const store = new SqlStore({ dialect: 'postgres', client: serializable, table: migrated.table });
      const outcomes = await Promise.all(Array.from({ length: 20 }, () => store.reserve(key.id, reservation(T, 3, 40, { perSecond: 100, burst: 100 }))));
      expect(outcomes.reduce((sum, outcome) => sum + (outcome?.granted ?? 0), 0)).toBe(40);
    } finally {
      await serializable.end();
    }
    expect((await row(migrated, key.id)).uses).toBe(40);
  });

  it('on a single connection: no transaction is opened on it, and the Client is never connected again', async () => {
    const client = new Client({ connectionString: pg.server.connectionString });
    client.on('error', () => undefined);
    await client.connect();
    try {
      const connect = jest.spyOn(client, 'connect');
      const sent: string[] = [];
      const query = client.query.bind(client) as (text: string, values?: unknown[]) => Promise<unknown>;
      (client as unknown as { query: typeof query }).query = (text, values) => (sent.push(text), query(text, values));
      const { store, key } = await keyed(client as unknown as PostgresClient);
      const held = reservation(T, 3, 10, null);
      expect(await store.reserve(key.id, held)).toEqual({ admitted: true, granted: 3, useCount: 3 });
      await store.settle(key.id, settlement(held.lease, 1, T + 1, null));
      expect((await store.findById(key.id))?.useCount).toBe(2);
      expect(sent.filter((text) => /^\s*(BEGIN|COMMIT|ROLLBACK|START)/i.test(text))).toEqual([]);
      expect(connect).not.toHaveBeenCalled();
    } finally {
      await client.end();
    }
  });

  it('on a single connection: a consume committed between the read and the write is never overwritten; the reservation decides again', async () => {
    const { store: pooled, key } = await keyed(pg.pool, { maxUses: 5 });
    const session = await pg.pool.connect();
    try {
      let interleaved = false;
      const client: PostgresClient = {
        query: async (text, values) => {
          const result = await session.query(text, values);
          if (!interleaved && text.includes('FOR UPDATE')) {
            // After the reservation read the row, another connection consumes one use.
            interleaved = true;
            expect(await pooled.consume(key.id, { now: T, maxUses: 5, rateLimit: null })).toEqual({ admitted: true, useCount: 1 });
          }
          return result;
        },
      };
      const store = new SqlStore({ dialect: 'postgres', client, table: pooled.table });
      const request = reservation(T, 10, 5, null);
      const expected = decideReservation(decideConsume(initialCounters(0), { now: T, maxUses: 5, rateLimit: null }).next as CounterState, null, request);
      expect(await store.reserve(key.id, request)).toEqual(expected.outcome);
      expect(expected.outcome).toEqual({ admitted: true, granted: 4, useCount: 5 });
      expect(interleaved).toBe(true);
    } finally {
      session.release();
    }
    expect((await row(pooled, key.id)).uses).toBe(5);
  });

  it('single connections and a Pool reserving one key at once grant exactly its uses, never more', async () => {
    const { store: pooled, key } = await keyed();
    const clients = await Promise.all(
      Array.from({ length: 3 }, async () => {
        const client = new Client({ connectionString: pg.server.connectionString });
        client.on('error', () => undefined);
        await client.connect();
        return client;
      }),
    );
    try {
      const limits: RateLimit = { perDay: 1_000 };
      const reserve = (store: SqlStore, i: number) => store.reserve(key.id, reservation(T, 1 + (i % 4), 61, limits));
      // Each Client one reservation at a time (a pg Client is one session: pg queues, and warns
      // about, queries sent while one runs), all of them and the Pool's at once.
      const onClient = clients.map(async (client, c) => {
        const store = new SqlStore({ dialect: 'postgres', client: client as unknown as PostgresClient, table: pooled.table });
        const mine = [];
        for (let i = 0; i < 12; i++) mine.push(await reserve(store, c + i));
        return mine;
      });
      const onPool = Array.from({ length: 12 }, (_, i) => reserve(pooled, i).then((outcome) => [outcome]));
      const outcomes = (await Promise.all([...onClient, ...onPool])).flat();
      expect(outcomes.reduce((sum, outcome) => sum + (outcome?.granted ?? 0), 0)).toBe(61);
      expect(outcomes.every((outcome) => outcome !== null && (outcome.admitted || outcome.refusal === 'usage_exhausted'))).toBe(true);
    } finally {
      await Promise.all(clients.map((client) => client.end()));
    }
    const { rows } = await pg.pool.query(`SELECT "use_count"::int AS "uses", "day_count"::int AS "day" FROM "${pooled.table}" WHERE "id" = $1`, [key.id]);
    expect(rows).toEqual([{ uses: 61, day: 61 }]);
  });
});
