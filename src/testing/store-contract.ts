/**
 * The store contract suite: the behaviour every {@link ApiKeyStore} must have, as jest tests.
 * Every built-in store runs it, and so should every custom store.
 *
 * It uses the test runner's ambient globals (`describe`, `it`, `expect`), so it needs no import of
 * jest and adds no jest types to keygate's public declarations. Time is always passed in (the
 * suite uses fixed instants), so nothing in it sleeps.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { isKeygateError } from '../errors.js';
import { randomBase62 } from '../key/base62.js';
import type { ApiKeyStore, ConsumeOutcome, ConsumeRequest, StoreRotation } from '../stores/store.js';
import type { ApiKeyRecord, RateLimit } from '../types.js';

/**
 * How {@link describeStoreContract} gets, and gets rid of, the stores it tests.
 *
 * @typeParam S - the store class under test, so `destroy` receives it with its own type.
 */
export interface StoreContractOptions<S extends ApiKeyStore = ApiKeyStore> {
  /**
   * Makes the store one test runs against. Called once for every test, and each call must return
   * an empty store: the suite counts and lists records and expects to see only its own (flush the
   * database, or use a fresh key prefix / schema, here).
   */
  create: () => S | Promise<S>;
  /**
   * Called after every test with the store `create` made for it, whether the test passed or not:
   * close connections, drop tables. Never called for a store `create` failed to make.
   */
  destroy?: (store: S) => void | Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// The few jest globals the suite needs, typed here so the published declarations need no jest
// types. They are looked up when `describeStoreContract` runs, so importing this module outside a
// test runner is harmless.

interface Matchers {
  toBe(expected: unknown): void;
  toEqual(expected: unknown): void;
  toStrictEqual(expected: unknown): void;
  toBeNull(): void;
  toBeUndefined(): void;
  toBeCloseTo(expected: number, digits?: number): void;
  toContain(item: unknown): void;
  toHaveLength(length: number): void;
  not: Matchers;
}

interface TestGlobals {
  describe(name: string, body: () => void): void;
  it(name: string, body: () => Promise<void>): void;
  expect(actual: unknown): Matchers;
}

function testGlobals(): TestGlobals {
  const scope = globalThis as unknown as Partial<TestGlobals>;
  if (typeof scope.describe !== 'function' || typeof scope.it !== 'function' || typeof scope.expect !== 'function') {
    throw new Error(
      'describeStoreContract must be called in a jest test file: it uses the globals describe, it and expect',
    );
  }
  return scope as TestGlobals;
}

// ---------------------------------------------------------------------------------------------
// Fixed instants. Every timestamp and every `now` of the suite derives from these.

const SECOND = 1_000;
const DAY = 86_400_000;
/** 2025-03-14T00:00:00.000Z: a UTC midnight. */
const MIDNIGHT = Date.UTC(2025, 2, 14);
/** 2025-03-14T12:00:00.000Z. */
const NOON = MIDNIGHT + DAY / 2;
/** When the suite's records are created. */
const CREATED = Date.UTC(2025, 0, 2, 3, 4, 5, 678);

/** A valid record with every optional field absent; `overrides` must not carry `undefined`. */
function makeRecord(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return {
    id: randomUUID(),
    keyPrefix: `kg_${randomBase62(16)}`,
    keyHash: `$hmac-sha256$${randomBytes(32).toString('base64url')}`,
    name: 'contract key',
    status: 'active',
    scopes: [],
    allowedIps: [],
    maxUses: null,
    useCount: 0,
    rateLimit: null,
    expiresAt: null,
    createdAt: new Date(CREATED),
    updatedAt: new Date(CREATED),
    lastUsedAt: null,
    revokedAt: null,
    metadata: {},
    tags: [],
    ...overrides,
  };
}

/** A record with every field set, nested metadata and non-trivial arrays. */
function makeFullRecord(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return makeRecord({
    name: 'Full key — ünïcödé 🔑',
    description: 'every field set',
    ownerId: 'user_42',
    tenantId: 'tenant_7',
    environment: 'live',
    status: 'suspended',
    scopes: ['leads:read', 'leads:write', 'billing:*'],
    allowedIps: ['203.0.113.7', '10.0.0.0/8', '2001:db8::/32', '::1'],
    maxUses: 1_000,
    useCount: 7,
    rateLimit: { perSecond: 5, burst: 20, perDay: 10_000 },
    expiresAt: new Date(Date.UTC(2026, 5, 30, 23, 59, 59, 999)),
    createdAt: new Date(CREATED),
    updatedAt: new Date(CREATED + 1),
    lastUsedAt: new Date(CREATED + 2),
    revokedAt: new Date(Date.UTC(2026, 0, 1)),
    rotatedFromId: randomUUID(),
    metadata: {
      plan: 'pro',
      seats: 3,
      ratio: 0.25,
      trial: false,
      cancelledAt: null,
      limits: { burst: [1, 2, 3], nested: { deeper: { label: 'x', empty: {}, none: [] } } },
      quote: 'a "quoted" \\ string',
    },
    tags: ['crm', 'beta', 'crm-export'],
    ...overrides,
  });
}

/** The optional fields of a record, which a store must keep absent when they are absent. */
const OPTIONAL_FIELDS = ['description', 'ownerId', 'tenantId', 'environment', 'rotatedFromId'] as const;

/** (createdAt, id) ascending: the order of `list`. */
function byPosition(a: ApiKeyRecord, b: ApiKeyRecord): number {
  const byTime = a.createdAt.getTime() - b.createdAt.getTime();
  if (byTime !== 0) return byTime;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function ids(records: readonly ApiKeyRecord[]): string[] {
  return records.map((record) => record.id);
}

/**
 * A deep copy of JSON-like data and Dates made with this realm's constructors (`structuredClone`
 * returns Node main-realm objects, which fail jest's strict type checks in a test environment).
 */
function deepCopy<T>(value: T): T {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(deepCopy) as T;
  if (value instanceof Date) return new Date(value.getTime()) as T;
  return Object.fromEntries(Object.entries(value).map(([field, inner]) => [field, deepCopy(inner)])) as T;
}

function hasOwn(value: object, field: string): boolean {
  return Object.prototype.hasOwnProperty.call(value, field);
}

/** The error `action` rejects (or throws) with; fails when it succeeds. */
async function rejectionOf(action: () => Promise<unknown>): Promise<unknown> {
  try {
    await action();
  } catch (error) {
    return error;
  }
  throw new Error('expected the store call to reject, but it resolved');
}

/** A description of an error that compares well in an assertion. */
function errorShape(error: unknown): { keygateError: boolean; code: unknown } {
  return { keygateError: isKeygateError(error), code: (error as { code?: unknown } | null)?.code };
}

/** Polls `condition` until it holds or `timeoutMs` passes (for stores that notify asynchronously). */
async function eventually(condition: () => boolean, timeoutMs = 2_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() >= deadline) return false;
    await delay(5);
  }
  return true;
}

function request(now: number, maxUses: number | null, rateLimit: RateLimit | null): ConsumeRequest {
  return { now, maxUses, rateLimit };
}

/**
 * Declares the store contract suite: a jest `describe` block named `name` whose tests check that a
 * store round-trips records exactly, rejects duplicates, applies patches, lists in keyset order,
 * consumes atomically and all-or-nothing (max uses, UTC-day quota, token bucket), rotates in one
 * step carrying the remaining uses, and notifies subscribers.
 *
 * Call it at the top level of a jest test file. `create` runs before each test and must return an
 * empty store; `destroy`, when given, receives every store `create` made, after its test.
 *
 * @example
 * ```ts
 * // my-store.contract.test.ts
 * import { describeStoreContract } from 'keygate/testing';
 * import { MyStore } from '../src/my-store';
 *
 * describeStoreContract('MyStore', {
 *   create: async () => {
 *     const store = new MyStore({ url: process.env.DATABASE_URL });
 *     await store.reset();
 *     return store;
 *   },
 *   destroy: async (store) => store.close(),
 * });
 * ```
 */
export function describeStoreContract<S extends ApiKeyStore>(name: string, options: StoreContractOptions<S>): void {
  const { describe, it, expect } = testGlobals();

  /** One test, run against a store of its own. */
  function test(title: string, body: (store: S) => Promise<void>): void {
    it(title, async () => {
      const store = await options.create();
      let failure: { error: unknown } | undefined;
      try {
        await body(store);
      } catch (error) {
        failure = { error };
      }
      if (options.destroy) {
        try {
          await options.destroy(store);
        } catch (error) {
          if (!failure) throw error;
        }
      }
      if (failure) throw failure.error;
    });
  }

  /** Inserts and returns the records, in the order given. */
  async function seed(store: S, records: ApiKeyRecord[]): Promise<ApiKeyRecord[]> {
    for (const record of records) await store.insert(record);
    return records;
  }

  /** Consumes `count` times at `now` and returns the outcomes, in order. */
  async function consumeTimes(
    store: S,
    id: string,
    count: number,
    consumeRequest: ConsumeRequest,
  ): Promise<(ConsumeOutcome | null)[]> {
    const outcomes: (ConsumeOutcome | null)[] = [];
    for (let i = 0; i < count; i++) outcomes.push(await store.consume(id, consumeRequest));
    return outcomes;
  }

  /** Fires `count` consumes at once and splits the outcomes. */
  async function consumeConcurrently(store: S, id: string, count: number, consumeRequest: ConsumeRequest) {
    const outcomes = await Promise.all(Array.from({ length: count }, () => store.consume(id, consumeRequest)));
    const admitted = outcomes.filter((outcome): outcome is ConsumeOutcome => outcome?.admitted === true);
    const refused = outcomes.filter((outcome) => outcome?.admitted !== true);
    return { outcomes, admitted, refused };
  }

  function ascending(values: number[]): number[] {
    return [...values].sort((a, b) => a - b);
  }

  function range(from: number, to: number): number[] {
    return Array.from({ length: to - from + 1 }, (_, i) => from + i);
  }

  describe(name, () => {
    // -------------------------------------------------------------------------------------------
    describe('insert and find', () => {
      test('round-trips a record with every field set, by id and by keyPrefix', async (store) => {
        const record = makeFullRecord();
        await store.insert(record);

        const byId = await store.findById(record.id);
        const byPrefix = await store.findByKeyPrefix(record.keyPrefix);
        expect(byId).toStrictEqual(record);
        expect(byPrefix).toStrictEqual(record);
        // toStrictEqual also checks types: Dates come back as Dates, not strings or numbers.
        expect(byId?.createdAt instanceof Date).toBe(true);
        expect(byId?.expiresAt?.getTime()).toBe(record.expiresAt?.getTime());
        expect(byId?.lastUsedAt?.getTime()).toBe(CREATED + 2);
      });

      test('round-trips a minimal record, keeping absent optional fields absent and nulls null', async (store) => {
        const record = makeRecord();
        await store.insert(record);

        for (const found of [await store.findById(record.id), await store.findByKeyPrefix(record.keyPrefix)]) {
          expect(found).toStrictEqual(record);
          if (!found) continue;
          for (const field of OPTIONAL_FIELDS) expect({ field, present: hasOwn(found, field) }).toEqual({ field, present: false });
          expect(found.rateLimit).toBeNull();
          expect(found.maxUses).toBeNull();
          expect(found.expiresAt).toBeNull();
          expect(found.lastUsedAt).toBeNull();
          expect(found.revokedAt).toBeNull();
          expect(found.scopes).toStrictEqual([]);
          expect(found.allowedIps).toStrictEqual([]);
          expect(found.tags).toStrictEqual([]);
          expect(found.metadata).toStrictEqual({});
        }
      });

      test('round-trips partial rate limits exactly, without adding the missing fields', async (store) => {
        const limits: RateLimit[] = [{ perDay: 5 }, { perSecond: 2 }, { perSecond: 3, burst: 9 }, {}];
        const records = await seed(
          store,
          limits.map((rateLimit) => makeRecord({ rateLimit })),
        );
        for (const record of records) {
          const found = await store.findById(record.id);
          expect(found?.rateLimit).toStrictEqual(record.rateLimit);
        }
      });

      test('returns null for an unknown id or keyPrefix', async (store) => {
        expect(await store.findById(randomUUID())).toBeNull();
        expect(await store.findByKeyPrefix(`kg_${randomBase62(16)}`)).toBeNull();

        await store.insert(makeRecord());
        expect(await store.findById(randomUUID())).toBeNull();
        expect(await store.findByKeyPrefix(`kg_${randomBase62(16)}`)).toBeNull();
      });

      test('finds a keyPrefix only by exact, case-sensitive match', async (store) => {
        const record = makeRecord({ keyPrefix: `kg_${randomBase62(8)}aZ${randomBase62(6)}` });
        await store.insert(record);

        expect(await store.findByKeyPrefix(record.keyPrefix.toUpperCase())).toBeNull();
        expect(await store.findByKeyPrefix(record.keyPrefix.toLowerCase())).toBeNull();
        expect(await store.findByKeyPrefix(record.keyPrefix.slice(0, -1))).toBeNull();
        expect(await store.findByKeyPrefix(`${record.keyPrefix}0`)).toBeNull();
        expect(await store.findByKeyPrefix('kg_%')).toBeNull();
        expect((await store.findByKeyPrefix(record.keyPrefix))?.id).toBe(record.id);
      });

      test('hands out copies: mutating a returned or inserted record does not change the store', async (store) => {
        const record = makeFullRecord();
        const original = deepCopy(record);
        await store.insert(record);

        // Mutating the object given to insert after the fact.
        record.name = 'mutated';
        record.scopes.push('admin');
        (record.metadata.limits as { burst: number[] }).burst.push(99);
        record.createdAt.setTime(0);
        expect(await store.findById(original.id)).toStrictEqual(original);

        // Mutating what find, list and update returned.
        const found = await store.findById(original.id);
        const [listed] = await store.list({ limit: 10 });
        const updated = await store.update(original.id, { updatedAt: original.updatedAt });
        for (const copy of [found, listed, updated, await store.findByKeyPrefix(original.keyPrefix)]) {
          if (!copy) throw new Error('the record vanished');
          copy.name = 'mutated';
          copy.tags.push('mutated');
          copy.allowedIps.length = 0;
          copy.metadata.plan = 'free';
          (copy.metadata.limits as { nested: { deeper: { label: string } } }).nested.deeper.label = 'mutated';
          copy.rateLimit = { perSecond: 1 };
          copy.expiresAt?.setTime(0);
          copy.createdAt.setTime(0);
        }
        expect(await store.findById(original.id)).toStrictEqual(original);
        expect(await store.findByKeyPrefix(original.keyPrefix)).toStrictEqual(original);
      });

      test('rejects a duplicate id with already_exists and changes nothing', async (store) => {
        const first = makeFullRecord();
        await store.insert(first);
        const duplicate = makeRecord({ id: first.id, name: 'duplicate' });

        const error = await rejectionOf(() => store.insert(duplicate));
        expect(errorShape(error)).toEqual({ keygateError: true, code: 'already_exists' });
        expect(await store.findById(first.id)).toStrictEqual(first);
        expect(await store.findByKeyPrefix(first.keyPrefix)).toStrictEqual(first);
        expect(await store.findByKeyPrefix(duplicate.keyPrefix)).toBeNull();
        expect(ids(await store.list({ limit: 10 }))).toEqual([first.id]);
      });

      test('rejects a duplicate keyPrefix with already_exists and changes nothing', async (store) => {
        const first = makeFullRecord();
        await store.insert(first);
        const duplicate = makeRecord({ keyPrefix: first.keyPrefix, name: 'duplicate' });

        const error = await rejectionOf(() => store.insert(duplicate));
        expect(errorShape(error)).toEqual({ keygateError: true, code: 'already_exists' });
        expect(await store.findById(duplicate.id)).toBeNull();
        expect(await store.findById(first.id)).toStrictEqual(first);
        expect(await store.findByKeyPrefix(first.keyPrefix)).toStrictEqual(first);
        expect(ids(await store.list({ limit: 10 }))).toEqual([first.id]);
      });

      test('starts counting uses from the useCount a record was inserted with', async (store) => {
        const key = makeRecord({ useCount: 3 });
        await store.insert(key);
        const outcomes = await consumeTimes(store, key.id, 3, request(NOON, 5, null));
        expect(outcomes).toEqual([
          { admitted: true, useCount: 4 },
          { admitted: true, useCount: 5 },
          { admitted: false, refusal: 'usage_exhausted', useCount: 5 },
        ]);
      });
    });

    // -------------------------------------------------------------------------------------------
    describe('update', () => {
      test('applies only the fields given (undefined leaves a field alone) and sets updatedAt', async (store) => {
        const record = makeFullRecord();
        await store.insert(record);
        const updatedAt = new Date(NOON);

        const updated = await store.update(record.id, {
          name: 'renamed',
          description: undefined,
          maxUses: undefined,
          rateLimit: undefined,
          updatedAt,
        });
        const expected = { ...record, name: 'renamed', updatedAt };
        expect(updated).toStrictEqual(expected);
        expect(await store.findById(record.id)).toStrictEqual(expected);
        expect(await store.findByKeyPrefix(record.keyPrefix)).toStrictEqual(expected);
      });

      test('replaces every patchable field, metadata and arrays as a whole', async (store) => {
        const record = makeFullRecord({ status: 'active', revokedAt: null });
        await store.insert(record);
        const patch = {
          name: 'patched',
          description: 'new description',
          scopes: ['only:this'],
          allowedIps: ['198.51.100.0/24'],
          maxUses: 5,
          rateLimit: { perDay: 50 },
          expiresAt: new Date(NOON + DAY),
          metadata: { replaced: { entirely: true } },
          tags: [],
          status: 'revoked' as const,
          revokedAt: new Date(NOON),
          updatedAt: new Date(NOON),
        };

        const updated = await store.update(record.id, deepCopy(patch));
        const expected = { ...record, ...patch };
        expect(updated).toStrictEqual(expected);
        expect(await store.findById(record.id)).toStrictEqual(expected);
      });

      test('sets a description on a record that had none', async (store) => {
        const record = makeRecord();
        await store.insert(record);
        const updated = await store.update(record.id, { description: 'now described', updatedAt: new Date(NOON) });
        expect(updated).toStrictEqual({ ...record, description: 'now described', updatedAt: new Date(NOON) });
      });

      test('clears nullable fields with null and removes the description', async (store) => {
        const record = makeFullRecord();
        await store.insert(record);
        const updatedAt = new Date(NOON);

        const updated = await store.update(record.id, {
          description: null,
          maxUses: null,
          rateLimit: null,
          expiresAt: null,
          revokedAt: null,
          updatedAt,
        });
        const { description: _removed, ...rest } = record;
        const expected = { ...rest, maxUses: null, rateLimit: null, expiresAt: null, revokedAt: null, updatedAt };
        expect(updated).toStrictEqual(expected);
        const found = await store.findById(record.id);
        expect(found).toStrictEqual(expected);
        expect(found ? hasOwn(found, 'description') : 'missing').toBe(false);
      });

      test('returns null for an unknown id and creates nothing', async (store) => {
        const existing = makeRecord();
        await store.insert(existing);
        const unknown = randomUUID();
        expect(await store.update(unknown, { name: 'ghost', updatedAt: new Date(NOON) })).toBeNull();
        expect(await store.findById(unknown)).toBeNull();
        expect(await store.list({ limit: 10 })).toStrictEqual([existing]);
      });

      test('leaves the usage counters alone', async (store) => {
        const record = makeRecord({ maxUses: 10, rateLimit: { perDay: 3 } });
        await store.insert(record);
        const limits = request(NOON, 10, { perDay: 3 });
        await consumeTimes(store, record.id, 3, limits);

        const updated = await store.update(record.id, { name: 'renamed', rateLimit: { perDay: 3 }, updatedAt: new Date(NOON + 1) });
        expect(updated?.useCount).toBe(3);
        expect(updated?.lastUsedAt).toStrictEqual(new Date(NOON));
        // The day's count survived the update: the quota is still used up ...
        expect(await store.consume(record.id, request(NOON + 2, 10, { perDay: 3 }))).toEqual({
          admitted: false,
          refusal: 'quota_exceeded',
          useCount: 3,
          dayCount: 3,
        });
        // ... and the lifetime count goes on from 3.
        expect(await store.consume(record.id, request(NOON + 3, 10, null))).toEqual({ admitted: true, useCount: 4 });
      });
    });

    // -------------------------------------------------------------------------------------------
    describe('list', () => {
      /** Eleven records over three owners, two tenants, all statuses, with tied createdAt. */
      function listFixture(): ApiKeyRecord[] {
        const at = (offset: number) => new Date(CREATED + offset * SECOND);
        return [
          makeRecord({ ownerId: 'alice', tenantId: 't1', status: 'active', createdAt: at(3) }),
          makeRecord({ ownerId: 'alice', tenantId: 't2', status: 'suspended', createdAt: at(1) }),
          makeRecord({ ownerId: 'bob', tenantId: 't1', status: 'revoked', createdAt: at(1) }),
          makeRecord({ ownerId: 'bob', tenantId: 't1', status: 'active', createdAt: at(1) }),
          makeRecord({ tenantId: 't2', status: 'active', createdAt: at(2) }),
          makeRecord({ ownerId: 'alice', tenantId: 't1', status: 'active', createdAt: at(0) }),
          makeRecord({ ownerId: 'carol', status: 'active', createdAt: at(1) }),
          makeRecord({ ownerId: 'alice', tenantId: 't1', status: 'revoked', createdAt: at(2) }),
          makeRecord({ ownerId: 'alice', tenantId: 't1', status: 'active', createdAt: at(1) }),
          makeRecord({ ownerId: 'bob', tenantId: 't2', status: 'active', createdAt: at(3) }),
          makeRecord({ ownerId: 'alice', tenantId: 't1', status: 'suspended', createdAt: at(1) }),
        ];
      }

      test('returns every record ordered by (createdAt, id) ascending, whatever the insertion order', async (store) => {
        const records = await seed(store, listFixture());
        const listed = await store.list({ limit: 100 });
        expect(listed).toStrictEqual([...records].sort(byPosition));
      });

      test('filters by ownerId, by tenantId and by status', async (store) => {
        const records = await seed(store, listFixture());
        const expected = (keep: (record: ApiKeyRecord) => boolean) => ids(records.filter(keep).sort(byPosition));

        expect(ids(await store.list({ ownerId: 'alice', limit: 100 }))).toEqual(expected((r) => r.ownerId === 'alice'));
        expect(ids(await store.list({ ownerId: 'carol', limit: 100 }))).toEqual(expected((r) => r.ownerId === 'carol'));
        expect(ids(await store.list({ tenantId: 't2', limit: 100 }))).toEqual(expected((r) => r.tenantId === 't2'));
        expect(ids(await store.list({ status: 'active', limit: 100 }))).toEqual(expected((r) => r.status === 'active'));
        expect(ids(await store.list({ status: 'suspended', limit: 100 }))).toEqual(expected((r) => r.status === 'suspended'));
        expect(ids(await store.list({ status: 'revoked', limit: 100 }))).toEqual(expected((r) => r.status === 'revoked'));
        expect(await store.list({ ownerId: 'nobody', limit: 100 })).toStrictEqual([]);
      });

      test('combines filters', async (store) => {
        const records = await seed(store, listFixture());
        const expected = (keep: (record: ApiKeyRecord) => boolean) => ids(records.filter(keep).sort(byPosition));

        expect(ids(await store.list({ ownerId: 'alice', tenantId: 't1', limit: 100 }))).toEqual(
          expected((r) => r.ownerId === 'alice' && r.tenantId === 't1'),
        );
        expect(ids(await store.list({ ownerId: 'alice', tenantId: 't1', status: 'active', limit: 100 }))).toEqual(
          expected((r) => r.ownerId === 'alice' && r.tenantId === 't1' && r.status === 'active'),
        );
        expect(ids(await store.list({ tenantId: 't1', status: 'revoked', limit: 100 }))).toEqual(
          expected((r) => r.tenantId === 't1' && r.status === 'revoked'),
        );
        expect(await store.list({ ownerId: 'carol', tenantId: 't1', limit: 100 })).toStrictEqual([]);
      });

      test('returns at most limit records, the first ones in order', async (store) => {
        const sorted = (await seed(store, listFixture())).sort(byPosition);
        expect(ids(await store.list({ limit: 1 }))).toEqual(ids(sorted.slice(0, 1)));
        expect(ids(await store.list({ limit: 4 }))).toEqual(ids(sorted.slice(0, 4)));
        expect(ids(await store.list({ limit: sorted.length }))).toEqual(ids(sorted));
        expect(ids(await store.list({ limit: sorted.length + 5 }))).toEqual(ids(sorted));
        const alice = sorted.filter((r) => r.ownerId === 'alice');
        expect(ids(await store.list({ ownerId: 'alice', limit: 2 }))).toEqual(ids(alice.slice(0, 2)));
      });

      test('pages with after, visiting every record exactly once even among identical createdAt', async (store) => {
        const sorted = (await seed(store, listFixture())).sort(byPosition);
        for (const pageSize of [1, 2, 3, 4, sorted.length]) {
          const visited: string[] = [];
          let after: { createdAt: Date; id: string } | undefined;
          for (let pages = 0; pages <= sorted.length + 1; pages++) {
            const page = await store.list(after ? { after, limit: pageSize } : { limit: pageSize });
            expect(page.length <= pageSize).toBe(true);
            visited.push(...ids(page));
            const last = page[page.length - 1];
            if (!last || page.length < pageSize) break;
            after = { createdAt: last.createdAt, id: last.id };
          }
          expect({ pageSize, visited }).toEqual({ pageSize, visited: ids(sorted) });
        }
      });

      test('pages with after and filters together', async (store) => {
        const records = await seed(store, listFixture());
        const expected = ids(records.filter((r) => r.tenantId === 't1').sort(byPosition));
        const visited: string[] = [];
        let after: { createdAt: Date; id: string } | undefined;
        for (let pages = 0; pages <= records.length; pages++) {
          const page = await store.list(after ? { tenantId: 't1', after, limit: 2 } : { tenantId: 't1', limit: 2 });
          visited.push(...ids(page));
          const last = page[page.length - 1];
          if (!last || page.length < 2) break;
          after = { createdAt: last.createdAt, id: last.id };
        }
        expect(visited).toEqual(expected);
      });

      test('treats after as a position that need not be a stored record', async (store) => {
        const sorted = (await seed(store, listFixture())).sort(byPosition);
        const tie = new Date(CREATED + SECOND);
        const lowest = { createdAt: tie, id: '00000000-0000-0000-0000-000000000000' };
        const highest = { createdAt: tie, id: 'ffffffff-ffff-ffff-ffff-ffffffffffff' };

        expect(ids(await store.list({ after: lowest, limit: 100 }))).toEqual(
          ids(sorted.filter((r) => r.createdAt.getTime() >= tie.getTime())),
        );
        expect(ids(await store.list({ after: highest, limit: 100 }))).toEqual(
          ids(sorted.filter((r) => r.createdAt.getTime() > tie.getTime())),
        );
        expect(await store.list({ after: { createdAt: new Date(NOON), id: lowest.id }, limit: 100 })).toStrictEqual([]);
      });

      test('neither skips nor repeats records when others are inserted between page fetches', async (store) => {
        const original = (await seed(store, listFixture())).sort(byPosition);
        const first = await store.list({ limit: 4 });
        expect(ids(first)).toEqual(ids(original.slice(0, 4)));
        const cursor = first[first.length - 1];
        if (!cursor) throw new Error('the first page is empty');

        // Records before the cursor, tied with it, and after everything.
        const inserted = await seed(store, [
          makeRecord({ createdAt: new Date(CREATED - SECOND) }),
          makeRecord({ createdAt: new Date(cursor.createdAt.getTime()) }),
          makeRecord({ createdAt: new Date(cursor.createdAt.getTime()) }),
          makeRecord({ createdAt: new Date(CREATED + 10 * SECOND) }),
        ]);

        const visited = ids(first);
        let after = { createdAt: cursor.createdAt, id: cursor.id };
        for (let pages = 0; pages <= original.length + inserted.length; pages++) {
          const page = await store.list({ after, limit: 4 });
          visited.push(...ids(page));
          const last = page[page.length - 1];
          if (!last || page.length < 4) break;
          after = { createdAt: last.createdAt, id: last.id };
          // Another insert in the middle of the walk, after the current cursor.
          if (pages === 0) inserted.push(...(await seed(store, [makeRecord({ createdAt: new Date(CREATED + 5 * SECOND) })])));
        }

        const afterCursor = [...original, ...inserted].filter((r) => byPosition(r, cursor) > 0).sort(byPosition);
        expect(visited).toEqual([...ids(first), ...ids(afterCursor)]);
        expect(new Set(visited).size).toBe(visited.length);
        for (const record of original) expect(visited.filter((id) => id === record.id)).toHaveLength(1);
      });
    });

    // -------------------------------------------------------------------------------------------
    describe('consume', () => {
      test('returns null for an unknown id', async (store) => {
        await store.insert(makeRecord());
        expect(await store.consume(randomUUID(), request(NOON, null, null))).toBeNull();
        expect(await store.consume(randomUUID(), request(NOON, 5, { perSecond: 1, perDay: 1 }))).toBeNull();
      });

      test('with no limits admits, counts useCount and sets lastUsedAt to now', async (store) => {
        const record = makeRecord();
        await store.insert(record);

        const first = await store.consume(record.id, request(NOON, null, null));
        expect(first).toEqual({ admitted: true, useCount: 1 });
        expect(first?.dayCount).toBeUndefined();
        expect(first?.tokens).toBeUndefined();
        expect(await store.consume(record.id, request(NOON + 1_234, null, null))).toEqual({ admitted: true, useCount: 2 });

        const found = await store.findById(record.id);
        expect(found).toStrictEqual({ ...record, useCount: 2, lastUsedAt: new Date(NOON + 1_234) });
      });

      test('admits exactly maxUses requests, then refuses with usage_exhausted', async (store) => {
        const record = makeRecord({ maxUses: 3 });
        await store.insert(record);

        const outcomes = await consumeTimes(store, record.id, 5, request(NOON, 3, null));
        expect(outcomes).toEqual([
          { admitted: true, useCount: 1 },
          { admitted: true, useCount: 2 },
          { admitted: true, useCount: 3 },
          { admitted: false, refusal: 'usage_exhausted', useCount: 3 },
          { admitted: false, refusal: 'usage_exhausted', useCount: 3 },
        ]);
        expect(await store.consume(record.id, request(NOON + DAY, 3, null))).toEqual({
          admitted: false,
          refusal: 'usage_exhausted',
          useCount: 3,
        });
        const found = await store.findById(record.id);
        expect(found?.useCount).toBe(3);
        expect(found?.lastUsedAt).toStrictEqual(new Date(NOON));
      });

      test('refuses at once when maxUses is 0', async (store) => {
        const record = makeRecord({ maxUses: 0 });
        await store.insert(record);
        expect(await store.consume(record.id, request(NOON, 0, null))).toEqual({
          admitted: false,
          refusal: 'usage_exhausted',
          useCount: 0,
        });
        expect(await store.findById(record.id)).toStrictEqual(record);
      });

      test('admits perDay requests per UTC day, then refuses with quota_exceeded', async (store) => {
        const record = makeRecord({ rateLimit: { perDay: 3 } });
        await store.insert(record);
        const limits: RateLimit = { perDay: 3 };

        const outcomes = [
          await store.consume(record.id, request(MIDNIGHT, null, limits)),
          await store.consume(record.id, request(NOON, null, limits)),
          await store.consume(record.id, request(NOON + 1, null, limits)),
          await store.consume(record.id, request(NOON + 2, null, limits)),
        ];
        expect(outcomes).toEqual([
          { admitted: true, useCount: 1, dayCount: 1 },
          { admitted: true, useCount: 2, dayCount: 2 },
          { admitted: true, useCount: 3, dayCount: 3 },
          { admitted: false, refusal: 'quota_exceeded', useCount: 3, dayCount: 3 },
        ]);
        expect(outcomes[0]?.tokens).toBeUndefined();
        const found = await store.findById(record.id);
        expect(found?.useCount).toBe(3);
        expect(found?.lastUsedAt).toStrictEqual(new Date(NOON + 1));
      });

      test('resets the daily quota at 00:00:00.000Z, not a millisecond earlier', async (store) => {
        const record = makeRecord({ rateLimit: { perDay: 2 } });
        await store.insert(record);
        const limits: RateLimit = { perDay: 2 };
        await consumeTimes(store, record.id, 2, request(NOON, null, limits));

        expect(await store.consume(record.id, request(MIDNIGHT + DAY - 1, null, limits))).toEqual({
          admitted: false,
          refusal: 'quota_exceeded',
          useCount: 2,
          dayCount: 2,
        });
        expect(await store.consume(record.id, request(MIDNIGHT + DAY, null, limits))).toEqual({
          admitted: true,
          useCount: 3,
          dayCount: 1,
        });
        expect(await store.consume(record.id, request(MIDNIGHT + DAY + 1, null, limits))).toEqual({
          admitted: true,
          useCount: 4,
          dayCount: 2,
        });
        expect(await store.consume(record.id, request(MIDNIGHT + 2 * DAY - 1, null, limits))).toEqual({
          admitted: false,
          refusal: 'quota_exceeded',
          useCount: 4,
          dayCount: 2,
        });
        // A day with no traffic in between starts from zero too.
        expect(await store.consume(record.id, request(MIDNIGHT + 5 * DAY + 7, null, limits))).toEqual({
          admitted: true,
          useCount: 5,
          dayCount: 1,
        });
      });

      test('token bucket: capacity is perSecond when no burst is given, and tokens are reported', async (store) => {
        const record = makeRecord({ rateLimit: { perSecond: 3 } });
        await store.insert(record);
        const limits: RateLimit = { perSecond: 3 };

        const outcomes = await consumeTimes(store, record.id, 4, request(NOON, null, limits));
        expect(outcomes.map((o) => o?.admitted)).toEqual([true, true, true, false]);
        expect(outcomes.map((o) => o?.tokens)).toEqual([2, 1, 0, 0]);
        expect(outcomes[3]).toEqual({ admitted: false, refusal: 'rate_limited', useCount: 3, tokens: 0 });
        expect(outcomes[0]?.dayCount).toBeUndefined();
      });

      test('token bucket: capacity is burst, refilled at perSecond per second, never above capacity', async (store) => {
        const record = makeRecord({ rateLimit: { perSecond: 1, burst: 5 } });
        await store.insert(record);
        const limits: RateLimit = { perSecond: 1, burst: 5 };

        const burst = await consumeTimes(store, record.id, 6, request(NOON, null, limits));
        expect(burst.map((o) => o?.tokens)).toEqual([4, 3, 2, 1, 0, 0]);
        expect(burst[5]?.refusal).toBe('rate_limited');

        // One second refills one token.
        expect(await store.consume(record.id, request(NOON + SECOND, null, limits))).toEqual({
          admitted: true,
          useCount: 6,
          tokens: 0,
        });
        // A long pause refills to capacity (5), not beyond.
        const afterPause = await consumeTimes(store, record.id, 6, request(NOON + 60 * SECOND, null, limits));
        expect(afterPause.map((o) => o?.admitted)).toEqual([true, true, true, true, true, false]);
        expect(afterPause.map((o) => o?.tokens)).toEqual([4, 3, 2, 1, 0, 0]);
      });

      test('token bucket: a burst below perSecond caps the bucket', async (store) => {
        const record = makeRecord({ rateLimit: { perSecond: 10, burst: 1 } });
        await store.insert(record);
        const limits: RateLimit = { perSecond: 10, burst: 1 };

        expect((await consumeTimes(store, record.id, 2, request(NOON, null, limits))).map((o) => o?.admitted)).toEqual([
          true,
          false,
        ]);
        // 10 per second is one token per 100 ms; a long pause still gives only one.
        expect((await consumeTimes(store, record.id, 2, request(NOON + 100, null, limits))).map((o) => o?.admitted)).toEqual([
          true,
          false,
        ]);
        expect((await consumeTimes(store, record.id, 2, request(NOON + 9_000, null, limits))).map((o) => o?.admitted)).toEqual([
          true,
          false,
        ]);
      });

      test('token bucket: refills fractionally, to the millisecond', async (store) => {
        const record = makeRecord({ rateLimit: { perSecond: 10, burst: 2 } });
        await store.insert(record);
        const limits: RateLimit = { perSecond: 10, burst: 2 };
        await consumeTimes(store, record.id, 2, request(NOON, null, limits));

        // 50 ms at 10/s is half a token: refused, and the half token is reported.
        const half = await store.consume(record.id, request(NOON + 50, null, limits));
        expect(half?.admitted).toBe(false);
        expect(half?.refusal).toBe('rate_limited');
        expect(half?.tokens).toBeCloseTo(0.5, 9);
        // 99 ms: 0.99 of a token, still refused (a refusal takes nothing and keeps the refill).
        const almost = await store.consume(record.id, request(NOON + 99, null, limits));
        expect(almost?.admitted).toBe(false);
        expect(almost?.tokens).toBeCloseTo(0.99, 9);
        // 100 ms: exactly one token.
        const one = await store.consume(record.id, request(NOON + 100, null, limits));
        expect(one?.admitted).toBe(true);
        expect(one?.tokens).toBeCloseTo(0, 9);
        // 130 ms later: 0.3 tokens, refused; 250 ms after the last admission: 1.5 tokens, admitted with 0.5 left.
        const partial = await store.consume(record.id, request(NOON + 130, null, limits));
        expect(partial?.admitted).toBe(false);
        expect(partial?.tokens).toBeCloseTo(0.3, 9);
        const more = await store.consume(record.id, request(NOON + 250, null, limits));
        expect(more?.admitted).toBe(true);
        expect(more?.tokens).toBeCloseTo(0.5, 9);
        const found = await store.findById(record.id);
        expect(found?.useCount).toBe(4);
        expect(found?.lastUsedAt).toStrictEqual(new Date(NOON + 250));
      });

      test('a key never used before starts with a full bucket and an empty day', async (store) => {
        const record = makeRecord({ rateLimit: { perSecond: 2, burst: 4, perDay: 100 } });
        await store.insert(record);
        expect(await store.consume(record.id, request(NOON, null, { perSecond: 2, burst: 4, perDay: 100 }))).toEqual({
          admitted: true,
          useCount: 1,
          dayCount: 1,
          tokens: 3,
        });
      });

      test('reports dayCount only with perDay and tokens only with perSecond', async (store) => {
        const cases: { rateLimit: RateLimit | null; dayCount: boolean; tokens: boolean }[] = [
          { rateLimit: null, dayCount: false, tokens: false },
          { rateLimit: {}, dayCount: false, tokens: false },
          { rateLimit: { perDay: 10 }, dayCount: true, tokens: false },
          { rateLimit: { perSecond: 10 }, dayCount: false, tokens: true },
          { rateLimit: { perSecond: 10, burst: 20 }, dayCount: false, tokens: true },
          { rateLimit: { perSecond: 10, perDay: 10 }, dayCount: true, tokens: true },
        ];
        for (const { rateLimit, dayCount, tokens } of cases) {
          const record = makeRecord({ rateLimit });
          await store.insert(record);
          for (const maxUses of [null, 0]) {
            // maxUses 0 gives the refused shape of the outcome, null the admitted one.
            const outcome = await store.consume(record.id, request(NOON, maxUses, rateLimit));
            expect({ rateLimit, maxUses, dayCount: outcome?.dayCount !== undefined, tokens: outcome?.tokens !== undefined }).toEqual({
              rateLimit,
              maxUses,
              dayCount,
              tokens,
            });
          }
        }
      });

      test('all or nothing: an empty bucket counts neither the use nor the day', async (store) => {
        const limits: RateLimit = { perSecond: 1, perDay: 10 };
        const record = makeRecord({ maxUses: 10, rateLimit: limits });
        await store.insert(record);

        expect(await store.consume(record.id, request(NOON, 10, limits))).toEqual({
          admitted: true,
          useCount: 1,
          dayCount: 1,
          tokens: 0,
        });
        for (let i = 0; i < 3; i++) {
          expect(await store.consume(record.id, request(NOON + 500, 10, limits))).toEqual({
            admitted: false,
            refusal: 'rate_limited',
            useCount: 1,
            dayCount: 1,
            tokens: 0.5,
          });
        }
        const found = await store.findById(record.id);
        expect(found?.useCount).toBe(1);
        expect(found?.lastUsedAt).toStrictEqual(new Date(NOON));
        expect(await store.consume(record.id, request(NOON + SECOND, 10, limits))).toEqual({
          admitted: true,
          useCount: 2,
          dayCount: 2,
          tokens: 0,
        });
      });

      test('all or nothing: a used-up quota takes no tokens from the bucket', async (store) => {
        const record = makeRecord({ rateLimit: { perSecond: 1, burst: 3, perDay: 2 } });
        await store.insert(record);
        const limits: RateLimit = { perSecond: 1, burst: 3, perDay: 2 };

        await consumeTimes(store, record.id, 2, request(NOON, null, limits));
        for (let i = 0; i < 5; i++) {
          expect(await store.consume(record.id, request(NOON, null, limits))).toEqual({
            admitted: false,
            refusal: 'quota_exceeded',
            useCount: 2,
            dayCount: 2,
            tokens: 1,
          });
        }
        // Raising the quota (as an update would) shows the bucket still holds its last token.
        const raised: RateLimit = { perSecond: 1, burst: 3, perDay: 5 };
        expect(await store.consume(record.id, request(NOON, null, raised))).toEqual({
          admitted: true,
          useCount: 3,
          dayCount: 3,
          tokens: 0,
        });
      });

      test('all or nothing: exhausted uses take no quota and no tokens', async (store) => {
        const limits: RateLimit = { perSecond: 1, burst: 2, perDay: 5 };
        const record = makeRecord({ maxUses: 1, rateLimit: limits });
        await store.insert(record);

        expect(await store.consume(record.id, request(NOON, 1, limits))).toEqual({
          admitted: true,
          useCount: 1,
          dayCount: 1,
          tokens: 1,
        });
        for (let i = 0; i < 4; i++) {
          expect(await store.consume(record.id, request(NOON, 1, limits))).toEqual({
            admitted: false,
            refusal: 'usage_exhausted',
            useCount: 1,
            dayCount: 1,
            tokens: 1,
          });
        }
        // With more uses allowed, the day and the bucket are where the admitted request left them.
        expect(await store.consume(record.id, request(NOON, 2, limits))).toEqual({
          admitted: true,
          useCount: 2,
          dayCount: 2,
          tokens: 0,
        });
      });

      test('reports the most lasting refusal: usage_exhausted, then quota_exceeded, then rate_limited', async (store) => {
        const limits: RateLimit = { perSecond: 1, burst: 1, perDay: 1 };
        const record = makeRecord({ maxUses: 1, rateLimit: limits });
        await store.insert(record);
        expect((await store.consume(record.id, request(NOON, 1, limits)))?.admitted).toBe(true);

        // All three refuse.
        expect(await store.consume(record.id, request(NOON, 1, limits))).toEqual({
          admitted: false,
          refusal: 'usage_exhausted',
          useCount: 1,
          dayCount: 1,
          tokens: 0,
        });
        // Uses and bucket refuse.
        expect((await store.consume(record.id, request(NOON, 1, { perSecond: 1, burst: 1 })))?.refusal).toBe('usage_exhausted');
        // Uses and quota refuse.
        expect((await store.consume(record.id, request(NOON, 1, { perDay: 1 })))?.refusal).toBe('usage_exhausted');
        // Quota and bucket refuse.
        expect((await store.consume(record.id, request(NOON, null, limits)))?.refusal).toBe('quota_exceeded');
        expect((await store.consume(record.id, request(NOON, 2, limits)))?.refusal).toBe('quota_exceeded');
        // Only the bucket refuses.
        expect(await store.consume(record.id, request(NOON, 2, { perSecond: 1, burst: 1, perDay: 2 }))).toEqual({
          admitted: false,
          refusal: 'rate_limited',
          useCount: 1,
          dayCount: 1,
          tokens: 0,
        });
        expect((await store.findById(record.id))?.useCount).toBe(1);
      });

      test('a caller whose clock lags the last admitted use gets no refill twice', async (store) => {
        const limits: RateLimit = { perSecond: 1, burst: 2 };
        const record = makeRecord({ rateLimit: limits });
        await store.insert(record);

        expect((await store.consume(record.id, request(NOON, null, limits)))?.tokens).toBe(1);
        // Another process, its clock one second behind, takes the last token.
        expect(await store.consume(record.id, request(NOON - SECOND, null, limits))).toEqual({
          admitted: true,
          useCount: 2,
          tokens: 0,
        });
        // Back at NOON no time has passed since the bucket was last at 1: it is empty.
        expect(await store.consume(record.id, request(NOON, null, limits))).toEqual({
          admitted: false,
          refusal: 'rate_limited',
          useCount: 2,
          tokens: 0,
        });
        expect((await store.consume(record.id, request(NOON + SECOND, null, limits)))?.admitted).toBe(true);
      });

      test('a caller whose clock lags past midnight does not reset the new day', async (store) => {
        const limits: RateLimit = { perDay: 2 };
        const record = makeRecord({ rateLimit: limits });
        await store.insert(record);
        const nextMidnight = MIDNIGHT + DAY;

        expect(await store.consume(record.id, request(nextMidnight + 10, null, limits))).toEqual({
          admitted: true,
          useCount: 1,
          dayCount: 1,
        });
        // A process whose clock still reads the previous day is counted in the new one.
        expect(await store.consume(record.id, request(nextMidnight - 10, null, limits))).toEqual({
          admitted: true,
          useCount: 2,
          dayCount: 2,
        });
        expect(await store.consume(record.id, request(nextMidnight - 5, null, limits))).toEqual({
          admitted: false,
          refusal: 'quota_exceeded',
          useCount: 2,
          dayCount: 2,
        });
        expect(await store.consume(record.id, request(nextMidnight + 20, null, limits))).toEqual({
          admitted: false,
          refusal: 'quota_exceeded',
          useCount: 2,
          dayCount: 2,
        });
      });

      test('keeps the counters of each key separate', async (store) => {
        const limits: RateLimit = { perSecond: 1, perDay: 1 };
        const [a, b] = await seed(store, [makeRecord({ maxUses: 1, rateLimit: limits }), makeRecord({ maxUses: 1, rateLimit: limits })]);
        if (!a || !b) throw new Error('seed failed');
        expect((await store.consume(a.id, request(NOON, 1, limits)))?.admitted).toBe(true);
        expect(await store.consume(b.id, request(NOON, 1, limits))).toEqual({ admitted: true, useCount: 1, dayCount: 1, tokens: 0 });
        expect((await store.findById(a.id))?.useCount).toBe(1);
        expect((await store.findById(b.id))?.useCount).toBe(1);
      });

      test('is atomic: 200 concurrent consumes against maxUses 50 admit exactly 50', async (store) => {
        const record = makeRecord({ maxUses: 50 });
        await store.insert(record);

        const { admitted, refused } = await consumeConcurrently(store, record.id, 200, request(NOON, 50, null));
        expect(admitted).toHaveLength(50);
        expect(ascending(admitted.map((o) => o.useCount))).toEqual(range(1, 50));
        expect(refused.map((o) => o?.refusal)).toEqual(Array(150).fill('usage_exhausted'));
        expect((await store.findById(record.id))?.useCount).toBe(50);
      });

      test('is atomic: 200 concurrent consumes against perDay 50 admit exactly 50', async (store) => {
        const limits: RateLimit = { perDay: 50 };
        const record = makeRecord({ rateLimit: limits });
        await store.insert(record);

        const { admitted, refused } = await consumeConcurrently(store, record.id, 200, request(NOON, null, limits));
        expect(admitted).toHaveLength(50);
        expect(ascending(admitted.map((o) => o.dayCount ?? -1))).toEqual(range(1, 50));
        expect(refused.map((o) => o?.refusal)).toEqual(Array(150).fill('quota_exceeded'));
        expect((await store.findById(record.id))?.useCount).toBe(50);
      });

      test('is atomic: 200 concurrent consumes against a burst of 50 at one instant admit exactly 50', async (store) => {
        const limits: RateLimit = { perSecond: 1, burst: 50 };
        const record = makeRecord({ rateLimit: limits });
        await store.insert(record);

        const { admitted, refused } = await consumeConcurrently(store, record.id, 200, request(NOON, null, limits));
        expect(admitted).toHaveLength(50);
        expect(ascending(admitted.map((o) => o.tokens ?? -1))).toEqual(range(0, 49));
        expect(refused.map((o) => o?.refusal)).toEqual(Array(150).fill('rate_limited'));
        expect((await store.findById(record.id))?.useCount).toBe(50);
      });

      test('is atomic across limits: concurrent consumes admit up to the tightest one and count nothing else', async (store) => {
        const limits: RateLimit = { perSecond: 1, burst: 40, perDay: 35 };
        const record = makeRecord({ maxUses: 30, rateLimit: limits });
        await store.insert(record);

        const { admitted, refused } = await consumeConcurrently(store, record.id, 200, request(NOON, 30, limits));
        expect(admitted).toHaveLength(30);
        expect(refused.map((o) => o?.refusal)).toEqual(Array(170).fill('usage_exhausted'));
        // The refusals took nothing: 5 more of the day's quota and 10 tokens remain.
        const more = await consumeConcurrently(store, record.id, 20, request(NOON, 100, limits));
        expect(more.admitted).toHaveLength(5);
        expect(more.refused.map((o) => o?.refusal)).toEqual(Array(15).fill('quota_exceeded'));
        expect(ascending(more.admitted.map((o) => o.tokens ?? -1))).toEqual(range(5, 9));
        expect((await store.findById(record.id))?.useCount).toBe(35);
      });
    });

    // -------------------------------------------------------------------------------------------
    describe('consume refuses what the store says is no longer usable', () => {
      test('refuses a revoked record with api_key_revoked and counts nothing', async (store) => {
        const record = makeRecord({ status: 'revoked', revokedAt: new Date(NOON - DAY), maxUses: 5, rateLimit: { perSecond: 1, perDay: 1 } });
        await store.insert(record);
        expect(await store.consume(record.id, request(NOON, 5, { perSecond: 1, perDay: 1 }))).toEqual({
          admitted: false,
          refusal: 'api_key_revoked',
          useCount: 0,
        });
        expect(await store.findById(record.id)).toStrictEqual(record);
      });

      test('refuses a suspended record with api_key_disabled, before any limit', async (store) => {
        const record = makeRecord({ status: 'suspended', maxUses: 2, useCount: 2 });
        await store.insert(record);
        expect(await store.consume(record.id, request(NOON, 2, null))).toEqual({ admitted: false, refusal: 'api_key_disabled', useCount: 2 });
        expect(await store.findById(record.id)).toStrictEqual(record);
      });

      test('admits during a rotation grace period and refuses from revokedAt on', async (store) => {
        const record = makeRecord({ revokedAt: new Date(NOON + SECOND) });
        await store.insert(record);
        expect(await store.consume(record.id, request(NOON, null, null))).toEqual({ admitted: true, useCount: 1 });
        expect(await store.consume(record.id, request(NOON + SECOND, null, null))).toEqual({
          admitted: false,
          refusal: 'api_key_revoked',
          useCount: 1,
        });
        expect((await store.findById(record.id))?.lastUsedAt).toStrictEqual(new Date(NOON));
      });

      test('refuses an expired record with api_key_expired from expiresAt on', async (store) => {
        const record = makeRecord({ expiresAt: new Date(NOON + SECOND) });
        await store.insert(record);
        expect(await store.consume(record.id, request(NOON + SECOND - 1, null, null))).toEqual({ admitted: true, useCount: 1 });
        expect(await store.consume(record.id, request(NOON + SECOND, null, null))).toEqual({
          admitted: false,
          refusal: 'api_key_expired',
          useCount: 1,
        });
      });

      test('sees a revocation made through update at once', async (store) => {
        const record = makeRecord();
        await store.insert(record);
        expect(await store.consume(record.id, request(NOON, null, null))).toEqual({ admitted: true, useCount: 1 });
        await store.update(record.id, { status: 'revoked', revokedAt: new Date(NOON + 1), updatedAt: new Date(NOON + 1) });
        expect(await store.consume(record.id, request(NOON + 2, null, null))).toEqual({ admitted: false, refusal: 'api_key_revoked', useCount: 1 });
        await store.update(record.id, { name: 'still revoked', updatedAt: new Date(NOON + 3) });
        expect(await store.consume(record.id, request(NOON + 4, null, null))).toEqual({ admitted: false, refusal: 'api_key_revoked', useCount: 1 });
      });

      test('refuses a consume whose wall-clock deadline has passed, counting nothing', async (store) => {
        const record = makeRecord({ maxUses: 1 });
        await store.insert(record);
        expect(await store.consume(record.id, { ...request(NOON, 1, null), deadline: Date.now() - 1 })).toEqual({
          admitted: false,
          refusal: 'deadline_exceeded',
          useCount: 0,
        });
        expect(await store.findById(record.id)).toStrictEqual(record);
        expect(await store.consume(record.id, { ...request(NOON, 1, null), deadline: Date.now() + 60_000 })).toEqual({
          admitted: true,
          useCount: 1,
        });
      });
    });

    describe('a revoked key stays revoked', () => {
      test('update refuses to change the status of a revoked record and changes nothing', async (store) => {
        const record = makeRecord({ status: 'revoked', revokedAt: new Date(NOON - DAY) });
        await store.insert(record);
        for (const status of ['active', 'suspended'] as const) {
          const error = await rejectionOf(() => store.update(record.id, { status, updatedAt: new Date(NOON) }));
          expect(errorShape(error)).toEqual({ keygateError: true, code: 'invalid_argument' });
        }
        expect(await store.findById(record.id)).toStrictEqual(record);
      });

      test('update refuses to change the status once revokedAt has passed, whatever the status says', async (store) => {
        const record = makeRecord({ status: 'active', revokedAt: new Date(NOON - SECOND) });
        await store.insert(record);
        const error = await rejectionOf(() => store.update(record.id, { status: 'suspended', updatedAt: new Date(NOON) }));
        expect(errorShape(error)).toEqual({ keygateError: true, code: 'invalid_argument' });
        expect(await store.findById(record.id)).toStrictEqual(record);
      });

      test('update still changes other fields of a revoked record, and the status of a key in its grace period', async (store) => {
        const revoked = makeRecord({ status: 'revoked', revokedAt: new Date(NOON - DAY) });
        const retiring = makeRecord({ revokedAt: new Date(NOON + DAY) });
        await seed(store, [revoked, retiring]);
        expect((await store.update(revoked.id, { name: 'renamed', status: 'revoked', updatedAt: new Date(NOON) }))?.name).toBe('renamed');
        expect((await store.update(retiring.id, { status: 'suspended', updatedAt: new Date(NOON) }))?.status).toBe('suspended');
      });

      test('rotate refuses a record already rotated (revokedAt set) and changes nothing', async (store) => {
        const old = makeRecord({ maxUses: 100, revokedAt: new Date(NOON + DAY) });
        await store.insert(old);
        const replacement = makeRecord({ rotatedFromId: old.id });
        const error = await rejectionOf(() =>
          store.rotate({ oldId: old.id, replacement, oldRevokedAt: new Date(NOON + DAY), now: new Date(NOON) }),
        );
        expect(errorShape(error)).toEqual({ keygateError: true, code: 'invalid_argument' });
        expect(await store.findById(old.id)).toStrictEqual(old);
        expect(await store.findById(replacement.id)).toBeNull();
        expect(await store.findByKeyPrefix(replacement.keyPrefix)).toBeNull();
      });

      test('rotate refuses a revoked record and changes nothing', async (store) => {
        const old = makeRecord({ status: 'revoked', revokedAt: null });
        await store.insert(old);
        const replacement = makeRecord({ rotatedFromId: old.id });
        const error = await rejectionOf(() =>
          store.rotate({ oldId: old.id, replacement, oldRevokedAt: new Date(NOON), oldStatus: 'revoked', now: new Date(NOON) }),
        );
        expect(errorShape(error)).toEqual({ keygateError: true, code: 'invalid_argument' });
        expect(await store.findById(old.id)).toStrictEqual(old);
        expect(await store.findById(replacement.id)).toBeNull();
      });

      test('of two concurrent rotations of one key, exactly one succeeds', async (store) => {
        const old = makeRecord({ maxUses: 100 });
        await store.insert(old);
        const attempts = await Promise.allSettled(
          Array.from({ length: 5 }, () =>
            store.rotate({ oldId: old.id, replacement: makeRecord({ rotatedFromId: old.id }), oldRevokedAt: new Date(NOON + DAY), now: new Date(NOON) }),
          ),
        );
        expect(attempts.filter((attempt) => attempt.status === 'fulfilled')).toHaveLength(1);
        for (const attempt of attempts) {
          if (attempt.status === 'rejected') expect(errorShape(attempt.reason)).toEqual({ keygateError: true, code: 'invalid_argument' });
        }
        expect((await store.list({ limit: 10 })).filter((record) => record.rotatedFromId === old.id)).toHaveLength(1);
      });
    });

    describe('rotate', () => {
      /** A replacement made the way the manager makes one: same settings, new identity. */
      function replacementFor(old: ApiKeyRecord, now: number, overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
        const { description: _d, ownerId: _o, tenantId: _t, environment: _e, rotatedFromId: _r, ...rest } = old;
        return makeRecord({
          ...rest,
          ...(old.description !== undefined ? { description: old.description } : {}),
          ...(old.ownerId !== undefined ? { ownerId: old.ownerId } : {}),
          ...(old.tenantId !== undefined ? { tenantId: old.tenantId } : {}),
          ...(old.environment !== undefined ? { environment: old.environment } : {}),
          id: randomUUID(),
          keyPrefix: `kg_${randomBase62(16)}`,
          keyHash: `$hmac-sha256$${randomBytes(32).toString('base64url')}`,
          status: 'active',
          useCount: 0,
          createdAt: new Date(now),
          updatedAt: new Date(now),
          lastUsedAt: null,
          revokedAt: null,
          rotatedFromId: old.id,
          ...overrides,
        });
      }

      test('inserts the replacement and retires the old record in one step, carrying remaining uses', async (store) => {
        const old = makeFullRecord({ status: 'active', revokedAt: null, maxUses: 10, useCount: 0, rateLimit: null });
        await store.insert(old);
        await consumeTimes(store, old.id, 4, request(NOON, 10, null));
        const before = await store.findById(old.id);
        if (!before) throw new Error('the old record vanished');

        const now = NOON + SECOND;
        const replacement = replacementFor(old, now);
        const rotation: StoreRotation = { oldId: old.id, replacement, oldRevokedAt: new Date(now), oldStatus: 'revoked', now: new Date(now) };
        const result = await store.rotate(rotation);

        const expectedOld: ApiKeyRecord = { ...before, status: 'revoked', revokedAt: new Date(now), updatedAt: new Date(now) };
        const expectedReplacement = { ...replacement, maxUses: 6 };
        expect(result).toStrictEqual({ old: expectedOld, replacement: expectedReplacement });
        expect(await store.findById(old.id)).toStrictEqual(expectedOld);
        expect(await store.findByKeyPrefix(old.keyPrefix)).toStrictEqual(expectedOld);
        expect(await store.findById(replacement.id)).toStrictEqual(expectedReplacement);
        expect(await store.findByKeyPrefix(replacement.keyPrefix)).toStrictEqual(expectedReplacement);
        expect(ids(await store.list({ limit: 10 }))).toEqual(ids([expectedOld, expectedReplacement].sort(byPosition)));
      });

      test('leaves the old status alone when no oldStatus is given (grace period)', async (store) => {
        const old = makeRecord({ maxUses: 10, useCount: 4 });
        await store.insert(old);
        const now = NOON;
        const graceEnd = new Date(now + 60 * SECOND);
        const replacement = replacementFor(old, now);

        const result = await store.rotate({ oldId: old.id, replacement, oldRevokedAt: graceEnd, now: new Date(now) });
        const expectedOld = { ...old, revokedAt: graceEnd, updatedAt: new Date(now) };
        expect(result?.old).toStrictEqual(expectedOld);
        expect(result?.old.status).toBe('active');
        expect(result?.replacement).toStrictEqual({ ...replacement, maxUses: 6 });
        expect(await store.findById(old.id)).toStrictEqual(expectedOld);
      });

      test('carries remaining uses never below 0, and no limit stays no limit', async (store) => {
        const overused = makeRecord({ maxUses: 10, useCount: 12 });
        const exact = makeRecord({ maxUses: 3, useCount: 3 });
        const unlimited = makeRecord({ maxUses: null, useCount: 40 });
        await seed(store, [overused, exact, unlimited]);
        const at = { oldRevokedAt: new Date(NOON), oldStatus: 'revoked' as const, now: new Date(NOON) };

        const a = await store.rotate({ oldId: overused.id, replacement: replacementFor(overused, NOON), ...at });
        const b = await store.rotate({ oldId: exact.id, replacement: replacementFor(exact, NOON), ...at });
        const c = await store.rotate({ oldId: unlimited.id, replacement: replacementFor(unlimited, NOON), ...at });
        expect([a?.replacement.maxUses, b?.replacement.maxUses, c?.replacement.maxUses]).toEqual([0, 0, null]);
        if (!a || !c) throw new Error('rotate returned null for a known id');
        expect((await store.findById(a.replacement.id))?.maxUses).toBe(0);
        expect((await store.findById(c.replacement.id))?.maxUses).toBeNull();
      });

      test('after a rotation each record counts its own uses', async (store) => {
        const old = makeRecord({ maxUses: 10 });
        await store.insert(old);
        await consumeTimes(store, old.id, 4, request(NOON, 10, null));
        const result = await store.rotate({
          oldId: old.id,
          replacement: replacementFor(old, NOON),
          oldRevokedAt: new Date(NOON + 60 * SECOND),
          now: new Date(NOON),
        });
        if (!result) throw new Error('rotate returned null for a known id');

        expect(await store.consume(result.replacement.id, request(NOON + 1, 6, null))).toEqual({ admitted: true, useCount: 1 });
        expect(await store.consume(old.id, request(NOON + 2, 10, null))).toEqual({ admitted: true, useCount: 5 });
        expect((await store.findById(result.replacement.id))?.useCount).toBe(1);
        expect((await store.findById(old.id))?.useCount).toBe(5);
      });

      test('returns null for an unknown oldId and inserts nothing', async (store) => {
        const existing = makeRecord();
        await store.insert(existing);
        const replacement = makeRecord();

        const result = await store.rotate({
          oldId: randomUUID(),
          replacement,
          oldRevokedAt: new Date(NOON),
          oldStatus: 'revoked',
          now: new Date(NOON),
        });
        expect(result).toBeNull();
        expect(await store.findById(replacement.id)).toBeNull();
        expect(await store.findByKeyPrefix(replacement.keyPrefix)).toBeNull();
        expect(await store.list({ limit: 10 })).toStrictEqual([existing]);
      });

      test('rejects a replacement whose keyPrefix is taken with already_exists and changes nothing', async (store) => {
        const old = makeFullRecord({ status: 'active', revokedAt: null });
        const other = makeRecord();
        await seed(store, [old, other]);
        const replacement = replacementFor(old, NOON, { keyPrefix: other.keyPrefix });

        const error = await rejectionOf(() =>
          store.rotate({ oldId: old.id, replacement, oldRevokedAt: new Date(NOON), oldStatus: 'revoked', now: new Date(NOON) }),
        );
        expect(errorShape(error)).toEqual({ keygateError: true, code: 'already_exists' });
        expect(await store.findById(old.id)).toStrictEqual(old);
        expect(await store.findById(replacement.id)).toBeNull();
        expect(await store.findByKeyPrefix(other.keyPrefix)).toStrictEqual(other);
        expect(await store.list({ limit: 10 })).toStrictEqual([old, other].sort(byPosition));
      });

      test('rejects a replacement whose id is taken with already_exists and changes nothing', async (store) => {
        const old = makeFullRecord({ status: 'active', revokedAt: null });
        const other = makeRecord();
        await seed(store, [old, other]);
        const replacement = replacementFor(old, NOON, { id: other.id });

        const error = await rejectionOf(() =>
          store.rotate({ oldId: old.id, replacement, oldRevokedAt: new Date(NOON), oldStatus: 'revoked', now: new Date(NOON) }),
        );
        expect(errorShape(error)).toEqual({ keygateError: true, code: 'already_exists' });
        expect(await store.findById(old.id)).toStrictEqual(old);
        expect(await store.findById(other.id)).toStrictEqual(other);
        expect(await store.findByKeyPrefix(replacement.keyPrefix)).toBeNull();
      });
    });

    // -------------------------------------------------------------------------------------------
    describe('subscribe (checked when the store implements it)', () => {
      test('tells a listener the id of a record changed by update', async (store) => {
        if (!store.subscribe) return;
        const record = makeRecord();
        await store.insert(record);
        const heard: (string | null)[] = [];
        const unsubscribe = store.subscribe((id) => heard.push(id));
        try {
          await store.update(record.id, { name: 'renamed', updatedAt: new Date(NOON) });
          expect(await eventually(() => heard.includes(record.id))).toBe(true);
          expect(heard).toContain(record.id);
        } finally {
          unsubscribe();
        }
      });

      test('tells a listener the id of a record retired by rotate', async (store) => {
        if (!store.subscribe) return;
        const old = makeRecord();
        await store.insert(old);
        const heard: (string | null)[] = [];
        const unsubscribe = store.subscribe((id) => heard.push(id));
        try {
          await store.rotate({
            oldId: old.id,
            replacement: makeRecord({ rotatedFromId: old.id }),
            oldRevokedAt: new Date(NOON),
            oldStatus: 'revoked',
            now: new Date(NOON),
          });
          expect(await eventually(() => heard.includes(old.id))).toBe(true);
          expect(heard).toContain(old.id);
        } finally {
          unsubscribe();
        }
      });

      test('stops telling a listener once it unsubscribed', async (store) => {
        if (!store.subscribe) return;
        const record = makeRecord();
        await store.insert(record);
        const gone: (string | null)[] = [];
        const staying: (string | null)[] = [];
        let goneSubscribed = true;
        const unsubscribeGone = store.subscribe((id) => gone.push(id));
        const unsubscribeStaying = store.subscribe((id) => staying.push(id));
        try {
          await store.update(record.id, { name: 'first', updatedAt: new Date(NOON) });
          expect(await eventually(() => gone.includes(record.id) && staying.includes(record.id))).toBe(true);

          unsubscribeGone();
          goneSubscribed = false;
          const heardBefore = gone.length;
          const staysBefore = staying.length;
          await store.update(record.id, { name: 'second', updatedAt: new Date(NOON + 1) });
          // Once the listener still subscribed heard the change, the other would have too.
          expect(await eventually(() => staying.length > staysBefore)).toBe(true);
          expect(gone).toHaveLength(heardBefore);
        } finally {
          if (goneSubscribed) unsubscribeGone();
          unsubscribeStaying();
        }
      });
    });
  });
}
