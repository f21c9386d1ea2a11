/**
 * Soft delete and purge in RedisStore, observed on real servers (see the header comment of
 * src/stores/redis/redis-store.ts); the store contract covers what every store does:
 * - on both deployments: a purge removes every key of a record (record, leases, holds, keyPrefix
 *   index, list entries, deleted-set member) and nothing else; a record deleted again keeps its first
 *   `deletedAt` and a single deleted-set member; a record deleted exactly at `deletedBefore` stays;
 *   a reader racing a purge never finds an index entry naming a record that is gone; a `deletedAt`
 *   edited by hand into something unreadable fails closed; a record hash written before
 *   `deletedAt` existed is a live record; a page of `list` stays full across runs of deleted records
 *   longer than the store's read batch;
 * - standalone Redis: a delete is one EVALSHA and a record's purge one EVALSHA after its read; a
 *   purge the server refuses (no PUBLISH, a list key of another type) changes nothing;
 * - Redis Cluster: the ordered steps around a delete and a purge, and what a process dying
 *   between them leaves, which the next call completes.
 */
import Redis, { Cluster } from 'ioredis';
import { RedisStore } from 'keygate/redis';
import { decodeStoredRecord, type ApiKeyPatch, type ApiKeyRecord } from 'keygate';
import { testRecord } from '../helpers/records';
import { clientCommandsDuring, clusterDeployment, describeWithRedis, keyspaceOf, ready, RedisServer, standaloneDeployment } from '../helpers/redis-server';

jest.setTimeout(60_000);

const NOW = Date.UTC(2026, 0, 15, 12, 0, 0);
const SECOND = 1000;
const DAY = 86_400_000;
/** The offset of the store's sortable instants (TIME_OFFSET in redis-store.ts). */
const TIME_OFFSET = 8_640_000_000_000_000;


/** The patch keygate's `delete` sends. */
function deletion(at: number): ApiKeyPatch {
  return { status: 'revoked', deletedAt: new Date(at), updatedAt: new Date(at) };
}

/** A record's member in the deleted set, as the store writes it. */
function deletedMember(at: number, id: string): string {
  return `${String(at + TIME_OFFSET).padStart(17, '0')}:${id}`;
}

/** A consume with a concurrency claim, so the record gets a leases key. */
function claimed(now: number, lease: string) {
  return { now, maxUses: null, rateLimit: null, concurrency: { limit: 5, lease, leaseMs: 60_000 } };
}

/** A reservation of leased mode, so the record gets a holds key. */
function reservation(now: number, lease: string) {
  return { now, maxUses: null, rateLimit: { perSecond: 10 }, units: 3, lease, leaseMs: 60_000 };
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
  /** One plain client per node (a single one on standalone Redis), for KEYS. */
  nodes(): Redis[];
}

/** The tests both deployments pass; `setUp` registers the servers' hooks. */
function describeDeletePurge(deployment: string, setUp: () => Deployment): void {
  describe(`RedisStore delete and purge on ${deployment}`, () => {
    const context = setUp();
    let namespace = 0;
    let ns = '';

    beforeEach(() => {
      ns = `dp${++namespace}:`;
    });

    function store(): RedisStore {
      return new RedisStore({ client: context.client(), keyPrefix: ns });
    }

    const recordKey = (id: string) => `${ns}key:{${id}}`;
    const indexKey = (keyPrefix: string) => `${ns}kp:${keyPrefix}`;

    /** Every key of the namespace, on every node, with its content. */
    function keyspace(): Promise<Record<string, unknown>> {
      return keyspaceOf(context.nodes(), `${ns}*`);
    }

    it('purge removes every key of the record (record, leases, holds, index, lists, deleted member) and nothing else', async () => {
      const redisStore = store();
      const owners = { ownerId: 'o-1', tenantId: 't-1' };
      const survivor = testRecord(NOW - DAY, { ...owners, maxConcurrent: 5 });
      const deletedLater = testRecord(NOW - DAY, { ...owners, deletedAt: new Date(NOW + DAY) });
      await redisStore.insert(survivor);
      await redisStore.insert(deletedLater);
      await redisStore.consume(survivor.id, claimed(NOW - DAY, 'survivor-lease'));
      await redisStore.reserve(survivor.id, reservation(NOW - DAY, 'survivor-hold'));
      const before = await keyspace();

      const victim = testRecord(NOW - DAY, { ...owners, maxConcurrent: 5 });
      const insertedDeleted = testRecord(NOW - DAY, { ...owners, deletedAt: new Date(NOW - DAY) });
      await redisStore.insert(victim);
      await redisStore.insert(insertedDeleted);
      await redisStore.consume(victim.id, claimed(NOW - DAY, 'victim-lease'));
      await redisStore.reserve(victim.id, reservation(NOW - DAY, 'victim-hold'));
      await redisStore.update(victim.id, deletion(NOW - SECOND));
      const during = await keyspace();
      for (const record of [victim, insertedDeleted]) {
        expect(during[recordKey(record.id)]).toBeDefined();
        expect(during[indexKey(record.keyPrefix)]).toBe(record.id);
      }
      expect(during[`${recordKey(victim.id)}:leases`]).toBeDefined();
      expect(during[`${recordKey(victim.id)}:holds`]).toBeDefined();
      expect(during[`${recordKey(survivor.id)}:holds`]).toBeDefined();
      expect(during[`${ns}deleted`]).toEqual(
        [deletedMember(NOW - DAY, insertedDeleted.id), deletedMember(NOW - SECOND, victim.id), deletedMember(NOW + DAY, deletedLater.id)]
          .sort()
          .flatMap((member) => [member, '0']),
      );

      expect(await redisStore.purge({ deletedBefore: new Date(NOW) })).toBe(2);
      expect(await keyspace()).toEqual(before);
    });

    it('a record deleted again keeps its first deletedAt, and a single member in the deleted set', async () => {
      const redisStore = store();
      const record = testRecord(NOW - DAY);
      await redisStore.insert(record);
      await redisStore.update(record.id, deletion(NOW));
      await redisStore.update(record.id, deletion(NOW + DAY));
      await redisStore.update(record.id, { deletedAt: new Date(NOW - DAY), updatedAt: new Date(NOW + 2 * DAY) });
      expect((await redisStore.findById(record.id))?.deletedAt).toEqual(new Date(NOW));
      expect(await context.client().zrange(`${ns}deleted`, 0, -1)).toEqual([deletedMember(NOW, record.id)]);
      // The later deletes did not postpone its purge, nor the earlier one hasten it.
      expect(await redisStore.purge({ deletedBefore: new Date(NOW) })).toBe(0);
      expect(await redisStore.purge({ deletedBefore: new Date(NOW + 1) })).toBe(1);
      expect(await keyspace()).toEqual({});
    });

    it('a record deleted exactly at deletedBefore stays; one millisecond later it goes', async () => {
      const redisStore = store();
      const atInstant = testRecord(NOW - DAY);
      const justBefore = testRecord(NOW - DAY);
      await redisStore.insert(atInstant);
      await redisStore.insert(justBefore);
      await redisStore.update(atInstant.id, deletion(NOW));
      await redisStore.update(justBefore.id, deletion(NOW - 1));
      expect(await redisStore.purge({ deletedBefore: new Date(NOW) })).toBe(1);
      expect(await redisStore.findById(justBefore.id)).toBeNull();
      expect((await redisStore.findById(atInstant.id))?.deletedAt).toEqual(new Date(NOW));
      expect(await redisStore.findByKeyPrefix(atInstant.keyPrefix)).not.toBeNull();
      expect(await redisStore.purge({ deletedBefore: new Date(NOW + 1) })).toBe(1);
      expect(await keyspace()).toEqual({});
    });

    it('a reader racing a purge never finds an index entry naming a record that is gone', async () => {
      const redisStore = store();
      const client = context.client();
      const records = Array.from({ length: 60 }, (_, i) => testRecord(NOW - DAY + i, { ownerId: `o-${i % 3}`, deletedAt: new Date(NOW - DAY) }));
      await Promise.all(records.map((record) => redisStore.insert(record)));
      let purging = true;
      const dangling: string[] = [];
      let reads = 0;
      // The record is read before its index: the index goes first (or with it), so once the record
      // is gone the index must be gone too, whatever the reader interleaves with.
      const reader = async () => {
        while (purging) {
          for (const record of records) {
            const exists = await client.exists(recordKey(record.id));
            const index = await client.get(indexKey(record.keyPrefix));
            if (exists === 0 && index !== null) dangling.push(record.id);
            const found = await redisStore.findByKeyPrefix(record.keyPrefix);
            if (found !== null && found.id !== record.id) dangling.push(record.id);
            reads++;
          }
        }
      };
      const readers = [reader(), reader(), reader()];
      const purged = await redisStore.purge({ deletedBefore: new Date(NOW) });
      purging = false;
      await Promise.all(readers);
      expect(dangling).toEqual([]);
      expect(reads).toBeGreaterThan(0);
      expect(purged).toBe(records.length);
      expect(await keyspace()).toEqual({});
    });

    it.each([
      ['text that is not JSON', 'yesterday'],
      ['a JSON string', '"2026-01-01"'],
      ['true', 'true'],
      ['an object', '{}'],
      ['a number beyond any Date', '1e400'],
      ['a number past the last Date', '8640000000000001'],
    ])('a deletedAt edited by hand into %s fails closed: refused by the decoder, listed, never purged', async (_title, garbage) => {
      const redisStore = store();
      const record = testRecord(NOW - DAY);
      await redisStore.insert(record);
      await redisStore.update(record.id, deletion(NOW - DAY));
      await context.client().hset(recordKey(record.id), 'deletedAt', garbage);
      const before = await keyspace();

      // keygate never reads it as a record: findById either refuses it or returns what the decoder refuses.
      const invalid = { code: 'invalid_record', field: 'deletedAt' };
      const readBack = await redisStore.findById(record.id).then(
        (found) => {
          expect(found).not.toBeNull();
          expect(() => decodeStoredRecord(found as ApiKeyRecord)).toThrow(expect.objectContaining(invalid) as Error);
          return 'decoder';
        },
        (error: unknown) => {
          expect(error).toMatchObject(invalid);
          return 'store';
        },
      );
      // Not hidden from list on a guess: listed (for keygate's decoder to refuse), or list refuses.
      if (readBack === 'decoder') expect((await redisStore.list({ limit: 10 })).map((found) => found.id)).toEqual([record.id]);
      else await expect(redisStore.list({ limit: 10 })).rejects.toMatchObject(invalid);
      // Never removed on a guess: the record and its member stay.
      expect(await redisStore.purge({ deletedBefore: new Date(NOW + 365 * DAY) })).toBe(0);
      expect(await keyspace()).toEqual(before);

      // Deleting it again writes a readable deletedAt over the unreadable one; then it can go.
      expect((await redisStore.update(record.id, deletion(NOW)))?.deletedAt).toEqual(new Date(NOW));
      expect(await redisStore.purge({ deletedBefore: new Date(NOW + 1) })).toBe(1);
      expect(await keyspace()).toEqual({});
    });

    it('a record hash written before deletedAt existed is a live record: listed, not purged, deleted and purged as any other', async () => {
      const redisStore = store();
      const client = context.client();
      // As the store of the previous release laid it out: no deletedAt field, no deleted set.
      const id = '2f0c7c4e-5a61-4f4e-8d3b-0b4c1e9a7d21';
      const keyPrefix = 'pk_test_legacy00000002';
      await client.hset(recordKey(id), {
        id: JSON.stringify(id),
        keyPrefix: JSON.stringify(keyPrefix),
        keyHash: '"$hmac-sha256$x"',
        name: '"legacy"',
        ownerId: '"owner-1"',
        status: '"active"',
        scopes: '[]',
        allowedIps: '[]',
        maxUses: 'null',
        useCount: '0',
        rateLimit: 'null',
        expiresAt: 'null',
        createdAt: String(NOW - DAY),
        updatedAt: String(NOW - DAY),
        lastUsedAt: 'null',
        revokedAt: 'null',
        metadata: '{}',
        tags: '[]',
      });
      await client.set(indexKey(keyPrefix), id);
      const member = `${String(NOW - DAY + TIME_OFFSET).padStart(17, '0')}:${id}`;
      await client.zadd(`${ns}list`, 0, member);
      await client.zadd(`${ns}list:owner:owner-1`, 0, member);

      const found = await redisStore.findById(id);
      expect(found?.deletedAt).toBeNull();
      expect(decodeStoredRecord(found as ApiKeyRecord).deletedAt).toBeNull();
      expect((await redisStore.list({ limit: 10 })).map((record) => record.id)).toEqual([id]);
      expect((await redisStore.list({ ownerId: 'owner-1', limit: 10 })).map((record) => record.id)).toEqual([id]);
      expect(await redisStore.purge({ deletedBefore: new Date(NOW + DAY) })).toBe(0);
      expect(await redisStore.findById(id)).toStrictEqual(found);

      await redisStore.update(id, deletion(NOW));
      expect(await redisStore.list({ limit: 10 })).toEqual([]);
      expect((await redisStore.list({ ownerId: 'owner-1', includeDeleted: true, limit: 10 })).map((record) => record.id)).toEqual([id]);
      expect(await redisStore.purge({ deletedBefore: new Date(NOW + 1) })).toBe(1);
      expect(await keyspace()).toEqual({});
    });

    it('a page stays full across more deleted records than the store reads at a time', async () => {
      const redisStore = store();
      // 3 live, 450 deleted (over two of list()'s batches of 200), 3 live, in list order.
      const records = Array.from({ length: 456 }, (_, i) =>
        testRecord(NOW - DAY + i, { ownerId: 'o-1', ...(i >= 3 && i < 453 ? { deletedAt: new Date(NOW - DAY) } : {}) }),
      );
      await Promise.all(records.map((record) => redisStore.insert(record)));
      const live = records.filter((record) => record.deletedAt === null).map((record) => record.id);
      expect((await redisStore.list({ limit: 4 })).map((record) => record.id)).toEqual(live.slice(0, 4));
      expect((await redisStore.list({ ownerId: 'o-1', limit: 6 })).map((record) => record.id)).toEqual(live);
      const third = records[2] as ApiKeyRecord;
      expect((await redisStore.list({ after: { createdAt: third.createdAt, id: third.id }, limit: 2 })).map((record) => record.id)).toEqual(live.slice(3, 5));
      expect(await redisStore.list({ includeDeleted: true, limit: 1_000 })).toHaveLength(456);
      expect(await redisStore.purge({ deletedBefore: new Date(NOW) })).toBe(450);
      expect((await redisStore.list({ includeDeleted: true, limit: 1_000 })).map((record) => record.id)).toEqual(live);
    });
  });
}

describeWithRedis('delete and purge on both deployments', () => {
  describeDeletePurge('standalone Redis', () => {
    return standaloneDeployment();
  });

  describeDeletePurge('Redis Cluster', () => {
    return clusterDeployment();
  });
});

describeWithRedis('delete and purge on standalone Redis: one step each', () => {
  const NS = 'dp-standalone:';
  let server: RedisServer;
  let client: Redis;
  let admin: Redis;

  beforeAll(async () => {
    server = await RedisServer.start();
    client = server.client();
    admin = server.client();
    await Promise.all([ready(client), ready(admin)]);
  });

  afterEach(async () => {
    await admin.flushall();
  });

  afterAll(async () => {
    await client?.quit();
    await admin?.quit();
    await server?.stop();
  });

  function store(redis: Redis = client): RedisStore {
    return new RedisStore({ client: redis, keyPrefix: NS });
  }

  /** The commands clients sent while `body` ran (not those scripts ran inside Redis). */
  function commandsDuring(body: () => Promise<unknown>): Promise<string[]> {
    return clientCommandsDuring(admin, body);
  }

  function keyspace(): Promise<Record<string, unknown>> {
    return keyspaceOf([admin], `${NS}*`);
  }

  /** Loads the scripts (a script's first run is EVALSHA, NOSCRIPT, then EVAL). */
  async function warmUp(redisStore: RedisStore): Promise<void> {
    const record = testRecord(NOW - DAY, { ownerId: 'warm-up' });
    await redisStore.insert(record);
    await redisStore.update(record.id, deletion(NOW - DAY));
    await redisStore.purge({ deletedBefore: new Date(NOW) });
  }

  it('a delete is one EVALSHA, the deleted-set member and the invalidation message included; so is deleting again', async () => {
    const redisStore = store();
    await warmUp(redisStore);
    const record = testRecord(NOW - DAY, { ownerId: 'o-1', tenantId: 't-1' });
    await redisStore.insert(record);
    expect(await commandsDuring(() => redisStore.update(record.id, deletion(NOW)))).toEqual(['evalsha']);
    expect(await admin.zrange(`${NS}deleted`, 0, -1)).toEqual([deletedMember(NOW, record.id)]);
    expect(await commandsDuring(() => redisStore.update(record.id, deletion(NOW + DAY)))).toEqual(['evalsha']);
    expect(await admin.zrange(`${NS}deleted`, 0, -1)).toEqual([deletedMember(NOW, record.id)]);
  });

  it("a record's purge is its read (the record and its usage days, sent together) and one EVALSHA, after one read of the deleted set", async () => {
    const redisStore = store();
    await warmUp(redisStore);
    const record = testRecord(NOW - DAY, { ownerId: 'o-1', tenantId: 't-1', deletedAt: new Date(NOW - DAY) });
    await redisStore.insert(record);
    expect(await commandsDuring(() => redisStore.purge({ deletedBefore: new Date(NOW) }))).toEqual(['zrangebylex', 'hgetall', 'zrange', 'evalsha']);
    expect(await keyspace()).toEqual({});
  });

  it('a user without PUBLISH can neither delete nor purge: refused with nothing changed', async () => {
    const redisStore = store();
    const live = testRecord(NOW - DAY, { ownerId: 'o-1' });
    const deleted = testRecord(NOW - DAY, { ownerId: 'o-1', deletedAt: new Date(NOW - DAY) });
    await redisStore.insert(live);
    await redisStore.insert(deleted);
    const before = await keyspace();
    await admin.call('ACL', 'SETUSER', 'dp-no-publish', 'reset', 'on', '>dp-pw', '~*', '&*', '+@all', '-publish');
    const limited = server.client({ username: 'dp-no-publish', password: 'dp-pw' });
    try {
      await ready(limited);
      const refused = /NOPERM|can't run this command/;
      expect((await rejection(store(limited).update(live.id, deletion(NOW)))).message).toMatch(refused);
      expect((await rejection(store(limited).purge({ deletedBefore: new Date(NOW) }))).message).toMatch(refused);
    } finally {
      limited.disconnect();
      await admin.call('ACL', 'DELUSER', 'dp-no-publish');
    }
    expect(await keyspace()).toEqual(before);
  });

  it('a purge whose list key holds something else is refused before any write', async () => {
    const redisStore = store();
    const record = testRecord(NOW - DAY, { ownerId: 'o-1', deletedAt: new Date(NOW - DAY) });
    await redisStore.insert(record);
    await admin.del(`${NS}list:owner:o-1`);
    await admin.set(`${NS}list:owner:o-1`, 'not a sorted set');
    const before = await keyspace();
    expect((await rejection(redisStore.purge({ deletedBefore: new Date(NOW) }))).message).toMatch(/WRONGTYPE/);
    expect(await keyspace()).toEqual(before);
  });

  it('a deleted-set member that is not the record\'s own (edited by hand) is replaced by it, and judged by the record', async () => {
    const redisStore = store();
    const record = testRecord(NOW - DAY);
    await redisStore.insert(record);
    await redisStore.update(record.id, deletion(NOW + DAY));
    await admin.zrem(`${NS}deleted`, deletedMember(NOW + DAY, record.id));
    await admin.zadd(`${NS}deleted`, 0, deletedMember(NOW - DAY, record.id));
    // Found through the stale member, kept by its own deletedAt, which now names it.
    expect(await redisStore.purge({ deletedBefore: new Date(NOW) })).toBe(0);
    expect(await redisStore.findById(record.id)).not.toBeNull();
    expect(await admin.zrange(`${NS}deleted`, 0, -1)).toEqual([deletedMember(NOW + DAY, record.id)]);
    // A member of a record not deleted, or of no record, goes (no delete is ever half done here).
    const live = testRecord(NOW - DAY);
    await redisStore.insert(live);
    await admin.zadd(`${NS}deleted`, 0, deletedMember(NOW - DAY, live.id), 0, deletedMember(NOW - DAY, 'no-such-id'));
    expect(await redisStore.purge({ deletedBefore: new Date(NOW) })).toBe(0);
    expect(await admin.zrange(`${NS}deleted`, 0, -1)).toEqual([deletedMember(NOW + DAY, record.id)]);
    expect((await redisStore.findById(live.id))?.deletedAt).toBeNull();
  });
});

describeWithRedis('delete and purge on Redis Cluster: the ordered steps', () => {
  const cluster = clusterDeployment();
  let namespace = 0;
  let ns = '';

  beforeEach(() => {
    ns = `dp-cluster${++namespace}:`;
  });

  function store(redis: Cluster = cluster.client()): RedisStore {
    return new RedisStore({ client: redis, keyPrefix: ns });
  }

  const deletedSet = () => cluster.client().zrange(`${ns}deleted`, 0, -1);

  function keyspace(): Promise<Record<string, unknown>> {
    return keyspaceOf(cluster.nodes(), `${ns}*`);
  }

  it('a delete adds its member; a delete of an unknown id, or a refused one, takes it back', async () => {
    const redisStore = store();
    const record = testRecord(NOW - DAY);
    await redisStore.insert(record);
    expect(await redisStore.update('no-such-id', deletion(NOW))).toBeNull();
    expect(await deletedSet()).toEqual([]);
    await redisStore.update(record.id, deletion(NOW));
    expect(await deletedSet()).toEqual([deletedMember(NOW, record.id)]);
    // Refused (a revoked key cannot be reactivated): its member for NOW + DAY is taken back.
    await expect(redisStore.update(record.id, { status: 'active', deletedAt: new Date(NOW + DAY), updatedAt: new Date(NOW + DAY) })).rejects.toMatchObject({
      code: 'invalid_argument',
      field: 'status',
    });
    // Deleted again later: the member of the first deletedAt stays, the later one is taken back.
    await redisStore.update(record.id, deletion(NOW + 2 * DAY));
    expect(await deletedSet()).toEqual([deletedMember(NOW, record.id)]);
  });

  it('a member whose record is not deleted (a delete that died before its script) is kept until the record is deleted', async () => {
    const redisStore = store();
    const record = testRecord(NOW - DAY);
    await redisStore.insert(record);
    await cluster.client().zadd(`${ns}deleted`, 0, deletedMember(NOW - DAY, record.id));
    const before = await keyspace();
    expect(await redisStore.purge({ deletedBefore: new Date(NOW + DAY) })).toBe(0);
    expect(await keyspace()).toEqual(before);
    // The delete, done again, replaces the member with the record's own and the record can go.
    await redisStore.update(record.id, deletion(NOW));
    expect(await redisStore.purge({ deletedBefore: new Date(NOW + DAY) })).toBe(1);
    expect(await keyspace()).toEqual({});
  });

  it('a member whose record is gone (an insert that died before its record) is removed, and not counted', async () => {
    const redisStore = store();
    await cluster.client().zadd(`${ns}deleted`, 0, deletedMember(NOW - DAY, 'never-written'));
    expect(await redisStore.purge({ deletedBefore: new Date(NOW) })).toBe(0);
    expect(await keyspace()).toEqual({});
  });

  it('a purge that died after removing the index and list entries is completed by the next one', async () => {
    const redisStore = store();
    const record = testRecord(NOW - DAY, { ownerId: 'o-1', tenantId: 't-1', maxConcurrent: 5 });
    await redisStore.insert(record);
    await redisStore.consume(record.id, claimed(NOW - DAY, 'lease'));
    await redisStore.update(record.id, deletion(NOW - SECOND));
    // Steps (2) and (3) done, (4) and (5) not: the record without index or list entries.
    const member = `${String(record.createdAt.getTime() + TIME_OFFSET).padStart(17, '0')}:${record.id}`;
    await cluster.client().del(`${ns}kp:${record.keyPrefix}`);
    await Promise.all([`${ns}list`, `${ns}list:owner:o-1`, `${ns}list:tenant:t-1`].map((list) => cluster.client().zrem(list, member)));
    expect(await redisStore.findByKeyPrefix(record.keyPrefix)).toBeNull();
    expect((await redisStore.findById(record.id))?.deletedAt).toEqual(new Date(NOW - SECOND));

    expect(await redisStore.purge({ deletedBefore: new Date(NOW) })).toBe(1);
    expect(await keyspace()).toEqual({});
  });

  it('a user without PUBLISH can neither delete nor purge: refused with nothing changed', async () => {
    const redisStore = store();
    const live = testRecord(NOW - DAY, { ownerId: 'o-1' });
    const deleted = testRecord(NOW - DAY, { ownerId: 'o-1', deletedAt: new Date(NOW - DAY) });
    await redisStore.insert(live);
    await redisStore.insert(deleted);
    const before = await keyspace();
    const user = `dp-no-publish-${namespace}`;
    let limited: Cluster | undefined;
    try {
      await Promise.all(cluster.nodes().map((node) => node.call('ACL', 'SETUSER', user, 'reset', 'on', '>dp-pw', '~*', '&*', '+@all', '-publish')));
      limited = new Cluster(cluster.servers().startupNodes, { redisOptions: { username: user, password: 'dp-pw', autoResendUnfulfilledCommands: false } });
      await ready(limited);
      const refused = /NOPERM|can't run this command/;
      expect((await rejection(store(limited).update(live.id, deletion(NOW)))).message).toMatch(refused);
      expect((await rejection(store(limited).purge({ deletedBefore: new Date(NOW) }))).message).toMatch(refused);
    } finally {
      await limited?.quit();
      await Promise.all(cluster.nodes().map((node) => node.call('ACL', 'DELUSER', user)));
    }
    expect(await keyspace()).toEqual(before);
  });
});
