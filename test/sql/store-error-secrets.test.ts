/**
 * No key hash in store errors (audit issue 9). A database error can quote the row it failed on:
 * PostgreSQL's `detail` says "Failing row contains (…)" with every column, key_hash included; a
 * SQLite trigger can build its RAISE message from NEW.key_hash. keygate answers such a failure
 * with 503 store_unavailable and keeps the failure for logs; neither the error nor anything
 * reachable from it (inspected deeply, serialised, its stack) may carry a hash. Before, the
 * driver error rode along untouched as `cause`.
 */
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { Pool } from 'pg';
import { type Keygate, isKeygateError, keygate } from 'keygate';
import { SqlStore } from 'keygate/sql';
import { type PostgresServer, describePostgres, startPostgres } from '../helpers/postgres-server';
import { testRecord } from '../helpers/records';
import { rejection } from '../helpers/rejection';

jest.setTimeout(30_000);

const HASH_MARKERS = ['$hmac-sha256$', '$2b$'];

/** Every way an application might log `error`, none of which may show a hash. */
function expectNoHash(error: unknown): void {
  const renderings = [inspect(error, { depth: 10 }), JSON.stringify(error) ?? '', String((error as { stack?: unknown }).stack)];
  const cause = (error as { cause?: unknown }).cause;
  if (cause !== undefined) renderings.push(inspect(cause, { depth: 10, showHidden: true }), JSON.stringify(cause) ?? '');
  for (const text of renderings) for (const marker of HASH_MARKERS) expect(text).not.toContain(marker);
}

/** The failure as a store_unavailable refusal of the manager. */
function expectUnavailable(error: unknown): void {
  expect(isKeygateError(error) && error.code).toBe('store_unavailable');
  expectNoHash(error);
}

/** A bcrypt-hashing manager on `store` whose create breaks the operator's rule: no hash in the error. */
async function expectBcryptCreateUnavailable(store: SqlStore): Promise<void> {
  const bcryptKeys = keygate({ store, prefix: 'pk_test', hashing: 'bcrypt', bcryptCost: 4 });
  try {
    expectUnavailable(await rejection(() => bcryptKeys.create({ name: 'a name far too long for the rule' })));
  } finally {
    await bcryptKeys.close();
  }
}

describePostgres('No key hash in store errors (postgres)', () => {
  let server: PostgresServer;
  let pool: Pool;
  let store: SqlStore;
  let keys: Keygate;
  const table = 'guarded_keys';

  beforeAll(async () => {
    server = await startPostgres();
    pool = new Pool({ connectionString: server.connectionString, max: 4 });
    pool.on('error', () => undefined);
    store = new SqlStore({ dialect: 'postgres', client: pool, table });
    await store.migrate();
    keys = keygate({ store, prefix: 'pk_test', hashing: 'sha256' });
    // An operator's rule the keys do not meet: every insert of a long name fails on it.
    await pool.query(`ALTER TABLE "${table}" ADD CONSTRAINT "short_names" CHECK (length("name") < 12)`);
    // And one that a rotation breaks: the replacement of a tagged key.
    await pool.query(`ALTER TABLE "${table}" ADD CONSTRAINT "untagged_rotations" CHECK ("rotated_from_id" IS NULL OR cardinality("tags") = 0)`);
  });

  afterAll(async () => {
    await keys?.close();
    await pool?.end();
    await server?.destroy();
  });

  it('keys.create() failing on a CHECK constraint: PostgreSQL quotes the failing row, the error carries no hash', async () => {
    const error = await rejection(() => keys.create({ name: 'a name far too long for the rule' }));
    expectUnavailable(error);
  });

  it('keys.update() failing on a CHECK constraint: the row quoted holds the stored hash, the error carries none', async () => {
    const { apiKey } = await keys.create({ name: 'short' });
    expectUnavailable(await rejection(() => keys.update(apiKey.id, { name: 'a name far too long for the rule' })));
  });

  it('keys.rotate() whose replacement breaks a rule: the replacement row is quoted, the error carries no hash', async () => {
    const { apiKey } = await keys.create({ name: 'tagged', tags: ['billing'] });
    expectUnavailable(await rejection(() => keys.rotate(apiKey.id)));
    expect((await keys.get(apiKey.id))?.revokedAt).toBeNull(); // and nothing changed
  });

  it('a bcrypt hash is kept out too, and the store itself rejects with the driver error minus the hash', async () => {
    await expectBcryptCreateUnavailable(store);
    // Straight from the store: still pg's error, with its code and constraint (apps match on
    // them), and the row in `detail` without the hash.
    const record = testRecord(Date.now(), { name: 'a name far too long for the rule', keyHash: `$2b$04$${'x'.repeat(53)}` });
    const error = (await rejection(() => store.insert(record))) as { code?: unknown; constraint?: unknown; detail?: unknown };
    expect(error.code).toBe('23514');
    expect(error.constraint).toBe('short_names');
    expect(String(error.detail)).toContain('Failing row contains');
    expect(String(error.detail)).toContain(record.keyPrefix);
    expectNoHash(error);
  });
});

describe('No key hash in store errors (sqlite)', () => {
  let dir: string;
  let db: Database.Database;
  let store: SqlStore;
  let keys: Keygate;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'keygate-sqlite-errors-'));
    db = new Database(join(dir, 'keys.db'));
    db.pragma('journal_mode = WAL');
    store = new SqlStore({ dialect: 'sqlite', client: db });
    await store.migrate();
    keys = keygate({ store, prefix: 'pk_test', hashing: 'sha256' });
    // An operator's audit trigger whose message quotes the row, hash included.
    db.exec(`
      CREATE TRIGGER "reject_long_names_on_insert" BEFORE INSERT ON "keygate_api_keys" WHEN length(NEW."name") >= 12
      BEGIN SELECT RAISE(ABORT, 'rejected key row ' || NEW."id" || ' ' || NEW."key_hash"); END;
      CREATE TRIGGER "reject_long_names_on_update" BEFORE UPDATE ON "keygate_api_keys" WHEN length(NEW."name") >= 12
      BEGIN SELECT RAISE(ABORT, 'rejected key row ' || NEW."id" || ' ' || NEW."key_hash"); END;
    `);
  });

  afterAll(async () => {
    await keys?.close();
    db?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('keys.create() failing in a trigger whose message quotes the hash: the error carries no hash', async () => {
    expectUnavailable(await rejection(() => keys.create({ name: 'a name far too long for the rule' })));
  });

  it('keys.update() failing in such a trigger: the error carries no hash', async () => {
    const { apiKey } = await keys.create({ name: 'short' });
    expectUnavailable(await rejection(() => keys.update(apiKey.id, { name: 'a name far too long for the rule' })));
  });

  it('a bcrypt hash is kept out too, and the store itself rejects with the driver error minus the hash', async () => {
    await expectBcryptCreateUnavailable(store);
    const record = testRecord(Date.now(), { name: 'a name far too long for the rule', keyHash: `$2b$04$${'x'.repeat(53)}` });
    const error = (await rejection(() => store.insert(record))) as { code?: unknown; message?: unknown };
    expect(error.code).toBe('SQLITE_CONSTRAINT_TRIGGER');
    expect(String(error.message)).toContain(`rejected key row ${record.id}`);
    expectNoHash(error);
  });
});
