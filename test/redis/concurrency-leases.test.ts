/**
 * Concurrency leases (`maxConcurrent`) in the Redis store, on real servers (the generic behaviour
 * is the store contract's; this is what only Redis can show):
 * - the leases key `<record key>:leases` is in the record's hash slot, and a claim consumes and
 *   releases on a three-node Cluster;
 * - a consume without a claim is one EVALSHA that touches no leases key; a release is one ZREM;
 * - the leases set gets an expiry a margin past its newest lease, never lowered;
 * - lapsed leases are pruned (lapse <= at), lapse instants are written exactly;
 * - a leases key of another type fails the consume closed (nothing counted, and keygate answers 503);
 * - 200 concurrent consumes with limit 7 from several connections admit exactly 7;
 * - random sequences of claims, releases and limits agree with decideConsume / leasesAfter.
 */
import Redis, { Cluster } from 'ioredis';
import { keygate, type Keygate } from 'keygate';
import { RedisStore } from 'keygate/redis';
import {
  type ConsumeOutcome,
  type ConsumeRequest,
  type CounterState,
  countingInstant,
  decideConsume,
  initialCounters,
  leasesAfter,
  liveLeases,
} from '../../src/policy/limits';
import type { RateLimit } from '../../src/types';
import { LEASES_TTL_MARGIN_MS } from '../../src/stores/redis/scripts';
import { testRecord } from '../helpers/records';
import { commandsRunDuring, describeWithRedis, type MonitoredCommand, RedisClusterServers, RedisServer, ready } from '../helpers/redis-server';

jest.setTimeout(60_000);

const NOW = Date.UTC(2026, 0, 15, 12, 0, 0);

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A small seeded PRNG (mulberry32), so a failure can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const recordKeyOf = (ns: string, id: string) => `${ns}key:{${id}}`;
const leasesKeyOf = (ns: string, id: string) => `${ns}key:{${id}}:leases`;

function claimed(limit: number, lease: string, leaseMs = 60_000, now = NOW, extra: Partial<ConsumeRequest> = {}): ConsumeRequest {
  return { now, maxUses: null, rateLimit: null, concurrency: { limit, lease, leaseMs }, ...extra };
}

describeWithRedis('RedisStore concurrency leases (standalone)', () => {
  let server: RedisServer;
  let client: Redis;
  let admin: Redis;
  let namespace = 0;
  let ns: string;
  let store: RedisStore;

  beforeAll(async () => {
    server = await RedisServer.start();
    client = server.client();
    admin = server.client();
    await Promise.all([ready(client), ready(admin)]);
  });

  beforeEach(() => {
    ns = `leases${++namespace}:`;
    store = new RedisStore({ client, keyPrefix: ns });
  });

  afterAll(async () => {
    await client?.quit();
    await admin?.quit();
    await server?.stop();
  });

  async function inserted(overrides: Parameters<typeof testRecord>[1] = {}): Promise<string> {
    const record = testRecord(NOW - 1000, overrides);
    await store.insert(record);
    return record.id;
  }

  /** Every command Redis ran while `body` ran: the client's own and those its scripts ran ('lua'). */
  function commandsDuring(body: () => Promise<unknown>): Promise<MonitoredCommand[]> {
    return commandsRunDuring(admin, body);
  }

  describe('round trips', () => {
    it('sends a consume without a claim as one EVALSHA that touches no leases key', async () => {
      const id = await inserted();
      await store.consume(id, claimed(3, 'warm-up')); // loads the script (EVALSHA, NOSCRIPT, EVAL)
      await store.release(id, 'warm-up');
      const seen = await commandsDuring(async () => {
        for (let i = 0; i < 3; i++) {
          expect(await store.consume(id, { now: NOW, maxUses: null, rateLimit: { perSecond: 100 } })).toEqual({ admitted: true, useCount: 2 + i, tokens: 99 - i });
        }
      });
      expect(seen.filter((command) => command.source === 'client').map((command) => command.args[0]?.toLowerCase())).toEqual(['evalsha', 'evalsha', 'evalsha']);
      // Declared to the script (KEYS[2]), but no command of the script names it.
      const scriptCommands = seen.filter((command) => command.source === 'lua');
      expect(scriptCommands.map((command) => command.args[0]?.toLowerCase())).toEqual(['hmget', 'hset', 'hmget', 'hset', 'hmget', 'hset']);
      expect(scriptCommands.filter((command) => command.args.some((arg) => arg.includes(':leases')))).toEqual([]);
    });

    it('sends a consume with a claim as one EVALSHA too, its lease commands inside the script', async () => {
      const id = await inserted();
      await store.consume(id, claimed(3, 'warm-up'));
      const seen = await commandsDuring(() => store.consume(id, claimed(3, 'lease-1')));
      expect(seen.filter((command) => command.source === 'client').map((command) => command.args[0]?.toLowerCase())).toEqual(['evalsha']);
      expect(seen.filter((command) => command.source === 'lua').map((command) => command.args[0]?.toLowerCase())).toEqual([
        'hmget',
        'zcount',
        'zremrangebyscore',
        'zadd',
        'pttl',
        'pexpire',
        'hset',
      ]);
    });

    it('releases with one ZREM on the leases key: no PUBLISH, no change to the record', async () => {
      const id = await inserted();
      await store.consume(id, claimed(3, 'lease-1'));
      const record = await admin.hgetall(recordKeyOf(ns, id));
      const seen = await commandsDuring(() => store.release(id, 'lease-1'));
      expect(seen).toEqual([{ source: 'client', args: ['zrem', leasesKeyOf(ns, id), 'lease-1'] }]);
      expect(await admin.hgetall(recordKeyOf(ns, id))).toEqual(record);
      // The last lease gone, Redis drops the empty set.
      expect(await admin.exists(leasesKeyOf(ns, id))).toBe(0);
    });

    it('resolves a release of an unknown record or lease', async () => {
      const id = await inserted();
      await expect(store.release('no-such-id', 'lease')).resolves.toBeUndefined();
      await expect(store.release(id, 'never-taken')).resolves.toBeUndefined();
      await store.consume(id, claimed(3, 'lease-1'));
      await store.release(id, 'lease-1');
      await expect(store.release(id, 'lease-1')).resolves.toBeUndefined();
    });
  });

  describe('the leases set', () => {
    it('holds each lease scored by its lapse instant, at + leaseMs, written exactly', async () => {
      const id = await inserted();
      const now = NOW + 0.1; // 1768478400000.1: 14 digits would round it away
      await store.consume(id, claimed(5, 'a', 1234.5, now));
      // A caller whose clock lags counts at the key's latest instant, and its lease lapses from there.
      expect(await store.consume(id, claimed(5, 'b', 1000, NOW - 5000))).toEqual({ admitted: true, useCount: 2, inFlight: 2, countedAt: now });
      const scores = await admin.zrange(leasesKeyOf(ns, id), 0, -1, 'WITHSCORES');
      expect(scores.map((value, i) => (i % 2 === 1 ? Number(value) : value))).toEqual(['b', now + 1000, 'a', now + 1234.5]);
    });

    it('prunes leases whose instant is at or before the one a consume counts at', async () => {
      const id = await inserted();
      await store.consume(id, claimed(2, 'a', 1000, NOW));
      await store.consume(id, claimed(2, 'b', 2000, NOW));
      // At NOW + 999 both are live: full.
      expect(await store.consume(id, claimed(2, 'c', 1000, NOW + 999))).toEqual({ admitted: false, refusal: 'concurrency_limited', useCount: 2, inFlight: 2 });
      // At NOW + 1000 `a` has lapsed (lapse <= at): pruned, and the slot is free.
      expect(await store.consume(id, claimed(2, 'c', 1000, NOW + 1000))).toEqual({ admitted: true, useCount: 3, inFlight: 2 });
      expect(await admin.zrange(leasesKeyOf(ns, id), 0, -1)).toEqual(['b', 'c']);
      // A consume without a claim prunes nothing, whatever has lapsed.
      await store.consume(id, { now: NOW + 10_000, maxUses: null, rateLimit: null });
      expect(await admin.zrange(leasesKeyOf(ns, id), 0, -1)).toEqual(['b', 'c']);
      expect(await store.consume(id, claimed(2, 'd', 1000, NOW + 10_000))).toEqual({ admitted: true, useCount: 5, inFlight: 1 });
      expect(await admin.zrange(leasesKeyOf(ns, id), 0, -1)).toEqual(['d']);
    });

    it('expires a margin after its newest lease, and a later lease with a shorter leaseMs never lowers the expiry', async () => {
      const id = await inserted();
      const key = leasesKeyOf(ns, id);
      await store.consume(id, claimed(5, 'a', 5_000));
      const first = await admin.pttl(key);
      expect(first).toBeGreaterThan(5_000 + LEASES_TTL_MARGIN_MS - 2_000);
      expect(first).toBeLessThanOrEqual(5_000 + LEASES_TTL_MARGIN_MS);
      // A longer lease raises it.
      await store.consume(id, claimed(5, 'b', 100_000));
      const raised = await admin.pttl(key);
      expect(raised).toBeGreaterThan(100_000 + LEASES_TTL_MARGIN_MS - 2_000);
      // A shorter one (leaseMs changed between deployments) keeps it: `b` is still live.
      await store.consume(id, claimed(5, 'c', 1_000));
      expect(await admin.pttl(key)).toBeGreaterThan(100_000 + LEASES_TTL_MARGIN_MS - 2_000);
      // A set found without expiry (written by hand) gets one at the next admission.
      await admin.persist(key);
      await store.consume(id, claimed(5, 'd', 1_000));
      expect(await admin.pttl(key)).toBeGreaterThan(0);
    });

    it('keeps lease ids as data: quotes, Lua, JSON and 64 characters go in and out verbatim', async () => {
      const id = await inserted();
      const leases = ["'); redis.call('FLUSHALL') --", '"]}{\\u0000', '%s%d%.17g', '__proto__', 'x'.repeat(64), '', 'lease with spaces\n'];
      for (const [i, lease] of leases.entries()) {
        expect(await store.consume(id, claimed(10, lease))).toEqual({ admitted: true, useCount: i + 1, inFlight: i + 1 });
      }
      expect((await admin.zrange(leasesKeyOf(ns, id), 0, -1)).sort()).toEqual([...leases].sort());
      for (const lease of leases) await store.release(id, lease);
      expect(await admin.exists(leasesKeyOf(ns, id))).toBe(0);
      expect(await admin.dbsize()).toBeGreaterThan(0); // nothing was flushed
    });
  });

  describe('refusals', () => {
    it('reports concurrency_limited last: after usage_exhausted, quota_exceeded and rate_limited', async () => {
      const id = await inserted();
      await store.consume(id, claimed(1, 'a'));
      expect(await store.consume(id, claimed(1, 'b'))).toEqual({ admitted: false, refusal: 'concurrency_limited', useCount: 1, inFlight: 1 });
      expect(await store.consume(id, claimed(1, 'b', 60_000, NOW, { maxUses: 1 }))).toEqual({ admitted: false, refusal: 'usage_exhausted', useCount: 1, inFlight: 1 });
      expect(await store.consume(id, claimed(1, 'b', 60_000, NOW, { rateLimit: { perDay: 1 } }))).toEqual({
        admitted: false,
        refusal: 'quota_exceeded',
        useCount: 1,
        dayCount: 1,
        inFlight: 1,
      });
      // A refusal took no slot: releasing `a` frees the only one.
      await store.release(id, 'a');
      expect(await store.consume(id, claimed(1, 'b'))).toEqual({ admitted: true, useCount: 2, inFlight: 1 });
    });

    it('neither reads nor writes the leases on a lifecycle refusal, and reports no inFlight', async () => {
      const id = await inserted({ status: 'suspended' });
      await admin.set(leasesKeyOf(ns, id), 'not a sorted set');
      expect(await store.consume(id, claimed(1, 'a'))).toEqual({ admitted: false, refusal: 'api_key_disabled', useCount: 0 });
      expect(await store.consume('no-such-id', claimed(1, 'a'))).toBeNull();
      expect(await admin.exists(leasesKeyOf(ns, 'no-such-id'))).toBe(0);
    });

    it.each([
      ['a string', (key: string) => admin.set(key, 'junk')],
      ['a hash', (key: string) => admin.hset(key, 'lease', '1')],
      ['a list', (key: string) => admin.rpush(key, 'lease')],
    ])('fails closed when the leases key holds %s: the consume rejects and counts nothing', async (_kind, write) => {
      const id = await inserted();
      await store.consume(id, { now: NOW, maxUses: null, rateLimit: null });
      await write(leasesKeyOf(ns, id));
      const before = await admin.hgetall(recordKeyOf(ns, id));
      await expect(store.consume(id, claimed(5, 'a', 60_000, NOW + 1))).rejects.toThrow(/WRONGTYPE keygate: the leases key .* is not a sorted set/);
      expect(await admin.hgetall(recordKeyOf(ns, id))).toEqual(before);
      // A consume without a claim does not look at it.
      expect(await store.consume(id, { now: NOW + 1, maxUses: null, rateLimit: null })).toEqual({ admitted: true, useCount: 2 });
    });

    it.each([
      ['limit', 'NaN', { limit: Number.NaN, lease: 'a', leaseMs: 1000 }],
      ['limit', 'missing', { limit: undefined as unknown as number, lease: 'a', leaseMs: 1000 }],
      ['leaseMs', 'Infinity', { limit: 1, lease: 'a', leaseMs: Number.POSITIVE_INFINITY }],
    ])('fails closed on a claim whose %s is %s', async (field, _value, concurrency) => {
      const id = await inserted();
      const before = await admin.hgetall(recordKeyOf(ns, id));
      await expect(store.consume(id, { now: NOW, maxUses: null, rateLimit: null, concurrency })).rejects.toThrow(`concurrency ${field}`);
      expect(await admin.hgetall(recordKeyOf(ns, id))).toEqual(before);
      expect(await admin.exists(leasesKeyOf(ns, id))).toBe(0);
    });

    it('takes no slot when a counter cannot be read (the error comes before any lease is written)', async () => {
      const id = await inserted();
      await admin.hset(recordKeyOf(ns, id), 'c:dayCount', 'lots');
      await expect(store.consume(id, claimed(5, 'a'))).rejects.toThrow('counter c:dayCount');
      expect(await admin.exists(leasesKeyOf(ns, id))).toBe(0);
    });
  });

  it('admits exactly 7 of 200 concurrent consumes with limit 7 from several connections; releases free slots', async () => {
    const clients = Array.from({ length: 5 }, () => server.client());
    try {
      await Promise.all(clients.map(ready));
      const stores = clients.map((redis) => new RedisStore({ client: redis, keyPrefix: ns }));
      const id = await inserted();
      const outcomes = await Promise.all(
        Array.from({ length: 200 }, (_, i) => stores[i % stores.length]!.consume(id, claimed(7, `lease-${i}`, 60_000, NOW + (i % 3)))),
      );
      const admitted = outcomes.flatMap((outcome, i) => (outcome?.admitted ? [i] : []));
      expect(admitted).toHaveLength(7);
      expect(admitted.map((i) => outcomes[i]!.inFlight).sort()).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(outcomes.filter((outcome) => !outcome?.admitted).every((outcome) => outcome?.refusal === 'concurrency_limited' && outcome.inFlight === 7)).toBe(true);
      expect(await admin.zcard(leasesKeyOf(ns, id))).toBe(7);
      expect(await admin.hget(recordKeyOf(ns, id), 'useCount')).toBe('7');

      // Three released: of 50 more concurrent consumes, exactly three are admitted.
      await Promise.all(admitted.slice(0, 3).map((i, n) => stores[n]!.release(id, `lease-${i}`)));
      const more = await Promise.all(Array.from({ length: 50 }, (_, i) => stores[i % stores.length]!.consume(id, claimed(7, `more-${i}`, 60_000, NOW + 5))));
      expect(more.filter((outcome) => outcome?.admitted)).toHaveLength(3);
      expect(await admin.zcard(leasesKeyOf(ns, id))).toBe(7);
      expect(await admin.hget(recordKeyOf(ns, id), 'useCount')).toBe('10');
    } finally {
      await Promise.all(clients.map((redis) => redis.quit()));
    }
  });

  it('agrees with decideConsume and leasesAfter on random sequences of claims, releases, clocks and limits', async () => {
    const random = prng(11_2026);
    const pick = <T>(values: readonly T[]): T => values[Math.floor(random() * values.length)] as T;
    const steps = [0, 0, 1, 99, 100, 250, 999, 1_000, 5_000, -300, -2_000];
    for (let run = 0; run < 30; run++) {
      const rateLimit: RateLimit | null = random() < 0.4 ? { perSecond: pick([1, 2, 5]), ...(random() < 0.5 ? { burst: pick([2, 4]) } : {}) } : random() < 0.3 ? { perMinute: pick([3, 8]) } : null;
      const maxUses = random() < 0.2 ? 10 + Math.floor(random() * 10) : null;
      const id = await inserted({ maxUses, rateLimit });
      let state: CounterState = initialCounters(0);
      let leases: Record<string, number> = {};
      const taken: string[] = [];
      let now = NOW;
      for (let i = 0; i < 40; i++) {
        now += pick(steps);
        const roll = random();
        if (roll < 0.25 && taken.length > 0) {
          // Release one taken lease (perhaps already lapsed or released).
          const lease = pick(taken);
          await store.release(id, lease);
          delete leases[lease];
          continue;
        }
        const request: ConsumeRequest = { now, maxUses, rateLimit };
        if (roll < 0.85) {
          // Now and then a lease id used before: it is overwritten, as in the reference.
          const lease = taken.length > 0 && random() < 0.1 ? pick(taken) : `r${run}-${i}`;
          request.concurrency = { limit: pick([1, 2, 3]), lease, leaseMs: pick([100, 500, 1_000, 2_500]) };
        }
        const at = countingInstant(state, now);
        const expected = decideConsume(state, request, request.concurrency ? Object.keys(liveLeases(leases, at)).length : 0);
        const got = await store.consume(id, request);
        expect({ run, i, outcome: got }).toEqual({ run, i, outcome: expected.outcome as ConsumeOutcome });
        if (request.concurrency) {
          if (expected.next) leases = leasesAfter(leases, request.concurrency, at);
          if (expected.next) taken.push(request.concurrency.lease);
        }
        if (expected.next) state = expected.next;
      }
    }
  });

  describe('through keygate', () => {
    const managers: Keygate[] = [];

    afterEach(async () => {
      await Promise.all(managers.splice(0).map((keys) => keys.close()));
    });

    function manager(): Keygate {
      const keys = keygate({ store: new RedisStore({ client, keyPrefix: ns }), prefix: 'pk_test', hashing: 'sha256' });
      managers.push(keys);
      return keys;
    }

    it('holds maxConcurrent slots across verify() calls, and answers 503 when the leases key is not a sorted set', async () => {
      const keys = manager();
      const { key, apiKey } = await keys.create({ name: 'concurrent', maxConcurrent: 2 });
      const first = await keys.verify(key);
      const second = await keys.verify(key);
      expect(first.ok && second.ok).toBe(true);
      const third = await keys.verify(key);
      expect(third.ok).toBe(false);
      if (!third.ok) expect(third.error.code).toBe('concurrency_limited');
      if (first.ok) await first.release?.();
      const fourth = await keys.verify(key);
      expect(fourth.ok).toBe(true);
      if (second.ok) await second.release?.();
      if (fourth.ok) await fourth.release?.();
      expect(await admin.exists(leasesKeyOf(ns, apiKey.id))).toBe(0);

      await admin.set(leasesKeyOf(ns, apiKey.id), 'junk');
      const useCount = await admin.hget(recordKeyOf(ns, apiKey.id), 'useCount');
      // keygate gives back the slot a failed consume might have taken; that ZREM fails too, and says so once.
      const warnings = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
      try {
        const broken = await keys.verify(key);
        expect(broken.ok).toBe(false);
        if (!broken.ok) {
          expect(broken.error.code).toBe('store_unavailable');
          expect(broken.error.status).toBe(503);
        }
        await sleep(50);
        expect(warnings.mock.calls.map((call) => (call[1] as { code?: string } | undefined)?.code)).toEqual(['KEYGATE_RELEASE_FAILED']);
      } finally {
        warnings.mockRestore();
      }
      expect(await admin.hget(recordKeyOf(ns, apiKey.id), 'useCount')).toBe(useCount);
    });
  });
});

describeWithRedis('RedisStore concurrency leases on Redis Cluster', () => {
  let servers: RedisClusterServers;
  let client: Cluster;
  const ns = 'cluster-leases:';

  beforeAll(async () => {
    servers = await RedisClusterServers.start();
    client = new Cluster(servers.startupNodes, { redisOptions: { autoResendUnfulfilledCommands: false } });
    await ready(client);
  }, 60_000);

  afterAll(async () => {
    await client?.quit();
    await servers?.stop();
  });

  it('keeps the leases key in the record key slot, whatever the id holds', async () => {
    const ids = [testRecord(NOW).id, testRecord(NOW).id, 'a}b', '{x}', 'x{y', 'lease}}', 'ü-id', 'id:leases'];
    for (const id of ids) {
      const recordSlot = await client.cluster('KEYSLOT', recordKeyOf(ns, id));
      expect({ id, slot: await client.cluster('KEYSLOT', leasesKeyOf(ns, id)) }).toEqual({ id, slot: recordSlot });
    }
  });

  it('consumes with a claim and releases on a Cluster, records in every slot', async () => {
    const store = new RedisStore({ client, keyPrefix: ns });
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const record = testRecord(NOW - 1000);
      await store.insert(record);
      ids.push(record.id);
    }
    for (const id of ids) {
      expect(await store.consume(id, claimed(1, 'a'))).toEqual({ admitted: true, useCount: 1, inFlight: 1 });
      expect(await store.consume(id, claimed(1, 'b'))).toEqual({ admitted: false, refusal: 'concurrency_limited', useCount: 1, inFlight: 1 });
      expect(await client.pttl(leasesKeyOf(ns, id))).toBeGreaterThan(60_000);
      await store.release(id, 'a');
      expect(await store.consume(id, claimed(1, 'b'))).toEqual({ admitted: true, useCount: 2, inFlight: 1 });
      expect(await store.consume(id, { now: NOW, maxUses: null, rateLimit: null })).toEqual({ admitted: true, useCount: 3 });
    }
  });
});
