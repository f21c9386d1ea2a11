/**
 * Revocation is final across processes at once (audit issue 9, item 2). A second application
 * process (a real child process on its own connection, keygate's default verification cache with
 * its 30 s TTL) has verified a key and holds it in its cache. This process revokes it, or suspends
 * it through update(); the child's very next request is refused. SqlStore does not notify other
 * processes, so before the fix the child kept admitting the key from its cache until the entry
 * expired: the consume now reads the row's lifecycle, under the row lock, on every counted request.
 *
 * The child loads the built package (dist/), which `npm test` builds first.
 */
import Database from 'better-sqlite3';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Pool } from 'pg';
import { type Keygate, keygate } from 'keygate';
import { SqlStore } from 'keygate/sql';
import { type PostgresServer, describePostgres, startPostgres } from '../helpers/postgres-server';
import { Worker } from '../helpers/workers';

jest.setTimeout(30_000);

const PREFIX = 'pk_test';

beforeAll(() => {
  if (!existsSync(resolve(__dirname, '../../dist/cjs/index.js'))) {
    throw new Error('dist/ is missing: run `npm run build` (npm test does it first)');
  }
});

interface Verified {
  ok: boolean;
  code: string | null;
  name: string | null;
  useCount: number | null;
}

/** The scenarios, against the store `setup` returns and a child started with `workerConfig`. */
function scenarios(setup: () => { store: SqlStore; workerConfig: Record<string, unknown>; useCount: (id: string) => Promise<number> }): void {
  let keys: Keygate;
  let child: Worker;

  beforeAll(async () => {
    const { store, workerConfig } = setup();
    keys = keygate({ store, prefix: PREFIX, hashing: 'sha256' });
    child = await Worker.start('sql-verify-worker.cjs', { ...workerConfig, prefix: PREFIX });
  });

  afterAll(async () => {
    await child?.stop();
    await keys?.close();
  });

  async function childVerifies(key: string): Promise<Verified> {
    return (await child.ask({ type: 'verify', key }, 'verified')) as unknown as Verified;
  }

  it('refuses a key the other process has cached on its very next request after revoke()', async () => {
    const { useCount } = setup();
    const { key, apiKey } = await keys.create({ name: 'before' });
    expect(await childVerifies(key)).toMatchObject({ ok: true, name: 'before', useCount: 1 });

    // The child answers from its cache: a rename here does not reach it.
    await keys.update(apiKey.id, { name: 'renamed' });
    expect(await childVerifies(key)).toMatchObject({ ok: true, name: 'before', useCount: 2 });

    await keys.revoke(apiKey.id);
    const after: Verified[] = [];
    for (let i = 0; i < 5; i++) after.push(await childVerifies(key));
    expect(after.filter((result) => result.ok)).toHaveLength(0);
    expect(after.map((result) => result.code)).toEqual(Array(5).fill('api_key_revoked'));
    expect(await useCount(apiKey.id)).toBe(2);
  });

  it('refuses a key the other process has cached on its very next request after a suspension through update()', async () => {
    const { useCount } = setup();
    const { key, apiKey } = await keys.create({ name: 'to suspend' });
    expect(await childVerifies(key)).toMatchObject({ ok: true, useCount: 1 });

    await keys.update(apiKey.id, { status: 'suspended' });
    const after: Verified[] = [];
    for (let i = 0; i < 3; i++) after.push(await childVerifies(key));
    expect(after.filter((result) => result.ok)).toHaveLength(0);
    expect(after.map((result) => result.code)).toEqual(Array(3).fill('api_key_disabled'));
    expect(await useCount(apiKey.id)).toBe(1);

    // Reactivated, the key works again (here at once; a process that cached the suspended record
    // follows when its cache entry expires, which errs on the side of refusing).
    await keys.update(apiKey.id, { status: 'active' });
    expect((await keys.verify(key)).ok).toBe(true);
  });

  it('refuses the old key of a rotation without grace in the other process at once', async () => {
    const { key, apiKey } = await keys.create({ name: 'to rotate' });
    expect(await childVerifies(key)).toMatchObject({ ok: true });
    const rotated = await keys.rotate(apiKey.id);
    expect(await childVerifies(key)).toMatchObject({ ok: false, code: 'api_key_revoked' });
    expect(await childVerifies(rotated.key)).toMatchObject({ ok: true, useCount: 1 });
  });
}

describePostgres('Revocation across processes (postgres)', () => {
  let server: PostgresServer;
  let pool: Pool;
  let store: SqlStore;
  const table = 'shared_keys';

  beforeAll(async () => {
    server = await startPostgres();
    pool = new Pool({ connectionString: server.connectionString, max: 4 });
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
    workerConfig: { dialect: 'postgres', connectionString: server.connectionString, table },
    useCount: async (id) => {
      const { rows } = await pool.query(`SELECT "use_count"::int AS n FROM "${table}" WHERE "id" = $1`, [id]);
      return (rows[0] as { n: number }).n;
    },
  }));
});

describe('Revocation across processes (sqlite)', () => {
  let dir: string;
  let db: Database.Database;
  let store: SqlStore;
  const table = 'shared_keys';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'keygate-sqlite-revocation-'));
    db = new Database(join(dir, 'keys.db'), { timeout: 5_000 });
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
    workerConfig: { dialect: 'sqlite', file: join(dir, 'keys.db'), table },
    useCount: async (id) => (db.prepare(`SELECT "use_count" AS n FROM "${table}" WHERE "id" = ?`).get(id) as { n: number }).n,
  }));
});
