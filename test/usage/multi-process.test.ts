/**
 * Usage analytics across processes: three application processes (test/fixtures/usage-worker.cjs)
 * each serve HTTP requests for the same keys through keygate with usage on, on one shared Redis
 * and on one shared PostgreSQL; each flushes once midway and lets close() write the rest. The
 * parent's keys.usage() then holds exactly what the three served: per route, outcome and status.
 */
import { type ApiKeyStore, type Keygate, keygate } from '../../src/index';
import { RedisStore } from '../../src/redis';
import { SqlStore } from '../../src/sql';
import type { UsagePoint } from '../../src/usage/report';
import { T0, testClock } from '../helpers/harness';
import { describePostgres, postgresWithPool } from '../helpers/postgres-server';
import { RedisServer, describeWithRedis } from '../helpers/redis-server';
import { Worker } from '../helpers/workers';

const PROCESSES = 3;
/** Requests of the mixed key per process: six kinds, N / 6 of each. */
const N = 60;
/** Requests of the limited key per process, and its maxUses (less than all of them together). */
const LIMITED_PER_PROCESS = 40;
const MAX_USES = 100;

/** One process's requests for the mixed key, `offset` making its URLs its own. */
function mixedRequests(offset: number): Array<{ path: string; method?: string }> {
  return Array.from({ length: N }, (_, i) => {
    const id = `lead-${offset}-${i}`;
    switch (i % 6) {
      case 3:
        return { path: `/v1/leads/${id}/missing` };
      case 4:
        return { path: `/v1/leads/${id}/boom` };
      case 5:
        return { path: `/v2/leads/${id}/notes`, method: 'POST' };
      default:
        return { path: `/v1/leads/${id}` };
    }
  });
}

function points(items: UsagePoint[]): Record<string, Pick<UsagePoint, 'requests' | 'admitted' | 'refused' | 'status'>> {
  return Object.fromEntries(items.map((p) => [String(p.route), { requests: p.requests, admitted: p.admitted, refused: p.refused, status: p.status }]));
}

/**
 * Runs the scenario: `config` tells the workers how to reach the store, `store` is the parent's
 * view of the same store.
 */
async function threeProcesses(store: ApiKeyStore, config: Record<string, unknown>): Promise<void> {
  const clock = testClock(T0);
  const keys: Keygate = keygate({ store, prefix: 'pk_test', hashing: 'sha256', now: clock.now, usage: true });
  const workers: Worker[] = [];
  try {
    const mixed = await keys.create({ name: 'mixed', scopes: ['leads:read'] });
    const limited = await keys.create({ name: 'limited', maxUses: MAX_USES });
    workers.push(...(await Promise.all(Array.from({ length: PROCESSES }, () => Worker.start('usage-worker.cjs', { mode: 'serve', fixedNow: T0, ...config })))));

    // First halves, a flush, second halves, then close() (which flushes the rest) in every process.
    const half = async (worker: Worker, index: number, part: 0 | 1): Promise<Record<string, number>> => {
      const requests = mixedRequests(index);
      const mine = requests.slice(part * (N / 2), (part + 1) * (N / 2));
      const ownLimited = Array.from({ length: LIMITED_PER_PROCESS / 2 }, (_, i) => ({ path: `/v1/leads/limited-${index}-${part}-${i}` }));
      const a = (await worker.ask({ type: 'traffic', key: mixed.key, requests: mine }, 'trafficDone')).statuses as Record<string, number>;
      const b = (await worker.ask({ type: 'traffic', key: limited.key, requests: ownLimited }, 'trafficDone')).statuses as Record<string, number>;
      const statuses: Record<string, number> = {};
      for (const [status, count] of [...Object.entries(a), ...Object.entries(b)]) statuses[status] = (statuses[status] ?? 0) + count;
      return statuses;
    };
    const first = await Promise.all(workers.map((worker, index) => half(worker, index, 0)));
    const flushed = await Promise.all(workers.map((worker) => worker.ask({ type: 'flush' }, 'flushed')));
    for (const { stats } of flushed) expect(stats).toMatchObject({ bufferedRequests: 0, flushedRequests: (N + LIMITED_PER_PROCESS) / 2, dropped: 0, failedFlushes: 0 });
    const second = await Promise.all(workers.map((worker, index) => half(worker, index, 1)));
    const closed = await Promise.all(workers.map((worker) => worker.ask({ type: 'close' }, 'closed')));
    for (const { stats } of closed) expect(stats).toEqual({ bufferedCells: 0, bufferedRequests: 0, flushedRequests: N + LIMITED_PER_PROCESS, dropped: 0, failedFlushes: 0 });

    // What the clients saw, all processes together.
    const seen: Record<string, number> = {};
    for (const statuses of [...first, ...second]) for (const [status, count] of Object.entries(statuses)) seen[status] = (seen[status] ?? 0) + count;
    const each = (N / 6) * PROCESSES;
    expect(seen).toEqual({ '200': 3 * each + MAX_USES, '404': each, '500': each, '403': each + PROCESSES * LIMITED_PER_PROCESS - MAX_USES });

    const report = await keys.usage(mixed.apiKey.id, { from: T0, to: T0, groupBy: 'route' });
    expect(points(report.items)).toEqual({
      '/v1/leads/:id': { requests: 3 * each, admitted: 3 * each, refused: {}, status: { '2xx': 3 * each, '3xx': 0, '4xx': 0, '5xx': 0 } },
      '/v1/leads/:id/missing': { requests: each, admitted: each, refused: {}, status: { '2xx': 0, '3xx': 0, '4xx': each, '5xx': 0 } },
      '/v1/leads/:id/boom': { requests: each, admitted: each, refused: {}, status: { '2xx': 0, '3xx': 0, '4xx': 0, '5xx': each } },
      '/v2/leads/:id/notes': { requests: each, admitted: 0, refused: { insufficient_scope: each }, status: { '2xx': 0, '3xx': 0, '4xx': each, '5xx': 0 } },
    });
    expect(report.total).toMatchObject({ requests: PROCESSES * N, admitted: 5 * each, errorRate: 0.5, successRate: 0.5 });
    expect(report.total.maxResponseTimeMs).toBeGreaterThan(0);
    expect(report.total.averageResponseTimeMs).toBeLessThanOrEqual(report.total.maxResponseTimeMs);

    const limitedReport = await keys.usage(limited.apiKey.id, { from: T0, to: T0, groupBy: 'route' });
    const exhausted = PROCESSES * LIMITED_PER_PROCESS - MAX_USES;
    expect(points(limitedReport.items)).toEqual({
      '/v1/leads/:id': { requests: MAX_USES, admitted: MAX_USES, refused: {}, status: { '2xx': MAX_USES, '3xx': 0, '4xx': 0, '5xx': 0 } },
      null: { requests: exhausted, admitted: 0, refused: { usage_exhausted: exhausted }, status: { '2xx': 0, '3xx': 0, '4xx': exhausted, '5xx': 0 } },
    });
    const byDay = await keys.usage(limited.apiKey.id, { from: T0 - 86_400_000, to: T0 });
    expect(byDay.items.map((p) => p.requests)).toEqual([0, PROCESSES * LIMITED_PER_PROCESS]);
    expect(JSON.stringify([report, limitedReport])).not.toMatch(/lead-|limited-/);
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()));
    await keys.close();
  }
}

describeWithRedis('usage of 3 processes sharing Redis', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await RedisServer.start();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it(`sums exactly: ${PROCESSES} × ${N + LIMITED_PER_PROCESS} HTTP requests, per route, outcome and status`, async () => {
    const client = server.client();
    try {
      const namespace = `usage-mp-${process.pid}:`;
      await threeProcesses(new RedisStore({ client, keyPrefix: namespace }), { store: 'redis', port: server.port, namespace });
    } finally {
      await client.quit();
    }
  }, 60_000);
});

describePostgres('usage of 3 processes sharing PostgreSQL', () => {
  const pg = postgresWithPool(4);

  it(`sums exactly: ${PROCESSES} × ${N + LIMITED_PER_PROCESS} HTTP requests, per route, outcome and status`, async () => {
    const store = new SqlStore({ dialect: 'postgres', client: pg.pool });
    await store.migrate();
    await threeProcesses(store, { store: 'postgres', connectionString: pg.server.connectionString });
  }, 60_000);
});
