/**
 * `problemHandler()`: a manager error in the app's own route, or a refusal passed on with
 * `passErrors`, is answered as RFC 9457 problem+json, never as Express's default HTML page; any
 * other error goes on to the next handler untouched.
 */
import express5, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import express4 from 'express4';
import request from 'supertest';
import { problemHandler } from '../../src/index';
import { EXPRESS_VERSIONS, testKeys } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();

/** Each major's own JSON body parser, with a small limit. */
const JSON_PARSERS: Record<string, () => RequestHandler> = {
  'express 5': () => express5.json({ limit: 1_024 }),
  'express 4': () => express4.json({ limit: 1_024 }) as unknown as RequestHandler,
};

describe.each(EXPRESS_VERSIONS)('problemHandler() (%s)', (name, makeExpress) => {
  function appWith(keys: ReturnType<typeof testKeys>['keys']) {
    const app = makeExpress();
    // An app's own management routes, the way users write them.
    app.post('/keys/:name', async (req: Request, res: Response, next: NextFunction) => {
      try {
        res.status(201).json(await keys.create({ name: req.params.name as string, maxUses: Number(req.query.maxUses ?? 1) }));
      } catch (error) {
        next(error);
      }
    });
    app.get('/keys/:id', async (req: Request, res: Response, next: NextFunction) => {
      try {
        const found = await keys.get(req.params.id as string);
        if (!found) throw new Error('not a keygate error');
        res.json(found);
      } catch (error) {
        next(error);
      }
    });
    app.delete('/keys/:id', async (req: Request, res: Response, next: NextFunction) => {
      try {
        await keys.delete(req.params.id as string);
        res.status(204).end();
      } catch (error) {
        next(error);
      }
    });
    app.get('/guarded', keys.authenticate({ passErrors: true, scopes: ['admin'] }), (_req: Request, res: Response) => {
      res.json({ ok: true });
    });
    app.use(problemHandler());
    // What reaches the app's own handler after it: anything that is not a KeygateError.
    app.use((error: Error, _req: Request, res: Response, _next: NextFunction) => {
      res.status(500).type('text/plain').send(`app handler: ${error.message}`);
    });
    return app;
  }

  it('answers a manager error as problem+json with its status, code and field', async () => {
    const { keys } = testKeys();
    track(keys);
    const res = await request(appWith(keys)).post('/keys/k?maxUses=-1');
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toBe('application/problem+json; charset=utf-8');
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body).toEqual({
      type: 'urn:keygate:problem:invalid_argument',
      title: 'Invalid argument',
      status: 400,
      detail: expect.stringContaining('maxUses'),
      code: 'invalid_argument',
      field: 'maxUses',
    });
    const missing = await request(appWith(keys)).delete('/keys/no-such-key');
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ code: 'not_found', type: 'urn:keygate:problem:not_found' });
  });

  it('answers refusals passed on with passErrors with their challenge', async () => {
    const { keys } = testKeys();
    track(keys);
    const { key } = await keys.create({ name: 'k', scopes: ['read'] });
    const app = appWith(keys);
    const none = await request(app).get('/guarded');
    expect(none.status).toBe(401);
    expect(none.headers['www-authenticate']).toBe('Bearer realm="api"');
    expect(none.body.code).toBe('missing_api_key');
    const scoped = await request(app).get('/guarded').set('X-API-Key', key);
    expect(scoped.status).toBe(403);
    expect(scoped.headers['www-authenticate']).toBe('Bearer realm="api", error="insufficient_scope", scope="admin"');
    expect(scoped.body.code).toBe('insufficient_scope');
  });

  it('passes any other error on, untouched', async () => {
    const { keys } = testKeys();
    track(keys);
    const res = await request(appWith(keys)).get('/keys/unknown');
    expect(res.status).toBe(500);
    expect(res.text).toBe('app handler: not a keygate error');
  });

  it('sends Retry-After for an error that has one', async () => {
    const { keys } = testKeys();
    track(keys);
    const { key } = await keys.create({ name: 'k', rateLimit: { perSecond: 1 } });
    const app = makeExpress();
    app.get('/limited', keys.authenticate({ passErrors: true }), (_req: Request, res: Response) => {
      res.json({ ok: true });
    });
    app.use(problemHandler({ realm: 'leads' }));
    expect((await request(app).get('/limited').set('X-API-Key', key)).status).toBe(200);
    const refused = await request(app).get('/limited').set('X-API-Key', key);
    expect(refused.status).toBe(429);
    expect(refused.headers['retry-after']).toBe('1');
    expect(refused.body.code).toBe('rate_limited');
    expect((await request(app).get('/limited')).headers['www-authenticate']).toBe('Bearer realm="leads"');
  });
});

describe.each(EXPRESS_VERSIONS)("problemHandler() behind the app's express.json() (%s)", (name, makeExpress) => {
  // Found by review: an admin API behind express.json() answered a malformed or oversized body
  // with Express's HTML page (and, outside production, a stack trace).
  function appWithParser() {
    const { keys } = testKeys();
    track(keys);
    const app = makeExpress();
    app.use(JSON_PARSERS[name]!());
    app.use('/v1/api-keys', keys.adminRouter());
    app.use(problemHandler());
    return app;
  }

  it.each([
    ['malformed JSON', 'application/json', '{"name":', 400, 'invalid_argument'],
    ['JSON that is not an object, in strict mode', 'application/json', 'null', 400, 'invalid_argument'],
    ['a charset the parser does not take', 'application/json; charset=koi8-r', '{"name":"x"}', 400, 'invalid_argument'],
    ['a body over the parser limit', 'application/json', JSON.stringify({ name: 'x'.repeat(2_000) }), 413, 'payload_too_large'],
  ])('answers %s as problem+json', async (_what, type, body, status, code) => {
    const res = await request(appWithParser()).post('/v1/api-keys').set('Content-Type', type).send(body);
    expect(res.status).toBe(status);
    expect(res.headers['content-type']).toBe('application/problem+json; charset=utf-8');
    expect(res.body.code).toBe(code);
    if (code === 'invalid_argument') expect(res.body.field).toBe('body');
    expect(res.text).not.toMatch(/at \w+ \(|<html|<pre/i);
  });
});

describe('problemHandler() options', () => {
  it.each([[null], ['api'], [{ realm: '' }], [{ realm: 7 }], [{ relam: 'api' }]])('refuses %p with a TypeError', (options) => {
    expect(() => problemHandler(options as never)).toThrow(TypeError);
  });
});
