/**
 * The attacks of the outside audit (issue 9), replayed against the Memory store and the middleware.
 * Each test failed on the code the audit read; the Redis and SQL halves are in test/redis and
 * test/sql. Items are numbered as in the audit.
 */
import { inspect } from 'node:util';
import { hashSync } from 'bcryptjs';
import express, { type NextFunction, type Request, type Response } from 'express';
import request from 'supertest';
import {
  type ApiKeyRecord,
  type ApiKeyStore,
  type Keygate,
  KeygateError,
  MemoryStore,
  invalidRecord,
  keygate,
  requireScopes,
} from 'keygate';
import { formatKey } from '../../src/key/format';
import { randomBase62 } from '../../src/key/base62';
import { CountingStore, testClock } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';
import { rejection } from '../helpers/rejection';

const track = closeAfterEach();

/** A well-formed key for `keyPrefix` (`<prefix>_<lookupId>`) with another secret. */
function withSecret(keyPrefix: string, secret: string): string {
  const at = keyPrefix.lastIndexOf('_');
  return formatKey(keyPrefix.slice(0, at), keyPrefix.slice(at + 1), secret.padStart(32, '0').slice(-32));
}

function keyPrefixOf(key: string): string {
  return key.split('_').slice(0, -1).join('_');
}

/** Records every process warning while `work` runs. */
async function warningsDuring(work: () => Promise<void>): Promise<{ message: string; code: string | undefined }[]> {
  const seen: { message: string; code: string | undefined }[] = [];
  const original = process.emitWarning;
  process.emitWarning = ((warning: string | Error, options?: { code?: string }) => {
    seen.push({ message: String(warning), code: options?.code });
  }) as typeof process.emitWarning;
  try {
    await work();
  } finally {
    process.emitWarning = original;
  }
  return seen;
}

// ---------------------------------------------------------------------------------------------
describe('1. an admission by one keygate instance is not trusted by another', () => {
  function twoInstanceApp() {
    const users = track(keygate({ store: new MemoryStore(), prefix: 'pk_user', hashing: 'sha256' }));
    const admins = track(keygate({ store: new MemoryStore(), prefix: 'sk_admin', hashing: 'sha256' }));
    const app = express();
    // Optional authentication for everyone, as the audit's app had it.
    app.use(users.authenticate({ onError: (_error: KeygateError, _req: Request, _res: Response, next: NextFunction) => next() }));
    app.get('/admin/secrets', admins.authenticate(), (_req, res) => {
      res.json({ secrets: true });
    });
    app.get('/me', (req, res) => {
      res.json({ id: req.apiKey?.id ?? null });
    });
    return { app, users, admins };
  }

  it('refuses a user key on the admin route (the audit got 200)', async () => {
    const { app, users } = twoInstanceApp();
    const { key } = await users.create({ name: 'customer', scopes: ['*'] });
    await request(app).get('/me').set('Authorization', `Bearer ${key}`).expect(200);
    const response = await request(app).get('/admin/secrets').set('Authorization', `Bearer ${key}`);
    expect(response.status).toBe(401);
    expect(response.body.code).toBe('malformed_api_key');
  });

  it('admits an admin key on the admin route, counted once in the admin store', async () => {
    const { app, admins } = twoInstanceApp();
    const { key, apiKey } = await admins.create({ name: 'operator' });
    await request(app).get('/admin/secrets').set('Authorization', `Bearer ${key}`).expect(200);
    expect((await admins.get(apiKey.id))?.useCount).toBe(1);
  });

  it('still counts a request once when the same instance authenticates it twice', async () => {
    const keys = track(keygate({ store: new MemoryStore(), prefix: 'pk_user', hashing: 'sha256' }));
    const app = express();
    app.use(keys.authenticate());
    app.get('/x', keys.authenticate({ scopes: ['x:read'] }), (_req, res) => {
      res.json({ ok: true });
    });
    const { key, apiKey } = await keys.create({ name: 'k', scopes: ['x:read'] });
    await request(app).get('/x').set('X-API-Key', key).expect(200);
    expect((await keys.get(apiKey.id))?.useCount).toBe(1);
  });
});

// ---------------------------------------------------------------------------------------------
describe('2. stored values keygate did not write fail closed', () => {
  async function storedKey(overrides: Partial<Record<keyof ApiKeyRecord, unknown>>) {
    const store = new MemoryStore();
    const keys = track(keygate({ store, prefix: 'pk_test', hashing: 'sha256' }));
    const { key, apiKey } = await keys.create({ name: 'edited' });
    const record = (await store.findById(apiKey.id)) as ApiKeyRecord;
    // A record written behind keygate's back (by hand, an import, a custom store): re-inserted raw.
    const raw = new MemoryStore();
    await raw.insert({ ...record, ...overrides } as ApiKeyRecord);
    const edited = track(keygate({ store: raw, prefix: 'pk_test', hashing: 'sha256' }));
    return { key, id: apiKey.id, keys: edited };
  }

  it.each([['10.0.0.0/8 '], ['10.0.0.1/32,10.0.0.2/32'], ['010.0.0.1'], ['10.0.0.0/33']])(
    'refuses every address for an allowedIps entry that does not parse (%j), and warns once without the key',
    async (entry) => {
      const { key, id, keys } = await storedKey({ allowedIps: [entry] });
      const warnings = await warningsDuring(async () => {
        for (const ip of ['10.0.0.1', '10.0.0.2', '203.0.113.9']) {
          const result = await keys.verify(key, { ip });
          expect(result.ok ? 'admitted' : result.error.code).toBe('ip_not_allowed');
        }
      });
      const relevant = warnings.filter((warning) => warning.code === 'KEYGATE_INVALID_ALLOWED_IPS');
      expect(relevant).toHaveLength(1);
      expect(relevant[0]?.message).toContain(id);
      expect(relevant[0]?.message).not.toContain(key);
    },
  );

  it.each(['Revoked', 'disabled', 'inactive', 'ACTIVE', ''])('refuses a key whose stored status is %p and never shows it active', async (status) => {
    const { key, id, keys } = await storedKey({ status });
    const result = await keys.verify(key);
    expect(result.ok).toBe(false);
    const error = await rejection(() => keys.get(id));
    expect(error).toBeInstanceOf(KeygateError);
    expect((error as KeygateError).code).toBe('invalid_record');
    expect((error as KeygateError).field).toBe('status');
    expect(await rejection(() => keys.list())).toBeInstanceOf(KeygateError);
  });

  it('refuses a key whose store cannot decode its record (the store throws invalid_record) like an unknown key, not with a 500', async () => {
    const store = new CountingStore();
    const keys = track(keygate({ store, prefix: 'pk_test', hashing: 'sha256' }));
    const { key } = await keys.create({ name: 'k' });
    store.findByKeyPrefix = async () => {
      throw invalidRecord('some-id', 'metadata', 'is not valid JSON');
    };
    const warnings = await warningsDuring(async () => {
      const result = await keys.verify(key);
      expect(result.ok ? 'admitted' : result.error.code).toBe('invalid_api_key');
    });
    expect(warnings.map((warning) => warning.code)).toContain('KEYGATE_INVALID_RECORD');
  });

  it.each([
    ['scopes', 'leads:read'],
    ['maxUses', -1],
    ['useCount', '3'],
    ['rateLimit', { perSecond: 0 }],
    ['rateLimit', { perWeek: 5 }],
    ['tags', [1, 2]],
    ['name', 42],
    ['metadata', []],
  ])('refuses a key whose stored %s is %j instead of guessing', async (field, value) => {
    const { key, keys } = await storedKey({ [field]: value });
    const result = await keys.verify(key);
    expect(result.ok ? 'admitted' : result.error.code).toBe('invalid_api_key');
  });
});

// ---------------------------------------------------------------------------------------------
describe('3. wrong secrets from others never lock a holder out', () => {
  async function attacked(options: { sameAddress: boolean; holderSeenBefore: boolean }) {
    const store = new MemoryStore();
    const clock = testClock();
    const settings = { store, prefix: 'pk_test', bcryptCost: 4, hashThreads: 0, now: clock.now };
    const keys = track(keygate(settings));
    const { key } = await keys.create({ name: 'holder' });
    const holderIp = options.sameAddress ? '198.51.100.1' : '192.0.2.10';
    if (options.holderSeenBefore) expect((await keys.verify(key, { ip: holderIp })).ok).toBe(true);
    // A fresh process (no memory of the holder) when the holder was not seen before.
    const target = options.holderSeenBefore ? keys : track(keygate(settings));
    const keyPrefix = keyPrefixOf(key);
    for (let i = 0; i < 10; i++) await target.verify(withSecret(keyPrefix, `wrong${i}`), { ip: '198.51.100.1' });
    // Then one wrong secret a second for two minutes, with the holder's cache entry long expired.
    const outcomes: string[] = [];
    for (let second = 0; second < 120; second++) {
      clock.advance(1_000);
      await target.verify(withSecret(keyPrefix, `later${second}`), { ip: '198.51.100.1' });
      if (second % 31 === 30) {
        const result = await target.verify(key, { ip: holderIp });
        outcomes.push(result.ok ? 'admitted' : result.error.code);
      }
    }
    return outcomes;
  }

  it('admits a holder whose key verified before, even from the attacker address (the audit got 429)', async () => {
    expect(await attacked({ sameAddress: true, holderSeenBefore: true })).toEqual(['admitted', 'admitted', 'admitted']);
  });

  it('admits a holder this process never saw, from another address', async () => {
    expect(await attacked({ sameAddress: false, holderSeenBefore: false })).toEqual(['admitted', 'admitted', 'admitted']);
  });

  it('still refuses the attacker once the budget of its keyPrefix and address is spent', async () => {
    const clock = testClock();
    const keys = track(
      keygate({
        store: new MemoryStore(), prefix: 'pk_test', bcryptCost: 4, hashThreads: 0, now: clock.now,
        failedAttemptLimit: { processBurst: 100, processPerSecond: 100 },
      }),
    );
    const { key } = await keys.create({ name: 'holder' });
    const codes: string[] = [];
    for (let i = 0; i < 12; i++) {
      const result = await keys.verify(withSecret(keyPrefixOf(key), `x${i}`), { ip: '198.51.100.1' });
      codes.push(result.ok ? 'admitted' : result.error.code);
    }
    expect(codes.slice(0, 10)).toEqual(Array(10).fill('invalid_api_key'));
    expect(codes.slice(10)).toEqual(['too_many_failed_attempts', 'too_many_failed_attempts']);
  });

  it('bounds the compares of an address that keeps failing across many keyPrefixes, process-wide', async () => {
    const clock = testClock();
    const keys = track(
      keygate({
        store: new MemoryStore(), prefix: 'pk_test', bcryptCost: 4, hashThreads: 0, now: clock.now,
        failedAttemptLimit: { processBurst: 5, processPerSecond: 1 },
      }),
    );
    const codes: string[] = [];
    for (let i = 0; i < 20; i++) {
      const result = await keys.verify(withSecret(`pk_test_${randomBase62(16)}`, `x${i}`), { ip: '198.51.100.1' });
      codes.push(result.ok ? 'admitted' : result.error.code);
    }
    // One clean failure, then suspect ones while the process-wide budget (5 in a row) lasts.
    expect(codes).toEqual([...Array(5).fill('invalid_api_key'), ...Array(15).fill('too_many_failed_attempts')]);
    // Another address is not suspect: it still gets its compare.
    const other = await keys.verify(withSecret(`pk_test_${randomBase62(16)}`, 'y'), { ip: '192.0.2.1' });
    expect(other.ok ? 'admitted' : other.error.code).toBe('invalid_api_key');
  });
});

// ---------------------------------------------------------------------------------------------
describe('4. wrong secrets for many keyPrefixes cannot starve other customers (real clock)', () => {
  it('verifies an unrelated cold key within 2 s while 40 keyPrefixes take ~160 wrong secrets a second', async () => {
    const store = new MemoryStore();
    const keys = track(keygate({ store, prefix: 'pk_test', bcryptCost: 10, failedAttemptLimit: { delayMs: 0 } }));
    // The attacker's 40 keys of their own (one bcrypt hash shared, to save the set-up 40 hashes).
    const sharedHash = hashSync('not-the-secret', 10);
    const attackerPrefixes: string[] = [];
    for (let i = 0; i < 40; i++) {
      const keyPrefix = `pk_test_${randomBase62(16)}`;
      attackerPrefixes.push(keyPrefix);
      const now = new Date();
      await store.insert({
        id: `attacker-${i}`, keyPrefix, keyHash: sharedHash, name: 'attacker', status: 'active', scopes: [], allowedIps: [],
        maxUses: null, useCount: 0, rateLimit: null, expiresAt: null, createdAt: now, updatedAt: now, lastUsedAt: null,
        revokedAt: null, metadata: {}, tags: [], allowedOrigins: [], requireHttps: false, clientCertificateSha256: [], maxConcurrent: null, deletedAt: null, rotationFrequencyDays: null, alerts: null,
      });
    }
    const victim = await keys.create({ name: 'unrelated customer' });

    let sent = 0;
    let stop = false;
    const flood = (async () => {
      const inflight: Promise<unknown>[] = [];
      while (!stop) {
        for (let burst = 0; burst < 8 && !stop; burst++) {
          const keyPrefix = attackerPrefixes[sent % attackerPrefixes.length] as string;
          inflight.push(keys.verify(withSecret(keyPrefix, `flood${sent}`), { ip: '203.0.113.66' }));
          sent++;
        }
        await new Promise((resolve) => setTimeout(resolve, 50)); // 8 every 50 ms: 160 a second
      }
      await Promise.allSettled(inflight);
    })();
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // let the queue fill, as in the audit
    const started = performance.now();
    const result = await keys.verify(victim.key, { ip: '192.0.2.44' });
    const elapsed = performance.now() - started;
    stop = true;
    await flood;
    expect(result.ok).toBe(true);
    expect(sent).toBeGreaterThan(200);
    expect(elapsed).toBeLessThan(2_000);
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------
describe('5. an unknown keyPrefix costs what a wrong secret costs', () => {
  it('leaves a one-probe timing classifier at no better than 75 % over 120 probes', async () => {
    const store = new MemoryStore();
    const keys = track(
      keygate({ store, prefix: 'pk_test', bcryptCost: 8, hashThreads: 1, failedAttemptLimit: { burst: 1_000, perSecond: 1_000, processBurst: 1_000, processPerSecond: 1_000 } }),
    );
    const { key } = await keys.create({ name: 'known' });
    const known = keyPrefixOf(key);
    await keys.verify(withSecret(known, 'warm-up'));
    const timings: { unknown: boolean; ms: number }[] = [];
    for (let i = 0; i < 120; i++) {
      const unknown = i % 2 === 0;
      const probe = withSecret(unknown ? `pk_test_${randomBase62(16)}` : known, `probe${i}`);
      const started = performance.now();
      const result = await keys.verify(probe);
      timings.push({ unknown, ms: performance.now() - started });
      expect(result.ok ? 'admitted' : result.error.code).toBe('invalid_api_key');
    }
    // The attacker's best single threshold, chosen knowing every answer (better than any real attacker).
    let best = 0;
    for (const { ms: threshold } of timings) {
      for (const slowMeansKnown of [true, false]) {
        const correct = timings.filter(({ unknown, ms }) => (ms >= threshold === slowMeansKnown) === !unknown).length;
        best = Math.max(best, correct / timings.length);
      }
    }
    expect(best).toBeLessThanOrEqual(0.75);
  }, 60_000);

  it('counts unknown keyPrefixes against the same budgets, so 429 tells nothing either', async () => {
    const store = new MemoryStore();
    const { key } = await track(keygate({ store, prefix: 'pk_test', bcryptCost: 4, hashThreads: 0 })).create({ name: 'known' });
    const answers = async (keyPrefix: string) => {
      // A fresh instance each time: fresh budgets, the same store.
      const keys = track(keygate({ store, prefix: 'pk_test', bcryptCost: 4, hashThreads: 0 }));
      const codes: string[] = [];
      for (let i = 0; i < 11; i++) {
        const result = await keys.verify(withSecret(keyPrefix, `s${i}`), { ip: '198.51.100.7' });
        codes.push(result.ok ? 'admitted' : result.error.code);
      }
      return codes;
    };
    expect(await answers(`pk_test_${randomBase62(16)}`)).toEqual(await answers(keyPrefixOf(key)));
  });
});

// ---------------------------------------------------------------------------------------------
describe('6 and 7. rotation neither multiplies uses nor revives a revoked key', () => {
  it('refuses to rotate a key in its grace period again (5 rotations used to admit 500 of maxUses 100)', async () => {
    const clock = testClock();
    const keys = track(keygate({ store: new MemoryStore(), prefix: 'pk_test', hashing: 'sha256', now: clock.now }));
    const { key, apiKey } = await keys.create({ name: 'metered', maxUses: 100 });
    const held = [key];
    const first = await keys.rotate(apiKey.id, { gracePeriodMs: 3_600_000 });
    held.push(first.key);
    for (let i = 0; i < 4; i++) {
      const error = await rejection(() => keys.rotate(apiKey.id, { gracePeriodMs: 3_600_000 }));
      expect((error as KeygateError).code).toBe('invalid_argument');
    }
    let admitted = 0;
    for (const candidate of held) {
      for (let i = 0; i < 150; i++) if ((await keys.verify(candidate)).ok) admitted++;
    }
    // The documented overlap: the old key may spend what it had left during its grace period,
    // and the new key starts with those same uses left: at most twice the uses left at rotation.
    expect(admitted).toBe(200);
  });

  it('refuses to rotate a replacement while the key it replaced is in its grace period (a chain used to mint 5 × maxUses)', async () => {
    const clock = testClock();
    const keys = track(keygate({ store: new MemoryStore(), prefix: 'pk_test', hashing: 'sha256', now: clock.now }));
    const first = await keys.create({ name: 'metered', maxUses: 5 });
    const second = await keys.rotate(first.apiKey.id, { gracePeriodMs: 3_600_000 });
    const error = await rejection(() => keys.rotate(second.apiKey.id, { gracePeriodMs: 3_600_000 }));
    expect((error as KeygateError).code).toBe('invalid_argument');
    let admitted = 0;
    for (const candidate of [first.key, second.key]) {
      for (let i = 0; i < 10; i++) if ((await keys.verify(candidate)).ok) admitted++;
    }
    expect(admitted).toBe(10); // twice the 5 uses left at the one rotation, never more
    // Once the grace period is over (or the old key is revoked), the replacement may be rotated.
    await keys.revoke(first.apiKey.id);
    const third = await keys.rotate(second.apiKey.id);
    expect(third.apiKey.maxUses).toBe(0);
  });

  it('keeps a key revoked once its grace period has passed, whatever update says (the audit revived one)', async () => {
    const clock = testClock();
    const keys = track(keygate({ store: new MemoryStore(), prefix: 'pk_test', hashing: 'sha256', now: clock.now }));
    const { key, apiKey } = await keys.create({ name: 'old' });
    await keys.rotate(apiKey.id, { gracePeriodMs: 1_000 });
    clock.advance(2_000);
    for (const status of ['suspended', 'active'] as const) {
      const error = await rejection(() => keys.update(apiKey.id, { status }));
      expect((error as KeygateError).code).toBe('invalid_argument');
    }
    expect(((await rejection(() => keys.rotate(apiKey.id))) as KeygateError).code).toBe('invalid_argument');
    const result = await keys.verify(key);
    expect(result.ok ? 'admitted' : result.error.code).toBe('api_key_revoked');
    expect((await keys.get(apiKey.id))?.isActive).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
describe('8. a request answered 503 counts nothing', () => {
  it('does not apply a consume that reaches the store after keygate gave up (real clock)', async () => {
    const inner = new MemoryStore();
    let delayConsumeMs = 0;
    const slow: ApiKeyStore = {
      insert: (record) => inner.insert(record),
      findById: (id) => inner.findById(id),
      findByKeyPrefix: (keyPrefix) => inner.findByKeyPrefix(keyPrefix),
      update: (id, patch) => inner.update(id, patch),
      rotate: (rotation) => inner.rotate(rotation),
      list: (query) => inner.list(query),
      purge: (purge) => inner.purge(purge),
      // A store whose consume waits (a queue, a lock) before it runs, like a paused Redis.
      consume: async (id, consumeRequest) => {
        await new Promise((resolve) => setTimeout(resolve, delayConsumeMs));
        return inner.consume(id, consumeRequest);
      },
    };
    const keys = track(keygate({ store: slow, prefix: 'pk_test', hashing: 'sha256', storeTimeoutMs: 300 }));
    const { key, apiKey } = await keys.create({ name: 'one use', maxUses: 1 });
    delayConsumeMs = 500;
    const refused = await keys.verify(key);
    expect(refused.ok ? 'admitted' : refused.error.code).toBe('store_unavailable');
    await new Promise((resolve) => setTimeout(resolve, 400)); // the late consume has reached the store by now
    expect((await keys.get(apiKey.id))?.useCount).toBe(0);
    delayConsumeMs = 0;
    expect((await keys.verify(key)).ok).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
describe('9. a revocation is final at once, whatever another instance has cached', () => {
  /** The store as another process sees it: same data, but no change notifications reach it. */
  function withoutNotifications(store: MemoryStore): ApiKeyStore {
    return {
      insert: (record) => store.insert(record),
      findById: (id) => store.findById(id),
      findByKeyPrefix: (keyPrefix) => store.findByKeyPrefix(keyPrefix),
      update: (id, patch) => store.update(id, patch),
      rotate: (rotation) => store.rotate(rotation),
      list: (query) => store.list(query),
      purge: (purge) => store.purge(purge),
      consume: (id, consumeRequest) => store.consume(id, consumeRequest),
    };
  }

  it.each([
    ['revoke()', (keys: Keygate, id: string) => keys.revoke(id), 'api_key_revoked'],
    ["update({ status: 'suspended' })", (keys: Keygate, id: string) => keys.update(id, { status: 'suspended' }), 'api_key_disabled'],
    ['update({ expiresAt: now })', (keys: Keygate, id: string) => keys.update(id, { expiresAt: Date.now() + 1 }), 'api_key_expired'],
  ])('refuses the very next request after %s in an instance that still caches the key', async (_what, change, code) => {
    const shared = new MemoryStore();
    const admin = track(keygate({ store: shared, prefix: 'pk_test', hashing: 'sha256' }));
    const other = track(keygate({ store: withoutNotifications(shared), prefix: 'pk_test', hashing: 'sha256' }));
    const { key, apiKey } = await admin.create({ name: 'k' });
    expect((await other.verify(key)).ok).toBe(true);
    await change(admin, apiKey.id);
    await new Promise((resolve) => setTimeout(resolve, 5));
    const result = await other.verify(key);
    expect(result.ok ? 'admitted' : result.error.code).toBe(code);
  });
});

// ---------------------------------------------------------------------------------------------
describe('10. what the app receives cannot steer later decisions', () => {
  function mutatingApp(keys: Keygate, mutate: (req: Request) => void) {
    const app = express();
    app.use(keys.authenticate());
    app.get('/x', (req, res) => {
      const seen = { plan: req.apiKey?.metadata.plan, perSecond: req.apiKey?.rateLimit?.perSecond, scopes: [...(req.apiKey?.scopes ?? [])] };
      mutate(req);
      res.json(seen);
    });
    app.get('/admin', requireScopes('admin:write'), (_req, res) => {
      res.json({ admin: true });
    });
    return app;
  }

  it('refuses an expired key although a handler moved req.apiKey.expiresAt forward (the audit admitted it)', async () => {
    const clock = testClock();
    const keys = track(keygate({ store: new MemoryStore(), prefix: 'pk_test', hashing: 'sha256', now: clock.now }));
    const { key } = await keys.create({ name: 'short', expiresAt: clock.now() + 10_000 });
    const app = mutatingApp(keys, (req) => req.apiKey?.expiresAt?.setUTCFullYear(3000));
    await request(app).get('/x').set('X-API-Key', key).expect(200);
    clock.advance(11_000); // past the expiry, within the verification cache's 30 s
    const response = await request(app).get('/x').set('X-API-Key', key);
    expect(response.body.code).toBe('api_key_expired');
  });

  it('keeps a perSecond: 1 key at one request a second although a handler raised req.apiKey.rateLimit (the audit got 50)', async () => {
    const clock = testClock();
    const keys = track(keygate({ store: new MemoryStore(), prefix: 'pk_test', hashing: 'sha256', now: clock.now }));
    const { key } = await keys.create({ name: 'slow', rateLimit: { perSecond: 1 }, metadata: { plan: 'free' }, scopes: ['x:read'] });
    const app = mutatingApp(keys, (req) => {
      if (!req.apiKey) return;
      if (req.apiKey.rateLimit) req.apiKey.rateLimit.perSecond = 1_000;
      req.apiKey.metadata.plan = 'enterprise';
      req.apiKey.scopes.push('admin:write');
    });
    const statuses: number[] = [];
    for (let i = 0; i < 50; i++) statuses.push((await request(app).get('/x').set('X-API-Key', key)).status);
    expect(statuses.filter((status) => status === 200)).toHaveLength(1);
    clock.advance(1_000);
    const response = await request(app).get('/x').set('X-API-Key', key).expect(200);
    expect(response.body).toEqual({ plan: 'free', perSecond: 1, scopes: ['x:read'] });
    clock.advance(1_000);
    expect((await request(app).get('/admin').set('X-API-Key', key)).status).toBe(403);
  });

  it('hands verify() callers copies too', async () => {
    const clock = testClock();
    const keys = track(keygate({ store: new MemoryStore(), prefix: 'pk_test', hashing: 'sha256', now: clock.now }));
    const { key } = await keys.create({ name: 'k', expiresAt: clock.now() + 1_000, metadata: { tier: { level: 1 } } });
    const first = await keys.verify(key);
    if (!first.ok) throw first.error;
    first.apiKey.expiresAt?.setTime(clock.now() + 10_000_000);
    (first.apiKey.metadata.tier as { level: number }).level = 99;
    const second = await keys.verify(key);
    if (!second.ok) throw second.error;
    expect(second.apiKey.metadata).toEqual({ tier: { level: 1 } });
    clock.advance(1_000);
    const third = await keys.verify(key);
    expect(third.ok ? 'admitted' : third.error.code).toBe('api_key_expired');
  });
});

// ---------------------------------------------------------------------------------------------
describe('11. store errors carry no command arguments', () => {
  it('keeps a driver error attached data (such as ioredis command args) out of what keygate throws', async () => {
    const store = new CountingStore();
    let captured = '';
    const original = store.insert;
    store.insert = async (record) => {
      captured = record.keyHash;
      const failure = Object.assign(new Error('NOPERM this user has no permissions to run the evalsha command'), {
        name: 'ReplyError',
        code: 'NOPERM',
        command: { name: 'evalsha', args: ['sha', '1', 'keygate:key:{x}', 'keyHash', record.keyHash] },
        detail: `Failing row contains (${record.keyHash})`,
      });
      throw failure;
    };
    const keys = track(keygate({ store, prefix: 'pk_test', hashing: 'sha256' }));
    const error = await rejection(() => keys.create({ name: 'k' }));
    store.insert = original;
    expect(captured).toMatch(/^\$hmac-sha256\$/);
    for (const text of [inspect(error, { depth: 20, showHidden: true }), JSON.stringify(error), String((error as Error).stack)]) {
      expect(text).not.toContain(captured);
      expect(text).not.toContain('$hmac-sha256$');
    }
    expect((error as KeygateError).code).toBe('store_unavailable');
    expect(inspect(error, { depth: 20 })).toContain('NOPERM');
  });
});

// ---------------------------------------------------------------------------------------------
describe('12. answers that say only what is true', () => {
  it('sends RateLimit-Policy but no RateLimit remaining on a 403 usage_exhausted', async () => {
    const keys = track(keygate({ store: new MemoryStore(), prefix: 'pk_test', hashing: 'sha256' }));
    const { key } = await keys.create({ name: 'k', maxUses: 1, rateLimit: { perSecond: 5 } });
    const app = express();
    app.use(keys.authenticate());
    app.get('/x', (_req, res) => {
      res.json({ ok: true });
    });
    await request(app).get('/x').set('X-API-Key', key).expect(200);
    const response = await request(app).get('/x').set('X-API-Key', key);
    expect(response.status).toBe(403);
    expect(response.body.code).toBe('usage_exhausted');
    expect(response.headers['ratelimit-policy']).toBe('"second";q=5;w=1');
    expect(response.headers.ratelimit).toBeUndefined();
  });

  it('answers 503 store_unavailable with Retry-After and a detail that says nothing of keygate internals', async () => {
    const store = new CountingStore();
    const keys = track(keygate({ store, prefix: 'pk_test', hashing: 'sha256' }));
    const { key } = await keys.create({ name: 'k' });
    const app = express();
    app.use(keys.authenticate());
    app.get('/x', (_req, res) => {
      res.json({ ok: true });
    });
    store.fail('consume', 'reject');
    const response = await request(app).get('/x').set('X-API-Key', key);
    expect(response.status).toBe(503);
    expect(response.headers['retry-after']).toBe('1');
    expect(response.body.code).toBe('store_unavailable');
    expect(response.body.detail).toBe('The API key service is temporarily unavailable; retry shortly.');
  });
});
