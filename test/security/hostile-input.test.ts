/**
 * Hostile input never reaches a 500, a hang or a crash, and invalid input is refused before any
 * store call or hash. Property tests generate the requests; raw sockets send what HTTP clients
 * would refuse to.
 */
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import fc from 'fast-check';
import request from 'supertest';
import express from 'express';
import { keygate, type Keygate } from 'keygate';
import { CountingStore } from '../helpers/harness';

const ALLOWED_STATUSES = new Set([200, 400, 401, 403, 429]);

let keys: Keygate;
let store: CountingStore;
let validKey: string;
let server: Server;
let port: number;

beforeAll(async () => {
  store = new CountingStore();
  keys = keygate({ store, prefix: 'pk_test', hashing: 'sha256' });
  validKey = (await keys.create({ name: 'real', scopes: ['x:read'] })).key;
  const app = express();
  app.use(keys.authenticate({ query: 'api_key' }));
  app.get('/private', (_req, res) => {
    res.json({ ok: true });
  });
  app.use((error: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    // Reaching the app's error handler would mean keygate threw: make it visible as a 500.
    res.status(500).json({ leaked: String(error) });
  });
  server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  await keys.close();
  await new Promise((resolve) => server.close(resolve));
});

/** Sends raw bytes as an HTTP request and returns the status line's code (0 when the server just closed). */
function rawRequest(bytes: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let reply = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('the server did not answer within 5 s'));
    }, 5_000);
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
    });
    socket.on('close', () => {
      clearTimeout(timer);
      const match = /^HTTP\/1\.1 (\d{3})/.exec(reply);
      resolve(match ? Number(match[1]) : 0);
    });
    socket.on('error', () => undefined);
    socket.end(bytes);
  });
}

/** A header value any HTTP client accepts: visible ASCII, spaces and tabs, sometimes a real key in it. */
const headerValue = fc.oneof(
  fc.string({ unit: fc.constantFrom(...' \t!"#$%&\'()*+,-./0123456789:;<=>?@ABCXYZabcxyz[\\]^_`{|}~'.split('')), maxLength: 300 }),
  fc.constantFrom('Bearer', 'Bearer ', 'bearer x', 'Basic abc', ''),
  fc.integer({ min: 0, max: 10 }).map((n) => `Bearer ${'pk_test_'.repeat(n)}`),
  fc.nat({ max: 60 }).map((cut) => `Bearer pk_test_${'A'.repeat(cut)}`),
  fc.constant('VALID').map(() => `Bearer ${validKey}`),
);

describe('hostile requests', () => {
  it('answers every combination of credential headers and query keys with a deliberate status', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.option(headerValue, { nil: undefined }),
        fc.option(headerValue, { nil: undefined }),
        fc.option(fc.oneof(headerValue, fc.array(headerValue, { maxLength: 3 })), { nil: undefined }),
        async (authorization, apiKeyHeader, query) => {
          let call = request(server).get('/private');
          if (authorization !== undefined) call = call.set('Authorization', authorization);
          if (apiKeyHeader !== undefined) call = call.set('X-API-Key', apiKeyHeader);
          if (query !== undefined) call = call.query({ api_key: query });
          const res = await call;
          expect(ALLOWED_STATUSES.has(res.status)).toBe(true);
          if (res.status !== 200) expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
          expect(JSON.stringify(res.body)).not.toContain('keyHash');
        },
      ),
      { numRuns: 300 },
    );
  });

  it('refuses malformed keys before any store call', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ minLength: 1, maxLength: 400 }), async (garbage) => {
        const value = garbage.replace(/[^\x21-\x7e]/g, 'x');
        store.resetCounts();
        const res = await request(server).get('/private').set('X-API-Key', value);
        if (value === validKey) return;
        expect([400, 401]).toContain(res.status);
        expect(store.calls.findByKeyPrefix + store.calls.consume).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('survives raw bytes, control characters, non-ASCII and 8 KB+ header values without a 500 or a hang', async () => {
    const byte = fc.integer({ min: 0, max: 255 });
    await fc.assert(
      fc.asyncProperty(
        fc.array(byte, { minLength: 0, maxLength: 200 }),
        fc.integer({ min: 0, max: 12_000 }),
        fc.constantFrom('Authorization: Bearer ', 'X-API-Key: ', 'X-API-Key: pk_test_'),
        async (bytes, padding, header) => {
          const value = Buffer.concat([Buffer.from(bytes.filter((b) => b !== 10 && b !== 13)), Buffer.alloc(padding, 0x41)]);
          const head = Buffer.from(`GET /private HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${header}`, 'latin1');
          const status = await rawRequest(Buffer.concat([head, value, Buffer.from('\r\n\r\n')]));
          // Node's HTTP parser may refuse the bytes itself (400, 431) or drop the connection (0).
          expect([0, 400, 401, 403, 429, 431]).toContain(status);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('refuses repeated headers carrying different keys, and accepts a key repeated identically', async () => {
    const other = (await keys.create({ name: 'other' })).key;
    const twice = (value: string, second: string) =>
      Buffer.from(`GET /private HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: ${value}\r\nX-API-Key: ${second}\r\n\r\n`);
    expect(await rawRequest(twice(validKey, other))).toBe(400);
    expect(await rawRequest(twice(validKey, validKey))).toBe(200);
    expect(await rawRequest(Buffer.from(`GET /private HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${validKey}\r\nAuthorization: Bearer ${other}\r\n\r\n`))).toBe(400);
  });

  it('ignores a query key unless the query source is configured', async () => {
    const app = express();
    app.use(keys.authenticate());
    app.get('/private', (_req, res) => {
      res.json({ ok: true });
    });
    const res = await request(app).get('/private').query({ api_key: validKey });
    expect(res.status).toBe(401);
    expect(res.body.code).toBe('missing_api_key');
  });
});
