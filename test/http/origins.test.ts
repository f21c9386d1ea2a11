/**
 * Allowed origins over HTTP, on both Express majors: a browser key is admitted only from the
 * origins it lists, decided on `Origin` (or, without one, `Referer`), with look-alike hosts,
 * other schemes and other ports refused; a refused request counts nothing; and a change of the
 * list, or a rotation, is in force on the very next request.
 */
import request from 'supertest';
import type { Express } from 'express';
import { EXPRESS_VERSIONS, testApp, testKeys } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';
import { keygate } from '../../src/index';

const track = closeAfterEach();

describe.each(EXPRESS_VERSIONS)('allowed origins over HTTP (%s)', (_name, makeExpress) => {
  async function browserKey(allowedOrigins: string[] | undefined): Promise<{ key: string; id: string; app: Express; useCount: () => Promise<number | undefined> }> {
    const { keys } = testKeys();
    track(keys);
    const { key, apiKey } = await keys.create({ name: 'browser', ...(allowedOrigins ? { allowedOrigins } : {}) });
    return { key, id: apiKey.id, app: testApp(makeExpress, keys), useCount: async () => (await keys.get(apiKey.id))?.useCount };
  }

  function get(app: Express, key: string, headers: Record<string, string> = {}): request.Test {
    const req = request(app).get('/whoami').set('X-API-Key', key);
    for (const [name, value] of Object.entries(headers)) req.set(name, value);
    return req;
  }

  async function expectRefused(app: Express, key: string, headers: Record<string, string>): Promise<void> {
    const res = await get(app, key, headers);
    expect({ headers, status: res.status, code: res.body.code }).toEqual({ headers, status: 403, code: 'origin_not_allowed' });
  }

  it('admits exactly the listed origins and shows the list on req.apiKey', async () => {
    const { key, app } = await browserKey(['https://app.example.com', 'http://localhost:3000']);
    const res = await get(app, key, { Origin: 'https://app.example.com' });
    expect(res.status).toBe(200);
    expect(res.body.apiKey.allowedOrigins).toEqual(['https://app.example.com', 'http://localhost:3000']);
    expect((await get(app, key, { Origin: 'http://localhost:3000' })).status).toBe(200);
    for (const origin of [
      'https://evil.com',
      'http://app.example.com',
      'https://app.example.com:8443',
      'https://app.example.com.evil.com',
      'https://evil-app.example.com',
      'https://a.app.example.com',
      'http://localhost:3001',
      'https://localhost:3000',
    ]) {
      await expectRefused(app, key, { Origin: origin });
    }
  });

  it('a wildcard admits subdomains at any depth and refuses the bare domain, look-alikes, another scheme and another port', async () => {
    const { key, app } = await browserKey(['https://*.example.com']);
    for (const origin of ['https://a.example.com', 'https://a.b.example.com', 'https://A.Example.COM']) {
      expect((await get(app, key, { Origin: origin })).status).toBe(200);
    }
    for (const origin of [
      'https://example.com',
      'https://evil-example.com',
      'https://evilexample.com',
      'https://a.example.com.evil.com',
      'http://a.example.com',
      'https://a.example.com:8443',
      'https://a.example.co',
    ]) {
      await expectRefused(app, key, { Origin: origin });
    }
  });

  it('normalises case and the default port on both sides', async () => {
    const { key, app } = await browserKey(['HTTPS://App.Example.com:443/']);
    for (const origin of ['https://app.example.com', 'https://APP.EXAMPLE.COM', 'https://app.example.com:443']) {
      expect((await get(app, key, { Origin: origin })).status).toBe(200);
    }
    const http = await browserKey(['http://app.example.com']);
    expect((await get(http.app, http.key, { Origin: 'http://app.example.com:80' })).status).toBe(200);
    await expectRefused(http.app, http.key, { Origin: 'http://app.example.com:8080' });
  });

  it('uses the Referer only when there is no Origin: an Origin outside the list is refused whatever the Referer says', async () => {
    const { key, app } = await browserKey(['https://app.example.com']);
    expect((await get(app, key, { Referer: 'https://app.example.com/dashboard?tab=1' })).status).toBe(200);
    await expectRefused(app, key, { Referer: 'https://evil.com/https://app.example.com' });
    await expectRefused(app, key, { Referer: 'https://app.example.com.evil.com/' });
    await expectRefused(app, key, { Origin: 'https://evil.com', Referer: 'https://app.example.com/' });
    expect((await get(app, key, { Origin: 'https://app.example.com', Referer: 'https://evil.com/' })).status).toBe(200);
  });

  it('`Origin: null` (a sandboxed iframe, a file: page, a redirect) is an opaque origin: refused, whatever the Referer says', async () => {
    const { key, app } = await browserKey(['https://app.example.com']);
    await expectRefused(app, key, { Origin: 'null', Referer: 'https://app.example.com/embed' });
    await expectRefused(app, key, { Origin: 'null' });
    await expectRefused(app, key, { Origin: 'null', Referer: 'https://evil.com/' });
  });

  it('refuses a request with no Origin and no Referer, or with headers that are not http(s) URLs', async () => {
    const { key, app } = await browserKey(['https://app.example.com']);
    await expectRefused(app, key, {});
    await expectRefused(app, key, { Origin: 'app.example.com' });
    await expectRefused(app, key, { Origin: 'file://' });
    await expectRefused(app, key, { Referer: 'android-app://app.example.com/' });
  });

  it('a key without allowedOrigins admits any origin, and none', async () => {
    const { key, app } = await browserKey(undefined);
    const res = await get(app, key, { Origin: 'https://evil.com' });
    expect(res.status).toBe(200);
    expect(res.body.apiKey.allowedOrigins).toEqual([]);
    expect((await get(app, key)).status).toBe(200);
    expect((await get(app, key, { Origin: 'null' })).status).toBe(200);
  });

  it('a refused request counts nothing: no use, no store consume, no rate-limit token', async () => {
    const { keys, store } = testKeys();
    track(keys);
    const { key, apiKey } = await keys.create({ name: 'k', allowedOrigins: ['https://app.example.com'], maxUses: 2, rateLimit: { perSecond: 1, burst: 1 } });
    const app = testApp(makeExpress, keys);
    store.resetCounts();
    for (let i = 0; i < 5; i++) await expectRefused(app, key, { Origin: 'https://evil.com' });
    expect(store.calls.consume).toBe(0);
    expect((await keys.get(apiKey.id))?.useCount).toBe(0);
    // The one token of the bucket and both uses are still there.
    expect((await get(app, key, { Origin: 'https://app.example.com' })).status).toBe(200);
    expect((await keys.get(apiKey.id))?.useCount).toBe(1);
  });

  it('an origin refusal comes after a wrong IP and before a missing scope', async () => {
    const { keys } = testKeys();
    track(keys);
    const ipBound = await keys.create({ name: 'k', allowedOrigins: ['https://app.example.com'], allowedIps: ['10.0.0.0/8'] });
    const scoped = await keys.create({ name: 'k', allowedOrigins: ['https://app.example.com'], scopes: ['a:read'] });
    const app = testApp(makeExpress, keys, { scopes: ['b:write'] });
    expect((await get(app, ipBound.key, { Origin: 'https://evil.com' })).body.code).toBe('ip_not_allowed');
    expect((await get(app, scoped.key, { Origin: 'https://evil.com' })).body.code).toBe('origin_not_allowed');
    expect((await get(app, scoped.key, { Origin: 'https://app.example.com' })).body.code).toBe('insufficient_scope');
  });

  it('keys.update(id, { allowedOrigins }) is in force on the next request, both ways, though the key is cached', async () => {
    const { keys, store } = testKeys();
    track(keys);
    const { key, apiKey } = await keys.create({ name: 'k' });
    const app = testApp(makeExpress, keys);
    expect((await get(app, key, { Origin: 'https://evil.com' })).status).toBe(200);
    expect((await get(app, key, { Origin: 'https://evil.com' })).status).toBe(200); // warm: served from cache
    const updated = await keys.update(apiKey.id, { allowedOrigins: ['https://*.example.com'] });
    expect(updated.allowedOrigins).toEqual(['https://*.example.com']);
    await expectRefused(app, key, { Origin: 'https://evil.com' });
    expect((await get(app, key, { Origin: 'https://a.example.com' })).status).toBe(200);
    await keys.update(apiKey.id, { allowedOrigins: ['https://app.example.org'] });
    await expectRefused(app, key, { Origin: 'https://a.example.com' });
    await keys.update(apiKey.id, { allowedOrigins: [] });
    expect((await get(app, key, { Origin: 'https://evil.com' })).status).toBe(200);
    // Another instance on the same store learns of the change too (the store's subscription).
    const other = track(keygate({ store, prefix: 'pk_test', hashing: 'sha256' }));
    const otherApp = testApp(makeExpress, other);
    expect((await get(otherApp, key, { Origin: 'https://evil.com' })).status).toBe(200);
    await keys.update(apiKey.id, { allowedOrigins: ['https://app.example.com'] });
    await expectRefused(otherApp, key, { Origin: 'https://evil.com' });
  });

  it('rotate() carries allowedOrigins, requireHttps and clientCertificateSha256 to the new key, which enforces them', async () => {
    const { keys } = testKeys();
    track(keys);
    const pin = 'ab'.repeat(32);
    const { apiKey } = await keys.create({ name: 'k', allowedOrigins: ['https://app.example.com'], requireHttps: true, clientCertificateSha256: [pin] });
    const rotated = await keys.rotate(apiKey.id);
    expect(rotated.apiKey.id).not.toBe(apiKey.id);
    expect(rotated.apiKey.allowedOrigins).toEqual(['https://app.example.com']);
    expect(rotated.apiKey.requireHttps).toBe(true);
    expect(rotated.apiKey.clientCertificateSha256).toEqual([pin]);
    const stored = await keys.get(rotated.apiKey.id);
    expect(stored).toMatchObject({ allowedOrigins: ['https://app.example.com'], requireHttps: true, clientCertificateSha256: [pin] });
    const verify = (options: Parameters<typeof keys.verify>[1]): Promise<string | undefined> =>
      keys.verify(rotated.key, options).then((result) => (result.ok ? undefined : result.error.code));
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      expect(await verify({ origin: 'https://evil.com', secure: true, clientCertificateSha256: pin })).toBe('origin_not_allowed');
      expect(await verify({ origin: 'https://app.example.com', secure: false, clientCertificateSha256: pin })).toBe('https_required');
      expect(await verify({ origin: 'https://app.example.com', secure: true })).toBe('client_certificate_required');
      expect(await verify({ origin: 'https://app.example.com', secure: true, clientCertificateSha256: pin })).toBeUndefined();
    } finally {
      warn.mockRestore();
    }
    // Over HTTP (no TLS here) the rotated key is refused by its origin first, then by HTTPS.
    const app = testApp(makeExpress, keys);
    await expectRefused(app, rotated.key, { Origin: 'https://evil.com' });
    const clear = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      expect((await get(app, rotated.key, { Origin: 'https://app.example.com' })).body.code).toBe('https_required');
    } finally {
      clear.mockRestore();
    }
  });
});
