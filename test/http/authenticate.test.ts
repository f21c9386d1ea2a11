/**
 * The middleware through real Express apps (4 and 5) with supertest: every error code, header and
 * option of SPEC §5–§6.
 */
import request from 'supertest';
import { requireAnyScope, requireScopes, KeygateError } from '../../src/index';
import { EXPRESS_VERSIONS, T0, ok, testApp, testKeys } from '../helpers/harness';

const PROBLEM_TYPE = /^application\/problem\+json/;

function expectProblem(res: request.Response, status: number, code: string): void {
  expect(res.status).toBe(status);
  expect(res.headers['content-type']).toMatch(PROBLEM_TYPE);
  expect(res.body).toEqual({
    type: `urn:keygate:problem:${code}`,
    title: expect.any(String),
    status,
    detail: expect.any(String),
    code,
  });
}

describe.each(EXPRESS_VERSIONS)('authenticate() on %s', (_label, makeExpress) => {
  describe('credentials', () => {
    it('admits a key in Authorization: Bearer and exposes req.apiKey and res.locals.apiKey', async () => {
      const { keys } = testKeys();
      const { key, apiKey } = await keys.create({ name: 'bearer', scopes: ['leads:read'] });
      const res = await request(testApp(makeExpress, keys)).get('/whoami').set('Authorization', `Bearer ${key}`);
      expect(res.status).toBe(200);
      expect(res.body.apiKey).toMatchObject({ id: apiKey.id, name: 'bearer', keyPrefix: apiKey.keyPrefix, useCount: 1, isActive: true });
      expect(res.body.locals).toEqual(res.body.apiKey);
      expect(res.body.apiKey.keyHash).toBeUndefined();
      expect(JSON.stringify(res.body)).not.toContain(key);
    });

    it('admits a key in X-API-Key and accepts the Bearer scheme in any case', async () => {
      const { keys } = testKeys();
      const { key } = await keys.create({ name: 'header' });
      const app = testApp(makeExpress, keys);
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      expect((await request(app).get('/whoami').set('Authorization', `bEaReR ${key}`)).status).toBe(200);
    });

    it('ignores the query parameter unless configured, then reads it', async () => {
      const { keys } = testKeys();
      const { key } = await keys.create({ name: 'query' });
      const plain = await request(testApp(makeExpress, keys)).get('/whoami').query({ api_key: key });
      expectProblem(plain, 401, 'missing_api_key');
      const configured = await request(testApp(makeExpress, keys, { query: 'api_key' })).get('/whoami').query({ api_key: key });
      expect(configured.status).toBe(200);
    });

    it('answers 401 missing_api_key with a bare Bearer challenge when no key is given', async () => {
      const { keys } = testKeys();
      const res = await request(testApp(makeExpress, keys)).get('/whoami');
      expectProblem(res, 401, 'missing_api_key');
      expect(res.headers['www-authenticate']).toBe('Bearer realm="api"');
      expect(res.headers['cache-control']).toBe('no-store');
    });

    it.each([
      ['an empty Bearer credential', { Authorization: 'Bearer' }],
      ['a Bearer credential of spaces', { Authorization: 'Bearer    ' }],
      ['an empty X-API-Key', { 'X-API-Key': '' }],
      ['a Basic Authorization header', { Authorization: 'Basic dXNlcjpwYXNz' }],
    ])('treats %s as absent', async (_name, headers) => {
      const { keys } = testKeys();
      const res = await request(testApp(makeExpress, keys)).get('/whoami').set(headers);
      expectProblem(res, 401, 'missing_api_key');
    });

    it('uses the configured realm and header name', async () => {
      const { keys } = testKeys();
      const { key } = await keys.create({ name: 'custom' });
      const app = testApp(makeExpress, keys, { realm: 'leads "api"', header: 'X-Leads-Key', bearer: false });
      const missing = await request(app).get('/whoami').set('Authorization', `Bearer ${key}`);
      expect(missing.headers['www-authenticate']).toBe('Bearer realm="leads \\"api\\""');
      expect((await request(app).get('/whoami').set('X-Leads-Key', key)).status).toBe(200);
      expectProblem(await request(app).get('/whoami').set('X-API-Key', key), 401, 'missing_api_key');
    });

    it('refuses two different keys as 400 ambiguous_credentials, whether or not either is well-formed', async () => {
      const { keys } = testKeys();
      const a = await keys.create({ name: 'a' });
      const b = await keys.create({ name: 'b' });
      const app = testApp(makeExpress, keys);
      const two = await request(app).get('/whoami').set('Authorization', `Bearer ${a.key}`).set('X-API-Key', b.key);
      expectProblem(two, 400, 'ambiguous_credentials');
      const garbage = await request(app).get('/whoami').set('Authorization', 'Bearer nonsense').set('X-API-Key', a.key);
      expectProblem(garbage, 400, 'ambiguous_credentials');
      const sameTwice = await request(app).get('/whoami').set('Authorization', `Bearer ${a.key}`).set('X-API-Key', a.key);
      expect(sameTwice.status).toBe(200);
    });

    it('refuses a second, different Authorization header instead of silently using the first', async () => {
      const { keys } = testKeys();
      const a = await keys.create({ name: 'a' });
      const b = await keys.create({ name: 'b' });
      const app = testApp(makeExpress, keys);
      const res = await request(app).get('/whoami').set('Authorization', [`Bearer ${a.key}`, `Bearer ${b.key}`] as unknown as string);
      expectProblem(res, 400, 'ambiguous_credentials');
    });
  });

  describe('key format', () => {
    it.each([
      ['garbage', 'hello'],
      ['another prefix', 'sk_live_0123456789ABCDEF_0123456789ABCDEFGHIJKLMNOPQRSTUV000000'],
      ['an over-long value', `pk_test_${'a'.repeat(300)}`],
      ['control characters', 'pk_test_\u0001\u0002'],
    ])('refuses %s as 401 malformed_api_key without touching the store', async (_name, value) => {
      const { keys, store } = testKeys();
      store.resetCounts();
      // eslint-disable-next-line no-control-regex -- the test replaces control characters on purpose
      const res = await request(testApp(makeExpress, keys)).get('/whoami').set('X-API-Key', value.replace(/[\u0000-\u001f]/g, '?'));
      expectProblem(res, 401, 'malformed_api_key');
      expect(res.headers['www-authenticate']).toBe('Bearer realm="api", error="invalid_token"');
      expect(store.calls.findByKeyPrefix + store.calls.consume).toBe(0);
    });

    it('refuses a real key with one character changed (bad checksum) without touching the store', async () => {
      const { keys, store } = testKeys();
      const { key } = await keys.create({ name: 'typo' });
      const position = key.length - 10;
      const typo = key.slice(0, position) + (key[position] === 'a' ? 'b' : 'a') + key.slice(position + 1);
      store.resetCounts();
      const res = await request(testApp(makeExpress, keys)).get('/whoami').set('X-API-Key', typo);
      expectProblem(res, 401, 'malformed_api_key');
      expect(store.calls.findByKeyPrefix).toBe(0);
    });
  });

  describe('no enumeration', () => {
    it('answers an unknown keyPrefix and a wrong secret for a known one identically', async () => {
      const { keys } = testKeys();
      const { key } = await keys.create({ name: 'known' });
      const other = testKeys();
      const { key: unknownKey } = await other.keys.create({ name: 'elsewhere' });
      // Same prefix, wrong secret: re-mint a key with this record's keyPrefix but another secret.
      const { formatKey } = await import('../../src/key/format');
      const [, lookupId] = /^pk_test_([0-9A-Za-z]+)_/.exec(key)!;
      const wrongSecret = formatKey('pk_test', lookupId!, 'W'.repeat(32));
      const app = testApp(makeExpress, keys);
      const unknown = await request(app).get('/whoami').set('X-API-Key', unknownKey);
      const wrong = await request(app).get('/whoami').set('X-API-Key', wrongSecret);
      expectProblem(unknown, 401, 'invalid_api_key');
      expect(wrong.status).toBe(unknown.status);
      expect(wrong.body).toEqual(unknown.body);
      const comparable = (res: request.Response) => {
        const { date: _date, ...headers } = res.headers;
        return headers;
      };
      expect(comparable(wrong)).toEqual(comparable(unknown));
    });

    it('gives status-specific answers only after the secret verified', async () => {
      const { keys } = testKeys();
      const { key, apiKey } = await keys.create({ name: 'revoked' });
      await keys.revoke(apiKey.id);
      const { formatKey } = await import('../../src/key/format');
      const [, lookupId] = /^pk_test_([0-9A-Za-z]+)_/.exec(key)!;
      const app = testApp(makeExpress, keys);
      expectProblem(await request(app).get('/whoami').set('X-API-Key', formatKey('pk_test', lookupId!, 'Q'.repeat(32))), 401, 'invalid_api_key');
      expectProblem(await request(app).get('/whoami').set('X-API-Key', key), 401, 'api_key_revoked');
    });
  });

  describe('lifecycle', () => {
    it('refuses a revoked key with 401 api_key_revoked and invalid_token', async () => {
      const { keys } = testKeys();
      const { key, apiKey } = await keys.create({ name: 'r' });
      const app = testApp(makeExpress, keys);
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      await keys.revoke(apiKey.id);
      const res = await request(app).get('/whoami').set('X-API-Key', key);
      expectProblem(res, 401, 'api_key_revoked');
      expect(res.headers['www-authenticate']).toBe('Bearer realm="api", error="invalid_token"');
    });

    it('refuses a key at exactly its expiresAt with 401 api_key_expired', async () => {
      const { keys, clock } = testKeys();
      const { key } = await keys.create({ name: 'e', expiresAt: new Date(T0 + 60_000) });
      const app = testApp(makeExpress, keys);
      clock.advance(59_999);
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      clock.advance(1);
      expectProblem(await request(app).get('/whoami').set('X-API-Key', key), 401, 'api_key_expired');
    });

    it('refuses a suspended key with 403 api_key_disabled and admits it again once reactivated', async () => {
      const { keys } = testKeys();
      const { key, apiKey } = await keys.create({ name: 's' });
      const app = testApp(makeExpress, keys);
      await keys.update(apiKey.id, { status: 'suspended' });
      const res = await request(app).get('/whoami').set('X-API-Key', key);
      expectProblem(res, 403, 'api_key_disabled');
      expect(res.headers['www-authenticate']).toBeUndefined();
      await keys.update(apiKey.id, { status: 'active' });
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
    });

    it('keeps a rotated-out key working until the grace period ends, then refuses it as revoked', async () => {
      const { keys, clock } = testKeys();
      const { key: oldKey, apiKey } = await keys.create({ name: 'rot', maxUses: 10 });
      const app = testApp(makeExpress, keys);
      for (let i = 0; i < 3; i++) expect((await request(app).get('/whoami').set('X-API-Key', oldKey)).status).toBe(200);
      const { key: newKey, apiKey: fresh } = await keys.rotate(apiKey.id, { gracePeriodMs: 60_000 });
      expect(fresh.maxUses).toBe(7);
      expect(fresh.rotatedFromId).toBe(apiKey.id);
      expect((await request(app).get('/whoami').set('X-API-Key', oldKey)).status).toBe(200);
      expect((await request(app).get('/whoami').set('X-API-Key', newKey)).status).toBe(200);
      clock.advance(60_000);
      expectProblem(await request(app).get('/whoami').set('X-API-Key', oldKey), 401, 'api_key_revoked');
      expect((await request(app).get('/whoami').set('X-API-Key', newKey)).status).toBe(200);
    });

    it('revokes the old key at once when rotated without grace', async () => {
      const { keys } = testKeys();
      const { key, apiKey } = await keys.create({ name: 'rot0' });
      const app = testApp(makeExpress, keys);
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      const { key: next } = await keys.rotate(apiKey.id);
      expectProblem(await request(app).get('/whoami').set('X-API-Key', key), 401, 'api_key_revoked');
      expect((await request(app).get('/whoami').set('X-API-Key', next)).status).toBe(200);
    });

    it('applies an update at once: new scopes take effect on the next request despite the cache', async () => {
      const { keys } = testKeys();
      const { key, apiKey } = await keys.create({ name: 'u', scopes: ['a:read'] });
      const app = testApp(makeExpress, keys, { scopes: ['b:read'] });
      expectProblem(await request(app).get('/whoami').set('X-API-Key', key), 403, 'insufficient_scope');
      await keys.update(apiKey.id, { scopes: ['b:read'] });
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
    });

    it('applies a revoke made through another keygate instance sharing the store at once', async () => {
      const { keys, store, clock } = testKeys();
      const { keygate } = await import('../../src/index');
      const admin = keygate({ store, prefix: 'pk_test', hashing: 'sha256', now: clock.now });
      const { key, apiKey } = await admin.create({ name: 'shared' });
      const app = testApp(makeExpress, keys);
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      await admin.revoke(apiKey.id);
      expectProblem(await request(app).get('/whoami').set('X-API-Key', key), 401, 'api_key_revoked');
    });
  });

  describe('allowed IPs', () => {
    it('refuses a client outside allowedIps with 403 ip_not_allowed, honouring trust proxy', async () => {
      const { keys } = testKeys();
      const { key } = await keys.create({ name: 'ip', allowedIps: ['203.0.113.0/24', '2001:db8::/32'] });
      const app = testApp(makeExpress, keys);
      expect((await request(app).get('/whoami').set('X-API-Key', key).set('X-Forwarded-For', '203.0.113.9')).status).toBe(200);
      expect((await request(app).get('/whoami').set('X-API-Key', key).set('X-Forwarded-For', '2001:db8::1')).status).toBe(200);
      const outside = await request(app).get('/whoami').set('X-API-Key', key).set('X-Forwarded-For', '198.51.100.1');
      expectProblem(outside, 403, 'ip_not_allowed');
      expect(JSON.stringify(outside.body)).not.toContain('198.51.100.1');
    });

    it('matches the loopback client whether Node reports it as IPv4 or IPv4-mapped IPv6', async () => {
      const { keys } = testKeys();
      const { key } = await keys.create({ name: 'lo', allowedIps: ['127.0.0.1'] });
      const { key: mapped } = await keys.create({ name: 'lo6', allowedIps: ['::ffff:127.0.0.0/104'] });
      const app = testApp(makeExpress, keys);
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      expect((await request(app).get('/whoami').set('X-API-Key', mapped)).status).toBe(200);
    });

    it('consumes nothing when the IP refuses', async () => {
      const { keys } = testKeys();
      const { key, apiKey } = await keys.create({ name: 'ipc', allowedIps: ['10.0.0.0/8'], maxUses: 5 });
      const app = testApp(makeExpress, keys);
      expectProblem(await request(app).get('/whoami').set('X-API-Key', key), 403, 'ip_not_allowed');
      expect((await keys.get(apiKey.id))!.useCount).toBe(0);
    });
  });

  describe('scopes', () => {
    it('refuses missing scopes of authenticate({ scopes }) with 403 insufficient_scope, naming them, and consumes nothing', async () => {
      const { keys } = testKeys();
      const { key, apiKey } = await keys.create({ name: 'sc', scopes: ['leads:read'], maxUses: 3 });
      const app = testApp(makeExpress, keys, { scopes: ['leads:read', 'leads:write'] });
      const res = await request(app).get('/whoami').set('X-API-Key', key);
      expectProblem(res, 403, 'insufficient_scope');
      expect(res.headers['www-authenticate']).toBe('Bearer realm="api", error="insufficient_scope", scope="leads:read leads:write"');
      expect((await keys.get(apiKey.id))!.useCount).toBe(0);
    });

    it('admits wildcard grants per SPEC §7', async () => {
      const { keys } = testKeys();
      const { key } = await keys.create({ name: 'wild', scopes: ['billing:*', '*:read'] });
      const app = testApp(makeExpress, keys, undefined, (a) => {
        a.get('/invoices', keys.authenticate({ scopes: ['billing:invoices:write', 'leads:read'] }), ok);
        a.get('/billing', keys.authenticate({ scopes: ['billing'] }), ok);
      });
      expect((await request(app).get('/invoices').set('X-API-Key', key)).status).toBe(200);
      expectProblem(await request(app).get('/billing').set('X-API-Key', key), 403, 'insufficient_scope');
    });

    it('runs requireScopes and requireAnyScope after authenticate; their refusal keeps the use counted', async () => {
      const { keys } = testKeys();
      const { key, apiKey } = await keys.create({ name: 'guards', scopes: ['leads:read'] });
      const app = makeExpress();
      app.use(keys.authenticate());
      app.get('/leads', requireScopes('leads:read'), ok);
      app.post('/leads', requireAnyScope('leads:write', 'admin'), ok);
      app.get('/any', requireAnyScope('admin', 'leads:read'), ok);
      expect((await request(app).get('/leads').set('X-API-Key', key)).status).toBe(200);
      expect((await request(app).get('/any').set('X-API-Key', key)).status).toBe(200);
      const refused = await request(app).post('/leads').set('X-API-Key', key);
      expectProblem(refused, 403, 'insufficient_scope');
      expect(refused.headers['www-authenticate']).toBe('Bearer realm="api", error="insufficient_scope", scope="leads:write admin"');
      expect((await keys.get(apiKey.id))!.useCount).toBe(3);
    });

    it('refuses a scope guard reached without authenticate() as 401 missing_api_key', async () => {
      const app = makeExpress();
      app.get('/leads', requireScopes('leads:read'), ok);
      expectProblem(await request(app).get('/leads'), 401, 'missing_api_key');
    });

    it('checks only its own scopes when a second authenticate() sees an admitted request, without consuming again', async () => {
      const { keys } = testKeys();
      const { key, apiKey } = await keys.create({ name: 'twice', scopes: ['x:read'] });
      const app = makeExpress();
      app.use(keys.authenticate());
      app.get('/x', keys.authenticate({ scopes: ['x:read'] }), ok);
      app.get('/y', keys.authenticate({ scopes: ['y:read'] }), ok);
      expect((await request(app).get('/x').set('X-API-Key', key)).status).toBe(200);
      expect((await keys.get(apiKey.id))!.useCount).toBe(1);
      expectProblem(await request(app).get('/y').set('X-API-Key', key), 403, 'insufficient_scope');
      expect((await keys.get(apiKey.id))!.useCount).toBe(2);
    });

    it('answers a second authenticate() refusal with its own onError', async () => {
      const { keys } = testKeys();
      const { key } = await keys.create({ name: 'style', scopes: ['x:read'] });
      const app = makeExpress();
      app.use(keys.authenticate());
      app.get('/y', keys.authenticate({ scopes: ['y:read'], onError: (err, _req, res) => res.status(418).json({ mine: err.code }) }), ok);
      const res = await request(app).get('/y').set('X-API-Key', key);
      expect(res.status).toBe(418);
      expect(res.body).toEqual({ mine: 'insufficient_scope' });
    });

    it('rejects invalid guard scopes when the route is mounted', () => {
      expect(() => requireScopes()).toThrow(TypeError);
      expect(() => requireScopes('has space')).toThrow(TypeError);
      expect(() => requireAnyScope('leads:*')).toThrow(TypeError);
    });
  });

  describe('limits and headers', () => {
    it('counts uses and refuses past maxUses with 403 usage_exhausted and no Retry-After', async () => {
      const { keys } = testKeys();
      const { key } = await keys.create({ name: 'max', maxUses: 2 });
      const app = testApp(makeExpress, keys);
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      const res = await request(app).get('/whoami').set('X-API-Key', key);
      expectProblem(res, 403, 'usage_exhausted');
      expect(res.headers['retry-after']).toBeUndefined();
      expect(res.headers['ratelimit']).toBeUndefined();
    });

    it('sends RateLimit-Policy and RateLimit on admitted answers, reporting the policy closest to refusing', async () => {
      const { keys } = testKeys();
      const { key } = await keys.create({ name: 'rl', rateLimit: { perSecond: 10, perDay: 10_000 } });
      const app = testApp(makeExpress, keys);
      const res = await request(app).get('/whoami').set('X-API-Key', key);
      expect(res.status).toBe(200);
      expect(res.headers['ratelimit-policy']).toBe('"second";q=10;w=1, "day";q=10000;w=86400');
      // 9/10 left of the second bucket is a smaller share than 9999/10000 of the day.
      expect(res.headers['ratelimit']).toBe('"second";r=9;t=1');
    });

    it('reports the day policy once it is the closest to refusing, with t = seconds to UTC midnight', async () => {
      const { keys, clock } = testKeys();
      clock.set(Date.UTC(2026, 0, 15, 23, 0, 0));
      const { key } = await keys.create({ name: 'day', rateLimit: { perSecond: 100, perDay: 2 } });
      const app = testApp(makeExpress, keys);
      const res = await request(app).get('/whoami').set('X-API-Key', key);
      expect(res.headers['ratelimit']).toBe('"day";r=1;t=3600');
    });

    it('refuses an empty bucket with 429 rate_limited, Retry-After and RateLimit fields, and refills over time', async () => {
      const { keys, clock } = testKeys();
      const { key } = await keys.create({ name: 'sec', rateLimit: { perSecond: 2, burst: 3 } });
      const app = testApp(makeExpress, keys);
      for (let i = 0; i < 3; i++) expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      const res = await request(app).get('/whoami').set('X-API-Key', key);
      expectProblem(res, 429, 'rate_limited');
      expect(res.headers['retry-after']).toBe('1');
      expect(res.headers['ratelimit-policy']).toBe('"second";q=2;w=1');
      expect(res.headers['ratelimit']).toBe('"second";r=0;t=2');
      clock.advance(500);
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(429);
    });

    it('refuses a used-up day with 429 quota_exceeded and Retry-After to the next UTC midnight, then resets', async () => {
      const { keys, clock } = testKeys();
      clock.set(Date.UTC(2026, 0, 15, 22, 30, 0));
      const { key } = await keys.create({ name: 'quota', rateLimit: { perDay: 1 } });
      const app = testApp(makeExpress, keys);
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      const res = await request(app).get('/whoami').set('X-API-Key', key);
      expectProblem(res, 429, 'quota_exceeded');
      expect(res.headers['retry-after']).toBe(String(90 * 60));
      expect(res.headers['ratelimit']).toBe('"day";r=0;t=5400');
      clock.set(Date.UTC(2026, 0, 16, 0, 0, 0));
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
    });

    it('reports the most lasting refusal when several limits refuse at once', async () => {
      const { keys, clock } = testKeys();
      const { key, apiKey } = await keys.create({ name: 'many', maxUses: 1, rateLimit: { perSecond: 1, perDay: 1 } });
      const app = testApp(makeExpress, keys);
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      expectProblem(await request(app).get('/whoami').set('X-API-Key', key), 403, 'usage_exhausted');
      await keys.update(apiKey.id, { maxUses: null });
      const both = await request(app).get('/whoami').set('X-API-Key', key);
      expectProblem(both, 429, 'quota_exceeded');
      // Retry-After is the later of the two resets: the bucket refills in 1 s, the day in 12 h.
      expect(Number(both.headers['retry-after'])).toBe(12 * 3600);
      clock.advance(1000);
      expectProblem(await request(app).get('/whoami').set('X-API-Key', key), 429, 'quota_exceeded');
    });

    it('sends no RateLimit fields for a key without rate limits, or when turned off', async () => {
      const { keys } = testKeys();
      const { key } = await keys.create({ name: 'free' });
      const { key: limited } = await keys.create({ name: 'lim', rateLimit: { perSecond: 5 } });
      const res = await request(testApp(makeExpress, keys)).get('/whoami').set('X-API-Key', key);
      expect(res.headers['ratelimit']).toBeUndefined();
      expect(res.headers['ratelimit-policy']).toBeUndefined();
      const off = await request(testApp(makeExpress, keys, { rateLimitHeaders: false })).get('/whoami').set('X-API-Key', limited);
      expect(off.status).toBe(200);
      expect(off.headers['ratelimit']).toBeUndefined();
    });

    it('admits exactly maxUses of 200 parallel requests', async () => {
      const { keys } = testKeys();
      const { key, apiKey } = await keys.create({ name: 'race', maxUses: 50 });
      const app = testApp(makeExpress, keys);
      const server = app.listen(0, '127.0.0.1');
      try {
        await new Promise((resolve) => server.once('listening', resolve));
        const agent = request(server);
        const statuses = await Promise.all(Array.from({ length: 200 }, () => agent.get('/whoami').set('X-API-Key', key).then((r) => r.status)));
        expect(statuses.filter((s) => s === 200)).toHaveLength(50);
        expect(statuses.filter((s) => s === 403)).toHaveLength(150);
        expect((await keys.get(apiKey.id))!.useCount).toBe(50);
      } finally {
        await new Promise((resolve) => server.close(resolve));
      }
    });
  });

  describe('store faults', () => {
    it('answers 503 store_unavailable within storeTimeoutMs when the store hangs, and recovers without restart', async () => {
      const { keys, store } = testKeys({ storeTimeoutMs: 50 });
      const { key } = await keys.create({ name: 'hang' });
      const app = testApp(makeExpress, keys);
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      store.fail('consume', 'hang');
      const started = Date.now();
      const res = await request(app).get('/whoami').set('X-API-Key', key);
      expectProblem(res, 503, 'store_unavailable');
      expect(Date.now() - started).toBeLessThan(2_000);
      store.heal();
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
    });

    it.each(['throw', 'reject'] as const)('fails closed with 503 when the store lookup or consume fails (%s)', async (how) => {
      const { keys, store } = testKeys();
      const { key } = await keys.create({ name: 'down' });
      const app = testApp(makeExpress, keys);
      store.fail('findByKeyPrefix', how);
      const cold = await request(app).get('/whoami').set('X-API-Key', key);
      expectProblem(cold, 503, 'store_unavailable');
      expect(JSON.stringify(cold.body)).not.toMatch(/ECONNRESET|connection refused/);
      store.heal();
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      // A cached key still needs its consume: an outage refuses it too.
      store.fail('consume', how);
      expectProblem(await request(app).get('/whoami').set('X-API-Key', key), 503, 'store_unavailable');
    });
  });

  describe('cache', () => {
    it('serves a warm key without a store lookup, but always with one consume', async () => {
      const { keys, store } = testKeys();
      const { key } = await keys.create({ name: 'warm' });
      const app = testApp(makeExpress, keys);
      store.resetCounts();
      for (let i = 0; i < 5; i++) expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      expect(store.calls.findByKeyPrefix).toBe(1);
      expect(store.calls.consume).toBe(5);
    });

    it('drops every cached key when the store reports that changes may have been missed', async () => {
      const { keys, store } = testKeys();
      const { key } = await keys.create({ name: 'missed' });
      const app = testApp(makeExpress, keys);
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      store.resetCounts();
      store.broadcast(null);
      expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      expect(store.calls.findByKeyPrefix).toBe(1);
    });

    it('looks the key up on every request with cache: false', async () => {
      const { keys, store } = testKeys({ cache: false });
      const { key } = await keys.create({ name: 'cold' });
      const app = testApp(makeExpress, keys);
      store.resetCounts();
      for (let i = 0; i < 3; i++) expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
      expect(store.calls.findByKeyPrefix).toBe(3);
    });

    it('hashes once for many concurrent first uses of a bcrypt key', async () => {
      const { keys, store } = testKeys({ hashing: 'bcrypt', bcryptCost: 4 });
      const { key } = await keys.create({ name: 'bcrypt' });
      const app = testApp(makeExpress, keys);
      const server = app.listen(0, '127.0.0.1');
      try {
        await new Promise((resolve) => server.once('listening', resolve));
        store.resetCounts();
        const statuses = await Promise.all(Array.from({ length: 20 }, () => request(server).get('/whoami').set('X-API-Key', key).then((r) => r.status)));
        expect(statuses.every((s) => s === 200)).toBe(true);
        expect(store.calls.findByKeyPrefix).toBe(1);
      } finally {
        await new Promise((resolve) => server.close(resolve));
      }
    });
  });

  describe('error answer modes', () => {
    it('lets onError take over the answer, with the refusal headers already set', async () => {
      const { keys } = testKeys();
      const seen: KeygateError[] = [];
      const app = testApp(makeExpress, keys, {
        onError: (err, _req, res) => {
          seen.push(err);
          res.status(err.status).json({ error: err.code });
        },
      });
      const res = await request(app).get('/whoami');
      expect(res.status).toBe(401);
      expect(res.body).toEqual({ error: 'missing_api_key' });
      expect(res.headers['www-authenticate']).toBe('Bearer realm="api"');
      expect(seen[0]).toBeInstanceOf(KeygateError);
    });

    it('passes the KeygateError to the app error handler with passErrors', async () => {
      const { keys } = testKeys();
      const { key } = await keys.create({ name: 'pass', maxUses: 0 });
      const app = testApp(makeExpress, keys, { passErrors: true });
      app.use((err: unknown, _req: unknown, res: import('express').Response, _next: unknown) => {
        const error = err as KeygateError;
        res.status(error.status).json({ handled: error.code, isKeygate: error instanceof KeygateError });
      });
      const res = await request(app).get('/whoami').set('X-API-Key', key);
      expect(res.status).toBe(403);
      expect(res.body).toEqual({ handled: 'usage_exhausted', isKeygate: true });
    });

    it('sends no body on a refused HEAD request', async () => {
      const { keys } = testKeys();
      const res = await request(testApp(makeExpress, keys)).head('/whoami');
      expect(res.status).toBe(401);
      expect(res.text ?? '').toBe('');
    });

    it('leaves routes mounted before it open', async () => {
      const { keys } = testKeys();
      expect((await request(testApp(makeExpress, keys)).get('/open')).status).toBe(200);
    });
  });

  describe('mount-time validation', () => {
    it('rejects unknown options with a did-you-mean TypeError', () => {
      const { keys } = testKeys();
      expect(() => keys.authenticate({ scope: ['a'] } as never)).toThrow(/unsupported option `scope`, did you mean `scopes`\?/);
      expect(() => keys.authenticate({ onError: () => undefined, passErrors: true })).toThrow(TypeError);
    });
  });
});
