/**
 * `keys.metrics(registry)`: keygate's numbers on a real prom-client registry, checked by scraping
 * the text a Prometheus server would read.
 */
import express from 'express';
import { type OpenMetricsContentType, Registry } from 'prom-client';
import request from 'supertest';
import { MemoryStore, keygate, requireScopes } from '../../src/index';
import { CountingStore } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();

/** `name{labels} value` lines of a scrape, as a map from the series to its value. */
function series(text: string): Map<string, number> {
  const found = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([^\s{]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (!match) throw new Error(`not a Prometheus sample line: ${line}`);
    found.set(match[1]!, Number(match[2]));
  }
  return found;
}

function app(keys: ReturnType<typeof keygate>, registry: Registry) {
  const server = express();
  server.get('/metrics', async (_req, res) => {
    res.type(registry.contentType).send(await registry.metrics());
  });
  server.use(keys.authenticate());
  server.get('/leads', (_req, res) => {
    res.json([]);
  });
  return server;
}

describe('keys.metrics(registry)', () => {
  it('exposes decisions, verification time cold and warm, cache hits and store calls, scraped from /metrics', async () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    const registry = new Registry();
    keys.metrics(registry);
    const server = app(keys, registry);
    const { key } = await keys.create({ name: 'm', rateLimit: { perSecond: 1, burst: 2 } });
    for (let i = 0; i < 4; i++) await request(server).get('/leads').set('X-API-Key', key);
    await request(server).get('/leads');
    await request(server).get('/leads').set('X-API-Key', `${key.slice(0, -3)}abc`);

    const scrape = await request(server).get('/metrics');
    expect(scrape.status).toBe(200);
    expect(scrape.headers['content-type']).toMatch(/^text\/plain/);
    const values = series(scrape.text);
    expect(values.get('keygate_requests_total{outcome="admitted"}')).toBe(2);
    expect(values.get('keygate_requests_total{outcome="rate_limited"}')).toBe(2);
    expect(values.get('keygate_requests_total{outcome="malformed_api_key"}')).toBe(1);
    // The missing key never reached the verifier: the middleware refused it first.
    expect(values.has('keygate_requests_total{outcome="missing_api_key"}')).toBe(false);
    expect(values.get('keygate_verification_duration_seconds_count{path="cold"}')).toBe(2);
    expect(values.get('keygate_verification_duration_seconds_count{path="warm"}')).toBe(3);
    expect(values.get('keygate_verification_duration_seconds_bucket{path="warm",le="+Inf"}')).toBe(3);
    expect(values.get('keygate_cache_lookups_total{result="hit"}')).toBe(3);
    expect(values.get('keygate_cache_lookups_total{result="miss"}')).toBe(2);
    expect(values.get('keygate_cache_hit_ratio')).toBeCloseTo(3 / 5);
    expect(values.get('keygate_store_call_duration_seconds_count{operation="consume"}')).toBe(4);
    expect(values.get('keygate_store_call_duration_seconds_count{operation="findByKeyPrefix"}')).toBe(1);
    expect(values.get('keygate_hash_queue_depth')).toBe(0);
    expect(scrape.text).toContain('# TYPE keygate_verification_duration_seconds histogram');
    expect(scrape.text).toContain('# TYPE keygate_requests_total counter');

    // Buckets are cumulative and end at the count; sums are positive.
    const buckets = [...values.entries()].filter(([name]) => name.startsWith('keygate_verification_duration_seconds_bucket') && name.includes('path="cold"'));
    const counts = buckets.map(([, value]) => value);
    expect(counts).toEqual([...counts].sort((a, b) => a - b));
    expect(values.get('keygate_verification_duration_seconds_sum{path="cold"}')).toBeGreaterThan(0);
  });

  it('counts store failures by operation, and measures bcrypt waits on the hashing threads', async () => {
    const store = new CountingStore();
    const keys = track(keygate({ store, hashing: 'bcrypt', bcryptCost: 4, hashThreads: 1 }));
    const registry = new Registry();
    keys.metrics(registry, { prefix: 'api_keys_' });
    const { key } = await keys.create({ name: 'b' });
    expect((await keys.verify(key)).ok).toBe(true);
    store.fail('consume', 'reject');
    expect(await keys.verify(key)).toMatchObject({ ok: false, error: { code: 'store_unavailable' } });
    const values = series(await registry.metrics());
    expect(values.get('api_keys_store_call_failures_total{operation="consume"}')).toBe(1);
    expect(values.get('api_keys_requests_total{outcome="store_unavailable"}')).toBe(1);
    // The first verify's bcrypt compare ran on the pool, after metrics were on.
    expect(values.get('api_keys_hash_wait_seconds_count')).toBeGreaterThanOrEqual(1);
    expect([...values.keys()].some((name) => name.startsWith('keygate_'))).toBe(false);
  });

  it('checks its arguments, and two instances need two prefixes on one registry', () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    expect(() => keys.metrics({} as never)).toThrow(/prom-client Registry/);
    expect(() => keys.metrics(new Registry(), { prefix: 'bad prefix' })).toThrow(TypeError);
    expect(() => keys.metrics(new Registry(), { prefx: 'x_' } as never)).toThrow(/did you mean `prefix`/);
    const registry = new Registry();
    keys.metrics(registry);
    const other = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    expect(() => other.metrics(registry)).toThrow(/already been registered/);
    expect(() => other.metrics(registry, { prefix: 'other_keygate_' })).not.toThrow();
  });

  it('counts a refusal by a route\'s own scopes or a scope guard under its code, not as admitted', async () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    const registry = new Registry();
    keys.metrics(registry);
    const server = express();
    server.use(keys.authenticate());
    server.get('/write', keys.authenticate({ scopes: ['leads:write'] }), (_req, res) => void res.json({}));
    server.get('/guarded', requireScopes('leads:delete'), (_req, res) => void res.json({}));
    const { key } = await keys.create({ name: 'reader', scopes: ['leads:read'] });
    await request(server).get('/write').set('X-API-Key', key).expect(403);
    await request(server).get('/guarded').set('X-API-Key', key).expect(403);
    const values = series(await registry.metrics());
    expect(values.get('keygate_requests_total{outcome="insufficient_scope"}')).toBe(2);
    expect(values.get('keygate_requests_total{outcome="admitted"}')).toBe(0);
  });

  it('prints counters once suffixed on an OpenMetrics registry', async () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    const registry = new Registry<OpenMetricsContentType>();
    registry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
    keys.metrics(registry);
    const { key } = await keys.create({ name: 'om' });
    await keys.verify(key);
    const text = await registry.metrics();
    expect(text).toContain('keygate_requests_total{outcome="admitted"} 1');
    expect(text).not.toContain('_total_total');
  });

  it('leaves keys.store the store it was given', () => {
    const store = new MemoryStore();
    const keys = track(keygate({ store, hashing: 'sha256' }));
    keys.metrics(new Registry());
    expect(keys.store).toBe(store);
  });
});
