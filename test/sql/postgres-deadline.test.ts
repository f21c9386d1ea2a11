/**
 * The consume deadline on a real PostgreSQL (audit issue 9, item 1): a consume that gets to run
 * after the caller gave up (it waited for a row lock, or in the pg Pool's queue) is refused in the
 * database with `deadline_exceeded` and counts nothing, so a request answered 503 is never counted.
 *
 * The store-level tests pin down where the statement reads its clock: `clock_timestamp()` must be
 * read once the `FOR UPDATE` lock is held. Read in the locking CTE's own select list, it would be
 * the time before the wait (PostgreSQL computes that list below the row lock), and every consume
 * that waited would still count.
 */
import { Pool, type PoolClient } from 'pg';
import { type ApiKeyRecord, keygate } from 'keygate';
import { SqlStore } from 'keygate/sql';
import { type PostgresServer, describePostgres, startPostgres } from '../helpers/postgres-server';
import { testRecord } from '../helpers/records';

jest.setTimeout(30_000);

const NOON = Date.UTC(2025, 2, 14, 12);
const TABLE = 'deadline_keys';

function record(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return testRecord(NOON, { name: 'deadline', ...overrides });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describePostgres('SqlStore (postgres): the consume deadline', () => {
  let server: PostgresServer;
  let pool: Pool;
  let store: SqlStore;

  beforeAll(async () => {
    server = await startPostgres();
    pool = new Pool({ connectionString: server.connectionString, max: 6 });
    pool.on('error', () => undefined);
    store = new SqlStore({ dialect: 'postgres', client: pool, table: TABLE });
    await store.migrate();
  });

  afterAll(async () => {
    await pool?.end();
    await server?.destroy();
  });

  /** Another session takes the row lock of `id` in an open transaction; `release()` rolls it back. */
  async function lockRow(id: string): Promise<{ session: PoolClient; release: () => Promise<void> }> {
    const session = await pool.connect();
    await session.query('BEGIN');
    await session.query(`SELECT 1 FROM "${TABLE}" WHERE "id" = $1 FOR UPDATE`, [id]);
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

  /** Use count as stored, read straight from the table. */
  async function useCount(id: string): Promise<number> {
    const { rows } = await pool.query(`SELECT "use_count"::int AS n FROM "${TABLE}" WHERE "id" = $1`, [id]);
    return (rows[0] as { n: number }).n;
  }

  /** Waits until no other client session is running a statement (a queued consume has finished). */
  async function settled(): Promise<void> {
    const until = Date.now() + 5_000;
    for (;;) {
      const { rows } = await pool.query(
        "SELECT count(*)::int AS busy FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
      );
      if ((rows[0] as { busy: number }).busy === 0) return;
      if (Date.now() > until) throw new Error('a statement is still running after 5 s');
      await sleep(20);
    }
  }

  // Item 1: the clock is read AFTER the row lock was acquired. With the clock read before the
  // wait (or no deadline at all) this consume would be admitted once the lock is released.
  it('reads its clock once the row lock is held: a consume that waited past its deadline is refused, counting nothing', async () => {
    const key = record({ maxUses: 1 });
    await store.insert(key);
    const lock = await lockRow(key.id);
    try {
      const waiting = store.consume(key.id, { now: NOON, maxUses: 1, rateLimit: null, deadline: Date.now() + 150 });
      await sleep(400); // the consume is queued on the lock, well past its deadline
      await lock.release();
      expect(await waiting).toEqual({ admitted: false, refusal: 'deadline_exceeded', useCount: 0 });
    } finally {
      await lock.release();
    }
    expect(await useCount(key.id)).toBe(0);
    expect(await store.findById(key.id)).toStrictEqual(key);

    // The control: the same wait with a deadline that is still ahead is admitted.
    const again = await lockRow(key.id);
    const patient = store.consume(key.id, { now: NOON, maxUses: 1, rateLimit: null, deadline: Date.now() + 10_000 });
    await sleep(200);
    await again.release();
    expect(await patient).toEqual({ admitted: true, useCount: 1 });
  });

  // Item 1: time spent in the pg Pool's queue (no connection free) counts against the deadline too.
  it('refuses a consume that waited in the Pool queue past its deadline', async () => {
    const key = record();
    await store.insert(key);
    const single = new Pool({ connectionString: server.connectionString, max: 1 });
    single.on('error', () => undefined);
    try {
      const queued = new SqlStore({ dialect: 'postgres', client: single, table: TABLE });
      const busy = single.query('SELECT pg_sleep(0.4)');
      const outcome = await queued.consume(key.id, { now: NOON, maxUses: null, rateLimit: null, deadline: Date.now() + 100 });
      await busy;
      expect(outcome).toEqual({ admitted: false, refusal: 'deadline_exceeded', useCount: 0 });
      expect(await useCount(key.id)).toBe(0);
    } finally {
      await single.end();
    }
  });

  // Item 2: the lifecycle is read from the row as it is once the lock is held, not as it was
  // when the statement started: a revocation committed while the consume waited is seen.
  it('sees a revocation committed while it waited for the row lock', async () => {
    const key = record();
    await store.insert(key);
    const session = await pool.connect();
    try {
      await session.query('BEGIN');
      await session.query(`UPDATE "${TABLE}" SET "status" = 'revoked', "revoked_at" = now() WHERE "id" = $1`, [key.id]);
      const waiting = store.consume(key.id, { now: NOON, maxUses: null, rateLimit: null, deadline: Date.now() + 10_000 });
      await sleep(200);
      await session.query('COMMIT');
      expect(await waiting).toEqual({ admitted: false, refusal: 'api_key_revoked', useCount: 0 });
    } finally {
      session.release();
    }
    expect(await useCount(key.id)).toBe(0);
  });

  // Item 1, end to end through keygate(): the verifier gives the store a deadline before its own
  // timeout; the consume that was still waiting on the lock when keygate answered 503 must not be
  // applied once the lock is released. Before: it was counted, spending the key's only use on a
  // request that was refused.
  it('answers 503 store_unavailable to a request stuck behind a row lock, and that request never counts', async () => {
    const keys = keygate({ store, prefix: 'pk_test', hashing: 'sha256', storeTimeoutMs: 1_000 });
    try {
      const { key, apiKey } = await keys.create({ name: 'one use', maxUses: 1 });
      const warm = await keys.verify(key, { consume: false }); // looked up and cached, nothing counted
      expect(warm.ok).toBe(true);

      const lock = await lockRow(apiKey.id);
      const releaseLater = sleep(1_500).then(() => lock.release());
      try {
        const started = performance.now();
        const result = await keys.verify(key);
        expect(result.ok).toBe(false);
        expect(!result.ok && result.error.code).toBe('store_unavailable');
        expect(!result.ok && result.error.status).toBe(503);
        expect(performance.now() - started).toBeLessThan(1_400);
      } finally {
        await releaseLater;
      }

      // The abandoned consume ran once the lock was released: it must have counted nothing.
      await settled();
      await sleep(100);
      expect(await useCount(apiKey.id)).toBe(0);
      const admitted = await keys.verify(key);
      expect(admitted.ok).toBe(true);
      expect(admitted.ok && admitted.apiKey.useCount).toBe(1);
      const spent = await keys.verify(key);
      expect(!spent.ok && spent.error.code).toBe('usage_exhausted');
      expect(await useCount(apiKey.id)).toBe(1);
    } finally {
      await keys.close();
    }
  });
});
