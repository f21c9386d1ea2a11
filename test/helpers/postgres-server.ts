/**
 * A real, throw-away PostgreSQL server for the SQL store tests: `initdb` into a temporary
 * directory, trust authentication on 127.0.0.1, a free port, fsync off. The server binaries refuse
 * to run as root, so when the tests run as root every server process runs as the `postgres` OS
 * user (the owner of the data directory); as any other user they simply run as that user.
 *
 * When no PostgreSQL binaries are found the suites that need them are skipped with a loud
 * message, except under `CI=true`, where a missing server fails the run instead of hiding tests.
 * Set `KEYGATE_PG_BIN` to the folder holding `initdb` and `postgres` to pick a particular build.
 */
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { HOST, findPostgresBinaries, freePort, initPostgres, spawnPostgres, stopProcess } from './servers.cjs';
import { Pool } from 'pg';

/** The folder holding `initdb` and `postgres`, or `null` when none is installed. */
export { findPostgresBinaries };

/** A running (or stopped, for fault tests) PostgreSQL server owned by one test file. */
export interface PostgresServer {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly database: string;
  /** `postgres://postgres@127.0.0.1:<port>/postgres` */
  readonly connectionString: string;
  /** Stops the server (fast shutdown: open connections are cut), keeping its data. */
  stop(): Promise<void>;
  /** Starts a stopped server again, on the same port with the same data. */
  start(): Promise<void>;
  /** `stop()` then `start()`: every open connection is cut, the data stays. */
  restart(): Promise<void>;
  /** Stops and removes the server and its data directory. Safe to call twice. */
  destroy(): Promise<void>;
}

let announced = false;

/**
 * True when a server can be started. Without binaries: throws under `CI=true`, otherwise prints a
 * loud warning (once per test file) and returns false so the caller skips its suites.
 */
export function postgresAvailable(): boolean {
  if (findPostgresBinaries()) return true;
  const message =
    'PostgreSQL server binaries (initdb, postgres) were not found: install postgresql-15 ' +
    '(apt-get install postgresql-15) or set KEYGATE_PG_BIN to their folder.';
  if (process.env.CI === 'true') throw new Error(`${message} CI=true, so the PostgreSQL suites fail instead of being skipped.`);
  if (!announced) {
    announced = true;
    console.warn(`\n${'!'.repeat(100)}\n!! SKIPPING the PostgreSQL suites. ${message}\n${'!'.repeat(100)}\n`);
  }
  return false;
}

/** `describe` when PostgreSQL is available, `describe.skip` (with a loud warning) when it is not. */
export function describePostgres(name: string, body: () => void): void {
  (postgresAvailable() ? describe : describe.skip)(name, body);
}

/**
 * Initialises and starts a fresh server. Call it in `beforeAll` and `destroy()` it in `afterAll`.
 *
 * @example
 * ```ts
 * let server: PostgresServer;
 * beforeAll(async () => { server = await startPostgres(); });
 * afterAll(() => server.destroy());
 * ```
 */
export async function startPostgres(): Promise<PostgresServer> {
  const cluster = initPostgres();
  const port = await freePort();
  let child: ChildProcess | undefined;
  let destroyed = false;

  async function start(): Promise<void> {
    if (!child) child = await spawnPostgres(cluster, { port });
  }

  async function stop(): Promise<void> {
    const current = child;
    child = undefined;
    if (current) await stopProcess(current, 'SIGINT', { fallbackSignal: 'SIGQUIT' }); // fast shutdown: roll back and cut every session
  }

  async function destroy(): Promise<void> {
    if (destroyed) return;
    destroyed = true;
    await stop();
    rmSync(cluster.dir, { recursive: true, force: true });
  }

  function ifNotDestroyed(action: () => Promise<void>): () => Promise<void> {
    return async () => {
      if (destroyed) throw new Error('this PostgreSQL server was destroyed');
      await action();
    };
  }

  await start().catch(async (error: unknown) => {
    await destroy();
    throw error;
  });
  return {
    host: HOST,
    port,
    user: 'postgres',
    database: 'postgres',
    connectionString: `postgres://postgres@${HOST}:${port}/postgres`,
    stop,
    start: ifNotDestroyed(start),
    restart: ifNotDestroyed(async () => {
      await stop();
      await start();
    }),
    destroy,
  };
}

/** A server and a `pg` Pool on it, for the tests of one `describe`. */
export interface PostgresWithPool {
  readonly server: PostgresServer;
  readonly pool: Pool;
}

/**
 * Starts a private server and a Pool of `max` connections on it before the enclosing `describe`'s
 * tests, and ends both after them. The returned object's fields are set once `beforeAll` has run.
 *
 * @example
 * ```ts
 * describePostgres('my tests', () => {
 *   const pg = postgresWithPool();
 *   it('works', async () => { await pg.pool.query('SELECT 1'); });
 * });
 * ```
 */
export function postgresWithPool(max = 4): PostgresWithPool {
  const holder = {} as { server: PostgresServer; pool: Pool };
  beforeAll(async () => {
    holder.server = await startPostgres();
    holder.pool = new Pool({ connectionString: holder.server.connectionString, max });
    // A server stopped by a test ends idle connections: that is expected, not a crash.
    holder.pool.on('error', () => undefined);
  });
  afterAll(async () => {
    await holder.pool?.end();
    await holder.server?.destroy();
  });
  return holder;
}
