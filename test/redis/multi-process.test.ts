/**
 * Several real processes sharing one Redis: exact limits and prompt revocation across them.
 * The workers load the built package (dist/), which `npm test` builds before jest runs.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type Redis from 'ioredis';
import { keygate } from 'keygate';
import { RedisStore } from 'keygate/redis';
import { describeWithRedis, RedisServer } from '../helpers/redis-server';
import { Worker } from '../helpers/workers';

const FIXED_NOW = Date.UTC(2026, 0, 15, 12, 0, 0);

// Workers start, warm up and hammer for real: give each test room beyond jest's 5 s default.
jest.setTimeout(30_000);

describeWithRedis('RedisStore across processes', () => {
  let server: RedisServer;
  let client: Redis;
  const workers: Worker[] = [];

  beforeAll(async () => {
    if (!existsSync(join(__dirname, '../../dist/cjs/redis.js'))) throw new Error('dist/ is missing: run `npm run build` (npm test does it first)');
    server = await RedisServer.start();
    client = server.client();
    await new Promise((resolve) => client.once('ready', resolve));
  });

  afterEach(async () => {
    await Promise.all(workers.splice(0).map((worker) => worker.stop()));
    await client.flushall();
  });

  afterAll(async () => {
    await client?.quit();
    await server?.stop();
  });

  async function startWorkers(count: number, fixedNow?: number): Promise<Worker[]> {
    const started = await Promise.all(Array.from({ length: count }, () => Worker.start('redis-worker.cjs', { port: server.port, fixedNow })));
    workers.push(...started);
    return started;
  }

  function manager(now?: () => number) {
    return keygate({ store: new RedisStore({ client }), prefix: 'pk_test', hashing: 'sha256', ...(now ? { now } : {}) });
  }

  it('admits exactly maxUses when 4 processes hammer one key at once', async () => {
    const keys = manager();
    const { key, apiKey } = await keys.create({ name: 'shared', maxUses: 50 });
    const pool = await startWorkers(4);
    const replies = await Promise.all(pool.map((worker) => worker.ask({ type: 'hammer', key, count: 40 }, 'hammered')));
    const admitted = replies.reduce((sum, reply) => sum + (reply.admitted as number), 0);
    expect(admitted).toBe(50);
    for (const reply of replies) {
      expect(Object.keys(reply.codes as object).every((code) => code === 'usage_exhausted')).toBe(true);
    }
    expect((await keys.get(apiKey.id))!.useCount).toBe(50);
    await keys.close();
  });

  it('admits exactly the burst of a per-second bucket across 3 processes at one instant', async () => {
    const keys = manager(() => FIXED_NOW);
    const { key } = await keys.create({ name: 'bucket', rateLimit: { perSecond: 5, burst: 30 } });
    const pool = await startWorkers(3, FIXED_NOW);
    const replies = await Promise.all(pool.map((worker) => worker.ask({ type: 'hammer', key, count: 25 }, 'hammered')));
    expect(replies.reduce((sum, reply) => sum + (reply.admitted as number), 0)).toBe(30);
    expect(replies.every((reply) => Object.keys(reply.codes as object).every((code) => code === 'rate_limited'))).toBe(true);
    await keys.close();
  });

  it('holds a per-second limit in real time across 3 processes: never more than burst + rate × time', async () => {
    const keys = manager();
    const perSecond = 100;
    const burst = 20;
    const { key } = await keys.create({ name: 'real time', rateLimit: { perSecond, burst } });
    const pool = await startWorkers(3);
    const replies = await Promise.all(pool.map((worker) => worker.ask({ type: 'hammerFor', key, ms: 1500, concurrency: 8 }, 'hammeredFor')));
    const admitted = replies.reduce((sum, reply) => sum + (reply.admitted as number), 0);
    const refused = replies.reduce((sum, reply) => sum + (reply.refused as number), 0);
    const first = Math.min(...replies.map((reply) => reply.first as number));
    const last = Math.max(...replies.map((reply) => reply.last as number));
    const seconds = (last - first) / 1000;
    // Over-admission is impossible: the bucket starts full and refills at perSecond.
    expect(admitted).toBeLessThanOrEqual(burst + Math.ceil(perSecond * seconds) + 1);
    // Under-admission stays within what the load allows: the clients kept the bucket empty (many
    // refusals), so nearly every token was used.
    expect(refused).toBeGreaterThan(admitted);
    expect(admitted).toBeGreaterThanOrEqual(Math.floor(perSecond * seconds * 0.8));
    await keys.close();
  });

  it('admits exactly the day quota across 3 processes', async () => {
    const keys = manager();
    const { key } = await keys.create({ name: 'quota', rateLimit: { perDay: 42 } });
    const pool = await startWorkers(3);
    const replies = await Promise.all(pool.map((worker) => worker.ask({ type: 'hammer', key, count: 30 }, 'hammered')));
    expect(replies.reduce((sum, reply) => sum + (reply.admitted as number), 0)).toBe(42);
    await keys.close();
  });

  /** Sends every worker one hammer of `count` verifies at once; the admitted total and the refusal codes. */
  async function hammerAll(pool: Worker[], key: string, count: number): Promise<{ admitted: number; codes: Set<string> }> {
    const replies = await Promise.all(pool.map((worker) => worker.ask({ type: 'hammer', key, count }, 'hammered')));
    const codes = new Set(replies.flatMap((reply) => Object.keys(reply.codes as object)));
    return { admitted: replies.reduce((sum, reply) => sum + (reply.admitted as number), 0), codes };
  }

  it('admits exactly the minute, hour and month quotas across 4 processes', async () => {
    const keys = manager(() => FIXED_NOW);
    const pool = await startWorkers(4, FIXED_NOW);
    const cases = [
      { rateLimit: { perMinute: 50 }, count: 40 },
      { rateLimit: { perHour: 37 }, count: 30 },
      { rateLimit: { perMonth: 45 }, count: 25 },
      // Every window at once: the tightest one (the hour) decides.
      { rateLimit: { perMinute: 90, perHour: 61, perDay: 80, perMonth: 70 }, count: 40 },
    ];
    for (const { rateLimit, count } of cases) {
      const { key, apiKey } = await keys.create({ name: 'windows', rateLimit });
      const quota = Math.min(...Object.values(rateLimit));
      const { admitted, codes } = await hammerAll(pool, key, count);
      expect({ rateLimit, admitted, codes: [...codes] }).toEqual({ rateLimit, admitted: quota, codes: ['quota_exceeded'] });
      expect((await keys.get(apiKey.id))!.useCount).toBe(quota);
    }
    await keys.close();
  });

  it('starts the minute and month windows again at the turn of a UTC month, exactly, across 4 processes', async () => {
    const lastMinuteOfJanuary = Date.UTC(2026, 0, 31, 23, 59, 0);
    const lastInstantOfJanuary = Date.UTC(2026, 1, 1) - 1;
    const firstOfFebruary = Date.UTC(2026, 1, 1);
    const keys = manager(() => lastMinuteOfJanuary);
    const { key, apiKey } = await keys.create({ name: 'month turn', rateLimit: { perMinute: 30, perMonth: 50 } });
    const pool = await startWorkers(4, lastMinuteOfJanuary);
    const setNow = (now: number) => Promise.all(pool.map((worker) => worker.ask({ type: 'setNow', now }, 'nowSet')));

    expect(await hammerAll(pool, key, 20)).toEqual({ admitted: 30, codes: new Set(['quota_exceeded']) }); // the minute
    await setNow(lastInstantOfJanuary);
    expect(await hammerAll(pool, key, 20)).toEqual({ admitted: 0, codes: new Set(['quota_exceeded']) }); // the same minute
    await setNow(Date.UTC(2026, 0, 31, 23, 58, 0));
    // A lagging clock is counted at the latest instant already counted: still that minute.
    expect(await hammerAll(pool, key, 5)).toEqual({ admitted: 0, codes: new Set(['quota_exceeded']) });
    await setNow(firstOfFebruary);
    expect(await hammerAll(pool, key, 20)).toEqual({ admitted: 30, codes: new Set(['quota_exceeded']) }); // a new month and minute
    await setNow(firstOfFebruary + 60_000);
    expect(await hammerAll(pool, key, 20)).toEqual({ admitted: 20, codes: new Set(['quota_exceeded']) }); // the month's 50
    expect((await keys.get(apiKey.id))!.useCount).toBe(80);
    await keys.close();
  });

  it('refuses a key revoked through one process in another process within one second', async () => {
    const keys = manager();
    const { key, apiKey } = await keys.create({ name: 'revoke-me' });
    const [worker] = await startWorkers(1);
    const { port } = (await worker!.ask({ type: 'serve' }, 'serving')) as unknown as { port: number };
    const call = () => fetch(`http://127.0.0.1:${port}/`, { headers: { 'X-API-Key': key } });
    expect((await call()).status).toBe(200); // now cached in the worker
    expect((await call()).status).toBe(200);

    const revokedAt = Date.now();
    await keys.revoke(apiKey.id);
    let answer = await call();
    while (answer.status === 200 && Date.now() - revokedAt < 3_000) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      answer = await call();
    }
    const elapsed = Date.now() - revokedAt;
    expect(answer.status).toBe(401);
    expect(((await answer.json()) as { code: string }).code).toBe('api_key_revoked');
    expect(elapsed).toBeLessThan(1_000);
    await keys.close();
  });
});
