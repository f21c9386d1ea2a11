/**
 * Usage analytics through real HTTP (Express 5 and 4): what `keys.usage()` reports after requests
 * went through `authenticate()` and routers, exactly, and what the recorder promises about its
 * buffer, its flushes, its failures and its timer.
 */
import { spawn } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { Express, NextFunction, Request, Response } from 'express';
import { type ApiKeyStore, type Keygate, type KeygateOptions, type UsageBatch, KeygateError, MemoryStore, keygate, requireScopes } from '../../src/index';
import type { UsagePoint, UsageReport } from '../../src/usage/report';
import { T0, testClock, type TestClock } from '../helpers/harness';
import { rejection } from '../helpers/rejection';
import { EXPRESS_WITH_ROUTER, type Served, eventually, recordedRequests, send, sendAndHangUp, serve, sleep, untilRecorded } from './http';

const DAY = 86_400_000;
/** Ids that appear in URLs and must never appear in what usage stores or reports. */
const SECRET_ID = 'lead-7f3a9c';

/** A point of a report, as a test writes it: the counts, with defaults for what it leaves out. */
function counts(expected: { requests: number; admitted?: number; refused?: Record<string, number>; s2?: number; s3?: number; s4?: number; s5?: number }): Partial<UsagePoint> {
  const { requests, admitted = requests, refused = {}, s2 = 0, s3 = 0, s4 = 0, s5 = 0 } = expected;
  return { requests, admitted, refused, status: { '2xx': s2, '3xx': s3, '4xx': s4, '5xx': s5 } };
}

/** The arithmetic every point must satisfy, whatever its counts. */
function expectConsistent(point: UsagePoint): void {
  const { requests, admitted, refused, status } = point;
  expect(admitted + Object.values(refused).reduce((a, b) => a + b, 0)).toBe(requests);
  expect(status['2xx'] + status['3xx'] + status['4xx'] + status['5xx']).toBeLessThanOrEqual(requests);
  if (requests === 0) {
    expect(point).toMatchObject({ successRate: null, errorRate: null, averageResponseTimeMs: null, maxResponseTimeMs: 0, totalResponseTimeMs: 0 });
    return;
  }
  expect(point.successRate).toBeCloseTo((status['2xx'] + status['3xx']) / requests, 12);
  expect(point.errorRate).toBeCloseTo((status['4xx'] + status['5xx']) / requests, 12);
  expect(point.totalResponseTimeMs).toBeGreaterThan(0);
  expect(point.maxResponseTimeMs).toBeGreaterThan(0);
  const average = point.averageResponseTimeMs as number;
  expect(average).toBeGreaterThan(0);
  // Microsecond resolution: the average is the total over the requests, rounded to the microsecond.
  expect(Math.abs(average - point.totalResponseTimeMs / requests)).toBeLessThanOrEqual(0.0011);
  expect(point.maxResponseTimeMs).toBeGreaterThanOrEqual(average - 0.001);
  expect(point.maxResponseTimeMs).toBeLessThanOrEqual(point.totalResponseTimeMs + 0.001);
}

/** Every point of a report is consistent, and the items add up to the total. */
function expectReport(report: UsageReport): void {
  for (const point of [...report.items, report.total]) expectConsistent(point);
  const sum = (pick: (p: UsagePoint) => number): number => report.items.reduce((total, p) => total + pick(p), 0);
  expect(sum((p) => p.requests)).toBe(report.total.requests);
  expect(sum((p) => p.admitted)).toBe(report.total.admitted);
  expect(sum((p) => p.status['2xx'])).toBe(report.total.status['2xx']);
  expect(sum((p) => p.status['5xx'])).toBe(report.total.status['5xx']);
  expect(Math.abs(sum((p) => p.totalResponseTimeMs) - report.total.totalResponseTimeMs)).toBeLessThan(0.001 * (report.items.length + 1));
  expect(Math.max(0, ...report.items.map((p) => p.maxResponseTimeMs))).toBe(report.total.maxResponseTimeMs);
}

/** The report's route items as a map, checking they come busiest first. */
function byRoute(report: UsageReport): Map<string | null, UsagePoint> {
  const requests = report.items.map((item) => item.requests);
  expect(requests).toEqual([...requests].sort((a, b) => b - a));
  return new Map(report.items.map((item) => [item.route as string | null, item]));
}

/** Cleanups of the running test, run after it whatever happened. */
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
beforeAll(() => process.on('unhandledRejection', onUnhandled));
afterAll(() => {
  process.off('unhandledRejection', onUnhandled);
  expect(unhandled).toEqual([]);
});

/** A keygate with usage on a store, closed after the test. */
function usageKeys(store: ApiKeyStore, clock: TestClock, options: Partial<KeygateOptions> = {}): Keygate {
  const keys = keygate({ store, prefix: 'pk_test', hashing: 'sha256', now: clock.now, usage: { flushIntervalMs: 3_600_000 }, ...options });
  cleanups.push(() => keys.close());
  return keys;
}

async function listen(app: Express): Promise<Served> {
  const served = await serve(app);
  cleanups.push(() => served.close());
  return served;
}

/** A MemoryStore whose lookups by keyPrefix can take a while (a cold cache on a slow store). */
class SlowLookupStore extends MemoryStore {
  lookupDelayMs = 0;

  override async findByKeyPrefix(keyPrefix: string): ReturnType<MemoryStore['findByKeyPrefix']> {
    if (this.lookupDelayMs > 0) await sleep(this.lookupDelayMs);
    return super.findByKeyPrefix(keyPrefix);
  }
}

describe.each(EXPRESS_WITH_ROUTER)('usage analytics over HTTP on %s', (_label, makeExpress, makeRouter) => {
  /**
   * The application of these tests: `/v2/leads/:id/notes` authenticates per route with a scope,
   * everything else goes through one `app.use(authenticate())` in front of nested routers.
   */
  function application(keys: Keygate, hang: { entered: () => void }): Express {
    const app = makeExpress();
    const notes = makeRouter();
    notes.post('/:id/notes', keys.authenticate({ scopes: ['leads:write'] }), (_req, res) => {
      res.status(201).json({ ok: true });
    });
    app.use('/v2/leads', notes);
    app.use(keys.authenticate());
    const leads = makeRouter();
    leads.get('/:id', (req, res) => {
      res.json({ id: req.params.id });
    });
    leads.get('/:id/go', (_req, res) => {
      res.redirect(302, '/elsewhere');
    });
    leads.get('/:id/missing', (_req, res) => {
      res.status(404).json({ missing: true });
    });
    leads.get('/:id/boom', () => {
      throw new Error('boom (test)');
    });
    leads.get('/:id/slow', (_req, res) => {
      setTimeout(() => res.json({ slow: true }), 25);
    });
    leads.get('/:id/hang', () => {
      // Never answers: the client hangs up first.
      hang.entered();
    });
    const v1 = makeRouter();
    v1.use('/leads', leads);
    app.use('/v1', v1);
    app.use((error: Error, _req: Request, res: Response, next: NextFunction) => {
      if (res.headersSent) return next(error);
      res.status(500).json({ error: 'internal' });
    });
    return app;
  }

  it('reports exact counts by route and by day: outcomes, refusal codes, status classes, route patterns never URLs, times', async () => {
    const store = new MemoryStore();
    const clock = testClock();
    const keys = usageKeys(store, clock);
    const a = await keys.create({ name: 'reader', scopes: ['leads:read'] });
    const b = await keys.create({ name: 'elsewhere', allowedIps: ['10.0.0.0/8'] });
    const c = await keys.create({ name: 'limited', rateLimit: { perSecond: 1, burst: 2 } });
    let entered!: () => void;
    const hangEntered = new Promise<void>((resolve) => (entered = resolve));
    const { url } = await listen(application(keys, { entered }));

    const statuses: number[] = [];
    const get = async (path: string, key: string, method = 'GET'): Promise<void> => void statuses.push(await send(`${url}${path}`, { key, method }));
    for (let i = 0; i < 3; i++) await get(`/v1/leads/${SECRET_ID}-${i}`, a.key);
    for (let i = 0; i < 2; i++) await get(`/v1/leads/${SECRET_ID}-go${i}/go`, a.key);
    await get(`/v1/leads/${SECRET_ID}/missing`, a.key);
    await get(`/v1/leads/${SECRET_ID}/boom`, a.key);
    await Promise.all([get(`/v1/leads/${SECRET_ID}-s1/slow`, a.key), get(`/v1/leads/${SECRET_ID}-s2/slow`, a.key)]);
    await get(`/v1/nowhere/${SECRET_ID}`, a.key);
    for (let i = 0; i < 2; i++) await get(`/v2/leads/${SECRET_ID}-${i}/notes`, a.key, 'POST');
    await sendAndHangUp(`${url}/v1/leads/${SECRET_ID}/hang`, a.key, hangEntered);
    // Key b is refused for its address: before routing (app.use), and inside the scoped route.
    for (let i = 0; i < 3; i++) await get(`/v1/leads/${SECRET_ID}`, b.key);
    await get(`/v2/leads/${SECRET_ID}/notes`, b.key, 'POST');
    // Key c: a bucket of 2 on a clock that does not move.
    for (let i = 0; i < 4; i++) await get(`/v1/leads/${SECRET_ID}`, c.key);
    // No key, a wrong secret for a real keyPrefix, a malformed key: nobody's usage.
    await get(`/v1/leads/${SECRET_ID}`, '');
    statuses.push(await send(`${url}/v1/leads/${SECRET_ID}`));
    await get(`/v1/leads/${SECRET_ID}`, `${a.key.slice(0, -6)}AAAAAA`);
    await get(`/v1/leads/${SECRET_ID}`, 'pk_test_nonsense');
    await get(`/v2/leads/${SECRET_ID}/notes`, `${a.key.slice(0, -6)}AAAAAA`, 'POST');

    expect(statuses).toEqual([200, 200, 200, 302, 302, 404, 500, 200, 200, 404, 403, 403, 403, 403, 403, 403, 200, 200, 429, 429, 401, 401, 401, 401, 401]);
    const recorded = 13 + 4 + 4;
    await untilRecorded(keys, recorded);
    await sleep(50);
    expect(recordedRequests(keys)).toBe(recorded);
    const before = keys.usageStats();
    expect(before).toEqual({ bufferedCells: expect.any(Number), bufferedRequests: recorded, flushedRequests: 0, dropped: 0, failedFlushes: 0 });
    // Nothing reaches the store before a flush.
    expect((await keys.usage(a.apiKey.id)).total.requests).toBe(0);
    await keys.flushUsage();
    expect(keys.usageStats()).toEqual({ bufferedCells: 0, bufferedRequests: 0, flushedRequests: recorded, dropped: 0, failedFlushes: 0 });

    const routesA = await keys.usage(a.apiKey.id, { from: '2026-01-15', to: '2026-01-15', groupBy: 'route' });
    expectReport(routesA);
    expect(routesA).toMatchObject({ keyId: a.apiKey.id, from: '2026-01-15', to: '2026-01-15', groupBy: 'route' });
    const routes = byRoute(routesA);
    expect([...routes.keys()].sort()).toEqual(
      ['/v1/leads/:id', '/v1/leads/:id/boom', '/v1/leads/:id/go', '/v1/leads/:id/hang', '/v1/leads/:id/missing', '/v1/leads/:id/slow', '/v2/leads/:id/notes', null].sort(),
    );
    expect(routes.get('/v1/leads/:id')).toMatchObject(counts({ requests: 3, s2: 3 }));
    expect(routes.get('/v1/leads/:id/go')).toMatchObject(counts({ requests: 2, s3: 2 }));
    expect(routes.get('/v1/leads/:id/missing')).toMatchObject(counts({ requests: 1, s4: 1 }));
    expect(routes.get('/v1/leads/:id/boom')).toMatchObject(counts({ requests: 1, s5: 1 }));
    expect(routes.get('/v1/leads/:id/slow')).toMatchObject(counts({ requests: 2, s2: 2 }));
    // The client hung up before any response: counted, in no status class, no success, no error.
    expect(routes.get('/v1/leads/:id/hang')).toMatchObject({ ...counts({ requests: 1 }), successRate: 0, errorRate: 0 });
    // Admitted, but no route matched: the app's 404.
    expect(routes.get(null)).toMatchObject(counts({ requests: 1, s4: 1 }));
    expect(routes.get('/v2/leads/:id/notes')).toMatchObject(counts({ requests: 2, admitted: 0, refused: { insufficient_scope: 2 }, s4: 2 }));
    expect(routes.get('/v1/leads/:id/slow')!.maxResponseTimeMs).toBeGreaterThanOrEqual(20);
    expect(routes.get('/v1/leads/:id/slow')!.averageResponseTimeMs).toBeGreaterThanOrEqual(20);
    expect(routesA.total).toMatchObject({ ...counts({ requests: 13, admitted: 11, refused: { insufficient_scope: 2 }, s2: 5, s3: 2, s4: 4, s5: 1 }) });
    expect(routesA.total.successRate).toBeCloseTo(7 / 13, 12);
    expect(routesA.total.errorRate).toBeCloseTo(5 / 13, 12);
    expect(routesA.total.maxResponseTimeMs).toBe(Math.max(...routesA.items.map((p) => p.maxResponseTimeMs)));

    const daysA = await keys.usage(a.apiKey.id, { from: '2026-01-14', to: new Date(T0 + DAY), groupBy: 'day' });
    expectReport(daysA);
    expect(daysA.items.map((p) => [p.day, p.requests])).toEqual([['2026-01-14', 0], ['2026-01-15', 13], ['2026-01-16', 0]]);
    expect(daysA.items[1]).toEqual({ day: '2026-01-15', ...routesA.total });
    expect(daysA.total).toEqual(routesA.total);
    // The default: the 30 days up to today (the clock's).
    const defaultRange = await keys.usage(a.apiKey.id);
    expect(defaultRange).toMatchObject({ from: '2025-12-17', to: '2026-01-15', groupBy: 'day' });
    expect(defaultRange.items).toHaveLength(30);
    expect(defaultRange.total).toEqual(routesA.total);

    const routesB = byRoute(await keys.usage(b.apiKey.id, { groupBy: 'route' }));
    expect(routesB.get(null)).toMatchObject(counts({ requests: 3, admitted: 0, refused: { ip_not_allowed: 3 }, s4: 3 }));
    expect(routesB.get('/v2/leads/:id/notes')).toMatchObject(counts({ requests: 1, admitted: 0, refused: { ip_not_allowed: 1 }, s4: 1 }));
    expect(routesB.size).toBe(2);

    const reportC = await keys.usage(c.apiKey.id, { groupBy: 'route' });
    expectReport(reportC);
    const routesC = byRoute(reportC);
    expect(routesC.get('/v1/leads/:id')).toMatchObject(counts({ requests: 2, s2: 2 }));
    expect(routesC.get(null)).toMatchObject(counts({ requests: 2, admitted: 0, refused: { rate_limited: 2 }, s4: 2 }));
    expect(reportC.total).toMatchObject({ ...counts({ requests: 4, admitted: 2, refused: { rate_limited: 2 }, s2: 2, s4: 2 }), successRate: 0.5, errorRate: 0.5 });

    // Every stored cell belongs to one of the three keys, and they hold every request recorded:
    // the keyless and wrong-key requests are nobody's.
    const reports = await Promise.all([a, b, c].map((k) => keys.usage(k.apiKey.id, { groupBy: 'route' })));
    expect(reports.reduce((sum, r) => sum + r.total.requests, 0)).toBe(recorded);
    const stored = await Promise.all([a, b, c].map((k) => store.readUsage({ keyId: k.apiKey.id, fromDay: 0, toDay: 100_000 })));
    expect(stored.flat().reduce((sum, cell) => sum + cell.requests, 0)).toBe(recorded);
    // Route patterns only: no id from a URL, no key, anywhere.
    const everything = JSON.stringify([stored, reports, daysA]);
    expect(everything).not.toContain(SECRET_ID);
    expect(everything).not.toContain(a.key);
    expect(everything).not.toContain(a.key.split('_').pop());
  });

  it('records the patterns of routers mounted on paths with parameters, never the values in the URL', async () => {
    const keys = usageKeys(new MemoryStore(), testClock());
    const { key, apiKey } = await keys.create({ name: 'tenants' });
    const app = makeExpress();
    app.use(keys.authenticate());
    const leads = makeRouter({ mergeParams: true });
    leads.get('/:id', (_req, res) => void res.json({}));
    leads.get('/:id/fail', () => {
      throw new Error('fails (test)');
    });
    const projects = makeRouter({ mergeParams: true });
    projects.use('/projects/:project/leads', leads);
    app.use('/v1/tenants/:tenant', projects);
    // Without mergeParams: the mount's parameters are still known as the router matches the route.
    const orgs = makeRouter();
    orgs.get('/members/:member', (_req, res) => void res.json({}));
    app.use('/v2/orgs/:org', orgs);
    const plain = makeRouter();
    plain.get('/things/:id', (_req, res) => void res.status(204).end());
    app.use('/v1/static', plain);
    app.use((_error: Error, _req: Request, res: Response, _next: NextFunction) => void res.status(500).json({}));
    const { url } = await listen(app);
    expect(await send(`${url}/v1/tenants/acme-corp/projects/p-9/leads/${SECRET_ID}-1`, { key })).toBe(200);
    expect(await send(`${url}/v1/tenants/globex/projects/p-7/leads/${SECRET_ID}-2`, { key })).toBe(200);
    expect(await send(`${url}/v1/tenants/${encodeURIComponent('初 tenant')}/projects/p-7/leads/${SECRET_ID}-3`, { key })).toBe(200);
    expect(await send(`${url}/v1/tenants/acme-corp/projects/p-9/leads/${SECRET_ID}-4/fail`, { key })).toBe(500);
    expect(await send(`${url}/v1/static/things/${SECRET_ID}`, { key })).toBe(204);
    expect(await send(`${url}/v2/orgs/initech/members/${SECRET_ID}`, { key })).toBe(200);
    await untilRecorded(keys, 6);
    await keys.flushUsage();
    const report = await keys.usage(apiKey.id, { groupBy: 'route' });
    const routes = byRoute(report);
    expect([...routes.keys()].sort()).toEqual(['/v1/static/things/:id', '/v1/tenants/:tenant/projects/:project/leads/:id', '/v1/tenants/:tenant/projects/:project/leads/:id/fail', '/v2/orgs/:org/members/:member']);
    expect(routes.get('/v1/tenants/:tenant/projects/:project/leads/:id')).toMatchObject(counts({ requests: 3, s2: 3 }));
    expect(routes.get('/v1/tenants/:tenant/projects/:project/leads/:id/fail')).toMatchObject(counts({ requests: 1, s5: 1 }));
    expect(routes.get('/v1/static/things/:id')).toMatchObject(counts({ requests: 1, s2: 1 }));
    expect(JSON.stringify(report)).not.toMatch(/acme|globex|initech|p-9|p-7|tenant%|初|lead-/);
  });

  it('records a pipelined request whose connection died while it waited, and one whose client left before keygate decided: no status', async () => {
    const store = new SlowLookupStore();
    const keys = usageKeys(store, testClock());
    const { key, apiKey } = await keys.create({ name: 'impatient' });
    const entered: string[] = [];
    const app = makeExpress();
    app.use(keys.authenticate());
    app.get('/hang/:id', () => void entered.push('hang'));
    app.get('/quick/:id', (_req, res) => {
      entered.push('quick');
      res.json({});
    });
    const { url, port } = await listen(app);
    // Warm the cache, so the pipelined requests are decided at once.
    expect(await send(`${url}/quick/warm`, { key })).toBe(200);
    entered.length = 0;
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.write(`GET /hang/${SECRET_ID} HTTP/1.1\r\nHost: x\r\nx-api-key: ${key}\r\n\r\nGET /quick/${SECRET_ID} HTTP/1.1\r\nHost: x\r\nx-api-key: ${key}\r\n\r\n`);
    await eventually(() => entered.length === 2, 3_000, 'both handlers to run');
    socket.destroy();
    await untilRecorded(keys, 3);

    // A cold lookup that takes a while, and a client that leaves meanwhile.
    const other = await keys.create({ name: 'gone' });
    store.lookupDelayMs = 150;
    const gone = httpRequest(`${url}/quick/${SECRET_ID}`, { headers: { 'x-api-key': other.key } });
    gone.on('error', () => undefined);
    gone.end();
    await sleep(30);
    gone.destroy();
    await untilRecorded(keys, 4);
    await keys.flushUsage();

    const routes = byRoute(await keys.usage(apiKey.id, { groupBy: 'route' }));
    expect(routes.get('/hang/:id')).toMatchObject(counts({ requests: 1 }));
    // Its handler answered, but the answer never left the process.
    expect(routes.get('/quick/:id')).toMatchObject(counts({ requests: 2, s2: 1 }));
    const left = await keys.usage(other.apiKey.id, { groupBy: 'route' });
    // Decided after the client left: admitted (the use was counted), no status.
    expect(left.total).toMatchObject(counts({ requests: 1 }));
    expect(keys.usageStats()).toMatchObject({ dropped: 0, flushedRequests: 4 });
  });

  it('a request admitted by app.use(authenticate()) and refused by its route\'s authenticate({ scopes }) or a scope guard counts, and is emitted, as refused', async () => {
    const keys = usageKeys(new MemoryStore(), testClock());
    const { key, apiKey } = await keys.create({ name: 'reader', scopes: ['leads:read'] });
    const events: string[] = [];
    keys.on('request.admitted', (event) => void events.push(`admitted ${event.route} ${event.statusCode}`));
    keys.on('request.refused', (event) => void events.push(`refused ${event.code} ${event.route} ${event.statusCode}`));
    const app = makeExpress();
    app.use(keys.authenticate());
    app.post('/leads/:id', keys.authenticate({ scopes: ['leads:write'] }), (_req, res) => void res.json({}));
    app.get('/leads/:id', keys.authenticate({ scopes: ['leads:read'] }), (_req, res) => void res.json({}));
    app.delete('/leads/:id', requireScopes('leads:delete'), (_req, res) => void res.json({}));
    const { url } = await listen(app);
    expect(await send(`${url}/leads/${SECRET_ID}`, { key, method: 'POST' })).toBe(403);
    expect(await send(`${url}/leads/${SECRET_ID}`, { key })).toBe(200);
    expect(await send(`${url}/leads/${SECRET_ID}`, { key, method: 'DELETE' })).toBe(403);
    await untilRecorded(keys, 3);
    await keys.flushUsage();
    const routes = byRoute(await keys.usage(apiKey.id, { groupBy: 'route' }));
    expect(routes.get('/leads/:id')).toMatchObject(counts({ requests: 3, admitted: 1, refused: { insufficient_scope: 2 }, s2: 1, s4: 2 }));
    expect(events.sort()).toEqual(['admitted /leads/:id 200', 'refused insufficient_scope /leads/:id 403', 'refused insufficient_scope /leads/:id 403']);
  });

  it('gives every UTC day of the range, and puts requests either side of midnight on their own day (the injected clock)', async () => {
    const store = new MemoryStore();
    const clock = testClock(Date.UTC(2026, 0, 15, 23, 59, 59, 900));
    const keys = usageKeys(store, clock);
    const { key, apiKey } = await keys.create({ name: 'midnight' });
    const app = makeExpress();
    app.use(keys.authenticate());
    app.get('/ping', (_req, res) => void res.json({}));
    const { url } = await listen(app);
    for (let i = 0; i < 2; i++) expect(await send(`${url}/ping`, { key })).toBe(200);
    await untilRecorded(keys, 2);
    clock.set(Date.UTC(2026, 0, 16, 0, 0, 0, 100));
    for (let i = 0; i < 3; i++) expect(await send(`${url}/ping`, { key })).toBe(200);
    await untilRecorded(keys, 5);
    await keys.flushUsage();
    const report = await keys.usage(apiKey.id, { from: '2026-01-13T12:00:00Z', to: '2026-01-17' });
    expectReport(report);
    expect(report).toMatchObject({ from: '2026-01-13', to: '2026-01-17', groupBy: 'day' });
    expect(report.items.map((p) => [p.day, p.requests, p.status['2xx']])).toEqual([
      ['2026-01-13', 0, 0],
      ['2026-01-14', 0, 0],
      ['2026-01-15', 2, 2],
      ['2026-01-16', 3, 3],
      ['2026-01-17', 0, 0],
    ]);
    expect(report.items[0]).toEqual({ day: '2026-01-13', ...counts({ requests: 0 }), successRate: null, errorRate: null, averageResponseTimeMs: null, maxResponseTimeMs: 0, totalResponseTimeMs: 0 });
    expect(report.total).toMatchObject({ ...counts({ requests: 5, s2: 5 }), successRate: 1, errorRate: 0 });
    // One day alone, and a range that misses both.
    expect((await keys.usage(apiKey.id, { from: '2026-01-16', to: '2026-01-16' })).total.requests).toBe(3);
    expect((await keys.usage(apiKey.id, { from: '2026-01-10', to: '2026-01-14' })).total.requests).toBe(0);
  });
});

describe('keys.usage() and its options', () => {
  it('needs keygate({ usage }): a TypeError without it, and usageStats() is undefined', async () => {
    const keys = keygate({ store: new MemoryStore(), prefix: 'pk_test', hashing: 'sha256' });
    cleanups.push(() => keys.close());
    const { apiKey } = await keys.create({ name: 'x' });
    await expect(keys.usage(apiKey.id)).rejects.toThrow(TypeError);
    expect(keys.usageStats()).toBeUndefined();
    await expect(keys.flushUsage()).resolves.toBeUndefined();
    for (const usage of [false, undefined]) {
      const off = keygate({ store: new MemoryStore(), prefix: 'pk_test', hashing: 'sha256', ...(usage === undefined ? {} : { usage }) });
      await expect(off.usage(apiKey.id)).rejects.toThrow(TypeError);
      await off.close();
    }
  });

  it('validates keygate() usage options', () => {
    const store = new MemoryStore();
    const make = (usage: unknown): Keygate => keygate({ store, prefix: 'pk_test', hashing: 'sha256', usage: usage as KeygateOptions['usage'] });
    for (const bad of [
      'yes',
      1,
      null,
      { flushIntervalMs: 99 },
      { flushIntervalMs: 3_600_001 },
      { flushIntervalMs: 100.5 },
      { flushIntervalMs: '1000' },
      { maxBufferedCells: 0 },
      { maxBufferedCells: -1 },
      { errorRateMinRequests: 0 },
      { errorRateMinRequests: 1.5 },
      { flushInterval: 1000 },
    ]) {
      expect(() => make(bad)).toThrow(TypeError);
    }
    for (const good of [true, false, {}, { flushIntervalMs: 100 }, { flushIntervalMs: 3_600_000, maxBufferedCells: 1, errorRateMinRequests: 1 }]) {
      expect(() => make(good)).not.toThrow();
    }
    // A store that keeps no usage cannot have it.
    const { addUsage: _a, readUsage: _r, ...rest } = Object.fromEntries(
      (['insert', 'findById', 'findByKeyPrefix', 'update', 'rotate', 'list', 'consume', 'purge', 'addUsage', 'readUsage'] as const).map((m) => [m, (store[m] as (...args: unknown[]) => unknown).bind(store)]),
    );
    expect(() => keygate({ store: rest as unknown as ApiKeyStore, prefix: 'pk_test', usage: true })).toThrow(/addUsage and readUsage/);
    expect(() => keygate({ store: { ...rest, addUsage: _a } as unknown as ApiKeyStore, prefix: 'pk_test', usage: true })).toThrow(TypeError);
  });

  it('validates keys.usage() arguments before reading anything', async () => {
    const keys = usageKeys(new MemoryStore(), testClock());
    const { apiKey } = await keys.create({ name: 'x' });
    const invalid = async (call: () => Promise<unknown>, field: string): Promise<void> => {
      const error = await rejection(call);
      expect(error).toBeInstanceOf(KeygateError);
      expect(error).toMatchObject({ code: 'invalid_argument' });
      expect((error as KeygateError).message).toContain(field);
    };
    await invalid(() => keys.usage(apiKey.id, { groupBy: 'week' as 'day' }), 'groupBy');
    await invalid(() => keys.usage(apiKey.id, { from: '2026-01-16', to: '2026-01-15' }), 'from');
    await invalid(() => keys.usage(apiKey.id, { from: '2025-01-14', to: '2026-01-15' }), 'from');
    await invalid(() => keys.usage(apiKey.id, { from: 'yesterday' }), 'from');
    await invalid(() => keys.usage(apiKey.id, { to: '2026-02-30' }), 'to');
    await invalid(() => keys.usage(apiKey.id, { from: null as unknown as string }), 'from');
    await invalid(() => keys.usage(apiKey.id, { until: '2026-01-15' } as never), 'until');
    await invalid(() => keys.usage('', {}), 'id');
    // 366 days, both ends included, is the most.
    const year = await keys.usage(apiKey.id, { from: '2025-01-15', to: '2026-01-15' });
    expect(year.items).toHaveLength(366);
    // An unknown key id has an empty report, not an error.
    expect((await keys.usage('00000000-0000-4000-8000-000000000000', { from: '2026-01-15', to: '2026-01-15' })).total.requests).toBe(0);
  });
});

/** A MemoryStore whose addUsage can be made to fail, before applying or after (the answer lost). */
class FlakyUsageStore extends MemoryStore {
  /** Batch ids of every addUsage call, in order, with what the call did. */
  readonly calls: Array<{ id: string; requests: number; result: 'applied' | 'failed' | 'applied, answer lost' }> = [];
  failures: Array<'before' | 'after'> = [];
  failAlways: 'before' | undefined;

  override async addUsage(batch: UsageBatch): Promise<void> {
    const requests = batch.cells.reduce((sum, cell) => sum + cell.requests, 0);
    const failure = this.failAlways ?? this.failures.shift();
    if (failure === 'before') {
      this.calls.push({ id: batch.id, requests, result: 'failed' });
      throw new Error('ECONNRESET (test fault)');
    }
    await super.addUsage(batch);
    if (failure === 'after') {
      this.calls.push({ id: batch.id, requests, result: 'applied, answer lost' });
      throw new Error('socket closed before the answer (test fault)');
    }
    this.calls.push({ id: batch.id, requests, result: 'applied' });
  }
}

/** A MemoryStore whose addUsage calls can be held up before they apply (an answer that comes after keygate gave up). */
class LateStore extends MemoryStore {
  delays: number[] = [];
  readonly applied: Array<{ id: string }> = [];

  override async addUsage(batch: UsageBatch): Promise<void> {
    const delay = this.delays.shift();
    if (delay) await sleep(delay);
    this.applied.push({ id: batch.id });
    await super.addUsage(batch);
  }
}

describe.each(EXPRESS_WITH_ROUTER)('the recorder on %s: buffer, failures, close, interval', (_label, makeExpress) => {
  /** An app with three routes, all behind authenticate(). */
  async function routesApp(keys: Keygate): Promise<string> {
    const app = makeExpress();
    app.use(keys.authenticate());
    app.get('/a/:id', (_req, res) => void res.json({}));
    app.get('/b/:id', (_req, res) => void res.status(404).json({}));
    app.get('/c/:id', (_req, res) => void res.status(503).json({}));
    return (await listen(app)).url;
  }

  let warnings: jest.SpyInstance;
  beforeEach(() => {
    warnings = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
  });
  afterEach(() => warnings.mockRestore());

  async function hit(url: string, key: string, path: string, times: number): Promise<void> {
    for (let i = 0; i < times; i++) await send(`${url}${path}/${SECRET_ID}${i}`, { key });
  }

  it('a full buffer drops requests that need a new cell and counts them; what it kept is exact', async () => {
    const store = new MemoryStore();
    const keys = usageKeys(store, testClock(), { usage: { flushIntervalMs: 3_600_000, maxBufferedCells: 2 } });
    const { key, apiKey } = await keys.create({ name: 'busy' });
    const url = await routesApp(keys);
    await hit(url, key, '/a', 2);
    await hit(url, key, '/b', 3);
    await untilRecorded(keys, 5);
    // A third cell does not fit: its requests are dropped, while the two cells kept still count.
    await hit(url, key, '/c', 4);
    await hit(url, key, '/a', 1);
    await untilRecorded(keys, 10);
    expect(keys.usageStats()).toEqual({ bufferedCells: 2, bufferedRequests: 6, flushedRequests: 0, dropped: 4, failedFlushes: 0 });
    await keys.flushUsage();
    // A flush frees the buffer.
    await hit(url, key, '/c', 2);
    await untilRecorded(keys, 12);
    await keys.flushUsage();
    expect(keys.usageStats()).toEqual({ bufferedCells: 0, bufferedRequests: 0, flushedRequests: 8, dropped: 4, failedFlushes: 0 });
    const routes = byRoute(await keys.usage(apiKey.id, { groupBy: 'route' }));
    expect(routes.get('/a/:id')).toMatchObject(counts({ requests: 3, s2: 3 }));
    expect(routes.get('/b/:id')).toMatchObject(counts({ requests: 3, s4: 3 }));
    expect(routes.get('/c/:id')).toMatchObject(counts({ requests: 2, s5: 2 }));
  });

  it.each(['before', 'after'] as const)('a batch the store failed (%s applying it) is sent again first, with the same id, and counted once', async (when) => {
    const store = new FlakyUsageStore();
    const keys = usageKeys(store, testClock());
    const { key, apiKey } = await keys.create({ name: 'flaky' });
    const url = await routesApp(keys);
    await hit(url, key, '/a', 3);
    await untilRecorded(keys, 3);
    store.failures = [when];
    await keys.flushUsage();
    expect(keys.usageStats()).toMatchObject({ bufferedRequests: 3, flushedRequests: 0, dropped: 0, failedFlushes: 1 });
    expect(warnings.mock.calls.filter(([, options]) => (options as { code?: string })?.code === 'KEYGATE_USAGE_FLUSH_FAILED').length).toBeLessThanOrEqual(1);
    // Requests arriving meanwhile go in a batch of their own, after the retried one.
    await hit(url, key, '/b', 2);
    await untilRecorded(keys, 5);
    expect(keys.usageStats()).toMatchObject({ bufferedRequests: 5 });
    await keys.flushUsage();
    expect(store.calls.map((c) => c.result)).toEqual([when === 'before' ? 'failed' : 'applied, answer lost', 'applied', 'applied']);
    expect(store.calls[1]!.id).toBe(store.calls[0]!.id);
    expect(store.calls[2]!.id).not.toBe(store.calls[0]!.id);
    expect(store.calls.map((c) => c.requests)).toEqual([3, 3, 2]);
    expect(keys.usageStats()).toEqual({ bufferedCells: 0, bufferedRequests: 0, flushedRequests: 5, dropped: 0, failedFlushes: 1 });
    const report = await keys.usage(apiKey.id, { groupBy: 'route' });
    expect(report.total).toMatchObject(counts({ requests: 5, s2: 3, s4: 2 }));
    // Nothing is left to send: another flush calls nothing.
    await keys.flushUsage();
    expect(store.calls).toHaveLength(3);
  });

  it('a store call that outlives storeTimeoutMs and applies late is retried with its id, and counted once', async () => {
    const store = new LateStore();
    const keys = usageKeys(store, testClock(), { storeTimeoutMs: 100 });
    const { key, apiKey } = await keys.create({ name: 'late' });
    const url = await routesApp(keys);
    await hit(url, key, '/a', 4);
    await untilRecorded(keys, 4);
    store.delays = [300];
    await keys.flushUsage();
    expect(keys.usageStats()).toMatchObject({ bufferedRequests: 4, flushedRequests: 0, failedFlushes: 1 });
    // The retry reaches the store before the first call applies; the first call then adds nothing.
    await keys.flushUsage();
    await sleep(350);
    expect(store.applied.map((a) => a.id)).toEqual([store.applied[0]!.id, store.applied[0]!.id]);
    expect(keys.usageStats()).toMatchObject({ bufferedRequests: 0, flushedRequests: 4, dropped: 0 });
    expect((await keys.usage(apiKey.id)).total).toMatchObject(counts({ requests: 4, s2: 4 }));
  });

  it('close() with the store still failing counts every request it could not write as dropped, and loses no more', async () => {
    const store = new FlakyUsageStore();
    const keys = usageKeys(store, testClock());
    const { key, apiKey } = await keys.create({ name: 'doomed' });
    const url = await routesApp(keys);
    store.failAlways = 'before';
    await hit(url, key, '/a', 3);
    await untilRecorded(keys, 3);
    await keys.flushUsage();
    // More requests after the failed flush: a new cell, waiting behind the batch to retry.
    await hit(url, key, '/b', 2);
    await hit(url, key, '/a', 1);
    await untilRecorded(keys, 6);
    expect(keys.usageStats()).toMatchObject({ bufferedRequests: 6, dropped: 0, flushedRequests: 0 });
    await keys.close();
    const stats = keys.usageStats()!;
    expect(stats).toMatchObject({ bufferedCells: 0, bufferedRequests: 0, flushedRequests: 0, dropped: 6 });
    expect(stats.failedFlushes).toBeGreaterThanOrEqual(2);
    expect(store.calls.every((c) => c.result === 'failed')).toBe(true);
    expect(await store.readUsage({ keyId: apiKey.id, fromDay: 0, toDay: 100_000 })).toEqual([]);
  });

  it('close() writes what is left when the store works again, the failed batch first: nothing dropped', async () => {
    const store = new FlakyUsageStore();
    const keys = usageKeys(store, testClock());
    const { key, apiKey } = await keys.create({ name: 'recovers' });
    const url = await routesApp(keys);
    await hit(url, key, '/a', 3);
    await untilRecorded(keys, 3);
    store.failures = ['before'];
    await keys.flushUsage();
    await hit(url, key, '/b', 2);
    await untilRecorded(keys, 5);
    await keys.close();
    expect(keys.usageStats()).toEqual({ bufferedCells: 0, bufferedRequests: 0, flushedRequests: 5, dropped: 0, failedFlushes: 1 });
    expect(store.calls.map((c) => [c.result, c.requests])).toEqual([['failed', 3], ['applied', 3], ['applied', 2]]);
    const cells = await store.readUsage({ keyId: apiKey.id, fromDay: 0, toDay: 100_000 });
    expect(cells.reduce((sum, cell) => sum + cell.requests, 0)).toBe(5);
  });

  it('after close(), a request that still ends is counted as dropped, never written', async () => {
    const store = new FlakyUsageStore();
    const keys = usageKeys(store, testClock());
    const { key } = await keys.create({ name: 'late' });
    const url = await routesApp(keys);
    await keys.close();
    // The middleware still answers (the store is open); usage is over for this instance.
    await hit(url, key, '/a', 2);
    await untilRecorded(keys, 2);
    await keys.flushUsage();
    expect(keys.usageStats()).toEqual({ bufferedCells: 0, bufferedRequests: 0, flushedRequests: 0, dropped: 2, failedFlushes: 0 });
    expect(store.calls).toEqual([]);
  });

  it('flushes on its interval without flushUsage()', async () => {
    const store = new FlakyUsageStore();
    const keys = usageKeys(store, testClock(), { usage: { flushIntervalMs: 100 } });
    const { key, apiKey } = await keys.create({ name: 'interval' });
    const url = await routesApp(keys);
    await hit(url, key, '/a', 2);
    const read = async (): Promise<number> => (await store.readUsage({ keyId: apiKey.id, fromDay: 0, toDay: 100_000 })).reduce((sum, cell) => sum + cell.requests, 0);
    await eventually(async () => (await read()) === 2, 3_000, 'the first interval flush');
    await hit(url, key, '/b', 3);
    await eventually(async () => (await read()) === 5, 3_000, 'the next interval flush');
    expect(keys.usageStats()).toMatchObject({ bufferedRequests: 0, flushedRequests: 5, dropped: 0 });
    expect(store.calls.length).toBeGreaterThanOrEqual(2);
    expect(store.calls.every((c) => c.requests > 0)).toBe(true);
  });
});

describe('the flush timer', () => {
  it('never keeps a process alive: a process that recorded usage and never closed keygate exits on its own', async () => {
    const child = spawn(process.execPath, [join(__dirname, '..', 'fixtures', 'usage-worker.cjs'), JSON.stringify({ mode: 'exit-alone' })], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const code = await new Promise<number | string>((resolve) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve('still running after 15 s');
      }, 15_000);
      child.on('exit', (exitCode, signal) => {
        clearTimeout(timer);
        resolve(exitCode ?? String(signal));
      });
    });
    expect({ code, output }).toEqual({ code: 0, output: expect.stringContaining('recorded 1, buffered 1') });
  }, 20_000);
});
