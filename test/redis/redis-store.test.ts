/**
 * RedisStore behaviour beyond the contract: one round trip per admitted request, faults and
 * recovery, the subscription keygate opens and closes, and the middleware on top of it.
 */
import request from 'supertest';
import type Redis from 'ioredis';
import { keygate, type Keygate } from 'keygate';
import { RedisStore } from 'keygate/redis';
import { EXPRESS_VERSIONS, testApp } from '../helpers/harness';
import { describeWithRedis, RedisServer } from '../helpers/redis-server';

describeWithRedis('RedisStore', () => {
  let server: RedisServer;
  let client: Redis;
  const managers: Keygate[] = [];

  async function ready(redis: Redis): Promise<void> {
    if (redis.status !== 'ready') await new Promise((resolve) => redis.once('ready', resolve));
  }

  function manager(options: { storeTimeoutMs?: number; keyPrefix?: string; client?: Redis } = {}): Keygate {
    const keys = keygate({
      store: new RedisStore({ client: options.client ?? client, keyPrefix: options.keyPrefix ?? 'kgtest:' }),
      prefix: 'pk_test',
      hashing: 'sha256',
      ...(options.storeTimeoutMs ? { storeTimeoutMs: options.storeTimeoutMs } : {}),
    });
    managers.push(keys);
    return keys;
  }

  beforeAll(async () => {
    server = await RedisServer.start();
    client = server.client();
    await ready(client);
  });

  afterEach(async () => {
    await Promise.all(managers.splice(0).map((keys) => keys.close()));
    if (client.status === 'ready') await client.flushall();
  });

  afterAll(async () => {
    await client?.quit();
    await server?.stop();
  });

  it('makes exactly one round trip (one EVALSHA) per admitted request on the warm path', async () => {
    const keys = manager();
    const { key } = await keys.create({
      name: 'warm',
      scopes: ['leads:read'],
      allowedIps: ['127.0.0.0/8', '::1'],
      maxUses: 1000,
      rateLimit: { perSecond: 100, perDay: 10_000 },
    });
    const app = testApp(EXPRESS_VERSIONS[0]![1], keys);
    expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200); // cold: lookup + script load

    const monitor = await client.monitor();
    const seen: string[] = [];
    // Commands a script runs inside Redis (HMGET, TIME, HSET) are reported too, from source "lua":
    // count only what the client sent.
    monitor.on('monitor', (_time: string, args: string[], source: string) => {
      if (source !== 'lua') seen.push(String(args[0]).toLowerCase());
    });
    try {
      for (let i = 0; i < 10; i++) expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      monitor.disconnect();
    }
    expect(seen).toEqual(Array.from({ length: 10 }, () => 'evalsha'));
  });

  it('answers 503 within storeTimeoutMs while Redis is down and recovers by itself when it returns, counting nothing in between', async () => {
    const keys = manager({ storeTimeoutMs: 300 });
    const { key, apiKey } = await keys.create({ name: 'faults', maxUses: 100 });
    const app = testApp(EXPRESS_VERSIONS[0]![1], keys);
    expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);

    await server.kill();
    const refusedStatuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const started = Date.now();
      const res = await request(app).get('/whoami').set('X-API-Key', key);
      refusedStatuses.push(res.status);
      expect(res.body.code).toBe('store_unavailable');
      expect(Date.now() - started).toBeLessThan(1_500);
    }
    expect(refusedStatuses).toEqual([503, 503, 503, 503, 503]);

    await server.startProcess(); // same port, empty data: put the record back as a restore would
    await ready(client);
    const restored = manager({ storeTimeoutMs: 300 });
    const again = await restored.create({ name: 'after restart', maxUses: 3 });
    const appAfter = testApp(EXPRESS_VERSIONS[0]![1], restored);
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await request(appAfter).get('/whoami').set('X-API-Key', again.key)).status);
    expect(statuses).toEqual([200, 200, 200, 403]);
    // The refused requests during the outage counted nothing anywhere: the old record is gone with
    // the restarted (non-persistent) server, and the new one counted exactly its three uses.
    expect((await restored.get(again.apiKey.id))!.useCount).toBe(3);
    expect(await restored.get(apiKey.id)).toBeNull();
  });

  it('fails fast while disconnected instead of queueing commands that would run after reconnecting', async () => {
    const keys = manager({ storeTimeoutMs: 2_000 });
    const { key } = await keys.create({ name: 'no-queue', maxUses: 10 });
    expect((await keys.verify(key)).ok).toBe(true); // cached from now on
    const closed = new Promise((resolve) => client.once('close', resolve));
    await server.kill();
    await closed;
    const started = Date.now();
    const during = await keys.verify(key);
    expect(Date.now() - started).toBeLessThan(500); // refused at once, not after the 2 s deadline
    expect(during.ok).toBe(false);
    if (!during.ok) expect(during.error.code).toBe('store_unavailable');

    await server.startProcess();
    await ready(client);
    await new Promise((resolve) => setTimeout(resolve, 200));
    // A consume left in ioredis's offline queue would have run on the new server after reconnecting.
    const stats = await client.info('commandstats');
    expect(stats).not.toMatch(/cmdstat_evalsha:/);
    expect(stats).not.toMatch(/cmdstat_eval:/);
  });

  it('opens one subscription connection for keygate and closes it on keys.close(), leaving the user client open', async () => {
    const channelSubscribers = async () => {
      const [, count] = (await client.pubsub('NUMSUB', 'kgtest:invalidate')) as [string, number];
      return Number(count);
    };
    const keys = manager();
    const other = manager();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await channelSubscribers()).toBe(2);
    await keys.close();
    await other.close();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await channelSubscribers()).toBe(0);
    expect(client.status).toBe('ready');
    expect(await client.ping()).toBe('PONG');
  });

  it('keeps deployments with different namespaces apart on one Redis', async () => {
    const a = manager({ keyPrefix: 'tenant-a:' });
    const b = manager({ keyPrefix: 'tenant-b:' });
    const { key, apiKey } = await a.create({ name: 'only in a' });
    expect(await b.get(apiKey.id)).toBeNull();
    const refused = await b.verify(key);
    expect(refused.ok || refused.error.code).toBe('invalid_api_key');
    expect((await a.verify(key)).ok).toBe(true);
  });

  it('serves the whole middleware on Redis: scopes, limits and headers', async () => {
    const keys = manager();
    const { key } = await keys.create({ name: 'e2e', scopes: ['x:read'], rateLimit: { perSecond: 2, perDay: 100 } });
    const app = testApp(EXPRESS_VERSIONS[0]![1], keys, { scopes: ['x:read'] });
    const first = await request(app).get('/whoami').set('Authorization', `Bearer ${key}`);
    expect(first.status).toBe(200);
    expect(first.headers['ratelimit-policy']).toBe('"second";q=2;w=1, "day";q=100;w=86400');
    expect(first.body.apiKey.useCount).toBe(1);
    await request(app).get('/whoami').set('Authorization', `Bearer ${key}`);
    const limited = await request(app).get('/whoami').set('Authorization', `Bearer ${key}`);
    expect(limited.status).toBe(429);
    expect(limited.body.code).toBe('rate_limited');
    expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(1);
  });

  it('lets an app use a client that is still connecting for everything but a consume', async () => {
    const fresh = server.client();
    try {
      expect(fresh.status).not.toBe('ready');
      const keys = manager({ client: fresh });
      const { key, apiKey } = await keys.create({ name: 'early' }); // waits for the connection
      expect((await keys.get(apiKey.id))!.name).toBe('early');
      expect((await keys.verify(key)).ok).toBe(true);
    } finally {
      await fresh.quit();
    }
  });

  it('shares one wait among many calls made while the client connects: no listener pile-up, no warning', async () => {
    const fresh = server.client();
    const warn = jest.spyOn(process, 'emitWarning');
    try {
      expect(fresh.status).not.toBe('ready');
      const store = new RedisStore({ client: fresh });
      const calls = Array.from({ length: 50 }, (_, i) => store.findById(`missing-${i}`));
      expect(fresh.listenerCount('ready')).toBeLessThanOrEqual(2);
      expect(await Promise.all(calls)).toEqual(Array.from({ length: 50 }, () => null));
      const listenerWarnings = warn.mock.calls.filter(([warning]) => String(warning).includes('MaxListenersExceeded') || (warning as Error)?.name === 'MaxListenersExceededWarning');
      expect(listenerWarnings).toEqual([]);
    } finally {
      warn.mockRestore();
      await fresh.quit();
    }
  });

  it('rejects a client that is not an ioredis instance and unknown options', () => {
    expect(() => new RedisStore({ client: {} as never })).toThrow(TypeError);
    expect(() => new RedisStore({ client, prefix: 'x' } as never)).toThrow(/unsupported option `prefix`/);
  });
});
