/**
 * SqlStore without a PostgreSQL server: option validation, the shipped DDL, what migrate() runs,
 * values a database cannot hold exactly, in-process notification, and the client's ownership.
 */
import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { inspect } from 'node:util';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type ApiKeyRecord, isKeygateError, keygate } from 'keygate';
import { DEFAULT_TABLE, type PostgresClient, SqlStore, sqlSchema } from 'keygate/sql';
import { tableSchema } from '../../src/stores/sql/schema';
import { parseTableName } from '../../src/stores/sql/table-name';
import { testRecord } from '../helpers/records';
import { rejection } from '../helpers/rejection';

const CREATED = Date.UTC(2025, 0, 2, 3, 4, 5, 678);

function record(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return testRecord(CREATED, { name: 'unit', ...overrides });
}

/** A pg client that records every query and fails the test if a query is not expected. */
function recordingPostgres(): PostgresClient & { texts: string[] } {
  const texts: string[] = [];
  return {
    texts,
    query: async (text: string) => {
      texts.push(text);
      return { rows: [] };
    },
  };
}

let dir: string;
const opened: Database.Database[] = [];

function sqliteFile(): Database.Database {
  const db = new Database(join(dir, `${randomUUID()}.db`));
  opened.push(db);
  return db;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-sql-unit-'));
});

afterAll(() => {
  for (const db of opened) if (db.open) db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('new SqlStore(options)', () => {
  const pg = recordingPostgres();

  it('accepts a postgres client and a sqlite database, with or without a table name', () => {
    expect(new SqlStore({ dialect: 'postgres', client: pg }).toJSON()).toEqual({ dialect: 'postgres', table: DEFAULT_TABLE });
    expect(new SqlStore({ dialect: 'postgres', client: pg, table: 'auth.api_keys' }).table).toBe('auth.api_keys');
    expect(new SqlStore({ dialect: 'sqlite', client: sqliteFile(), table: 'Api_Keys_2' }).toJSON()).toEqual({ dialect: 'sqlite', table: 'Api_Keys_2' });
  });

  it('names an unknown option with a did-you-mean, as a TypeError', () => {
    expect(() => new SqlStore({ dialect: 'postgres', client: pg, tabel: 'x' } as never)).toThrow(
      new TypeError('new SqlStore(): unsupported option `tabel`, did you mean `table`?'),
    );
    expect(() => new SqlStore({ dialect: 'postgres', cilent: pg } as never)).toThrow(/unsupported option `cilent`, did you mean `client`\?/);
  });

  it('refuses a missing or unknown dialect, suggesting the right spelling', () => {
    expect(() => new SqlStore({ client: pg } as never)).toThrow(TypeError);
    expect(() => new SqlStore({ dialect: 'postgresql', client: pg } as never)).toThrow(/did you mean 'postgres'\?/);
    expect(() => new SqlStore({ dialect: 'sqlite3', client: pg } as never)).toThrow(/did you mean 'sqlite'\?/);
    expect(() => new SqlStore({ dialect: 'mysql', client: pg } as never)).toThrow(/must be 'postgres' or 'sqlite'/);
    expect(() => new SqlStore(undefined as never)).toThrow(TypeError);
  });

  it('refuses a client of the wrong kind, naming what it looks like', () => {
    const db = sqliteFile();
    expect(() => new SqlStore({ dialect: 'postgres', client: db as never })).toThrow(/looks like a better-sqlite3 Database: use dialect 'sqlite'/);
    expect(() => new SqlStore({ dialect: 'sqlite', client: pg as never })).toThrow(/looks like a pg client: use dialect 'postgres'/);
    expect(() => new SqlStore({ dialect: 'postgres', client: 'postgres://localhost/db' as never })).toThrow(/not a connection string/);
    expect(() => new SqlStore({ dialect: 'postgres', client: undefined as never })).toThrow(/`client` is required/);
  });

  it.each([
    ['keys; DROP TABLE users', true],
    ['keys"', true],
    ['"keys"', true],
    ['1keys', true],
    ['a.b.c', true],
    ['', true],
    ['k'.repeat(46), true],
    ['schema.keys', false],
  ])('refuses the table name %j (postgres: %s) as unsafe', (table, postgres) => {
    const create = () =>
      postgres ? new SqlStore({ dialect: 'postgres', client: pg, table }) : new SqlStore({ dialect: 'sqlite', client: sqliteFile(), table });
    expect(create).toThrow(TypeError);
  });

  it('quotes the table name and derives index names from it', () => {
    const table = parseTableName('auth.API_keys', true);
    expect(table.qualified).toBe('"auth"."API_keys"');
    expect(table.indexName('key_prefix_key')).toBe('"API_keys_key_prefix_key"');
  });

  it('never touches the client at construction', () => {
    const client = recordingPostgres();
    new SqlStore({ dialect: 'postgres', client });
    expect(client.texts).toEqual([]);
  });
});

describe('schema', () => {
  const root = resolve(__dirname, '../..');

  it.each(['postgres', 'sqlite'] as const)('docs/sql/%s.sql is exactly sqlSchema() for the default table, after its comment header', (dialect) => {
    const file = readFileSync(join(root, `docs/sql/${dialect}.sql`), 'utf8');
    const header = file.slice(0, file.indexOf('\n\nCREATE'));
    expect(header.split('\n').every((line) => line.startsWith('-- '))).toBe(true);
    expect(file.slice(header.length + 2)).toBe(sqlSchema({ dialect }));
  });

  it('postgres migrate() runs exactly the schema statements, after an advisory lock, in one query', async () => {
    const client = recordingPostgres();
    await new SqlStore({ dialect: 'postgres', client, table: 'auth.keys' }).migrate();
    expect(client.texts).toHaveLength(1);
    const [lock, ...rest] = (client.texts[0] as string).split(';\n');
    expect(lock).toMatch(/^SELECT pg_advisory_xact_lock\(\d+, -?\d+\)$/);
    const schema = tableSchema('postgres', parseTableName('auth.keys', true));
    expect(`${rest.join(';\n')}`).toBe(`${[schema.createTable, ...schema.addColumns.map((add) => add.statement), ...schema.indexes, ...schema.companions].join(';\n')};`);
    expect(`${rest.join(';\n\n')}`).toBe(sqlSchema({ dialect: 'postgres', table: 'auth.keys' }).replace(/;\n$/, ';'));
  });

  it('sqlite migrate() runs exactly the schema statements, in one immediate transaction, and is idempotent', async () => {
    const db = sqliteFile();
    const executed: string[] = [];
    const exec = db.exec.bind(db);
    db.exec = (source: string) => {
      executed.push(source);
      return exec(source);
    };
    const store = new SqlStore({ dialect: 'sqlite', client: db });
    await store.migrate();
    await store.migrate();
    const schema = tableSchema('sqlite', parseTableName(DEFAULT_TABLE, false));
    // A fresh table has the columns of later versions already: no ALTER runs, then or ever.
    const statements = [schema.createTable, ...schema.indexes, ...schema.companions];
    expect(executed).toEqual([...statements, ...statements]);
    const upgrades = schema.addColumns.map((add) => `-- ${add.statement};`).join('\n');
    const script = sqlSchema({ dialect: 'sqlite' });
    expect(script.startsWith(`${schema.createTable};\n\n-- Columns of later versions`)).toBe(true);
    expect(script.endsWith(`\n${upgrades}\n\n${[...schema.indexes, ...schema.companions].join(';\n\n')};\n`)).toBe(true);
    const indexes = db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name").all();
    expect(indexes.map((row) => (row as { name: string }).name)).toEqual([
      'keygate_api_keys_alert_expiry_idx',
      'keygate_api_keys_audit_actor_idx',
      'keygate_api_keys_audit_at_idx',
      'keygate_api_keys_audit_env_idx',
      'keygate_api_keys_audit_key_idx',
      'keygate_api_keys_audit_tenant_idx',
      'keygate_api_keys_created_at_id_idx',
      'keygate_api_keys_deleted_at_idx',
      'keygate_api_keys_key_prefix_key',
      'keygate_api_keys_owner_id_idx',
      'keygate_api_keys_status_idx',
      'keygate_api_keys_tenant_id_idx',
      'keygate_api_keys_usage_applied_idx',
    ]);
  });

  it('a table made from docs/sql/sqlite.sql (not by migrate) works, and migrate() on it changes nothing', async () => {
    const db = sqliteFile();
    db.exec(readFileSync(join(root, 'docs/sql/sqlite.sql'), 'utf8'));
    const before = db.prepare('SELECT sql FROM sqlite_master ORDER BY name').all();
    const store = new SqlStore({ dialect: 'sqlite', client: db });
    await store.migrate();
    expect(db.prepare('SELECT sql FROM sqlite_master ORDER BY name').all()).toEqual(before);
    const key = record({ maxUses: 1 });
    await store.insert(key);
    expect(await store.consume(key.id, { now: CREATED, maxUses: 1, rateLimit: null })).toEqual({ admitted: true, useCount: 1 });
  });

  it('sqlSchema() validates its options like the store does', () => {
    expect(() => sqlSchema({ dialect: 'mysql' as never })).toThrow(TypeError);
    expect(() => sqlSchema({ dialect: 'sqlite', table: 'a.b' })).toThrow(/cannot be schema-qualified/);
    expect(sqlSchema({ dialect: 'postgres', table: 'auth.api_keys' })).toContain('CREATE TABLE IF NOT EXISTS "auth"."api_keys"');
  });
});

describe('values a database cannot give back exactly', () => {
  it('refuses a lone surrogate with invalid_argument naming the field, in both dialects, writing nothing', async () => {
    const client = recordingPostgres();
    const stores = [new SqlStore({ dialect: 'postgres', client }), new SqlStore({ dialect: 'sqlite', client: sqliteFile() })];
    for (const store of stores) {
      if (store.dialect === 'sqlite') await store.migrate();
      const bad = record({ name: 'half \ud83d pair' });
      const error = await rejection(() => store.insert(bad));
      expect(isKeygateError(error) && [error.code, error.field]).toEqual(['invalid_argument', 'name']);
      const nested = await rejection(() => store.insert(record({ metadata: { deep: { ['\udfff']: 1 } } })));
      expect(isKeygateError(nested) && nested.code).toBe('invalid_argument');
      const patched = await rejection(() => store.update(bad.id, { tags: ['ok', '\ud800'], updatedAt: new Date(CREATED) }));
      expect(isKeygateError(patched) && [patched.code, patched.field]).toEqual(['invalid_argument', 'tags[1]']);
      // A well-formed pair is fine.
      await expect(store.insert(record({ name: 'pair 😀' }))).resolves.toBeUndefined();
    }
    expect(client.texts.some((text) => text.includes('half'))).toBe(false);
  });

  it('refuses U+0000 and instants before 4714 BC for postgres only, before any query', async () => {
    const client = recordingPostgres();
    const store = new SqlStore({ dialect: 'postgres', client });
    const early = new Date(Date.UTC(-4713, 10, 24) - 1);
    for (const bad of [record({ name: 'nul\u0000' }), record({ metadata: { 'k\u0000': 1 } }), record({ createdAt: early })]) {
      const error = await rejection(() => store.insert(bad));
      expect(isKeygateError(error) && error.code).toBe('invalid_argument');
    }
    const listed = await rejection(() => store.list({ after: { createdAt: early, id: 'x' }, limit: 10 }));
    expect(isKeygateError(listed) && listed.code).toBe('invalid_argument');
    // A lookup of a key no record can have answers null without a query.
    expect(await store.findById('a\u0000b')).toBeNull();
    expect(await store.consume('a\u0000b', { now: CREATED, maxUses: null, rateLimit: null })).toBeNull();
    expect(client.texts).toEqual([]);
  });
});

describe('subscribe and ownership (sqlite)', () => {
  it('notifies listeners of every SqlStore sharing the client and table, and only those', async () => {
    const db = sqliteFile();
    const a = new SqlStore({ dialect: 'sqlite', client: db });
    const b = new SqlStore({ dialect: 'sqlite', client: db });
    const other = new SqlStore({ dialect: 'sqlite', client: db, table: 'other_keys' });
    await a.migrate();
    await other.migrate();
    const heardA: (string | null)[] = [];
    const heardB: (string | null)[] = [];
    const heardOther: (string | null)[] = [];
    const stopA = a.subscribe((id) => heardA.push(id));
    b.subscribe((id) => heardB.push(id));
    other.subscribe((id) => heardOther.push(id));

    const key = record();
    await a.insert(key);
    await a.consume(key.id, { now: CREATED, maxUses: null, rateLimit: null });
    expect([heardA, heardB]).toEqual([[], []]); // inserts and consumes are not changes caches care about
    await a.update(key.id, { name: 'renamed', updatedAt: new Date(CREATED) });
    expect([heardA, heardB, heardOther]).toEqual([[key.id], [key.id], []]);
    stopA();
    await b.update(key.id, { name: 'again', updatedAt: new Date(CREATED) });
    expect([heardA, heardB]).toEqual([[key.id], [key.id, key.id]]);
    expect(await a.update(randomUUID(), { name: 'ghost', updatedAt: new Date(CREATED) })).toBeNull();
    expect(heardB).toHaveLength(2);
  });

  it('a revocation through one keygate reaches another keygate on another SqlStore of the same database at once', async () => {
    const db = sqliteFile();
    const first = keygate({ store: new SqlStore({ dialect: 'sqlite', client: db }), prefix: 'pk_test', hashing: 'sha256' });
    const second = keygate({ store: new SqlStore({ dialect: 'sqlite', client: db }), prefix: 'pk_test', hashing: 'sha256' });
    await new SqlStore({ dialect: 'sqlite', client: db }).migrate();
    const { key, apiKey } = await first.create({ name: 'shared' });
    expect((await second.verify(key)).ok).toBe(true); // cached in `second`
    await first.revoke(apiKey.id);
    const result = await second.verify(key);
    expect(!result.ok && result.error.code).toBe('api_key_revoked');
    await first.close();
    await second.close();
    expect(db.open).toBe(true); // keygate and the store never close the user's database
  });

  it('keeps the client and every record out of inspect and JSON output', async () => {
    const db = sqliteFile();
    const store = new SqlStore({ dialect: 'sqlite', client: db });
    await store.migrate();
    await store.insert(record({ keyHash: '$hmac-sha256$secret-hash' }));
    expect(JSON.stringify(store)).toBe(`{"dialect":"sqlite","table":"${DEFAULT_TABLE}"}`);
    expect(inspect(store, { depth: 10 })).not.toContain('secret-hash');
  });
});
