/**
 * `maxConcurrent` as clients and apps see it, in one process (several processes sharing Redis and
 * PostgreSQL: test/redis and test/sql multi-process tests): at most N requests of a key in a
 * handler at once, the next one refused with 429 `concurrency_limited` and `Retry-After`, and the
 * slot given back however the request ends — a response, an error, a refusal further down, a
 * client that hangs up — or, when nobody gives it back, once `concurrencyLeaseMs` has passed.
 */
import { once } from 'node:events';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { Express, NextFunction, Request, Response } from 'express';
import request from 'supertest';
import { type ApiKeyStore, type Keygate, keygate, MemoryStore } from '../../src/index';
import { EXPRESS_VERSIONS, testKeys } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();

/** A JSON body parser that reads the whole body (as express.json() does), for both Express majors. */
function jsonBody(req: Request, _res: Response, next: NextFunction): void {
  let text = '';
  req.setEncoding('utf8');
  req.on('data', (chunk: string) => (text += chunk));
  req.on('end', () => {
    req.body = JSON.parse(text) as unknown;
    next();
  });
}

/** A gate handlers wait at until the test opens it; counts who is inside. */
class Gate {
  inside = 0;
  most = 0;
  private waiting: (() => void)[] = [];

  async pass(): Promise<void> {
    this.inside++;
    this.most = Math.max(this.most, this.inside);
    await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.inside--;
  }

  open(): void {
    for (const resolve of this.waiting.splice(0)) resolve();
  }

  /** Resolves once `count` handlers are waiting. */
  async holding(count: number): Promise<void> {
    while (this.waiting.length < count) await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A server on a free port, closed after the test. */
async function listen(app: Express): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http.createServer(app);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

/** Sends a request with the key; resolves with its status, headers and body text. */
function send(port: number, key: string, path = '/slow'): { done: Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>; abort: () => void } {
  const req = http.request({ host: '127.0.0.1', port, path, headers: { 'x-api-key': key } });
  const done = new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
  });
  req.end();
  return { done, abort: () => req.destroy() };
}

/** Whether the key has a free slot now: takes it with a counted verify() and gives it back. */
async function hasFreeSlot(keys: Keygate, key: string): Promise<boolean> {
  const probe = await keys.verify(key);
  if (probe.ok) await probe.release?.();
  return probe.ok;
}

/** A store forwarding every required method to `inner`, with no release(), then `overrides`. */
function wrapped(inner: MemoryStore, overrides: Partial<ApiKeyStore> = {}): ApiKeyStore {
  return {
    insert: (record) => inner.insert(record),
    findById: (id) => inner.findById(id),
    findByKeyPrefix: (keyPrefix) => inner.findByKeyPrefix(keyPrefix),
    update: (id, patch) => inner.update(id, patch),
    rotate: (rotation) => inner.rotate(rotation),
    list: (query) => inner.list(query),
    purge: (purge) => inner.purge(purge),
    consume: (id, consumeRequest) => inner.consume(id, consumeRequest),
    ...overrides,
  };
}

/** Polls until `check` holds (the release runs after the response, in the background). */
async function eventually(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error('condition not met within 1 s');
}

describe.each(EXPRESS_VERSIONS)('maxConcurrent over HTTP (%s)', (_name, makeExpress) => {
  function appWith(keys: ReturnType<typeof testKeys>['keys'], gate: Gate): Express {
    const app = makeExpress();
    app.use(keys.authenticate());
    app.get('/slow', async (_req: Request, res: Response) => {
      await gate.pass();
      res.json({ done: true });
    });
    app.get('/fails', async (_req: Request, _res: Response, next: NextFunction) => {
      await gate.pass();
      next(new Error('handler failed'));
    });
    app.get('/scoped', keys.authenticate({ scopes: ['admin'] }), (_req: Request, res: Response) => {
      res.json({ never: true });
    });
    app.get('/hangs', () => undefined);
    return app;
  }

  it('holds at most maxConcurrent requests in handlers; the others get 429 concurrency_limited with Retry-After', async () => {
    const { keys } = testKeys();
    track(keys);
    const { key } = await keys.create({ name: 'k', maxConcurrent: 3 });
    const gate = new Gate();
    const server = await listen(appWith(keys, gate));
    try {
      const first = Array.from({ length: 3 }, () => send(server.port, key));
      await gate.holding(3);
      const refused = await Promise.all(Array.from({ length: 5 }, () => send(server.port, key).done));
      for (const answer of refused) {
        expect(answer.status).toBe(429);
        expect(answer.headers['retry-after']).toBe('1');
        expect(answer.headers['content-type']).toMatch(/^application\/problem\+json/);
        expect(JSON.parse(answer.body)).toMatchObject({ code: 'concurrency_limited', status: 429 });
      }
      expect(gate.most).toBe(3);
      gate.open();
      for (const answer of await Promise.all(first.map((r) => r.done))) expect(answer.status).toBe(200);
      // Every slot came back: three at once again.
      const again = Array.from({ length: 3 }, () => send(server.port, key));
      await gate.holding(3);
      gate.open();
      for (const answer of await Promise.all(again.map((r) => r.done))) expect(answer.status).toBe(200);
      // Refusals counted nothing: 6 admitted uses.
      const listed = await keys.list();
      expect(listed.items[0]!.useCount).toBe(6);
    } finally {
      gate.open();
      await server.close();
    }
  });

  it('gives the slot back when the handler fails, when a later guard refuses, and when the client hangs up', async () => {
    const { keys, store } = testKeys();
    track(keys);
    const { key, apiKey } = await keys.create({ name: 'k', maxConcurrent: 1 });
    const gate = new Gate();
    const server = await listen(appWith(keys, gate));
    const slotFree = () => hasFreeSlot(keys, key);
    try {
      // A handler error answered 500 by Express.
      const failing = send(server.port, key, '/fails');
      await gate.holding(1);
      expect((await send(server.port, key).done).status).toBe(429);
      gate.open();
      expect((await failing.done).status).toBe(500);
      await eventually(slotFree);

      // Admitted by the first authenticate(), refused 403 by the route's own scope check.
      expect((await send(server.port, key, '/scoped').done).status).toBe(403);
      await eventually(slotFree);

      // A client that gives up while the handler is still working.
      const abandoned = send(server.port, key);
      abandoned.done.catch(() => undefined);
      await gate.holding(1);
      expect(await slotFree()).toBe(false);
      abandoned.abort();
      await eventually(slotFree);
      gate.open();

      // Each admitted request released exactly its own slot, once.
      await eventually(async () => store.calls.release >= 3);
      expect((await keys.get(apiKey.id))!.maxConcurrent).toBe(1);
    } finally {
      gate.open();
      await server.close();
    }
  });

  it('a client that resets the connection before its admission ends holds no slot, and its handler never runs', async () => {
    const { keys, store } = testKeys();
    track(keys);
    const { key } = await keys.create({ name: 'k', maxConcurrent: 2 });
    const gate = new Gate();
    const server = await listen(appWith(keys, gate));
    try {
      // The consume answers late, so every client below is gone before it does.
      const consume = store.consume;
      store.consume = async (id, consumeRequest) => {
        await new Promise((resolve) => setTimeout(resolve, 40));
        return consume(id, consumeRequest);
      };
      for (let i = 0; i < 5; i++) {
        const socket = net.connect(server.port, '127.0.0.1');
        socket.on('error', () => undefined);
        await once(socket, 'connect');
        socket.write(`GET /slow HTTP/1.1\r\nHost: localhost\r\nX-API-Key: ${key}\r\n\r\n`);
        await new Promise((resolve) => setTimeout(resolve, 5));
        socket.resetAndDestroy();
      }
      await eventually(async () => store.calls.consume >= 5 && store.calls.release >= 5);
      store.consume = consume;
      expect(gate.most).toBe(0);
      // Both slots are free.
      const both = [await keys.verify(key), await keys.verify(key)];
      expect(both.map((result) => result.ok)).toEqual([true, true]);
    } finally {
      gate.open();
      await server.close();
    }
  });

  it('pipelined requests whose connection dies give back every slot, the queued ones too', async () => {
    const { keys } = testKeys();
    track(keys);
    const { key } = await keys.create({ name: 'k', maxConcurrent: 3 });
    const gate = new Gate();
    const server = await listen(appWith(keys, gate));
    try {
      const socket = net.connect(server.port, '127.0.0.1');
      socket.on('error', () => undefined);
      await once(socket, 'connect');
      socket.write(`GET /slow HTTP/1.1\r\nHost: localhost\r\nX-API-Key: ${key}\r\n\r\n`.repeat(3));
      await gate.holding(3);
      socket.destroy();
      await eventually(async () => {
        const results = [await keys.verify(key), await keys.verify(key), await keys.verify(key)];
        for (const result of results) if (result.ok) await result.release?.();
        return results.every((result) => result.ok);
      });
    } finally {
      gate.open();
      await server.close();
    }
  });

  it('a body parser reading the body does not end the slot early, before or after authenticate()', async () => {
    const { keys } = testKeys();
    track(keys);
    const { key } = await keys.create({ name: 'k', maxConcurrent: 1 });
    const gate = new Gate();
    const app = makeExpress();
    app.post('/before', jsonBody, keys.authenticate(), async (req: Request, res: Response) => {
      await gate.pass();
      res.json(req.body);
    });
    app.post('/after', keys.authenticate(), jsonBody, async (req: Request, res: Response) => {
      await gate.pass();
      res.json(req.body);
    });
    const server = await listen(app);
    const post = (path: string) =>
      request(`http://127.0.0.1:${server.port}`).post(path).set('X-API-Key', key).set('Content-Type', 'application/json').send({ a: 1 });
    try {
      for (const path of ['/before', '/after']) {
        const first = post(path).then((res) => res);
        await gate.holding(1);
        // The body was read and the handler still runs: the slot is still taken.
        expect((await post(path)).body.code).toBe('concurrency_limited');
        gate.open();
        const answered = await first;
        expect(answered.status).toBe(200);
        expect(answered.body).toEqual({ a: 1 });
        await eventually(() => hasFreeSlot(keys, key));
      }
    } finally {
      gate.open();
      await server.close();
    }
  });

  it('many requests on one keep-alive connection leave no listeners behind on it', async () => {
    const { keys } = testKeys();
    track(keys);
    const { key } = await keys.create({ name: 'k', maxConcurrent: 1 });
    const app = makeExpress();
    let listeners = 0;
    app.get('/count', keys.authenticate(), (req: Request, res: Response) => {
      listeners = Math.max(listeners, req.socket.listenerCount('close'));
      res.json({ ok: true });
    });
    const server = await listen(app);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (let i = 0; i < 30; i++) {
        const status = await new Promise<number>((resolve, reject) => {
          http
            .get({ host: '127.0.0.1', port: server.port, path: '/count', agent, headers: { 'x-api-key': key } }, (res) => {
              res.resume();
              res.on('end', () => resolve(res.statusCode ?? 0));
            })
            .on('error', reject);
        });
        expect(status).toBe(200);
      }
      // Node's own listeners plus at most this request's one.
      expect(listeners).toBeLessThan(6);
    } finally {
      agent.destroy();
      await server.close();
    }
  });

  it('each keygate instance that admits a request takes a slot of its own, and gives it back', async () => {
    const { keys, store, clock } = testKeys();
    track(keys);
    const other = track(keygate({ store, prefix: 'pk_test', hashing: 'sha256', now: clock.now }));
    const { key } = await keys.create({ name: 'k', maxConcurrent: 2 });
    const gate = new Gate();
    const app = makeExpress();
    app.get('/both', keys.authenticate(), other.authenticate(), async (_req: Request, res: Response) => {
      await gate.pass();
      res.json({ ok: true });
    });
    const server = await listen(app);
    try {
      const first = send(server.port, key, '/both');
      await gate.holding(1);
      expect(await keys.verify(key)).toMatchObject({ ok: false, error: { code: 'concurrency_limited' } });
      gate.open();
      expect((await first.done).status).toBe(200);
      await eventually(async () => store.calls.release >= 2);
      const results = [await keys.verify(key), await keys.verify(key)];
      expect(results.map((result) => result.ok)).toEqual([true, true]);
    } finally {
      gate.open();
      await server.close();
    }
  });

  it('a slot nobody gives back lapses after concurrencyLeaseMs', async () => {
    const { keys, clock } = testKeys({ concurrencyLeaseMs: 5_000 });
    track(keys);
    const { key } = await keys.create({ name: 'k', maxConcurrent: 1 });
    const server = await listen(appWith(keys, new Gate()));
    try {
      const hanging = send(server.port, key, '/hangs');
      hanging.done.catch(() => undefined);
      await eventually(async () => {
        const probe = await keys.verify(key);
        return !probe.ok && probe.error.code === 'concurrency_limited';
      });
      clock.advance(4_999);
      const held = await request(`http://127.0.0.1:${server.port}`).get('/slow').set('X-API-Key', key);
      expect(held.status).toBe(429);
      clock.advance(1);
      const after = await keys.verify(key);
      expect(after.ok).toBe(true);
      if (after.ok) await after.release?.();
      hanging.abort();
    } finally {
      await server.close();
    }
  });
});

describe('maxConcurrent with keys.verify()', () => {
  it('takes a slot only when it counts the use, and release() gives it back once', async () => {
    const { keys } = testKeys();
    track(keys);
    const { key } = await keys.create({ name: 'k', maxConcurrent: 2 });
    const first = await keys.verify(key);
    const second = await keys.verify(key);
    if (!first.ok || !second.ok) throw new Error('expected both admitted');
    expect(first.limits?.concurrency).toEqual({ limit: 2, inFlight: 1 });
    expect(second.limits?.concurrency).toEqual({ limit: 2, inFlight: 2 });
    const third = await keys.verify(key);
    expect(third.ok).toBe(false);
    if (!third.ok) {
      expect(third.error.code).toBe('concurrency_limited');
      expect(third.error.retryAfter).toBe(1);
      expect(third.limits?.concurrency).toEqual({ limit: 2, inFlight: 2 });
    }
    // A check without counting takes no slot and is not refused for want of one.
    const unconsumed = await keys.verify(key, { consume: false });
    expect(unconsumed.ok).toBe(true);
    if (unconsumed.ok) expect(unconsumed.release).toBeUndefined();
    // Releasing twice frees one slot, not two.
    await first.release?.();
    await first.release?.();
    const fourth = await keys.verify(key);
    expect(fourth.ok).toBe(true);
    expect((await keys.verify(key)).ok).toBe(false);
  });

  it('during a rotation grace period the old and the new key each have slots of their own', async () => {
    const { keys } = testKeys();
    track(keys);
    const { key: oldKey, apiKey } = await keys.create({ name: 'k', maxConcurrent: 1 });
    const held = await keys.verify(oldKey);
    expect(held.ok).toBe(true);
    const { key: newKey, apiKey: replacement } = await keys.rotate(apiKey.id, { gracePeriodMs: 60_000 });
    expect(replacement.maxConcurrent).toBe(1);
    const fresh = await keys.verify(newKey);
    expect(fresh.ok).toBe(true);
    expect(await keys.verify(newKey)).toMatchObject({ ok: false, error: { code: 'concurrency_limited' } });
    expect(await keys.verify(oldKey)).toMatchObject({ ok: false, error: { code: 'concurrency_limited' } });
  });

  it('a key without maxConcurrent takes no slot and reports none', async () => {
    const { keys, store } = testKeys();
    track(keys);
    const { key } = await keys.create({ name: 'k' });
    const result = await keys.verify(key);
    expect(result.ok).toBe(true);
    if (result.ok) {
      expect(result.release).toBeUndefined();
      expect(result.limits?.concurrency).toBeUndefined();
    }
    expect(store.calls.release).toBe(0);
  });

  it('a consume that timed out gives its slot back instead of holding it for the lease', async () => {
    const inner = new MemoryStore();
    let delayMs = 0;
    const slow = wrapped(inner, {
      // Applied, but answered too late: the caller has given up by then.
      consume: async (id, consumeRequest) => {
        const outcome = await inner.consume(id, { ...consumeRequest, deadline: undefined });
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        return outcome;
      },
      release: (id, lease) => inner.release(id, lease),
    });
    const keys = track(keygate({ store: slow, prefix: 'pk_test', hashing: 'sha256', storeTimeoutMs: 50 }));
    const { key } = await keys.create({ name: 'k', maxConcurrent: 1 });
    delayMs = 200;
    const timedOut = await keys.verify(key);
    expect(timedOut.ok).toBe(false);
    if (!timedOut.ok) expect(timedOut.error.code).toBe('store_unavailable');
    delayMs = 0;
    await eventually(() => hasFreeSlot(keys, key));
  });
});

describe('maxConcurrent on a store that cannot hold slots', () => {
  it('create and update refuse maxConcurrent with invalid_argument', async () => {
    const keys = track(keygate({ store: wrapped(new MemoryStore()), prefix: 'pk_test', hashing: 'sha256' }));
    await expect(keys.create({ name: 'k', maxConcurrent: 2 })).rejects.toMatchObject({ code: 'invalid_argument', field: 'maxConcurrent' });
    const { apiKey } = await keys.create({ name: 'k', maxConcurrent: null });
    await expect(keys.update(apiKey.id, { maxConcurrent: 1 })).rejects.toMatchObject({ code: 'invalid_argument', field: 'maxConcurrent' });
    await expect(keys.update(apiKey.id, { maxConcurrent: null })).resolves.toMatchObject({ maxConcurrent: null });
  });

  it('a key given maxConcurrent behind its back fails closed: 503, and a warning naming the record', async () => {
    const inner = new MemoryStore();
    const writer = track(keygate({ store: inner, prefix: 'pk_test', hashing: 'sha256' }));
    const { key, apiKey } = await writer.create({ name: 'k', maxConcurrent: 1 });
    const keys = track(keygate({ store: wrapped(inner), prefix: 'pk_test', hashing: 'sha256' }));
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const result = await keys.verify(key);
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.error.code).toBe('store_unavailable');
      const ours = warn.mock.calls.filter(([, options]) => (options as { code?: string } | undefined)?.code === 'KEYGATE_CONCURRENCY_UNSUPPORTED');
      expect(ours).toHaveLength(1);
      expect(String(ours[0]![0])).toContain(apiKey.id);
    } finally {
      warn.mockRestore();
    }
  });

  it('a release that fails is a warning, never an error of the request', async () => {
    const inner = new MemoryStore();
    const failing = wrapped(inner, { release: () => Promise.reject(new Error('ECONNRESET (test fault)')) });
    const keys = track(keygate({ store: failing, prefix: 'pk_test', hashing: 'sha256' }));
    const { key } = await keys.create({ name: 'k', maxConcurrent: 1 });
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const result = await keys.verify(key);
      expect(result.ok).toBe(true);
      if (result.ok) await expect(result.release?.()).resolves.toBeUndefined();
      // Still held (the release failed): the lease would end it.
      expect((await keys.verify(key)).ok).toBe(false);
      const codes = warn.mock.calls.map(([, options]) => (options as { code?: string } | undefined)?.code);
      expect(codes.filter((code) => code === 'KEYGATE_RELEASE_FAILED')).toHaveLength(1);
    } finally {
      warn.mockRestore();
    }
  });
});

describe('maxConcurrent and concurrencyLeaseMs validation', () => {
  it.each([0, -1, 1.5, '2', true, Number.NaN])('refuses maxConcurrent %p with invalid_argument', async (value) => {
    const { keys } = testKeys();
    track(keys);
    await expect(keys.create({ name: 'k', maxConcurrent: value as number })).rejects.toMatchObject({ code: 'invalid_argument', field: 'maxConcurrent' });
    const { apiKey } = await keys.create({ name: 'k' });
    await expect(keys.update(apiKey.id, { maxConcurrent: value as number })).rejects.toMatchObject({ code: 'invalid_argument', field: 'maxConcurrent' });
  });

  it('shows maxConcurrent in the view, sets it, and clears it with null', async () => {
    const { keys } = testKeys();
    track(keys);
    const { apiKey } = await keys.create({ name: 'k', maxConcurrent: 4 });
    expect(apiKey.maxConcurrent).toBe(4);
    expect((await keys.create({ name: 'default' })).apiKey.maxConcurrent).toBeNull();
    expect((await keys.update(apiKey.id, { maxConcurrent: 1_000 })).maxConcurrent).toBe(1_000);
    expect((await keys.update(apiKey.id, { maxConcurrent: null })).maxConcurrent).toBeNull();
  });

  it.each([0, -5, 1.5, '60000', 86_400_001, Number.POSITIVE_INFINITY])('refuses concurrencyLeaseMs %p with a TypeError', (value) => {
    expect(() => keygate({ store: new MemoryStore(), concurrencyLeaseMs: value as number })).toThrow(TypeError);
  });
});
