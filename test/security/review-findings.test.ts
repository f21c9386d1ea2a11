/**
 * What the outside review of the structure work found in the core (the stores' share of each
 * finding is proved by the contract suite and the Redis and SQL suites):
 * 1. a rotation lost an update that landed between the manager's read and the store's step;
 * 2. an async `onError` that rejected took the process down;
 * 3. a polluted `Object.prototype` filled in absent record fields;
 * 4. a forged list cursor holding an instant no Date can hold restarted the listing.
 */
import express from 'express';
import request from 'supertest';
import { type ApiKeyRecord, type StoreRotation, keygate, MemoryStore } from '../../src/index';
import { decodeStoredRecord } from '../../src/record/decode';
import { T0 } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';
import { testRecord } from '../helpers/records';

const track = closeAfterEach();

/** A MemoryStore whose rotations wait at the store's door until the test opens it. */
class GatedRotationStore extends MemoryStore {
  #arrive: () => void = () => undefined;
  #open: () => void = () => undefined;
  /** Resolves when a rotation has reached the store. */
  readonly arrived = new Promise<void>((resolve) => (this.#arrive = resolve));
  readonly #gate = new Promise<void>((resolve) => (this.#open = resolve));

  /** Lets the waiting rotation in. */
  open(): void {
    this.#open();
  }

  override async rotate(rotation: StoreRotation): Promise<{ old: ApiKeyRecord; replacement: ApiKeyRecord } | null> {
    this.#arrive();
    await this.#gate;
    return super.rotate(rotation);
  }
}

describe('1. a rotation keeps every update that reached the store before it', () => {
  it('a suspension and narrowed scopes and IPs made while the rotation was minting reach the new key', async () => {
    const store = new GatedRotationStore();
    const keys = track(keygate({ store, hashing: 'sha256', now: () => T0 }));
    const { apiKey } = await keys.create({ name: 'k', scopes: ['admin'], rateLimit: { perSecond: 100 } });

    const rotating = keys.rotate(apiKey.id, { gracePeriodMs: 60_000 });
    await store.arrived; // the manager has read the old key and minted the new one
    const updated = await keys.update(apiKey.id, { status: 'suspended', scopes: ['read'], allowedIps: ['10.0.0.1'], rateLimit: { perSecond: 1 } });
    expect(updated.revokedAt).toBeNull(); // the update came first: the rotation has not happened yet
    store.open();
    const rotated = await rotating;

    expect(rotated.apiKey).toMatchObject({ status: 'suspended', scopes: ['read'], allowedIps: ['10.0.0.1'], rateLimit: { perSecond: 1 } });
    const verdict = await keys.verify(rotated.key, { scopes: ['admin'], ip: '203.0.113.9' });
    expect(verdict.ok === false && verdict.error.code).toBe('api_key_disabled');
  });
});

describe('2. an async onError that rejects', () => {
  it('reaches the app error handler; the process and the request survive', async () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    const app = express();
    const failure = new Error('audit log unavailable (test fault)');
    app.use(
      keys.authenticate({
        onError: async () => {
          await Promise.resolve();
          throw failure;
        },
      }),
    );
    app.get('/x', (_req, res) => res.json({ ok: true }));
    const seen: unknown[] = [];
    app.use((error: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      seen.push(error);
      res.status(500).json({ handled: true });
    });
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const response = await request(app).get('/x');
      expect(response.status).toBe(500);
      expect(response.body).toEqual({ handled: true });
      expect(seen).toEqual([failure]);
      await new Promise((resolve) => setImmediate(resolve));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});

describe('3. a polluted Object.prototype fills in nothing', () => {
  const POLLUTION = { ownerId: 'victim-owner', description: 'polluted', environment: 'live', rotatedFromId: 'x', status: 'active', scopes: ['admin'] };

  function polluted<T>(body: () => Promise<T>): Promise<T> {
    const prototype = Object.prototype as unknown as Record<string, unknown>;
    for (const [field, value] of Object.entries(POLLUTION)) prototype[field] = value;
    return body().finally(() => {
      for (const field of Object.keys(POLLUTION)) delete prototype[field];
    });
  }

  it('create, update and revoke through the manager store and show only what was given', async () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    const { apiKey: suspended } = await keys.create({ name: 's', status: 'suspended', scopes: ['read'] });
    const { created, renamed, revoked } = await polluted(async () => {
      const made = await keys.create({ name: 'k' });
      const renamed = await keys.update(suspended.id, { name: 'renamed' });
      await keys.update(made.apiKey.id, { status: 'suspended', scopes: ['own'] }); // fields that are polluted: validated as themselves
      return { created: made.apiKey, renamed, revoked: await keys.revoke(made.apiKey.id) };
    });
    for (const view of [created, renamed, revoked]) {
      for (const field of ['ownerId', 'description', 'environment', 'rotatedFromId']) expect(Object.hasOwn(view, field)).toBe(false);
    }
    expect(renamed).toMatchObject({ name: 'renamed', status: 'suspended', scopes: ['read'] });
    expect(revoked.status).toBe('revoked');
  });

  it('decodeStoredRecord reads own fields only', async () => {
    const record = testRecord(T0);
    const decoded = await polluted(async () => decodeStoredRecord({ ...record }));
    expect(Object.hasOwn(decoded, 'ownerId')).toBe(false);
    expect(Object.hasOwn(decoded, 'description')).toBe(false);
  });
});

describe('4. a forged list cursor', () => {
  it.each([
    ['an instant no Date holds', [9007199254740991, 'x']],
    ['an empty id', [T0, '']],
    ['an id with U+0000', [T0, 'a\u0000b']],
    ['an id with a lone surrogate', [T0, 'a\ud800b']],
  ])('holding %s is invalid_argument naming cursor', async (_what, position) => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    await keys.create({ name: 'k' });
    const cursor = Buffer.from(JSON.stringify(position), 'utf8').toString('base64url');
    await expect(keys.list({ cursor })).rejects.toMatchObject({ code: 'invalid_argument', field: 'cursor' });
  });
});
