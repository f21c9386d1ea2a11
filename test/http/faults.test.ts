/**
 * One error path: a store failure is a 503 `store_unavailable`; a fault in keygate itself or in
 * what the app gave it surfaces as the error it is (the app's error handler sees it), never as a
 * 503 that hides it; and an error in the middleware's own success branch reaches `next(err)` once.
 */
import { Worker } from 'node:worker_threads';
import type { ErrorRequestHandler, Express } from 'express';
import request from 'supertest';
import { KeygateError, keygate, MemoryStore } from '../../src/index';
import { CountingStore, EXPRESS_VERSIONS, T0 } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();

/** An app whose error handler records what reached it and answers 500 with the error's name. */
function appWithErrorHandler(makeApp: () => Express, before: Express['use'] extends (...args: infer A) => unknown ? A[0] | undefined : never, authenticate: unknown): { app: Express; seen: unknown[] } {
  const app = makeApp();
  const seen: unknown[] = [];
  if (before) app.use(before as never);
  app.use(authenticate as never);
  app.get('/x', (_req, res) => {
    if (!res.headersSent) res.json({ ok: true });
    else res.end();
  });
  const handler: ErrorRequestHandler = (error, _req, res, _next) => {
    seen.push(error);
    if (!res.headersSent) res.status(500).json({ name: (error as Error).name, code: (error as { code?: unknown }).code });
    else res.end();
  };
  app.use(handler);
  return { app, seen };
}

describe.each(EXPRESS_VERSIONS)('one error path (%s)', (_name, makeApp) => {
  it('a `now` clock that throws surfaces as its own error: verify() rejects with it, the middleware hands it to next(err)', async () => {
    let broken = false;
    const clockFault = new TypeError('clock is broken (test fault)');
    const keys = track(keygate({
      store: new MemoryStore(),
      hashing: 'sha256',
      now: () => {
        if (broken) throw clockFault;
        return T0;
      },
    }));
    const { key } = await keys.create({ name: 'k' });
    broken = true;

    await expect(keys.verify(key)).rejects.toBe(clockFault);
    const { app, seen } = appWithErrorHandler(makeApp, undefined, keys.authenticate());
    const response = await request(app).get('/x').set('x-api-key', key);
    expect(response.status).toBe(500);
    expect(response.body).toEqual({ name: 'TypeError' });
    expect(seen).toEqual([clockFault]);
  });

  it('a hashing thread that fails surfaces as its own error, not as store_unavailable', async () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'bcrypt', bcryptCost: 4, hashThreads: 1 }));
    const { key } = await keys.create({ name: 'k' });
    const threadFault = new Error('hashing thread could not take the job (test fault)');
    const spy = jest.spyOn(Worker.prototype, 'postMessage').mockImplementation(() => {
      throw threadFault;
    });
    try {
      const { app, seen } = appWithErrorHandler(makeApp, undefined, keys.authenticate());
      const response = await request(app).get('/x').set('x-api-key', key);
      expect(response.status).toBe(500);
      expect(seen).toEqual([threadFault]);
      expect(seen[0]).not.toBeInstanceOf(KeygateError);
    } finally {
      spy.mockRestore();
    }
    // The key itself is fine: once the thread works again, it is admitted.
    expect((await keys.verify(key)).ok).toBe(true);
  });

  it('a store that fails is still a 503 store_unavailable, whatever it throws', async () => {
    const store = new CountingStore();
    const keys = track(keygate({ store, hashing: 'sha256', now: () => T0 }));
    const { key } = await keys.create({ name: 'k' });
    for (const how of ['throw', 'reject'] as const) {
      store.fail('findByKeyPrefix', how);
      const { app, seen } = appWithErrorHandler(makeApp, undefined, keys.authenticate());
      const response = await request(app).get('/x').set('x-api-key', key);
      expect(response.status).toBe(503);
      expect(response.body.code).toBe('store_unavailable');
      expect(seen).toEqual([]);
      const result = await keys.verify(key);
      expect(result.ok === false && result.error.code).toBe('store_unavailable');
    }
  });

  it('an error thrown in the success branch (headers already sent) reaches next(err) exactly once', async () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256', now: () => T0 }));
    const { key } = await keys.create({ name: 'k', rateLimit: { perSecond: 5 } });
    // A middleware in front that has already sent the headers: setting RateLimit headers throws.
    const flushFirst = (_req: unknown, res: { writeHead(status: number): void }, next: () => void) => {
      res.writeHead(200);
      next();
    };
    const { app, seen } = appWithErrorHandler(makeApp, flushFirst as never, keys.authenticate());
    await request(app).get('/x').set('x-api-key', key);
    expect(seen).toHaveLength(1);
    expect((seen[0] as { code?: unknown }).code).toBe('ERR_HTTP_HEADERS_SENT');
  });
});

describe('misuse at construction is a TypeError; manager input is invalid_argument', () => {
  it('authenticate() and the scope guards throw TypeErrors naming the entry', async () => {
    const { requireScopes } = await import('../../src/index');
    const keys = track(keygate({ store: new MemoryStore() }));
    expect(() => keys.authenticate({ scopes: ['ok', 'has space'] })).toThrow(new TypeError('authenticate(): `scopes`[1] must be a literal scope such as "leads:read"'));
    expect(() => requireScopes('leads:*')).toThrow(new TypeError('requireScopes() scopes[0] must be a literal scope such as "leads:read"'));
  });

  it('rotate() and verify() options are invalid_argument naming the unknown field, never a TypeError', async () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    const { key, apiKey } = await keys.create({ name: 'k' });
    await expect(keys.rotate(apiKey.id, { grace: 5 } as never)).rejects.toMatchObject({ code: 'invalid_argument', field: 'grace' });
    await expect(keys.rotate(apiKey.id, null as never)).rejects.toMatchObject({ code: 'invalid_argument', field: 'options' });
    const result = await keys.verify(key, { ipAddress: '203.0.113.7' } as never);
    expect(result.ok === false && result.error).toMatchObject({ code: 'invalid_argument', field: 'ipAddress' });
  });
});
