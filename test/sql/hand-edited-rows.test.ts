/**
 * Rows edited straight in the database, behind keygate's back (audit issue 9): an operator's
 * UPDATE, an import, a migration gone wrong. keygate must never admit more than the row says, and
 * never guess at a value it cannot read. Every test here was admitted (or answered 503) before.
 */
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'pg';
import { type Keygate, isKeygateError, keygate } from 'keygate';
import { SqlStore } from 'keygate/sql';
import { type PostgresServer, describePostgres, startPostgres } from '../helpers/postgres-server';
import { rejection } from '../helpers/rejection';

jest.setTimeout(30_000);

/** What a dialect offers the scenarios: a fresh manager on a fresh table, and raw SQL on it. */
interface Bench {
  keys: Keygate;
  store: SqlStore;
  /** `UPDATE <table> SET <assignment> WHERE id = <id>`, with the assignment written in the dialect's SQL. */
  edit(id: string, assignment: string): Promise<void>;
  /** Lets the table hold any status (PostgreSQL: drops the CHECK constraint; SQLite: stops enforcing CHECKs). */
  dropStatusCheck(): Promise<void>;
  useCount(id: string): Promise<number>;
}

interface Dialect {
  name: 'postgres' | 'sqlite';
  bench(): Promise<Bench>;
  /** SQL literals of the dialect for the hand edits. */
  allowedIps(entries: string[]): string;
  nullInScopes: string;
  badInstant: string;
  notAnObject: string;
}

/** The same refusal for everything a verification can say about a key that must not be admitted. */
const REFUSED_AS_UNUSABLE = ['invalid_api_key', 'api_key_revoked', 'invalid_record'];

function scenarios(dialect: () => Dialect): void {
  let bench: Bench;

  beforeEach(async () => {
    bench = await dialect().bench();
  });

  afterEach(async () => {
    await bench?.keys.close();
  });

  // Item: allowedIps entries that are not an address or CIDR range. Before, an unparsable entry
  // was dropped, and an allowlist left empty admitted every address.
  it.each([['10.0.0.0/8 '], ['10.0.0.1/32,10.0.0.2/32'], ['010.0.0.1'], ['10.0.0.0/33']])(
    'refuses every address (ip_not_allowed) when allowed_ips was set by hand to [%j]',
    async (entry) => {
      const { keys } = bench;
      const { key, apiKey } = await keys.create({ name: 'hand-edited allowlist' });
      await bench.edit(apiKey.id, `"allowed_ips" = ${dialect().allowedIps([entry])}`);
      for (const ip of ['10.0.0.1', '10.0.0.2', '192.0.2.1']) {
        const result = await keys.verify(key, { ip });
        expect(result.ok).toBe(false);
        expect(!result.ok && result.error.code).toBe('ip_not_allowed');
      }
      expect(await bench.useCount(apiKey.id)).toBe(0);
    },
  );

  // Item 2 (lifecycle allow-list): a status keygate does not know, written once the operator
  // dropped the CHECK constraint. Before: only 'revoked' and 'suspended' refused, so 'disabled'
  // was admitted, and get() reported the key active.
  it('refuses a key whose status was set by hand to one keygate does not know, and get() does not call it active', async () => {
    const { keys } = bench;
    const { key, apiKey } = await keys.create({ name: 'disabled by hand' });
    await bench.dropStatusCheck();
    await bench.edit(apiKey.id, `"status" = 'disabled'`);

    const result = await keys.verify(key);
    expect(result.ok).toBe(false);
    expect(REFUSED_AS_UNUSABLE).toContain(!result.ok && result.error.code);
    expect(await bench.useCount(apiKey.id)).toBe(0);

    const read = await keys.get(apiKey.id).then(
      (found) => ({ found }),
      (error: unknown) => ({ error }),
    );
    if ('error' in read) {
      expect(isKeygateError(read.error) && read.error.code).toBe('invalid_record');
    } else {
      expect(read.found?.isActive).not.toBe(true);
    }
  });

  // Item 2: the same edits on a key this process has verified and cached. The cache says active;
  // the consume reads the row and refuses. Before: admitted until the cache entry expired.
  it('refuses a cached key on its next request once its row was set to suspended by hand', async () => {
    const { keys } = bench;
    const { key, apiKey } = await keys.create({ name: 'suspended by hand' });
    expect((await keys.verify(key)).ok).toBe(true);
    await bench.edit(apiKey.id, `"status" = 'suspended'`);
    const result = await keys.verify(key);
    expect(!result.ok && result.error.code).toBe('api_key_disabled');
    expect(await bench.useCount(apiKey.id)).toBe(1);
  });

  // Review finding: a negative use_count written by hand let a cached key pass maxUses.
  it('refuses (503, fail closed) a cached key whose use_count was set below zero by hand, never over maxUses', async () => {
    const { keys } = bench;
    const { key, apiKey } = await keys.create({ name: 'negative count', maxUses: 2 });
    expect((await keys.verify(key)).ok).toBe(true);
    await bench.edit(apiKey.id, `"use_count" = -50`);
    for (let i = 0; i < 5; i++) {
      const result = await keys.verify(key);
      expect(!result.ok && result.error.code).toBe('store_unavailable');
    }
    expect(await bench.useCount(apiKey.id)).toBe(-50);
  });

  it('refuses a cached key on its next request once its row was set by hand to a status keygate does not know', async () => {
    const { keys } = bench;
    const { key, apiKey } = await keys.create({ name: 'cached, then disabled by hand' });
    expect((await keys.verify(key)).ok).toBe(true);
    await bench.dropStatusCheck();
    await bench.edit(apiKey.id, `"status" = 'disabled'`);
    const result = await keys.verify(key);
    expect(!result.ok && result.error.code).toBe('api_key_revoked');
    expect(await bench.useCount(apiKey.id)).toBe(1);
  });

  // Item 5: a column value the row decoder cannot read is invalid_record (a 500 naming the record
  // and field), not a guess and not a 503. Before: a NULL scope became the scope "null", an
  // undecodable value threw a plain Error (reported as store_unavailable).
  it.each([
    ['scopes', 'a NULL element in scopes', (d: Dialect) => `"scopes" = ${d.nullInScopes}`],
    ['expiresAt', 'an instant no Date can hold', (d: Dialect) => `"expires_at" = ${d.badInstant}`],
    ['metadata', 'metadata that is not a JSON object', (d: Dialect) => `"metadata" = ${d.notAnObject}`],
  ] as const)('get() rejects with invalid_record naming %s for %s, and verify() never admits the key', async (field, _what, assignment) => {
    const { keys } = bench;
    const { key, apiKey } = await keys.create({ name: 'undecodable', scopes: ['leads:read'] });
    await bench.edit(apiKey.id, assignment(dialect()));

    const error = await rejection(() => keys.get(apiKey.id));
    expect(isKeygateError(error) && error.code).toBe('invalid_record');
    expect(isKeygateError(error) && error.message).toContain(field);
    expect(isKeygateError(error) && error.message).not.toMatch(/\$hmac-sha256\$/);

    const result = await keys.verify(key);
    expect(result.ok).toBe(false);
    expect(await bench.useCount(apiKey.id)).toBe(0);
  });

  // Item 5, and the cache: a store-level revocation of such a row is written (the consume will
  // refuse the key), rejects with invalid_record when the row is read back, and still tells the
  // listeners, so no cache keeps the key as it was.
  it('a write to an undecodable row that went through still reaches the change listeners', async () => {
    const { keys, store } = bench;
    const { apiKey } = await keys.create({ name: 'undecodable, then revoked' });
    await bench.edit(apiKey.id, `"metadata" = ${dialect().notAnObject}`);
    const changed: (string | null)[] = [];
    const unsubscribe = store.subscribe((id) => changed.push(id));
    try {
      const now = new Date();
      const error = await rejection(() => store.update(apiKey.id, { status: 'revoked', revokedAt: now, updatedAt: now }));
      expect(isKeygateError(error) && error.code).toBe('invalid_record');
      expect(changed).toEqual([apiKey.id]);
      const outcome = await store.consume(apiKey.id, { now: Date.now(), maxUses: null, rateLimit: null });
      expect(outcome).toEqual({ admitted: false, refusal: 'api_key_revoked', useCount: 0 });
    } finally {
      unsubscribe();
    }
  });
}

describePostgres('Rows edited by hand (postgres)', () => {
  let server: PostgresServer;
  let pool: Pool;
  let count = 0;

  beforeAll(async () => {
    server = await startPostgres();
    pool = new Pool({ connectionString: server.connectionString, max: 4 });
    pool.on('error', () => undefined);
  });

  afterAll(async () => {
    await pool?.end();
    await server?.destroy();
  });

  const quoteArray = (entries: string[]): string => `'{${entries.map((entry) => JSON.stringify(entry)).join(',')}}'`;

  scenarios(() => ({
    name: 'postgres',
    allowedIps: quoteArray,
    nullInScopes: `'{NULL}'`,
    badInstant: `'infinity'`,
    notAnObject: `'[1, 2]'`,
    bench: async () => {
      const table = `edited_${++count}`;
      const store = new SqlStore({ dialect: 'postgres', client: pool, table });
      await store.migrate();
      return {
        keys: keygate({ store, prefix: 'pk_test', hashing: 'sha256' }),
        store,
        edit: async (id, assignment) => {
          const { rowCount } = await pool.query(`UPDATE "${table}" SET ${assignment} WHERE "id" = $1`, [id]);
          expect(rowCount).toBe(1);
        },
        dropStatusCheck: async () => {
          await pool.query(`ALTER TABLE "${table}" DROP CONSTRAINT "${table}_status_check"`);
        },
        useCount: async (id) => {
          const { rows } = await pool.query(`SELECT "use_count"::int AS n FROM "${table}" WHERE "id" = $1`, [id]);
          return (rows[0] as { n: number }).n;
        },
      };
    },
  }));
});

describe('Rows edited by hand (sqlite)', () => {
  let dir: string;
  const opened: Database.Database[] = [];
  let count = 0;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'keygate-sqlite-edited-'));
  });

  afterAll(() => {
    for (const db of opened) db.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  scenarios(() => ({
    name: 'sqlite',
    allowedIps: (entries) => `'${JSON.stringify(entries)}'`,
    nullInScopes: `'[null]'`,
    // A STRICT INTEGER column holds any 64-bit integer; a Date holds ±8.64e15 ms at most.
    badInstant: '9007199254740000',
    notAnObject: `'{"unterminated": '`,
    bench: async () => {
      const db = new Database(join(dir, `keys-${++count}.db`));
      opened.push(db);
      db.pragma('journal_mode = WAL');
      const store = new SqlStore({ dialect: 'sqlite', client: db });
      await store.migrate();
      return {
        keys: keygate({ store, prefix: 'pk_test', hashing: 'sha256' }),
        store,
        edit: async (id, assignment) => {
          expect(db.prepare(`UPDATE "keygate_api_keys" SET ${assignment} WHERE "id" = ?`).run(id).changes).toBe(1);
        },
        // SQLite cannot drop a CHECK constraint without rebuilding the table; an operator's
        // connection can stop enforcing them instead.
        dropStatusCheck: async () => {
          db.pragma('ignore_check_constraints = ON');
        },
        useCount: async (id) => (db.prepare(`SELECT "use_count" AS n FROM "keygate_api_keys" WHERE "id" = ?`).get(id) as { n: number }).n,
      };
    },
  }));
});
