/**
 * Several real application processes hammer one key in one database at the same time. Together
 * they must admit exactly what the limits allow: atomicity across processes, not only across the
 * promises of one. The workers load the built package (dist/), which `npm test` builds first.
 */
import Database from 'better-sqlite3';
import { fork } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Pool } from 'pg';
import type { ApiKeyRecord, ConsumeOutcome, ConsumeRequest } from 'keygate';
import { SqlStore } from 'keygate/sql';
import { type PostgresServer, describePostgres, startPostgres } from '../helpers/postgres-server';
import { testRecord } from '../helpers/records';

jest.setTimeout(60_000);

const WORKER = resolve(__dirname, '../fixtures/sql-consume-worker.cjs');
const NOON = Date.UTC(2025, 2, 14, 12);

beforeAll(() => {
  if (!existsSync(resolve(__dirname, '../../dist/cjs/sql.js'))) {
    throw new Error('dist/ is missing: run `npm run build` (npm test does it first)');
  }
});

function record(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return testRecord(NOON, { name: 'hammered', ...overrides });
}

interface Hammer {
  dialect: 'postgres' | 'sqlite';
  connectionString?: string;
  file?: string;
  table: string;
  id: string;
  processes: number;
  attempts: number;
  inFlight: number;
  request: ConsumeRequest;
}

/** Forks the workers, starts them together once all are connected, and gathers every outcome. */
async function hammer(options: Hammer): Promise<ConsumeOutcome[]> {
  const { processes, ...config } = options;
  const workers = Array.from({ length: processes }, () => fork(WORKER, [JSON.stringify(config)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  const ready = workers.map(
    (worker) =>
      new Promise<void>((done, fail) => {
        worker.once('message', () => done());
        worker.once('exit', (code) => fail(new Error(`a worker exited with ${code} before it was ready`)));
      }),
  );
  const results = workers.map(
    (worker) =>
      new Promise<ConsumeOutcome[]>((done, fail) => {
        worker.on('message', (message: { outcomes?: ConsumeOutcome[]; error?: string; ready?: boolean }) => {
          if (message.outcomes) done(message.outcomes);
          if (message.error) fail(new Error(message.error));
        });
      }),
  );
  try {
    await Promise.all(ready);
    for (const worker of workers) worker.send('go');
    return (await Promise.all(results)).flat();
  } finally {
    for (const worker of workers) if (worker.exitCode === null) worker.kill();
  }
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

function ascending(values: number[]): number[] {
  return [...values].sort((a, b) => a - b);
}

/** The scenarios, for a dialect whose store and connection settings `setup` provides. */
function scenarios(setup: () => { store: SqlStore; base: Omit<Hammer, 'id' | 'request' | 'attempts'> }): void {
  it('admits exactly maxUses among every process, each use counted once', async () => {
    const { store, base } = setup();
    const key = record({ maxUses: 150 });
    await store.insert(key);
    const attempts = Math.ceil(400 / base.processes);

    const outcomes = await hammer({ ...base, id: key.id, attempts, request: { now: NOON, maxUses: 150, rateLimit: null } });
    const admitted = outcomes.filter((o) => o.admitted);
    expect(outcomes).toHaveLength(attempts * base.processes);
    expect(admitted).toHaveLength(150);
    // Every use number 1..150 handed out exactly once: the consumes were serialised.
    expect(ascending(admitted.map((o) => o.useCount))).toEqual(range(1, 150));
    expect(new Set(outcomes.filter((o) => !o.admitted).map((o) => o.refusal))).toEqual(new Set(['usage_exhausted']));
    expect((await store.findById(key.id))?.useCount).toBe(150);
  });

  it('admits exactly the burst of a per-second bucket at one instant', async () => {
    const { store, base } = setup();
    const rateLimit = { perSecond: 1, burst: 60 };
    const key = record({ rateLimit });
    await store.insert(key);
    const attempts = Math.ceil(240 / base.processes);

    const outcomes = await hammer({ ...base, id: key.id, attempts, request: { now: NOON, maxUses: null, rateLimit } });
    const admitted = outcomes.filter((o) => o.admitted);
    expect(admitted).toHaveLength(60);
    expect(ascending(admitted.map((o) => o.tokens ?? -1))).toEqual(range(0, 59));
    expect(new Set(outcomes.filter((o) => !o.admitted).map((o) => o.refusal))).toEqual(new Set(['rate_limited']));
    expect((await store.findById(key.id))?.useCount).toBe(60);
  });

  it.each([
    ['month', { perMonth: 50 }],
    ['hour', { perHour: 50 }],
    ['minute', { perMinute: 50 }],
  ] as const)('admits exactly the %s quota (50 of 160 attempts), each count handed out once', async (name, rateLimit) => {
    const { store, base } = setup();
    const key = record({ rateLimit });
    await store.insert(key);
    const field = `${name}Count` as const;
    const attempts = Math.ceil(160 / base.processes);

    const outcomes = await hammer({ ...base, id: key.id, attempts, request: { now: NOON, maxUses: null, rateLimit } });
    const admitted = outcomes.filter((o) => o.admitted);
    expect(outcomes).toHaveLength(attempts * base.processes);
    expect(admitted).toHaveLength(50);
    expect(ascending(admitted.map((o) => o[field] ?? -1))).toEqual(range(1, 50));
    const refused = outcomes.filter((o) => !o.admitted);
    expect(new Set(refused.map((o) => o.refusal))).toEqual(new Set(['quota_exceeded']));
    expect(new Set(refused.map((o) => o[field]))).toEqual(new Set([50]));
    expect((await store.findById(key.id))?.useCount).toBe(50);
  });

  it('admits exactly the most lasting quota when every window has one, counting each use in all of them', async () => {
    const { store, base } = setup();
    // The month is the tightest: it refuses, and the refusals count in no window.
    const rateLimit = { perMinute: 70, perHour: 60, perDay: 55, perMonth: 45 };
    const key = record({ rateLimit });
    await store.insert(key);
    const attempts = Math.ceil(160 / base.processes);

    const outcomes = await hammer({ ...base, id: key.id, attempts, request: { now: NOON, maxUses: null, rateLimit } });
    const admitted = outcomes.filter((o) => o.admitted);
    expect(admitted).toHaveLength(45);
    expect(ascending(admitted.map((o) => o.monthCount ?? -1))).toEqual(range(1, 45));
    for (const o of admitted) expect([o.minuteCount, o.hourCount, o.dayCount]).toEqual([o.monthCount, o.monthCount, o.monthCount]);
    expect(new Set(outcomes.filter((o) => !o.admitted).map((o) => o.refusal))).toEqual(new Set(['quota_exceeded']));
    // Next month: the month restarts; the minute, hour and day of 1 April go on from nothing too.
    const april = Date.UTC(2025, 3, 1);
    expect(await store.consume(key.id, { now: april, maxUses: null, rateLimit })).toEqual({
      admitted: true,
      useCount: 46,
      minuteCount: 1,
      hourCount: 1,
      dayCount: 1,
      monthCount: 1,
    });
    // Still March 14 for a lagging clock: counted at the latest instant, 1 April.
    expect(await store.consume(key.id, { now: NOON, maxUses: null, rateLimit })).toMatchObject({ admitted: true, monthCount: 2, minuteCount: 2 });
  });

  it('admits exactly the day quota, all or nothing across limits', async () => {
    const { store, base } = setup();
    const rateLimit = { perSecond: 1, burst: 90, perDay: 70 };
    const key = record({ maxUses: 200, rateLimit });
    await store.insert(key);
    const attempts = Math.ceil(240 / base.processes);

    const outcomes = await hammer({ ...base, id: key.id, attempts, request: { now: NOON, maxUses: 200, rateLimit } });
    const admitted = outcomes.filter((o) => o.admitted);
    expect(admitted).toHaveLength(70);
    expect(ascending(admitted.map((o) => o.dayCount ?? -1))).toEqual(range(1, 70));
    expect(new Set(outcomes.filter((o) => !o.admitted).map((o) => o.refusal))).toEqual(new Set(['quota_exceeded']));
    // The refusals took nothing: 20 tokens are left, and the next day admits again.
    expect(await store.consume(key.id, { now: NOON + 86_400_000, maxUses: 200, rateLimit })).toEqual({
      admitted: true,
      useCount: 71,
      dayCount: 1,
      tokens: 89,
    });
  });
}

describePostgres('SqlStore (postgres): 4 processes against one database', () => {
  let server: PostgresServer;
  let pool: Pool;
  let store: SqlStore;
  const table = 'hammered_keys';

  beforeAll(async () => {
    server = await startPostgres();
    pool = new Pool({ connectionString: server.connectionString });
    pool.on('error', () => undefined);
    store = new SqlStore({ dialect: 'postgres', client: pool, table });
    await store.migrate();
  });

  afterAll(async () => {
    await pool?.end();
    await server?.destroy();
  });

  scenarios(() => ({
    store,
    base: { dialect: 'postgres', connectionString: server.connectionString, table, processes: 4, inFlight: 8 },
  }));
});

describe('SqlStore (sqlite): 3 processes on one database file', () => {
  let dir: string;
  let db: Database.Database;
  let store: SqlStore;
  const table = 'hammered_keys';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'keygate-sqlite-processes-'));
    db = new Database(join(dir, 'keys.db'));
    db.pragma('journal_mode = WAL');
    store = new SqlStore({ dialect: 'sqlite', client: db, table });
    await store.migrate();
  });

  afterAll(() => {
    db?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  scenarios(() => ({
    store,
    base: { dialect: 'sqlite', file: join(dir, 'keys.db'), table, processes: 3, inFlight: 4 },
  }));
});
