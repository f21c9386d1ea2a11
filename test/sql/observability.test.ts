/**
 * The audit trail, usage cells and alert claims of SqlStore, on each dialect's own terms (the
 * store-independent behaviour is the contract suite's, run by the two SQL contract files):
 *
 * - the tables named from the key table (`_audit`, `_usage`, `_usage_batches`, `_alert_claims`),
 *   in its schema, with index names PostgreSQL never truncates, and every `listAudit` filter read
 *   through its own index in (at, id) order;
 * - exact round trips of audit entries, keyset pages under every filter, `already_exists`;
 * - usage: sums and maxima, exactly once per batch id (batch ids forgotten a day after
 *   `batch.now`, a few at a time), concurrent batches adding up exactly, batches refused whole,
 *   and `purge` removing a purged key's cells in the same transaction;
 * - alert claims: one winner among concurrent claims, lapsed claims taken over and cleaned up;
 * - several real processes adding usage (with retried batches) and claiming alerts at once;
 * - a table created by version 3's DDL (test/sql/fixtures/version-3-*.sql, frozen) gains the
 *   version-4 columns and tables on migrate(), its rows reading the new fields' initial values.
 */
import { fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import type { PoolClient } from 'pg';
import { type ApiKeyRecord, isKeygateError } from 'keygate';
import { type PostgresClient, SqlStore, sqlSchema } from 'keygate/sql';
import type { AuditEntry, StoreAuditQuery, UsageBatch, UsageCell } from '../../src/stores/store';
import { COMPANION_NAME_SUFFIXES, MAX_INDEX_SUFFIX_LENGTH } from '../../src/stores/sql/companions';
import { PostgresEngine } from '../../src/stores/sql/postgres';
import { auditListStatement } from '../../src/stores/sql/postgres-observability';
import { SqliteEngine, usageChunkSizes } from '../../src/stores/sql/sqlite';
import { MAX_TABLE_NAME_LENGTH, parseTableName } from '../../src/stores/sql/table-name';
import { RETAIN_BATCH_IDS_MS, cellKeyOf, mergeCell } from '../../src/usage/cells';
import { describePostgres, postgresWithPool } from '../helpers/postgres-server';
import { testRecord } from '../helpers/records';
import { rejection } from '../helpers/rejection';
import type { Report, WireBatch, WireClaim, Work } from './fixtures/observability-worker';

jest.setTimeout(120_000);

const T = Date.UTC(2025, 5, 1, 12);
const DAY = 86_400_000;
const TODAY = Math.floor(T / DAY);
const WORKER = resolve(__dirname, 'fixtures/observability-worker.ts');

type Dialect = 'postgres' | 'sqlite';
type Row = Record<string, unknown>;

/** What each dialect's block gives its tests. */
interface Fixture {
  dialect: Dialect;
  /** A store on a table of its own, migrated. */
  fresh(table?: string): Promise<SqlStore>;
  /** A store on an existing table, without migrating it. */
  open(table: string): SqlStore;
  /** Rows of one statement written with `?` placeholders (numbered for PostgreSQL); none for a statement that returns none. */
  rows(sql: string, ...params: unknown[]): Promise<Row[]>;
  /** Runs a script of several statements. */
  exec(script: string): Promise<void>;
  /** How a worker process reaches the same database. */
  connection(): { connectionString?: string; file?: string };
  /** The engine under a store on `table`, its SQL recorded (PostgreSQL) or its SQLite database. */
  engine(table: string): { engine: PostgresEngine | SqliteEngine; statements: string[]; db?: Database.Database };
  /** PostgreSQL: a connection of its own, for a transaction held open across statements. */
  session?(): Promise<PoolClient>;
}

let tables = 0;

function describeDialects(name: string, body: (fixture: Fixture) => void): void {
  describe(`${name} (sqlite)`, () => {
    let dir: string;
    let file: string;
    let db: Database.Database;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'keygate-observability-'));
      file = join(dir, 'keys.db');
      db = new Database(file, { timeout: 30_000 });
      db.pragma('journal_mode = WAL');
    });
    afterAll(() => {
      db?.close();
      rmSync(dir, { recursive: true, force: true });
    });
    body({
      dialect: 'sqlite',
      fresh: async (table = `obs_${++tables}`) => {
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
      connection: () => ({ file }),
      engine: (table) => ({ engine: new SqliteEngine(db, parseTableName(table, false)), statements: [], db }),
    });
  });

  describePostgres(`${name} (postgres)`, () => {
    const pg = postgresWithPool(12);
    body({
      dialect: 'postgres',
      fresh: async (table = `obs_${++tables}`) => {
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
      connection: () => ({ connectionString: pg.server.connectionString }),
      engine: (table) => {
        const statements: string[] = [];
        const recording: PostgresClient = { query: (text, values) => (statements.push(text), pg.pool.query(text, values)) };
        return { engine: new PostgresEngine(recording, parseTableName(table, true)), statements };
      },
      session: () => pg.pool.connect(),
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Builders and expectations.

function entry(overrides: Partial<AuditEntry> = {}): AuditEntry {
  return { id: randomUUID(), at: new Date(T), action: 'key.updated', keyId: randomUUID(), actor: null, changes: {}, ...overrides };
}

/** JavaScript's (at, id) order: what every page must follow. */
function byPosition(a: AuditEntry, b: AuditEntry): number {
  return a.at.getTime() - b.at.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function cell(overrides: Partial<UsageCell> = {}): UsageCell {
  return {
    keyId: 'k',
    day: TODAY,
    route: '/v1/things/:id',
    outcome: 'admitted',
    requests: 1,
    status2xx: 1,
    status3xx: 0,
    status4xx: 0,
    status5xx: 0,
    totalResponseMicros: 1_000,
    maxResponseMicros: 1_000,
    ...overrides,
  };
}

function batch(cells: UsageCell[], now = T, id = randomUUID()): UsageBatch {
  return { id, now: new Date(now), cells };
}

/** The cells a sequence of batches adds up to (each batch id once), as readUsage of `keyId` returns them, sorted. */
function sums(batches: readonly { id: string; cells: readonly UsageCell[] }[], keyId: string): UsageCell[] {
  const seen = new Set<string>();
  const cells = new Map<string, UsageCell>();
  for (const { id, cells: added } of batches) {
    if (seen.has(id)) continue;
    seen.add(id);
    for (const added_ of added) {
      if (added_.keyId !== keyId) continue;
      const key = cellKeyOf(added_);
      const existing = cells.get(key);
      if (existing) mergeCell(existing, added_);
      else cells.set(key, { ...added_ });
    }
  }
  return sorted([...cells.values()]);
}

function sorted(cells: UsageCell[]): UsageCell[] {
  return [...cells].sort((a, b) => (cellKeyOf(a) < cellKeyOf(b) ? -1 : cellKeyOf(a) > cellKeyOf(b) ? 1 : 0));
}

async function usageOf(store: SqlStore, keyId: string, fromDay = Number.MIN_SAFE_INTEGER, toDay = Number.MAX_SAFE_INTEGER): Promise<UsageCell[]> {
  return sorted(await store.readUsage({ keyId, fromDay, toDay }));
}

/** The id of a record inserted into `store` for the test: a store keeps the cells of keys it holds only. */
async function held(store: SqlStore): Promise<string> {
  const record = testRecord(T);
  await store.insert(record);
  return record.id;
}

/** A seeded shuffle, so a failing order can be replayed. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  const result = [...items];
  let state = seed;
  for (let i = result.length - 1; i > 0; i--) {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    const j = state % (i + 1);
    [result[i], result[j]] = [result[j] as T, result[i] as T];
  }
  return result;
}

async function expectCode(action: () => Promise<unknown>, code: string): Promise<void> {
  const error = await rejection(action);
  expect(isKeygateError(error) ? error.code : error).toBe(code);
}

// ---------------------------------------------------------------------------------------------
// Names.

describe('the tables named from the key table', () => {
  it('sit next to it, in its schema, with index names of at most 63 bytes that never collide', () => {
    expect(Math.max(...COMPANION_NAME_SUFFIXES.map((suffix) => suffix.length))).toBeLessThanOrEqual(MAX_INDEX_SUFFIX_LENGTH);
    const longest = 'k'.repeat(MAX_TABLE_NAME_LENGTH);
    for (const dialect of ['postgres', 'sqlite'] as const) {
      const script = sqlSchema({ dialect, table: longest });
      const identifiers = [...script.matchAll(/"([^"]+)"/g)].map((match) => match[1] as string);
      for (const identifier of identifiers) expect(Buffer.byteLength(identifier)).toBeLessThanOrEqual(63);
      const created = [...script.matchAll(/(?:CONSTRAINT|INDEX IF NOT EXISTS|TABLE IF NOT EXISTS) "([^"]+)"/g)].map((match) => match[1]);
      expect(new Set(created).size).toBe(created.length);
      for (const suffix of ['audit', 'usage', 'usage_batches', 'alert_claims']) expect(script).toContain(`CREATE TABLE IF NOT EXISTS "${longest}_${suffix}" (`);
    }
    const qualified = sqlSchema({ dialect: 'postgres', table: 'auth.api_keys' });
    expect(qualified).toContain('CREATE TABLE IF NOT EXISTS "auth"."api_keys_audit" (');
    expect(qualified).toContain('CREATE INDEX IF NOT EXISTS "api_keys_audit_key_idx" ON "auth"."api_keys_audit" ("key_id", "at", "id")');
    expect(qualified).toContain('CREATE TABLE IF NOT EXISTS "auth"."api_keys_usage_batches" (');
    expect(qualified).toContain('CONSTRAINT "api_keys_usage_pkey" PRIMARY KEY ("key_id", "day", "route", "outcome")');
  });

  it('postgres: a usage batch PostgreSQL rolled back for a deadlock runs again, up to three times; no other failure does', async () => {
    const attempts = (failures: unknown[]) => {
      let calls = 0;
      const client: PostgresClient = {
        query: async () => {
          const failure = failures[calls++];
          if (failure !== undefined) throw failure;
          return { rows: [{ applied: 1, cells: 1 }] };
        },
      };
      return { engine: new PostgresEngine(client, parseTableName(undefined, true)), calls: () => calls };
    };
    const deadlock = Object.assign(new Error('deadlock detected'), { code: '40P01' });
    const twice = attempts([deadlock, deadlock]);
    await twice.engine.addUsage(batch([cell()]));
    expect(twice.calls()).toBe(3);
    const always = attempts([deadlock, deadlock, deadlock, deadlock]);
    expect(await rejection(() => always.engine.addUsage(batch([cell()])))).toBe(deadlock);
    expect(always.calls()).toBe(3);
    const lost = Object.assign(new Error('Connection terminated unexpectedly'), { code: undefined });
    const once = attempts([lost]);
    expect(await rejection(() => once.engine.addUsage(batch([cell()])))).toBe(lost);
    expect(once.calls()).toBe(1);
  });

  it('sqlite: the batches of usage upserts come in at most eight sizes and add up to the batch', () => {
    const shapes = new Set<number>();
    for (let count = 0; count <= 600; count++) {
      const sizes = usageChunkSizes(count);
      expect(sizes.reduce((sum, size) => sum + size, 0)).toBe(count);
      for (const size of sizes) shapes.add(size);
    }
    expect([...shapes].sort((a, b) => a - b)).toEqual([1, 2, 4, 8, 16, 32, 64, 128]);
  });
});

describeDialects('observability', (fixture) => {
  const { dialect } = fixture;

  // -------------------------------------------------------------------------------------------
  describe('audit trail', () => {
    it('gives every shape of entry back exactly, ordered by (at, id), as fresh objects', async () => {
      const store = await fixture.fresh();
      const nested = {
        scopes: ['read', 'write'],
        rateLimit: { perDay: 5, burst: null },
        note: 'héllo 🌍 "quotes" \\ back\nslash / tab\t',
        numbers: [0, -3, 1.5, 2 ** 53 - 1, 1e21, 5e-324],
        flags: [true, false, null],
        deep: { a: { b: { c: [1, { d: 'e' }], empty: {}, none: [] } } },
        'key with spaces and ü': 'v',
      };
      const entries = [
        // A copy made in this realm (structuredClone's objects come from Node's own, which toStrictEqual tells apart).
        entry({ at: new Date(T + 1), action: 'key.created', changes: JSON.parse(JSON.stringify(nested)) as Record<string, unknown> }),
        entry({ at: new Date(T + 2), actor: { id: 'user_42' }, tenantId: 'acme', environment: 'live' }),
        entry({ at: new Date(T + 2), action: 'key.purged', keyId: null, actor: { id: 'admin', keyPrefix: 'kg_admin' }, changes: { removed: 3, deletedBefore: new Date(T).toISOString() } }),
        entry({ at: new Date(T + 3), changes: { blob: 'x'.repeat(64 * 1024 - 20) } }),
        entry({ at: new Date(Date.UTC(-4000, 0, 1, 0, 0, 0, 7)), actor: { id: 'a'.repeat(256) }, id: 'i'.repeat(128) }),
        entry({ at: new Date(8.64e15) }),
        entry({ at: new Date(-1) }),
      ];
      for (const added of shuffled(entries, 7)) await store.appendAudit(added);
      const expected = [...entries].sort(byPosition);
      const listed = await store.listAudit({ limit: 100 });
      expect(listed).toStrictEqual(expected);
      // No `keyPrefix: undefined`, no absent field present as undefined.
      expect(Object.keys(listed.find((found) => found.id === entries[1]?.id)?.actor ?? {})).toEqual(['id']);
      expect(Object.keys(listed.find((found) => found.id === entries[0]?.id) ?? {}).sort()).toEqual(['action', 'actor', 'at', 'changes', 'id', 'keyId']);

      // Fresh copies, both ways.
      (listed[0] as AuditEntry).changes.mutated = true;
      (entries[0] as AuditEntry).changes.mutated = true;
      ((entries[1] as AuditEntry).actor as { id: string }).id = 'changed';
      expect(await store.listAudit({ limit: 100 })).toStrictEqual(
        expected.map((found) => (found === entries[0] ? { ...found, changes: nested } : found === entries[1] ? { ...found, actor: { id: 'user_42' } } : found)),
      );
    });

    it('refuses an entry whose id is taken with already_exists, changing nothing', async () => {
      const store = await fixture.fresh();
      const first = entry({ changes: { first: true } });
      await store.appendAudit(first);
      const error = await rejection(() => store.appendAudit({ ...first, at: new Date(T + 5), changes: { second: true } }));
      expect(error).toMatchObject({ code: 'already_exists' });
      expect((error as Error).message).toContain(first.id);
      expect(await store.listAudit({ limit: 10 })).toStrictEqual([first]);
    });

    it('matches every filter given, from inclusive, to exclusive, and pages by (at, id) without a gap or a repeat', async () => {
      const store = await fixture.fresh();
      const keys = [randomUUID(), randomUUID(), randomUUID()];
      const entries: AuditEntry[] = [];
      for (let i = 0; i < 90; i++) {
        const actor = i % 4 === 0 ? null : i % 4 === 1 ? { id: 'alice' } : i % 4 === 2 ? { id: 'bob', keyPrefix: 'kg_bob' } : { id: 'carol' };
        entries.push(
          entry({
            at: new Date(T + Math.floor(i / 3) * 1_000), // three entries share each instant: the id breaks ties
            keyId: i % 10 === 9 ? null : (keys[i % 3] as string),
            actor,
            ...(i % 5 === 0 ? {} : { tenantId: i % 2 === 0 ? 'acme' : 'globex' }),
            ...(i % 7 === 0 ? {} : { environment: i % 3 === 0 ? 'test' : 'live' }),
            changes: { i },
          }),
        );
      }
      for (const added of shuffled(entries, 11)) await store.appendAudit(added);

      const queries: Omit<StoreAuditQuery, 'limit'>[] = [
        {},
        { keyId: keys[0] as string },
        { actorId: 'alice' },
        { actorId: 'bob' },
        { tenantId: 'acme' },
        { environment: 'test' },
        { tenantId: 'globex', environment: 'live' },
        { keyId: keys[1] as string, actorId: 'carol' },
        { from: new Date(T + 10_000) },
        { to: new Date(T + 10_000) },
        { from: new Date(T + 5_000), to: new Date(T + 20_000), tenantId: 'acme' },
        { keyId: 'nobody' },
      ];
      for (const query of queries) {
        const expected = entries
          .filter(
            (found) =>
              (query.keyId === undefined || found.keyId === query.keyId) &&
              (query.actorId === undefined || found.actor?.id === query.actorId) &&
              (query.tenantId === undefined || found.tenantId === query.tenantId) &&
              (query.environment === undefined || found.environment === query.environment) &&
              (query.from === undefined || found.at >= query.from) &&
              (query.to === undefined || found.at < query.to),
          )
          .sort(byPosition);
        for (const limit of [1, 7, 100]) {
          const walked: AuditEntry[] = [];
          let after: { at: Date; id: string } | undefined;
          for (let page = 0; page < 200; page++) {
            const found = await store.listAudit({ ...query, ...(after ? { after } : {}), limit });
            expect(found.length).toBeLessThanOrEqual(limit);
            walked.push(...found);
            const last = found[found.length - 1];
            if (found.length < limit || !last) break;
            after = { at: last.at, id: last.id };
          }
          expect(walked).toStrictEqual(expected);
        }
      }
      // An entry about no key (key.purged) matches no keyId filter.
      for (const key of keys) expect((await store.listAudit({ keyId: key, limit: 100 })).every((found) => found.keyId === key)).toBe(true);
      expect(await store.listAudit({ limit: 0 })).toEqual([]);
    });

    it('takes any Date as a bound, even one before what PostgreSQL can store', async () => {
      const store = await fixture.fresh();
      const entries = [entry({ at: new Date(T) }), entry({ at: new Date(T + 1) })].sort(byPosition);
      for (const added of entries) await store.appendAudit(added);
      const earliest = new Date(-8.64e15);
      expect(await store.listAudit({ from: earliest, limit: 10 })).toStrictEqual(entries);
      expect(await store.listAudit({ after: { at: earliest, id: 'zzz' }, limit: 10 })).toStrictEqual(entries);
      expect(await store.listAudit({ to: earliest, limit: 10 })).toEqual([]);
      expect(await store.listAudit({ to: new Date(8.64e15), limit: 10 })).toStrictEqual(entries);
      expect(await store.listAudit({ from: new Date(T + 1), to: new Date(T + 1), limit: 10 })).toEqual([]);
    });

    it('refuses what the table could not give back exactly with invalid_argument, writing nothing', async () => {
      const store = await fixture.fresh();
      await expectCode(() => store.appendAudit(entry({ changes: { bad: 'half \ud800 a pair' } })), 'invalid_argument');
      await expectCode(() => store.appendAudit(entry({ at: new Date(Number.NaN) })), 'invalid_argument');
      if (dialect === 'postgres') {
        await expectCode(() => store.appendAudit(entry({ changes: { nul: 'a\u0000b' } })), 'invalid_argument');
        await expectCode(() => store.appendAudit(entry({ at: new Date(-8.64e15) })), 'invalid_argument');
      }
      expect(await store.listAudit({ limit: 10 })).toEqual([]);
    });

    if (dialect === 'postgres') {
      it('postgres: reads each filter through its own index, in (at, id) order, with no sort', async () => {
        const store = await fixture.fresh();
        const table = store.table;
        // Thousands of entries under each filter value: a page of 50 is best read from an index in
        // (at, id) order, stopping at 50, rather than by fetching every match and sorting it.
        await fixture.rows(
          `INSERT INTO "${table}_audit" ("id", "at", "action", "key_id", "actor_id", "tenant_id", "environment", "changes")
           SELECT 'e' || i, timestamptz '2025-06-01' + i * interval '1 second', 'key.updated', 'key' || (i % 10), 'actor' || (i % 8),
             'tenant' || (i % 6), 'env' || (i % 4), '{}'::jsonb
           FROM generate_series(1, 40000) AS i`,
        );
        await fixture.rows(`ANALYZE "${table}_audit"`);
        const position = ['2025-06-01T00:00:00.000+00:00', 'e1'];
        const cases: [Partial<Record<'keyId' | 'actorId' | 'tenantId' | 'environment', string>>, string][] = [
          [{}, 'audit_at_idx'],
          [{ keyId: 'key7' }, 'audit_key_idx'],
          [{ actorId: 'actor7' }, 'audit_actor_idx'],
          [{ tenantId: 'tenant5' }, 'audit_tenant_idx'],
          [{ environment: 'env3' }, 'audit_env_idx'],
        ];
        for (const [filters, index] of cases) {
          for (const after of [false, true]) {
            const text = auditListStatement(parseTableName(table, true), {
              keyId: filters.keyId !== undefined,
              actorId: filters.actorId !== undefined,
              tenantId: filters.tenantId !== undefined,
              environment: filters.environment !== undefined,
              from: false,
              to: false,
              after,
            });
            const values = [...Object.values(filters), ...(after ? position : []), 50];
            const [row] = await fixture.rows(`EXPLAIN (FORMAT JSON) ${text.replace(/\$\d+/g, '?')}`, ...values);
            const plan = JSON.stringify(row?.['QUERY PLAN']);
            expect(plan).toContain(`"Index Name":"${table}_${index}"`);
            expect(plan).not.toContain('"Node Type":"Sort"');
            expect(plan).not.toContain('"Node Type":"Seq Scan"');
          }
        }
      });
    }
  });

  // -------------------------------------------------------------------------------------------
  describe('usage cells', () => {
    it('adds counts up, keeps the larger maximum, starts a new cell from zero; a null route is a cell of its own', async () => {
      const store = await fixture.fresh();
      const key = await held(store);
      const first = [
        cell({ keyId: key, requests: 3, status2xx: 2, status4xx: 1, totalResponseMicros: 9_000, maxResponseMicros: 5_000 }),
        cell({ keyId: key, route: null, outcome: 'rate_limited', requests: 2, status2xx: 0, status4xx: 2, totalResponseMicros: 400, maxResponseMicros: 300 }),
      ];
      const second = [
        cell({ keyId: key, requests: 1, status2xx: 0, status5xx: 1, totalResponseMicros: 2 ** 40, maxResponseMicros: 4_000 }),
        cell({ keyId: key, route: null, outcome: 'rate_limited', requests: 1, status2xx: 0, status3xx: 1, totalResponseMicros: 100, maxResponseMicros: 900 }),
        cell({ keyId: key, route: '/', day: TODAY + 1, requests: 2 ** 40, status2xx: 7 }),
      ];
      await store.addUsage(batch(first));
      await store.addUsage(batch(second));
      expect(await usageOf(store, key)).toStrictEqual(
        sorted([
          cell({ keyId: key, requests: 4, status2xx: 2, status4xx: 1, status5xx: 1, totalResponseMicros: 9_000 + 2 ** 40, maxResponseMicros: 5_000 }),
          cell({ keyId: key, route: null, outcome: 'rate_limited', requests: 3, status2xx: 0, status3xx: 1, status4xx: 2, totalResponseMicros: 500, maxResponseMicros: 900 }),
          cell({ keyId: key, route: '/', day: TODAY + 1, requests: 2 ** 40, status2xx: 7 }),
        ]),
      );
    });

    it('reads an inclusive range of days of one key only, as fresh objects', async () => {
      const store = await fixture.fresh();
      const [key, other] = [await held(store), await held(store)];
      const cells = [-3, 0, TODAY - 1, TODAY, TODAY + 1, 2 ** 40].map((day) => cell({ keyId: key, day }));
      await store.addUsage(batch([...cells, cell({ keyId: other, day: TODAY })]));
      expect(await usageOf(store, key, TODAY - 1, TODAY)).toStrictEqual(sorted(cells.filter((found) => found.day === TODAY - 1 || found.day === TODAY)));
      expect(await usageOf(store, key, TODAY, TODAY)).toStrictEqual([cell({ keyId: key, day: TODAY })]);
      expect(await usageOf(store, key)).toStrictEqual(sorted(cells));
      expect(await usageOf(store, key, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY)).toStrictEqual(sorted(cells));
      expect(await usageOf(store, key, TODAY + 0.5, TODAY + 1.5)).toStrictEqual([cell({ keyId: key, day: TODAY + 1 })]);
      expect(await usageOf(store, key, TODAY + 1, TODAY)).toEqual([]);
      expect(await usageOf(store, 'unknown')).toEqual([]);
      const [read] = await store.readUsage({ keyId: key, fromDay: TODAY, toDay: TODAY });
      (read as UsageCell).requests = 1_000;
      expect(await usageOf(store, key, TODAY, TODAY)).toStrictEqual([cell({ keyId: key, day: TODAY })]);
    });

    it('applies a batch id once: a retry adds nothing; applied ids are forgotten a day after batch.now, a hundred at a time', async () => {
      const store = await fixture.fresh();
      const key = await held(store);
      const applied = batch([cell({ keyId: key, requests: 5 })], T);
      await store.addUsage(applied);
      await store.addUsage(applied);
      await store.addUsage({ ...applied, cells: [cell({ keyId: key, requests: 50 }), cell({ keyId: key, day: TODAY + 1 })] });
      expect(await usageOf(store, key)).toStrictEqual([cell({ keyId: key, requests: 5 })]);

      const ids = async () => (await fixture.rows(`SELECT "id" FROM "${store.table}_usage_batches" ORDER BY "id"`)).map((row) => row.id);
      // A day later to the millisecond: still remembered (the retention is at least a day).
      await store.addUsage(batch([], T + RETAIN_BATCH_IDS_MS));
      expect(await ids()).toContain(applied.id);
      await store.addUsage(applied);
      expect(await usageOf(store, key)).toStrictEqual([cell({ keyId: key, requests: 5 })]);
      // Past that, a later batch forgets it.
      await store.addUsage(batch([], T + RETAIN_BATCH_IDS_MS + 1));
      expect(await ids()).not.toContain(applied.id);

      // A backlog is forgotten a hundred ids per batch, oldest first, never all at once.
      const instant = dialect === 'postgres' ? (at: number) => new Date(at).toISOString() : (at: number) => at;
      for (let i = 0; i < 250; i++) await fixture.rows(`INSERT INTO "${store.table}_usage_batches" ("id", "applied_at") VALUES (?, ?)`, `old_${i}`, instant(T - DAY - i));
      const before = (await ids()).length;
      await store.addUsage(batch([], T + DAY));
      expect((await ids()).length).toBe(before - 100 + 1);
      expect(await ids()).toContain('old_0'); // the newest of the backlog waits for the next batches
      await store.addUsage(batch([], T + DAY));
      await store.addUsage(batch([], T + DAY));
      expect((await ids()).filter((id) => String(id).startsWith('old_'))).toEqual([]);
    });

    it('sums concurrent batches exactly, whatever order their cells come in (no lost update, no deadlock)', async () => {
      const store = await fixture.fresh();
      const keys = [await held(store), await held(store)];
      const shared = keys.flatMap((keyId) =>
        [null, '/a', '/b/:id'].flatMap((route) => ['admitted', 'quota_exceeded'].map((outcome) => ({ keyId, route, outcome }))),
      );
      const batches = Array.from({ length: 40 }, (_, b) =>
        batch(shuffled(shared, b + 1).map((identity, i) => cell({ ...identity, requests: (b % 5) + i + 1, status2xx: b, totalResponseMicros: b * 1_000 + i, maxResponseMicros: (b * 37 + i * 11) % 1_000 }))),
      );
      const results = await Promise.allSettled(batches.map((added) => store.addUsage(added)));
      expect(results.filter((result) => result.status === 'rejected')).toEqual([]);
      for (const keyId of keys) expect(await usageOf(store, keyId)).toStrictEqual(sums(batches, keyId));
    });

    it('applies one batch once even when it races itself', async () => {
      const store = await fixture.fresh();
      const key = await held(store);
      const added = batch([cell({ keyId: key, requests: 3 }), cell({ keyId: key, route: null, requests: 4 })]);
      await Promise.all(Array.from({ length: 10 }, () => store.addUsage({ ...added, cells: added.cells.map((found) => ({ ...found })) })));
      expect(await usageOf(store, key)).toStrictEqual(sums([added], key));
    });

    it('applies a large batch whole, and a retry of it adds nothing', async () => {
      const store = await fixture.fresh();
      const key = await held(store);
      const cells = Array.from({ length: 5_000 }, (_, i) => cell({ keyId: key, day: TODAY - (i % 50), route: i % 100 === 0 ? null : `/r/${Math.floor(i / 50)}`, requests: i + 1 }));
      const large = batch(cells);
      await store.addUsage(large);
      await store.addUsage(large);
      expect(await usageOf(store, key)).toStrictEqual(sums([large], key));
    });

    it('refuses a batch holding anything but cells with invalid_argument, whole: its id stays free for the corrected retry', async () => {
      const store = await fixture.fresh();
      const key = await held(store);
      const good = cell({ keyId: key });
      const id = randomUUID();
      const broken: [Partial<UsageCell>, string][] = [
        [{ route: '' }, 'cells[1].route'],
        [{ requests: -1 }, 'cells[1].requests'],
        [{ status4xx: 1.5 }, 'cells[1].status4xx'],
        [{ maxResponseMicros: Number.MAX_SAFE_INTEGER + 2 }, 'cells[1].maxResponseMicros'],
        [{ day: 1.5 }, 'cells[1].day'],
        [{ keyId: '' }, 'cells[1].keyId'],
      ];
      for (const [overrides, field] of broken) {
        const error = await rejection(() => store.addUsage(batch([good, cell({ keyId: key, route: '/x', ...overrides })], T, id)));
        expect(error).toMatchObject({ code: 'invalid_argument', field });
      }
      await expectCode(() => store.addUsage({ id, now: new Date(Number.NaN), cells: [good] }), 'invalid_argument');
      expect(await usageOf(store, key)).toEqual([]);
      await store.addUsage(batch([good], T, id));
      expect(await usageOf(store, key)).toStrictEqual([good]);
      // Two cells of one identity in a batch are added up, not refused.
      await store.addUsage(batch([good, good]));
      expect(await usageOf(store, key)).toStrictEqual([cell({ keyId: key, requests: 3, status2xx: 3, totalResponseMicros: 3_000 })]);
    });

    it('reads a count stored past 2^53 (written by hand) as invalid_record, never as a rounded number', async () => {
      const store = await fixture.fresh();
      const key = await held(store);
      await store.addUsage(batch([cell({ keyId: key, requests: 2 ** 53 - 1 })]));
      expect(await usageOf(store, key)).toStrictEqual([cell({ keyId: key, requests: 2 ** 53 - 1 })]);
      await fixture.rows(`UPDATE "${store.table}_usage" SET "requests" = "requests" + 2 WHERE "key_id" = ?`, key);
      const error = await rejection(() => store.readUsage({ keyId: key, fromDay: TODAY, toDay: TODAY }));
      expect(error).toMatchObject({ code: 'invalid_record', field: 'requests' });
    });

    it('purge removes a purged key\'s cells of every day, with the key; delete and other keys\' cells are left alone', async () => {
      const store = await fixture.fresh();
      const purged = testRecord(T, { name: 'purged' });
      const kept = testRecord(T, { name: 'kept' });
      await store.insert(purged);
      await store.insert(kept);
      const unknown = randomUUID();
      const cells = [purged.id, kept.id, unknown].flatMap((keyId) => [-5, TODAY, 2 ** 40].map((day) => cell({ keyId, day })));
      await store.addUsage(batch(cells));
      await store.update(purged.id, { status: 'revoked', deletedAt: new Date(T), updatedAt: new Date(T) });
      expect(await usageOf(store, purged.id)).toHaveLength(3); // delete does not touch usage
      expect(await store.purge({ deletedBefore: new Date(T + 1) })).toBe(1);
      expect(await usageOf(store, purged.id)).toEqual([]);
      expect(await usageOf(store, kept.id)).toHaveLength(3);
      expect(await usageOf(store, unknown)).toEqual([]); // the cells of a key the store does not hold are dropped
    });

    it('purge deletes the cells in the transaction that removes the keys', async () => {
      const store = await fixture.fresh();
      const keys = Array.from({ length: 5 }, () => testRecord(T, { deletedAt: new Date(T) }));
      for (const key of keys) await store.insert(key);
      await store.addUsage(batch(keys.map((key) => cell({ keyId: key.id }))));
      const { engine, statements, db } = fixture.engine(store.table);
      if (db) {
        // SQLite: every statement the purge runs runs inside a transaction.
        const outside: string[] = [];
        const { prepare } = db;
        db.prepare = ((source: string) => {
          const statement = prepare.call(db, source);
          for (const method of ['run', 'all', 'get'] as const) {
            const original = statement[method].bind(statement) as (...params: unknown[]) => unknown;
            (statement as unknown as Record<string, unknown>)[method] = (...params: unknown[]) => (db.inTransaction || outside.push(source), original(...params));
          }
          return statement;
        }) as typeof db.prepare;
        try {
          expect(await engine.purge({ deletedBefore: new Date(T + 1) }, () => undefined, 2)).toBe(5);
        } finally {
          db.prepare = prepare;
        }
        expect(outside).toEqual([]);
      } else {
        // PostgreSQL: each batch is one query (its lock and its removal), so its keys and their cells go in one transaction.
        expect(await engine.purge({ deletedBefore: new Date(T + 1) }, () => undefined, 2)).toBe(5);
        expect(statements).toHaveLength(3);
        for (const text of statements) expect(text).toContain(`DELETE FROM "${store.table}_usage"`);
      }
      for (const key of keys) expect(await usageOf(store, key.id)).toEqual([]);
    });
    it('drops the cells of a key the table does not hold in the statement that adds the others, and records the batch id', async () => {
      const store = await fixture.fresh();
      const key = await held(store);
      const unknown = randomUUID();
      const added = batch([cell({ keyId: unknown }), cell({ keyId: unknown, day: TODAY - 1, route: null }), cell({ keyId: key })]);
      const { engine, statements } = fixture.engine(store.table);
      await engine.addUsage(added);
      if (dialect === 'postgres') expect(statements).toHaveLength(1);
      expect(await usageOf(store, key)).toStrictEqual([cell({ keyId: key })]);
      expect(await usageOf(store, unknown)).toEqual([]);
      const [counted] = await fixture.rows(`SELECT count(*) AS "n" FROM "${store.table}_usage" WHERE "key_id" = ?`, unknown);
      expect(Number(counted?.n)).toBe(0);
      // Applied all the same: a retry adds nothing, even once a record with that id exists.
      await store.insert(testRecord(T, { id: unknown }));
      await store.addUsage(added);
      expect(await usageOf(store, unknown)).toEqual([]);
      expect(await usageOf(store, key)).toStrictEqual([cell({ keyId: key })]);
      await store.addUsage(batch(added.cells));
      expect(await usageOf(store, unknown)).toStrictEqual(sums([added], unknown));
    });

    it('purges racing flushes of the keys they remove leave none of their cells, and neither waits for the other in a cycle', async () => {
      const store = await fixture.fresh();
      const { engine } = fixture.engine(store.table);
      const failures: unknown[] = [];
      const left: Record<string, number> = {};
      for (let round = 0; round < 15; round++) {
        // Keys deleted at a few shared instants, flushed to in every order while purged in small batches.
        const purged = Array.from({ length: 8 }, (_, i) => testRecord(T, { status: 'revoked', revokedAt: new Date(T - 1_000), deletedAt: new Date(T - 1_000 + (i % 3)) }));
        for (const record of purged) await store.insert(record);
        const flushes = Array.from({ length: 20 }, (_, b) =>
          store.addUsage(batch(shuffled(purged, round * 100 + b + 1).map((record, i) => cell({ keyId: record.id, day: TODAY + ((b + i) % 5), route: `/r/${b % 7}` })))),
        );
        const results = await Promise.allSettled([engine.purge({ deletedBefore: new Date(T) }, () => undefined, 3), ...flushes]);
        for (const result of results) if (result.status === 'rejected') failures.push(result.reason);
        for (const record of purged) {
          const cells = (await usageOf(store, record.id)).length;
          if (cells > 0) left[record.id] = cells;
        }
      }
      expect({ failures, left }).toEqual({ failures: [], left: {} });
    });

    if (dialect === 'postgres') {
      /** Polls until a statement of another session waits for a lock (the one the test holds). */
      async function waitingForLock(): Promise<void> {
        const deadline = Date.now() + 10_000;
        for (;;) {
          const [row] = await fixture.rows("SELECT count(*) AS \"n\" FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()");
          if (Number(row?.n) > 0) return;
          if (Date.now() > deadline) throw new Error('no statement came to wait for the lock');
          await new Promise((done) => setTimeout(done, 10));
        }
      }

      it('postgres: a purge that waits for a batch holding its key leaves none of the cells that batch added', async () => {
        const store = await fixture.fresh();
        const record = testRecord(T, { status: 'revoked', revokedAt: new Date(T), deletedAt: new Date(T) });
        await store.insert(record);
        await store.addUsage(batch([cell({ keyId: record.id })]));
        // Another session plays a batch statement caught half-way: the key's row locked as the
        // statement locks it (FOR KEY SHARE), a cell of a day the key had none of written.
        const session = await (fixture.session as () => Promise<PoolClient>)();
        try {
          await session.query('BEGIN');
          await session.query(`SELECT 1 FROM "${store.table}" WHERE "id" = $1 FOR KEY SHARE`, [record.id]);
          await session.query(
            `INSERT INTO "${store.table}_usage" ("key_id", "day", "route", "outcome", "requests", "status_2xx", "status_3xx", "status_4xx", "status_5xx", "total_response_micros", "max_response_micros") ` +
              "VALUES ($1, $2, '/late', 'api_key_revoked', 1, 0, 0, 1, 0, 10, 10)",
            [record.id, TODAY + 1],
          );
          const purging = store.purge({ deletedBefore: new Date(T + 1) });
          await waitingForLock();
          await session.query('COMMIT');
          expect(await purging).toBe(1);
        } finally {
          await session.query('ROLLBACK').catch(() => undefined);
          session.release();
        }
        expect(await usageOf(store, record.id)).toEqual([]);
        expect(await store.findById(record.id)).toBeNull();
      });

      it('postgres: a batch that waits for a purge holding its key drops that key\'s cells and adds the others', async () => {
        const store = await fixture.fresh();
        const record = testRecord(T, { status: 'revoked', revokedAt: new Date(T), deletedAt: new Date(T) });
        const live = await held(store);
        await store.insert(record);
        // Another session plays a purge caught half-way: the row locked FOR UPDATE and deleted, with its cells.
        const session = await (fixture.session as () => Promise<PoolClient>)();
        const added = batch([cell({ keyId: record.id }), cell({ keyId: record.id, day: TODAY + 1 }), cell({ keyId: live })]);
        try {
          await session.query('BEGIN');
          await session.query(`SELECT 1 FROM "${store.table}" WHERE "id" = $1 FOR UPDATE`, [record.id]);
          await session.query(`DELETE FROM "${store.table}" WHERE "id" = $1`, [record.id]);
          await session.query(`DELETE FROM "${store.table}_usage" WHERE "key_id" = $1`, [record.id]);
          const adding = store.addUsage(added);
          await waitingForLock();
          await session.query('COMMIT');
          await adding;
        } finally {
          await session.query('ROLLBACK').catch(() => undefined);
          session.release();
        }
        expect(await usageOf(store, record.id)).toEqual([]);
        expect(await usageOf(store, live)).toStrictEqual([cell({ keyId: live })]);
        await store.addUsage(added); // applied: the retry adds nothing
        expect(await usageOf(store, live)).toStrictEqual([cell({ keyId: live })]);
      });

      it('postgres: a batch locks only the keys it adds to, with a lock consumes and updates do not wait for', async () => {
        const store = await fixture.fresh();
        const key = await held(store);
        // Another session holds what a consume or an update holds: the batch goes through.
        const session = await (fixture.session as () => Promise<PoolClient>)();
        try {
          await session.query('BEGIN');
          await session.query(`SELECT 1 FROM "${store.table}" WHERE "id" = $1 FOR NO KEY UPDATE`, [key]);
          await store.addUsage(batch([cell({ keyId: key })]));
        } finally {
          await session.query('ROLLBACK');
          session.release();
        }
        expect(await usageOf(store, key)).toStrictEqual([cell({ keyId: key })]);
      });
    }
  });

  // -------------------------------------------------------------------------------------------
  describe('alert claims', () => {
    it('claims a name until it lapses: a live claim refuses (changing nothing), a lapsed one is taken over', async () => {
      const store = await fixture.fresh();
      const name = `error_rate:${randomUUID()}:${TODAY}:0.5`;
      expect(await store.claimAlert({ name, expiresAt: new Date(T + 1_000), now: new Date(T) })).toBe(true);
      expect(await store.claimAlert({ name, expiresAt: new Date(T + 5_000), now: new Date(T + 999) })).toBe(false);
      // The refused claim did not move the expiry: the first one lapses at T + 1000, as it said.
      expect(await store.claimAlert({ name, expiresAt: new Date(T + 2_000), now: new Date(T + 1_000) })).toBe(true);
      expect(await store.claimAlert({ name, expiresAt: new Date(T + 3_000), now: new Date(T + 1_999) })).toBe(false);
      expect(await store.claimAlert({ name, expiresAt: new Date(T + 3_000), now: new Date(T + 2_000) })).toBe(true);
    });

    it('compares names as exact strings, up to 512 characters of any printable unicode', async () => {
      const store = await fixture.fresh();
      const long = `ä🌍${'n'.repeat(509)}`;
      const names = ['quota:a', 'quota:A', 'quota:a ', 'quota:á', 'quota:a\u0301', long, `${long.slice(0, -1)}m`];
      for (const name of names) expect(await store.claimAlert({ name, expiresAt: new Date(T + 1_000), now: new Date(T) })).toBe(true);
      for (const name of names) expect(await store.claimAlert({ name, expiresAt: new Date(T + 1_000), now: new Date(T) })).toBe(false);
    });

    it('gives exactly one of many concurrent claims of a name the claim, new or lapsed', async () => {
      const store = await fixture.fresh();
      for (let round = 0; round < 5; round++) {
        const name = `concurrent:${round}`;
        const fresh = await Promise.all(Array.from({ length: 30 }, () => store.claimAlert({ name, expiresAt: new Date(T + 10), now: new Date(T) })));
        expect(fresh.filter(Boolean)).toHaveLength(1);
        const takeover = await Promise.all(Array.from({ length: 30 }, () => store.claimAlert({ name, expiresAt: new Date(T + 20), now: new Date(T + 10) })));
        expect(takeover.filter(Boolean)).toHaveLength(1);
      }
    });

    it('cleans lapsed claims up as claims go on, a hundred at a time, never a live one', async () => {
      const store = await fixture.fresh();
      for (let i = 0; i < 250; i++) await store.claimAlert({ name: `short:${i}`, expiresAt: new Date(T + 1 + i), now: new Date(T) });
      const live = await store.claimAlert({ name: 'long', expiresAt: new Date(T + DAY), now: new Date(T) });
      expect(live).toBe(true);
      const count = async () => Number((await fixture.rows(`SELECT count(*) AS "n" FROM "${store.table}_alert_claims"`))[0]?.n);
      expect(await count()).toBe(251);
      await store.claimAlert({ name: 'later:1', expiresAt: new Date(T + 2 * DAY), now: new Date(T + 1_000) });
      expect(await count()).toBe(252 - 100);
      await store.claimAlert({ name: 'later:2', expiresAt: new Date(T + 2 * DAY), now: new Date(T + 1_000) });
      await store.claimAlert({ name: 'later:3', expiresAt: new Date(T + 2 * DAY), now: new Date(T + 1_000) });
      expect(await count()).toBe(4); // long, later:1..3
      expect(await store.claimAlert({ name: 'long', expiresAt: new Date(T + 2 * DAY), now: new Date(T + 1_000) })).toBe(false);
    });

    it('refuses a claim it could not hold exactly with invalid_argument', async () => {
      const store = await fixture.fresh();
      await expectCode(() => store.claimAlert({ name: 'x\ud800', expiresAt: new Date(T + 1), now: new Date(T) }), 'invalid_argument');
      await expectCode(() => store.claimAlert({ name: 'x', expiresAt: new Date(Number.NaN), now: new Date(T) }), 'invalid_argument');
      expect(await store.claimAlert({ name: 'x', expiresAt: new Date(T + 1), now: new Date(T) })).toBe(true);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('several processes at once', () => {
    /** Forks the workers with their work, starts them together once all are ready, and gathers their reports. */
    async function run(table: string, work: Work[], inFlight: number): Promise<Report[]> {
      const config = JSON.stringify({ dialect, ...fixture.connection(), table, inFlight });
      const workers = work.map((item) => {
        const worker = fork(WORKER, [config], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
        worker.send(item);
        return worker;
      });
      const reports = workers.map(
        (worker) =>
          new Promise<Report[]>((done, fail) => {
            const received: Report[] = [];
            worker.on('message', (report: Report) => {
              received.push(report);
              if (report.error) fail(new Error(report.error));
              if (report.claimed) done(received);
            });
            worker.once('exit', (code) => (code === 0 ? undefined : fail(new Error(`a worker exited with ${code}`))));
          }),
      );
      try {
        await Promise.all(
          workers.map(
            (worker) =>
              new Promise<void>((done, fail) => {
                worker.on('message', (report: Report) => (report.ready ? done() : undefined));
                worker.once('exit', (code) => fail(new Error(`a worker exited with ${code} before it was ready`)));
              }),
          ),
        );
        for (const worker of workers) worker.send('go');
        return (await Promise.all(reports)).map((received) => received[received.length - 1] as Report);
      } finally {
        for (const worker of workers) if (worker.exitCode === null) worker.kill();
      }
    }

    it('usage batches from four processes, retried batches among them, add up exactly', async () => {
      const store = await fixture.fresh();
      const keys = [await held(store), await held(store)];
      const identities = keys.flatMap((keyId) => [TODAY - 1, TODAY].flatMap((day) => [null, '/a', '/b'].map((route) => ({ keyId, day, route, outcome: 'admitted' }))));
      const processes = 4;
      const perProcess = 25;
      const work: WireBatch[][] = Array.from({ length: processes }, (_, p) =>
        Array.from({ length: perProcess }, (_, b) => ({
          id: randomUUID(),
          now: T + b,
          cells: shuffled(identities, p * 100 + b + 1)
            .slice(0, 9)
            .map((identity, i) => cell({ ...identity, requests: p + b + i + 1, status2xx: 1, totalResponseMicros: 1_000 * (p + 1) + b, maxResponseMicros: (p * 97 + b * 13 + i) % 5_000 })),
        })),
      );
      // Every process sends a third of its batches twice, as a flush retried after a lost answer would.
      const sent = work.map((batches) => [...batches, ...batches.filter((_, b) => b % 3 === 0)]);
      const reports = await run(store.table, sent.map((batches, p) => ({ batches: shuffled(batches, p + 1) })), 4);
      expect(reports.map((report) => report.added)).toEqual(sent.map((batches) => batches.length));
      const unique = work.flat().map((wire) => ({ id: wire.id, cells: wire.cells }));
      for (const keyId of keys) expect(await usageOf(store, keyId)).toStrictEqual(sums(unique, keyId));
    });

    it('alert claims from four processes: exactly one process has each name', async () => {
      const store = await fixture.fresh();
      const names = Array.from({ length: 20 }, (_, i) => `quota:${i}`);
      const claims: WireClaim[] = names.map((name) => ({ name, expiresAt: T + DAY, now: T }));
      const reports = await run(store.table, Array.from({ length: 4 }, (_, p) => ({ claims: shuffled(claims, p + 1) })), 4);
      for (const name of names) {
        const winners = reports.filter((report, p) => report.claimed?.[shuffled(claims, p + 1).findIndex((claim) => claim.name === name)] === true);
        expect(winners).toHaveLength(1);
      }
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('migrate() on a table created by version 3', () => {
    /** The version-3 DDL as shipped, for `table`. */
    function version3(table: string): string {
      return readFileSync(join(__dirname, 'fixtures', `version-3-${dialect}.sql`), 'utf8').replaceAll('keygate_api_keys', table);
    }

    /** A key written by version 3: every column it had, copied from a row today's store wrote. */
    async function keyOfVersion3(table: string): Promise<ApiKeyRecord> {
      const scratch = await fixture.fresh();
      const key = testRecord(T, { name: 'from version 3', useCount: 3, tags: ['old'], metadata: { plan: 'pro' } });
      await scratch.insert(key);
      const columns = (
        dialect === 'postgres'
          ? await fixture.rows(`SELECT column_name AS "name" FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position`, table)
          : await fixture.rows('SELECT "name" FROM pragma_table_info(?) ORDER BY cid', table)
      ).map((row) => `"${String(row.name)}"`);
      expect(columns).toContain('"deleted_at"');
      expect(columns).not.toContain('"rotation_frequency_days"');
      expect(columns).not.toContain('"alerts"');
      await fixture.rows(`INSERT INTO "${table}" (${columns.join(', ')}) SELECT ${columns.join(', ')} FROM "${scratch.table}"`);
      return key;
    }

    /** The columns and indexes of the table `base + suffix`, with both names written T and B. */
    async function describeTable(base: string, suffix: string): Promise<{ columns: Row[]; indexes: string[] }> {
      const table = `${base}${suffix}`;
      const anonymous = (sql: unknown) => String(sql).replaceAll(table, 'T').replaceAll(base, 'B');
      if (dialect === 'postgres') {
        const indexes = await fixture.rows('SELECT indexdef FROM pg_indexes WHERE tablename = ? ORDER BY indexname', table);
        const columns = await fixture.rows(
          `SELECT column_name, data_type, is_nullable, column_default, collation_name FROM information_schema.columns
           WHERE table_schema = 'public' AND table_name = ? ORDER BY ordinal_position`,
          table,
        );
        return { columns, indexes: indexes.map((row) => anonymous(row.indexdef)) };
      }
      const indexes = await fixture.rows("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL ORDER BY name", table);
      const [created] = await fixture.rows("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", table);
      return {
        columns: await fixture.rows('SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid', table),
        // The companions' CREATE TABLE too (STRICT, WITHOUT ROWID); the key table's differs in its ADD COLUMNs' text.
        indexes: [...indexes.map((row) => anonymous(row.sql)), ...(suffix === '' ? [] : [anonymous(created?.sql)])],
      };
    }

    /** `table` and its companions are the same as a fresh table's. */
    async function expectLikeFresh(table: string, fresh: string): Promise<void> {
      for (const suffix of ['', '_audit', '_usage', '_usage_batches', '_alert_claims']) {
        const described = await describeTable(table, suffix);
        expect(described.columns.length).toBeGreaterThan(0);
        expect(described).toEqual(await describeTable(fresh, suffix));
      }
    }

    it('gains rotation_frequency_days, alerts and the tables named from it (migrations racing); old rows read the new fields\' initial values', async () => {
      const table = `v3_keys_${++tables}`;
      await fixture.exec(version3(table));
      const key = await keyOfVersion3(table);
      // Three migrations at once (PostgreSQL: racing sessions of the pool; SQLite: one after the other, each BEGIN IMMEDIATE).
      const upgraded = fixture.open(table);
      await Promise.all([upgraded.migrate(), upgraded.migrate(), upgraded.migrate()]);
      const fresh = await fixture.fresh();
      await expectLikeFresh(table, fresh.table);
      const store = await fixture.fresh(table); // migrate() once more: a no-op
      expect(await store.findById(key.id)).toStrictEqual({ ...key, rotationFrequencyDays: null, alerts: null });
      const updated = await store.update(key.id, { rotationFrequencyDays: 90, alerts: { quotaThreshold: 0.8 }, updatedAt: new Date(T + 1) });
      expect(updated).toMatchObject({ rotationFrequencyDays: 90, alerts: { quotaThreshold: 0.8 } });
      await store.appendAudit(entry({ keyId: key.id }));
      expect(await store.listAudit({ keyId: key.id, limit: 10 })).toHaveLength(1);
      await store.addUsage(batch([cell({ keyId: key.id })]));
      expect(await usageOf(store, key.id)).toStrictEqual([cell({ keyId: key.id })]);
      expect(await store.claimAlert({ name: 'upgraded', expiresAt: new Date(T + 1), now: new Date(T) })).toBe(true);
    });

    it('today\'s docs/sql script upgrades a version-3 table too (SQLite: once its commented ADD COLUMNs ran), and runs again', async () => {
      const table = `v3_scripted_${++tables}`;
      await fixture.exec(version3(table));
      const key = await keyOfVersion3(table);
      const today = readFileSync(join(__dirname, `../../docs/sql/${dialect}.sql`), 'utf8').replaceAll('keygate_api_keys', table);
      if (dialect === 'sqlite') {
        for (const column of ['rotation_frequency_days', 'alerts', 'lease_holds']) {
          const add = today.match(new RegExp(`^-- (ALTER TABLE "${table}" ADD COLUMN "${column}" [^;]*;)$`, 'm'))?.[1];
          expect(add).toBeDefined();
          await fixture.exec(add as string);
        }
      }
      await fixture.exec(today);
      await fixture.exec(today);
      const fresh = await fixture.fresh();
      await expectLikeFresh(table, fresh.table);
      expect(await fixture.open(table).findById(key.id)).toStrictEqual(key);
    });
  });
});
