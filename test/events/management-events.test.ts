/**
 * Management events and the audit trail, as the manager and the admin API produce them: every
 * write emits its `key.*` event (to `keys.on()` listeners and on the `keygate:<name>` diagnostics
 * channel) with the key's view, the actor and the time, and with `audit` on leaves one entry in the
 * trail. Never a secret or a hash in either; a listener can neither break nor undo a write.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import request from 'supertest';
import { EVENT_NAMES, type AuditEntry, type KeygateEvents, type Keygate, MemoryStore, keygate, channelNameOf } from '../../src/index';
import { EXPRESS_VERSIONS, T0, testClock } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();

function audited(options: Partial<Parameters<typeof keygate>[0]> = {}) {
  const clock = testClock();
  const store = new MemoryStore();
  const keys = track(keygate({ store, prefix: 'pk_test', hashing: 'sha256', now: clock.now, audit: true, ...options }));
  return { keys, clock, store };
}

/** Every event `keys` emits, in order, as [name, payload]. */
function recordEvents(keys: Keygate): [string, unknown][] {
  const seen: [string, unknown][] = [];
  for (const name of EVENT_NAMES) keys.on(name, (payload) => void seen.push([name, payload]));
  return seen;
}

describe('key.* events and the audit trail of the manager', () => {
  it('each write emits its event with the view, the actor and the time, and one audit entry', async () => {
    const { keys, clock } = audited();
    const seen = recordEvents(keys);
    const { key, apiKey } = await keys.create({ name: 'ci', scopes: ['leads:read'], tenantId: 'acme' }, { actor: 'ops@example.com' });
    clock.advance(1_000);
    await keys.update(apiKey.id, { name: 'ci-2', maxUses: 10 }, { actor: { id: 'svc-deploy', keyPrefix: 'pk_test_abcdefghijkl' } });
    clock.advance(1_000);
    const rotated = await keys.rotate(apiKey.id, { gracePeriodMs: 60_000, actor: 'ops@example.com' });
    clock.advance(1_000);
    await keys.revoke(rotated.apiKey.id);
    clock.advance(1_000);
    await keys.delete(rotated.apiKey.id, { actor: 'gdpr-bot' });
    clock.advance(1_000);
    expect(await keys.purge({ deletedBefore: clock.now(), actor: 'gdpr-bot' })).toBe(1);

    expect(seen.map(([name]) => name)).toEqual(['key.created', 'key.updated', 'key.rotated', 'key.revoked', 'key.deleted', 'key.purged']);
    const [created, updated, rotatedEvent, revoked, deleted, purged] = seen.map(([, payload]) => payload) as [
      KeygateEvents['key.created'],
      KeygateEvents['key.updated'],
      KeygateEvents['key.rotated'],
      KeygateEvents['key.revoked'],
      KeygateEvents['key.deleted'],
      KeygateEvents['key.purged'],
    ];
    expect(created).toMatchObject({ apiKey: { id: apiKey.id, name: 'ci', tenantId: 'acme' }, actor: { id: 'ops@example.com' }, at: new Date(T0) });
    expect(updated).toMatchObject({ apiKey: { name: 'ci-2', maxUses: 10 }, actor: { id: 'svc-deploy', keyPrefix: 'pk_test_abcdefghijkl' }, changes: ['name', 'maxUses'] });
    expect(rotatedEvent).toMatchObject({ apiKey: { id: apiKey.id, revokedAt: new Date(T0 + 2_000 + 60_000) }, replacement: { id: rotated.apiKey.id, rotatedFromId: apiKey.id }, gracePeriodMs: 60_000 });
    expect(revoked).toMatchObject({ apiKey: { id: rotated.apiKey.id, status: 'revoked' }, actor: null });
    expect(deleted).toMatchObject({ apiKey: { id: rotated.apiKey.id, deletedAt: new Date(T0 + 4_000) }, actor: { id: 'gdpr-bot' } });
    expect(purged).toEqual({ removed: 1, deletedBefore: new Date(T0 + 5_000), actor: { id: 'gdpr-bot' }, at: new Date(T0 + 5_000) });

    // Never the raw key, a secret or a hash, in any event.
    const text = JSON.stringify(seen);
    expect(text).not.toContain(key);
    expect(text).not.toContain(rotated.key);
    expect(text).not.toMatch(/keyHash|\$hmac-sha256\$|\$2[aby]\$/);

    const { items } = await keys.auditLog();
    expect(items.map((entry) => [entry.action, entry.keyId, entry.actor?.id ?? null])).toEqual([
      ['key.created', apiKey.id, 'ops@example.com'],
      ['key.updated', apiKey.id, 'svc-deploy'],
      ['key.rotated', apiKey.id, 'ops@example.com'],
      ['key.revoked', rotated.apiKey.id, null],
      ['key.deleted', rotated.apiKey.id, 'gdpr-bot'],
      ['key.purged', null, 'gdpr-bot'],
    ]);
    expect(items[0]).toMatchObject({ tenantId: 'acme', at: new Date(T0), changes: { name: 'ci', scopes: ['leads:read'], tenantId: 'acme' } });
    expect(items[1]!.changes).toEqual({ name: 'ci-2', maxUses: 10 });
    expect(items[1]!.actor).toEqual({ id: 'svc-deploy', keyPrefix: 'pk_test_abcdefghijkl' });
    expect(items[2]!.changes).toEqual({ replacementId: rotated.apiKey.id, gracePeriodMs: 60_000 });
    expect(items[4]!.changes).toEqual({ status: 'revoked', deletedAt: new Date(T0 + 4_000).toISOString() });
    expect(items[5]!.changes).toEqual({ removed: 1, deletedBefore: new Date(T0 + 5_000).toISOString() });
    const trail = JSON.stringify(items);
    expect(trail).not.toContain(key);
    expect(trail).not.toMatch(/keyHash|\$hmac-sha256\$/);
  });

  it('publishes every event on its diagnostics channel keygate:<name>, for subscribers with no reference to the instance', async () => {
    const { keys } = audited();
    const received: unknown[] = [];
    const onMessage = (message: unknown, name: string | symbol) => void received.push([name, message]);
    subscribe(channelNameOf('key.created'), onMessage);
    try {
      const { apiKey } = await keys.create({ name: 'traced' });
      expect(received).toEqual([['keygate:key.created', expect.objectContaining({ apiKey: expect.objectContaining({ id: apiKey.id }), actor: null })]]);
    } finally {
      unsubscribe(channelNameOf('key.created'), onMessage);
    }
    expect(EVENT_NAMES.map(channelNameOf)).toContain('keygate:quota.threshold');
  });

  it('a listener that changes the actor of an event changes neither the audit entry nor the next listener', async () => {
    const { keys } = audited();
    keys.on('key.created', (event) => {
      if (event.actor) event.actor.id = 'pseudonymised';
    });
    await keys.create({ name: 'x' }, { actor: { id: 'alice@example.com', keyPrefix: 'pk_test_abcdefghijkl' } });
    expect((await keys.auditLog()).items[0]!.actor).toEqual({ id: 'alice@example.com', keyPrefix: 'pk_test_abcdefghijkl' });
  });

  it('gives each listener its own copy: changing it changes neither the answer nor the record', async () => {
    const { keys } = audited();
    const copies: KeygateEvents['key.created'][] = [];
    keys.on('key.created', (event) => {
      copies.push(event);
      event.apiKey.scopes.push('admin:*');
      event.apiKey.name = 'tampered';
    });
    const { apiKey } = await keys.create({ name: 'plain', scopes: ['leads:read'] });
    expect(apiKey).toMatchObject({ name: 'plain', scopes: ['leads:read'] });
    expect(await keys.get(apiKey.id)).toMatchObject({ name: 'plain', scopes: ['leads:read'] });
    expect(copies).toHaveLength(1);
  });

  it('a listener that throws, rejects or never settles neither fails nor holds up the write; one warning says so', async () => {
    const { keys } = audited();
    const emitWarning = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      keys.on('key.created', () => {
        throw new Error('listener bug');
      });
      keys.on('key.created', () => Promise.reject(new Error('async listener bug')));
      keys.on('key.created', () => new Promise<never>(() => undefined));
      const later: string[] = [];
      keys.on('key.created', ({ apiKey }) => void later.push(apiKey.name));
      for (const name of ['a', 'b', 'c']) await keys.create({ name });
      await new Promise((resolve) => setImmediate(resolve));
      expect(later).toEqual(['a', 'b', 'c']);
      expect((await keys.list()).items).toHaveLength(3);
      const ours = emitWarning.mock.calls.filter(([, options]) => (options as { code?: string } | undefined)?.code === 'KEYGATE_LISTENER_FAILED');
      // Once per process and event: the tests before may have used it up, but never more than one.
      expect(ours.length).toBeLessThanOrEqual(1);
      expect(unhandled).toEqual([]);
    } finally {
      emitWarning.mockRestore();
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('checks on() and off() and the actor: a TypeError for a wrong event name, invalid_argument before anything is written', async () => {
    const { keys } = audited();
    expect(() => keys.on('key.create' as never, () => undefined)).toThrow(/unknown event `key.create`, did you mean `key.created`\?/);
    expect(() => keys.on('key.created', 'listener' as never)).toThrow(TypeError);
    const listener = jest.fn();
    keys.on('key.created', listener).off('key.created', listener);
    await keys.create({ name: 'quiet' });
    expect(listener).not.toHaveBeenCalled();

    for (const actor of ['', 'x'.repeat(257), 'line\nbreak', 7, { id: '' }, { id: 'a', role: 'admin' }, { id: 'a', keyPrefix: '' }, ['a']]) {
      await expect(keys.create({ name: 'x' }, { actor } as never)).rejects.toMatchObject({ code: 'invalid_argument', field: expect.stringMatching(/^actor/) });
    }
    const { apiKey } = await keys.create({ name: 'target' });
    await expect(keys.revoke(apiKey.id, { actor: 42 } as never)).rejects.toMatchObject({ code: 'invalid_argument', field: 'actor' });
    await expect(keys.update(apiKey.id, { name: 'y' }, { actor: {} } as never)).rejects.toMatchObject({ field: 'actor.id' });
    await expect(keys.rotate(apiKey.id, { actor: '' })).rejects.toMatchObject({ field: 'actor' });
    await expect(keys.purge({ deletedBefore: 0, actor: { id: 'x', extra: 1 } } as never)).rejects.toMatchObject({ field: 'actor.extra' });
    await expect(keys.create({ name: 'x' }, { actor: 'a', by: 'b' } as never)).rejects.toMatchObject({ code: 'invalid_argument', field: 'by' });
    expect(await keys.get(apiKey.id)).toMatchObject({ name: 'target', status: 'active' });
    expect((await keys.auditLog()).items.map((entry) => entry.action)).toEqual(['key.created', 'key.created']);
  });
});

describe('keys.auditLog()', () => {
  async function trail() {
    const { keys, clock } = audited();
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const { apiKey } = await keys.create({ name: `k${i}`, ...(i % 2 === 0 ? { tenantId: 'acme' } : {}), ...(i % 3 === 0 ? { environment: 'test' } : {}) }, { actor: i < 4 ? 'alice' : 'bob' });
      ids.push(apiKey.id);
      clock.advance(1_000);
    }
    await keys.revoke(ids[0]!, { actor: 'bob' });
    return { keys, ids };
  }

  it('filters by key, actor, tenant, environment and time, and pages oldest first', async () => {
    const { keys, ids } = await trail();
    expect((await keys.auditLog({ keyId: ids[0] })).items.map((entry) => entry.action)).toEqual(['key.created', 'key.revoked']);
    expect((await keys.auditLog({ actor: 'bob' })).items.map((entry) => entry.keyId)).toEqual([ids[4], ids[5], ids[6], ids[0]]);
    expect((await keys.auditLog({ tenantId: 'acme' })).items.map((entry) => entry.keyId)).toEqual([ids[0], ids[2], ids[4], ids[6], ids[0]]);
    expect((await keys.auditLog({ environment: 'test', actor: 'alice' })).items.map((entry) => entry.keyId)).toEqual([ids[0], ids[3]]);
    expect((await keys.auditLog({ from: T0 + 2_000, to: new Date(T0 + 4_000).toISOString() })).items.map((entry) => entry.keyId)).toEqual([ids[2], ids[3]]);
    const seen: (string | null)[] = [];
    let cursor: string | undefined;
    do {
      const page: Awaited<ReturnType<typeof keys.auditLog>> = await keys.auditLog({ limit: 3, ...(cursor ? { cursor } : {}) });
      expect(page.items.length).toBeLessThanOrEqual(3);
      seen.push(...page.items.map((entry: AuditEntry) => entry.keyId));
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen).toEqual([...ids, ids[0]]);
  });

  it('refuses bad queries with invalid_argument, and an instance without audit with a TypeError', async () => {
    const { keys } = await trail();
    await expect(keys.auditLog({ limit: 0 })).rejects.toMatchObject({ code: 'invalid_argument', field: 'limit' });
    await expect(keys.auditLog({ cursor: 'not-a-cursor' })).rejects.toMatchObject({ field: 'cursor' });
    await expect(keys.auditLog({ from: 'yesterday' })).rejects.toMatchObject({ field: 'from' });
    await expect(keys.auditLog({ from: T0 + 10, to: T0 })).rejects.toMatchObject({ field: 'to' });
    await expect(keys.auditLog({ who: 'alice' } as never)).rejects.toMatchObject({ field: 'who' });
    const plain = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    await expect(plain.auditLog()).rejects.toThrow(/keeps no audit trail/);
    expect(() => keygate({ store: { ...new MemoryStore(), insert: async () => undefined } as never, audit: true })).toThrow(TypeError);
  });

  it('a store that fails to write an entry leaves the change made, and says which entry is missing', async () => {
    const store = new MemoryStore();
    const failing = { appendAudit: () => Promise.reject(new Error('disk full')), listAudit: store.listAudit.bind(store) };
    const keys = track(keygate({ store, hashing: 'sha256', audit: failing }));
    const emitWarning = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const { apiKey } = await keys.create({ name: 'kept' });
      expect(await keys.get(apiKey.id)).toMatchObject({ name: 'kept' });
      const warning = emitWarning.mock.calls.find(([, options]) => (options as { code?: string } | undefined)?.code === 'KEYGATE_AUDIT_WRITE_FAILED');
      // Reported once per process: an earlier test may have used it.
      if (warning) expect(String(warning[0])).toMatch(new RegExp(`key.created of key ${apiKey.id}.*disk full`));
    } finally {
      emitWarning.mockRestore();
    }
  });
});

describe.each(EXPRESS_VERSIONS)('the admin API and the audit trail (%s)', (_name, makeExpress) => {
  function setUp() {
    const { keys, clock } = audited();
    const app = makeExpress();
    app.use('/v1/api-keys', keys.adminRouter());
    return { keys, clock, app };
  }

  it('names the calling key as the actor of every change, and serves GET /audit and GET /:id/audit', async () => {
    const { keys, app } = setUp();
    const { key: adminKey, apiKey: admin } = await keys.create({ name: 'admin', scopes: ['keys:admin', 'leads:*'] });
    const auth = { 'X-API-Key': adminKey };
    const created = await request(app).post('/v1/api-keys').set(auth).send({ name: 'ci', scopes: ['leads:read'] });
    const id = created.body.apiKey.id as string;
    await request(app).patch(`/v1/api-keys/${id}`).set(auth).send({ name: 'ci-2' });
    await request(app).post(`/v1/api-keys/${id}/revoke`).set(auth);

    const all = await request(app).get('/v1/api-keys/audit').set(auth);
    expect(all.status).toBe(200);
    expect(all.headers['cache-control']).toBe('no-store');
    expect(all.body.items.map((entry: AuditEntry) => entry.action)).toEqual(['key.created', 'key.created', 'key.updated', 'key.revoked']);
    for (const entry of all.body.items.slice(1)) expect(entry.actor).toEqual({ id: admin.id, keyPrefix: admin.keyPrefix });

    const one = await request(app).get(`/v1/api-keys/${id}/audit`).query({ limit: '2' }).set(auth);
    expect(one.body.items.map((entry: AuditEntry) => entry.action)).toEqual(['key.created', 'key.updated']);
    const next = await request(app).get(`/v1/api-keys/${id}/audit`).query({ cursor: one.body.nextCursor }).set(auth);
    expect(next.body.items.map((entry: AuditEntry) => entry.action)).toEqual(['key.revoked']);
    expect(next.body.nextCursor).toBeUndefined();
    expect((await request(app).get('/v1/api-keys/audit').query({ actor: admin.id, keyId: id }).set(auth)).body.items).toHaveLength(3);
    const bad = await request(app).get(`/v1/api-keys/${id}/audit`).query({ keyId: 'other' }).set(auth);
    expect(bad.body).toMatchObject({ code: 'invalid_argument', field: 'keyId' });
    // The body of a rotation cannot claim another actor.
    const rotate = await request(app).post(`/v1/api-keys/${id}/rotate`).set(auth).send({ actor: 'someone-else' });
    expect(rotate.body).toMatchObject({ code: 'invalid_argument', field: 'actor' });
  });

  it("a tenant's admin reads only its tenant's trail: another tenant's key is 404, and /audit is filtered", async () => {
    const { keys, app } = setUp();
    const { key: acmeAdmin } = await keys.create({ name: 'acme admin', tenantId: 'acme', scopes: ['keys:admin'] });
    const { apiKey: acmeKey } = await keys.create({ name: 'acme key', tenantId: 'acme' });
    const { apiKey: globexKey } = await keys.create({ name: 'globex key', tenantId: 'globex' });
    const auth = { 'X-API-Key': acmeAdmin };
    const mine = await request(app).get('/v1/api-keys/audit').set(auth);
    expect(mine.body.items.map((entry: AuditEntry) => entry.keyId).sort()).toEqual(
      [acmeKey.id, (await keys.list({ tenantId: 'acme' })).items.find((item) => item.name === 'acme admin')!.id].sort(),
    );
    expect(JSON.stringify(mine.body)).not.toContain(globexKey.id);
    const theirs = await request(app).get(`/v1/api-keys/${globexKey.id}/audit`).set(auth);
    expect(theirs.status).toBe(404);
    expect(theirs.body.code).toBe('not_found');
    // Asking for another tenant's key by filter finds nothing either.
    expect((await request(app).get('/v1/api-keys/audit').query({ keyId: globexKey.id }).set(auth)).body.items).toEqual([]);
  });

  it('without audit, /audit is no route: GET /audit reads as the key "audit", which does not exist', async () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    const app = makeExpress();
    app.use('/v1/api-keys', keys.adminRouter());
    const { key } = await keys.create({ name: 'admin', scopes: ['keys:admin'] });
    const res = await request(app).get('/v1/api-keys/audit').set('X-API-Key', key);
    expect(res.status).toBe(404);
    expect(res.body.code).toBe('not_found');
    expect((await request(app).get('/v1/api-keys/openapi.json')).body.paths['/audit']).toBeUndefined();
  });
});
