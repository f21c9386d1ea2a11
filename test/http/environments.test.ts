/**
 * Environments and test keys: one instance accepts one prefix per environment, mints with the
 * prefix of the key's environment, tells the keys apart (`environment`, `isTestKey`), and a route
 * may admit only some environments. A key cannot cross environments by a record edit, and a
 * single string prefix keeps working as before.
 */
import request from 'supertest';
import { type ApiKeyRecord, keygate, MemoryStore } from '../../src/index';
import { EXPRESS_VERSIONS, T0, testApp } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();

function environmentKeys(store = new MemoryStore()) {
  return track(keygate({ store, prefix: { live: 'pk_live', test: 'pk_test' }, hashing: 'sha256', now: () => T0 }));
}

describe('one prefix per environment', () => {
  it('mints with the prefix of the environment and says which one it is', async () => {
    const keys = environmentKeys();
    const live = await keys.create({ name: 'live', environment: 'live' });
    const test = await keys.create({ name: 'test', environment: 'test' });
    expect(live.key.startsWith('pk_live_')).toBe(true);
    expect(test.key.startsWith('pk_test_')).toBe(true);
    expect([live.apiKey.environment, live.apiKey.isTestKey]).toEqual(['live', false]);
    expect([test.apiKey.environment, test.apiKey.isTestKey]).toEqual(['test', true]);
    expect(keys.environments).toEqual({ live: 'pk_live', test: 'pk_test' });
    for (const { key, apiKey } of [live, test]) {
      const verified = await keys.verify(key);
      expect(verified.ok && [verified.apiKey.id, verified.apiKey.isTestKey]).toEqual([apiKey.id, apiKey.environment === 'test']);
    }
  });

  it('requires an environment it knows at create, and keeps it on rotate', async () => {
    const keys = environmentKeys();
    await expect(keys.create({ name: 'none' })).rejects.toMatchObject({ code: 'invalid_argument', field: 'environment' });
    await expect(keys.create({ name: 'x', environment: 'staging' })).rejects.toMatchObject({ code: 'invalid_argument', field: 'environment' });
    const { apiKey } = await keys.create({ name: 'test', environment: 'test' });
    const rotated = await keys.rotate(apiKey.id);
    expect(rotated.key.startsWith('pk_test_')).toBe(true);
    expect(rotated.apiKey.isTestKey).toBe(true);
  });

  it('refuses bad prefix maps at construction with invalid_argument naming the entry', () => {
    const store = new MemoryStore();
    expect(() => keygate({ store, prefix: {} })).toThrow(expect.objectContaining({ code: 'invalid_argument', field: 'prefix' }));
    expect(() => keygate({ store, prefix: { live: 'PK' } })).toThrow(expect.objectContaining({ code: 'invalid_argument', field: 'prefix.live' }));
    expect(() => keygate({ store, prefix: { live: 'pk', test: 'pk' } })).toThrow(expect.objectContaining({ code: 'invalid_argument', field: 'prefix.test' }));
    expect(() => keygate({ store, prefix: { 'Live Env': 'pk' } })).toThrow(expect.objectContaining({ code: 'invalid_argument', field: 'prefix.Live Env' }));
  });

  it('a record edited into another environment is refused, never carried across', async () => {
    const store = new MemoryStore();
    const keys = environmentKeys(store);
    const { key, apiKey } = await keys.create({ name: 'test', environment: 'test' });
    // Edited behind keygate's back: the record now claims to be live.
    const stored = (await store.findById(apiKey.id)) as ApiKeyRecord;
    await store.update(apiKey.id, { updatedAt: stored.updatedAt, ...({ environment: 'live' } as object) } as never);
    expect((await store.findById(apiKey.id))?.environment).toBe('live');
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const verified = await keys.verify(key);
      expect(verified.ok === false && verified.error.code).toBe('invalid_api_key');
    } finally {
      warn.mockRestore();
    }
  });

  it('a single string prefix keeps working: environment is free text, isTestKey follows it', async () => {
    const keys = track(keygate({ store: new MemoryStore(), prefix: 'sk_any', hashing: 'sha256' }));
    const { key, apiKey } = await keys.create({ name: 'k', environment: 'test' });
    expect(key.startsWith('sk_any_')).toBe(true);
    expect(apiKey.isTestKey).toBe(true);
    expect(keys.environments).toBeUndefined();
    expect((await keys.create({ name: 'plain' })).apiKey.isTestKey).toBe(false);
  });
});

describe.each(EXPRESS_VERSIONS)('authenticate({ environments }) (%s)', (_name, makeExpress) => {
  it('refuses keys of other environments with 403 environment_not_allowed, counting nothing', async () => {
    const keys = environmentKeys();
    const live = await keys.create({ name: 'live', environment: 'live', maxUses: 5 });
    const test = await keys.create({ name: 'test', environment: 'test', maxUses: 5 });
    const app = testApp(makeExpress, keys, { environments: ['live'] });
    expect((await request(app).get('/whoami').set('X-API-Key', live.key)).status).toBe(200);
    const refused = await request(app).get('/whoami').set('X-API-Key', test.key);
    expect(refused.status).toBe(403);
    expect(refused.body.code).toBe('environment_not_allowed');
    expect((await keys.get(test.apiKey.id))?.useCount).toBe(0);
  });

  it('a second authenticate() with environments refuses a request the first one admitted', async () => {
    const keys = environmentKeys();
    const test = await keys.create({ name: 'test', environment: 'test' });
    const app = testApp(makeExpress, keys, undefined, (mounted) => {
      mounted.get('/live-only', keys.authenticate(), keys.authenticate({ environments: ['live'] }), (_req, res) => {
        res.json({ ok: true });
      });
    });
    const refused = await request(app).get('/live-only').set('X-API-Key', test.key);
    expect(refused.status).toBe(403);
    expect(refused.body.code).toBe('environment_not_allowed');
  });

  it('an environment the instance does not have is a TypeError when the middleware is built', () => {
    const keys = environmentKeys();
    expect(() => keys.authenticate({ environments: ['prod'] })).toThrow(TypeError);
    expect(() => keys.authenticate({ environments: 'live' as never })).toThrow(TypeError);
  });
});

describe('moving an instance from one prefix to one prefix per environment', () => {
  it('keys minted before (no environment) keep working under the environment of their prefix, and rotate keeps their prefix', async () => {
    const store = new MemoryStore();
    const before = track(keygate({ store, prefix: 'pk_live', hashing: 'sha256', now: () => T0 }));
    const { key, apiKey } = await before.create({ name: 'from before' });
    expect(apiKey.environment).toBeUndefined();

    const after = environmentKeys(store);
    const verified = await after.verify(key);
    expect(verified.ok && verified.apiKey.environment).toBe('live');
    const app = testApp(EXPRESS_VERSIONS[0]![1], after, { environments: ['live'] });
    expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);

    const rotated = await after.rotate(apiKey.id);
    expect(rotated.key.startsWith('pk_live_')).toBe(true);
    expect((await after.verify(rotated.key)).ok).toBe(true);
  });

  it('a rotation never moves a key to another prefix, whichever instance sharing the store does it', async () => {
    const store = new MemoryStore();
    const mapped = environmentKeys(store);
    const single = track(keygate({ store, prefix: 'pk_live', hashing: 'sha256', now: () => T0 }));
    const { apiKey } = await mapped.create({ name: 'test key', environment: 'test' });
    await expect(single.rotate(apiKey.id)).rejects.toMatchObject({ code: 'invalid_argument', field: 'id' });
    const rotated = await mapped.rotate(apiKey.id);
    expect(rotated.key.startsWith('pk_test_')).toBe(true);
  });
});
