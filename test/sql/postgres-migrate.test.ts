/**
 * migrate() and the shipped DDL against a real PostgreSQL: idempotent, safe when several
 * processes migrate at once, equivalent to docs/sql/postgres.sql, schema-qualified names, and
 * indexes the store's queries can actually use.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Client, Pool } from 'pg';
import type { ApiKeyRecord } from 'keygate';
import { SqlStore } from 'keygate/sql';
import { type PostgresServer, describePostgres, startPostgres } from '../helpers/postgres-server';
import { testRecord } from '../helpers/records';
import { rejection } from '../helpers/rejection';

jest.setTimeout(30_000);

const CREATED = Date.UTC(2025, 0, 2);

function record(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return testRecord(CREATED, { name: 'migrated', ...overrides });
}

describePostgres('SqlStore (postgres) migrate', () => {
  let server: PostgresServer;
  let pool: Pool;

  /** The table's columns and indexes, as the catalog describes them. */
  async function describeTable(schema: string, table: string): Promise<unknown> {
    const columns = await pool.query(
      `SELECT column_name, data_type, is_nullable, column_default, collation_name FROM information_schema.columns
       WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`,
      [schema, table],
    );
    const indexes = await pool.query(
      `SELECT replace(indexdef, $3, 'T') AS def FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY indexname`,
      [schema, table, `${schema}.${table}`],
    );
    return { columns: columns.rows, indexes: indexes.rows.map((row: { def: string }) => row.def.replace(new RegExp(table, 'g'), 'T')) };
  }

  beforeAll(async () => {
    server = await startPostgres();
    pool = new Pool({ connectionString: server.connectionString, max: 10 });
    pool.on('error', () => undefined);
  });

  afterAll(async () => {
    await pool?.end();
    await server?.destroy();
  });

  it('is idempotent: a second migrate() changes nothing and keeps the data', async () => {
    const store = new SqlStore({ dialect: 'postgres', client: pool, table: 'twice' });
    await store.migrate();
    const key = record();
    await store.insert(key);
    const before = await describeTable('public', 'twice');
    await store.migrate();
    expect(await describeTable('public', 'twice')).toEqual(before);
    expect(await store.findById(key.id)).toStrictEqual(key);
  });

  it('lets several processes migrate the same new table at once without an error', async () => {
    // Separate Clients are separate sessions: to the database, separate processes.
    const sessions = await Promise.all(
      Array.from({ length: 6 }, async () => {
        const client = new Client({ connectionString: server.connectionString });
        client.on('error', () => undefined);
        await client.connect();
        return client;
      }),
    );
    try {
      for (let round = 0; round < 5; round++) {
        const table = `raced_${round}`;
        await Promise.all(sessions.map((client) => new SqlStore({ dialect: 'postgres', client, table }).migrate()));
        const { rows } = await pool.query('SELECT count(*)::int AS n FROM pg_indexes WHERE tablename = $1', [table]);
        expect(rows[0].n).toBe(7); // primary key + key_prefix + 4 list indexes + deleted keys (partial)
        const companions = await pool.query('SELECT count(*)::int AS n FROM pg_indexes WHERE tablename LIKE $1', [`${table}\\_%`]);
        // audit: primary key + 5 filter indexes; usage: primary key; batches and claims: primary key + 1 each
        expect(companions.rows[0].n).toBe(11);
      }
    } finally {
      await Promise.all(sessions.map((client) => client.end()));
    }
  });

  it('creates the same table as docs/sql/postgres.sql, and a table made from that file works', async () => {
    await new SqlStore({ dialect: 'postgres', client: pool }).migrate();
    const migrated = await describeTable('public', 'keygate_api_keys');
    await pool.query('CREATE SCHEMA IF NOT EXISTS from_docs');
    const session = await pool.connect();
    try {
      await session.query('SET search_path TO from_docs');
      await session.query(readFileSync(resolve(__dirname, '../../docs/sql/postgres.sql'), 'utf8'));
    } finally {
      session.release(true);
    }
    expect(await describeTable('from_docs', 'keygate_api_keys')).toEqual(migrated);
    // And the tables named from it, with their indexes.
    for (const companion of ['audit', 'usage', 'usage_batches', 'alert_claims']) {
      const table = `keygate_api_keys_${companion}`;
      const expected = await describeTable('public', table);
      expect((expected as { columns: unknown[] }).columns.length).toBeGreaterThan(0);
      expect(await describeTable('from_docs', table)).toEqual(expected);
    }

    const store = new SqlStore({ dialect: 'postgres', client: pool, table: 'from_docs.keygate_api_keys' });
    await store.migrate(); // a no-op on it
    const key = record({ maxUses: 2 });
    await store.insert(key);
    expect(await store.consume(key.id, { now: CREATED, maxUses: 2, rateLimit: null })).toEqual({ admitted: true, useCount: 1 });
  });

  it('keeps same-named tables of different schemas apart', async () => {
    await pool.query('CREATE SCHEMA IF NOT EXISTS tenant_a; CREATE SCHEMA IF NOT EXISTS tenant_b');
    const a = new SqlStore({ dialect: 'postgres', client: pool, table: 'tenant_a.keys' });
    const b = new SqlStore({ dialect: 'postgres', client: pool, table: 'tenant_b.keys' });
    await Promise.all([a.migrate(), b.migrate()]);
    const key = record();
    await a.insert(key);
    await b.insert(key); // same id and keyPrefix: another table
    expect(await a.findById(key.id)).toStrictEqual(key);
    expect(await b.list({ limit: 10 })).toStrictEqual([key]);
  });

  it('names a missing schema and how to create it, instead of the raw 3F000', async () => {
    const error = await rejection(() => new SqlStore({ dialect: 'postgres', client: pool, table: 'auth.api_keys' }).migrate());
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toBeInstanceOf(TypeError);
    expect((error as Error).message).toBe(
      'keygate: schema "auth" does not exist: create it first (CREATE SCHEMA auth) before migrate() creates table "auth.api_keys"',
    );
    expect(error).toMatchObject({ code: '3F000', cause: { code: '3F000' } });
    // Unquoted names fold to lower case: a schema with capitals is quoted in the advice.
    const capitals = await rejection(() => new SqlStore({ dialect: 'postgres', client: pool, table: 'Auth.keys' }).migrate());
    expect((capitals as Error).message).toMatch(/create it first \(CREATE SCHEMA "Auth"\)/);
    // Following the advice works.
    await pool.query('CREATE SCHEMA auth');
    const store = new SqlStore({ dialect: 'postgres', client: pool, table: 'auth.api_keys' });
    await store.migrate();
    const key = record();
    await store.insert(key);
    expect(await store.findById(key.id)).toStrictEqual(key);
  });

  it('says so when an unqualified table has no schema to go to (a search_path naming none that exists)', async () => {
    const client = new Client({ connectionString: server.connectionString, options: '-c search_path=nowhere' });
    client.on('error', () => undefined);
    await client.connect();
    try {
      const error = await rejection(() => new SqlStore({ dialect: 'postgres', client, table: 'homeless' }).migrate());
      expect((error as Error).message).toMatch(/^keygate: no schema to create table "homeless" in: the connection's search_path names no schema/);
      expect(error).toMatchObject({ code: '3F000' });
    } finally {
      await client.end();
    }
  });

  it('serves lookups, keyset pages and filtered lists from the indexes', async () => {
    const store = new SqlStore({ dialect: 'postgres', client: pool, table: 'indexed' });
    await store.migrate();
    for (let i = 0; i < 50; i++) await store.insert(record({ ownerId: `owner_${i % 5}`, createdAt: new Date(CREATED + i) }));
    await pool.query('ANALYZE "indexed"');
    const session = await pool.connect();
    try {
      await session.query('SET enable_seqscan = off; SET enable_bitmapscan = off');
      const plan = async (sql: string, values: unknown[]) =>
        (await session.query(`EXPLAIN ${sql}`, values)).rows.map((row: { 'QUERY PLAN': string }) => row['QUERY PLAN']).join('\n');
      expect(await plan('SELECT 1 FROM "indexed" WHERE "key_prefix" = $1::text', ['kg_x'])).toMatch(/indexed_key_prefix_key/);
      const keyset = await plan(
        `SELECT "id" FROM "indexed" WHERE ("created_at", "id") > ($1::timestamptz, $2::text COLLATE "C") ORDER BY "created_at", "id" LIMIT 10`,
        [new Date(CREATED + 10).toISOString(), 'x'],
      );
      // Both columns of the row comparison are index conditions: the collation matches the index.
      expect(keyset).toMatch(/Index (Only )?Scan using indexed_created_at_id_idx/);
      expect(keyset).toMatch(/Index Cond: \(ROW\(created_at, id\) > ROW/);
      expect(keyset).not.toMatch(/Sort/);
      const owner = await plan('SELECT "id" FROM "indexed" WHERE "owner_id" = $1::text ORDER BY "created_at", "id" LIMIT 10', ['owner_1']);
      expect(owner).toMatch(/indexed_owner_id_idx/);
      expect(owner).not.toMatch(/Sort/);
    } finally {
      session.release(true);
    }
  });
});
