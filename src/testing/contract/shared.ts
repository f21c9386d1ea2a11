/**
 * What every feature file of the store contract shares: the few jest globals it uses (typed here,
 * so keygate's published declarations need no jest types), the fixed instants every timestamp
 * derives from, the per-test store set-up and tear-down, and the record and call helpers.
 *
 * Nothing here registers a test by itself: `describeStoreContract` builds one {@link ContractSuite}
 * and hands it to each feature file in turn.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { isKeygateError } from '../../errors.js';
import { RECORD_FIELDS, type RecordField } from '../../record/schema.js';
import type { ApiKeyStore, ConcurrencyClaim, ConsumeOutcome, ConsumeRequest, StoreListQuery } from '../../stores/store.js';
import type { ApiKeyRecord, RateLimit } from '../../types.js';
import { sampleRecord } from '../sample-record.js';
import type { StoreCapabilities, StoreContractOptions } from '../store-contract.js';

// ---------------------------------------------------------------------------------------------
// The jest globals the suite needs. They are looked up when `describeStoreContract` runs, so
// importing the suite outside a test runner is harmless.

/** The matchers the suite uses (a subset of jest's `expect(…)`). */
export interface Matchers {
  toBe(expected: unknown): void;
  toEqual(expected: unknown): void;
  toStrictEqual(expected: unknown): void;
  toBeNull(): void;
  toBeUndefined(): void;
  toBeCloseTo(expected: number, digits?: number): void;
  toContain(item: unknown): void;
  toHaveLength(length: number): void;
  toMatchObject(expected: object): void;
  not: Matchers;
}

/** A test-registering global (`it`), with the `skip` variant capability-gated tests use. */
export interface TestFunction {
  (name: string, body: () => Promise<void>): void;
  /** Registers a test the runner reports as skipped and never runs (`it.skip`). */
  skip(name: string, body: () => Promise<void>): void;
}

/** The ambient test-runner globals the suite reads from `globalThis`. */
export interface TestGlobals {
  describe(name: string, body: () => void): void;
  it: TestFunction;
  expect(actual: unknown): Matchers;
}

/** The runner's globals, or an error saying where the suite must be called from. */
export function testGlobals(): TestGlobals {
  const scope = globalThis as unknown as Partial<TestGlobals>;
  if (
    typeof scope.describe !== 'function' ||
    typeof scope.it !== 'function' ||
    typeof scope.it.skip !== 'function' ||
    typeof scope.expect !== 'function'
  ) {
    throw new Error(
      'describeStoreContract must be called in a jest test file: it uses the globals describe, it, it.skip and expect',
    );
  }
  return scope as TestGlobals;
}

// ---------------------------------------------------------------------------------------------
// Fixed instants. Every timestamp and every `now` of the suite derives from these, so nothing in
// it sleeps and a day can pass between two calls.

/** One second, in milliseconds. */
export const SECOND = 1_000;
/** One day, in milliseconds. */
export const DAY = 86_400_000;
/** 2025-03-14T00:00:00.000Z: a UTC midnight, where the daily quota resets. */
export const MIDNIGHT = Date.UTC(2025, 2, 14);
/** 2025-03-14T12:00:00.000Z: the usual `now` of the suite. */
export const NOON = MIDNIGHT + DAY / 2;
/** 2025-01-02T03:04:05.678Z: when the suite's records are created (a non-zero millisecond on purpose). */
export const CREATED = Date.UTC(2025, 0, 2, 3, 4, 5, 678);

// ---------------------------------------------------------------------------------------------
// The suite as each feature file sees it.

/** An optional capability a store may declare in {@link StoreContractOptions.capabilities}. */
export type Capability = keyof StoreCapabilities;

/**
 * What `describeStoreContract` hands every feature file: the runner's `describe` and `expect`, and
 * two ways to register a test that runs against a fresh store of its own.
 */
export interface ContractSuite {
  readonly describe: TestGlobals['describe'];
  readonly expect: TestGlobals['expect'];
  /** The capabilities the store declared (absent ones are not supported). */
  readonly capabilities: Readonly<StoreCapabilities>;
  /** How the property-based agreement test runs (`StoreContractOptions.agreement`, checked). */
  readonly agreement: Readonly<AgreementSettings>;
  /**
   * Registers a test. `create` makes its store before the body runs, and `destroy` gets it
   * afterwards whether the body passed or not (a failure of `destroy` is reported only when the
   * body itself passed, so it never hides the body's error).
   */
  test(title: string, body: (store: ApiKeyStore) => Promise<void>): void;
  /**
   * Registers a test of an optional capability: run when the store declared it, otherwise
   * registered with `it.skip`, so a missing capability shows as skipped, never as passed.
   */
  testWhen(capability: Capability, title: string, body: (store: ApiKeyStore) => Promise<void>): void;
}

/** The settings of the agreement property test, as `describeStoreContract` checked them. */
export interface AgreementSettings {
  numRuns: number;
  seed?: number;
  path?: string;
}

/** Builds the {@link ContractSuite} for one `describeStoreContract` call. */
export function contractSuite<S extends ApiKeyStore>(
  globals: TestGlobals,
  options: StoreContractOptions<S>,
  agreement: AgreementSettings,
): ContractSuite {
  const capabilities: Readonly<StoreCapabilities> = { ...options.capabilities };

  function run(body: (store: ApiKeyStore) => Promise<void>): () => Promise<void> {
    return async () => {
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
    };
  }

  return {
    describe: globals.describe,
    expect: globals.expect,
    capabilities,
    agreement,
    test: (title, body) => globals.it(title, run(body)),
    testWhen: (capability, title, body) => (capabilities[capability] === true ? globals.it : globals.it.skip)(title, run(body)),
  };
}

// ---------------------------------------------------------------------------------------------
// Records.

/** A valid record created at {@link CREATED}, with every optional field absent; `overrides` must not carry `undefined`. */
export function makeRecord(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return sampleRecord(overrides, CREATED);
}

/** Fields whose values identify a record and must be fresh in every record: `sampleRecord` makes them. */
type IdentityField = 'id' | 'keyPrefix' | 'keyHash';

/** Every field but the identity ones, none left out (`-?`), none `undefined`. */
type EveryField = { [F in Exclude<RecordField, IdentityField>]-?: Exclude<ApiKeyRecord[F], undefined> };

/**
 * A record with every field set, nested metadata and non-trivial arrays. Typed {@link EveryField}
 * so that a field added to the record does not compile until it is given a value here, and the
 * round-trip test then checks it in every store.
 *
 * It is a live record (`deletedAt: null`): a deleted one is left out of `list`, which the tests of
 * records, update and rotate read back. The delete and purge tests round-trip it with `deletedAt`
 * set (`makeFullRecord({ deletedAt })`).
 */
export function makeFullRecord(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  const everyField: EveryField = {
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
    rateLimit: { perSecond: 5, burst: 20, perMinute: 100, perHour: 1_000, perDay: 10_000, perMonth: 100_000 },
    expiresAt: new Date(Date.UTC(2026, 5, 30, 23, 59, 59, 999)),
    allowedOrigins: ['https://app.example.com', 'https://*.example.org', 'http://localhost:3000'],
    requireHttps: true,
    clientCertificateSha256: ['a'.repeat(64), '0123456789abcdef'.repeat(4)],
    maxConcurrent: 12,
    deletedAt: null,
    rotationFrequencyDays: 90,
    alerts: { quotaThreshold: 0.75, errorRateThreshold: 0.25, webhookUrl: 'https://hooks.example.com/keygate?tenant=7' },
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
  };
  return makeRecord({ ...everyField, ...overrides });
}

/**
 * A replacement made the way the manager makes one for `rotate`: the old record's settings and
 * create-time fields (read from the schema, so a new field is carried without an edit here), a new
 * identity, fresh counters, active, created at `now`, pointing back at the old record.
 */
export function makeReplacement(old: ApiKeyRecord, now: number, overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  const carried: Record<string, unknown> = {};
  for (const { field, spec } of RECORD_FIELDS) {
    const value = old[field];
    if (spec.source !== 'system' && value !== undefined) carried[field] = deepCopy(value);
  }
  return sampleRecord({ ...(carried as Partial<ApiKeyRecord>), status: 'active', rotatedFromId: old.id, ...overrides }, now);
}

/** (createdAt, id) ascending: the order of `list`. */
export function byPosition(a: ApiKeyRecord, b: ApiKeyRecord): number {
  const byTime = a.createdAt.getTime() - b.createdAt.getTime();
  if (byTime !== 0) return byTime;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** The ids of `records`, in order. */
export function ids(records: readonly ApiKeyRecord[]): string[] {
  return records.map((record) => record.id);
}

/**
 * A deep copy of JSON-like data and Dates made with this realm's constructors (`structuredClone`
 * returns Node main-realm objects, which fail jest's strict type checks in a test environment).
 */
export function deepCopy<T>(value: T): T {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(deepCopy) as T;
  if (value instanceof Date) return new Date(value.getTime()) as T;
  return Object.fromEntries(Object.entries(value).map(([field, inner]) => [field, deepCopy(inner)])) as T;
}

/** Whether `value` has `field` as an own property (present, even if `undefined`). */
export function hasOwn(value: object, field: string): boolean {
  return Object.prototype.hasOwnProperty.call(value, field);
}

// ---------------------------------------------------------------------------------------------
// Store calls.

/** The filters of a list query, without its position and page size. */
export type ListFilters = Omit<StoreListQuery, 'limit' | 'after'>;

/**
 * Walks every page of `filters` with `pageSize`, each page starting `after` the last record of the
 * one before, and returns the pages. Stops at a short page, or after `maxPages` (a store that
 * never ends a walk fails the caller's assertion instead of hanging).
 */
export async function walkPages(store: ApiKeyStore, filters: ListFilters, pageSize: number, maxPages: number): Promise<ApiKeyRecord[][]> {
  const pages: ApiKeyRecord[][] = [];
  let after: StoreListQuery['after'];
  for (let n = 0; n < maxPages; n++) {
    const page = await store.list(after ? { ...filters, after, limit: pageSize } : { ...filters, limit: pageSize });
    pages.push(page);
    const last = page[page.length - 1];
    if (!last || page.length < pageSize) break;
    after = { createdAt: last.createdAt, id: last.id };
  }
  return pages;
}

/**
 * The page sizes a walk of `total` records with `pageSize` must see: full pages, then one short
 * page (empty when `total` is a multiple of `pageSize`, since only a short page ends the walk).
 */
export function pageSizes(total: number, pageSize: number): number[] {
  return [...Array.from({ length: Math.floor(total / pageSize) }, () => pageSize), total % pageSize];
}

/** Inserts and returns the records, in the order given. */
export async function seed(store: ApiKeyStore, records: ApiKeyRecord[]): Promise<ApiKeyRecord[]> {
  for (const record of records) await store.insert(record);
  return records;
}

/** A consume request at `now` with these limits and no deadline. */
export function request(now: number, maxUses: number | null, rateLimit: RateLimit | null): ConsumeRequest {
  return { now, maxUses, rateLimit };
}

/** `request` with a concurrency claim on one of `limit` slots, held `leaseMs` unless released. */
export function claiming(consumeRequest: ConsumeRequest, limit: number, lease: string, leaseMs: number): ConsumeRequest {
  const concurrency: ConcurrencyClaim = { limit, lease, leaseMs };
  return { ...consumeRequest, concurrency };
}

/**
 * The limits of a probe consume: `maxUses` 0 refuses it with `usage_exhausted` before anything is
 * counted, and every quota and the bucket are set, so the refusal reports every window's count and
 * the bucket level the store holds (the bucket's capacity is out of reach, so the level reported
 * is the stored one refilled at 7 per second).
 */
export const PROBE_LIMITS: Readonly<Required<RateLimit>> = {
  perSecond: 7,
  burst: 1_000,
  perMinute: 1_000_000,
  perHour: 1_000_000,
  perDay: 1_000_000,
  perMonth: 1_000_000,
};

/** The lease a probe claims: it is refused, so it never holds a slot. */
export const PROBE_LEASE = 'keygate-contract-probe';

/**
 * A probe consume at `now`: refused, counting nothing and taking no slot, its outcome shows the
 * counters the store holds; with `withLeases`, it carries a claim, so `inFlight` shows the leases
 * live at the instant it counts at.
 */
export function probeRequest(now: number, withLeases = false): ConsumeRequest {
  const probe: ConsumeRequest = { now, maxUses: 0, rateLimit: { ...PROBE_LIMITS } };
  return withLeases ? claiming(probe, 1, PROBE_LEASE, 1) : probe;
}

/** The store's `release`, for tests of the concurrency capability (the capability check guards the declaration). */
export function releaseOf(store: ApiKeyStore): NonNullable<ApiKeyStore['release']> {
  if (!store.release) throw new Error('capabilities.concurrency is declared, but the store has no release() method');
  return store.release.bind(store);
}

/** The store's `subscribe`, for tests of the subscribe capability (the capability check guards the declaration). */
export function subscribeOf(store: ApiKeyStore): NonNullable<ApiKeyStore['subscribe']> {
  if (!store.subscribe) throw new Error('capabilities.subscribe is declared, but the store has no subscribe() method');
  return store.subscribe.bind(store);
}

/** Consumes `count` times, one after the other, and returns the outcomes in order. */
export async function consumeTimes(
  store: ApiKeyStore,
  id: string,
  count: number,
  consumeRequest: ConsumeRequest,
): Promise<(ConsumeOutcome | null)[]> {
  const outcomes: (ConsumeOutcome | null)[] = [];
  for (let i = 0; i < count; i++) outcomes.push(await store.consume(id, consumeRequest));
  return outcomes;
}

/** Fires `count` consumes at once and splits the outcomes into admitted and refused. */
export async function consumeConcurrently(store: ApiKeyStore, id: string, count: number, consumeRequest: ConsumeRequest) {
  const outcomes = await Promise.all(Array.from({ length: count }, () => store.consume(id, consumeRequest)));
  const admitted = outcomes.filter((outcome): outcome is ConsumeOutcome => outcome?.admitted === true);
  const refused = outcomes.filter((outcome) => outcome?.admitted !== true);
  return { outcomes, admitted, refused };
}

/** Fires one consume per request, all at once, and returns the outcomes in the order of `requests`. */
export async function consumeEachConcurrently(store: ApiKeyStore, id: string, requests: readonly ConsumeRequest[]): Promise<(ConsumeOutcome | null)[]> {
  return Promise.all(requests.map((consumeRequest) => store.consume(id, consumeRequest)));
}

/** The error `action` rejects (or throws) with; fails when it succeeds. */
export async function rejectionOf(action: () => Promise<unknown>): Promise<unknown> {
  try {
    await action();
  } catch (error) {
    return error;
  }
  throw new Error('expected the store call to reject, but it resolved');
}

/**
 * A description of an error that compares well in an assertion: whether it is a `KeygateError`,
 * its code, and the field an `invalid_argument` names (`undefined`, which `toEqual` ignores, for
 * the others).
 */
export function errorShape(error: unknown): { keygateError: boolean; code: unknown; field: unknown } {
  const details = error as { code?: unknown; field?: unknown } | null;
  return { keygateError: isKeygateError(error), code: details?.code, field: details?.field };
}

/** Polls `condition` until it holds or `timeoutMs` passes (for stores that notify asynchronously). */
export async function eventually(condition: () => boolean, timeoutMs = 2_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() >= deadline) return false;
    await delay(5);
  }
  return true;
}

/** Numbers sorted ascending, without changing `values`. */
export function ascending(values: number[]): number[] {
  return [...values].sort((a, b) => a - b);
}

/** The integers from `from` to `to`, both included. */
export function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
