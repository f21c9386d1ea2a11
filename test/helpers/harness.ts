/** Shared set-up for HTTP tests: both Express majors, an injectable clock, and a counting store. */
import express5 from 'express';
import express4 from 'express4';
import type { Express, RequestHandler } from 'express';
import { type AuthenticateOptions, type KeygateOptions, type ApiKeyStore, keygate, Keygate, MemoryStore } from '../../src/index';

/** Both supported Express majors, for `describe.each`. */
export const EXPRESS_VERSIONS: ReadonlyArray<[string, () => Express]> = [
  ['express 5', () => express5()],
  ['express 4', () => express4() as unknown as Express],
];

/** 2026-01-15T12:00:00Z, a fixed start for every test clock. */
export const T0 = Date.UTC(2026, 0, 15, 12, 0, 0);

/** A clock tests move by hand. */
export interface TestClock {
  now: () => number;
  advance: (ms: number) => void;
  set: (ms: number) => void;
}

export function testClock(start = T0): TestClock {
  let time = start;
  return { now: () => time, advance: (ms) => (time += ms), set: (ms) => (time = ms) };
}

type StoreMethod = 'insert' | 'findById' | 'findByKeyPrefix' | 'update' | 'rotate' | 'list' | 'consume' | 'release' | 'purge';

/**
 * Wraps a real MemoryStore, counting calls per method and letting a test make a method fail or
 * hang. It is a wrapper around the real store, not a mock: every call still reaches it.
 */
export class CountingStore implements ApiKeyStore {
  readonly inner = new MemoryStore();
  readonly calls: Record<StoreMethod, number> = { insert: 0, findById: 0, findByKeyPrefix: 0, update: 0, rotate: 0, list: 0, consume: 0, release: 0, purge: 0 };
  private faults = new Map<StoreMethod, 'throw' | 'hang' | 'reject'>();

  fail(method: StoreMethod, how: 'throw' | 'hang' | 'reject'): void {
    this.faults.set(method, how);
  }

  heal(): void {
    this.faults.clear();
  }

  resetCounts(): void {
    for (const key of Object.keys(this.calls) as StoreMethod[]) this.calls[key] = 0;
  }

  private run<T>(method: StoreMethod, call: () => Promise<T>): Promise<T> {
    this.calls[method]++;
    const fault = this.faults.get(method);
    if (fault === 'throw') throw new Error('connection refused (test fault)');
    if (fault === 'reject') return Promise.reject(new Error('ECONNRESET (test fault)'));
    if (fault === 'hang') return new Promise<T>(() => undefined);
    return call();
  }

  insert: ApiKeyStore['insert'] = (record) => this.run('insert', () => this.inner.insert(record));
  findById: ApiKeyStore['findById'] = (id) => this.run('findById', () => this.inner.findById(id));
  findByKeyPrefix: ApiKeyStore['findByKeyPrefix'] = (p) => this.run('findByKeyPrefix', () => this.inner.findByKeyPrefix(p));
  update: ApiKeyStore['update'] = (id, patch) => this.run('update', () => this.inner.update(id, patch));
  rotate: ApiKeyStore['rotate'] = (rotation) => this.run('rotate', () => this.inner.rotate(rotation));
  list: ApiKeyStore['list'] = (query) => this.run('list', () => this.inner.list(query));
  consume: ApiKeyStore['consume'] = (id, request) => this.run('consume', () => this.inner.consume(id, request));
  release: NonNullable<ApiKeyStore['release']> = (id, lease) => this.run('release', () => this.inner.release(id, lease));
  purge: ApiKeyStore['purge'] = (purge) => this.run('purge', () => this.inner.purge(purge));
  private readonly listeners = new Set<(id: string | null) => void>();

  constructor() {
    // Changes the inner store reports reach this wrapper's own listeners.
    this.inner.subscribe((id) => this.broadcast(id));
  }

  /** Tells every listener that `id` changed; `null` plays a lost subscription. */
  broadcast(id: string | null): void {
    for (const listener of this.listeners) listener(id);
  }

  subscribe(listener: (id: string | null) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

/** A manager on a counting store with sha256 hashing (fast) and a test clock. */
export function testKeys(options: Partial<KeygateOptions> = {}): { keys: Keygate; store: CountingStore; clock: TestClock } {
  const store = new CountingStore();
  const clock = testClock();
  const keys = keygate({ store, prefix: 'pk_test', hashing: 'sha256', now: clock.now, ...options });
  return { keys, store, clock };
}

/**
 * An app with `authenticate(options)` in front of a few routes. `/whoami` echoes the principal;
 * extra handlers can be mounted per route by the test.
 */
export function testApp(
  makeExpress: () => Express,
  keys: Keygate,
  options: AuthenticateOptions | undefined = undefined,
  mount: (app: Express) => void = () => undefined,
): Express {
  const app = makeExpress();
  app.set('trust proxy', 'loopback');
  app.get('/open', (_req, res) => {
    res.json({ open: true });
  });
  mount(app);
  app.use(keys.authenticate(options));
  app.get('/whoami', (req, res) => {
    res.json({ apiKey: req.apiKey, locals: res.locals.apiKey });
  });
  app.head('/whoami', (_req, res) => {
    res.end();
  });
  return app;
}

/** A handler answering `{ ok: true }`. */
export const ok: RequestHandler = (_req, res) => {
  res.json({ ok: true });
};
