/**
 * `maxConcurrent` across real processes sharing one Redis or one PostgreSQL: three Express
 * servers (test/fixtures/concurrency-worker.cjs, on the built package) with slow handlers never run
 * more than `maxConcurrent` requests of a key at once between them, and the slots of a process
 * killed mid-request come back when their lease lapses — not before, and not never.
 */
import { existsSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { Pool } from 'pg';
import { type ApiKeyStore, keygate } from 'keygate';
import { RedisStore } from 'keygate/redis';
import { SqlStore } from 'keygate/sql';
import { type PostgresServer, postgresAvailable, startPostgres } from '../helpers/postgres-server';
import { RedisServer, redisServerBinary } from '../helpers/redis-server';
import { Worker } from '../helpers/workers';

jest.setTimeout(60_000);

const LEASE_MS = 2_000;
const TABLE = 'concurrency_keys';

interface Backend {
  /** What the workers are told about the store. */
  workerConfig: Record<string, unknown>;
  /** A store for the test's own manager. */
  store: ApiKeyStore;
  close: () => Promise<void>;
}

/** Redis standalone and PostgreSQL; each is skipped loudly (or fails under CI=true) when its server is missing. */
const BACKENDS: ReadonlyArray<[string, () => boolean, () => Promise<Backend>]> = [
  [
    'RedisStore',
    () => {
      if (redisServerBinary()) return true;
      if (process.env.CI === 'true') throw new Error('redis-server not found: CI=true, so this suite fails instead of being skipped');
      console.warn('\n*** SKIPPED: redis-server not found: the cross-process concurrency tests on Redis cannot run.\n');
      return false;
    },
    async () => {
      const server = await RedisServer.start();
      const client = server.client();
      return {
        workerConfig: { backend: 'redis', port: server.port },
        store: new RedisStore({ client }),
        close: async () => {
          await client.quit();
          await server.stop();
        },
      };
    },
  ],
  [
    'SqlStore on PostgreSQL',
    postgresAvailable,
    async () => {
      const server: PostgresServer = await startPostgres();
      const pool = new Pool({ connectionString: server.connectionString, max: 4 });
      // The store's LISTEN connection may still be closing when the server stops after the tests.
      pool.on('error', () => undefined);
      const store = new SqlStore({ dialect: 'postgres', client: pool, table: TABLE });
      await store.migrate();
      return {
        workerConfig: { backend: 'postgres', connectionString: server.connectionString, table: TABLE },
        store,
        close: async () => {
          await pool.end();
          await server.destroy();
        },
      };
    },
  ],
];

/** One GET with the key; resolves with the status and the error code, if any. */
function get(port: number, path: string, key: string): Promise<{ status: number; code: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers: { 'x-api-key': key }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        const parsed = body.startsWith('{') ? (JSON.parse(body) as { code?: string }) : {};
        resolve({ status: res.statusCode ?? 0, code: parsed.code });
      });
    });
    req.on('error', reject);
  });
}

/** The most intervals `[enter, exit)` that overlap at one instant. */
function mostAtOnce(intervals: readonly (readonly [number, number])[]): number {
  // An exit sorts before an enter at the same instant: the slot was given back first.
  const events = intervals.flatMap(([enter, exit]) => [[enter, 1], [exit, -1]] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let current = 0;
  let most = 0;
  for (const [, change] of events) {
    current += change;
    most = Math.max(most, current);
  }
  return most;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.each(BACKENDS)('maxConcurrent across processes (%s)', (_name, available, open) => {
  const enabled = available();
  let backend: Backend;
  const workers: Worker[] = [];

  beforeAll(async () => {
    if (!enabled) return;
    if (!existsSync(join(__dirname, '../../dist/cjs/index.js'))) throw new Error('dist/ is missing: run `npm run build` (npm test does it first)');
    backend = await open();
  });

  afterEach(async () => {
    await Promise.all(workers.splice(0).map((worker) => worker.stop()));
  });

  afterAll(async () => {
    await backend?.close();
  });

  async function startWorkers(count: number): Promise<{ worker: Worker; port: number }[]> {
    return Promise.all(
      Array.from({ length: count }, async () => {
        const worker = await Worker.start('concurrency-worker.cjs', { ...backend.workerConfig, leaseMs: LEASE_MS });
        workers.push(worker);
        return { worker, port: worker.ready.port as number };
      }),
    );
  }

  (enabled ? it : it.skip)('three servers with slow handlers never run more than maxConcurrent requests of a key at once', async () => {
    const keys = keygate({ store: backend.store, prefix: 'pk_test', hashing: 'sha256' });
    const { key, apiKey } = await keys.create({ name: 'shared', maxConcurrent: 4 });
    const servers = await startWorkers(3);
    const codes = new Map<string, number>();
    let admitted = 0;
    // Four clients per server, each wanting three answers, retrying a refusal after a pause.
    const lane = async (port: number) => {
      for (let done = 0; done < 3; ) {
        const answer = await get(port, '/slow?ms=120', key);
        if (answer.status === 200) {
          done++;
          admitted++;
        } else {
          codes.set(`${answer.status} ${answer.code}`, (codes.get(`${answer.status} ${answer.code}`) ?? 0) + 1);
          await sleep(10);
        }
      }
    };
    await Promise.all(servers.flatMap(({ port }) => Array.from({ length: 4 }, () => lane(port))));
    expect(admitted).toBe(36);
    // The only refusal is the concurrency limit, and there were some: 12 clients wanted 4 slots.
    expect([...codes.keys()]).toEqual(['429 concurrency_limited']);
    const intervals = (await Promise.all(servers.map(({ worker }) => worker.ask({ type: 'intervals' }, 'intervals')))).flatMap(
      (reply) => reply.intervals as [number, number][],
    );
    expect(intervals).toHaveLength(36);
    const most = mostAtOnce(intervals);
    expect(most).toBeLessThanOrEqual(4);
    expect(most).toBeGreaterThan(1);
    // Every slot was given back: four requests at once are admitted again.
    const again = await Promise.all(Array.from({ length: 4 }, (_, i) => get(servers[i % 3]!.port, '/slow?ms=50', key)));
    expect(again.map((answer) => answer.status)).toEqual([200, 200, 200, 200]);
    expect((await keys.get(apiKey.id))!.useCount).toBe(40);
    await keys.close();
  });

  (enabled ? it : it.skip)('the slots of a process killed mid-request are held until their lease lapses, then come back', async () => {
    const keys = keygate({ store: backend.store, prefix: 'pk_test', hashing: 'sha256' });
    const { key } = await keys.create({ name: 'crash', maxConcurrent: 2 });
    const [doomed, survivor] = await startWorkers(2);
    const sentAt = Date.now();
    const held = [get(doomed!.port, '/hold', key), get(doomed!.port, '/hold', key)];
    for (const answer of held) answer.catch(() => undefined); // the process dies with them
    while (((await doomed!.worker.ask({ type: 'holding' }, 'holding')).count as number) < 2) await sleep(10);
    await doomed!.worker.kill();

    // The dead process's two slots still count: the survivor refuses.
    const refused = await get(survivor!.port, '/slow?ms=1', key);
    expect(refused).toEqual({ status: 429, code: 'concurrency_limited' });

    // …until the leases lapse: not before LEASE_MS after the requests were sent, and soon after.
    let firstAdmittedAt = 0;
    while (Date.now() < sentAt + LEASE_MS + 3_000) {
      const answer = await get(survivor!.port, '/slow?ms=1', key);
      if (answer.status === 200) {
        firstAdmittedAt = Date.now();
        break;
      }
      expect(answer.code).toBe('concurrency_limited');
      await sleep(50);
    }
    expect(firstAdmittedAt).toBeGreaterThanOrEqual(sentAt + LEASE_MS);
    expect(firstAdmittedAt).toBeLessThan(sentAt + LEASE_MS + 3_000);
    // Both slots are free again, and the survivor gives its own back as usual.
    const both = await Promise.all([get(survivor!.port, '/slow?ms=100', key), get(survivor!.port, '/slow?ms=100', key)]);
    expect(both.map((answer) => answer.status)).toEqual([200, 200]);
    expect((await get(survivor!.port, '/slow?ms=1', key)).status).toBe(200);
    await keys.close();
  });
});
