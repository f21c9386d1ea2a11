/**
 * End to end: an Express app behind `keygate({ store: new SqlStore(…) })`, requests through
 * supertest, keys and counters in a real database: an admitted request and refused ones.
 */
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'pg';
import request from 'supertest';
import { keygate } from 'keygate';
import { SqlStore } from 'keygate/sql';
import { EXPRESS_VERSIONS, testApp, testClock } from '../helpers/harness';
import { type PostgresServer, describePostgres, startPostgres } from '../helpers/postgres-server';

const [, makeExpress] = EXPRESS_VERSIONS[0] ?? [];

/** The HTTP checks, against whichever store `store()` returns. */
function httpChecks(store: () => SqlStore): void {
  it('admits a valid key (200, principal, RateLimit fields) and refuses it once its uses are spent (403 usage_exhausted)', async () => {
    const clock = testClock();
    const keys = keygate({ store: store(), prefix: 'pk_test', hashing: 'sha256', now: clock.now });
    const { key, apiKey } = await keys.create({ name: 'e2e', scopes: ['leads:read'], maxUses: 1, rateLimit: { perSecond: 5, perDay: 100 } });
    const app = testApp(makeExpress!, keys);

    const admitted = await request(app).get('/whoami').set('Authorization', `Bearer ${key}`);
    expect(admitted.status).toBe(200);
    expect(admitted.body.apiKey).toMatchObject({ id: apiKey.id, name: 'e2e', scopes: ['leads:read'], useCount: 1, isActive: true });
    expect(admitted.body.apiKey.keyHash).toBeUndefined();
    expect(admitted.headers['ratelimit-policy']).toBe('"second";q=5;w=1, "day";q=100;w=86400');

    const refused = await request(app).get('/whoami').set('X-API-Key', key);
    expect(refused.status).toBe(403);
    expect(refused.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(refused.body).toMatchObject({ status: 403, code: 'usage_exhausted' });
    expect((await keys.get(apiKey.id))?.useCount).toBe(1);
    await keys.close();
  });

  it('refuses a burst over the per-second bucket with 429 rate_limited and Retry-After', async () => {
    const clock = testClock();
    const keys = keygate({ store: store(), prefix: 'pk_test', hashing: 'sha256', now: clock.now });
    const { key } = await keys.create({ name: 'bursty', rateLimit: { perSecond: 1 } });
    const app = testApp(makeExpress!, keys);

    expect((await request(app).get('/whoami').set('Authorization', `Bearer ${key}`)).status).toBe(200);
    const limited = await request(app).get('/whoami').set('Authorization', `Bearer ${key}`);
    expect(limited.status).toBe(429);
    expect(limited.body.code).toBe('rate_limited');
    expect(limited.headers['retry-after']).toBe('1');
    clock.advance(1_000);
    expect((await request(app).get('/whoami').set('Authorization', `Bearer ${key}`)).status).toBe(200);
    await keys.close();
  });

  it('refuses a revoked key at once (401 api_key_revoked), even while it is cached', async () => {
    const clock = testClock();
    const keys = keygate({ store: store(), prefix: 'pk_test', hashing: 'sha256', now: clock.now });
    const { key, apiKey } = await keys.create({ name: 'to revoke' });
    const app = testApp(makeExpress!, keys);
    expect((await request(app).get('/whoami').set('Authorization', `Bearer ${key}`)).status).toBe(200);

    await keys.revoke(apiKey.id);
    const refused = await request(app).get('/whoami').set('Authorization', `Bearer ${key}`);
    expect(refused.status).toBe(401);
    expect(refused.body.code).toBe('api_key_revoked');
    await keys.close();
  });
}

describe('HTTP through SqlStore (sqlite)', () => {
  let dir: string;
  let db: Database.Database;
  let store: SqlStore;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'keygate-sqlite-http-'));
    db = new Database(join(dir, 'keys.db'));
    db.pragma('journal_mode = WAL');
    store = new SqlStore({ dialect: 'sqlite', client: db });
    await store.migrate();
  });

  afterAll(() => {
    db?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  httpChecks(() => store);
});

describePostgres('HTTP through SqlStore (postgres)', () => {
  let server: PostgresServer;
  let pool: Pool;
  let store: SqlStore;

  beforeAll(async () => {
    server = await startPostgres();
    pool = new Pool({ connectionString: server.connectionString });
    pool.on('error', () => undefined);
    store = new SqlStore({ dialect: 'postgres', client: pool, table: 'public.api_keys' });
    await store.migrate();
  });

  afterAll(async () => {
    await pool?.end();
    await server?.destroy();
  });

  httpChecks(() => store);
});
