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
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chownSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Client } from 'pg';

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

const PREFERRED_MAJOR = '15';
const READY_TIMEOUT_MS = 30_000;

/** The folder holding `initdb` and `postgres`, or `null` when none is installed. */
export function findPostgresBinaries(): string | null {
  const candidates: string[] = [];
  if (process.env.KEYGATE_PG_BIN) candidates.push(process.env.KEYGATE_PG_BIN);
  candidates.push(`/usr/lib/postgresql/${PREFERRED_MAJOR}/bin`);
  try {
    const majors = readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a));
    for (const major of majors) candidates.push(`/usr/lib/postgresql/${major}/bin`);
  } catch {
    // not a Debian-style layout
  }
  candidates.push('/usr/local/pgsql/bin', ...(process.env.PATH ?? '').split(delimiter).filter(Boolean));
  return candidates.find((dir) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres'))) ?? null;
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

/** Runs the server processes as `postgres` when we are root (PostgreSQL refuses to run as root). */
function serverIdentity(): { uid: number; gid: number } | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    throw new Error('running as root, but there is no `postgres` OS user to run the PostgreSQL server as');
  }
}

/** A port nobody listens on right now, found by binding port 0. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Servers still running, killed if the test process exits without destroying them. */
const running = new Set<{ child: ChildProcess; dir: string }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const { child, dir } of running) {
      try {
        child.kill('SIGQUIT');
      } catch {
        // already gone
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });
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
  const bin = findPostgresBinaries();
  if (!bin) throw new Error('PostgreSQL binaries not found (see postgresAvailable())');
  const identity = serverIdentity();
  const dir = mkdtempSync(join(tmpdir(), 'keygate-pg-'));
  if (identity) chownSync(dir, identity.uid, identity.gid);
  const data = join(dir, 'data');
  const log = join(dir, 'server.log');
  installExitHook();

  execFileSync(
    join(bin, 'initdb'),
    ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync'],
    { ...identity, cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, LC_ALL: 'C.UTF-8' } },
  );

  const port = await freePort();
  const host = '127.0.0.1';
  let entry: { child: ChildProcess; dir: string } | undefined;
  let destroyed = false;

  async function start(): Promise<void> {
    if (entry) return;
    const out = openSync(log, 'a');
    const child = spawn(
      join(bin as string, 'postgres'),
      [
        '-D', data,
        '-p', String(port),
        '-k', dir,
        '-c', `listen_addresses=${host}`,
        '-c', 'fsync=off',
        '-c', 'synchronous_commit=off',
        '-c', 'full_page_writes=off',
        '-c', 'max_connections=200',
      ],
      { ...identity, cwd: dir, stdio: ['ignore', out, out] },
    );
    closeSync(out);
    entry = { child, dir };
    running.add(entry);
    let exited = false;
    child.once('exit', () => {
      exited = true;
    });
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      const client = new Client({ host, port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 1_000 });
      client.on('error', () => undefined);
      try {
        await client.connect();
        await client.query('SELECT 1');
        await client.end();
        return;
      } catch {
        await client.end().catch(() => undefined);
      }
      if (exited || Date.now() > deadline) {
        running.delete(entry);
        entry = undefined;
        const tail = existsSync(log) ? readFileSync(log, 'utf8').slice(-2_000) : '(no log)';
        throw new Error(`PostgreSQL did not become ready on port ${port}:\n${tail}`);
      }
      await delay(50);
    }
  }

  async function stop(): Promise<void> {
    const current = entry;
    if (!current) return;
    entry = undefined;
    running.delete(current);
    const { child } = current;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGINT'); // fast shutdown: roll back and cut every session
    const timer = setTimeout(() => child.kill('SIGQUIT'), 10_000);
    await exited;
    clearTimeout(timer);
  }

  await start();
  return {
    host,
    port,
    user: 'postgres',
    database: 'postgres',
    connectionString: `postgres://postgres@${host}:${port}/postgres`,
    stop,
    start: async () => {
      if (destroyed) throw new Error('this PostgreSQL server was destroyed');
      await start();
    },
    restart: async () => {
      if (destroyed) throw new Error('this PostgreSQL server was destroyed');
      await stop();
      await start();
    },
    destroy: async () => {
      if (destroyed) return;
      destroyed = true;
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
