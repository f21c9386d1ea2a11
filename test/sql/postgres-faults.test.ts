/**
 * Faults against a real PostgreSQL: the database stopped mid-test, then started again; a query that
 * hangs on a lock. The store must reject (keygate answers 503 store_unavailable, within
 * storeTimeoutMs, never admitting), and recover on the same Pool once the database is back.
 */
import { Pool } from 'pg';
import { type Keygate, isKeygateError, keygate } from 'keygate';
import { SqlStore } from 'keygate/sql';
import { type PostgresServer, describePostgres, startPostgres } from '../helpers/postgres-server';
import { testClock } from '../helpers/harness';
import { rejection } from '../helpers/rejection';

jest.setTimeout(30_000);

const STORE_TIMEOUT_MS = 500;

async function timed<T>(action: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await action();
  return { value, ms: performance.now() - started };
}

describePostgres('SqlStore (postgres) faults', () => {
  let server: PostgresServer;
  let pool: Pool;
  let store: SqlStore;
  let keys: Keygate;
  let poolErrors: unknown[];
  const clock = testClock();

  beforeAll(async () => {
    server = await startPostgres();
    poolErrors = [];
    // What the README recommends: bounded connects, a server-side statement timeout, and an
    // 'error' listener (without one, an idle connection cut by the server crashes the process).
    pool = new Pool({ connectionString: server.connectionString, max: 4, connectionTimeoutMillis: 2_000 });
    pool.on('error', (error) => poolErrors.push(error));
    store = new SqlStore({ dialect: 'postgres', client: pool });
    await store.migrate();
    keys = keygate({ store, prefix: 'pk_test', hashing: 'sha256', now: clock.now, storeTimeoutMs: STORE_TIMEOUT_MS });
  });

  afterAll(async () => {
    await keys?.close();
    await pool?.end();
    await server?.destroy();
  });

  it('refuses with store_unavailable while the database is down, and recovers on the same Pool once it is back', async () => {
    const { key, apiKey } = await keys.create({ name: 'through an outage', maxUses: 10 });
    expect((await keys.verify(key)).ok).toBe(true); // warm: pool connections open, key cached

    await server.stop();
    try {
      // The store itself rejects (a driver error, not a refusal and not already_exists) ...
      const consumeError = await rejection(() => store.consume(apiKey.id, { now: clock.now(), maxUses: 10, rateLimit: null }));
      // (A Node core error, from the main realm: hence no toBeInstanceOf(Error) under jest.)
      expect((consumeError as { code?: unknown }).code).toBe('ECONNREFUSED');
      expect(isKeygateError(consumeError)).toBe(false);
      const { isActive: _view, ...fields } = apiKey;
      const storeInsertError = await rejection(() => store.insert({ ...fields, keyHash: 'x', id: 'other-id', keyPrefix: 'pk_test_other' }));
      expect((storeInsertError as { code?: unknown }).code).toBe('ECONNREFUSED');
      const insertError = await rejection(() => keys.create({ name: 'while down' }));
      expect(isKeygateError(insertError) && insertError.code).toBe('store_unavailable');

      // ... and keygate turns it into a 503 refusal, quickly: a cached key is still refused
      // because every admission needs its consume (fail closed).
      const { value: result, ms } = await timed(() => keys.verify(key));
      expect(result.ok).toBe(false);
      expect(!result.ok && result.error.code).toBe('store_unavailable');
      expect(!result.ok && result.error.status).toBe(503);
      expect(ms).toBeLessThan(STORE_TIMEOUT_MS + 250);
    } finally {
      await server.start();
    }

    // The server cut the pool's idle connections (reported on the pool's 'error' event) ...
    expect(poolErrors.map((error) => (error as { code?: unknown }).code)).toContain('57P01');
    // ... and the same Pool, store and manager work again: the pool opened new connections by itself.
    const again = await keys.verify(key);
    expect(again.ok).toBe(true);
    expect(again.ok && again.apiKey.useCount).toBe(2); // the refused attempts counted nothing
    const created = await keys.create({ name: 'after the outage' });
    expect(await keys.get(created.apiKey.id)).toMatchObject({ name: 'after the outage' });
  });

  it('refuses within storeTimeoutMs when a query hangs, and a statement_timeout makes the store itself reject', async () => {
    const { key, apiKey } = await keys.create({ name: 'behind a lock' });
    expect((await keys.verify(key)).ok).toBe(true);

    // Another session holds the key's row lock: every consume of it now waits.
    const blocker = await pool.connect();
    const bounded = new Pool({ connectionString: server.connectionString, max: 2, statement_timeout: 300 });
    bounded.on('error', () => undefined);
    try {
      await blocker.query('BEGIN');
      await blocker.query('SELECT 1 FROM "keygate_api_keys" WHERE "id" = $1 FOR UPDATE', [apiKey.id]);

      const { value: result, ms } = await timed(() => keys.verify(key));
      expect(!result.ok && result.error.code).toBe('store_unavailable');
      expect(ms).toBeGreaterThanOrEqual(STORE_TIMEOUT_MS - 5);
      expect(ms).toBeLessThan(STORE_TIMEOUT_MS + 250);

      // With statement_timeout on its pool the store call itself fails (57014 query_canceled),
      // so the server cancels the statement and the connection is freed, nothing counted.
      const boundedStore = new SqlStore({ dialect: 'postgres', client: bounded });
      const error = await rejection(() => boundedStore.consume(apiKey.id, { now: clock.now(), maxUses: null, rateLimit: null }));
      expect((error as { code?: string }).code).toBe('57014');
    } finally {
      await blocker.query('ROLLBACK');
      blocker.release();
      await bounded.end();
    }

    // The consume keygate stopped waiting for stayed queued on the lock (no statement_timeout on
    // its pool) and ran once the lock was released: past the deadline keygate gave it, so it was
    // refused in the database and counted nothing (audit issue 9, item 1; before, it counted).
    await settled(pool);
    expect((await store.findById(apiKey.id))?.useCount).toBe(1);
    expect((await keys.verify(key)).ok).toBe(true);
    expect((await store.findById(apiKey.id))?.useCount).toBe(2); // the warm-up and this one
  });
});

/** Waits until no statement of another session is still running (a queued consume has finished). */
async function settled(pool: Pool): Promise<void> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const { rows } = await pool.query(
      "SELECT count(*)::int AS busy FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
    );
    if ((rows[0] as { busy: number }).busy === 0 || Date.now() > deadline) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

