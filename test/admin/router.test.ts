/**
 * The admin HTTP API (`keys.adminRouter()`) on Express 5 and 4: every route and its answers, the
 * errors as problem+json, `no-store` and `Location` on answers that carry a raw key, and the
 * attacks a caller could try: another tenant's keys, scopes or limits beyond its own key's.
 */
import express5, { type Express, type RequestHandler } from 'express';
import express4 from 'express4';
import request from 'supertest';
import type { Keygate } from '../../src/index';
import { EXPRESS_VERSIONS, testKeys } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();

/** Each major's own JSON body parser, for apps that parse bodies before the router. */
const JSON_PARSERS: Record<string, () => RequestHandler> = {
  'express 5': () => express5.json(),
  'express 4': () => express4.json() as unknown as RequestHandler,
};

describe.each(EXPRESS_VERSIONS)('keys.adminRouter() (%s)', (name, makeExpress) => {
  function setUp(options: Parameters<Keygate['adminRouter']>[0] = {}, withBodyParser = false) {
    const { keys, clock, store } = testKeys();
    track(keys);
    const app: Express = makeExpress();
    if (withBodyParser) app.use(JSON_PARSERS[name]!());
    app.use('/v1/api-keys', keys.adminRouter(options));
    app.get('/after', (_req, res) => {
      res.json({ reached: true });
    });
    return { keys, clock, store, app };
  }

  async function admin(keys: Keygate, extra: Parameters<Keygate['create']>[0] | object = {}) {
    return keys.create({ name: 'admin', scopes: ['keys:admin', 'leads:*'], ...extra } as Parameters<Keygate['create']>[0]);
  }

  it('creates a key: 201 { key, apiKey }, no-store, Location; the key works', async () => {
    const { keys, app } = setUp();
    const { key: adminKey } = await admin(keys);
    const res = await request(app).post('/v1/api-keys').set('Authorization', `Bearer ${adminKey}`).send({ name: 'ci', scopes: ['leads:read'] });
    expect(res.status).toBe(201);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.headers.location).toBe(`/v1/api-keys/${res.body.apiKey.id}`);
    expect(res.body.apiKey).toMatchObject({ name: 'ci', scopes: ['leads:read'], isActive: true });
    expect(res.body.apiKey.keyHash).toBeUndefined();
    expect((await keys.verify(res.body.key)).ok).toBe(true);
  });

  it('lists, gets, updates, rotates, revokes and deletes', async () => {
    const { keys, app } = setUp();
    const { key: adminKey } = await admin(keys);
    const auth = { 'X-API-Key': adminKey };
    const { apiKey } = await keys.create({ name: 'target', scopes: ['leads:read'], ownerId: 'u1' });

    const listed = await request(app).get('/v1/api-keys').query({ ownerId: 'u1', limit: '10' }).set(auth);
    expect(listed.status).toBe(200);
    expect(listed.body.items.map((item: { id: string }) => item.id)).toEqual([apiKey.id]);

    const got = await request(app).get(`/v1/api-keys/${apiKey.id}`).set(auth);
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ id: apiKey.id, name: 'target' });

    const patched = await request(app).patch(`/v1/api-keys/${apiKey.id}`).set(auth).send({ name: 'renamed' });
    expect(patched.status).toBe(200);
    expect(patched.body.name).toBe('renamed');

    const rotated = await request(app).post(`/v1/api-keys/${apiKey.id}/rotate`).set(auth).send({ gracePeriodMs: 0 });
    expect(rotated.status).toBe(201);
    expect(rotated.headers['cache-control']).toBe('no-store');
    expect(rotated.body.apiKey.rotatedFromId).toBe(apiKey.id);
    expect(rotated.headers.location).toBe(`/v1/api-keys/${rotated.body.apiKey.id}`);
    const newId = rotated.body.apiKey.id as string;

    const revoked = await request(app).post(`/v1/api-keys/${newId}/revoke`).set(auth);
    expect(revoked.status).toBe(200);
    expect(revoked.body.status).toBe('revoked');

    const deleted = await request(app).delete(`/v1/api-keys/${newId}`).set(auth);
    expect(deleted.status).toBe(204);
    expect((await keys.get(newId))?.deletedAt).not.toBeNull();
    const after = await request(app).get('/v1/api-keys').set(auth);
    expect(after.body.items.map((item: { id: string }) => item.id)).not.toContain(newId);
    const withDeleted = await request(app).get('/v1/api-keys').query({ includeDeleted: 'true' }).set(auth);
    expect(withDeleted.body.items.map((item: { id: string }) => item.id)).toContain(newId);
  });

  it('answers every error as problem+json: 401 without a key, 403 without the scope, 404, 400 with field, 413', async () => {
    const { keys, app } = setUp({ bodyLimit: 1_000 });
    const { key: adminKey } = await admin(keys);
    const { key: plainKey } = await keys.create({ name: 'plain', scopes: ['leads:read'] });
    const none = await request(app).get('/v1/api-keys');
    expect(none.status).toBe(401);
    expect(none.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(none.body.code).toBe('missing_api_key');
    const scoped = await request(app).get('/v1/api-keys').set('X-API-Key', plainKey);
    expect(scoped.status).toBe(403);
    expect(scoped.body.code).toBe('insufficient_scope');
    const missing = await request(app).get('/v1/api-keys/no-such-key').set('X-API-Key', adminKey);
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ code: 'not_found', type: 'urn:keygate:problem:not_found' });
    const unknownField = await request(app).post('/v1/api-keys').set('X-API-Key', adminKey).send({ name: 'x', owner: 'typo' });
    expect(unknownField.status).toBe(400);
    expect(unknownField.body).toMatchObject({ code: 'invalid_argument' });
    const badField = await request(app).post('/v1/api-keys').set('X-API-Key', adminKey).send({ name: 'x', maxUses: -1 });
    expect(badField.body).toMatchObject({ code: 'invalid_argument', field: 'maxUses' });
    const notJson = await request(app).post('/v1/api-keys').set('X-API-Key', adminKey).set('Content-Type', 'application/json').send('{"name":');
    expect(notJson.status).toBe(400);
    expect(notJson.body).toMatchObject({ code: 'invalid_argument', field: 'body' });
    const big = await request(app).post('/v1/api-keys').set('X-API-Key', adminKey).send({ name: 'x', metadata: { blob: 'x'.repeat(2_000) } });
    expect(big.status).toBe(413);
    expect(big.body.code).toBe('payload_too_large');
    const wrongMethod = await request(app).put('/v1/api-keys').set('X-API-Key', adminKey).send({});
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.body.code).toBe('method_not_allowed');
    expect(wrongMethod.headers.allow).toBe('POST, GET');
    // Nothing was created by any of these.
    expect((await keys.list()).items.map((item) => item.name).sort()).toEqual(['admin', 'plain']);
  });

  it('works the same with the app\'s own JSON body parser in front', async () => {
    const { keys, app } = setUp({}, true);
    const { key: adminKey } = await admin(keys);
    const created = await request(app).post('/v1/api-keys').set('X-API-Key', adminKey).send({ name: 'parsed by the app' });
    expect(created.status).toBe(201);
    expect(created.body.apiKey.name).toBe('parsed by the app');
    const unknownField = await request(app).post('/v1/api-keys').set('X-API-Key', adminKey).send({ name: 'x', owner: 'typo' });
    expect(unknownField.body.code).toBe('invalid_argument');
  });

  it('refuses bodies that are not one JSON object, fields where none are taken, and a grace period past a year', async () => {
    const { keys, app } = setUp();
    const { key: adminKey } = await admin(keys);
    const auth = { 'X-API-Key': adminKey };
    const { apiKey } = await keys.create({ name: 'target' });
    for (const body of ['null', '5', '[]', '"abc"']) {
      const res = await request(app).post('/v1/api-keys').set(auth).set('Content-Type', 'application/json').send(body);
      expect({ body, status: res.status, field: res.body.field }).toEqual({ body, status: 400, field: 'body' });
    }
    const form = await request(app).post('/v1/api-keys').set(auth).type('form').send('name=x');
    expect(form.body).toMatchObject({ code: 'invalid_argument', field: 'body' });
    const revokeWithFields = await request(app).post(`/v1/api-keys/${apiKey.id}/revoke`).set(auth).send({ x: 1 });
    expect(revokeWithFields.body).toMatchObject({ code: 'invalid_argument', field: 'x' });
    const endless = await request(app).post(`/v1/api-keys/${apiKey.id}/rotate`).set(auth).send({ gracePeriodMs: Number.MAX_SAFE_INTEGER });
    expect(endless.body).toMatchObject({ code: 'invalid_argument', field: 'gracePeriodMs' });
    expect((await keys.get(apiKey.id))).toMatchObject({ status: 'active', revokedAt: null });
    // A rotation without a body is a rotation with no grace period.
    const bare = await request(app).post(`/v1/api-keys/${apiKey.id}/rotate`).set(auth);
    expect(bare.status).toBe(201);
  });

  it('a caller in its rotation grace period cannot outlive it; a caller\'s burst bounds the keys it makes', async () => {
    const { keys, app, clock } = setUp();
    const { key: leaked, apiKey: leakedKey } = await admin(keys, { rateLimit: { perSecond: 10 } });
    await keys.rotate(leakedKey.id, { gracePeriodMs: 3_600_000 });
    const auth = { 'X-API-Key': leaked };
    const forever = await request(app).post('/v1/api-keys').set(auth).send({ name: 'x', rateLimit: { perSecond: 10 } });
    expect(forever.body).toMatchObject({ code: 'invalid_argument', field: 'expiresAt' });
    const within = new Date(clock.now() + 60_000).toISOString();
    const burst = await request(app).post('/v1/api-keys').set(auth).send({ name: 'x', expiresAt: within, rateLimit: { perSecond: 10, burst: 100_000 } });
    expect(burst.body).toMatchObject({ code: 'invalid_argument', field: 'rateLimit.burst' });
    const ok = await request(app).post('/v1/api-keys').set(auth).send({ name: 'x', expiresAt: within, rateLimit: { perSecond: 10, burst: 10 } });
    expect(ok.status).toBe(201);
  });

  it('a caller with an environment sees and manages only its environment, as with tenants', async () => {
    const { keys, app } = setUp();
    const { key: testAdmin } = await admin(keys, { environment: 'test', scopes: ['*'] });
    const { apiKey: liveKey } = await keys.create({ name: 'live', environment: 'live' });
    const auth = { 'X-API-Key': testAdmin };
    const listed = await request(app).get('/v1/api-keys').set(auth);
    expect(listed.body.items.every((item: { environment?: string }) => item.environment === 'test')).toBe(true);
    for (const [method, path] of [
      ['get', `/v1/api-keys/${liveKey.id}`],
      ['post', `/v1/api-keys/${liveKey.id}/rotate`],
      ['delete', `/v1/api-keys/${liveKey.id}`],
    ] as const) {
      expect((await request(app)[method](path).set(auth)).status).toBe(404);
    }
    const created = await request(app).post('/v1/api-keys').set(auth).send({ name: 'made by test' });
    expect(created.body.apiKey.environment).toBe('test');
    const escape = await request(app).post('/v1/api-keys').set(auth).send({ name: 'x', environment: 'live' });
    expect(escape.body).toMatchObject({ code: 'invalid_argument', field: 'environment' });
  });

  it('authorize() sees the body asked for', async () => {
    const { keys, app } = setUp({ authorize: (req, action) => action !== 'create' || (req.body as { ownerId?: string }).ownerId === 'me' });
    const { key } = await keys.create({ name: 'caller', scopes: ['leads:read'] });
    expect((await request(app).post('/v1/api-keys').set('X-API-Key', key).send({ name: 'x', ownerId: 'me' })).status).toBe(201);
    expect((await request(app).post('/v1/api-keys').set('X-API-Key', key).send({ name: 'x', ownerId: 'someone else' })).status).toBe(403);
  });

  it('serves its OpenAPI document at /openapi.json', async () => {
    const { app } = setUp();
    const res = await request(app).get('/v1/api-keys/openapi.json');
    expect(res.status).toBe(200);
    expect(res.body.openapi).toBe('3.1.0');
  });

  it('a caller with a tenantId sees and manages only its tenant: another tenant\'s key is 404, never 403', async () => {
    const { keys, app } = setUp();
    const { key: acmeAdmin } = await admin(keys, { tenantId: 'acme' });
    const { apiKey: acmeKey } = await keys.create({ name: 'acme key', tenantId: 'acme' });
    const { apiKey: globexKey } = await keys.create({ name: 'globex key', tenantId: 'globex' });
    const { apiKey: untenanted } = await keys.create({ name: 'no tenant' });
    const auth = { 'X-API-Key': acmeAdmin };

    const listed = await request(app).get('/v1/api-keys').set(auth);
    expect(listed.body.items.every((item: { tenantId?: string }) => item.tenantId === 'acme')).toBe(true);
    expect(listed.body.items.map((item: { id: string }) => item.id)).toContain(acmeKey.id);
    const otherTenant = await request(app).get('/v1/api-keys').query({ tenantId: 'globex' }).set(auth);
    expect(otherTenant.body.items).toEqual([]);

    for (const foreign of [globexKey.id, untenanted.id]) {
      for (const [method, path, body] of [
        ['get', `/v1/api-keys/${foreign}`, undefined],
        ['patch', `/v1/api-keys/${foreign}`, { name: 'taken over' }],
        ['post', `/v1/api-keys/${foreign}/rotate`, {}],
        ['post', `/v1/api-keys/${foreign}/revoke`, undefined],
        ['delete', `/v1/api-keys/${foreign}`, undefined],
      ] as const) {
        const call = request(app)[method](path).set(auth);
        const res = body === undefined ? await call : await call.send(body);
        expect({ method, path, status: res.status, code: res.body.code }).toEqual({ method, path, status: 404, code: 'not_found' });
      }
    }
    expect((await keys.get(globexKey.id))).toMatchObject({ name: 'globex key', status: 'active', deletedAt: null });

    // Created keys land in the caller's tenant, and another tenant cannot be named.
    const created = await request(app).post('/v1/api-keys').set(auth).send({ name: 'new' });
    expect(created.body.apiKey.tenantId).toBe('acme');
    const escape = await request(app).post('/v1/api-keys').set(auth).send({ name: 'new', tenantId: 'globex' });
    expect(escape.body).toMatchObject({ code: 'invalid_argument', field: 'tenantId' });
  });

  it('a caller cannot grant scopes, limits, addresses or lifetime beyond its own key, nor manage a more powerful key', async () => {
    const { keys, app, clock } = setUp();
    const { key: limitedAdmin } = await admin(keys, {
      scopes: ['keys:admin', 'leads:read'],
      allowedIps: ['10.0.0.0/8'],
      maxUses: 1_000,
      rateLimit: { perSecond: 50, perDay: 10_000 },
      expiresAt: new Date(clock.now() + 86_400_000),
      maxConcurrent: 5,
    });
    const auth = { 'X-API-Key': limitedAdmin, 'X-Forwarded-For': '10.1.2.3' };
    app.set('trust proxy', true);
    const within = { name: 'ok', scopes: ['leads:read'], allowedIps: ['10.1.0.0/16'], maxUses: 10, rateLimit: { perSecond: 5, perDay: 100 }, expiresAt: new Date(clock.now() + 3_600_000).toISOString(), maxConcurrent: 2 };
    const ok = await request(app).post('/v1/api-keys').set(auth).send(within);
    expect(ok.status).toBe(201);

    const attempts: [string, Record<string, unknown>][] = [
      ['scopes', { scopes: ['leads:write'] }],
      ['scopes', { scopes: ['keys:admin', '*'] }],
      ['scopes', { scopes: ['leads:*'] }],
      ['allowedIps', { allowedIps: [] }],
      ['allowedIps', { allowedIps: ['0.0.0.0/0'] }],
      ['allowedIps', { allowedIps: ['11.0.0.1'] }],
      ['maxUses', { maxUses: null }],
      ['maxUses', { maxUses: 5_000 }],
      ['rateLimit.perSecond', { rateLimit: { perSecond: 500, perDay: 100 } }],
      ['rateLimit.perSecond', { rateLimit: null }],
      ['rateLimit.perDay', { rateLimit: { perSecond: 5 } }],
      ['expiresAt', { expiresAt: null }],
      ['expiresAt', { expiresAt: new Date(clock.now() + 10 * 86_400_000).toISOString() }],
      ['maxConcurrent', { maxConcurrent: null }],
      ['maxConcurrent', { maxConcurrent: 50 }],
    ];
    for (const [field, change] of attempts) {
      const res = await request(app).post('/v1/api-keys').set(auth).send({ ...within, ...change });
      expect({ change, status: res.status, code: res.body.code, field: res.body.field }).toEqual({ change, status: 400, code: 'invalid_argument', field });
    }
    // An update cannot lift a key past the caller either.
    const id = ok.body.apiKey.id as string;
    const lifted = await request(app).patch(`/v1/api-keys/${id}`).set(auth).send({ scopes: ['leads:write'] });
    expect(lifted.body).toMatchObject({ code: 'invalid_argument', field: 'scopes' });
    const unlimited = await request(app).patch(`/v1/api-keys/${id}`).set(auth).send({ rateLimit: null });
    expect(unlimited.body).toMatchObject({ code: 'invalid_argument', field: 'rateLimit.perSecond' });
    expect((await keys.get(id))).toMatchObject({ scopes: ['leads:read'], rateLimit: { perSecond: 5, perDay: 100 } });

    // A key more powerful than the caller (made by someone else) can be read, not managed.
    const { apiKey: stronger } = await keys.create({ name: 'root', scopes: ['*'] });
    expect((await request(app).get(`/v1/api-keys/${stronger.id}`).set(auth)).status).toBe(200);
    for (const [method, path] of [
      ['patch', `/v1/api-keys/${stronger.id}`],
      ['post', `/v1/api-keys/${stronger.id}/rotate`],
      ['post', `/v1/api-keys/${stronger.id}/revoke`],
      ['delete', `/v1/api-keys/${stronger.id}`],
    ] as const) {
      const res = await request(app)[method](path).set(auth).send({});
      expect({ path, method, status: res.status, code: res.body.code }).toEqual({ path, method, status: 403, code: 'insufficient_scope' });
    }
    expect((await keys.get(stronger.id))).toMatchObject({ status: 'active', deletedAt: null, revokedAt: null });
  });

  it('an admin key with a use limit and an expiry still revokes, deletes and suspends the keys it made, and itself', async () => {
    // Found by review: the target used to be compared with the caller in full, so the caller's own
    // next call (one use less) made a key it had just created "more powerful" than itself.
    const { keys, app, clock } = setUp();
    const { key: operator, apiKey: operatorKey } = await admin(keys, { maxUses: 1_000, expiresAt: new Date(clock.now() + 86_400_000) });
    const auth = { 'X-API-Key': operator };
    const made: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await request(app).post('/v1/api-keys').set(auth).send({ name: `k${i}`, scopes: ['leads:read'], maxUses: 990, expiresAt: new Date(clock.now() + 3_600_000).toISOString() });
      expect(res.status).toBe(201);
      made.push(res.body.apiKey.id as string);
    }
    expect((await request(app).patch(`/v1/api-keys/${made[0]}`).set(auth).send({ status: 'suspended' })).body.status).toBe('suspended');
    expect((await request(app).post(`/v1/api-keys/${made[1]}/revoke`).set(auth)).body.status).toBe('revoked');
    expect((await request(app).delete(`/v1/api-keys/${made[2]}`).set(auth)).status).toBe(204);
    // A key with no use limit and no expiry, within the caller's scopes: narrowing it is fine.
    const { apiKey: open } = await keys.create({ name: 'open', scopes: ['leads:read', 'leads:write'] });
    const narrowed = await request(app).patch(`/v1/api-keys/${open.id}`).set(auth).send({ scopes: ['leads:read'] });
    expect(narrowed.status).toBe(200);
    // …but what the caller sets is held to its own limits, and rotating (a new raw key for the
    // caller, with the old key's unlimited uses) is refused, saying why, with the challenge.
    const lifted = await request(app).patch(`/v1/api-keys/${open.id}`).set(auth).send({ maxUses: null });
    expect(lifted.body).toMatchObject({ code: 'invalid_argument', field: 'maxUses' });
    const rotated = await request(app).post(`/v1/api-keys/${open.id}/rotate`).set(auth).send({});
    expect(rotated.status).toBe(403);
    expect(rotated.body.code).toBe('insufficient_scope');
    expect(rotated.body.detail).toMatch(/holds more than the calling key \(its maxUses\).*rotate/);
    expect(rotated.headers['www-authenticate']).toMatch(/^Bearer .*error="insufficient_scope"/);
    // A key beyond the caller's scopes stays out of reach; the caller itself does not.
    const { apiKey: wider } = await keys.create({ name: 'wider', scopes: ['billing:read'] });
    const refused = await request(app).post(`/v1/api-keys/${wider.id}/revoke`).set(auth);
    expect(refused.status).toBe(403);
    expect(refused.body.detail).toMatch(/its scopes/);
    expect((await keys.get(wider.id))?.status).toBe('active');
    expect((await request(app).post(`/v1/api-keys/${operatorKey.id}/revoke`).set(auth)).body.status).toBe('revoked');
  });

  it('a caller with an environment pages through only its environment, and no cursor names another key', async () => {
    const { keys, app } = setUp();
    const { key: testAdmin } = await admin(keys, { environment: 'test' });
    const visible: string[] = [];
    for (let i = 0; i < 12; i++) {
      // Live keys between the test keys, so that every store page mixes them.
      await keys.create({ name: `live${i}`, environment: 'live' });
      await keys.create({ name: `live${i}b`, environment: 'live' });
      if (i % 3 === 0) visible.push((await keys.create({ name: `test${i}`, environment: 'test' })).apiKey.id);
    }
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 10; page++) {
      const res = await request(app).get('/v1/api-keys').query({ limit: '2', ...(cursor ? { cursor } : {}) }).set('X-API-Key', testAdmin);
      expect(res.status).toBe(200);
      for (const item of res.body.items) expect(item.environment).toBe('test');
      seen.push(...res.body.items.map((item: { id: string }) => item.id));
      cursor = res.body.nextCursor;
      if (cursor === undefined) break;
      // The cursor names the last key of the page, never a skipped live key.
      const [, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as [number, string];
      expect(id).toBe(res.body.items[res.body.items.length - 1].id);
    }
    // Every test key once, in list order (keys made at one instant are ordered by id).
    const expected = (await keys.list({ limit: 1_000 })).items.filter((item) => item.environment === 'test').map((item) => item.id);
    expect(expected).toHaveLength(visible.length + 1);
    expect(seen).toEqual(expected);
  });

  it('answers an id that is not valid percent-encoding, and a body in another charset, as 400 problem+json', async () => {
    const { keys, app } = setUp();
    const { key: adminKey } = await admin(keys);
    const badId = await request(app).get('/v1/api-keys/%E0%A4%A').set('X-API-Key', adminKey);
    expect(badId.status).toBe(400);
    expect(badId.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(badId.body).toMatchObject({ code: 'invalid_argument', field: 'id' });
    const latin1 = await request(app)
      .post('/v1/api-keys')
      .set('X-API-Key', adminKey)
      .set('Content-Type', 'application/json; charset=iso-8859-1')
      .send(Buffer.from('{"name":"caf\u00e9"}', 'latin1'));
    expect(latin1.status).toBe(400);
    expect(latin1.body).toMatchObject({ code: 'invalid_argument', field: 'body' });
    expect((await keys.list({})).items.map((item) => item.name)).toEqual(['admin']);
  });

  it('warns once when mounted at the root of the app', async () => {
    const { keys } = testKeys();
    track(keys);
    const app = makeExpress();
    app.use(keys.adminRouter());
    app.get('/status', (_req, res) => {
      res.json({ up: true });
    });
    const emitWarning = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const warnings: string[] = [];
    try {
      await request(app).get('/status');
      await request(app).get('/status');
      for (const [, options] of emitWarning.mock.calls) warnings.push(String((options as { code?: string } | undefined)?.code));
    } finally {
      emitWarning.mockRestore();
    }
    expect(warnings.filter((code) => code === 'KEYGATE_ADMIN_ROUTER_AT_ROOT')).toHaveLength(1);
  });

  it('authorize() replaces the scope check; tenants and delegation still hold', async () => {
    const calls: string[] = [];
    const { keys, app } = setUp({
      authorize: (_req, action, target) => {
        calls.push(`${action}:${target?.name ?? '-'}`);
        return action !== 'delete';
      },
    });
    const { key: plain } = await keys.create({ name: 'caller', scopes: ['leads:read'] });
    const { apiKey: target } = await keys.create({ name: 'target', scopes: ['leads:read'] });
    expect((await request(app).get('/v1/api-keys').set('X-API-Key', plain)).status).toBe(200);
    expect((await request(app).get(`/v1/api-keys/${target.id}`).set('X-API-Key', plain)).status).toBe(200);
    const refused = await request(app).delete(`/v1/api-keys/${target.id}`).set('X-API-Key', plain);
    expect(refused.status).toBe(403);
    expect(refused.body.code).toBe('insufficient_scope');
    const beyond = await request(app).post('/v1/api-keys').set('X-API-Key', plain).send({ name: 'x', scopes: ['leads:write'] });
    expect(beyond.body).toMatchObject({ code: 'invalid_argument', field: 'scopes' });
    expect(calls).toEqual(['list:-', 'get:target', 'delete:target', 'create:-']);
  });

  it('leaves paths it does not serve to the app', async () => {
    const { app } = setUp();
    const res = await request(app).get('/v1/api-keys/a/b/c');
    expect(res.status).toBe(404);
    expect((await request(app).get('/after')).body).toEqual({ reached: true });
  });
});

describe('keys.adminRouter() options', () => {
  it.each([[{ scope: 'keys:*' }], [{ scope: '' }], [{ authorize: 'yes' }], [{ bodyLimit: 0 }], [{ scopes: ['x'] }], [null]])('refuses %p with a TypeError', (options) => {
    const { keys } = testKeys();
    track(keys);
    expect(() => keys.adminRouter(options as never)).toThrow(TypeError);
  });
});
