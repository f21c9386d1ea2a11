/**
 * The principal the app reads after an admission: `req.apiKey` and `res.locals.apiKey` are one
 * deep copy of the key, built on first read; assigning `req.apiKey` replaces the principal; and a
 * cached key on an in-process store is decided before `authenticate()` returns.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { NextFunction, Request, Response } from 'express';
import request from 'supertest';
import { keygate, MemoryStore, requireScopes } from '../../src/index';
import { EXPRESS_VERSIONS } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();

describe.each(EXPRESS_VERSIONS)('the principal on %s', (_name, makeApp) => {
  it('req.apiKey and res.locals.apiKey are one copy, with own enumerable fields (spread, JSON, Object.keys)', async () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    const { key, apiKey } = await keys.create({ name: 'view', scopes: ['a:read'], metadata: { plan: 'pro' } });
    const app = makeApp();
    app.get('/', keys.authenticate(), (req, res) => {
      const view = req.apiKey;
      res.json({
        same: view === res.locals.apiKey && view === req.apiKey,
        keys: Object.keys(view ?? {}).sort(),
        spread: { ...view }.id,
        json: JSON.parse(JSON.stringify(res.locals)) as unknown,
        useCount: view?.useCount,
        hash: view !== undefined && 'keyHash' in view,
      });
    });
    const body = (await request(app).get('/').set('x-api-key', key)).body as Record<string, unknown>;
    expect(body.same).toBe(true);
    expect(body.keys).toEqual(expect.arrayContaining(['id', 'name', 'scopes', 'metadata', 'useCount', 'isActive', 'isTestKey']));
    expect(body.spread).toBe(apiKey.id);
    expect(body.json).toMatchObject({ apiKey: { id: apiKey.id, metadata: { plan: 'pro' }, useCount: 1 } });
    expect(body.useCount).toBe(1);
    expect(body.hash).toBe(false);
  });

  it('changing the copy changes no decision: scopes pushed onto it grant nothing to a later guard', async () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    const { key } = await keys.create({ name: 'view', scopes: ['a:read'] });
    const app = makeApp();
    app.get(
      '/',
      keys.authenticate(),
      (req: Request, _res: Response, next: NextFunction) => {
        req.apiKey?.scopes.push('admin:*');
        if (req.apiKey) req.apiKey.status = 'active';
        next();
      },
      requireScopes('admin:write'),
      (_req, res) => res.json({ reached: true }),
    );
    expect((await request(app).get('/').set('x-api-key', key)).status).toBe(403);
  });

  it('a principal the app assigns replaces the admission for later guards, and reads back as assigned', async () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    const { key } = await keys.create({ name: 'view', scopes: ['a:read'] });
    const app = makeApp();
    app.get(
      '/',
      keys.authenticate(),
      (req: Request, _res: Response, next: NextFunction) => {
        req.apiKey = { ...req.apiKey!, scopes: ['b:write'] };
        next();
      },
      requireScopes('b:write'),
      (req, res) => res.json({ scopes: req.apiKey?.scopes }),
    );
    const response = await request(app).get('/').set('x-api-key', key);
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ scopes: ['b:write'] });
  });

  it('a second keygate instance admitting the same request shows its own view', async () => {
    const first = track(keygate({ store: new MemoryStore(), hashing: 'sha256', prefix: 'one' }));
    const second = track(keygate({ store: new MemoryStore(), hashing: 'sha256', prefix: 'two' }));
    const a = await first.create({ name: 'first' });
    const b = await second.create({ name: 'second' });
    const app = makeApp();
    app.get('/', first.authenticate(), (req: Request, _res: Response, next: NextFunction) => {
      req.headers['x-api-key'] = b.key;
      const at = req.rawHeaders.findIndex((header) => header.toLowerCase() === 'x-api-key');
      req.rawHeaders[at + 1] = b.key;
      next();
    }, second.authenticate(), (req, res) => res.json({ name: req.apiKey?.name, locals: (res.locals.apiKey as { name?: string }).name }));
    const response = await request(app).get('/').set('x-api-key', a.key);
    expect(response.body).toEqual({ name: 'second', locals: 'second' });
  });

  it('a cached key on a MemoryStore is decided before authenticate() returns; a new one waits for its lookup', async () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    const { key } = await keys.create({ name: 'sync' });
    const authenticate = keys.authenticate();
    const decidedAtOnce: boolean[] = [];
    const app = makeApp();
    app.use((req: Request, res: Response, next: NextFunction) => {
      let called = false;
      authenticate(req, res, (error?: unknown) => {
        called = true;
        next(error);
      });
      decidedAtOnce.push(called);
    });
    app.get('/', (_req, res) => res.json({ ok: true }));
    for (let i = 0; i < 3; i++) expect((await request(app).get('/').set('x-api-key', key)).status).toBe(200);
    expect(decidedAtOnce).toEqual([false, true, true]);
  });
});

describe('the principal outside Express', () => {
  it('a request that is not an Express request still gets req.apiKey, as a plain property', async () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    const { key, apiKey } = await keys.create({ name: 'plain' });
    const authenticate = keys.authenticate();
    const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
      const expressLike = Object.assign(res, { locals: {} as Record<string, unknown> });
      authenticate(req as unknown as Request, expressLike as unknown as Response, () => {
        const view = (req as unknown as Request).apiKey;
        res.end(JSON.stringify({ id: view?.id, locals: (expressLike.locals.apiKey as { id?: string } | undefined)?.id }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const response = await fetch(`http://127.0.0.1:${port}/`, { headers: { 'x-api-key': key } });
      expect(await response.json()).toEqual({ id: apiKey.id, locals: apiKey.id });
    } finally {
      server.close();
    }
  });
});
