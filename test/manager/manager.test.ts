/** The key manager (SPEC §4): create, get, list, update, revoke, rotate, verify, close. */
import { inspect } from 'node:util';
import { KeygateError, keygate, MemoryStore, type ApiKey } from '../../src/index';
import { T0, testKeys } from '../helpers/harness';

async function rejection(promise: Promise<unknown>): Promise<KeygateError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(KeygateError);
    return error as KeygateError;
  }
  throw new Error('expected a rejection');
}

describe('keys.create', () => {
  it('mints a key of the configured prefix and returns it once with the public view', async () => {
    const { keys } = testKeys();
    const { key, apiKey } = await keys.create({
      name: 'Production',
      description: 'for the CRM sync',
      scopes: ['leads:read', 'leads:read'],
      allowedIps: ['10.0.0.0/8'],
      maxUses: 100,
      rateLimit: { perSecond: 10, burst: 20, perDay: 10_000 },
      expiresAt: '2027-01-01T00:00:00Z',
      ownerId: 'user-1',
      tenantId: 'acme',
      environment: 'live',
      metadata: { plan: 'pro', limits: [1, 2] },
      tags: ['crm'],
    });
    expect(key).toMatch(/^pk_test_[0-9A-Za-z]{16}_[0-9A-Za-z]{38}$/);
    expect(key.startsWith(`${apiKey.keyPrefix}_`)).toBe(true);
    expect(apiKey).toMatchObject({
      name: 'Production',
      description: 'for the CRM sync',
      scopes: ['leads:read'],
      status: 'active',
      useCount: 0,
      maxUses: 100,
      lastUsedAt: null,
      revokedAt: null,
      isActive: true,
      expiresAt: new Date('2027-01-01T00:00:00Z'),
      createdAt: new Date(T0),
      updatedAt: new Date(T0),
    });
    expect(apiKey.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect('keyHash' in apiKey).toBe(false);
  });

  it('stores only a hash: the record never holds the key or the secret', async () => {
    const { keys, store } = testKeys();
    const { key, apiKey } = await keys.create({ name: 'hashed' });
    const record = await store.inner.findById(apiKey.id);
    const secret = key.slice(apiKey.keyPrefix.length + 1, -6);
    expect(record!.keyHash.startsWith('$hmac-sha256$')).toBe(true);
    expect(JSON.stringify(record)).not.toContain(secret);
  });

  it('hashes with bcrypt by default at cost 10', async () => {
    const store = new MemoryStore();
    const keys = keygate({ store });
    const { key, apiKey } = await keys.create({ name: 'default' });
    expect(key.startsWith('kg_')).toBe(true);
    expect((await store.findById(apiKey.id))!.keyHash).toMatch(/^\$2[aby]\$10\$/);
    expect((await keys.verify(key)).ok).toBe(true);
  });

  it.each([
    [{ name: '' }, 'name'],
    [{ name: 'x', scopes: ['ok', 'not ok'] }, 'scopes[1]'],
    [{ name: 'x', allowedIps: ['10.0.0.0/33'] }, 'allowedIps[0]'],
    [{ name: 'x', maxUses: -1 }, 'maxUses'],
    [{ name: 'x', rateLimit: { perSecond: 0 } }, 'rateLimit.perSecond'],
    [{ name: 'x', rateLimit: { perday: 5 } }, 'rateLimit.perday'],
    [{ name: 'x', expiresAt: 'tomorrow' }, 'expiresAt'],
    [{ name: 'x', expiresAt: new Date(T0) }, 'expiresAt'],
    [{ name: 'x', status: 'paused' }, 'status'],
    [{ name: 'x', metadata: { nested: { __proto__: null, fn: () => 1 } } }, 'metadata.nested.fn'],
    [{ name: 'x', colour: 'red' }, 'colour'],
  ])('rejects %j with invalid_argument naming %s, writing nothing', async (input, field) => {
    const { keys, store } = testKeys();
    const error = await rejection(keys.create(input as never));
    expect(error.code).toBe('invalid_argument');
    expect(error.status).toBe(400);
    expect(error.field).toBe(field);
    expect(error.message).toContain(field);
    expect(store.calls.insert).toBe(0);
    expect(store.inner.size).toBe(0);
  });

  it('rejects an invalid prefix at construction with invalid_argument naming prefix', () => {
    try {
      keygate({ store: new MemoryStore(), prefix: 'PK-Live' });
      throw new Error('expected a throw');
    } catch (error) {
      expect(error).toBeInstanceOf(KeygateError);
      expect((error as KeygateError).code).toBe('invalid_argument');
      expect((error as KeygateError).field).toBe('prefix');
    }
  });

  it('rejects with store_unavailable when the store is down, and the store then holds nothing', async () => {
    const { keys, store } = testKeys();
    store.fail('insert', 'reject');
    expect((await rejection(keys.create({ name: 'x' }))).code).toBe('store_unavailable');
    expect(store.inner.size).toBe(0);
  });
});

describe('keys.get / keys.list', () => {
  it('returns null for an unknown id and the view for a known one', async () => {
    const { keys } = testKeys();
    const { apiKey } = await keys.create({ name: 'g' });
    expect(await keys.get('00000000-0000-4000-8000-000000000000')).toBeNull();
    expect(await keys.get(apiKey.id)).toEqual(apiKey);
  });

  it('pages through filtered keys with a cursor, oldest first, without skips or repeats', async () => {
    const { keys, clock } = testKeys();
    const created: ApiKey[] = [];
    for (let i = 0; i < 7; i++) {
      clock.advance(i % 2 === 0 ? 1000 : 0); // some keys share a createdAt
      created.push((await keys.create({ name: `k${i}`, ownerId: i < 5 ? 'alice' : 'bob', tenantId: 't' })).apiKey);
    }
    await keys.revoke(created[1]!.id);
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await keys.list({ ownerId: 'alice', limit: 2, ...(cursor ? { cursor } : {}) });
      seen.push(...page.items.map((k) => k.name));
      cursor = page.nextCursor;
      pages++;
    } while (cursor);
    const byPosition = (a: ApiKey, b: ApiKey) => a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : 1);
    expect(seen).toEqual(created.slice(0, 5).sort(byPosition).map((k) => k.name));
    expect(pages).toBe(3);
    expect((await keys.list({ status: 'revoked' })).items.map((k) => k.name)).toEqual(['k1']);
    expect((await keys.list({ ownerId: 'bob', tenantId: 't' })).items.map((k) => k.name)).toEqual(['k5', 'k6']);
    const all = await keys.list();
    expect(all.items).toHaveLength(7);
    expect(all.nextCursor).toBeUndefined();
  });

  it.each([
    [{ status: 'bogus' }, 'status'],
    [{ limit: 0 }, 'limit'],
    [{ limit: 1001 }, 'limit'],
    [{ cursor: 'not-a-cursor' }, 'cursor'],
    [{ owner: 'x' }, 'owner'],
  ])('rejects list(%j) with invalid_argument naming %s', async (query, field) => {
    const { keys } = testKeys();
    const error = await rejection(keys.list(query as never));
    expect(error.code).toBe('invalid_argument');
    expect(error.field).toBe(field);
  });
});

describe('keys.update', () => {
  it('changes the given fields, clears nullable ones with null, and stamps updatedAt from the clock', async () => {
    const { keys, clock } = testKeys();
    const { apiKey } = await keys.create({
      name: 'before',
      description: 'd',
      maxUses: 5,
      rateLimit: { perDay: 10 },
      expiresAt: T0 + 3600_000,
    });
    clock.advance(5000);
    const updated = await keys.update(apiKey.id, { name: 'after', description: null, maxUses: null, rateLimit: null, expiresAt: null, tags: ['x'] });
    expect(updated).toMatchObject({ name: 'after', maxUses: null, rateLimit: null, expiresAt: null, tags: ['x'], updatedAt: new Date(T0 + 5000) });
    expect('description' in updated).toBe(false);
    expect(updated.createdAt).toEqual(new Date(T0));
    expect(await keys.get(apiKey.id)).toEqual(updated);
  });

  it('rejects an unknown id with not_found', async () => {
    const { keys } = testKeys();
    const error = await rejection(keys.update('00000000-0000-4000-8000-000000000000', { name: 'x' }));
    expect(error.code).toBe('not_found');
    expect(error.status).toBe(404);
  });

  it('validates the patch before touching the store, even for an unknown id', async () => {
    const { keys, store } = testKeys();
    store.resetCounts();
    const error = await rejection(keys.update('00000000-0000-4000-8000-000000000000', { allowedIps: ['nope'] }));
    expect(error.code).toBe('invalid_argument');
    expect(error.field).toBe('allowedIps[0]');
    expect(store.calls.update + store.calls.findById).toBe(0);
  });

  it('revokes through status: revoked (setting revokedAt) and refuses to reactivate a revoked key', async () => {
    const { keys } = testKeys();
    const { apiKey } = await keys.create({ name: 'st' });
    const revoked = await keys.update(apiKey.id, { status: 'revoked' });
    expect(revoked).toMatchObject({ status: 'revoked', revokedAt: new Date(T0), isActive: false });
    const error = await rejection(keys.update(apiKey.id, { status: 'active' }));
    expect(error.code).toBe('invalid_argument');
    expect(error.field).toBe('status');
  });
});

describe('keys.revoke', () => {
  it('sets status revoked and revokedAt from the clock; revoking again keeps the first revokedAt', async () => {
    const { keys, clock } = testKeys();
    const { apiKey } = await keys.create({ name: 'rv' });
    clock.advance(1000);
    const revoked = await keys.revoke(apiKey.id);
    expect(revoked).toMatchObject({ status: 'revoked', revokedAt: new Date(T0 + 1000), isActive: false });
    clock.advance(1000);
    expect((await keys.revoke(apiKey.id)).revokedAt).toEqual(new Date(T0 + 1000));
  });

  it('rejects an unknown id with not_found', async () => {
    const { keys } = testKeys();
    expect((await rejection(keys.revoke('nope'))).code).toBe('not_found');
  });
});

describe('keys.rotate', () => {
  it('creates a new record with the same settings and the remaining uses, and schedules the old one', async () => {
    const { keys, clock } = testKeys();
    const { key, apiKey } = await keys.create({ name: 'r', scopes: ['a:b'], maxUses: 10, ownerId: 'o', metadata: { m: 1 }, rateLimit: { perDay: 5 } });
    for (let i = 0; i < 4; i++) expect((await keys.verify(key)).ok).toBe(true);
    clock.advance(10_000);
    const rotated = await keys.rotate(apiKey.id, { gracePeriodMs: 60_000 });
    expect(rotated.key).not.toBe(key);
    expect(rotated.apiKey).toMatchObject({
      name: 'r',
      scopes: ['a:b'],
      ownerId: 'o',
      metadata: { m: 1 },
      rateLimit: { perDay: 5 },
      maxUses: 6,
      useCount: 0,
      rotatedFromId: apiKey.id,
      createdAt: new Date(T0 + 10_000),
      isActive: true,
    });
    expect(rotated.apiKey.id).not.toBe(apiKey.id);
    const old = await keys.get(apiKey.id);
    expect(old).toMatchObject({ status: 'active', revokedAt: new Date(T0 + 70_000), isActive: true });
    clock.advance(60_000);
    expect((await keys.get(apiKey.id))!.isActive).toBe(false);
    const refused = await keys.verify(key);
    expect(refused.ok || refused.error.code).toBe('api_key_revoked');
  });

  it('rejects an unknown id with not_found, a revoked key and a bad grace period with invalid_argument', async () => {
    const { keys } = testKeys();
    expect((await rejection(keys.rotate('nope'))).code).toBe('not_found');
    const { apiKey } = await keys.create({ name: 'x' });
    const bad = await rejection(keys.rotate(apiKey.id, { gracePeriodMs: -5 }));
    expect(bad.code).toBe('invalid_argument');
    expect(bad.field).toBe('gracePeriodMs');
    await keys.revoke(apiKey.id);
    expect((await rejection(keys.rotate(apiKey.id))).code).toBe('invalid_argument');
  });
});

describe('keys.verify', () => {
  it('runs the whole pipeline and counts the use, or checks without counting with consume: false', async () => {
    const { keys } = testKeys();
    const { key, apiKey } = await keys.create({ name: 'v', scopes: ['x:read'], maxUses: 1, rateLimit: { perDay: 100 } });
    const dry = await keys.verify(key, { consume: false, scopes: ['x:read'] });
    expect(dry).toMatchObject({ ok: true, limits: null });
    expect((await keys.get(apiKey.id))!.useCount).toBe(0);
    const real = await keys.verify(key, { ip: '192.0.2.1' });
    expect(real.ok).toBe(true);
    if (real.ok) {
      expect(real.apiKey.useCount).toBe(1);
      expect(real.limits).toEqual({
        policies: [{ policy: 'day', quota: 100, window: 86_400, remaining: 99, reset: 12 * 3600 }],
        usesRemaining: 0,
      });
    }
    const exhausted = await keys.verify(key);
    expect(exhausted.ok).toBe(false);
    if (!exhausted.ok) expect(exhausted.error.code).toBe('usage_exhausted');
    // consume: false runs every check before the consume and none of the limits.
    expect((await keys.verify(key, { consume: false })).ok).toBe(true);
  });

  it('returns refusals instead of rejecting: scopes, IP, malformed input, bad options and store failures', async () => {
    const { keys, store } = testKeys();
    const { key } = await keys.create({ name: 'v', allowedIps: ['10.0.0.1'] });
    const codes = async (result: Promise<{ ok: boolean; error?: KeygateError }>) => {
      const r = await result;
      return r.ok ? 'ok' : r.error!.code;
    };
    expect(await codes(keys.verify(key, { ip: '10.0.0.2' }))).toBe('ip_not_allowed');
    expect(await codes(keys.verify(key, { ip: '10.0.0.1', scopes: ['x'] }))).toBe('insufficient_scope');
    expect(await codes(keys.verify(key, { ip: '10.0.0.1', anyScopes: ['x', 'y'] }))).toBe('insufficient_scope');
    expect(await codes(keys.verify(42 as never))).toBe('malformed_api_key');
    expect(await codes(keys.verify(key, { scopes: 'x' } as never))).toBe('invalid_argument');
    expect(await codes(keys.verify(key, { ipAddress: '1.2.3.4' } as never))).toBe('invalid_argument');
    store.fail('consume', 'reject');
    expect(await codes(keys.verify(key, { ip: '10.0.0.1' }))).toBe('store_unavailable');
  });
});

describe('secrets never leak', () => {
  it('keeps raw keys, secrets and hashes out of every returned object, JSON and inspect output', async () => {
    const { keys, store } = testKeys();
    const { key, apiKey } = await keys.create({ name: 'leak' });
    const record = await store.inner.findById(apiKey.id);
    const secret = key.slice(apiKey.keyPrefix.length + 1, -6);
    const outputs: unknown[] = [
      apiKey,
      await keys.get(apiKey.id),
      await keys.list(),
      await keys.verify(key),
      await keys.verify(`${key.slice(0, -1)}x`),
      await keys.update(apiKey.id, { name: 'renamed' }),
      keys,
    ];
    for (const output of outputs) {
      for (const text of [JSON.stringify(output) ?? '', inspect(output, { depth: 10, showHidden: true })]) {
        expect(text).not.toContain(secret);
        expect(text).not.toContain(record!.keyHash);
        expect(text).not.toContain('keyHash');
      }
    }
  });
});

describe('keys.close', () => {
  it('stops listening to the store and empties the cache without closing the store', async () => {
    const { keys, store } = testKeys();
    const { key, apiKey } = await keys.create({ name: 'c' });
    expect((await keys.verify(key)).ok).toBe(true);
    await keys.close();
    expect(await store.inner.findById(apiKey.id)).not.toBeNull();
    store.resetCounts();
    expect((await keys.verify(key)).ok).toBe(true);
    expect(store.calls.findByKeyPrefix).toBe(1);
  });
});
