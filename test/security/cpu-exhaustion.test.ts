/**
 * Slow hashes under attack: bcrypt never blocks the event loop, a flood of wrong secrets for a known
 * keyPrefix cannot buy unbounded bcrypt time, and the same wrong key is refused from memory.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import request from 'supertest';
import express from 'express';
import { keygate, MemoryStore, type Keygate } from 'keygate';
import { formatKey } from '../../src/key/format';
import { CountingStore, testClock } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();

/** A well-formed key with the keyPrefix of `key` and another secret. */
function wrongSecretFor(key: string, variant: number): string {
  const [, lookupId] = /^[a-z_]+?_([0-9A-Za-z]{16})_/.exec(key)!;
  return formatKey('pk_test', lookupId!, `W${String(variant).padStart(31, '0')}`);
}

function app(keys: Keygate) {
  const server = express();
  server.get('/open', (_req, res) => {
    res.json({ open: true });
  });
  server.use(keys.authenticate());
  server.get('/private', (_req, res) => {
    res.json({ ok: true });
  });
  return server;
}

/** The worst event-loop stall (ms) while `work` runs. */
async function worstStall(work: () => Promise<unknown>): Promise<number> {
  const histogram = monitorEventLoopDelay({ resolution: 5 });
  histogram.enable();
  try {
    await work();
  } finally {
    histogram.disable();
  }
  return histogram.max / 1e6;
}

describe('bcrypt off the event loop', () => {
  it('keeps the event loop free while cold bcrypt verifications run on worker threads', async () => {
    const keys = track(keygate({ store: new MemoryStore(), prefix: 'pk_test', bcryptCost: 12, hashThreads: 1 }));
    const { key } = await keys.create({ name: 'slow' });
    const server = app(keys);
    let coldMs = 0;
    let openLatency = 0;
    const stall = await worstStall(async () => {
      const started = Date.now();
      const cold = request(server).get('/private').set('X-API-Key', key);
      // While bcrypt (cost 12, a few hundred ms of CPU) runs, a cheap route must keep answering.
      await new Promise((resolve) => setTimeout(resolve, 30));
      const openStarted = Date.now();
      expect((await request(server).get('/open')).status).toBe(200);
      openLatency = Date.now() - openStarted;
      expect((await cold).status).toBe(200);
      coldMs = Date.now() - started;
    });
    expect(coldMs).toBeGreaterThan(100); // the compare really was slow...
    expect(stall).toBeLessThan(coldMs / 2); // ...and the loop never waited for it
    expect(openLatency).toBeLessThan(coldMs / 2);
  });

  it('shows what it prevents: with hashThreads 0 the same compare stalls the event loop', async () => {
    const keys = track(keygate({ store: new MemoryStore(), prefix: 'pk_test', bcryptCost: 12, hashThreads: 0 }));
    const { key } = await keys.create({ name: 'blocking' });
    let coldMs = 0;
    const stall = await worstStall(async () => {
      const started = Date.now();
      expect((await keys.verify(key)).ok).toBe(true);
      coldMs = Date.now() - started;
    });
    // bcryptjs yields only every ~100 ms of work, so the loop stalls for that long at a time.
    expect(coldMs).toBeGreaterThan(100);
    expect(stall).toBeGreaterThan(60);
  });

  it('refuses with 503 verification_busy instead of queueing without bound', async () => {
    const store = new MemoryStore();
    const admin = track(keygate({ store, prefix: 'pk_test', bcryptCost: 10 }));
    const created = [];
    for (let i = 0; i < 6; i++) created.push(await admin.create({ name: `k${i}` }));
    // A fresh instance with one thread and room for one waiting job: nothing is cached, so all six
    // need a bcrypt compare at the same moment.
    const keys = track(keygate({ store, prefix: 'pk_test', hashThreads: 1, maxHashQueue: 1, failedAttemptLimit: false }));
    const server = app(keys);
    const answers = await Promise.all(created.map(({ key }) => request(server).get('/private').set('X-API-Key', key)));
    const statuses = answers.map((answer) => answer.status).sort();
    expect(statuses).not.toContain(500);
    expect(statuses.filter((status) => status === 200).length).toBeGreaterThanOrEqual(1);
    const busy = answers.filter((answer) => answer.status === 503);
    expect(busy.length).toBeGreaterThanOrEqual(1);
    for (const answer of busy) {
      expect(answer.body.code).toBe('verification_busy');
      expect(answer.headers['retry-after']).toBe('1');
    }
  });
});

describe('a flood of wrong secrets for a known keyPrefix', () => {
  it('spends at most the failure budget on bcrypt, then refuses without hashing, while the cached key keeps working', async () => {
    const clock = testClock();
    const store = new CountingStore();
    const keys = track(keygate({ store, prefix: 'pk_test', bcryptCost: 4, now: clock.now, failedAttemptLimit: { burst: 5, perSecond: 1, delayMs: 0 } }));
    const { key } = await keys.create({ name: 'victim' });
    const server = app(keys);
    expect((await request(server).get('/private').set('X-API-Key', key)).status).toBe(200); // cached

    const codes: string[] = [];
    for (let i = 0; i < 20; i++) {
      const answer = await request(server).get('/private').set('X-API-Key', wrongSecretFor(key, i));
      codes.push(answer.body.code);
      // The legitimate, cached key is unaffected by the flood.
      expect((await request(server).get('/private').set('X-API-Key', key)).status).toBe(200);
    }
    expect(codes.slice(0, 5)).toEqual(Array(5).fill('invalid_api_key'));
    expect(codes.slice(5)).toEqual(Array(15).fill('too_many_failed_attempts'));

    // The budget refills at perSecond: one more verification a second later.
    clock.advance(1000);
    const later = await request(server).get('/private').set('X-API-Key', wrongSecretFor(key, 99));
    expect(later.body.code).toBe('invalid_api_key');
    const refused = await request(server).get('/private').set('X-API-Key', wrongSecretFor(key, 100));
    expect(refused.status).toBe(429);
    expect(refused.headers['retry-after']).toBe('1');
  });

  it('refuses the same wrong key again from memory, with no store lookup and no hash', async () => {
    const store = new CountingStore();
    const keys = track(keygate({ store, prefix: 'pk_test', bcryptCost: 4 }));
    const { key } = await keys.create({ name: 'k' });
    const server = app(keys);
    const wrong = wrongSecretFor(key, 1);
    store.resetCounts();
    for (let i = 0; i < 5; i++) expect((await request(server).get('/private').set('X-API-Key', wrong)).body.code).toBe('invalid_api_key');
    expect(store.calls.findByKeyPrefix).toBe(1);
  });

  it('does not budget cheap HMAC hashes: wrong secrets stay invalid_api_key', async () => {
    const keys = track(keygate({ store: new MemoryStore(), prefix: 'pk_test', hashing: 'sha256', failedAttemptLimit: { burst: 1, perSecond: 1 } }));
    const { key } = await keys.create({ name: 'fast' });
    const server = app(keys);
    for (let i = 0; i < 5; i++) expect((await request(server).get('/private').set('X-API-Key', wrongSecretFor(key, i))).body.code).toBe('invalid_api_key');
    expect((await request(server).get('/private').set('X-API-Key', key)).status).toBe(200);
  });
});

describe('a concurrent flood', () => {
  it('runs at most `burst` bcrypt compares for fifty wrong secrets arriving at once', async () => {
    const store = new MemoryStore();
    const keys = track(keygate({ store, prefix: 'pk_test', bcryptCost: 4, failedAttemptLimit: { burst: 3, perSecond: 1, delayMs: 0 } }));
    const { key } = await keys.create({ name: 'victim' });
    const server = app(keys);
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => request(server).get('/private').set('X-API-Key', wrongSecretFor(key, i))));
    const codes = answers.map((answer) => answer.body.code);
    expect(codes.filter((code) => code === 'invalid_api_key')).toHaveLength(3);
    expect(codes.filter((code) => code === 'too_many_failed_attempts')).toHaveLength(47);
    // The right secret still gets its own reservation back: it is verified and cached.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect((await request(server).get('/private').set('X-API-Key', key)).status).toBe(200);
  });
});

describe('refusals under a flood stay cheap', () => {
  it('refuses a keyPrefix whose budget is spent without even a store lookup, and without a stack trace', async () => {
    const store = new CountingStore();
    const keys = track(keygate({ store, prefix: 'pk_test', bcryptCost: 4, now: testClock().now, failedAttemptLimit: { burst: 2, perSecond: 1, delayMs: 0 } }));
    const { key } = await keys.create({ name: 'victim' });
    for (let i = 0; i < 2; i++) expect((await keys.verify(wrongSecretFor(key, i))).ok).toBe(false);
    store.resetCounts();
    const refused = await keys.verify(wrongSecretFor(key, 7));
    expect(refused.ok).toBe(false);
    if (!refused.ok) {
      expect(refused.error.code).toBe('too_many_failed_attempts');
      expect(refused.error.stack).toBe(`KeygateError: ${refused.error.message}`);
    }
    expect(store.calls.findByKeyPrefix).toBe(0);
  });
});

describe('the tarpit', () => {
  it('holds a too_many_failed_attempts refusal for delayMs, so each attacking connection slows down', async () => {
    const keys = track(keygate({ store: new MemoryStore(), prefix: 'pk_test', bcryptCost: 4, failedAttemptLimit: { burst: 1, perSecond: 1, delayMs: 300 } }));
    const { key } = await keys.create({ name: 'victim' });
    expect((await keys.verify(wrongSecretFor(key, 1))).ok).toBe(false); // spends the budget
    const started = Date.now();
    const held = await keys.verify(wrongSecretFor(key, 2));
    expect(held.ok || held.error.code).toBe('too_many_failed_attempts');
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    // Other answers are not delayed.
    const quick = Date.now();
    expect((await keys.verify('garbage')).ok).toBe(false);
    expect(Date.now() - quick).toBeLessThan(200);
  });
});
