/**
 * Opens the store a command works on, with the database driver the user installed (keygate
 * depends on none of them: they are loaded here, on demand), and closes every connection
 * afterwards so the process exits at once. A store that cannot be reached is reported on one
 * line (exit code 1) before any command runs.
 */
import { existsSync } from 'node:fs';
import { RedisStore } from '../stores/redis/redis-store.js';
import { SqlStore } from '../stores/sql/sql-store.js';
import type { ApiKeyStore } from '../stores/store.js';
import { failure, messageOf } from './exit.js';
import { type StoreTarget, describeTarget } from './target.js';

/** How long connecting may take before the store counts as down. */
export const CONNECT_TIMEOUT_MS = 5_000;

/** An open store, ready for a keygate instance. */
export interface OpenStore {
  /** The store, without `subscribe`: a command keeps no cache that other processes' writes could stale. */
  readonly store: ApiKeyStore;
  /** The store as messages name it (`PostgreSQL at db.internal:5432/app`), without credentials. */
  readonly label: string;
  /** The SQL store's table, or `undefined` for Redis. */
  readonly table: string | undefined;
  /** `SqlStore.migrate()`, or `undefined` for Redis (which has no schema). */
  readonly migrate: (() => Promise<void>) | undefined;
  /** Closes every connection the command opened. Never rejects. */
  close(): Promise<void>;
}

/**
 * Opens the store and checks that it answers. `createSqlite` lets a missing SQLite file be
 * created (for `create` and `migrate`); otherwise a missing file is an error, not a new database.
 */
export async function openStore(target: StoreTarget, options: { createSqlite: boolean }): Promise<OpenStore> {
  switch (target.kind) {
    case 'redis':
      return openRedis(target);
    case 'postgres':
      return openPostgres(target);
    case 'sqlite':
      return openSqlite(target, options.createSqlite);
  }
}

/** The store without `subscribe` (RedisStore would open a second connection to listen). */
function withoutSubscribe(store: ApiKeyStore): ApiKeyStore {
  const methods = ['insert', 'findById', 'findByKeyPrefix', 'update', 'rotate', 'list', 'consume', 'purge', 'release'] as const;
  const view: Record<string, unknown> = {};
  for (const method of methods) {
    const fn = store[method] as ((...args: unknown[]) => unknown) | undefined;
    if (typeof fn === 'function') view[method] = fn.bind(store);
  }
  return view as unknown as ApiKeyStore;
}

async function load<T>(importer: () => Promise<T>, driver: string, flag: string): Promise<T> {
  try {
    return await importer();
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'MODULE_NOT_FOUND' || code === 'ERR_MODULE_NOT_FOUND') {
      throw failure(`${flag} needs the ${driver} package, which keygate does not install: npm install ${driver}`);
    }
    throw failure(`could not load ${driver}: ${messageOf(error)}`);
  }
}

async function openRedis(target: Extract<StoreTarget, { kind: 'redis' }>): Promise<OpenStore> {
  const label = describeTarget(target);
  const { default: Redis } = await load(() => import('ioredis'), 'ioredis', '--redis');
  const client = new Redis(target.url, {
    lazyConnect: true,
    connectTimeout: CONNECT_TIMEOUT_MS,
    // One attempt: a command-line tool reports a store that is down instead of waiting for it.
    retryStrategy: () => null,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    connectionName: 'keygate-cli',
    // ioredis otherwise waits 2 s for a socket to close gracefully, and the process with it.
    disconnectTimeout: 100,
  });
  let lastError: unknown;
  // Without a listener ioredis prints "Unhandled error event" with a stack.
  client.on('error', (error: unknown) => {
    lastError = error;
  });
  try {
    await client.connect();
    await client.ping();
  } catch (error) {
    client.disconnect();
    throw failure(`cannot reach ${label}: ${messageOf(lastError ?? error)}`);
  }
  const store = new RedisStore({ client, ...(target.keyPrefix === undefined ? {} : { keyPrefix: target.keyPrefix }) });
  return {
    store: withoutSubscribe(store),
    label,
    table: undefined,
    migrate: undefined,
    async close() {
      try {
        await client.quit();
      } catch {
        client.disconnect();
      }
    },
  };
}

async function openPostgres(target: Extract<StoreTarget, { kind: 'postgres' }>): Promise<OpenStore> {
  const label = describeTarget(target);
  const { Pool } = await load(() => import('pg'), 'pg', '--postgres');
  const pool = new Pool({
    connectionString: target.url,
    max: 2,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    application_name: 'keygate-cli',
  });
  // An idle client that fails would otherwise be an uncaught 'error' event.
  pool.on('error', () => undefined);
  try {
    const connection = await pool.connect();
    connection.release();
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw failure(`cannot reach ${label}: ${messageOf(error)}`);
  }
  const store = new SqlStore({ dialect: 'postgres', client: pool, ...(target.table === undefined ? {} : { table: target.table }) });
  return {
    store: withoutSubscribe(store),
    label,
    table: store.table,
    migrate: () => store.migrate(),
    async close() {
      await pool.end().catch(() => undefined);
    },
  };
}

async function openSqlite(target: Extract<StoreTarget, { kind: 'sqlite' }>, create: boolean): Promise<OpenStore> {
  const label = describeTarget(target);
  const { default: Database } = await load(() => import('better-sqlite3'), 'better-sqlite3', '--sqlite');
  const existed = existsSync(target.file);
  if (!existed && !create) {
    throw failure(`${label} does not exist (keygate create or keygate migrate makes it)`);
  }
  let db: InstanceType<typeof Database>;
  try {
    db = new Database(target.file, { fileMustExist: !create, timeout: CONNECT_TIMEOUT_MS });
    // A database keygate creates gets the journal mode the README recommends for several processes.
    if (!existed) db.pragma('journal_mode = WAL');
  } catch (error) {
    throw failure(`cannot open ${label}: ${messageOf(error)}`);
  }
  const store = new SqlStore({ dialect: 'sqlite', client: db, ...(target.table === undefined ? {} : { table: target.table }) });
  return {
    store: withoutSubscribe(store),
    label,
    table: store.table,
    migrate: () => store.migrate(),
    async close() {
      try {
        db.close();
      } catch {
        // already closed
      }
    },
  };
}
