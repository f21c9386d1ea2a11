/**
 * Migrations derived from the record schema: a field whose `since` is above 1 becomes a column
 * that migrate() adds to a table created before it. Version 2 added record fields (allowed
 * origins, requireHttps, client certificates, maxConcurrent) and columns of the store's own (the
 * minute, hour and month counters, tested by window-counters.test.ts, and the concurrency leases).
 *
 * - A table created by version 1's DDL (test/sql/fixtures/version-1-*.sql) gains `max_concurrent`
 *   and `concurrency_leases`: its rows read `maxConcurrent: null` and hold no lease, on both dialects.
 * - Version 3 added `deleted_at` (soft delete): test/sql/delete-purge.test.ts upgrades a version-2 table.
 * - Version 4 added `rotation_frequency_days` and `alerts`, and the tables named from the key table:
 *   test/sql/observability.test.ts upgrades a version-3 table.
 * - Version 5 added `lease_holds` (leased mode): test/sql/leased-mode.test.ts upgrades a version-4 table.
 * - The rest describes a later schema of its own (the record's fields plus two of a version 6) and
 *   runs the real migration code with it, on SQLite and on a real PostgreSQL.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Pool } from 'pg';
import type { ApiKeyRecord } from 'keygate';
import { SqlStore, sqlSchema } from 'keygate/sql';
import type { FieldSpec, RecordField } from '../../src/record/schema';
import { type Column, RECORD_COLUMNS, columnsOf } from '../../src/stores/sql/columns';
import { migratePostgres, migrateSqlite } from '../../src/stores/sql/migrate';
import { schemaScript, tableSchema } from '../../src/stores/sql/schema';
import { parseTableName } from '../../src/stores/sql/table-name';
import { type PostgresServer, describePostgres, startPostgres } from '../helpers/postgres-server';
import { testRecord } from '../helpers/records';
import { postgresColumns } from '../helpers/sql-stores';

jest.setTimeout(30_000);

const CREATED = Date.UTC(2025, 0, 2, 3, 4, 5, 678);

function record(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return testRecord(CREATED, { name: 'from version 1', maxUses: 5, tags: ['a'], ...overrides });
}

/** Fields of a pretend version 6, which the record type does not have (hence the casts). */
function laterFields(fields: Record<string, FieldSpec>): readonly Column[] {
  return columnsOf(Object.entries(fields).map(([field, spec]) => ({ field: field as RecordField, spec })));
}

/** The record's columns, plus an optional text and a list that starts with two entries. */
const VERSION_2: readonly Column[] = [
  ...RECORD_COLUMNS,
  ...laterFields({
    nickname: { kind: 'optionalText', column: 'nickname', source: 'settings', since: 6 },
    labels: { kind: 'list', column: 'labels', source: 'settings', since: 6, initial: () => ["it's", 'new'] },
  }),
];

describe('the DDL of a later schema version', () => {
  it('for today\'s schema, the columns of version 2 are added (the minute, hour and month counters, the leases, then origins, HTTPS, certificates and maxConcurrent), then deleted_at of version 3, then rotation_frequency_days and alerts of version 4, then lease_holds of version 5', () => {
    for (const dialect of ['postgres', 'sqlite'] as const) {
      const table = parseTableName(undefined, dialect === 'postgres');
      expect(tableSchema(dialect, table).addColumns.map((add) => add.column)).toEqual([
        'month', 'month_count', 'hour', 'hour_count', 'minute', 'minute_count', 'concurrency_leases',
        'allowed_origins', 'require_https', 'client_certificate_sha256', 'max_concurrent', 'deleted_at',
        'rotation_frequency_days', 'alerts', 'lease_holds',
      ]);
      expect(schemaScript(dialect, table)).toBe(sqlSchema({ dialect }));
    }
  });

  it('postgres: CREATE TABLE lists the later columns after the counters, by version; ADD COLUMN IF NOT EXISTS follows with the same definition', () => {
    const script = schemaScript('postgres', parseTableName('auth.keys', true), VERSION_2);
    expect(script).toMatch(/"max_concurrent" +bigint,\n +"deleted_at" +timestamptz\(3\),\n +"rotation_frequency_days" bigint,\n +"alerts" +jsonb, +-- [^\n]*\n +"lease_holds" +jsonb NOT NULL DEFAULT '\{\}', +-- [^\n]*\n +"nickname" +text,\n +"labels" +text\[\] NOT NULL DEFAULT ARRAY\['it''s', 'new'\]::text\[\],\n +CONSTRAINT/);
    expect(script).toContain(
      'ALTER TABLE "auth"."keys" ADD COLUMN IF NOT EXISTS "max_concurrent" bigint;\n\n' +
        'ALTER TABLE "auth"."keys" ADD COLUMN IF NOT EXISTS "deleted_at" timestamptz(3);\n\n' +
        'ALTER TABLE "auth"."keys" ADD COLUMN IF NOT EXISTS "rotation_frequency_days" bigint;\n\n' +
        'ALTER TABLE "auth"."keys" ADD COLUMN IF NOT EXISTS "alerts" jsonb;\n\n' +
        `ALTER TABLE "auth"."keys" ADD COLUMN IF NOT EXISTS "lease_holds" jsonb NOT NULL DEFAULT '{}';\n\n` +
        'ALTER TABLE "auth"."keys" ADD COLUMN IF NOT EXISTS "nickname" text;\n\n' +
        `ALTER TABLE "auth"."keys" ADD COLUMN IF NOT EXISTS "labels" text[] NOT NULL DEFAULT ARRAY['it''s', 'new']::text[];\n\nCREATE UNIQUE INDEX`,
    );
  });

  it('sqlite: the script stays idempotent and carries the ADD COLUMNs as comments, to run once on an older table', () => {
    const script = schemaScript('sqlite', parseTableName(undefined, false), VERSION_2);
    expect(script).toContain(`"labels"           TEXT NOT NULL DEFAULT '["it''s","new"]',`);
    expect(script).toContain(
      '-- ALTER TABLE "keygate_api_keys" ADD COLUMN "nickname" TEXT;\n' +
        `-- ALTER TABLE "keygate_api_keys" ADD COLUMN "labels" TEXT NOT NULL DEFAULT '["it''s","new"]';\n\nCREATE UNIQUE INDEX`,
    );
    const db = new Database(':memory:');
    db.exec(script);
    db.exec(script);
    db.close();
  });

  it('refuses a later field that could not be added to a table with rows: NOT NULL without an initial value', () => {
    const broken = [...RECORD_COLUMNS, ...laterFields({ code: { kind: 'text', column: 'code', source: 'settings', since: 2 } })];
    expect(() => tableSchema('postgres', parseTableName(undefined, true), broken)).toThrow(/field code \(since version 2\) must accept null or have an initial value/);
  });
});

describe('migrate() to a later version (sqlite)', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'keygate-later-columns-'));
  });

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  function columnsOfTable(db: Database.Database, table: string): unknown[] {
    return db.prepare('SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid').all(table);
  }

  it('adds the missing columns with their initial values, inside one immediate transaction, and twice is harmless', async () => {
    const db = new Database(join(dir, `${randomUUID()}.db`));
    try {
      const store = new SqlStore({ dialect: 'sqlite', client: db });
      await store.migrate();
      const key = record();
      await store.insert(key);

      // Every statement, the read of the table's columns included, runs inside the transaction.
      const outside: string[] = [];
      const { exec, prepare } = db;
      db.exec = (source: string) => (db.inTransaction || outside.push(source), exec.call(db, source));
      db.prepare = ((source: string) => (db.inTransaction || outside.push(source), prepare.call(db, source))) as typeof db.prepare;
      const table = parseTableName(undefined, false);
      migrateSqlite(db, table, VERSION_2);
      db.exec = exec;
      db.prepare = prepare;
      expect(outside).toEqual([]);
      const upgraded = columnsOfTable(db, table.text);
      migrateSqlite(db, table, VERSION_2);
      expect(columnsOfTable(db, table.text)).toEqual(upgraded);

      // The existing row holds the initial values and reads back as it was written.
      expect(db.prepare('SELECT "nickname", "labels" FROM "keygate_api_keys" WHERE "id" = ?').get(key.id)).toEqual({
        nickname: null,
        labels: '["it\'s","new"]',
      });
      expect(await store.findById(key.id)).toStrictEqual(key);
      expect(await store.consume(key.id, { now: CREATED, maxUses: 5, rateLimit: null })).toEqual({ admitted: true, useCount: 1 });

      // A table created at version 2 is the same as one upgraded to it.
      const fresh = parseTableName('fresh_keys', false);
      migrateSqlite(db, fresh, VERSION_2);
      expect(columnsOfTable(db, fresh.text)).toEqual(upgraded);
    } finally {
      db.close();
    }
  });

  it('changes nothing on a table already at the later version, whichever version migrates it', async () => {
    const db = new Database(join(dir, `${randomUUID()}.db`));
    try {
      const table = parseTableName(undefined, false);
      migrateSqlite(db, table, VERSION_2);
      const before = db.prepare('SELECT sql FROM sqlite_master ORDER BY name').all();
      await new SqlStore({ dialect: 'sqlite', client: db }).migrate();
      migrateSqlite(db, table, VERSION_2);
      expect(db.prepare('SELECT sql FROM sqlite_master ORDER BY name').all()).toEqual(before);
    } finally {
      db.close();
    }
  });
});

describePostgres('migrate() to a later version (postgres)', () => {
  let server: PostgresServer;
  let pool: Pool;

  const describeColumns = (table: string) => postgresColumns(pool, table);

  beforeAll(async () => {
    server = await startPostgres();
    pool = new Pool({ connectionString: server.connectionString, max: 6 });
    pool.on('error', () => undefined);
  });

  afterAll(async () => {
    await pool?.end();
    await server?.destroy();
  });

  it('adds the missing columns with their initial values under the migration lock, and twice is harmless', async () => {
    const store = new SqlStore({ dialect: 'postgres', client: pool, table: 'upgraded' });
    await store.migrate();
    const key = record();
    await store.insert(key);

    const table = parseTableName('upgraded', true);
    const texts: string[] = [];
    const recording = { query: (text: string, values?: unknown[]) => (texts.push(text), pool.query(text, values)) };
    await migratePostgres(recording, table, VERSION_2);
    expect(texts).toHaveLength(1); // one query: one transaction, the advisory lock first
    expect(texts[0]).toMatch(/^SELECT pg_advisory_xact_lock\(/);
    expect(texts[0]).toContain('ALTER TABLE "upgraded" ADD COLUMN IF NOT EXISTS "labels"');
    const upgraded = await describeColumns('upgraded');
    await migratePostgres(pool, table, VERSION_2);
    expect(await describeColumns('upgraded')).toEqual(upgraded);

    const { rows } = await pool.query('SELECT "nickname", "labels" FROM "upgraded" WHERE "id" = $1', [key.id]);
    expect(rows).toEqual([{ nickname: null, labels: ["it's", 'new'] }]);
    expect(await store.findById(key.id)).toStrictEqual(key);
    expect(await store.consume(key.id, { now: CREATED, maxUses: 5, rateLimit: null })).toEqual({ admitted: true, useCount: 1 });

    // A table created at version 2 is the same as one upgraded to it.
    await migratePostgres(pool, parseTableName('fresh', true), VERSION_2);
    expect(await describeColumns('fresh')).toEqual(upgraded);
  });

  it('several sessions upgrading the same table at once all succeed', async () => {
    await new SqlStore({ dialect: 'postgres', client: pool, table: 'raced_upgrade' }).migrate();
    const table = parseTableName('raced_upgrade', true);
    await Promise.all(Array.from({ length: 5 }, () => migratePostgres(pool, table, VERSION_2)));
    const names = (await describeColumns('raced_upgrade')).map((column) => (column as { column_name: string }).column_name);
    expect(names.slice(-2)).toEqual(['nickname', 'labels']);
  });

  it('the shipped script form (sqlSchema for a later version) upgrades a version-1 table and can run again', async () => {
    await new SqlStore({ dialect: 'postgres', client: pool, table: 'scripted' }).migrate();
    const script = schemaScript('postgres', parseTableName('scripted', true), VERSION_2);
    await pool.query(script);
    await pool.query(script);
    const names = (await describeColumns('scripted')).map((column) => (column as { column_name: string }).column_name);
    expect(names.slice(-2)).toEqual(['nickname', 'labels']);
  });
});

// ---------------------------------------------------------------------------------------------
// A version-1 table (as shipped before version 2) gains maxConcurrent and the concurrency leases.

function version1(dialect: 'postgres' | 'sqlite', table: string): string {
  return readFileSync(join(__dirname, 'fixtures', `version-1-${dialect}.sql`), 'utf8').replaceAll('keygate_api_keys', table);
}

/** A key version 1 wrote and used (three uses); the claims made on it once upgraded. */
const USED = { useCount: 3 };
const CLAIM = { limit: 2, lease: 'first', leaseMs: 30_000 };

describe('a version-1 table gains max_concurrent and concurrency_leases (sqlite)', () => {
  it('existing rows read maxConcurrent null and hold no lease; a fresh table is the same; claims work at once', async () => {
    const db = new Database(':memory:');
    try {
      db.exec(version1('sqlite', 'v1_keys'));
      const v1Columns = (db.prepare('SELECT name FROM pragma_table_info(?) ORDER BY cid').all('v1_keys') as { name: string }[]).map((column) => `"${column.name}"`);
      expect(v1Columns).not.toContain('"max_concurrent"');
      expect(v1Columns).not.toContain('"concurrency_leases"');
      // The row as version 1 wrote it: today's insert into a scratch table, copied column by column.
      const key = record(USED);
      const scratch = new SqlStore({ dialect: 'sqlite', client: db, table: 'scratch_keys' });
      await scratch.migrate();
      await scratch.insert(key);
      db.exec(`INSERT INTO "v1_keys" (${v1Columns.join(', ')}) SELECT ${v1Columns.join(', ')} FROM "scratch_keys"`);

      const store = new SqlStore({ dialect: 'sqlite', client: db, table: 'v1_keys' });
      await store.migrate();
      await store.migrate();
      const describeTable = (table: string) => db.prepare('SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid').all(table);
      await new SqlStore({ dialect: 'sqlite', client: db, table: 'fresh_keys' }).migrate();
      expect(describeTable('v1_keys')).toEqual(describeTable('fresh_keys'));
      expect(db.prepare('SELECT "max_concurrent", "concurrency_leases" FROM "v1_keys"').get()).toEqual({ max_concurrent: null, concurrency_leases: '{}' });
      expect(await store.findById(key.id)).toStrictEqual(key);
      expect((await store.findById(key.id))?.maxConcurrent).toBeNull();

      expect(await store.consume(key.id, { now: CREATED, maxUses: 5, rateLimit: null, concurrency: CLAIM })).toEqual({ admitted: true, useCount: 4, inFlight: 1 });
      expect(db.prepare('SELECT "concurrency_leases" FROM "v1_keys"').get()).toEqual({ concurrency_leases: JSON.stringify({ first: CREATED + 30_000 }) });
      await store.release(key.id, 'first');
      expect(db.prepare('SELECT "concurrency_leases" FROM "v1_keys"').get()).toEqual({ concurrency_leases: '{}' });
    } finally {
      db.close();
    }
  });
});

describePostgres('a version-1 table gains max_concurrent and concurrency_leases (postgres)', () => {
  let server: PostgresServer;
  let pool: Pool;

  beforeAll(async () => {
    server = await startPostgres();
    pool = new Pool({ connectionString: server.connectionString, max: 4 });
    pool.on('error', () => undefined);
  });

  afterAll(async () => {
    await pool?.end();
    await server?.destroy();
  });

  const describeTable = (table: string) => postgresColumns(pool, table);

  it('existing rows read maxConcurrent null and hold no lease; a fresh table is the same; claims work at once', async () => {
    await pool.query(version1('postgres', 'v1_keys'));
    const v1Columns = (await describeTable('v1_keys')).map((column) => `"${(column as { column_name: string }).column_name}"`);
    expect(v1Columns).not.toContain('"max_concurrent"');
    expect(v1Columns).not.toContain('"concurrency_leases"');
    const key = record(USED);
    const scratch = new SqlStore({ dialect: 'postgres', client: pool, table: 'scratch_keys' });
    await scratch.migrate();
    await scratch.insert(key);
    await pool.query(`INSERT INTO "v1_keys" (${v1Columns.join(', ')}) SELECT ${v1Columns.join(', ')} FROM "scratch_keys"`);

    const store = new SqlStore({ dialect: 'postgres', client: pool, table: 'v1_keys' });
    await Promise.all([store.migrate(), store.migrate()]);
    await new SqlStore({ dialect: 'postgres', client: pool, table: 'fresh_keys' }).migrate();
    expect(await describeTable('v1_keys')).toEqual(await describeTable('fresh_keys'));
    const { rows } = await pool.query('SELECT "max_concurrent", "concurrency_leases" FROM "v1_keys"');
    expect(rows).toEqual([{ max_concurrent: null, concurrency_leases: {} }]);
    expect(await store.findById(key.id)).toStrictEqual(key);
    expect((await store.findById(key.id))?.maxConcurrent).toBeNull();

    expect(await store.consume(key.id, { now: CREATED, maxUses: 5, rateLimit: null, concurrency: CLAIM })).toEqual({ admitted: true, useCount: 4, inFlight: 1 });
    expect((await pool.query('SELECT "concurrency_leases" FROM "v1_keys"')).rows).toEqual([{ concurrency_leases: { first: CREATED + 30_000 } }]);
    await store.release(key.id, 'first');
    expect((await pool.query('SELECT "concurrency_leases" FROM "v1_keys"')).rows).toEqual([{ concurrency_leases: {} }]);
  });
});
