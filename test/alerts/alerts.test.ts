/**
 * Alerts end to end: `quota.threshold` from real HTTP requests (Express 5 and 4), once per key,
 * window and threshold, in one process under concurrency and across three processes sharing
 * Redis; `error_rate.threshold` once per key and day across instances sharing a store (and per
 * instance on a store that cannot claim); Standard Webhooks deliveries to local receivers that
 * verify signatures, that fail, that are down; and listeners that throw or never settle.
 */
import { randomBytes } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Express } from 'express';
import { Webhook } from 'standardwebhooks';
import {
  type ApiKeyStore,
  type ErrorRateThresholdEvent,
  type Keygate,
  type KeygateOptions,
  type QuotaThresholdEvent,
  type StoreUsageQuery,
  type UsageCell,
  MemoryStore,
  keygate,
} from '../../src/index';
import { thresholdMark } from '../../src/alerts/thresholds';
import { T0, testClock, type TestClock } from '../helpers/harness';
import { RedisServer, describeWithRedis } from '../helpers/redis-server';
import { describePostgres, postgresWithPool } from '../helpers/postgres-server';
import { Worker } from '../helpers/workers';
import { EXPRESS_WITH_ROUTER, eventually, send, serve, sleep, untilRecorded } from '../usage/http';

const DAY = 86_400_000;
const DAY_START = Date.UTC(2026, 0, 15);
const MONTH_START = Date.UTC(2026, 0, 1);
const SECRET = `whsec_${randomBytes(32).toString('base64')}`;

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
beforeAll(() => process.on('unhandledRejection', onUnhandled));
afterEach(async () => {
  await new Promise((resolve) => setImmediate(resolve));
  expect(unhandled).toEqual([]);
});
afterAll(() => process.off('unhandledRejection', onUnhandled));

/** Warnings keygate emitted during a test (silenced), by code. */
let warnings: jest.SpyInstance;
beforeEach(() => {
  warnings = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
});
/** Warnings of every test so far: keygate reports some problems once per process. */
const warnedCodes: string[] = [];
afterEach(() => {
  for (const [, options] of warnings.mock.calls) warnedCodes.push(String((options as { code?: string } | undefined)?.code));
  warnings.mockRestore();
});
function warningsWithCode(code: string, sinceStartOfFile = false): number {
  const now = warnings.mock.calls.filter(([, options]) => (options as { code?: string } | undefined)?.code === code).length;
  return sinceStartOfFile ? now + warnedCodes.filter((c) => c === code).length : now;
}

function manager(store: ApiKeyStore, clock: TestClock, options: Partial<KeygateOptions> = {}): Keygate {
  const keys = keygate({ store, prefix: 'pk_test', hashing: 'sha256', now: clock.now, ...options });
  cleanups.push(() => keys.close());
  return keys;
}

/** `/ok/:id` answers 200, `/fail/:id` 500, both behind authenticate(). */
async function appOf(makeExpress: () => Express, keys: Keygate): Promise<string> {
  const app = makeExpress();
  app.use(keys.authenticate());
  app.get('/ok/:id', (_req, res) => void res.json({ ok: true }));
  app.get('/fail/:id', (_req, res) => void res.status(500).json({ ok: false }));
  const served = await serve(app);
  cleanups.push(() => served.close());
  return served.url;
}

/** `count` requests at once; the statuses, counted. */
async function burst(url: string, key: string, count: number, path = '/ok'): Promise<Record<number, number>> {
  const statuses = await Promise.all(Array.from({ length: count }, (_, i) => send(`${url}${path}/${i}`, { key })));
  const counted: Record<number, number> = {};
  for (const status of statuses) counted[status] = (counted[status] ?? 0) + 1;
  return counted;
}

/** An event as the tests compare it: instants as epoch ms. */
function quotaOf(event: QuotaThresholdEvent): Record<string, unknown> {
  return { keyId: event.keyId, window: event.window, threshold: event.threshold, used: event.used, limit: event.limit, windowStart: event.windowStart?.getTime() };
}

function sortEvents<T extends Record<string, unknown>>(events: T[]): T[] {
  const key = (e: T): string => JSON.stringify([e.keyId, e.window, e.windowStart ?? 0, e.threshold]);
  return [...events].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

describe.each(EXPRESS_WITH_ROUTER)('quota.threshold over HTTP on %s', (_label, makeExpress) => {
  it('fires once per key, window and threshold under concurrent requests: maxUses, perDay, perMonth, a key threshold, and re-arms the next UTC day', async () => {
    const clock = testClock();
    const keys = manager(new MemoryStore(), clock);
    const events: QuotaThresholdEvent[] = [];
    keys.on('quota.threshold', (event) => void events.push(event));
    const published: unknown[] = [];
    const onPublish = (message: unknown): void => void published.push(message);
    subscribe('keygate:quota.threshold', onPublish);
    cleanups.push(() => void unsubscribe('keygate:quota.threshold', onPublish));
    const lifetime = await keys.create({ name: 'lifetime', maxUses: 10 });
    const daily = await keys.create({ name: 'daily', rateLimit: { perDay: 5 } });
    const monthly = await keys.create({ name: 'monthly', rateLimit: { perMonth: 20 }, alerts: { quotaThreshold: 0.5 } });
    const both = await keys.create({ name: 'both', maxUses: 10, rateLimit: { perDay: 8 } });
    const plain = await keys.create({ name: 'plain', rateLimit: { perMinute: 3 } });
    const url = await appOf(makeExpress, keys);

    const [l, d, m, b, p] = await Promise.all([burst(url, lifetime.key, 15), burst(url, daily.key, 8), burst(url, monthly.key, 25), burst(url, both.key, 12), burst(url, plain.key, 5)]);
    expect([l, d, m, b, p]).toEqual([{ 200: 10, 403: 5 }, { 200: 5, 429: 3 }, { 200: 20, 429: 5 }, { 200: 8, 429: 4 }, { 200: 3, 429: 2 }]);
    const id = (k: { apiKey: { id: string } }): string => k.apiKey.id;
    const day1 = [
      { keyId: id(lifetime), window: 'lifetime', threshold: 0.8, used: 8, limit: 10, windowStart: undefined },
      { keyId: id(lifetime), window: 'lifetime', threshold: 1, used: 10, limit: 10, windowStart: undefined },
      { keyId: id(daily), window: 'day', threshold: 0.8, used: 4, limit: 5, windowStart: DAY_START },
      { keyId: id(daily), window: 'day', threshold: 1, used: 5, limit: 5, windowStart: DAY_START },
      // A key's own threshold replaces 0.8: 50 % and 100 %, nothing at 80 %.
      { keyId: id(monthly), window: 'month', threshold: 0.5, used: 10, limit: 20, windowStart: MONTH_START },
      { keyId: id(monthly), window: 'month', threshold: 1, used: 20, limit: 20, windowStart: MONTH_START },
      // ceil(0.8 × 8) = 7; the 8th request crosses 100 % of the day and 80 % of maxUses at once.
      { keyId: id(both), window: 'day', threshold: 0.8, used: 7, limit: 8, windowStart: DAY_START },
      { keyId: id(both), window: 'day', threshold: 1, used: 8, limit: 8, windowStart: DAY_START },
      { keyId: id(both), window: 'lifetime', threshold: 0.8, used: 8, limit: 10, windowStart: undefined },
    ];
    expect(sortEvents(events.map(quotaOf))).toEqual(sortEvents(day1));
    for (const event of events) {
      expect(event.keyPrefix).toBe([lifetime, daily, monthly, both].find((k) => k.apiKey.id === event.keyId)!.apiKey.keyPrefix);
      expect(event.at).toEqual(new Date(T0));
    }
    expect(published).toHaveLength(events.length);

    // Later the same day: refusals only, no event again.
    clock.advance(3_600_000);
    expect(await burst(url, daily.key, 3)).toEqual({ 429: 3 });
    expect(await burst(url, monthly.key, 2)).toEqual({ 429: 2 });
    expect(events).toHaveLength(day1.length);

    // The next UTC day: the day windows start again and alert again; maxUses reaches 100 % for `both`.
    clock.set(DAY_START + DAY + 60_000);
    expect(await burst(url, daily.key, 7)).toEqual({ 200: 5, 429: 2 });
    expect(await burst(url, both.key, 4)).toEqual({ 200: 2, 403: 2 });
    expect(sortEvents(events.slice(day1.length).map(quotaOf))).toEqual(
      sortEvents([
        { keyId: id(daily), window: 'day', threshold: 0.8, used: 4, limit: 5, windowStart: DAY_START + DAY },
        { keyId: id(daily), window: 'day', threshold: 1, used: 5, limit: 5, windowStart: DAY_START + DAY },
        { keyId: id(both), window: 'lifetime', threshold: 1, used: 10, limit: 10, windowStart: undefined },
      ]),
    );
    expect(published).toHaveLength(events.length);
  });

  it('uses keygate({ quotaThresholds }), and a key threshold replaces every fraction below 1', async () => {
    const keys = manager(new MemoryStore(), testClock(), { quotaThresholds: [1, 0.25, 0.5] });
    const events: QuotaThresholdEvent[] = [];
    keys.on('quota.threshold', (event) => void events.push(event));
    const plain = await keys.create({ name: 'plain', maxUses: 8 });
    const own = await keys.create({ name: 'own', maxUses: 10, alerts: { quotaThreshold: 0.9 } });
    const url = await appOf(makeExpress, keys);
    expect(await burst(url, plain.key, 8)).toEqual({ 200: 8 });
    expect(await burst(url, own.key, 10)).toEqual({ 200: 10 });
    expect(sortEvents(events.map(quotaOf)).map((e) => [e.keyId, e.threshold, e.used])).toEqual(
      sortEvents([
        { keyId: plain.apiKey.id, window: 'lifetime', threshold: 0.25, used: 2 },
        { keyId: plain.apiKey.id, window: 'lifetime', threshold: 0.5, used: 4 },
        { keyId: plain.apiKey.id, window: 'lifetime', threshold: 1, used: 8 },
        { keyId: own.apiKey.id, window: 'lifetime', threshold: 0.9, used: 9 },
        { keyId: own.apiKey.id, window: 'lifetime', threshold: 1, used: 10 },
      ]).map((e) => [e.keyId, e.threshold, e.used]),
    );
  });
});

describe('thresholdMark', () => {
  it('is the smallest count at or above fraction × limit, exactly, for decimal fractions and limits up to 10¹²', () => {
    const limits = [...Array.from({ length: 120 }, (_, i) => i + 1), 1_000, 4_096, 99_999, 1e6, 123_456_789, 1e9, 1e11, 3e11, 1e12];
    const wrong: string[] = [];
    for (const scale of [100, 1000]) {
      for (let p = 1; p < scale; p++) {
        for (const limit of limits) {
          // The exact ceiling, in integers: ceil(p × limit / scale).
          const exact = Number((BigInt(p) * BigInt(limit) + BigInt(scale - 1)) / BigInt(scale));
          const got = thresholdMark(p / scale, limit);
          if (got !== Math.min(limit, Math.max(1, exact))) wrong.push(`${p / scale} × ${limit} → ${got}, not ${exact}`);
        }
      }
    }
    expect(wrong.slice(0, 5)).toEqual([]);
    expect([thresholdMark(0.8, 1), thresholdMark(1, 1), thresholdMark(0.001, 10), thresholdMark(1, 2 ** 53 - 1)]).toEqual([1, 1, 1, 2 ** 53 - 1]);
  });
});

/**
 * Three worker processes serve one key's traffic on a shared store; their quota.threshold events
 * together hold exactly one per key, window and threshold, and again once the next UTC day.
 */
async function thresholdsAcrossProcesses(store: ApiKeyStore, worker: Record<string, unknown>): Promise<void> {
  const clock = testClock();
  const keys = manager(store, clock);
  const workers: Worker[] = [];
  try {
    const lifetime = await keys.create({ name: 'lifetime', maxUses: 30 });
    const daily = await keys.create({ name: 'daily', rateLimit: { perDay: 20 } });
    const monthly = await keys.create({ name: 'monthly', rateLimit: { perMonth: 40 }, alerts: { quotaThreshold: 0.5 } });
    workers.push(...(await Promise.all([0, 1, 2].map(() => Worker.start('usage-worker.cjs', { mode: 'serve', ...worker, fixedNow: T0 })))));
    const requests = (count: number, tag: string): Array<{ path: string }> => Array.from({ length: count }, (_, i) => ({ path: `/v1/leads/${tag}-${i}` }));
    const traffic = (key: string, count: number): Promise<unknown> =>
      Promise.all(workers.map((worker) => worker.ask({ type: 'traffic', key, requests: requests(count, 'x'), inFlight: 8 }, 'trafficDone')));
    await Promise.all([traffic(lifetime.key, 15), traffic(daily.key, 10), traffic(monthly.key, 15)]);
    const collect = async (): Promise<QuotaThresholdEvent[]> =>
      (await Promise.all(workers.map((worker) => worker.ask({ type: 'events' }, 'events')))).flatMap((reply) => reply.events as QuotaThresholdEvent[]);
    const day1 = await collect();
    const shape = (events: QuotaThresholdEvent[]): unknown[] =>
      sortEvents(events.map((e) => ({ keyId: e.keyId, window: e.window, threshold: e.threshold, used: e.used, limit: e.limit, windowStart: e.windowStart as unknown as number | undefined })));
    expect(shape(day1)).toEqual(
      sortEvents([
        { keyId: lifetime.apiKey.id, window: 'lifetime', threshold: 0.8, used: 24, limit: 30, windowStart: undefined },
        { keyId: lifetime.apiKey.id, window: 'lifetime', threshold: 1, used: 30, limit: 30, windowStart: undefined },
        { keyId: daily.apiKey.id, window: 'day', threshold: 0.8, used: 16, limit: 20, windowStart: DAY_START },
        { keyId: daily.apiKey.id, window: 'day', threshold: 1, used: 20, limit: 20, windowStart: DAY_START },
        { keyId: monthly.apiKey.id, window: 'month', threshold: 0.5, used: 20, limit: 40, windowStart: MONTH_START },
        { keyId: monthly.apiKey.id, window: 'month', threshold: 1, used: 40, limit: 40, windowStart: MONTH_START },
      ]),
    );
    // The work really was spread: more than one process reported crossings.
    expect((await keys.get(lifetime.apiKey.id))!.useCount).toBe(30);

    await Promise.all(workers.map((worker) => worker.ask({ type: 'setNow', now: T0 + DAY }, 'nowSet')));
    await Promise.all([traffic(daily.key, 10), traffic(monthly.key, 2), traffic(lifetime.key, 2)]);
    expect(shape(await collect())).toEqual(
      sortEvents([
        { keyId: daily.apiKey.id, window: 'day', threshold: 0.8, used: 16, limit: 20, windowStart: DAY_START + DAY },
        { keyId: daily.apiKey.id, window: 'day', threshold: 1, used: 20, limit: 20, windowStart: DAY_START + DAY },
      ]),
    );
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()));
  }
}

describeWithRedis('quota.threshold across 3 processes sharing Redis', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await RedisServer.start();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('exactly one event per key, window and threshold among all processes, and again once on the next UTC day', async () => {
    const { RedisStore } = await import('../../src/redis');
    const client = server.client();
    const namespace = `alerts-mp-${process.pid}:`;
    try {
      await thresholdsAcrossProcesses(new RedisStore({ client, keyPrefix: namespace }), { store: 'redis', port: server.port, namespace });
    } finally {
      await client.quit();
    }
  }, 60_000);
});

describePostgres('quota.threshold across 3 processes sharing PostgreSQL', () => {
  const pg = postgresWithPool(4);

  it('exactly one event per key, window and threshold among all processes, and again once on the next UTC day', async () => {
    const { SqlStore } = await import('../../src/sql');
    const store = new SqlStore({ dialect: 'postgres', client: pg.pool, table: 'alerts_mp' });
    await store.migrate();
    await thresholdsAcrossProcesses(store, { store: 'postgres', connectionString: pg.server.connectionString, table: 'alerts_mp' });
  }, 60_000);
});

/** A MemoryStore under another face: without `claimAlert` (a store that cannot claim across processes), or with slow usage reads. */
function storeView(inner: MemoryStore, options: { claims: boolean; readDelayMs?: number }): ApiKeyStore {
  return new Proxy(inner, {
    get(target, property) {
      if (property === 'claimAlert' && !options.claims) return undefined;
      if (property === 'readUsage' && options.readDelayMs) {
        return async (query: StoreUsageQuery): Promise<UsageCell[]> => {
          await sleep(options.readDelayMs!);
          return target.readUsage(query);
        };
      }
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
    has(target, property) {
      return property === 'claimAlert' && !options.claims ? false : Reflect.has(target, property);
    },
  });
}

describe.each(EXPRESS_WITH_ROUTER)('error_rate.threshold on %s', (_label, makeExpress) => {
  /** Two instances on one store, each with its app, its events and a way to flush and settle. */
  async function twoInstances(store: ApiKeyStore, clock: TestClock, minRequests = 10) {
    const instances = await Promise.all(
      [0, 1].map(async () => {
        const keys = manager(store, clock, { usage: { flushIntervalMs: 3_600_000, errorRateMinRequests: minRequests } });
        const events: ErrorRateThresholdEvent[] = [];
        keys.on('error_rate.threshold', (event) => void events.push(event));
        const url = await appOf(makeExpress, keys);
        let sent = 0;
        return {
          keys,
          events,
          /** `ok` answered 200 and `fail` 500, then a flush and time for the check after it. */
          serve: async (key: string, ok: number, fail: number): Promise<void> => {
            for (let i = 0; i < ok; i++) expect(await send(`${url}/ok/${i}`, { key })).toBe(200);
            for (let i = 0; i < fail; i++) expect(await send(`${url}/fail/${i}`, { key })).toBe(500);
            sent += ok + fail;
            await untilRecorded(keys, sent);
            await keys.flushUsage();
            // The error-rate check runs after the flush, off the caller's path.
            await sleep(50);
          },
        };
      }),
    );
    return instances as [(typeof instances)[0], (typeof instances)[0]];
  }

  it('fires once per key and day across two instances sharing a store that claims, after errorRateMinRequests, and again the next day', async () => {
    const clock = testClock();
    const [one, two] = await twoInstances(new MemoryStore(), clock);
    const flaky = await one.keys.create({ name: 'flaky', alerts: { errorRateThreshold: 0.5 } });
    const steady = await one.keys.create({ name: 'steady', alerts: { errorRateThreshold: 0.9 } });
    const silent = await one.keys.create({ name: 'silent' });
    await one.serve(flaky.key, 1, 4);
    // 5 requests of 10 needed: an error rate of 80 % is not enough yet.
    expect([one.events, two.events]).toEqual([[], []]);
    await two.serve(flaky.key, 1, 4);
    const all = (): ErrorRateThresholdEvent[] => [...one.events, ...two.events];
    expect(all()).toEqual([
      { keyId: flaky.apiKey.id, keyPrefix: flaky.apiKey.keyPrefix, day: '2026-01-15', threshold: 0.5, errorRate: 0.8, requests: 10, errors: 8, at: new Date(T0) },
    ]);
    expect(two.events).toHaveLength(1);
    // More errors the same day, flushed by either instance: claimed already.
    await one.serve(flaky.key, 0, 3);
    await two.serve(flaky.key, 0, 2);
    // Below its threshold, and a key with no threshold at all: nothing.
    await one.serve(steady.key, 2, 8);
    await two.serve(silent.key, 0, 20);
    expect(all()).toHaveLength(1);

    clock.set(DAY_START + DAY + 1_000);
    await one.serve(flaky.key, 0, 9);
    expect(all()).toHaveLength(1);
    await one.serve(flaky.key, 1, 0);
    await two.serve(flaky.key, 0, 5);
    expect(all().filter((e) => e.day === '2026-01-16')).toEqual([expect.objectContaining({ keyId: flaky.apiKey.id, requests: 10, errors: 9, errorRate: 0.9 })]);
    expect(all()).toHaveLength(2);
    // The instance whose flush crossed the threshold reported it.
    expect(one.events.map((e) => e.day)).toEqual(['2026-01-16']);
  });

  it('stops checking a key whose errorRateThreshold was removed', async () => {
    const clock = testClock();
    const [one] = await twoInstances(new MemoryStore(), clock, 3);
    const flaky = await one.keys.create({ name: 'flaky', alerts: { errorRateThreshold: 0.5 } });
    await one.serve(flaky.key, 0, 2);
    expect(one.events).toEqual([]);
    await one.keys.update(flaky.apiKey.id, { alerts: null });
    await one.serve(flaky.key, 0, 3);
    expect(one.events).toEqual([]);
    // And a threshold set again applies again.
    await one.keys.update(flaky.apiKey.id, { alerts: { errorRateThreshold: 0.9 } });
    await one.serve(flaky.key, 0, 1);
    expect(one.events.map((e) => [e.requests, e.errors, e.threshold])).toEqual([[6, 6, 0.9]]);
  });

  it('fires once per instance and day on a store without claimAlert', async () => {
    const clock = testClock();
    const [one, two] = await twoInstances(storeView(new MemoryStore(), { claims: false }), clock, 4);
    const flaky = await one.keys.create({ name: 'flaky', alerts: { errorRateThreshold: 0.5 } });
    await one.serve(flaky.key, 1, 3);
    expect(one.events.map((e) => [e.day, e.requests, e.errors])).toEqual([['2026-01-15', 4, 3]]);
    await two.serve(flaky.key, 0, 2);
    await one.serve(flaky.key, 0, 2);
    await two.serve(flaky.key, 0, 2);
    expect(one.events).toHaveLength(1);
    expect(two.events.map((e) => [e.day, e.requests, e.errors])).toEqual([['2026-01-15', 6, 5]]);
    clock.advance(DAY);
    await two.serve(flaky.key, 0, 4);
    expect(two.events.map((e) => e.day)).toEqual(['2026-01-15', '2026-01-16']);
    expect(one.events).toHaveLength(1);
  });
});

/** A webhook receiver on 127.0.0.1 that verifies every delivery with the `standardwebhooks` package. */
interface Delivery {
  id: string;
  timestamp: string;
  verified: boolean;
  body: { type: string; timestamp: string; data: Record<string, unknown> };
  raw: string;
}

async function receiver(answer: (req: IncomingMessage, res: ServerResponse, attempt: number, delivery: Delivery) => void = (_q, res) => void res.end('ok')): Promise<{ url: string; deliveries: Delivery[] }> {
  const deliveries: Delivery[] = [];
  const verifier = new Webhook(SECRET);
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const headers = { 'webhook-id': String(req.headers['webhook-id']), 'webhook-timestamp': String(req.headers['webhook-timestamp']), 'webhook-signature': String(req.headers['webhook-signature']) };
      let verified: boolean;
      try {
        verifier.verify(raw, headers);
        verified = true;
      } catch {
        verified = false;
      }
      const delivery: Delivery = { id: headers['webhook-id'], timestamp: headers['webhook-timestamp'], verified, body: JSON.parse(raw) as Delivery['body'], raw };
      deliveries.push(delivery);
      answer(req, res, deliveries.filter((d) => d.id === delivery.id).length, delivery);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/keygate`, deliveries };
}

/** A URL on which nothing listens. */
async function downUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}/hooks`;
}

describe.each(EXPRESS_WITH_ROUTER)('alert webhooks on %s', (_label, makeExpress) => {
  it('sends exactly one signed quota.threshold webhook per crossing, that verifies with new Webhook(secret).verify()', async () => {
    const hooks = await receiver();
    const keys = manager(new MemoryStore(), testClock(), { webhooks: { secret: SECRET } });
    const events: QuotaThresholdEvent[] = [];
    keys.on('quota.threshold', (event) => void events.push(event));
    const { key, apiKey } = await keys.create({ name: 'hooked', maxUses: 4, alerts: { webhookUrl: hooks.url, quotaThreshold: 0.5 } });
    const quiet = await keys.create({ name: 'quiet', maxUses: 2 });
    const url = await appOf(makeExpress, keys);
    expect(await burst(url, key, 6)).toEqual({ 200: 4, 403: 2 });
    expect(await burst(url, quiet.key, 2)).toEqual({ 200: 2 });
    await eventually(() => hooks.deliveries.length >= 2, 5_000, 'two webhooks');
    await sleep(200);
    expect(hooks.deliveries).toHaveLength(2);
    expect(hooks.deliveries.every((d) => d.verified)).toBe(true);
    const bodies = hooks.deliveries.map((d) => d.body).sort((a, b) => Number(a.data.threshold) - Number(b.data.threshold));
    expect(bodies).toEqual([
      { type: 'quota.threshold', timestamp: expect.any(String), data: { keyId: apiKey.id, keyPrefix: apiKey.keyPrefix, window: 'lifetime', threshold: 0.5, used: 2, limit: 4, at: new Date(T0).toISOString() } },
      { type: 'quota.threshold', timestamp: expect.any(String), data: { keyId: apiKey.id, keyPrefix: apiKey.keyPrefix, window: 'lifetime', threshold: 1, used: 4, limit: 4, at: new Date(T0).toISOString() } },
    ]);
    // webhook-timestamp is the real clock's (receivers refuse stale ones), whatever keygate's `now`.
    for (const d of hooks.deliveries) expect(Math.abs(Number(d.timestamp) * 1000 - Date.now())).toBeLessThan(60_000);
    expect(new Set(hooks.deliveries.map((d) => d.id)).size).toBe(2);
    expect(events).toHaveLength(4);
    // A signature made with another secret does not verify: the receiver really checks.
    const other = new Webhook(`whsec_${randomBytes(32).toString('base64')}`);
    const d = hooks.deliveries[0]!;
    expect(() => other.verify(d.raw, { 'webhook-id': d.id, 'webhook-timestamp': d.timestamp, 'webhook-signature': new Webhook(SECRET).sign(d.id, new Date(Number(d.timestamp) * 1000), d.raw) })).toThrow();
    expect(hooks.deliveries.map((x) => x.raw).join('')).not.toContain(key.split('_').pop());
  });

  it('retries a failed delivery with the same webhook-id and the same body', async () => {
    const hooks = await receiver((_req, res, attempt) => {
      if (attempt === 1) {
        res.writeHead(503, { 'retry-after': '0' });
        res.end('busy');
      } else res.end('ok');
    });
    const keys = manager(new MemoryStore(), testClock(), { webhooks: { secret: SECRET } });
    const { key } = await keys.create({ name: 'hooked', maxUses: 5, alerts: { webhookUrl: hooks.url } });
    const url = await appOf(makeExpress, keys);
    expect(await burst(url, key, 5)).toEqual({ 200: 5 });
    await eventually(() => hooks.deliveries.length >= 4, 5_000, 'two attempts of two webhooks');
    await sleep(200);
    const byId = new Map<string, Delivery[]>();
    for (const d of hooks.deliveries) byId.set(d.id, [...(byId.get(d.id) ?? []), d]);
    expect([...byId.values()].map((attempts) => attempts.length)).toEqual([2, 2]);
    for (const attempts of byId.values()) {
      expect(attempts.every((a) => a.verified)).toBe(true);
      expect(attempts[1]!.raw).toBe(attempts[0]!.raw);
    }
    expect([...byId.values()].map((attempts) => attempts[0]!.body.data.threshold).sort()).toEqual([0.8, 1]);
  });

  it('gives a crossing of a changed limit its own webhook-id: receivers dropping duplicates still get it', async () => {
    const hooks = await receiver();
    const keys = manager(new MemoryStore(), testClock(), { webhooks: { secret: SECRET }, quotaThresholds: [1] });
    const { key, apiKey } = await keys.create({ name: 'raised', maxUses: 2, alerts: { webhookUrl: hooks.url } });
    const url = await appOf(makeExpress, keys);
    expect(await burst(url, key, 3)).toEqual({ 200: 2, 403: 1 });
    await eventually(() => hooks.deliveries.length === 1, 5_000, 'the first webhook');
    await keys.update(apiKey.id, { maxUses: 4 });
    expect(await burst(url, key, 3)).toEqual({ 200: 2, 403: 1 });
    await eventually(() => hooks.deliveries.length === 2, 5_000, 'the second webhook');
    expect(hooks.deliveries.map((d) => [d.body.data.used, d.body.data.limit])).toEqual([
      [2, 2],
      [4, 4],
    ]);
    expect(hooks.deliveries[0]!.id).not.toBe(hooks.deliveries[1]!.id);
  });

  it('delivers the error_rate.threshold webhook raised by the flush in close() before close() resolves', async () => {
    const hooks = await receiver();
    // Usage reads that take a moment, as over a network.
    const store = storeView(new MemoryStore(), { claims: true, readDelayMs: 40 });
    const keys = keygate({ store, prefix: 'pk_test', hashing: 'sha256', now: testClock().now, webhooks: { secret: SECRET }, usage: { flushIntervalMs: 3_600_000, errorRateMinRequests: 3 } });
    const events: ErrorRateThresholdEvent[] = [];
    keys.on('error_rate.threshold', (event) => void events.push(event));
    const { key, apiKey } = await keys.create({ name: 'hooked', alerts: { webhookUrl: hooks.url, errorRateThreshold: 0.5 } });
    const url = await appOf(makeExpress, keys);
    expect(await send(`${url}/ok/1`, { key })).toBe(200);
    for (let i = 0; i < 2; i++) expect(await send(`${url}/fail/${i}`, { key })).toBe(500);
    await untilRecorded(keys, 3);
    // No flushUsage(): close() writes the usage, and sends the alert its flush raises.
    await keys.close();
    expect(events).toHaveLength(1);
    expect(hooks.deliveries).toHaveLength(1);
    const [delivery] = hooks.deliveries;
    expect(delivery!.verified).toBe(true);
    expect(delivery!.body).toEqual({
      type: 'error_rate.threshold',
      timestamp: expect.any(String),
      data: { keyId: apiKey.id, keyPrefix: apiKey.keyPrefix, day: '2026-01-15', threshold: 0.5, errorRate: 2 / 3, requests: 3, errors: 2, at: new Date(T0).toISOString() },
    });
  });

  it('a receiver that fails or is down never slows or breaks requests; a failing one gets maxAttempts attempts, then nothing', async () => {
    const failing = await receiver((_req, res) => {
      res.writeHead(503, { 'retry-after': '0' });
      res.end('down for maintenance');
    });
    const hanging = await receiver(() => undefined);
    const down = await downUrl();
    const keys = keygate({ store: new MemoryStore(), prefix: 'pk_test', hashing: 'sha256', now: testClock().now, webhooks: { secret: SECRET, maxAttempts: 3, timeoutMs: 1_000 } });
    let closed = false;
    cleanups.push(async () => {
      if (!closed) await keys.close();
    });
    const targets = [failing.url, hanging.url, down];
    const created = await Promise.all(targets.map((webhookUrl, i) => keys.create({ name: `k${i}`, maxUses: 5, alerts: { webhookUrl } })));
    const url = await appOf(makeExpress, keys);
    const started = performance.now();
    const times: number[] = [];
    for (let round = 0; round < 6; round++) {
      for (const { key } of created) {
        const t = performance.now();
        expect(await send(`${url}/ok/${round}`, { key })).toBe(round < 5 ? 200 : 403);
        times.push(performance.now() - t);
      }
    }
    // 18 requests, each crossing or not, while deliveries fail, hang and time out behind them: none
    // waits for a delivery (an attempt to the hanging receiver takes its whole 1 s timeout).
    expect(Math.max(...times)).toBeLessThan(500);
    expect(performance.now() - started).toBeLessThan(3_000);
    // Two alerts (80 %, 100 %) for the failing receiver, three attempts each with one id, then dropped.
    await eventually(() => failing.deliveries.length >= 6, 5_000, 'six attempts');
    await sleep(400);
    expect(failing.deliveries).toHaveLength(6);
    const ids = new Map<string, number>();
    for (const d of failing.deliveries) ids.set(d.id, (ids.get(d.id) ?? 0) + 1);
    expect([...ids.values()]).toEqual([3, 3]);
    expect(failing.deliveries.every((d) => d.verified)).toBe(true);
    const closing = performance.now();
    await keys.close();
    closed = true;
    // close() waits for the attempt in flight to the hanging receiver (its timeout), no more.
    expect(performance.now() - closing).toBeLessThan(3_000);
    expect(hanging.deliveries.length).toBeGreaterThanOrEqual(1);
  });
});

describe('a key with alerts.webhookUrl on a keygate without `webhooks`', () => {
  it('gets events only, with one warning for the process', async () => {
    const hooks = await receiver();
    const keys = manager(new MemoryStore(), testClock());
    const events: QuotaThresholdEvent[] = [];
    keys.on('quota.threshold', (event) => void events.push(event));
    const keysWithUrl = await Promise.all([0, 1].map((i) => keys.create({ name: `k${i}`, maxUses: 2, alerts: { webhookUrl: hooks.url } })));
    const url = await appOf(express5Only(), keys);
    for (const { key } of keysWithUrl) expect(await burst(url, key, 3)).toEqual({ 200: 2, 403: 1 });
    expect(events).toHaveLength(4);
    await sleep(200);
    expect(hooks.deliveries).toEqual([]);
    expect(warningsWithCode('KEYGATE_WEBHOOKS_NOT_CONFIGURED')).toBe(1);
  });
});

function express5Only(): () => Express {
  return EXPRESS_WITH_ROUTER[0]![1];
}

describe.each(EXPRESS_WITH_ROUTER)('listeners that throw or never settle on %s', (_label, makeExpress) => {
  it('neither break nor delay requests: request.admitted, request.refused and quota.threshold', async () => {
    const clock = testClock();
    const keys = manager(new MemoryStore(), clock, { usage: true });
    const calls = { admitted: 0, refused: 0, quota: 0 };
    keys.on('request.admitted', () => {
      calls.admitted++;
      throw new Error('listener bug (test)');
    });
    keys.on('request.admitted', () => new Promise(() => undefined));
    keys.on('request.refused', () => {
      calls.refused++;
      return new Promise(() => undefined);
    });
    keys.on('request.refused', () => Promise.reject(new Error('async listener bug (test)')));
    keys.on('quota.threshold', () => {
      calls.quota++;
      throw new Error('listener bug (test)');
    });
    keys.on('quota.threshold', async () => {
      throw new Error('async listener bug (test)');
    });
    keys.on('quota.threshold', () => new Promise(() => undefined));
    const { key, apiKey } = await keys.create({ name: 'busy', maxUses: 5 });
    const url = await appOf(makeExpress, keys);
    const times: number[] = [];
    const timed = async (path: string, options: { key?: string }): Promise<number> => {
      const t = performance.now();
      const status = await send(`${url}${path}`, options);
      times.push(performance.now() - t);
      return status;
    };
    const statuses: number[] = [];
    for (let i = 0; i < 7; i++) statuses.push(await timed(`/ok/${i}`, { key }));
    statuses.push(await timed('/ok/x', {}));
    statuses.push(await timed('/fail/x', { key: 'pk_test_wrong' }));
    expect(statuses).toEqual([200, 200, 200, 200, 200, 403, 403, 401, 401]);
    expect(Math.max(...times)).toBeLessThan(1_000);
    // verify() emits the same events, and is not broken either.
    expect((await keys.verify(key)).ok).toBe(false);
    await untilRecorded(keys, 7);
    await eventually(() => calls.admitted === 5 && calls.refused === 5, 2_000, 'the listeners to be called');
    expect(calls.quota).toBe(2);
    await keys.flushUsage();
    expect((await keys.usage(apiKey.id)).total).toMatchObject({ requests: 7, admitted: 5, refused: { usage_exhausted: 2 } });
    await sleep(20);
    // Reported once per process and event: by this test, or by the same test on the other Express.
    expect(warningsWithCode('KEYGATE_LISTENER_FAILED', true)).toBeGreaterThanOrEqual(1);
    // The promise-returning listeners that rejected were caught: the afterEach finds no unhandled rejection.
  });
});

describe.each(EXPRESS_WITH_ROUTER)('after the review of alerts on %s', (_label, makeExpress) => {
  it('checks webhooks.allowUrl again when sending: a key written elsewhere with a refused URL gets no webhook', async () => {
    const hooks = await receiver();
    const store = new MemoryStore();
    // Written by an instance without allowUrl (another deploy, the CLI, a script).
    const elsewhere = manager(store, testClock());
    const { key } = await elsewhere.create({ name: 'internal', maxUses: 2, alerts: { webhookUrl: hooks.url, quotaThreshold: 0.5 } });
    const strict = manager(store, testClock(), { webhooks: { secret: SECRET, allowUrl: (url) => url.hostname.endsWith('.hooks.example.com') } });
    const events: QuotaThresholdEvent[] = [];
    strict.on('quota.threshold', (event) => void events.push(event));
    const url = await appOf(makeExpress, strict);
    expect(await burst(url, key, 2)).toEqual({ 200: 2 });
    await sleep(300);
    expect(events).toHaveLength(2);
    expect(hooks.deliveries).toEqual([]);
    expect(warningsWithCode('KEYGATE_WEBHOOK_URL_REFUSED', true)).toBe(1);
  });

  it('signs the alert as keygate made it, whatever a listener does to the event', async () => {
    const hooks = await receiver();
    const keys = manager(new MemoryStore(), testClock(), { webhooks: { secret: SECRET } });
    keys.on('quota.threshold', (event) => {
      event.keyPrefix = 'rewritten by a listener';
      event.used = -1;
    });
    const { key, apiKey } = await keys.create({ name: 'hooked', maxUses: 1, alerts: { webhookUrl: hooks.url } });
    const url = await appOf(makeExpress, keys);
    expect(await burst(url, key, 1)).toEqual({ 200: 1 });
    await eventually(() => hooks.deliveries.length >= 2, 5_000, 'two webhooks (0.8 and 1 of maxUses 1)');
    for (const delivery of hooks.deliveries) expect(delivery.body.data).toMatchObject({ keyPrefix: apiKey.keyPrefix, used: 1 });
  });

  it('fires error_rate.threshold once per key and day even when the threshold changes that day', async () => {
    const clock = testClock();
    const keys = manager(new MemoryStore(), clock, { usage: { flushIntervalMs: 3_600_000, errorRateMinRequests: 2 } });
    const events: ErrorRateThresholdEvent[] = [];
    keys.on('error_rate.threshold', (event) => void events.push(event));
    const url = await appOf(makeExpress, keys);
    const { key, apiKey } = await keys.create({ name: 'flaky', alerts: { errorRateThreshold: 0.5 } });
    let sent = 0;
    for (const threshold of [0.5, 0.4, 0.3, 0.2]) {
      await keys.update(apiKey.id, { alerts: { errorRateThreshold: threshold } });
      for (let i = 0; i < 4; i++) expect(await send(`${url}/fail/${i}`, { key })).toBe(500);
      sent += 4;
      await untilRecorded(keys, sent);
      await keys.flushUsage();
    }
    expect(events).toHaveLength(1);
  });
});
