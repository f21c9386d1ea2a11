/**
 * What RedisStore makes atomic on each deployment, observed on real servers (see the header
 * comment of src/stores/redis/redis-store.ts):
 * - standalone Redis: insert, rotate and update are one script each (MONITOR sees one EVALSHA),
 *   and a refused insert or rotate changes nothing, not even a published message;
 * - standalone and Cluster: the update script stamps a revocation (`revokedAt` = the earlier of
 *   the stored one and `updatedAt`) and publishes the change to other clients itself;
 * - data laid out by the previous version of the store is still read, rotated and counted.
 */
import Redis, { Cluster } from 'ioredis';
import { RedisStore } from 'keygate/redis';
import { remainingUses, replacementFor, revokedAtAfterUpdate, type ApiKeyRecord } from 'keygate';
import { CREATE_FIELDS } from '../../src/record/schema';
import { testRecord } from '../helpers/records';
import { clientCommandsDuring, describeWithRedis, keyspaceOf, RedisClusterServers, RedisServer, ready } from '../helpers/redis-server';

jest.setTimeout(30_000);

const NOW = Date.UTC(2026, 0, 15, 12, 0, 0);
const SECOND = 1000;
const DAY = 86_400_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A rotation the way the manager asks for one: the replacement copies the old key's owner. */
function rotationOf(old: ApiKeyRecord, overrides: Partial<ApiKeyRecord> = {}, grace = 0) {
  return {
    oldId: old.id,
    replacement: testRecord(NOW, {
      ...(old.ownerId !== undefined ? { ownerId: old.ownerId } : {}),
      ...(old.tenantId !== undefined ? { tenantId: old.tenantId } : {}),
      rotatedFromId: old.id,
      ...overrides,
    }),
    oldRevokedAt: new Date(NOW + grace),
    ...(grace === 0 ? { oldStatus: 'revoked' as const } : {}),
    now: new Date(NOW),
  };
}

describeWithRedis('RedisStore writes on standalone Redis', () => {
  const NS = 'atomic:';
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

  /** Every key of the namespace with its type and content, to compare before and after. */
  function keyspace(): Promise<Record<string, unknown>> {
    return keyspaceOf([admin], `${NS}*`);
  }

  /** Messages published on the store's invalidation channel while `body` ran. */
  async function publishedDuring(body: () => Promise<unknown>): Promise<string[]> {
    const listener = server.client();
    const heard: string[] = [];
    try {
      await ready(listener);
      listener.on('message', (_channel: string, message: string) => heard.push(message));
      await listener.subscribe(`${NS}invalidate`);
      await body();
      await sleep(100);
    } finally {
      listener.disconnect();
    }
    return heard;
  }

  /** Loads the scripts (a script's first run is EVALSHA, NOSCRIPT, then EVAL). */
  async function warmUp(redisStore: RedisStore): Promise<void> {
    const old = testRecord(NOW, { ownerId: 'warm-up', tenantId: 'warm-up' });
    await redisStore.insert(old);
    await redisStore.update(old.id, { name: 'warm', updatedAt: new Date(NOW) });
    await redisStore.rotate(rotationOf(old));
  }

  describe('one round trip each', () => {
    it('inserts a record with its index and owner and tenant lists in one EVALSHA', async () => {
      const redisStore = store();
      await warmUp(redisStore);
      const record = testRecord(NOW, { ownerId: 'o-1', tenantId: 't-1' });
      expect(await commandsDuring(() => redisStore.insert(record))).toEqual(['evalsha']);
      expect(await redisStore.findByKeyPrefix(record.keyPrefix)).toStrictEqual(record);
      expect(await redisStore.list({ ownerId: 'o-1', limit: 10 })).toStrictEqual([record]);
      expect(await redisStore.list({ tenantId: 't-1', limit: 10 })).toStrictEqual([record]);
    });

    it('rotates in one EVALSHA, the invalidation message included, and returns both records as stored', async () => {
      const redisStore = store();
      await warmUp(redisStore);
      const old = testRecord(NOW, { ownerId: 'o-1', tenantId: 't-1', maxUses: 10, useCount: 4 });
      await redisStore.insert(old);
      const rotation = rotationOf(old, {}, 60 * SECOND);
      let result: Awaited<ReturnType<RedisStore['rotate']>> = null;
      const heard = await publishedDuring(async () => {
        expect(
          await commandsDuring(async () => {
            result = await redisStore.rotate(rotation);
          }),
        ).toEqual(['evalsha']);
      });
      expect(heard).toEqual([old.id]);
      const expectedOld = { ...old, revokedAt: new Date(NOW + 60 * SECOND), updatedAt: new Date(NOW) };
      const expectedReplacement = { ...rotation.replacement, maxUses: 6 };
      expect(result).toStrictEqual({ old: expectedOld, replacement: expectedReplacement });
      expect(await redisStore.findById(old.id)).toStrictEqual(expectedOld);
      expect(await redisStore.findByKeyPrefix(rotation.replacement.keyPrefix)).toStrictEqual(expectedReplacement);
      expect((await redisStore.list({ ownerId: 'o-1', limit: 10 })).map((record) => record.id).sort()).toEqual(
        [old.id, rotation.replacement.id].sort(),
      );
    });

    it('updates in one EVALSHA, the invalidation message included', async () => {
      const redisStore = store();
      await warmUp(redisStore);
      const record = testRecord(NOW);
      await redisStore.insert(record);
      const heard = await publishedDuring(async () => {
        expect(await commandsDuring(() => redisStore.update(record.id, { status: 'revoked', updatedAt: new Date(NOW) }))).toEqual(['evalsha']);
      });
      expect(heard).toEqual([record.id]);
    });
  });

  describe('a refused write changes nothing', () => {
    const refusedRotations: [string, (old: ApiKeyRecord, other: ApiKeyRecord) => Promise<ReturnType<typeof rotationOf>>, string][] = [
      ['its replacement keyPrefix is taken', async (old, other) => rotationOf(old, { keyPrefix: other.keyPrefix }), 'already_exists'],
      ['its replacement id is taken', async (old, other) => rotationOf(old, { id: other.id }), 'already_exists'],
      [
        'the old key is already rotated',
        async (old) => {
          await admin.hset(`${NS}key:{${old.id}}`, 'revokedAt', String(NOW + DAY));
          return rotationOf(old);
        },
        'invalid_argument',
      ],
      [
        'the old useCount was edited into something that is not a count',
        async (old) => {
          await admin.hset(`${NS}key:{${old.id}}`, 'useCount', '-3');
          return rotationOf(old);
        },
        'invalid_record',
      ],
      [
        'a field of the old record is not JSON',
        async (old) => {
          await admin.hset(`${NS}key:{${old.id}}`, 'name', 'written by hand');
          return rotationOf(old);
        },
        'invalid_record',
      ],
    ];

    it.each(refusedRotations)('a rotation is refused when %s: nothing written, nothing published', async (_title, prepare, code) => {
      const redisStore = store();
      const old = testRecord(NOW, { ownerId: 'o-1', maxUses: 10, useCount: 4 });
      const other = testRecord(NOW + 1, { ownerId: 'o-1' });
      await redisStore.insert(old);
      await redisStore.insert(other);
      const rotation = await prepare(old, other);
      const before = await keyspace();
      let error: unknown;
      const heard = await publishedDuring(async () => {
        error = await redisStore.rotate(rotation).then(
          () => undefined,
          (rejection: unknown) => rejection,
        );
      });
      expect((error as { code?: unknown } | undefined)?.code).toBe(code);
      expect(heard).toEqual([]);
      expect(await keyspace()).toEqual(before);
    });

    it('a rotation is refused when a list key holds something else, before any write', async () => {
      const redisStore = store();
      const old = testRecord(NOW, { ownerId: 'o-1', tenantId: 't-9' });
      await redisStore.insert(old);
      // The replacement goes to its tenant's list, which someone else's data now occupies.
      await admin.del(`${NS}list:tenant:t-9`);
      await admin.set(`${NS}list:tenant:t-9`, 'not a sorted set');
      const before = await keyspace();
      const error = await redisStore.rotate(rotationOf(old)).then(
        () => undefined,
        (rejection: unknown) => rejection,
      );
      expect(String((error as Error | undefined)?.message)).toMatch(/WRONGTYPE/);
      expect(await keyspace()).toEqual(before);
    });

    it('a rotation whose old record has another owner than the caller read (edited by hand) lists the replacement under the stored one', async () => {
      const redisStore = store();
      await warmUp(redisStore);
      const old = testRecord(NOW, { ownerId: 'o-1' });
      await redisStore.insert(old);
      await admin.hset(`${NS}key:{${old.id}}`, 'ownerId', '"o-2"', 'tenantId', '"t-2"');
      const rotation = rotationOf(old); // declares the lists of o-1, as the caller read it
      const refusedFirst = await commandsDuring(async () => {
        const result = await redisStore.rotate(rotation);
        expect(result?.replacement).toMatchObject({ ownerId: 'o-2', tenantId: 't-2' });
      });
      // The first attempt is refused before any write, the second one declares the right lists.
      expect(refusedFirst.filter((command) => command.startsWith('eval'))).toHaveLength(2);
      expect((await redisStore.list({ ownerId: 'o-2', limit: 10 })).map((record) => record.id)).toEqual([rotation.replacement.id]);
      expect((await redisStore.list({ tenantId: 't-2', limit: 10 })).map((record) => record.id)).toEqual([rotation.replacement.id]);
      expect((await redisStore.list({ ownerId: 'o-1', limit: 10 })).map((record) => record.id)).toEqual([old.id]);
    });

    it.each([
      ['keyPrefix', (taken: ApiKeyRecord) => testRecord(NOW, { keyPrefix: taken.keyPrefix, ownerId: 'o-2' })],
      ['id', (taken: ApiKeyRecord) => testRecord(NOW, { id: taken.id, ownerId: 'o-2' })],
    ])('an insert whose %s is taken is refused with already_exists and adds no index or list entry', async (_field, duplicateOf) => {
      const redisStore = store();
      const taken = testRecord(NOW, { ownerId: 'o-1' });
      await redisStore.insert(taken);
      const before = await keyspace();
      const error = await redisStore.insert(duplicateOf(taken)).then(
        () => undefined,
        (rejection: unknown) => rejection,
      );
      expect((error as { code?: unknown } | undefined)?.code).toBe('already_exists');
      expect(await keyspace()).toEqual(before);
    });
  });

  describe('the scripts agree with the store toolkit', () => {
    // The Lua scripts restate three rules of the toolkit; random cases run through both must agree.
    function randomInt(below: number): number {
      return Math.floor(Math.random() * below);
    }

    function pick<T>(values: readonly T[]): T {
      return values[randomInt(values.length)] as T;
    }

    function maybe<T>(value: () => T): T | undefined {
      return randomInt(2) === 0 ? undefined : value();
    }

    function randomList(prefix: string): string[] {
      return Array.from({ length: randomInt(4) }, (_, i) => `${prefix}${i}:${randomInt(100)}`);
    }

    function randomLimit(): ApiKeyRecord['rateLimit'] {
      return pick([null, { perSecond: 1 + randomInt(10) }, { perSecond: 2, burst: 1 + randomInt(20) }, { perDay: 1 + randomInt(1000) }]);
    }

    /** Only the fields that are present: an optional field is absent, never `undefined`. */
    function present<T extends object>(fields: T): Partial<T> {
      return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined)) as Partial<T>;
    }

    function randomRecord(): ApiKeyRecord {
      return testRecord(NOW - DAY, {
        name: `key ${randomInt(1000)}`,
        ...present({
          description: maybe(() => `about ${randomInt(100)}`),
          ownerId: maybe(() => `o-${randomInt(3)}`),
          tenantId: maybe(() => `t-${randomInt(3)}`),
          environment: maybe(() => pick(['live', 'test'])),
        }),
        status: pick(['active', 'suspended'] as const),
        scopes: randomList('scope'),
        allowedIps: pick([[], ['10.0.0.0/8'], ['203.0.113.7', '::1']]),
        maxUses: pick([null, randomInt(50)]),
        useCount: randomInt(60),
        rateLimit: randomLimit(),
        expiresAt: pick([null, new Date(NOW + (1 + randomInt(100)) * DAY)]),
        metadata: pick([{}, { plan: pick(['free', 'pro']), seats: randomInt(10) }, { nested: { list: [1, 'two', null] } }]),
        tags: randomList('tag'),
      });
    }

    /** An update an administrator might make between the caller's read and its rotation. */
    function randomPatch() {
      return {
        ...present({
          name: maybe(() => `renamed ${randomInt(1000)}`),
          description: maybe(() => pick([null, `changed ${randomInt(100)}`])),
          status: maybe(() => pick(['active', 'suspended'] as const)),
          scopes: maybe(() => randomList('narrowed')),
          allowedIps: maybe(() => pick([[], ['10.0.0.1']])),
          maxUses: maybe(() => pick([null, randomInt(50)])),
          rateLimit: maybe(randomLimit),
          expiresAt: maybe(() => pick([null, new Date(NOW + randomInt(10) * DAY)])),
          metadata: maybe(() => ({ changed: randomInt(10) })),
          tags: maybe(() => randomList('retagged')),
        }),
        updatedAt: new Date(NOW - SECOND),
      };
    }

    /** What the manager copies into the replacement from the record it read: every setting. */
    function settingsOf(record: ApiKeyRecord): Partial<ApiKeyRecord> {
      const fields = record as unknown as Record<string, unknown>;
      return Object.fromEntries(CREATE_FIELDS.filter((field) => fields[field] !== undefined).map((field) => [field, fields[field]]));
    }

    it('the update script stamps revokedAt as revokedAtAfterUpdate does (200 random cases)', async () => {
      const redisStore = store();
      await Promise.all(
        Array.from({ length: 200 }, async () => {
          const storedRevokedAt = randomInt(3) === 0 ? null : NOW + (randomInt(2001) - 1000) * SECOND;
          const patchRevokedAt = [undefined, null, new Date(NOW + (randomInt(2001) - 1000) * SECOND)][randomInt(3)];
          const status = (['active', 'suspended', 'revoked', undefined] as const)[randomInt(4)];
          const updatedAt = new Date(NOW + (randomInt(2001) - 1000) * SECOND);
          const record = testRecord(NOW - DAY, { revokedAt: storedRevokedAt === null ? null : new Date(storedRevokedAt) });
          await redisStore.insert(record);
          const patch = {
            ...(status !== undefined ? { status } : {}),
            ...(patchRevokedAt !== undefined ? { revokedAt: patchRevokedAt } : {}),
            updatedAt,
          };
          const updated = await redisStore.update(record.id, patch).catch((error: { code?: string }) => error.code);
          // A refused reactivation is the other rule (a revoked key stays revoked); only a written patch is compared.
          if (typeof updated === 'string') return expect({ patch, updated }).toEqual({ patch, updated: 'invalid_argument' });
          const expected = revokedAtAfterUpdate(storedRevokedAt, patch);
          expect({ storedRevokedAt, patch, revokedAt: updated?.revokedAt?.getTime() ?? null }).toEqual({
            storedRevokedAt,
            patch,
            revokedAt: expected === undefined ? storedRevokedAt : expected,
          });
        }),
      );
    });

    it('the rotate script builds the replacement as replacementFor does, from the old record as stored at the rotation (100 random records)', async () => {
      const redisStore = store();
      await Promise.all(
        Array.from({ length: 100 }, async () => {
          // The caller reads `read`, an update lands, then the rotation built from `read` arrives.
          const read = randomRecord();
          await redisStore.insert(read);
          await redisStore.update(read.id, randomPatch());
          const current = await redisStore.findById(read.id);
          const rotation = rotationOf(read, settingsOf(read), randomInt(2) * 60 * SECOND);
          const expected = replacementFor(rotation, current!);
          const result = await redisStore.rotate(rotation);
          expect({ current, replacement: result?.replacement }).toStrictEqual({ current, replacement: expected });
          expect({ current, stored: await redisStore.findById(rotation.replacement.id) }).toStrictEqual({ current, stored: expected });
        }),
      );
    });

    it('the rotate script carries uses as remainingUses does (100 random cases)', async () => {
      const redisStore = store();
      await Promise.all(
        Array.from({ length: 100 }, async () => {
          const maxUses = randomInt(4) === 0 ? null : randomInt(50);
          const useCount = randomInt(60);
          const old = testRecord(NOW, { maxUses, useCount });
          await redisStore.insert(old);
          const result = await redisStore.rotate(rotationOf(old));
          expect({ maxUses, useCount, carried: (await redisStore.findById(result!.replacement.id))?.maxUses }).toEqual({
            maxUses,
            useCount,
            carried: remainingUses(maxUses, useCount),
          });
        }),
      );
    });
  });

  describe('data written by the previous version', () => {
    // A record exactly as the store of the previous release laid it out (key names, JSON values,
    // epoch-millisecond instants, counter fields), written with plain commands.
    const id = '7d2c1c2e-0d4a-4e43-9a51-1f8d2b0c9e11';
    const keyPrefix = 'pk_test_legacy00000001';
    const hash: Record<string, string> = {
      id: JSON.stringify(id),
      keyPrefix: JSON.stringify(keyPrefix),
      keyHash: '"$hmac-sha256$x"',
      name: '"legacy"',
      ownerId: '"owner-1"',
      status: '"active"',
      scopes: '["leads:read"]',
      allowedIps: '[]',
      maxUses: '10',
      useCount: '4',
      rateLimit: '{"perDay":100}',
      expiresAt: 'null',
      createdAt: String(NOW),
      updatedAt: String(NOW),
      lastUsedAt: String(NOW + 1),
      revokedAt: 'null',
      metadata: '{"plan":"pro"}',
      tags: '["legacy"]',
      'c:tokens': 'null',
      'c:tokensAt': String(NOW + 1),
      'c:day': String(Math.floor((NOW + 1) / DAY)),
      'c:dayCount': '4',
    };
    const record: ApiKeyRecord = {
      id,
      keyPrefix,
      keyHash: '$hmac-sha256$x',
      name: 'legacy',
      ownerId: 'owner-1',
      status: 'active',
      scopes: ['leads:read'],
      allowedIps: [],
      maxUses: 10,
      useCount: 4,
      rateLimit: { perDay: 100 },
      expiresAt: null,
      createdAt: new Date(NOW),
      updatedAt: new Date(NOW),
      lastUsedAt: new Date(NOW + 1),
      revokedAt: null,
      allowedOrigins: [],
      maxConcurrent: null,
      deletedAt: null,
      rotationFrequencyDays: null,
      alerts: null,
      requireHttps: false,
      clientCertificateSha256: [],
      metadata: { plan: 'pro' },
      tags: ['legacy'],
    };

    beforeEach(async () => {
      // createdAt + 8 640 000 000 000 000, padded to 17 digits, then the id.
      const member = `08641768478400000:${id}`;
      expect(NOW).toBe(1_768_478_400_000);
      await admin.hset(`${NS}key:{${id}}`, hash);
      await admin.set(`${NS}kp:${keyPrefix}`, id);
      await admin.zadd(`${NS}list`, 0, member);
      await admin.zadd(`${NS}list:owner:owner-1`, 0, member);
    });

    it('reads it by id, by keyPrefix and in lists, and goes on counting its day', async () => {
      const redisStore = store();
      expect(await redisStore.findById(id)).toStrictEqual(record);
      expect(await redisStore.findByKeyPrefix(keyPrefix)).toStrictEqual(record);
      expect(await redisStore.list({ ownerId: 'owner-1', limit: 10 })).toStrictEqual([record]);
      expect(await redisStore.consume(id, { now: NOW + 2, maxUses: 10, rateLimit: { perDay: 100 } })).toEqual({
        admitted: true,
        useCount: 5,
        dayCount: 5,
      });
    });

    it('rotates it in one step, carrying the uses it has left', async () => {
      const redisStore = store();
      const rotation = rotationOf(record);
      const result = await redisStore.rotate(rotation);
      expect(result?.replacement.maxUses).toBe(6);
      expect(result?.old).toStrictEqual({ ...record, status: 'revoked', revokedAt: new Date(NOW), updatedAt: new Date(NOW) });
      expect((await redisStore.list({ ownerId: 'owner-1', limit: 10 })).map((found) => found.id).sort()).toEqual(
        [id, rotation.replacement.id].sort(),
      );
      expect(await redisStore.consume(id, { now: NOW + 2, maxUses: 10, rateLimit: null })).toEqual({
        admitted: false,
        refusal: 'api_key_revoked',
        useCount: 4,
      });
    });
  });
});

/**
 * The update script on both deployments: the revocation stamp, and the invalidation message that
 * the script itself publishes (a Cluster spreads it to every node).
 */
function describeUpdateScript(deployment: string, setUp: () => { clients: () => (Redis | Cluster)[] }): void {
  describe(`RedisStore update on ${deployment}`, () => {
    const context = setUp();
    let namespace = 0;
    let ns = '';

    beforeEach(() => {
      ns = `stamp${++namespace}:`;
    });

    function store(index = 0): RedisStore {
      return new RedisStore({ client: context.clients()[index]!, keyPrefix: ns });
    }

    const cases: { title: string; stored: Partial<ApiKeyRecord>; patch?: { revokedAt: Date | null }; revokedAt: number }[] = [
      { title: 'a key never revoked is revoked at updatedAt', stored: { revokedAt: null }, revokedAt: NOW },
      {
        title: 'a key already revoked keeps the instant it was revoked',
        stored: { status: 'revoked', revokedAt: new Date(NOW - DAY) },
        revokedAt: NOW - DAY,
      },
      { title: 'a key whose grace period has ended keeps its revokedAt', stored: { revokedAt: new Date(NOW - SECOND) }, revokedAt: NOW - SECOND },
      { title: 'a key in its grace period stops now', stored: { revokedAt: new Date(NOW + DAY) }, revokedAt: NOW },
      {
        title: 'a later revokedAt in the patch cannot postpone a revocation',
        stored: { revokedAt: new Date(NOW - DAY) },
        patch: { revokedAt: new Date(NOW + DAY) },
        revokedAt: NOW - DAY,
      },
      { title: 'a revokedAt of null in the patch cannot undo it', stored: { revokedAt: new Date(NOW + DAY) }, patch: { revokedAt: null }, revokedAt: NOW },
    ];

    it.each(cases)('stamps the revocation: $title', async ({ stored, patch, revokedAt }) => {
      const redisStore = store();
      const record = testRecord(NOW - DAY, stored);
      await redisStore.insert(record);
      const updated = await redisStore.update(record.id, { ...patch, status: 'revoked', updatedAt: new Date(NOW) });
      const expected = { ...record, status: 'revoked', revokedAt: new Date(revokedAt), updatedAt: new Date(NOW) };
      expect(updated).toStrictEqual(expected);
      expect(await redisStore.findById(record.id)).toStrictEqual(expected);
      expect(await redisStore.consume(record.id, { now: NOW, maxUses: null, rateLimit: null })).toEqual({
        admitted: false,
        refusal: 'api_key_revoked',
        useCount: 0,
      });
    });

    it('stamps updatedAt over a revokedAt edited by hand into something unreadable', async () => {
      const redisStore = store();
      const record = testRecord(NOW - DAY);
      await redisStore.insert(record);
      await context.clients()[0]!.hset(`${ns}key:{${record.id}}`, 'revokedAt', 'soon');
      const updated = await redisStore.update(record.id, { status: 'revoked', updatedAt: new Date(NOW) });
      expect(updated?.revokedAt).toStrictEqual(new Date(NOW));
    });

    it('ends at the earliest of concurrent revocations sent by several clients, none reactivating it', async () => {
      const stores = context.clients().map((_client, i) => store(i));
      const record = testRecord(NOW - DAY);
      await stores[0]!.insert(record);
      // Out of order, so that the earliest instant is neither the first nor the last one sent.
      const instants = [5, 2, 8, 3, 9, 4, 7, 6].map((seconds) => NOW + seconds * SECOND);
      const outcomes = await Promise.allSettled(
        instants.flatMap((at, i) => [
          stores[i % stores.length]!.update(record.id, { status: 'revoked', updatedAt: new Date(at) }),
          stores[(i + 1) % stores.length]!.update(record.id, { status: 'active', updatedAt: new Date(NOW + i) }),
        ]),
      );
      outcomes.forEach((outcome, i) => {
        // Every revocation succeeds; a reactivation succeeds only before the first revocation.
        if (i % 2 === 0) expect(outcome.status).toBe('fulfilled');
        else if (outcome.status === 'fulfilled') expect(outcome.value?.revokedAt).toBeNull();
        else expect((outcome.reason as { code?: unknown }).code).toBe('invalid_argument');
      });
      const found = await stores[0]!.findById(record.id);
      expect({ status: found?.status, revokedAt: found?.revokedAt }).toEqual({ status: 'revoked', revokedAt: new Date(NOW + 2 * SECOND) });
    });

    it('reaches a subscriber on another client through the message the script publishes', async () => {
      const listening = store(0);
      const writing = store(1);
      const record = testRecord(NOW);
      await writing.insert(record);
      const heard: (string | null)[] = [];
      const unsubscribe = listening.subscribe((id) => heard.push(id));
      try {
        // The subscription connection opens in the background: write until it hears.
        for (let round = 1; !heard.includes(record.id); round++) {
          if (round > 50) throw new Error(`never heard of ${record.id}`);
          await writing.update(record.id, { name: `renamed ${round}`, updatedAt: new Date(NOW + round) });
          await sleep(100);
        }
        // Only the message through Redis can have told it: the writing store has no listeners.
        expect(heard.every((id) => id === record.id)).toBe(true);
      } finally {
        unsubscribe();
      }
    });
  });
}

describeWithRedis('the update script on both deployments', () => {
  describeUpdateScript('standalone Redis', () => {
    let server: RedisServer;
    let clients: Redis[] = [];
    beforeAll(async () => {
      server = await RedisServer.start();
      clients = [server.client(), server.client(), server.client()];
      await Promise.all(clients.map(ready));
    });
    afterAll(async () => {
      await Promise.all(clients.map((client) => client.quit()));
      await server?.stop();
    });
    return { clients: () => clients };
  });

  describeUpdateScript('Redis Cluster', () => {
    let servers: RedisClusterServers;
    let clients: Cluster[] = [];
    beforeAll(async () => {
      servers = await RedisClusterServers.start();
      clients = Array.from({ length: 3 }, () => new Cluster(servers.startupNodes, { redisOptions: { autoResendUnfulfilledCommands: false } }));
      await Promise.all(clients.map(ready));
    }, 60_000);
    afterAll(async () => {
      await Promise.all(clients.map((client) => client.quit()));
      await servers?.stop();
    });
    return { clients: () => clients };
  });
});

/**
 * On a Cluster, insert and rotate are ordered steps across slots (index, lists, record). Whatever
 * step fails, and however (a refusal, a list key of another type, a command the server refuses),
 * what the call added is taken back, and a rotation's claim on the old record is undone.
 */
describeWithRedis('RedisStore on Redis Cluster: a failed ordered write leaves nothing behind', () => {
  let servers: RedisClusterServers;
  let client: Cluster;
  let namespace = 0;
  let ns = '';

  beforeAll(async () => {
    servers = await RedisClusterServers.start();
    client = new Cluster(servers.startupNodes, { redisOptions: { autoResendUnfulfilledCommands: false } });
    await ready(client);
  }, 60_000);

  beforeEach(() => {
    ns = `undo${++namespace}:`;
  });

  afterAll(async () => {
    await client?.quit();
    await servers?.stop();
  });

  function store(redis: Cluster = client): RedisStore {
    return new RedisStore({ client: redis, keyPrefix: ns });
  }

  async function rejection(operation: Promise<unknown>): Promise<Error> {
    return operation.then(
      () => {
        throw new Error('the write succeeded');
      },
      (error: unknown) => error as Error,
    );
  }

  /** What the store wrote for `record` outside its hash: its index entry, and whether `ns list` holds it. */
  async function traces(record: ApiKeyRecord): Promise<{ index: string | null; listed: boolean; hash: number }> {
    const members = await client.zrange(`${ns}list`, 0, -1);
    return {
      index: await client.get(`${ns}kp:${record.keyPrefix}`),
      listed: members.some((member) => member.endsWith(`:${record.id}`)),
      hash: await client.exists(`${ns}key:{${record.id}}`),
    };
  }

  /** Runs `body` with a Cluster client of a user that has `rules` on every node. */
  async function asUser(rules: string[], body: (limited: Cluster) => Promise<void>): Promise<void> {
    const user = `keygate-undo-${namespace}`;
    const nodes = servers.nodes.map((node) => node.client());
    let limited: Cluster | undefined;
    try {
      await Promise.all(nodes.map(ready));
      await Promise.all(nodes.map((node) => node.call('ACL', 'SETUSER', user, 'reset', 'on', '>undo-pw', '~*', '&*', ...rules)));
      limited = new Cluster(servers.startupNodes, { redisOptions: { username: user, password: 'undo-pw', autoResendUnfulfilledCommands: false } });
      await ready(limited);
      await body(limited);
    } finally {
      await limited?.quit();
      await Promise.all(nodes.map((node) => node.call('ACL', 'DELUSER', user)));
      await Promise.all(nodes.map((node) => node.quit()));
    }
  }

  it('an insert whose owner list holds a string fails with WRONGTYPE and leaves no index entry or list member', async () => {
    await client.set(`${ns}list:owner:o-1`, 'not a sorted set');
    const record = testRecord(NOW, { ownerId: 'o-1' });
    expect((await rejection(store().insert(record))).message).toMatch(/WRONGTYPE/);
    expect(await traces(record)).toEqual({ index: null, listed: false, hash: 0 });
    expect(await client.get(`${ns}list:owner:o-1`)).toBe('not a sorted set');
    // And the keyPrefix is free again.
    await client.del(`${ns}list:owner:o-1`);
    await store().insert(record);
    expect(await store().findByKeyPrefix(record.keyPrefix)).toStrictEqual(record);
  });

  it('an insert whose record script the server refuses (NOPERM) leaves no index entry or list member', async () => {
    const record = testRecord(NOW, { ownerId: 'o-1', tenantId: 't-1' });
    await asUser(['+@all', '-evalsha', '-eval'], async (limited) => {
      expect((await rejection(store(limited).insert(record))).message).toMatch(/NOPERM/);
    });
    expect(await traces(record)).toEqual({ index: null, listed: false, hash: 0 });
    expect(await client.zcard(`${ns}list:owner:o-1`)).toBe(0);
    expect(await client.zcard(`${ns}list:tenant:t-1`)).toBe(0);
  });

  it('a rotation whose replacement cannot be listed fails, leaves the old record as it was and no trace of the replacement', async () => {
    const redisStore = store();
    const old = testRecord(NOW - DAY, { ownerId: 'o-1', maxUses: 10, useCount: 4 });
    await redisStore.insert(old);
    await client.del(`${ns}list:owner:o-1`);
    await client.set(`${ns}list:owner:o-1`, 'not a sorted set');
    const rotation = rotationOf(old);
    expect((await rejection(redisStore.rotate(rotation))).message).toMatch(/WRONGTYPE/);
    expect(await redisStore.findById(old.id)).toStrictEqual(old);
    expect(await traces(rotation.replacement)).toEqual({ index: null, listed: false, hash: 0 });
  });

  it('a user without PUBLISH can neither update nor rotate: refused with nothing changed', async () => {
    const redisStore = store();
    const old = testRecord(NOW - DAY, { ownerId: 'o-1' });
    await redisStore.insert(old);
    const rotation = rotationOf(old);
    await asUser(['+@all', '-publish'], async (limited) => {
      // Refused inside the update script (its PUBLISH), and at the PUBLISH a Cluster rotation sends first.
      const refused = /NOPERM|can't run this command/;
      expect((await rejection(store(limited).update(old.id, { status: 'revoked', updatedAt: new Date(NOW) }))).message).toMatch(refused);
      expect((await rejection(store(limited).rotate(rotation))).message).toMatch(refused);
    });
    expect(await redisStore.findById(old.id)).toStrictEqual(old);
    expect(await traces(rotation.replacement)).toEqual({ index: null, listed: false, hash: 0 });
  });
});
