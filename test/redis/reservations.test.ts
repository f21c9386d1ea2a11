/**
 * Reservations of leased mode (`reserve`, `settle`) in the Redis store, on real servers (the generic
 * behaviour, and agreement with decideReservation / decideSettlement, are the store contract's;
 * this is what only Redis can show):
 * - a key's holds are a hash `<record key>:holds` in the record's hash slot, each hold written as
 *   `until,units,tokens,at` exactly (fractional instants included), whatever the lease's name;
 * - a reservation or a settlement is one EVALSHA; a refusal runs no write, lapsed holds included;
 *   neither publishes on the invalidation channel nor changes updatedAt;
 * - lapsed holds are dropped by an admitted reservation and by a settlement, and the hash goes
 *   with its last hold; it expires a margin past its newest hold, never lowered;
 * - a holds key of another type, or a hold that cannot be read, fails closed: nothing counted;
 * - arguments that are not numbers are refused before anything is counted; an unknown key writes
 *   nothing;
 * - reservations and consumes from several connections at once never grant more than the limits.
 */
import Redis, { Cluster } from 'ioredis';
import { RedisStore } from 'keygate/redis';
import type { ReserveRequest, Settlement } from '../../src/stores/store';
import type { RateLimit } from '../../src/types';
import { HOLDS_TTL_MARGIN_MS } from '../../src/stores/redis/scripts';
import { testRecord } from '../helpers/records';
import { clusterDeployment, commandsRunDuring, describeWithRedis, keyspaceOf, ready, standaloneDeployment } from '../helpers/redis-server';

jest.setTimeout(60_000);

const NOW = Date.UTC(2026, 0, 15, 12, 0, 0);
const SECOND = 1000;

let leases = 0;

function reservation(now: number, units: number, extra: Partial<ReserveRequest> = {}): ReserveRequest {
  return { now, units, maxUses: null, rateLimit: null, lease: `hold-${++leases}`, leaseMs: 10 * SECOND, ...extra };
}

function settlement(lease: string, unspent: number, now: number, rateLimit: RateLimit | null = null): Settlement {
  return { lease, unspent, now, rateLimit };
}

/** A stored hold's value as the numbers it holds. */
function numbersOf(value: string | null | undefined): number[] {
  return String(value).split(',').map(Number);
}

async function rejection(operation: Promise<unknown>): Promise<Error> {
  return operation.then(
    () => {
      throw new Error('the call succeeded');
    },
    (error: unknown) => error as Error,
  );
}

interface Deployment {
  /** The client the stores use. */
  client(): Redis | Cluster;
  /** One plain client per node (a single one on standalone Redis), for KEYS, MONITOR and CLUSTER KEYSLOT. */
  nodes(): Redis[];
  cluster: boolean;
}

function describeReservations(deployment: string, setUp: () => Deployment): void {
  describe(`RedisStore reservations on ${deployment}`, () => {
    const context = setUp();
    const itOnCluster = context.cluster ? it : it.skip;
    const itOnStandalone = context.cluster ? it.skip : it;
    let namespace = 0;
    let ns = '';
    let store: RedisStore;

    beforeEach(() => {
      ns = `hold${++namespace}:`;
      store = new RedisStore({ client: context.client(), keyPrefix: ns });
    });

    const recordKey = (id: string) => `${ns}key:{${id}}`;
    const holdsKey = (id: string) => `${ns}key:{${id}}:holds`;
    /** The store's client, for reading keys directly (a Cluster client sends each to its node). */
    const admin = () => context.client();

    function keyspace(): Promise<Record<string, unknown>> {
      return keyspaceOf(context.nodes(), `${ns}*`);
    }

    async function inserted(overrides: Parameters<typeof testRecord>[1] = {}): Promise<string> {
      const record = testRecord(NOW - SECOND, overrides);
      await store.insert(record);
      return record.id;
    }

    it('keeps each hold as until,units,tokens,at, exactly, in a hash beside the record, whatever the lease is named', async () => {
      const id = await inserted();
      const now = NOW + 0.25;
      const leaseMs = 1000.1;
      const names = ['__proto__', 'a,b', 'ключ 🔑', ''];
      for (const lease of names) {
        expect(await store.reserve(id, reservation(now, 2, { lease, leaseMs, rateLimit: { perSecond: 100 } }))).toMatchObject({ admitted: true, granted: 2 });
      }
      const stored = await admin().hgetall(holdsKey(id));
      expect(Object.keys(stored).sort()).toEqual([...names].sort());
      // The same double the pure function computes, not a 14-digit rounding of it.
      for (const lease of names) expect(numbersOf(stored[lease])).toEqual([now + leaseMs, 2, 2, now]);
      // Without perSecond a hold holds no tokens.
      const plain = await inserted();
      const held = reservation(NOW, 3);
      await store.reserve(plain, held);
      expect(numbersOf(await admin().hget(holdsKey(plain), held.lease))).toEqual([NOW + held.leaseMs, 3, 0, NOW]);
    });

    itOnCluster("keeps a key's holds in its record's hash slot", async () => {
      const id = await inserted();
      await store.reserve(id, reservation(NOW, 1));
      const node = context.nodes()[0]!;
      expect(await node.cluster('KEYSLOT', holdsKey(id))).toBe(await node.cluster('KEYSLOT', recordKey(id)));
    });

    itOnStandalone('sends a reservation and a settlement as one EVALSHA each; a refusal writes nothing, and neither publishes', async () => {
      const id = await inserted();
      const monitorClient = context.nodes()[0]!;
      const warmUp = reservation(NOW, 1, { maxUses: 3 });
      await store.reserve(id, warmUp); // loads the scripts (EVALSHA, NOSCRIPT, EVAL)
      await store.settle(id, settlement(warmUp.lease, 1, NOW));
      const updatedAt = await admin().hget(recordKey(id), 'updatedAt');

      const first = reservation(NOW, 3, { maxUses: 3, leaseMs: 100 });
      const admitted = await commandsRunDuring(monitorClient, async () => {
        expect(await store.reserve(id, first)).toEqual({ admitted: true, granted: 3, useCount: 3 });
      });
      expect(admitted.filter((command) => command.source === 'client').map((command) => command.args[0]?.toLowerCase())).toEqual(['evalsha']);
      expect(admitted.some((command) => command.args[0]?.toLowerCase() === 'publish')).toBe(false);

      // At NOON + 1 s the first hold has lapsed; refused, the reservation drops nothing.
      const before = await keyspace();
      const refused = await commandsRunDuring(monitorClient, async () => {
        expect(await store.reserve(id, reservation(NOW + SECOND, 1, { maxUses: 3 }))).toEqual({ admitted: false, refusal: 'usage_exhausted', granted: 0, useCount: 3 });
      });
      expect(refused.filter((command) => command.source === 'lua').map((command) => command.args[0]?.toLowerCase())).toEqual(['hmget', 'hgetall']);
      expect(await keyspace()).toEqual(before);

      const settled = await commandsRunDuring(monitorClient, () => store.settle(id, settlement(first.lease, 2, NOW + SECOND)));
      expect(settled.filter((command) => command.source === 'client').map((command) => command.args[0]?.toLowerCase())).toEqual(['evalsha']);
      expect(settled.some((command) => command.args[0]?.toLowerCase() === 'publish')).toBe(false);
      expect(await admin().hget(recordKey(id), 'updatedAt')).toBe(updatedAt);
      expect((await store.findById(id))?.useCount).toBe(1);
    });

    it('drops lapsed holds on an admitted reservation and on a settlement, and the hash with its last hold', async () => {
      const id = await inserted();
      const short = reservation(NOW, 1, { leaseMs: 100 });
      const long = reservation(NOW, 1, { leaseMs: 10 * SECOND });
      await store.reserve(id, short);
      await store.reserve(id, long);
      // Counted at NOON + 100: `short` lapses exactly then (until > at is live), and goes.
      const third = reservation(NOW + 100, 1);
      await store.reserve(id, third);
      expect(Object.keys(await admin().hgetall(holdsKey(id))).sort()).toEqual([long.lease, third.lease].sort());
      const fourth = reservation(NOW + 100, 1, { leaseMs: 50 });
      await store.reserve(id, fourth);
      // Settling `long` at NOON + 200 drops `fourth` too (lapsed at NOON + 150).
      await store.settle(id, settlement(long.lease, 1, NOW + 200));
      expect(Object.keys(await admin().hgetall(holdsKey(id)))).toEqual([third.lease]);
      await store.settle(id, settlement(third.lease, 0, NOW + 200));
      expect(await admin().exists(holdsKey(id))).toBe(0);
      expect((await store.findById(id))?.useCount).toBe(3);
    });

    it('gives the holds hash an expiry a margin past its newest hold, never lowered', async () => {
      const id = await inserted();
      await store.reserve(id, reservation(NOW, 1, { leaseMs: 60 * SECOND }));
      const ttl = await admin().pttl(holdsKey(id));
      expect(ttl).toBeGreaterThan(60 * SECOND + HOLDS_TTL_MARGIN_MS - 5 * SECOND);
      expect(ttl).toBeLessThanOrEqual(60 * SECOND + HOLDS_TTL_MARGIN_MS);
      await store.reserve(id, reservation(NOW, 1, { leaseMs: SECOND }));
      expect(await admin().pttl(holdsKey(id))).toBeGreaterThan(30 * SECOND + HOLDS_TTL_MARGIN_MS);
      // A leaseMs beyond what Redis accepts as an expiry is capped, not an error.
      await store.reserve(id, reservation(NOW, 1, { leaseMs: 1e300 }));
      expect(await admin().pttl(holdsKey(id))).toBeGreaterThan(1e14);
    });

    it('fails closed on a holds key of another type or a hold it cannot read: nothing counted, nothing given back', async () => {
      const id = await inserted();
      const held = reservation(NOW, 2);
      await store.reserve(id, held);
      const good = await admin().hget(holdsKey(id), held.lease);
      for (const bad of ['1,2,3', 'nan,2,2,1', '1,-1,0,1', '1,2,-1,1', 'inf,2,0,1', '1,2,0,x', '']) {
        await admin().hset(holdsKey(id), 'hand-edited', bad);
        expect((await rejection(store.reserve(id, reservation(NOW, 1)))).message).toMatch(/hold/);
        expect((await rejection(store.settle(id, settlement(held.lease, 2, NOW)))).message).toMatch(/hold/);
        expect((await store.findById(id))?.useCount).toBe(2);
        expect(await admin().hget(holdsKey(id), held.lease)).toBe(good);
      }
      await admin().del(holdsKey(id));
      await admin().set(holdsKey(id), 'not a hash');
      expect((await rejection(store.reserve(id, reservation(NOW, 1)))).message).toMatch(/not a hash/);
      expect((await rejection(store.settle(id, settlement(held.lease, 2, NOW)))).message).toMatch(/not a hash/);
      expect((await store.findById(id))?.useCount).toBe(2);
      expect(await admin().get(holdsKey(id))).toBe('not a hash');
    });

    it('refuses units, leaseMs or unspent that are not numbers, and a lease that is not a string, before counting anything', async () => {
      const id = await inserted();
      for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, undefined]) {
        await expect(store.reserve(id, { ...reservation(NOW, 1), units: bad as number })).rejects.toThrow(/units/);
        await expect(store.reserve(id, { ...reservation(NOW, 1), leaseMs: bad as number })).rejects.toThrow(/leaseMs/);
      }
      await expect(store.reserve(id, { ...reservation(NOW, 1), lease: 7 as unknown as string })).rejects.toThrow(TypeError);
      const held = reservation(NOW, 2);
      await store.reserve(id, held);
      await expect(store.settle(id, settlement(held.lease, Number.NaN, NOW))).rejects.toThrow(/unspent/);
      await expect(store.settle(id, { ...settlement(held.lease, 1, NOW), lease: undefined as unknown as string })).rejects.toThrow(TypeError);
      expect((await store.findById(id))?.useCount).toBe(2);
      expect(Object.keys(await admin().hgetall(holdsKey(id)))).toEqual([held.lease]);
    });

    it('writes nothing for an unknown key: reserve answers null, settle does nothing', async () => {
      expect(await store.reserve('no-such-key', reservation(NOW, 3, { rateLimit: { perSecond: 5 } }))).toBeNull();
      await store.settle('no-such-key', settlement('hold-x', 3, NOW, { perSecond: 5 }));
      expect(await keyspace()).toEqual({});
    });

    it('never grants more than the limits to reservations and consumes sent at once from several connections', async () => {
      const id = await inserted();
      const clients = context.cluster
        ? [0, 1, 2].map(() => (context.client() as Cluster).duplicate())
        : [0, 1, 2].map(() => (context.client() as Redis).duplicate());
      try {
        await Promise.all(clients.map((client) => ready(client)));
        const stores = clients.map((client) => new RedisStore({ client, keyPrefix: ns }));
        const limits: RateLimit = { perDay: 1_000, perSecond: 500, burst: 500 };
        const calls = Array.from({ length: 150 }, (_, i) => {
          const each = stores[i % stores.length]!;
          return i % 4 === 3
            ? each.consume(id, { now: NOW, maxUses: 157, rateLimit: limits }).then((outcome) => (outcome?.admitted ? 1 : 0))
            : each.reserve(id, reservation(NOW, 1 + (i % 5), { maxUses: 157, rateLimit: limits })).then((outcome) => outcome?.granted ?? 0);
        });
        const counted = (await Promise.all(calls)).reduce((sum, n) => sum + n, 0);
        expect(counted).toBe(157);
        expect((await store.findById(id))?.useCount).toBe(157);
      } finally {
        await Promise.all(clients.map((client) => client.quit()));
      }
    });
  });
}

describeWithRedis('RedisStore reservations of leased mode on both deployments', () => {
  describeReservations('standalone Redis', () => ({ ...standaloneDeployment(), cluster: false }));
  describeReservations('Redis Cluster', () => ({ ...clusterDeployment(), cluster: true }));
});
