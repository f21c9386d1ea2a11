/**
 * The findings of the security audit (issue 9), end to end on real Redis servers through the
 * public API: `keygate()` on a `RedisStore`, worker processes for what must hold across processes,
 * records edited straight in Redis as an operator (or an attacker with Redis access) would.
 * Each test names the audit item it proves; each one fails on the behaviour before the fix.
 *
 * The workers load the built package (dist/), which `npm test` builds before jest runs.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { inspect } from 'node:util';
import type Redis from 'ioredis';
import { keygate, type Keygate } from 'keygate';
import { RedisStore } from 'keygate/redis';
import { testRecord } from '../helpers/records';
import { describeWithRedis, RedisServer } from '../helpers/redis-server';
import { Worker } from '../helpers/workers';

jest.setTimeout(30_000);

const NS = 'audit:';

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describeWithRedis('security audit (issue 9) on Redis', () => {
  let server: RedisServer;
  let client: Redis;
  let admin: Redis;
  const managers: Keygate[] = [];
  const workers: Worker[] = [];

  async function ready(redis: Redis): Promise<void> {
    if (redis.status !== 'ready') await new Promise((resolve) => redis.once('ready', resolve));
  }

  function manager(options: { storeTimeoutMs?: number; client?: Redis; hashing?: 'sha256' | 'bcrypt' } = {}): Keygate {
    const keys = keygate({
      store: new RedisStore({ client: options.client ?? client, keyPrefix: NS }),
      prefix: 'pk_test',
      hashing: options.hashing ?? 'sha256',
      bcryptCost: 4,
      ...(options.storeTimeoutMs ? { storeTimeoutMs: options.storeTimeoutMs } : {}),
    });
    managers.push(keys);
    return keys;
  }

  /** The hash of one record, as the store lays it out (see RedisStore's class comment). */
  function recordKey(id: string): string {
    return `${NS}key:{${id}}`;
  }

  beforeAll(async () => {
    server = await RedisServer.start();
    client = server.client();
    admin = server.client();
    await Promise.all([ready(client), ready(admin)]);
  });

  afterEach(async () => {
    await Promise.all(workers.splice(0).map((worker) => worker.stop()));
    await Promise.all(managers.splice(0).map((keys) => keys.close()));
    if (admin.status === 'ready') await admin.flushall();
  });

  afterAll(async () => {
    await client?.quit();
    await admin?.quit();
    await server?.stop();
  });

  // ---------------------------------------------------------------------------------------------
  describe('the RedisStore itself', () => {
    const NOW = Date.UTC(2026, 0, 15, 12, 0, 0);

    function store(redis: Redis = client): RedisStore {
      return new RedisStore({ client: redis, keyPrefix: NS });
    }

    // Audit item: a consume queued behind a pause ran whenever Redis got to it. The deadline is
    // compared with Redis's own clock (TIME) when the script runs, not when it was sent. Fails
    // before the fix: the held consume is admitted (the store had no deadline).
    it('refuses a consume that Redis runs after its deadline (held by CLIENT PAUSE WRITE) and counts nothing', async () => {
      const redisStore = store();
      const record = testRecord(NOW, { maxUses: 1 });
      await redisStore.insert(record);
      expect(await admin.call('CLIENT', 'PAUSE', '700', 'WRITE')).toBe('OK');
      const sentAt = Date.now();
      const outcome = await redisStore.consume(record.id, { now: NOW, maxUses: 1, rateLimit: null, deadline: Date.now() + 300 });
      expect(Date.now() - sentAt).toBeGreaterThanOrEqual(500); // it really waited for the pause
      expect(outcome).toEqual({ admitted: false, refusal: 'deadline_exceeded', useCount: 0 });
      expect(await redisStore.findById(record.id)).toStrictEqual(record);
      expect(await redisStore.consume(record.id, { now: NOW, maxUses: 1, rateLimit: null, deadline: Date.now() + 5_000 })).toEqual({
        admitted: true,
        useCount: 1,
      });
    });

    // Audit item: the consume did not look at the record, so a status or date edited in Redis
    // (or one keygate does not know) was admitted by every process that had the key cached. The
    // script fails closed on anything it cannot read. Fails before the fix: every one is admitted.
    it.each([
      ['status', '"Revoked"', 'api_key_revoked'],
      ['status', '"disabled"', 'api_key_revoked'],
      ['status', 'Revoked', 'api_key_revoked'],
      ['status', '', 'api_key_revoked'],
      ['status', '"suspended"', 'api_key_disabled'],
      ['revokedAt', String(NOW), 'api_key_revoked'],
      ['revokedAt', '"2030-01-01"', 'api_key_revoked'],
      ['revokedAt', 'soon', 'api_key_revoked'],
      ['expiresAt', String(NOW - 1), 'api_key_expired'],
      ['expiresAt', '{}', 'api_key_expired'],
    ])('consume refuses a record whose %s was written as %j, with %s, counting nothing', async (field, raw, refusal) => {
      const redisStore = store();
      const record = testRecord(NOW, { rateLimit: { perSecond: 1, perDay: 5 } });
      await redisStore.insert(record);
      await admin.hset(recordKey(record.id), field, raw);
      expect(await redisStore.consume(record.id, { now: NOW, maxUses: null, rateLimit: { perSecond: 1, perDay: 5 } })).toEqual({
        admitted: false,
        refusal,
        useCount: 0,
      });
      expect(await admin.hget(recordKey(record.id), 'useCount')).toBe('0');
      expect(await admin.hget(recordKey(record.id), 'c:dayCount')).toBe('0');
    });

    // Not an audit item: the guard against the opposite mistake (failing closed on valid dates).
    it('consume still admits a record whose revokedAt and expiresAt are still ahead', async () => {
      const redisStore = store();
      const record = testRecord(NOW, { expiresAt: new Date(NOW + 1), revokedAt: new Date(NOW + 1) });
      await redisStore.insert(record);
      expect(await redisStore.consume(record.id, { now: NOW, maxUses: null, rateLimit: null })).toEqual({ admitted: true, useCount: 1 });
    });

    // Audit item: a field that is not JSON made findById throw a SyntaxError (a 503 that quoted the
    // value); now it is invalid_record naming the record and the field, never the value.
    it('findById of a record with a field that is not JSON rejects with invalid_record, without the value', async () => {
      const redisStore = store();
      const record = testRecord(NOW);
      await redisStore.insert(record);
      await admin.hset(recordKey(record.id), 'status', 'Revoked-by-hand');
      const error = await redisStore.findById(record.id).then(
        () => undefined,
        (rejection: unknown) => rejection as { code?: unknown; message?: unknown; field?: unknown },
      );
      expect(error?.code).toBe('invalid_record');
      expect(error?.field).toBe('status');
      expect(String(error?.message)).not.toContain('Revoked-by-hand');
    });

    // Audit item: a revoked record could be brought back by a racing update (the manager checked,
    // then wrote). The check is now inside the UPDATE script. Fails before the fix: the update
    // applies. (The manager checks first as well, so this goes to the store directly.)
    it('update refuses to reactivate a record revoked by hand in Redis, atomically, and changes nothing', async () => {
      const redisStore = store();
      const record = testRecord(NOW);
      await redisStore.insert(record);
      await admin.hset(recordKey(record.id), 'status', '"Revoked"');
      const before = await admin.hgetall(recordKey(record.id));
      const error = await redisStore.update(record.id, { status: 'active', updatedAt: new Date(NOW + 1) }).then(
        () => undefined,
        (rejection: unknown) => rejection as { code?: unknown; field?: unknown },
      );
      expect(error?.code).toBe('invalid_argument');
      expect(error?.field).toBe('status');
      expect(await admin.hgetall(recordKey(record.id))).toEqual(before);
    });

    // Audit item: a rotation was several round trips with no claim, so concurrent rotations from
    // several processes each minted a replacement carrying the full remaining uses. Fails before
    // the fix: more than one succeeds.
    it('of 6 concurrent rotations of one key from 3 clients, exactly one succeeds and the replacement carries the uses left', async () => {
      const others = [server.client(), server.client()];
      try {
        await Promise.all(others.map(ready));
        const stores = [store(), store(others[0]), store(others[1])];
        const old = testRecord(NOW, { maxUses: 10, useCount: 4 });
        await stores[0]!.insert(old);
        const attempts = await Promise.allSettled(
          Array.from({ length: 6 }, (_, i) =>
            stores[i % 3]!.rotate({
              oldId: old.id,
              replacement: testRecord(NOW, { rotatedFromId: old.id }),
              oldRevokedAt: new Date(NOW + 60_000),
              now: new Date(NOW),
            }),
          ),
        );
        const won = attempts.filter((attempt) => attempt.status === 'fulfilled');
        expect(won).toHaveLength(1);
        for (const attempt of attempts) {
          if (attempt.status === 'rejected') expect((attempt.reason as { code?: unknown }).code).toBe('invalid_argument');
        }
        const result = (won[0] as PromiseFulfilledResult<Awaited<ReturnType<RedisStore['rotate']>>>).value!;
        expect(result.replacement.maxUses).toBe(6);
        expect((await stores[0]!.list({ limit: 20 })).map((record) => record.id).sort()).toEqual([old.id, result.replacement.id].sort());
      } finally {
        await Promise.all(others.map((other) => other.quit()));
      }
    });

    // Audit item: ioredis attaches a failed command's arguments (the record, keyHash included) to
    // its errors. The store strips them from what it throws, whoever catches it.
    it('an insert failing in Redis throws an error without the command arguments (no keyHash)', async () => {
      const user = 'keygate-audit-noscript';
      await admin.call('ACL', 'SETUSER', user, 'reset', 'on', '>audit-pw', '~*', '&*', '+@all', '-evalsha', '-eval');
      const limited = server.client({ username: user, password: 'audit-pw' });
      try {
        await ready(limited);
        const record = testRecord(NOW, { keyHash: '$hmac-sha256$c2VjcmV0LWhhc2g' });
        const error = await store(limited).insert(record).then(
          () => undefined,
          (rejection: unknown) => rejection,
        );
        expect(String((error as Error).message)).toMatch(/NOPERM/);
        expect((error as { command?: unknown }).command).toEqual({ name: expect.any(String) });
        expect(inspect(error, { depth: 10 })).not.toContain('$hmac-sha256$');
        expect(JSON.stringify(error)).not.toContain('$hmac-sha256$');
      } finally {
        await limited.quit();
        await admin.call('ACL', 'DELUSER', user);
      }
    });
  });

  // ---------------------------------------------------------------------------------------------
  describe('a request answered 503 is never counted', () => {
    // Audit item: a consume that reached Redis after keygate had given up (answered 503) was still
    // applied, so a key with maxUses 1 could end up exhausted without ever admitting anyone. Now
    // the verifier passes a wall-clock deadline and the consume script refuses (counting nothing)
    // once Redis's clock is past it. Fails before the fix: useCount is 1 after the pause, and the
    // next request is refused with usage_exhausted.
    it('a consume held up past storeTimeoutMs (CLIENT PAUSE WRITE) answers store_unavailable and counts nothing', async () => {
      const keys = manager({ storeTimeoutMs: 1000 });
      const { key, apiKey } = await keys.create({ name: 'paused', maxUses: 1 });
      expect((await keys.verify(key, { consume: false })).ok).toBe(true); // cached: the next verify is one EVALSHA

      const pausedAt = Date.now();
      expect(await admin.call('CLIENT', 'PAUSE', '1500', 'WRITE')).toBe('OK');
      const during = await keys.verify(key);
      expect(during.ok).toBe(false);
      if (!during.ok) expect(during.error.code).toBe('store_unavailable');
      expect(Date.now() - pausedAt).toBeLessThan(1_450); // answered at storeTimeoutMs, before the pause ended

      await sleep(Math.max(0, pausedAt + 2_000 - Date.now())); // the held EVALSHA has run by now
      expect((await keys.get(apiKey.id))!.useCount).toBe(0);
      const admitted = await keys.verify(key);
      expect(admitted.ok).toBe(true);
      if (admitted.ok) expect(admitted.apiKey.useCount).toBe(1);
      const exhausted = await keys.verify(key);
      expect(exhausted.ok || exhausted.error.code).toBe('usage_exhausted');
    });
  });

  // ---------------------------------------------------------------------------------------------
  describe('revocation is final across processes at once', () => {
    async function startWorkers(): Promise<Worker[]> {
      if (!existsSync(join(__dirname, '../../dist/cjs/redis.js'))) throw new Error('dist/ is missing: run `npm run build` (npm test does it first)');
      // Two ordinary processes, and one whose invalidation messages never arrive (pub/sub is
      // at-most-once; a message can also simply be slower than the next request).
      const started = await Promise.all([
        Worker.start('redis-worker.cjs', { port: server.port, namespace: NS }),
        Worker.start('redis-worker.cjs', { port: server.port, namespace: NS }),
        Worker.start('redis-worker.cjs', { port: server.port, namespace: NS, subscription: false }),
      ]);
      workers.push(...started);
      return started;
    }

    type LoopReport = { admitted: number; lastAdmittedStart: number; lastStart: number; codes: Record<string, number> };

    /**
     * Every worker admits the key (now cached there), then keeps verifying it while `change` runs
     * in this process; returns when `change` resolved and what the workers saw.
     */
    async function changeUnderLoad(key: string, change: () => Promise<unknown>): Promise<{ changedAt: number; reports: LoopReport[] }> {
      const pool = await startWorkers();
      for (const worker of pool) {
        const first = await worker.ask({ type: 'verify', key }, 'verified');
        expect(first).toMatchObject({ ok: true });
      }
      await Promise.all(pool.map((worker) => worker.ask({ type: 'loop', key, concurrency: 4 }, 'looping')));
      await sleep(150);
      await change();
      const changedAt = Date.now();
      await sleep(400);
      const reports = (await Promise.all(pool.map((worker) => worker.ask({ type: 'stopLoop' }, 'loopStopped')))) as unknown as LoopReport[];
      return { changedAt, reports };
    }

    // Audit item: revocation reached other processes only through pub/sub and their cache TTL, so a
    // process that had the key cached kept admitting it for a while (the old test allowed "within
    // one second"; a process whose message was lost admitted it until the cache TTL). Now every
    // consume reads the record's status in the same script that counts. Fails before the fix: the
    // worker without a subscription keeps admitting after revoke() returned.
    it('no worker admits a request that started after revoke() resolved', async () => {
      const keys = manager();
      const { key, apiKey } = await keys.create({ name: 'revoke under load' });
      const { changedAt, reports } = await changeUnderLoad(key, () => keys.revoke(apiKey.id));
      for (const report of reports) {
        expect(report.admitted).toBeGreaterThan(0); // it was admitting before the revocation
        // Millisecond clocks: a request stamped changedAt may have begun just before revoke()
        // resolved; one stamped later began after it, and none of those may be admitted.
        expect(report.lastAdmittedStart).toBeLessThanOrEqual(changedAt);
        expect(report.lastStart).toBeGreaterThan(changedAt); // and kept asking after it
        expect(Object.keys(report.codes)).toEqual(['api_key_revoked']);
      }
      for (const worker of workers) expect(await worker.ask({ type: 'verify', key }, 'verified')).toMatchObject({ ok: false, code: 'api_key_revoked' });
    });

    // Audit item: same as above, for a suspension made through update().
    it('no worker admits a request that started after update({ status: "suspended" }) resolved', async () => {
      const keys = manager();
      const { key, apiKey } = await keys.create({ name: 'suspend under load' });
      const { changedAt, reports } = await changeUnderLoad(key, () => keys.update(apiKey.id, { status: 'suspended' }));
      for (const report of reports) {
        expect(report.admitted).toBeGreaterThan(0);
        expect(report.lastAdmittedStart).toBeLessThanOrEqual(changedAt);
        expect(report.lastStart).toBeGreaterThan(changedAt);
        expect(Object.keys(report.codes)).toEqual(['api_key_disabled']);
      }
      for (const worker of workers) expect(await worker.ask({ type: 'verify', key }, 'verified')).toMatchObject({ ok: false, code: 'api_key_disabled' });
    });
  });

  // ---------------------------------------------------------------------------------------------
  describe('records edited straight in Redis', () => {
    /** `keys.get(id)` must not call the key active: it rejects with invalid_record, or says isActive false. */
    async function expectNotReportedActive(keys: Keygate, id: string): Promise<void> {
      let found: Awaited<ReturnType<Keygate['get']>>;
      try {
        found = await keys.get(id);
      } catch (error) {
        expect((error as { code?: unknown }).code).toBe('invalid_record');
        return;
      }
      expect(found).not.toBeNull();
      expect(found!.isActive).toBe(false);
    }

    // Audit item: status was a deny-list (only 'revoked' and 'suspended' refused), so a status
    // keygate does not know was admitted; and a field that is not JSON made the Redis codec throw
    // a SyntaxError (a 503 quoting the value) instead of `invalid_record`. Fails before the fix:
    // "Revoked", "disabled" and "inactive" are admitted, and get() of bare Revoked throws a SyntaxError.
    it.each([
      ['"Revoked"', 'a status in the wrong case'],
      ['"disabled"', 'an unknown status'],
      ['"inactive"', 'another unknown status'],
      ['Revoked', 'bare text that is not JSON'],
    ])('refuses a key whose status was set to %s (%s) and does not report it active', async (raw) => {
      const keys = manager();
      const { key, apiKey } = await keys.create({ name: 'hand-edited status' });
      await admin.hset(recordKey(apiKey.id), 'status', raw);
      const result = await keys.verify(key);
      expect(result.ok).toBe(false);
      await expectNotReportedActive(keys, apiKey.id);
      expect((await admin.hget(recordKey(apiKey.id), 'useCount'))).toBe('0');
    });

    // Audit item: allowedIps entries that do not parse exactly (a trailing space, two CIDRs in one
    // entry, a leading zero, a prefix length out of range) were trimmed, split, read leniently or
    // dropped, which could widen access. Now such a key refuses every address. Fails before the
    // fix: at least "10.0.0.0/8 " and "10.0.0.1/32,10.0.0.2/32" admitted 10.0.0.1.
    it.each([['10.0.0.0/8 '], ['10.0.0.1/32,10.0.0.2/32'], ['010.0.0.1'], ['10.0.0.0/33']])(
      'refuses every address, 10.0.0.1 included, for a key whose allowedIps was set to [%j]',
      async (entry) => {
        const keys = manager();
        const { key, apiKey } = await keys.create({ name: 'hand-edited allowlist', allowedIps: ['192.0.2.0/24'] });
        await admin.hset(recordKey(apiKey.id), 'allowedIps', JSON.stringify([entry]));
        const result = await keys.verify(key, { ip: '10.0.0.1' });
        expect(result.ok).toBe(false);
        if (!result.ok) expect(result.error.code).toBe('ip_not_allowed');
        expect(await admin.hget(recordKey(apiKey.id), 'useCount')).toBe('0');
      },
    );

    // Audit item: a cached key was judged only from the cache until its TTL ran out; an edit in
    // Redis (which publishes nothing) went unseen. Now the consume reads the status it counts
    // against. Fails before the fix: the second verify is admitted from the cache.
    it('refuses a cached key at its next request once its status is set to "disabled" in Redis', async () => {
      const keys = manager();
      const { key, apiKey } = await keys.create({ name: 'cached, then edited' });
      expect((await keys.verify(key)).ok).toBe(true); // now cached
      await admin.hset(recordKey(apiKey.id), 'status', '"disabled"');
      const result = await keys.verify(key);
      expect(result.ok).toBe(false);
      expect(await admin.hget(recordKey(apiKey.id), 'useCount')).toBe('1');
      expect((await keys.verify(key)).ok).toBe(false); // and stays refused
    });

    // Audit item: as above, for the other lifecycle fields (a revocation or expiry written by hand).
    it.each([
      ['revokedAt', 'api_key_revoked'],
      ['expiresAt', 'api_key_expired'],
    ])('refuses a cached key at its next request once its %s is set in the past in Redis', async (field, code) => {
      const keys = manager();
      const { key, apiKey } = await keys.create({ name: `cached, then ${field}` });
      expect((await keys.verify(key)).ok).toBe(true);
      await admin.hset(recordKey(apiKey.id), field, String(Date.now() - 60_000));
      const result = await keys.verify(key);
      expect(result.ok || result.error.code).toBe(code);
    });

    // Review finding: a cached key with maxUses 2 whose useCount was set to nan (or -50) by hand
    // was admitted 100 times (52 times): the consume took the junk as a count.
    it.each(['nan', '-50', '1.5', 'inf'])('refuses (503, fail closed) a cached key whose useCount was set to %s in Redis, never over maxUses', async (junk) => {
      const keys = manager();
      const { key, apiKey } = await keys.create({ name: 'junk count', maxUses: 2 });
      expect((await keys.verify(key)).ok).toBe(true);
      await admin.hset(recordKey(apiKey.id), 'useCount', junk);
      for (let i = 0; i < 5; i++) {
        const result = await keys.verify(key);
        expect(result.ok || result.error.code).toBe('store_unavailable');
      }
      expect(await admin.hget(recordKey(apiKey.id), 'useCount')).toBe(junk);
    });

    // Review finding: a bucket or day counter that is not a number was read as an empty state (a
    // full bucket, a new day), so a key rate limited to 1 a second (or 1 a day) was admitted again
    // at once. Fails before the fix: the second request is admitted.
    it.each([
      ['c:tokens', 'full'],
      ['c:tokens', 'nan'],
      ['c:tokens', '-inf'],
      ['c:tokensAt', 'soon'],
      ['c:tokensAt', 'nan'],
      ['c:dayCount', 'lots'],
      ['c:dayCount', '-5'],
      ['c:day', 'today'],
      ['c:day', '1e999'],
    ])('refuses (503, fail closed) a cached key whose %s was set to %j in Redis, counting nothing', async (field, junk) => {
      const keys = manager();
      const { key, apiKey } = await keys.create({ name: 'junk counter', rateLimit: { perSecond: 1, perDay: 1 } });
      expect((await keys.verify(key)).ok).toBe(true); // the bucket and the day are used up now
      await admin.hset(recordKey(apiKey.id), field, junk);
      const before = await admin.hgetall(recordKey(apiKey.id));
      for (let i = 0; i < 3; i++) {
        const result = await keys.verify(key);
        expect(result.ok || result.error.code).toBe('store_unavailable');
      }
      expect(await admin.hgetall(recordKey(apiKey.id))).toEqual(before);
    });

    // Not a review finding: the guard against failing closed on the counters keygate writes itself
    // (a bucket never used is 'null'; a record of an older layout may have no counters at all).
    it('still counts a key whose counters are absent or in their empty state', async () => {
      const keys = manager();
      const { key, apiKey } = await keys.create({ name: 'empty counters', rateLimit: { perSecond: 5, perDay: 10 } });
      expect(await admin.hget(recordKey(apiKey.id), 'c:tokens')).toBe('null');
      expect((await keys.verify(key)).ok).toBe(true);
      await admin.hdel(recordKey(apiKey.id), 'c:tokens', 'c:tokensAt', 'c:day', 'c:dayCount');
      const result = await keys.verify(key);
      expect(result.ok).toBe(true);
      if (result.ok) expect(result.apiKey.useCount).toBe(2);
    });
  });

  // ---------------------------------------------------------------------------------------------
  describe('a polluted Object.prototype', () => {
    const NOW = Date.UTC(2026, 0, 15, 12, 0, 0);
    const POLLUTION: Record<string, unknown> = {
      ownerId: 'polluted-owner',
      tenantId: 'polluted-tenant',
      description: 'polluted description',
      environment: 'polluted',
      oldStatus: 'active',
      burst: 50,
    };

    /** Runs `body` with POLLUTION set on Object.prototype as a plain assignment would (enumerable), removed after. */
    async function polluted(body: () => Promise<void>): Promise<void> {
      const prototype = Object.prototype as Record<string, unknown>;
      try {
        for (const [field, value] of Object.entries(POLLUTION)) prototype[field] = value;
        await body();
      } finally {
        for (const field of Object.keys(POLLUTION)) delete prototype[field];
      }
    }

    /** Every hash of the namespace and every key name: where an inherited value would show. */
    async function everything(): Promise<string> {
      const keys = (await admin.keys(`${NS}*`)).sort();
      const hashes = await Promise.all(keys.map(async (key) => ((await admin.type(key)) === 'hash' ? admin.hgetall(key) : null)));
      return JSON.stringify({ keys, hashes });
    }

    // Review finding: the codec read `record[field]`, so a record without an ownerId was stored
    // with the prototype's (and listed under that owner). Fails before the fix: the hashes hold
    // "polluted-owner", "polluted description", … and a list:owner:polluted-owner key exists.
    it('insert, update and rotate through the store write nothing inherited', async () => {
      const redisStore = new RedisStore({ client, keyPrefix: NS });
      await polluted(async () => {
        const record = testRecord(NOW, { status: 'suspended' });
        await redisStore.insert(record);
        await redisStore.update(record.id, { name: 'renamed', updatedAt: new Date(NOW + 1) });
        // With a grace period, no oldStatus: the prototype's "active" must not reactivate the old key.
        const result = await redisStore.rotate({
          oldId: record.id,
          replacement: testRecord(NOW + 2, { rotatedFromId: record.id }),
          oldRevokedAt: new Date(NOW + 60_000),
          now: new Date(NOW + 2),
        });
        expect(Object.keys(result!.replacement)).not.toContain('ownerId');
        expect(result!.old.status).toBe('suspended');
      });
      const stored = await everything();
      expect(stored).not.toMatch(/polluted/);
    });

    it('create, update and rotate through keygate write nothing inherited', async () => {
      const keys = manager();
      await polluted(async () => {
        const { apiKey } = await keys.create({ name: 'polluted create' });
        await keys.update(apiKey.id, { name: 'polluted update' });
        await keys.rotate(apiKey.id);
      });
      const stored = await everything();
      expect(stored).toMatch(/polluted update/); // the records are there
      expect(stored).not.toMatch(/polluted-|polluted description/);
    });

    // Review finding: the consume read `rateLimit.burst` through the prototype, so a key limited to
    // 1 request a second had a burst of 50. Fails before the fix: 50 consumes are admitted.
    it('a consume takes no inherited limit', async () => {
      const redisStore = new RedisStore({ client, keyPrefix: NS });
      const record = testRecord(NOW, { rateLimit: { perSecond: 1 } });
      await redisStore.insert(record);
      const outcomes: boolean[] = [];
      await polluted(async () => {
        for (let i = 0; i < 3; i++) outcomes.push((await redisStore.consume(record.id, { now: NOW, maxUses: null, rateLimit: { perSecond: 1 } }))!.admitted);
      });
      expect(outcomes).toEqual([true, false, false]);
    });
  });

  // ---------------------------------------------------------------------------------------------
  describe('a Redis user without PUBLISH', () => {
    const NO_PUBLISH_USER = 'keygate-audit-no-publish';

    afterEach(async () => {
      await admin.call('ACL', 'DELUSER', NO_PUBLISH_USER);
    });

    // Review finding (documented, not changed): the update and rotate scripts publish the
    // invalidation message themselves, so a user whose ACL lacks PUBLISH can no longer change a
    // key. The PUBLISH comes before the first write: the change is refused as 503, never half made.
    it('cannot revoke, update or rotate: each is refused with store_unavailable and the key is unchanged', async () => {
      await admin.call('ACL', 'SETUSER', NO_PUBLISH_USER, 'reset', 'on', '>audit-pw', '~*', '&*', '+@all', '-publish');
      const limited = server.client({ username: NO_PUBLISH_USER, password: 'audit-pw' });
      try {
        await ready(limited);
        const { key, apiKey } = await manager().create({ name: 'no publish' });
        const keys = manager({ client: limited });
        const before = await admin.hgetall(recordKey(apiKey.id));
        const keyCount = (await admin.keys(`${NS}*`)).length;
        for (const change of [() => keys.revoke(apiKey.id), () => keys.update(apiKey.id, { status: 'suspended' }), () => keys.rotate(apiKey.id)]) {
          const error = await change().then(
            () => undefined,
            (rejection: unknown) => rejection as { code?: unknown },
          );
          expect(error?.code).toBe('store_unavailable');
        }
        expect(await admin.hgetall(recordKey(apiKey.id))).toEqual(before);
        expect((await admin.keys(`${NS}*`)).length).toBe(keyCount);
        expect((await keys.verify(key)).ok).toBe(true); // verifying needs no PUBLISH
      } finally {
        await Promise.all(managers.splice(0).map((keys) => keys.close()));
        await limited.quit();
      }
    });
  });

  // ---------------------------------------------------------------------------------------------
  describe('no keyHash in store errors', () => {
    const LIMITED_USER = 'keygate-audit-limited';

    afterEach(async () => {
      await admin.call('ACL', 'DELUSER', LIMITED_USER);
    });

    // Audit item: ioredis attaches a failed command's arguments to its errors (ReplyError.command.args),
    // and the insert script's arguments are the record, keyHash included; keygate kept that error
    // as the `cause` of its store_unavailable error, so logging the error logged the hash. Fails
    // before the fix: util.inspect of the error shows `$hmac-sha256$…` (or `$2b$…`).
    it.each([['sha256'], ['bcrypt']] as const)(
      'keys.create() failing with NOPERM on the insert script (%s) leaks no hash through inspect, JSON or stack',
      async (hashing) => {
        // A user that may do everything but run scripts: the index and list writes succeed, the
        // script that writes the record (with its keyHash) fails with a Redis reply error.
        await admin.call('ACL', 'SETUSER', LIMITED_USER, 'reset', 'on', '>audit-pw', '~*', '&*', '+@all', '-evalsha', '-eval');
        const limited = server.client({ username: LIMITED_USER, password: 'audit-pw' });
        try {
          await ready(limited);
          const keys = manager({ client: limited, hashing });
          const error: unknown = await keys.create({ name: 'doomed' }).then(
            () => {
              throw new Error('create() succeeded for a user without EVALSHA');
            },
            (rejection: unknown) => rejection,
          );
          // Sanity: it did fail in Redis, with a reply error (kept for logs, without its arguments).
          const shown = inspect(error, { depth: 10 });
          expect(shown).toMatch(/NOPERM/);
          for (const text of [shown, JSON.stringify(error), String((error as Error).stack)]) {
            expect(text).not.toContain('$hmac-sha256$');
            expect(text).not.toContain('$2b$');
          }
        } finally {
          await Promise.all(managers.splice(0).map((keys) => keys.close()));
          await limited.quit();
        }
      },
    );
  });
});
