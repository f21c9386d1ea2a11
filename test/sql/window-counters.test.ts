/**
 * The quota windows' counters in SQL: the minute, hour and month columns (version 2 of the table),
 * generated from `QUOTA_WINDOWS`.
 *
 * - PostgreSQL's window index (the calendar month in integer arithmetic) equals JavaScript's
 *   `windowIndex` on any instant a Date holds: month and leap-day boundaries to the millisecond,
 *   before 1970, before year 1, fractions of a millisecond.
 * - A table created by version 1's DDL (test/sql/fixtures/version-1-*.sql, as shipped before the
 *   windows), holding a used key, is upgraded by migrate() to exactly a fresh table, and its key
 *   then counts minutes, hours and months from there.
 * - Random sequences of consumes (clock steps across minutes, hours, UTC days and months, leap
 *   years, clocks that lag) give the outcomes and stored counters of `decideConsume`, on both
 *   dialects.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { Pool } from 'pg';
import type { ApiKeyRecord, RateLimit } from 'keygate';
import { SqlStore } from 'keygate/sql';
import { type ConsumeRequest, type CounterState, decideConsume, initialCounters } from '../../src/policy/limits';
import { QUOTA_WINDOWS, windowIndex, windowStart } from '../../src/policy/windows';
import { COUNTER_COLUMNS } from '../../src/stores/sql/columns';
import { windowIndexSql } from '../../src/stores/sql/postgres-sql';
import { type PostgresServer, describePostgres, startPostgres } from '../helpers/postgres-server';
import { testRecord } from '../helpers/records';
import { describeEachDialect, postgresColumns } from '../helpers/sql-stores';

jest.setTimeout(60_000);

const RUNS = Number(process.env.KEYGATE_PROPERTY_RUNS ?? 60);
const JS_MIN = -8.64e15;
const JS_MAX = 8.64e15;
const MONTH = QUOTA_WINDOWS.find((window) => window.name === 'month')!;
const T = Date.UTC(2024, 1, 29, 23, 59, 30); // a leap day, 30 s before March

function version1(dialect: 'postgres' | 'sqlite', table: string): string {
  return readFileSync(join(__dirname, 'fixtures', `version-1-${dialect}.sql`), 'utf8').replaceAll('keygate_api_keys', table);
}

/** Instants where a window index is easiest to get wrong. */
function edgeInstants(): number[] {
  const instants = [0, -1, -0.5, 0.5, -0.0001, JS_MIN, JS_MAX, JS_MIN + 1, JS_MAX - 1];
  for (const year of [-271_821, -4714, -401, -400, -1, 0, 1, 4, 100, 1600, 1900, 1969, 1970, 2000, 2023, 2024, 2100, 2400, 9999, 10_000, 275_759]) {
    for (let month = 0; month < 12; month++) {
      const start = windowStart(MONTH, year * 12 + month); // Date.UTC would read years 0-99 as 1900-1999
      if (start < JS_MIN || start > JS_MAX) continue;
      instants.push(start, start - 1, start + 1, start - 0.25, start + 0.25, start + 86_400_000 * 28, start + 86_400_000 * 29 - 1);
    }
  }
  return instants.filter((at) => at >= JS_MIN && at <= JS_MAX);
}

describePostgres('window indexes in PostgreSQL', () => {
  let server: PostgresServer;
  let pool: Pool;

  beforeAll(async () => {
    server = await startPostgres();
    pool = new Pool({ connectionString: server.connectionString, max: 2 });
    pool.on('error', () => undefined);
  });

  afterAll(async () => {
    await pool?.end();
    await server?.destroy();
  });

  /** Every window's SQL index of each instant, computed by the server in one query. */
  async function sqlIndexes(instants: readonly number[]): Promise<Record<string, string>[]> {
    const columns = QUOTA_WINDOWS.map((window) => `(${windowIndexSql(window, '"at"')})::text AS "${window.name}"`).join(', ');
    const { rows } = await pool.query(`SELECT ${columns} FROM unnest($1::float8[]) WITH ORDINALITY AS "t"("at", "n") ORDER BY "n"`, [instants]);
    return rows as Record<string, string>[];
  }

  /**
   * windowIndex's month of an instant. A negative fraction of a millisecond is floored first:
   * windowIndex answers it from its cache of the last month with floor semantics, but through
   * `new Date()` (which truncates toward zero) otherwise, so its month of -0.5 depends on the
   * previous call. The SQL floors, like the day of the same instant.
   */
  function expected(window: (typeof QUOTA_WINDOWS)[number], at: number): string {
    return String(windowIndex(window, window.lengthMs === null ? Math.floor(at) : at));
  }

  async function expectAgreement(instants: readonly number[]): Promise<void> {
    const rows = await sqlIndexes(instants);
    const mismatches = instants.flatMap((at, i) =>
      QUOTA_WINDOWS.filter((window) => rows[i]?.[window.name] !== expected(window, at)).map((window) => ({
        at,
        iso: new Date(at).toISOString(),
        window: window.name,
        sql: rows[i]?.[window.name],
        js: expected(window, at),
      })),
    );
    expect(mismatches).toEqual([]);
  }

  it('equals windowIndex at month, leap-day, epoch and year-0 boundaries, to the millisecond and below', async () => {
    await expectAgreement(edgeInstants());
  });

  it('equals windowIndex on random instants over the whole range of a Date', async () => {
    const instants = fc.sample(
      fc.oneof(
        fc.integer({ min: JS_MIN, max: JS_MAX }),
        fc.integer({ min: Date.UTC(1900, 0, 1), max: Date.UTC(2200, 0, 1) }),
        fc.double({ min: JS_MIN, max: JS_MAX, noNaN: true }),
        // Within a millisecond of the start of a random month.
        fc.tuple(fc.integer({ min: -270_000 * 12, max: 270_000 * 12 }), fc.double({ min: -1, max: 1, noNaN: true })).map(([index, offset]) => windowStart(MONTH, index) + offset),
      ),
      { numRuns: 20_000, seed: 11 },
    );
    // PostgreSQL refuses subnormal float8 input ("underflow"): no clock reads 1e-310 ms.
    await expectAgreement(instants.filter((at) => at >= JS_MIN && at <= JS_MAX && (at === 0 || Math.abs(at) > 1e-300)));
  });
});

/** A key that version 1 used: 7 uses today, its bucket last drawn at `T - 1000`. */
function usedKey(): ApiKeyRecord {
  return testRecord(T - 86_400_000, { name: 'used by version 1', useCount: 7 });
}

const VERSION_1_COUNTERS = { day: Math.floor(T / 86_400_000), day_count: 7, tokens: 3.5, tokens_at: T - 1000 };

const LIMITS: RateLimit = { perSecond: 10, burst: 10, perMinute: 2, perHour: 3, perDay: 20, perMonth: 100 };

/** What the upgraded key must answer: decideConsume from version 1's counters, the new windows unused. */
function expectedOutcomes(requests: readonly ConsumeRequest[]): unknown[] {
  let state: CounterState = {
    ...initialCounters(7),
    day: VERSION_1_COUNTERS.day,
    dayCount: 7,
    tokens: VERSION_1_COUNTERS.tokens,
    tokensAt: VERSION_1_COUNTERS.tokens_at,
  };
  return requests.map((request) => {
    const { outcome, next } = decideConsume(state, request);
    if (next) state = next;
    return outcome;
  });
}

/** Two uses in the minute before March, a third refused by the minute; March: the month restarts, the hour and day go on. */
const UPGRADED_REQUESTS: ConsumeRequest[] = [T, T + 1000, T + 2000, T + 31_000, T + 32_000, T + 33_000].map((now) => ({ now, maxUses: null, rateLimit: LIMITS }));

describe('upgrading a version-1 table (sqlite)', () => {
  it('adds the window counters with -1 / 0, matches a fresh table, and counts minute, hour and month from there', async () => {
    const db = new Database(':memory:');
    try {
      db.exec(version1('sqlite', 'v1_keys'));
      const before = db.prepare('SELECT name FROM pragma_table_info(?) ORDER BY cid').all('v1_keys') as { name: string }[];
      expect(before.map((column) => column.name)).not.toContain('minute');
      const store = new SqlStore({ dialect: 'sqlite', client: db, table: 'v1_keys' });
      const key = usedKey();
      // The row as version 1 wrote it: today's insert into a scratch table, copied column by column.
      const scratch = new SqlStore({ dialect: 'sqlite', client: db, table: 'scratch_keys' });
      await scratch.migrate();
      await scratch.insert(key);
      const v1Columns = before.map((column) => `"${column.name}"`).join(', ');
      db.exec(`INSERT INTO "v1_keys" (${v1Columns}) SELECT ${v1Columns} FROM "scratch_keys"`);
      db.prepare('UPDATE "v1_keys" SET "day" = ?, "day_count" = ?, "tokens" = ?, "tokens_at" = ? WHERE "id" = ?').run(
        VERSION_1_COUNTERS.day,
        VERSION_1_COUNTERS.day_count,
        VERSION_1_COUNTERS.tokens,
        VERSION_1_COUNTERS.tokens_at,
        key.id,
      );

      await store.migrate();
      await store.migrate();
      const describe = (table: string) => db.prepare('SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid').all(table);
      await new SqlStore({ dialect: 'sqlite', client: db, table: 'fresh_keys' }).migrate();
      expect(describe('v1_keys')).toEqual(describe('fresh_keys'));
      expect(db.prepare('SELECT "minute", "minute_count", "hour", "hour_count", "month", "month_count", "day_count" FROM "v1_keys"').get()).toEqual({
        minute: -1,
        minute_count: 0,
        hour: -1,
        hour_count: 0,
        month: -1,
        month_count: 0,
        day_count: 7,
      });
      expect(await store.findById(key.id)).toStrictEqual(key);

      const outcomes = [];
      for (const request of UPGRADED_REQUESTS) outcomes.push(await store.consume(key.id, request));
      expect(outcomes).toEqual(expectedOutcomes(UPGRADED_REQUESTS));
      expect(outcomes[0]).toEqual({ admitted: true, useCount: 8, minuteCount: 1, hourCount: 1, dayCount: 8, monthCount: 1, tokens: 9 });
      expect(outcomes[2]).toMatchObject({ admitted: false, refusal: 'quota_exceeded', minuteCount: 2, hourCount: 2, dayCount: 9, monthCount: 2 });
      expect(outcomes[3]).toMatchObject({ admitted: true, useCount: 10, minuteCount: 1, hourCount: 1, dayCount: 1, monthCount: 1 });
    } finally {
      db.close();
    }
  });
});

describePostgres('upgrading a version-1 table (postgres)', () => {
  let server: PostgresServer;
  let pool: Pool;

  beforeAll(async () => {
    server = await startPostgres();
    pool = new Pool({ connectionString: server.connectionString, max: 4 });
    pool.on('error', () => undefined);
  });

  afterAll(async () => {
    await pool?.end();
    await server?.destroy();
  });

  const describeTable = (table: string) => postgresColumns(pool, table);

  it('adds the window counters with -1 / 0, matches a fresh table, and counts minute, hour and month from there', async () => {
    await pool.query(version1('postgres', 'v1_keys'));
    expect((await describeTable('v1_keys')).map((column) => (column as { column_name: string }).column_name)).not.toContain('minute');
    const store = new SqlStore({ dialect: 'postgres', client: pool, table: 'v1_keys' });
    const key = usedKey();
    // The row as version 1 wrote it: today's insert into a scratch table, copied column by column.
    const scratch = new SqlStore({ dialect: 'postgres', client: pool, table: 'scratch_keys' });
    await scratch.migrate();
    await scratch.insert(key);
    const v1Columns = (await describeTable('v1_keys')).map((column) => `"${(column as { column_name: string }).column_name}"`).join(', ');
    await pool.query(`INSERT INTO "v1_keys" (${v1Columns}) SELECT ${v1Columns} FROM "scratch_keys"`);
    await pool.query('UPDATE "v1_keys" SET "day" = $1, "day_count" = $2, "tokens" = $3, "tokens_at" = $4 WHERE "id" = $5', [
      VERSION_1_COUNTERS.day,
      VERSION_1_COUNTERS.day_count,
      VERSION_1_COUNTERS.tokens,
      VERSION_1_COUNTERS.tokens_at,
      key.id,
    ]);

    await Promise.all([store.migrate(), store.migrate()]);
    await new SqlStore({ dialect: 'postgres', client: pool, table: 'fresh_keys' }).migrate();
    expect(await describeTable('v1_keys')).toEqual(await describeTable('fresh_keys'));
    const { rows } = await pool.query('SELECT "minute", "minute_count", "hour", "hour_count", "month", "month_count", "day_count" FROM "v1_keys"');
    expect(rows).toEqual([{ minute: '-1', minute_count: '0', hour: '-1', hour_count: '0', month: '-1', month_count: '0', day_count: '7' }]);
    expect(await store.findById(key.id)).toStrictEqual(key);

    const outcomes = [];
    for (const request of UPGRADED_REQUESTS) outcomes.push(await store.consume(key.id, request));
    expect(outcomes).toEqual(expectedOutcomes(UPGRADED_REQUESTS));
    expect(outcomes[0]).toEqual({ admitted: true, useCount: 8, minuteCount: 1, hourCount: 1, dayCount: 8, monthCount: 1, tokens: 9 });
    expect(outcomes[3]).toMatchObject({ admitted: true, useCount: 10, minuteCount: 1, hourCount: 1, dayCount: 1, monthCount: 1 });
  });

  it('the version-1 script followed by today\'s docs/sql/postgres.sql upgrades the table too, and runs again', async () => {
    await pool.query(version1('postgres', 'scripted_keys'));
    const today = readFileSync(join(__dirname, '../../docs/sql/postgres.sql'), 'utf8').replaceAll('keygate_api_keys', 'scripted_keys');
    await pool.query(today);
    await pool.query(today);
    await new SqlStore({ dialect: 'postgres', client: pool, table: 'scripted_fresh' }).migrate();
    expect(await describeTable('scripted_keys')).toEqual(await describeTable('scripted_fresh'));
  });
});

// ---------------------------------------------------------------------------------------------
// Random consume sequences against decideConsume.

/** Where a sequence starts: near a month's end (leap years included), before 1970, or anywhere. */
const START = fc.oneof(
  fc.tuple(fc.integer({ min: 1890, max: 2110 }), fc.integer({ min: 0, max: 11 }), fc.integer({ min: -90_000, max: 90_000 })).map(([year, month, offset]) => Date.UTC(year, month + 1, 1) + offset * 1000),
  fc.constantFrom(Date.UTC(2024, 1, 29, 23, 59, 59, 500), Date.UTC(2023, 11, 31, 23, 59, 59), Date.UTC(1969, 11, 31, 23, 59, 59, 999), Date.UTC(1900, 1, 28, 23, 59), Date.UTC(2000, 1, 29, 23, 59)),
  fc.integer({ min: Date.UTC(-2000, 0, 1), max: Date.UTC(9000, 0, 1) }),
);

/** A clock step: small, across a second, minute, hour, day or month, or back (a lagging clock). */
const STEP = fc.oneof(
  fc.constantFrom(0, 1, 250, 999, 1000, 59_999, 60_000, 3_600_000, 86_400_000, 29 * 86_400_000),
  fc.integer({ min: -120_000, max: 120_000 }),
  fc.integer({ min: 0, max: 40 * 86_400_000 }),
  fc.integer({ min: -3_600_000, max: 0 }),
);

const QUOTA = fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined });

const RATE_LIMIT: fc.Arbitrary<RateLimit | null> = fc.option(
  fc
    .record({ perSecond: QUOTA, burst: QUOTA, perMinute: QUOTA, perHour: QUOTA, perDay: fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined }), perMonth: fc.option(fc.integer({ min: 1, max: 8 }), { nil: undefined }) })
    .map((limit) => Object.fromEntries(Object.entries(limit).filter(([, value]) => value !== undefined)) as RateLimit),
  { nil: null },
);

const SEQUENCE = fc.record({
  start: START,
  maxUses: fc.option(fc.integer({ min: 0, max: 12 }), { nil: null }),
  steps: fc.array(fc.record({ step: STEP, rateLimit: RATE_LIMIT }), { minLength: 1, maxLength: 16 }),
});

describeEachDialect('consume sequences equal decideConsume', (fixture, dialect) => {
  it('outcomes and stored counters, over random clocks and limits', async () => {
    await fc.assert(
      fc.asyncProperty(SEQUENCE, async ({ start, maxUses, steps }) => {
        const store = fixture.store();
        const key = testRecord(start - 1000, { maxUses });
        await store.insert(key);
        let state = initialCounters(0);
        let now = start;
        for (const { step, rateLimit } of steps) {
          now += step;
          const request: ConsumeRequest = { now, maxUses, rateLimit };
          const { outcome, next } = decideConsume(state, request);
          if (next) state = next;
          expect(await store.consume(key.id, request)).toEqual(outcome);
        }
        if (dialect === 'postgres') {
          const { rows } = await fixture.pool().query(`SELECT "use_count", ${COUNTER_COLUMNS.map((column) => `"${column.name}"`).join(', ')} FROM "keygate_api_keys" WHERE "id" = $1`, [key.id]);
          const stored = rows[0] as Record<string, string | number | null>;
          const expected: Record<string, unknown> = { use_count: String(state.useCount) };
          for (const column of COUNTER_COLUMNS) {
            const value = state[column.field];
            expected[column.name] = column.kind === 'tokens' || column.kind === 'tokensAt' ? value : String(value);
          }
          expect(stored).toEqual(expected);
        }
      }),
      { numRuns: RUNS },
    );
  });
});
