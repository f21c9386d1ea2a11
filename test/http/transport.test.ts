/**
 * HTTPS-only keys and pinned client certificates against a REAL TLS server: the same Express app
 * listens on plain HTTP and on HTTPS (client certificate requested, never required by TLS itself),
 * with certificates generated here by `openssl`. A key that requires HTTPS is refused in clear
 * text, and that refusal warns once that the key was exposed; `trust proxy` decides whether an
 * `X-Forwarded-Proto` counts; a pinned key needs the pinned certificate on the very connection;
 * every refusal counts nothing; changes and rotations are in force on the next request.
 */
import type { Express } from 'express';
import { type Keygate, keygate } from '../../src/index';
import { EXPRESS_VERSIONS, testKeys } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';
import { type Answer, type CallOptions, type Certificates, type DualServer, call, describeWithOpenssl, makeCertificates, serveBoth } from '../helpers/tls';

const track = closeAfterEach();

describeWithOpenssl('transport policies over real TLS', () => {
  let certificates: Certificates;
  const servers: DualServer[] = [];

  beforeAll(() => {
    certificates = makeCertificates();
  });
  afterAll(() => certificates.remove());
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((server) => server.close()));
  });

  describe.each(EXPRESS_VERSIONS)('%s', (_name, makeExpress) => {
    /** `/whoami` behind `authenticate(options)`, `/strict` behind a second `authenticate({ requireHttps: true })`. */
    function app(keys: Keygate, trustProxy: unknown = 'loopback', options: Parameters<Keygate['authenticate']>[0] = undefined): Express {
      const application = makeExpress();
      application.set('trust proxy', trustProxy);
      application.use(keys.authenticate(options));
      application.get('/whoami', (req, res) => {
        res.json({ id: req.apiKey?.id, secure: req.secure });
      });
      application.get('/strict', keys.authenticate({ requireHttps: true }), (req, res) => {
        res.json({ id: req.apiKey?.id, strict: true });
      });
      return application;
    }

    async function serve(application: Express): Promise<{ plain: (path: string, headers?: Record<string, string>) => Promise<Answer>; tls: (path: string, client?: 0 | 1, headers?: Record<string, string>) => Promise<Answer> }> {
      const server = await serveBoth(application, certificates.server);
      servers.push(server);
      return {
        plain: (path, headers = {}) => call(server.httpPort, path, { headers }),
        tls: (path, client, headers = {}) => {
          const tls: NonNullable<CallOptions['tls']> = { ca: certificates.server.cert };
          if (client !== undefined) tls.client = certificates.clients[client];
          return call(server.httpsPort, path, { headers, tls });
        },
      };
    }

    function withKey(key: string, headers: Record<string, string> = {}): Record<string, string> {
      return { 'X-API-Key': key, ...headers };
    }

    async function useCount(keys: Keygate, id: string): Promise<number | undefined> {
      return (await keys.get(id))?.useCount;
    }

    function spyWarnings(): { clearText: () => Array<[string, string | undefined]>; restore: () => void } {
      const spy = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
      return {
        clearText: () =>
          spy.mock.calls
            .map(([message, options]) => [String(message), (options as { code?: string } | undefined)?.code] as [string, string | undefined])
            .filter(([, code]) => code === 'KEYGATE_KEY_SENT_IN_CLEAR'),
        restore: () => spy.mockRestore(),
      };
    }

    describe('requireHttps', () => {
      it('a requireHttps key over plain HTTP: 403 https_required, counted nothing, warned once naming id and keyPrefix but never the key; over HTTPS: 200', async () => {
        const { keys, store } = testKeys();
        track(keys);
        const { key, apiKey } = await keys.create({ name: 'k', requireHttps: true });
        const client = await serve(app(keys));
        const warnings = spyWarnings();
        try {
          store.resetCounts();
          for (let i = 0; i < 3; i++) {
            const res = await client.plain('/whoami', withKey(key));
            expect(res.status).toBe(403);
            expect(res.body.code).toBe('https_required');
          }
          expect(store.calls.consume).toBe(0);
          expect(await useCount(keys, apiKey.id)).toBe(0);
          const clear = warnings.clearText();
          expect(clear).toHaveLength(1);
          const [message] = clear[0] as [string, string | undefined];
          expect(message).toContain(apiKey.id);
          expect(message).toContain(apiKey.keyPrefix);
          expect(message).not.toContain(key);
          expect(message).not.toContain(key.slice(apiKey.keyPrefix.length + 8));
        } finally {
          warnings.restore();
        }
        const res = await client.tls('/whoami');
        expect(res.status).toBe(401); // no key sent: TLS alone admits nothing
        const admitted = await client.tls('/whoami', undefined, withKey(key));
        expect(admitted.status).toBe(200);
        expect(admitted.body).toEqual({ id: apiKey.id, secure: true });
        expect(await useCount(keys, apiKey.id)).toBe(1);
      });

      it('a key without requireHttps is admitted over plain HTTP, and nothing is warned', async () => {
        const { keys } = testKeys();
        track(keys);
        const { key } = await keys.create({ name: 'k' });
        const client = await serve(app(keys));
        const warnings = spyWarnings();
        try {
          expect((await client.plain('/whoami', withKey(key))).status).toBe(200);
          expect(warnings.clearText()).toHaveLength(0);
        } finally {
          warnings.restore();
        }
      });

      it('authenticate({ requireHttps: true }) refuses plain HTTP for a key that does not require it, counting nothing', async () => {
        const { keys, store } = testKeys();
        track(keys);
        const { key, apiKey } = await keys.create({ name: 'k' });
        const client = await serve(app(keys, 'loopback', { requireHttps: true }));
        store.resetCounts();
        const refused = await client.plain('/whoami', withKey(key));
        expect(refused.status).toBe(403);
        expect(refused.body.code).toBe('https_required');
        expect(store.calls.consume).toBe(0);
        expect(await useCount(keys, apiKey.id)).toBe(0);
        expect((await client.tls('/whoami', undefined, withKey(key))).status).toBe(200);
        expect(await useCount(keys, apiKey.id)).toBe(1);
      });

      it('a second authenticate({ requireHttps: true }) refuses a request the first one already admitted over plain HTTP', async () => {
        const { keys } = testKeys();
        track(keys);
        const { key, apiKey } = await keys.create({ name: 'k' });
        const client = await serve(app(keys));
        expect((await client.plain('/whoami', withKey(key))).status).toBe(200);
        const refused = await client.plain('/strict', withKey(key));
        expect(refused.status).toBe(403);
        expect(refused.body.code).toBe('https_required');
        const admitted = await client.tls('/strict', undefined, withKey(key));
        expect(admitted.status).toBe(200);
        expect(admitted.body).toEqual({ id: apiKey.id, strict: true });
      });

      it('behind `trust proxy`, X-Forwarded-Proto: https from a trusted proxy admits; from an untrusted address it is ignored', async () => {
        const { keys } = testKeys();
        track(keys);
        const { key } = await keys.create({ name: 'k', requireHttps: true });
        const warnings = spyWarnings();
        try {
          const trusted = await serve(app(keys, 'loopback'));
          const admitted = await trusted.plain('/whoami', withKey(key, { 'X-Forwarded-Proto': 'https' }));
          expect(admitted.status).toBe(200);
          expect(admitted.body.secure).toBe(true);
          expect((await trusted.plain('/whoami', withKey(key, { 'X-Forwarded-Proto': 'http' }))).body.code).toBe('https_required');
          for (const trust of [false, '10.0.0.1', 'uniquelocal']) {
            const untrusted = await serve(app(keys, trust));
            const res = await untrusted.plain('/whoami', withKey(key, { 'X-Forwarded-Proto': 'https' }));
            expect({ trust, status: res.status, code: res.body.code }).toEqual({ trust, status: 403, code: 'https_required' });
          }
        } finally {
          warnings.restore();
        }
      });

      it('keys.update(id, { requireHttps }) is in force on the next request, though the key is cached', async () => {
        const { keys } = testKeys();
        track(keys);
        const { key, apiKey } = await keys.create({ name: 'k' });
        const client = await serve(app(keys));
        expect((await client.plain('/whoami', withKey(key))).status).toBe(200);
        expect((await client.plain('/whoami', withKey(key))).status).toBe(200);
        const warnings = spyWarnings();
        try {
          expect((await keys.update(apiKey.id, { requireHttps: true })).requireHttps).toBe(true);
          expect((await client.plain('/whoami', withKey(key))).body.code).toBe('https_required');
          expect(warnings.clearText()).toHaveLength(1);
        } finally {
          warnings.restore();
        }
        expect((await client.tls('/whoami', undefined, withKey(key))).status).toBe(200);
        await keys.update(apiKey.id, { requireHttps: false });
        expect((await client.plain('/whoami', withKey(key))).status).toBe(200);
      });
    });

    describe('clientCertificateSha256', () => {
      it('no certificate, plain HTTP, or another certificate: 403 client_certificate_required, counted nothing; the pinned one: 200', async () => {
        const { keys, store } = testKeys();
        track(keys);
        const [a] = certificates.clients;
        const { key, apiKey } = await keys.create({ name: 'k', clientCertificateSha256: [a.sha256] });
        expect(apiKey.clientCertificateSha256).toEqual([a.sha256]);
        const client = await serve(app(keys));
        store.resetCounts();
        for (const res of [
          await client.tls('/whoami', undefined, withKey(key)),
          await client.tls('/whoami', 1, withKey(key)),
          await client.plain('/whoami', withKey(key)),
          // TLS ended at a "proxy": the forwarded scheme says https, but no certificate is on this socket.
          await client.plain('/whoami', withKey(key, { 'X-Forwarded-Proto': 'https' })),
        ]) {
          expect({ status: res.status, code: res.body.code }).toEqual({ status: 403, code: 'client_certificate_required' });
        }
        expect(store.calls.consume).toBe(0);
        expect(await useCount(keys, apiKey.id)).toBe(0);
        const admitted = await client.tls('/whoami', 0, withKey(key));
        expect(admitted.status).toBe(200);
        expect(admitted.body.id).toBe(apiKey.id);
        expect(await useCount(keys, apiKey.id)).toBe(1);
      });

      it('a fingerprint pinned in the colon-separated upper-case form openssl prints is stored lower case and works', async () => {
        const { keys } = testKeys();
        track(keys);
        const [a, b] = certificates.clients;
        expect(a.opensslFingerprint).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
        const { key, apiKey } = await keys.create({ name: 'k', clientCertificateSha256: [a.opensslFingerprint, a.sha256.toUpperCase()] });
        expect(apiKey.clientCertificateSha256).toEqual([a.sha256]);
        const client = await serve(app(keys));
        expect((await client.tls('/whoami', 0, withKey(key))).status).toBe(200);
        expect((await client.tls('/whoami', 1, withKey(key))).body.code).toBe('client_certificate_required');
        // Two pins: either certificate.
        const both = await keys.create({ name: 'k', clientCertificateSha256: [a.opensslFingerprint, b.sha256] });
        expect((await client.tls('/whoami', 0, withKey(both.key))).status).toBe(200);
        expect((await client.tls('/whoami', 1, withKey(both.key))).status).toBe(200);
        expect((await client.tls('/whoami', undefined, withKey(both.key))).body.code).toBe('client_certificate_required');
      });

      it('a key without pins is admitted with or without a client certificate', async () => {
        const { keys } = testKeys();
        track(keys);
        const { key } = await keys.create({ name: 'k' });
        const client = await serve(app(keys));
        expect((await client.tls('/whoami', undefined, withKey(key))).status).toBe(200);
        expect((await client.tls('/whoami', 1, withKey(key))).status).toBe(200);
      });

      it('HTTPS is checked before the certificate: a key with both, over plain HTTP, is refused as https_required', async () => {
        const { keys } = testKeys();
        track(keys);
        const [a] = certificates.clients;
        const { key } = await keys.create({ name: 'k', requireHttps: true, clientCertificateSha256: [a.sha256] });
        const client = await serve(app(keys));
        const warnings = spyWarnings();
        try {
          expect((await client.plain('/whoami', withKey(key))).body.code).toBe('https_required');
        } finally {
          warnings.restore();
        }
        expect((await client.tls('/whoami', undefined, withKey(key))).body.code).toBe('client_certificate_required');
        expect((await client.tls('/whoami', 0, withKey(key))).status).toBe(200);
      });

      it('keys.update(id, { clientCertificateSha256 }) is in force on the next request, on this instance and another on the same store', async () => {
        const { keys, store } = testKeys();
        track(keys);
        const [a, b] = certificates.clients;
        const { key, apiKey } = await keys.create({ name: 'k' });
        const other = track(keygate({ store, prefix: 'pk_test', hashing: 'sha256' }));
        const client = await serve(app(keys));
        const otherClient = await serve(app(other));
        expect((await client.tls('/whoami', 1, withKey(key))).status).toBe(200);
        expect((await otherClient.tls('/whoami', 1, withKey(key))).status).toBe(200);
        await keys.update(apiKey.id, { clientCertificateSha256: [a.opensslFingerprint] });
        expect((await client.tls('/whoami', 1, withKey(key))).body.code).toBe('client_certificate_required');
        expect((await otherClient.tls('/whoami', 1, withKey(key))).body.code).toBe('client_certificate_required');
        expect((await client.tls('/whoami', 0, withKey(key))).status).toBe(200);
        await keys.update(apiKey.id, { clientCertificateSha256: [b.sha256] });
        expect((await client.tls('/whoami', 0, withKey(key))).body.code).toBe('client_certificate_required');
        expect((await client.tls('/whoami', 1, withKey(key))).status).toBe(200);
      });

      it('rotate() carries the pins and requireHttps to the new key, which enforces them over TLS', async () => {
        const { keys } = testKeys();
        track(keys);
        const [a] = certificates.clients;
        const { apiKey } = await keys.create({ name: 'k', requireHttps: true, clientCertificateSha256: [a.sha256], allowedOrigins: ['https://app.example.com'] });
        const rotated = await keys.rotate(apiKey.id);
        expect(rotated.apiKey).toMatchObject({ requireHttps: true, clientCertificateSha256: [a.sha256], allowedOrigins: ['https://app.example.com'] });
        const client = await serve(app(keys));
        const origin = { Origin: 'https://app.example.com' };
        const warnings = spyWarnings();
        try {
          expect((await client.plain('/whoami', withKey(rotated.key, origin))).body.code).toBe('https_required');
        } finally {
          warnings.restore();
        }
        expect((await client.tls('/whoami', 1, withKey(rotated.key, origin))).body.code).toBe('client_certificate_required');
        expect((await client.tls('/whoami', 0, withKey(rotated.key, { Origin: 'https://evil.com' }))).body.code).toBe('origin_not_allowed');
        expect((await client.tls('/whoami', 0, withKey(rotated.key, origin))).status).toBe(200);
      });
    });
  });
});
