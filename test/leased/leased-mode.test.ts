/**
 * `consistency: 'leased'` in one process, on a MemoryStore (the same store methods RedisStore and
 * SqlStore implement; several processes sharing Redis or PostgreSQL: test/leased/multi-process).
 * What an app sees: the same answers as exact mode while a key has room, never an admission past
 * a limit, unspent units back in the store on close() and when the key changes, RateLimit figures
 * that count this process's held units, and the option checks.
 */
import express from 'express';
import request from 'supertest';
import { type ApiKeyStore, type Keygate, keygate, MemoryStore } from '../../src/index';
import { testClock } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();

/** A MemoryStore counting reservations and settlements (the real store answers every call). */
class ReservingStore extends MemoryStore {
  reservations = 0;
  settlements: number[] = [];
  override async reserve(...args: Parameters<NonNullable<ApiKeyStore['reserve']>>) {
    this.reservations++;
    return super.reserve(...args);
  }
  override async settle(...args: Parameters<NonNullable<ApiKeyStore['settle']>>) {
    this.settlements.push(args[1].unspent);
    return super.settle(...args);
  }
}

function leased(store: ApiKeyStore, options: Parameters<typeof keygate>[0] extends infer O ? Partial<O & object> : never = {}): Keygate {
  return track(keygate({ store, hashing: 'sha256', consistency: 'leased', ...options }));
}

function app(keys: Keygate) {
  const server = express();
  server.get('/', keys.authenticate(), (req, res) => {
    res.json({ useCount: req.apiKey?.useCount });
  });
  return server;
}

describe("consistency: 'leased' in one process", () => {
  it('admits exactly maxUses requests, with reservations instead of one consume per request', async () => {
    const store = new ReservingStore();
    const keys = leased(store);
    const { key, apiKey } = await keys.create({ name: 'k', maxUses: 200 });
    const server = app(keys);
    const statuses: number[] = [];
    for (let i = 0; i < 200; i++) statuses.push((await request(server).get('/').set('x-api-key', key)).status);
    // Sizes grow from 8 while leases run out, capped at share (0.1) of maxUses: 20.
    expect(store.reservations).toBeLessThan(20);
    for (let i = 0; i < 30; i++) statuses.push((await request(server).get('/').set('x-api-key', key)).status);
    expect(statuses.filter((status) => status === 200)).toHaveLength(200);
    expect(statuses.slice(200).every((status) => status === 403)).toBe(true);
    expect((await keys.get(apiKey.id))?.useCount).toBe(200);
  });

  it('reports each request its own useCount, and gives unspent units back on close()', async () => {
    const store = new ReservingStore();
    const keys = keygate({ store, hashing: 'sha256', consistency: 'leased' });
    const { key, apiKey } = await keys.create({ name: 'k', maxUses: 1_000 });
    const server = app(keys);
    const counts: number[] = [];
    for (let i = 0; i < 5; i++) counts.push(((await request(server).get('/').set('x-api-key', key)).body as { useCount: number }).useCount);
    expect(counts).toEqual([1, 2, 3, 4, 5]);
    // 8 reserved, 5 spent: the store counts 8 until the lease ends.
    expect((await store.findById(apiKey.id))?.useCount).toBe(8);
    await keys.close();
    expect(store.settlements).toEqual([3]);
    expect((await store.findById(apiKey.id))?.useCount).toBe(5);
  });

  it('a revocation through keygate refuses the next request: the lease is given back with the cache entry', async () => {
    const store = new ReservingStore();
    const keys = leased(store);
    const { key, apiKey } = await keys.create({ name: 'k' });
    const server = app(keys);
    expect((await request(server).get('/').set('x-api-key', key)).status).toBe(200);
    await keys.revoke(apiKey.id);
    expect((await request(server).get('/').set('x-api-key', key)).status).toBe(401);
    expect(store.settlements).toEqual([7]);
    expect((await store.findById(apiKey.id))?.useCount).toBe(1);
  });

  it('a revocation keygate is not told of reaches it once the lease runs out: within lease.ttlMs / 2', async () => {
    const clock = testClock();
    // A store that sends no change notifications, as another process writing to a database would not.
    const store = Object.assign(new MemoryStore(), { subscribe: undefined });
    const keys = leased(store, { now: clock.now, storeTimeoutMs: 500, lease: { ttlMs: 1_000 } });
    const { key, apiKey } = await keys.create({ name: 'k' });
    const server = app(keys);
    expect((await request(server).get('/').set('x-api-key', key)).status).toBe(200);
    const elsewhere = track(keygate({ store, hashing: 'sha256', now: clock.now }));
    await elsewhere.revoke(apiKey.id);
    // Inside the bound the lease still admits (what the documentation promises, and no more)...
    clock.advance(499);
    expect((await request(server).get('/').set('x-api-key', key)).status).toBe(200);
    // ...and at ttlMs / 2 the next reservation meets the revocation in the store.
    clock.advance(1);
    expect((await request(server).get('/').set('x-api-key', key)).status).toBe(401);
    expect((await request(server).get('/').set('x-api-key', key)).status).toBe(401);
  });

  it('a day quota is never exceeded, and the next day starts a new lease', async () => {
    const clock = testClock(Date.UTC(2026, 0, 15, 23, 59, 59, 0));
    const store = new ReservingStore();
    const keys = leased(store, { now: clock.now });
    const { key } = await keys.create({ name: 'k', rateLimit: { perDay: 30 } });
    const server = app(keys);
    let admitted = 0;
    for (let i = 0; i < 40; i++) if ((await request(server).get('/').set('x-api-key', key)).status === 200) admitted++;
    expect(admitted).toBe(30);
    clock.advance(1_000);
    const next = await request(server).get('/').set('x-api-key', key);
    expect(next.status).toBe(200);
    expect(next.headers['ratelimit']).toBe('"day";r=29;t=86400');
  });

  it('RateLimit figures count the units this process holds as remaining', async () => {
    const store = new ReservingStore();
    const keys = leased(store);
    const { key } = await keys.create({ name: 'k', rateLimit: { perDay: 1_000 } });
    const server = app(keys);
    const first = await request(server).get('/').set('x-api-key', key);
    const second = await request(server).get('/').set('x-api-key', key);
    expect(first.headers['ratelimit']).toMatch(/^"day";r=999;t=\d+$/);
    expect(second.headers['ratelimit']).toMatch(/^"day";r=998;t=\d+$/);
  });

  it('quota.threshold fires once per threshold when the reservation that holds its mark is made', async () => {
    const store = new ReservingStore();
    const keys = leased(store);
    const { key, apiKey } = await keys.create({ name: 'k', maxUses: 100, rateLimit: { perDay: 1_000 } });
    const seen: { window: string; threshold: number; used: number }[] = [];
    keys.on('quota.threshold', ({ window, threshold, used }) => seen.push({ window, threshold, used }));
    const server = app(keys);
    let admitted = 0;
    for (let i = 0; i < 110; i++) if ((await request(server).get('/').set('x-api-key', key)).status === 200) admitted++;
    expect(admitted).toBe(100);
    expect((await keys.get(apiKey.id))?.useCount).toBe(100);
    // maxUses 100: marks 80 and 100, each reported once, by the reservation whose batch holds it
    // (its count then may be past the mark by the rest of that batch: at most share × 100 = 10).
    expect(seen.map(({ window, threshold }) => `${window} ${threshold}`).sort()).toEqual(['lifetime 0.8', 'lifetime 1']);
    for (const event of seen) expect(event.used - event.threshold * 100).toBeGreaterThanOrEqual(0);
    for (const event of seen) expect(event.used - event.threshold * 100).toBeLessThan(10);
  });

  it('a reservation on its way when the key changes is given back whole, and the request reserves again under the new record', async () => {
    const store = new ReservingStore();
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const reserve = store.reserve.bind(store);
    let held = true;
    store.reserve = async (...args) => {
      if (held) {
        held = false;
        await gate;
      }
      return reserve(...args);
    };
    const keys = leased(store);
    const { key, apiKey } = await keys.create({ name: 'k', maxUses: 1_000 });
    const pending = keys.verify(key);
    await new Promise((resolve) => setImmediate(resolve));
    await keys.update(apiKey.id, { maxUses: 500 });
    open();
    expect((await pending).ok).toBe(true);
    // The first grant (8) came back whole; the request was admitted from a second reservation.
    await new Promise((resolve) => setImmediate(resolve));
    expect(store.settlements[0]).toBe(8);
    expect(store.reservations).toBe(2);
    await keys.close();
    expect((await store.findById(apiKey.id))?.useCount).toBe(1);
  });

  it('close() while many requests wait for a reservation answers every one of them, with a bounded number of reservations', async () => {
    const store = new ReservingStore();
    const reserve = store.reserve.bind(store);
    store.reserve = async (...args) => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      return reserve(...args);
    };
    const keys = keygate({ store, hashing: 'sha256', consistency: 'leased' });
    const { key, apiKey } = await keys.create({ name: 'k', maxUses: 100_000 });
    await keys.verify(key);
    const waiting = Array.from({ length: 50 }, () => keys.verify(key));
    await new Promise((resolve) => setImmediate(resolve));
    await keys.close();
    const answered = await Promise.race([Promise.all(waiting), new Promise((resolve) => setTimeout(() => resolve('hung'), 3_000))]);
    expect(answered).not.toBe('hung');
    expect((answered as { ok: boolean }[]).every((result) => result.ok)).toBe(true);
    expect(store.reservations).toBeLessThan(60);
    expect((await store.findById(apiKey.id))?.useCount).toBe(51);
  });

  it('a reservation slower than half the hold still admits; one slower than storeTimeoutMs is 503 and its units come back', async () => {
    const store = new ReservingStore();
    const reserve = store.reserve.bind(store);
    let delayMs = 300;
    store.reserve = async (...args) => {
      const outcome = await reserve(...args);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      return outcome;
    };
    const keys = leased(store, { storeTimeoutMs: 500, lease: { ttlMs: 1_000 } });
    const { key, apiKey } = await keys.create({ name: 'k', maxUses: 1_000 });
    expect((await keys.verify(key)).ok).toBe(true);
    await keys.update(apiKey.id, { name: 'renamed' });
    delayMs = 700;
    const late = await keys.verify(key);
    expect(late.ok || late.error.code).toBe('store_unavailable');
    // The timed-out reservation was applied; its settlement gives every unit back.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await store.findById(apiKey.id))?.useCount).toBe(1);
  });

  it('a limit lowered while requests wait for a reservation applies to them: they are decided again under the new record', async () => {
    const store = new ReservingStore();
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const reserve = store.reserve.bind(store);
    let first = true;
    store.reserve = async (...args) => {
      if (first) {
        first = false;
        await gate;
      }
      return reserve(...args);
    };
    const keys = leased(store);
    const { key, apiKey } = await keys.create({ name: 'k', maxUses: 1_000 });
    const waiting = Array.from({ length: 40 }, () => keys.verify(key));
    await new Promise((resolve) => setImmediate(resolve));
    await keys.update(apiKey.id, { maxUses: 3 });
    open();
    const results = await Promise.all(waiting);
    expect(results.filter((result) => result.ok)).toHaveLength(3);
    await keys.close();
    expect((await store.findById(apiKey.id))?.useCount).toBe(3);
  });

  it('after close(), a request still verified reserves one unit and holds nothing back', async () => {
    const store = new ReservingStore();
    const keys = keygate({ store, hashing: 'sha256', consistency: 'leased' });
    const { key, apiKey } = await keys.create({ name: 'k', maxUses: 1_000 });
    expect((await keys.verify(key)).ok).toBe(true);
    await keys.close();
    expect((await store.findById(apiKey.id))?.useCount).toBe(1);
    expect((await keys.verify(key)).ok).toBe(true);
    expect((await store.findById(apiKey.id))?.useCount).toBe(2);
  });

  it('keys with maxConcurrent consume per request', async () => {
    const store = new ReservingStore();
    const keys = leased(store);
    const { key } = await keys.create({ name: 'k', maxConcurrent: 2 });
    const server = app(keys);
    expect((await request(server).get('/').set('x-api-key', key)).status).toBe(200);
    expect(store.reservations).toBe(0);
  });

  it('checks its options: the mode, the lease settings, and a store that cannot reserve', () => {
    const store = new MemoryStore();
    expect(() => keygate({ store, consistency: 'eventual' as 'leased' })).toThrow("`consistency` must be 'exact' or 'leased'");
    expect(() => keygate({ store, lease: { ttlMs: 1_000 } })).toThrow("`lease` applies only with consistency: 'leased'");
    expect(() => keygate({ store, consistency: 'leased', lease: { ttlMs: 50 } })).toThrow('lease.ttlMs');
    expect(() => keygate({ store, consistency: 'leased', lease: { ttlMs: 1_500 } })).toThrow('at least twice `storeTimeoutMs` (2000)');
    expect(() => keygate({ store, consistency: 'leased', storeTimeoutMs: 400, lease: { ttlMs: 800 } })).not.toThrow();
    expect(() => keygate({ store, consistency: null as unknown as 'leased' })).toThrow("`consistency` must be 'exact' or 'leased'");
    for (const lease of [null, [], new Map()]) expect(() => keygate({ store, consistency: 'leased', lease: lease as never })).toThrow('`lease` must be { ttlMs?, maxUnits?, share? }');
    expect(() => keygate({ store, consistency: 'leased', lease: { share: 0 } })).toThrow('lease.share');
    expect(() => keygate({ store, consistency: 'leased', lease: { maxUnit: 5 } as never })).toThrow(/maxUnits/);
    const { reserve: _reserve, settle: _settle, ...plain } = Object.getOwnPropertyDescriptors(MemoryStore.prototype);
    const minimal = Object.create(Object.prototype, plain) as ApiKeyStore;
    expect(() => keygate({ store: Object.assign(Object.create(minimal), { reserve: undefined, settle: undefined }) as ApiKeyStore, consistency: 'leased' })).toThrow('reserve and settle');
  });
});
