/**
 * One SqlStore per dialect for a describe block: a SQLite file in a temporary directory, and a
 * private PostgreSQL server (skipped loudly, or failed under CI=true, when its binaries are
 * missing), migrated, and removed afterwards.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Pool } from 'pg';
import { SqlStore } from 'keygate/sql';
import { type PostgresServer, describePostgres, startPostgres } from './postgres-server';

/** What a dialect's block hands its tests: the store, and for PostgreSQL the pool under it. */
export interface DialectFixture {
  store(): SqlStore;
  /** The pg Pool (PostgreSQL only). */
  pool(): Pool;
}

/**
 * Declares `describe(\`${name} (sqlite)\`)` and `describe(\`${name} (postgres)\`)`, each running
 * `body` with a migrated store of its dialect.
 */
export function describeEachDialect(name: string, body: (fixture: DialectFixture, dialect: 'sqlite' | 'postgres') => void, options: { poolMax?: number } = {}): void {
  describe(`${name} (sqlite)`, () => {
    let dir: string;
    let db: Database.Database;
    let store: SqlStore;
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'keygate-sqlite-'));
      db = new Database(join(dir, 'keys.db'));
      store = new SqlStore({ dialect: 'sqlite', client: db });
      await store.migrate();
    });
    afterAll(() => {
      db?.close();
      rmSync(dir, { recursive: true, force: true });
    });
    body({ store: () => store, pool: () => { throw new Error('a SQLite block has no pg Pool'); } }, 'sqlite');
  });

  describePostgres(`${name} (postgres)`, () => {
    let server: PostgresServer;
    let pool: Pool;
    let store: SqlStore;
    beforeAll(async () => {
      server = await startPostgres();
      pool = new Pool({ connectionString: server.connectionString, max: options.poolMax ?? 4 });
      pool.on('error', () => undefined); // idle connections cut when the server stops
      store = new SqlStore({ dialect: 'postgres', client: pool });
      await store.migrate();
    });
    afterAll(async () => {
      await pool?.end();
      await server?.destroy();
    });
    body({ store: () => store, pool: () => pool }, 'postgres');
  });
}

/** A PostgreSQL table's columns (name, type, nullability, default) in table order: to compare an upgraded table with a fresh one. */
export async function postgresColumns(pool: Pool, table: string): Promise<unknown[]> {
  const { rows } = await pool.query(
    `SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns
     WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position`,
    [table],
  );
  return rows;
}
