/**
 * The `keygate` command as a user runs it: the built bin (`node dist/cjs/cli/bin.js`, so
 * `npm run build` first, as `npm test` does) spawned against a real Redis, a real PostgreSQL and a
 * SQLite file. The keys it prints are checked with the library against the same store.
 *
 * Each store gets the same suite: `create` prints the key alone on stdout and it verifies; the
 * `--json` shapes; list / get / update / revoke / rotate / delete / purge round trips; wrong input
 * exits 2 with one line on stderr and leaves the store as it was; the pepper comes only from
 * `--pepper-env`. Then what is particular to each: `migrate`, a store that is down.
 */
import { type ChildProcess, execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { Pool } from 'pg';
import { type ApiKey, type ApiKeyStore, keygate } from 'keygate';
import { RedisStore } from 'keygate/redis';
import { SqlStore } from 'keygate/sql';
import { RedisServer, describeWithRedis, freePort } from '../helpers/redis-server';
import { type PostgresServer, describePostgres, startPostgres } from '../helpers/postgres-server';

jest.setTimeout(30_000);

const ROOT = resolve(__dirname, '../..');
const BIN = join(ROOT, 'dist/cjs/cli/bin.js');
const PEPPER_VARIABLE = 'KG_TEST_PEPPER';
const PEPPER = 'pepper-from-the-environment-3f9a';
/** A key as keygate mints it: prefix, lookupId, secret and check. */
const KEY_LINE = /^(kg|[a-z][a-z0-9]*(?:_[a-z0-9]+)*)_[0-9A-Za-z]{16}_[0-9A-Za-z]+\n$/;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

let work: string;

beforeAll(() => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`npm run build\` before these tests (npm test does).`);
  const built = statSync(BIN).mtimeMs;
  const stale = readdirSync(join(ROOT, 'src/cli')).filter((file) => statSync(join(ROOT, 'src/cli', file)).mtimeMs > built);
  if (stale.length > 0) throw new Error(`dist/ is older than src/cli/${stale[0]}: run \`npm run build\` first.`);
  work = mkdtempSync(join(tmpdir(), 'keygate-cli-'));
});

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

/** Runs the bin with `args`, in a clean environment (no KEYGATE_STORE_URL from outside) plus `env`. */
function cli(args: readonly string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((done) => {
    const child: ChildProcess = execFile(
      process.execPath,
      [BIN, ...args],
      { cwd: work, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 20_000 },
      (_error, stdout, stderr) => done({ code: child.exitCode, stdout, stderr }),
    );
  });
}

function parse<T>(result: Result): T {
  expect(result).toMatchObject({ code: 0 });
  return JSON.parse(result.stdout) as T;
}

/** One line on stderr, no stack trace, nothing on stdout. */
function expectOneLineError(result: Result, code: number, pattern: RegExp): void {
  expect({ code: result.code, stdout: result.stdout }).toEqual({ code, stdout: '' });
  expect(result.stderr).toMatch(/^keygate[^\n]*\n$/);
  expect(result.stderr).toMatch(pattern);
  expect(result.stderr).not.toMatch(/\n\s+at /);
}

/** A store the tests can reach with flags, and with the library. */
interface Backend {
  /** The store options of the command line. */
  flags: () => string[];
  /** The same store through the library, for checking what the command did. */
  store: () => ApiKeyStore;
}

/** Every key in the store, deleted ones included, by the library. */
async function snapshot(store: ApiKeyStore): Promise<ApiKey[]> {
  const keys = keygate({ store, hashThreads: 0, cache: false });
  const page = await keys.list({ includeDeleted: true, limit: 1000 });
  await keys.close();
  return page.items;
}

/** Whether `key` verifies against the store, with the pepper given (or none). */
async function verifies(store: ApiKeyStore, key: string, pepper?: string): Promise<string> {
  const keyPrefix = key.slice(0, key.lastIndexOf('_'));
  const prefix = keyPrefix.slice(0, keyPrefix.lastIndexOf('_'));
  const keys = keygate({ store, prefix, hashing: 'sha256', ...(pepper ? { pepper } : {}), hashThreads: 0, cache: false, failedAttemptLimit: false });
  const result = await keys.verify(key, { consume: false });
  await keys.close();
  return result.ok ? 'ok' : result.error.code;
}

/** The suite every store passes. */
function commonSuite(backend: Backend): void {
  const sha = (): string[] => [...backend.flags(), '--hashing', 'sha256', '--pepper-env', PEPPER_VARIABLE];
  const pepperEnv = { [PEPPER_VARIABLE]: PEPPER };

  it('create prints only the key on stdout, details on stderr, and the key verifies', async () => {
    const result = await cli(
      ['create', '--name', 'ci', '--owner-id', 'user_42', '--scopes', 'leads:read,reports:*', '--scopes', 'x:y', '--per-second', '5', '--per-day', '100', '--metadata', '{"plan":"pro"}', '--tags', 'ci', '--expires-at', '2099-01-01T00:00:00Z', ...sha()],
      pepperEnv,
    );
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(KEY_LINE);
    const key = result.stdout.trim();
    const keyPrefix = key.slice(0, key.lastIndexOf('_'));
    expect(result.stderr).toContain(keyPrefix);
    expect(result.stderr).not.toContain(key);
    expect(result.stderr).not.toContain(PEPPER);
    expect(await verifies(backend.store(), key, PEPPER)).toBe('ok');

    const stored = (await snapshot(backend.store())).find((apiKey) => key.startsWith(`${apiKey.keyPrefix}_`));
    expect(stored).toMatchObject({
      name: 'ci',
      ownerId: 'user_42',
      scopes: ['leads:read', 'reports:*', 'x:y'],
      rateLimit: { perSecond: 5, perDay: 100 },
      metadata: { plan: 'pro' },
      tags: ['ci'],
      expiresAt: new Date('2099-01-01T00:00:00Z'),
    });

    // The default hashing is bcrypt, as keygate()'s; --quiet leaves stderr empty.
    const bcrypt = await cli(['create', '--name', 'default hashing', '--quiet', ...backend.flags()]);
    expect(bcrypt).toMatchObject({ code: 0, stderr: '' });
    expect(bcrypt.stdout).toMatch(KEY_LINE);
    const bcryptKeys = keygate({ store: backend.store(), hashThreads: 0, cache: false });
    expect(await bcryptKeys.verify(bcrypt.stdout.trim(), { consume: false })).toMatchObject({ ok: true, apiKey: { name: 'default hashing' } });
    await bcryptKeys.close();
  });

  it('takes the pepper only from the variable --pepper-env names', async () => {
    const before = await snapshot(backend.store());
    const [onArgv, unset] = await Promise.all([
      cli(['create', '--name', 'p', '--pepper', PEPPER, ...backend.flags()]),
      cli(['create', '--name', 'p', ...sha()]),
    ]);
    expectOneLineError(onArgv, 2, /unknown option '--pepper'/);
    expectOneLineError(unset, 2, /--pepper-env is not set/);
    expect(await snapshot(backend.store())).toEqual(before);

    // No --pepper-env: no pepper, even with the variable set; the key verifies without one.
    const withoutFlag = await cli(['create', '--name', 'p', '--hashing', 'sha256', ...backend.flags()], pepperEnv);
    expect(withoutFlag.code).toBe(0);
    expect(withoutFlag.stderr).toMatch(/without --pepper-env/);
    // --quiet silences commentary, not this warning: KEY=$(keygate create … --quiet) would otherwise
    // mint, unwarned, a key the app (which has a pepper) refuses.
    const quiet = await cli(['create', '--name', 'p', '--hashing', 'sha256', '--quiet', ...backend.flags()], pepperEnv);
    expect(quiet.code).toBe(0);
    expect(quiet.stderr).toMatch(/^keygate: warning: --hashing sha256 without --pepper-env/);
    const withFlag = await cli(['create', '--name', 'p', ...sha()], pepperEnv);
    const [plain, peppered] = [withoutFlag.stdout.trim(), withFlag.stdout.trim()];
    expect(await verifies(backend.store(), plain)).toBe('ok');
    expect(await verifies(backend.store(), peppered, PEPPER)).toBe('ok');
    expect(await verifies(backend.store(), peppered)).toBe('invalid_api_key');
  });

  it('--json prints { key, apiKey } for create and rotate, the ApiKey for get, update, revoke, delete, { items, nextCursor } for list', async () => {
    const created = parse<{ key: string; apiKey: ApiKey & { keyHash?: unknown } }>(await cli(['create', '--name', 'json', '--tenant-id', 'acme-json', '--json', ...sha()], pepperEnv));
    expect(Object.keys(created).sort()).toEqual(['apiKey', 'key']);
    expect(`${created.key}\n`).toMatch(KEY_LINE);
    expect(created.apiKey).toMatchObject({ name: 'json', tenantId: 'acme-json', status: 'active', isActive: true, keyPrefix: created.key.slice(0, created.key.lastIndexOf('_')) });
    expect(created.apiKey).not.toHaveProperty('keyHash');
    expect(JSON.stringify(created.apiKey)).not.toContain(created.key);
    const id = created.apiKey.id;

    const got = parse<ApiKey>(await cli(['get', id, '--json', ...backend.flags()]));
    expect(got).toEqual(created.apiKey);

    await cli(['create', '--name', 'json 2', '--tenant-id', 'acme-json', '--quiet', ...sha()], pepperEnv);
    const first = parse<{ items: ApiKey[]; nextCursor?: string }>(await cli(['list', '--tenant-id', 'acme-json', '--limit', '1', '--json', ...backend.flags()]));
    expect(first.items.map((item) => item.name)).toEqual(['json']);
    expect(typeof first.nextCursor).toBe('string');
    const second = parse<{ items: ApiKey[]; nextCursor?: string }>(
      await cli(['list', '--tenant-id', 'acme-json', '--limit', '1', '--cursor', first.nextCursor as string, '--json', ...backend.flags()]),
    );
    expect(second.items.map((item) => item.name)).toEqual(['json 2']);
    expect(second).not.toHaveProperty('nextCursor');

    const rotated = parse<{ key: string; apiKey: ApiKey }>(await cli(['rotate', id, '--json', ...sha()], pepperEnv));
    expect(Object.keys(rotated).sort()).toEqual(['apiKey', 'key']);
    expect(rotated.apiKey).toMatchObject({ rotatedFromId: id, name: 'json', tenantId: 'acme-json' });
    expect(await verifies(backend.store(), rotated.key, PEPPER)).toBe('ok');
  });

  it('round trip: list, get, update, revoke, rotate, delete, purge', async () => {
    const create = await cli(['create', '--name', 'trip', '--owner-id', 'owner-trip', '--prefix', 'pk_test', '--per-second', '10', '--expires-at', String(Date.now() + 86_400_000), ...sha()], pepperEnv);
    const key = create.stdout.trim();
    expect(key).toMatch(/^pk_test_/);
    const id = (await snapshot(backend.store())).find((apiKey) => key.startsWith(`${apiKey.keyPrefix}_`))?.id as string;

    // list (a table for people) and get (one field a line)
    const [table, shown] = await Promise.all([cli(['list', '--owner-id', 'owner-trip', ...backend.flags()]), cli(['get', id, ...backend.flags()])]);
    expect(table.code).toBe(0);
    expect(table.stdout.split('\n')[0]).toMatch(/^ID\s+KEY PREFIX\s+NAME\s+STATUS/);
    expect(table.stdout).toContain(id);
    expect(shown.stdout).toMatch(new RegExp(`^id\\s+${id}$`, 'm'));
    expect(shown.stdout).toMatch(/^name\s+trip$/m);

    // update: limits merge into the key's own; --no-… clears; --json is the ApiKey
    const updated = parse<ApiKey>(await cli(['update', id, '--per-day', '500', '--burst', '20', '--no-expires-at', '--scopes', 'a:b', '--status', 'suspended', '--json', ...backend.flags()]));
    expect(updated).toMatchObject({ rateLimit: { perSecond: 10, burst: 20, perDay: 500 }, expiresAt: null, scopes: ['a:b'], status: 'suspended' });
    const replaced = parse<ApiKey>(await cli(['update', id, '--no-rate-limit', '--per-hour', '7', '--status', 'active', '--json', ...backend.flags()]));
    expect(replaced).toMatchObject({ rateLimit: { perHour: 7 }, status: 'active' });
    expect(await verifies(backend.store(), key, PEPPER)).toBe('ok');

    // rotate keeps the key's own prefix without --prefix; the old key works through its grace period
    const rotated = await cli(['rotate', id, '--grace-period-ms', '600000', ...sha()], pepperEnv);
    expect(rotated.code).toBe(0);
    expect(rotated.stdout).toMatch(KEY_LINE);
    const newKey = rotated.stdout.trim();
    expect(newKey).toMatch(/^pk_test_/);
    expect(rotated.stderr).not.toContain(newKey);
    expect(await verifies(backend.store(), newKey, PEPPER)).toBe('ok');
    expect(await verifies(backend.store(), key, PEPPER)).toBe('ok');
    expectOneLineError(await cli(['rotate', id, ...sha()], pepperEnv), 2, /already rotated/);
    const newId = (await snapshot(backend.store())).find((apiKey) => newKey.startsWith(`${apiKey.keyPrefix}_`))?.id as string;

    // revoke: at once
    const revoked = await cli(['revoke', id, '--json', ...backend.flags()]);
    expect(parse<ApiKey>(revoked)).toMatchObject({ id, status: 'revoked', isActive: false });
    expect(await verifies(backend.store(), key, PEPPER)).toBe('api_key_revoked');

    // delete: revoked and out of list, unless --include-deleted; get still shows it
    const deleted = parse<ApiKey>(await cli(['delete', newId, '--json', ...backend.flags()]));
    expect(deleted).toMatchObject({ id: newId, status: 'revoked' });
    expect(deleted.deletedAt).not.toBeNull();
    const [listed, listedAll] = await Promise.all([
      cli(['list', '--owner-id', 'owner-trip', '--json', ...backend.flags()]),
      cli(['list', '--owner-id', 'owner-trip', '--include-deleted', '--json', ...backend.flags()]),
    ]);
    expect(parse<{ items: ApiKey[] }>(listed).items.map((item) => item.id)).toEqual([id]);
    expect(parse<{ items: ApiKey[] }>(listedAll).items.map((item) => item.id)).toEqual([id, newId]);

    // purge: only what was deleted before the instant
    const none = parse<{ purged: number }>(await cli(['purge', '--deleted-before', '2000-01-01T00:00:00Z', '--json', ...backend.flags()]));
    expect(none).toEqual({ purged: 0 });
    const purge = await cli(['purge', '--deleted-before', String(Date.now() + 60_000), ...backend.flags()]);
    expect(purge.code).toBe(0);
    expect(purge.stdout).toMatch(/^Purged \d+ keys? deleted before /);
    expectOneLineError(await cli(['get', newId, ...backend.flags()]), 3, /no API key with id/);
    expect(parse<ApiKey>(await cli(['get', id, '--json', ...backend.flags()])).id).toBe(id);

    // unknown ids: exit 3
    const unknown = '00000000-0000-4000-8000-000000000000';
    const missing = await Promise.all(['get', 'revoke', 'delete', 'rotate'].map((command) => cli([command, unknown, ...backend.flags()])));
    for (const result of missing) expectOneLineError(result, 3, /no API key with id 00000000-/);
    expectOneLineError(await cli(['update', unknown, '--name', 'x', ...backend.flags()]), 3, /no API key with id/);
  });

  it('wrong input exits 2 with one line on stderr and writes nothing', async () => {
    const existing = (await snapshot(backend.store()))[0] as ApiKey;
    const before = await snapshot(backend.store());
    const cases: [string[], RegExp][] = [
      [['create'], /required option '--name/],
      [['create', '--name', 'x', '--max-uses', '-1'], /--max-uses: must be a non-negative integer/],
      [['create', '--name', 'x', '--scopes', 'leads:read,lead*'], /--scopes \(entry 2\)/],
      [['create', '--name', 'x', '--per-second', '0'], /--per-second: must be a positive integer/],
      [['create', '--name', 'x', '--burst', '5'], /--burst: needs --per-second/],
      [['create', '--name', 'x', '--metadata', '{not json'], /--metadata/],
      [['create', '--name', 'x', '--expires-at', '2020-01-01T00:00:00Z'], /--expires-at: must be in the future/],
      [['create', '--name', 'x', '--expires-at', 'tomorrow'], /--expires-at: must be an ISO 8601/],
      [['create', '--name', 'x', '--allowed-ips', '10.0.0.0/99'], /--allowed-ips \(entry 1\)/],
      [['create', '--name', 'x', '--max-concurrent', '0'], /--max-concurrent/],
      [['create', '--name', 'x', '--status', 'bogus'], /--status: must be one of/],
      [['create', '--name', 'x', '--prefix', 'Not-A-Prefix'], /--prefix must match/],
      [['create', '--name', 'x', '--hashing', 'md5'], /argument 'md5' is invalid/],
      [['create', '--name', 'x', '--nmae', 'y'], /unknown option '--nmae'/],
      [['create', '--name', 'x', '--redis', 'redis://127.0.0.1:1', '--sqlite', 'other.db'], /cannot be used with/],
      [['update', existing.id], /nothing to change/],
      [['update', existing.id, '--max-uses', 'lots'], /--max-uses: must be a non-negative integer/],
      [['update', existing.id, '--status', 'active', '--tags', 'a,,b'], /--tags \(entry 2\)/],
      [['list', '--status', 'bogus'], /--status: must be one of/],
      [['list', '--limit', '5000'], /--limit: must be at most 1000/],
      [['list', '--cursor', 'not-a-cursor'], /--cursor: is not a cursor/],
      [['rotate', existing.id, '--grace-period-ms', '-5'], /--grace-period-ms/],
      [['purge'], /required option '--deleted-before/],
      [['purge', '--deleted-before', 'last week'], /--deleted-before: must be an ISO 8601/],
      [['get'], /missing required argument 'id'/],
      [['frobnicate'], /unknown command 'frobnicate'/],
    ];
    const results = await Promise.all(cases.map(([args]) => cli([...args, ...backend.flags()])));
    results.forEach((result, index) => {
      const [args, pattern] = cases[index] as [string[], RegExp];
      try {
        expectOneLineError(result, 2, pattern);
      } catch (error) {
        throw new Error(`keygate ${args.join(' ')}: ${(error as Error).message}\nstderr: ${result.stderr}`, { cause: error });
      }
    });
    expect(await snapshot(backend.store())).toEqual(before);
  });
}

describe('keygate CLI on SQLite', () => {
  let file: string;
  let db: Database.Database;
  const backend: Backend = { flags: () => ['--sqlite', file], store: () => new SqlStore({ dialect: 'sqlite', client: db }) };

  beforeAll(async () => {
    file = join(work, 'keys.db');
    // The first create makes the file and its table: the one-liner of the README.
    const first = await cli(['create', '--name', 'first', '--sqlite', file]);
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(KEY_LINE);
    db = new Database(file);
  });
  afterAll(() => db?.close());

  commonSuite(backend);

  it('reads the store from KEYGATE_STORE_URL: sqlite:<file>, or a plain path', async () => {
    const [url, path] = await Promise.all([
      cli(['list', '--json'], { KEYGATE_STORE_URL: `sqlite:${file}` }),
      cli(['list', '--json'], { KEYGATE_STORE_URL: file }),
    ]);
    expect(parse<{ items: ApiKey[] }>(url).items.length).toBeGreaterThan(0);
    expect(parse<{ items: ApiKey[] }>(path)).toEqual(parse<{ items: ApiKey[] }>(url));
    expectOneLineError(await cli(['list']), 2, /no store: pass --redis <url>, --postgres <url> or --sqlite <file>, or set KEYGATE_STORE_URL/);
    expectOneLineError(await cli(['list'], { KEYGATE_STORE_URL: 'mysql://db/keys' }), 2, /unsupported scheme "mysql:"/);
  });

  it('never creates a file for wrong input, nor for a command other than create and migrate', async () => {
    const fresh = join(work, 'fresh.db');
    const [bad, list] = await Promise.all([cli(['create', '--name', 'x', '--max-uses', 'x', '--sqlite', fresh]), cli(['list', '--sqlite', fresh])]);
    expectOneLineError(bad, 2, /--max-uses/);
    expectOneLineError(list, 1, /SQLite database .*fresh\.db does not exist/);
    expect(existsSync(fresh)).toBe(false);
  });

  it('migrate creates or upgrades the table, idempotently, in a new file or an existing one', async () => {
    const other = join(work, 'migrated.db');
    expect(parse<unknown>(await cli(['migrate', '--sqlite', other, '--table', 'my_keys', '--json']))).toEqual({ migrated: true, store: 'sqlite', table: 'my_keys' });
    const again = await cli(['migrate', '--sqlite', other, '--table', 'my_keys']);
    expect(again).toMatchObject({ code: 0, stdout: expect.stringMatching(/table my_keys of SQLite database .* is up to date/) as unknown });
    // A table that does not exist: the store's failure, with the way out.
    expectOneLineError(await cli(['list', '--sqlite', other]), 1, /no such table: keygate_api_keys; run `keygate migrate` first/);
    expect(parse<{ items: unknown[] }>(await cli(['list', '--sqlite', other, '--table', 'my_keys', '--json'])).items).toEqual([]);
  });
});

describeWithRedis('keygate CLI on Redis', () => {
  let server: RedisServer;
  const clients: { quit(): Promise<unknown> }[] = [];
  let store: ApiKeyStore;
  const backend: Backend = { flags: () => ['--redis', server.url], store: () => store };

  beforeAll(async () => {
    server = await RedisServer.start();
    const client = server.client();
    clients.push(client);
    store = new RedisStore({ client });
  });
  afterAll(async () => {
    await Promise.all(clients.map((client) => client.quit()));
    await server?.stop();
  });

  commonSuite(backend);

  it('reads a redis:// KEYGATE_STORE_URL, and keeps its namespace with --redis-key-prefix', async () => {
    const created = await cli(['create', '--name', 'namespaced', '--redis-key-prefix', 'other:', '--hashing', 'sha256'], { KEYGATE_STORE_URL: server.url });
    expect(created.code).toBe(0);
    const client = server.client();
    clients.push(client);
    const other = new RedisStore({ client, keyPrefix: 'other:' });
    expect((await snapshot(other)).map((apiKey) => apiKey.name)).toEqual(['namespaced']);
    expect(await verifies(other, created.stdout.trim())).toBe('ok');
    expect((await snapshot(store)).map((apiKey) => apiKey.name)).not.toContain('namespaced');
  });

  it('migrate is refused: Redis has no schema', async () => {
    expectOneLineError(await cli(['migrate', '--redis', server.url]), 2, /migrate is for SQL stores/);
  });

  it('a Redis that is down: exit 1, one line naming it, no password, no stack trace, promptly', async () => {
    const port = await freePort();
    const started = Date.now();
    const result = await cli(['list', '--redis', `redis://:hunter2@127.0.0.1:${port}`]);
    expectOneLineError(result, 1, new RegExp(`cannot reach Redis at 127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
    expect(result.stderr).not.toContain('hunter2');
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});

describePostgres('keygate CLI on PostgreSQL', () => {
  let server: PostgresServer;
  let pool: Pool;
  let store: ApiKeyStore;
  const TABLE = 'cli_keys';
  const backend: Backend = { flags: () => ['--postgres', server.connectionString, '--table', TABLE], store: () => store };

  beforeAll(async () => {
    server = await startPostgres();
    pool = new Pool({ connectionString: server.connectionString, max: 2 });
    store = new SqlStore({ dialect: 'postgres', client: pool, table: TABLE });
    // Before migrate: the table is missing, and the message says what to do.
    const early = await cli(['list', ...backend.flags()]);
    expectOneLineError(early, 1, /relation "cli_keys" does not exist; run `keygate migrate` first/);
    const migrated = await cli(['migrate', '--json', ...backend.flags()]);
    expect(parse<unknown>(migrated)).toEqual({ migrated: true, store: 'postgres', table: TABLE });
  }, 60_000);
  afterAll(async () => {
    await pool?.end();
    await server?.destroy();
  });

  commonSuite(backend);

  it('migrate again is a no-op; a postgresql:// KEYGATE_STORE_URL works', async () => {
    const url = server.connectionString.replace(/^postgres:/, 'postgresql:');
    const again = await cli(['migrate', '--table', TABLE], { KEYGATE_STORE_URL: url });
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/table cli_keys of PostgreSQL at 127\.0\.0\.1:\d+\/postgres is up to date/);
    expect(parse<{ items: unknown[] }>(await cli(['list', '--table', TABLE, '--json'], { KEYGATE_STORE_URL: url })).items.length).toBeGreaterThan(0);
  });

  it('a PostgreSQL that is down: exit 1, one line naming it, no password, no stack trace', async () => {
    const port = await freePort();
    const result = await cli(['create', '--name', 'x', '--postgres', `postgres://postgres:hunter2@127.0.0.1:${port}/postgres`]);
    expectOneLineError(result, 1, new RegExp(`cannot reach PostgreSQL at 127\\.0\\.0\\.1:${port}/postgres: .*ECONNREFUSED`));
    expect(result.stderr).not.toContain('hunter2');
  });
});
