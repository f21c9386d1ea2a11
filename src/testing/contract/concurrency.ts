/**
 * Contract feature: concurrency leases (`maxConcurrent`), an optional capability. A consume with a
 * `concurrency` claim `{ limit, lease, leaseMs }` is admitted only while fewer than `limit` of the
 * key's leases are live, and then records its lease, in the same atomic step as the counters; the
 * outcome reports `inFlight`, the key's live leases after the request (its own included when
 * admitted). `release(id, lease)` gives one slot back and changes nothing else (no counter, no
 * `updatedAt`, no change notification), and resolves for any id and lease. A lease never released
 * lapses `leaseMs` after the instant its consume counted at (`at = max(now, tokensAt)`): it is live
 * while its lapse instant is later than a consume's `at`. `concurrency_limited` is the least
 * lasting refusal (any other limit refusing is reported instead); a refused consume takes no slot;
 * a consume without a claim neither counts nor takes a slot, whatever leases the key holds.
 *
 * The tests run when the store declares `capabilities: { concurrency: true }` and are reported as
 * skipped otherwise.
 */
import { randomUUID } from 'node:crypto';
import type { ApiKeyStore, ConsumeOutcome, ConsumeRefusal, ConsumeRequest } from '../../stores/store.js';
import type { ApiKeyRecord, RateLimit } from '../../types.js';
import {
  type ContractSuite,
  NOON,
  SECOND,
  ascending,
  claiming,
  consumeEachConcurrently,
  eventually,
  makeRecord,
  probeRequest,
  range,
  releaseOf,
  request,
  seed,
} from './shared.js';

/** How long the suite's leases last unless a test says otherwise: longer than any test's span. */
const LEASE_MS = 60_000;

/** An admitted outcome holding `inFlight` leases. */
function admitted(useCount: number, inFlight: number, counts: Partial<ConsumeOutcome> = {}): ConsumeOutcome {
  return { admitted: true, useCount, ...counts, inFlight };
}

/** A refused outcome that saw `inFlight` leases. */
function refused(refusal: ConsumeRefusal, useCount: number, inFlight: number, counts: Partial<ConsumeOutcome> = {}): ConsumeOutcome {
  return { admitted: false, refusal, useCount, ...counts, inFlight };
}

/** The leases of `id` live at `now`, as a refused probe consume (which counts nothing) reports them. */
async function leasesLive(store: ApiKeyStore, id: string, now: number): Promise<number | undefined> {
  return (await store.consume(id, probeRequest(now, true)))?.inFlight;
}

/** Calls `release`, turning a rejection into a message that says it must resolve. */
async function releaseResolving(store: ApiKeyStore, id: string, lease: string, what: string): Promise<void> {
  try {
    await releaseOf(store)(id, lease);
  } catch (error) {
    throw new Error(`release() of ${what} must resolve (keygate calls it once a response ends, whatever became of the lease), but it rejected: ${String(error)}`, {
      cause: error,
    });
  }
}

/**
 * Lease ids a store must keep as opaque data: never code, SQL, a JSON path, a pattern or a property
 * name. A prefix comes before the ids it starts (`$` before `$.a`), so that a release matching by
 * prefix or pattern frees more than its own slot, and shows.
 */
const HOSTILE_LEASES: readonly string[] = [
  '"; DROP TABLE x; --',
  "'); DELETE FROM api_keys; --",
  '$',
  '$.a',
  'a',
  'a b',
  'a.b',
  '__proto__',
  'constructor',
  'hasOwnProperty',
  '*',
  '%',
  '_',
  '?',
  '{"a":1}',
  '\\',
  'ключ 🔑 鍵',
  'L'.repeat(63),
  'L'.repeat(64),
];

/** A limit other than concurrency, spent by the first consume (`tight`) and not by `relaxed`. */
interface OtherLimit {
  refusal: ConsumeRefusal;
  tight: Pick<ConsumeRequest, 'maxUses' | 'rateLimit'>;
  relaxed: Pick<ConsumeRequest, 'maxUses' | 'rateLimit'>;
}

const OTHER_LIMITS: OtherLimit[] = [
  { refusal: 'usage_exhausted', tight: { maxUses: 1, rateLimit: null }, relaxed: { maxUses: 10, rateLimit: null } },
  { refusal: 'quota_exceeded', tight: { maxUses: null, rateLimit: { perMonth: 1 } }, relaxed: { maxUses: null, rateLimit: { perMonth: 10 } } },
  { refusal: 'quota_exceeded', tight: { maxUses: null, rateLimit: { perDay: 1 } }, relaxed: { maxUses: null, rateLimit: { perDay: 10 } } },
  { refusal: 'quota_exceeded', tight: { maxUses: null, rateLimit: { perHour: 1 } }, relaxed: { maxUses: null, rateLimit: { perHour: 10 } } },
  { refusal: 'quota_exceeded', tight: { maxUses: null, rateLimit: { perMinute: 1 } }, relaxed: { maxUses: null, rateLimit: { perMinute: 10 } } },
  // A bucket of one token at 1/s; the relaxed one refills 1 000 times faster (the calls are 1 ms apart).
  { refusal: 'rate_limited', tight: { maxUses: null, rateLimit: { perSecond: 1, burst: 1 } }, relaxed: { maxUses: null, rateLimit: { perSecond: 1_000, burst: 1 } } },
];

/** Lifecycle and deadline refusals: each sent with a claim, then a consume that must find every slot free. */
interface EarlyRefusal {
  title: string;
  record: Partial<ApiKeyRecord>;
  refusal: ConsumeRefusal;
  /** The refused call. */
  refusedRequest: () => ConsumeRequest;
  /** Makes the key usable again (when it can be), and the request that is then admitted. */
  reopen?: (store: ApiKeyStore, record: ApiKeyRecord) => Promise<ConsumeRequest>;
}

const EARLY_REFUSALS: EarlyRefusal[] = [
  {
    title: 'a passed deadline',
    record: {},
    refusal: 'deadline_exceeded',
    refusedRequest: () => ({ ...request(NOON, null, null), deadline: Date.now() - 1 }),
    reopen: async () => request(NOON, null, null),
  },
  {
    title: 'a suspended key',
    record: { status: 'suspended' },
    refusal: 'api_key_disabled',
    refusedRequest: () => request(NOON, null, null),
    reopen: async (store, record) => {
      await store.update(record.id, { status: 'active', updatedAt: new Date(NOON) });
      return request(NOON, null, null);
    },
  },
  {
    title: 'a key expired at now (and usable just before)',
    record: { expiresAt: new Date(NOON + SECOND) },
    refusal: 'api_key_expired',
    refusedRequest: () => request(NOON + SECOND, null, null),
    reopen: async () => request(NOON, null, null),
  },
  {
    title: 'a key whose revokedAt has come (and usable just before)',
    record: { revokedAt: new Date(NOON + SECOND) },
    refusal: 'api_key_revoked',
    refusedRequest: () => request(NOON + SECOND, null, null),
    reopen: async () => request(NOON, null, null),
  },
  {
    title: 'a revoked key',
    record: { status: 'revoked', revokedAt: new Date(NOON - SECOND) },
    refusal: 'api_key_revoked',
    refusedRequest: () => request(NOON, null, null),
  },
];

/** Registers the concurrency lease tests, skipped unless the store declares the capability. */
export function concurrencyContract(suite: ContractSuite): void {
  const { describe, testWhen, expect, capabilities } = suite;

  describe('consume with a concurrency claim, and release (capability: concurrency)', () => {
    testWhen('concurrency', 'admits `limit` leases, then refuses with concurrency_limited and counts nothing', async (store) => {
      const limits: RateLimit = { perSecond: 1, burst: 10, perMinute: 100, perHour: 100, perDay: 100, perMonth: 100 };
      const record = makeRecord({ maxUses: 100, rateLimit: limits, maxConcurrent: 3 });
      await store.insert(record);
      const take = (now: number, lease: string) => store.consume(record.id, claiming(request(now, 100, limits), 3, lease, LEASE_MS));
      const counts = (uses: number, tokens: number) => ({ minuteCount: uses, hourCount: uses, dayCount: uses, monthCount: uses, tokens });

      expect(await take(NOON, 'a')).toEqual(admitted(1, 1, counts(1, 9)));
      expect(await take(NOON, 'b')).toEqual(admitted(2, 2, counts(2, 8)));
      expect(await take(NOON, 'c')).toEqual(admitted(3, 3, counts(3, 7)));
      // The counters as they stand, shown by a refused probe at an instant after the last use.
      const before = await store.consume(record.id, probeRequest(NOON + 250, true));
      expect(before?.inFlight).toBe(3);

      // Full: each refusal (the same lease again, or another) reports the counters and the 3 leases, and counts nothing.
      for (const lease of ['d', 'd', 'e']) {
        expect(await take(NOON + 500, lease)).toEqual(refused('concurrency_limited', 3, 3, counts(3, 7.5)));
      }
      // Nothing moved: no use, no window count, no token, not even the key's latest instant (no countedAt).
      expect(await store.consume(record.id, probeRequest(NOON + 250, true))).toEqual(before);
      expect(await store.findById(record.id)).toStrictEqual({ ...record, useCount: 3, lastUsedAt: new Date(NOON) });
    });

    testWhen('concurrency', "takes the limit from the request: a lowered limit refuses while the leases exceed it, a raised one admits", async (store) => {
      const record = makeRecord({ maxConcurrent: 3 });
      await store.insert(record);
      const take = (limit: number, lease: string) => store.consume(record.id, claiming(request(NOON, null, null), limit, lease, LEASE_MS));
      for (const lease of ['a', 'b', 'c']) expect((await take(3, lease))?.admitted).toBe(true);

      expect(await take(2, 'd')).toEqual(refused('concurrency_limited', 3, 3));
      expect(await take(1, 'd')).toEqual(refused('concurrency_limited', 3, 3));
      expect(await take(4, 'd')).toEqual(admitted(4, 4));
      expect(await take(4, 'e')).toEqual(refused('concurrency_limited', 4, 4));
    });

    testWhen('concurrency', 'release frees exactly the slot of its lease', async (store) => {
      const record = makeRecord({ maxConcurrent: 2 });
      await store.insert(record);
      const take = (lease: string) => store.consume(record.id, claiming(request(NOON, null, null), 2, lease, LEASE_MS));
      const release = releaseOf(store);

      expect(await take('a')).toEqual(admitted(1, 1));
      expect(await take('b')).toEqual(admitted(2, 2));
      expect(await take('c')).toEqual(refused('concurrency_limited', 2, 2));

      await release(record.id, 'a');
      expect(await leasesLive(store, record.id, NOON)).toBe(1);
      expect(await take('c')).toEqual(admitted(3, 2));
      expect(await take('d')).toEqual(refused('concurrency_limited', 3, 2));

      // b and c held: releasing both frees both.
      await release(record.id, 'b');
      await release(record.id, 'c');
      expect(await leasesLive(store, record.id, NOON)).toBe(0);
      expect(await take('e')).toEqual(admitted(4, 1));
      expect(await take('f')).toEqual(admitted(5, 2));
      expect(await take('g')).toEqual(refused('concurrency_limited', 5, 2));
    });

    testWhen('concurrency', 'release is idempotent: releasing a lease again frees no other slot', async (store) => {
      const record = makeRecord({ maxConcurrent: 2 });
      await store.insert(record);
      const take = (lease: string) => store.consume(record.id, claiming(request(NOON, null, null), 2, lease, LEASE_MS));
      expect((await take('a'))?.admitted).toBe(true);
      expect((await take('b'))?.admitted).toBe(true);

      for (let i = 1; i <= 3; i++) {
        await releaseResolving(store, record.id, 'a', `a lease already released (time ${i})`);
        expect({ releasedTimes: i, inFlight: await leasesLive(store, record.id, NOON) }).toEqual({ releasedTimes: i, inFlight: 1 });
      }
      // b still holds its slot.
      expect(await take('c')).toEqual(admitted(3, 2));
      expect(await take('d')).toEqual(refused('concurrency_limited', 3, 2));
    });

    testWhen('concurrency', 'release changes nothing but the lease: no counter, no updatedAt, no notification; unknown ids and leases resolve', async (store) => {
      const limits: RateLimit = { perSecond: 1, burst: 5, perMinute: 10, perDay: 10 };
      const [record, idle, sentinel] = await seed(store, [makeRecord({ maxUses: 10, rateLimit: limits, maxConcurrent: 2 }), makeRecord(), makeRecord()]);
      if (!record || !idle || !sentinel) throw new Error('seed failed');
      for (const lease of ['a', 'b']) {
        expect((await store.consume(record.id, claiming(request(NOON, 10, limits), 2, lease, LEASE_MS)))?.admitted).toBe(true);
      }
      const stored = await store.findById(record.id);
      const counters = await store.consume(record.id, probeRequest(NOON + 100, true));
      expect(counters?.inFlight).toBe(2);

      // Listen (when the store can), after a first change of the sentinel shows the subscription is live.
      const heard: (string | null)[] = [];
      const unsubscribe = capabilities.subscribe === true && store.subscribe ? store.subscribe((id) => heard.push(id)) : undefined;
      try {
        if (unsubscribe) {
          await store.update(sentinel.id, { name: 'first', updatedAt: new Date(NOON) });
          expect(await eventually(() => heard.includes(sentinel.id))).toBe(true);
          heard.length = 0;
        }

        const releases: [id: string, lease: string, what: string][] = [
          [record.id, 'never-taken', 'a lease the key never held'],
          [record.id, '', 'an empty lease'],
          [idle.id, 'a', 'a lease of a key that never held any'],
          [randomUUID(), 'a', 'an unknown id'],
          [record.id, 'b', 'a held lease'],
          [record.id, 'b', 'a lease already released'],
        ];
        for (const [id, lease, what] of releases) await releaseResolving(store, id, lease, what);

        // Only b's slot is back: every counter and the record are as they were.
        expect(await store.consume(record.id, probeRequest(NOON + 100, true))).toEqual({ ...counters, inFlight: 1 });
        expect(await store.findById(record.id)).toStrictEqual(stored);
        expect(await store.findById(idle.id)).toStrictEqual(idle);

        if (unsubscribe) {
          // Notifications arrive in order: once the sentinel's second change is heard, one for a release would have been.
          await store.update(sentinel.id, { name: 'second', updatedAt: new Date(NOON + 1) });
          expect(await eventually(() => heard.includes(sentinel.id))).toBe(true);
          expect({ notifiedByRelease: heard.filter((id) => id === record.id || id === idle.id) }).toEqual({ notifiedByRelease: [] });
        }
      } finally {
        unsubscribe?.();
      }
    });

    testWhen('concurrency', 'a lease lapses leaseMs after its consume: live until then, no longer at that very instant', async (store) => {
      const record = makeRecord({ maxConcurrent: 1 });
      await store.insert(record);
      const take = (now: number, lease: string) => store.consume(record.id, claiming(request(now, null, null), 1, lease, SECOND));

      expect(await take(NOON, 'a')).toEqual(admitted(1, 1));
      expect(await take(NOON + SECOND - 1, 'b')).toEqual(refused('concurrency_limited', 1, 1));
      expect(await take(NOON + SECOND, 'b')).toEqual(admitted(2, 1));
      // Releasing a lapsed lease is harmless; b, taken at NOON + 1 s, holds its slot until NOON + 2 s.
      await releaseResolving(store, record.id, 'a', 'a lapsed lease');
      expect(await take(NOON + 2 * SECOND - 1, 'c')).toEqual(refused('concurrency_limited', 2, 1));
      expect(await leasesLive(store, record.id, NOON + 2 * SECOND - 1)).toBe(1);
      expect(await leasesLive(store, record.id, NOON + 2 * SECOND)).toBe(0);
      expect(await take(NOON + 2 * SECOND, 'c')).toEqual(admitted(3, 1));
    });

    testWhen('concurrency', 'a lease counts from max(now, the latest admitted instant): a lagging caller neither shortens nor revives one', async (store) => {
      const [held, lapsed] = await seed(store, [makeRecord({ maxConcurrent: 1 }), makeRecord({ maxConcurrent: 1 })]);
      if (!held || !lapsed) throw new Error('seed failed');
      const claim = (now: number, lease: string) => claiming(request(now, null, null), 1, lease, SECOND);

      // A use at NOON + 10 s, then a caller whose clock reads NOON: its lease is counted at NOON + 10 s and lasts until NOON + 11 s.
      expect(await store.consume(held.id, request(NOON + 10 * SECOND, null, null))).toEqual({ admitted: true, useCount: 1 });
      expect(await store.consume(held.id, claim(NOON, 'a'))).toEqual(admitted(2, 1, { countedAt: NOON + 10 * SECOND }));
      expect(await store.consume(held.id, claim(NOON + 11 * SECOND - 1, 'b'))).toEqual(refused('concurrency_limited', 2, 1));
      expect(await store.consume(held.id, claim(NOON + 11 * SECOND, 'b'))).toEqual(admitted(3, 1));

      // A lease lapsed by the key's latest instant does not count for a caller whose clock is still before its lapse.
      expect(await store.consume(lapsed.id, claim(NOON, 'a'))).toEqual(admitted(1, 1));
      expect(await store.consume(lapsed.id, request(NOON + 5 * SECOND, null, null))).toEqual({ admitted: true, useCount: 2 });
      expect(await store.consume(lapsed.id, claim(NOON + 500, 'b'))).toEqual(admitted(3, 1, { countedAt: NOON + 5 * SECOND }));
    });

    testWhen('concurrency', 'a refusal changes no lease: one lapsed at the refusal still counts for a caller whose clock lags', async (store) => {
      const record = makeRecord({ maxConcurrent: 1 });
      await store.insert(record);
      // Lease a is taken at NOON and lapses at NOON + 1 s.
      expect(await store.consume(record.id, claiming(request(NOON, null, null), 1, 'a', SECOND))).toEqual(admitted(1, 1));
      // Refused at NOON + 5 s (usage_exhausted), after a has lapsed: nothing is written, a included.
      expect(await store.consume(record.id, claiming(request(NOON + 5 * SECOND, 1, null), 1, 'b', SECOND))).toEqual(refused('usage_exhausted', 1, 0));
      // The key's latest instant is still NOON: a caller whose clock reads NOON + 0.5 s counts there, where a is live.
      expect(await store.consume(record.id, claiming(request(NOON + 500, null, null), 1, 'c', SECOND))).toEqual(refused('concurrency_limited', 1, 1));
    });

    for (const other of OTHER_LIMITS) {
      const which = other.refusal === 'quota_exceeded' ? `${other.refusal} (${Object.keys(other.tight.rateLimit ?? {}).join(', ')})` : other.refusal;
      testWhen('concurrency', `${which} takes no slot, and is reported instead of concurrency_limited when both refuse`, async (store) => {
        const record = makeRecord({ maxConcurrent: 2 });
        await store.insert(record);
        let now = NOON;
        // One millisecond apart, all in one second and minute: only the bucket refills, a token per ms when relaxed.
        const take = async (limits: OtherLimit['tight'], lease: string) => {
          const outcome = await store.consume(record.id, claiming({ now: now++, ...limits }, 2, lease, LEASE_MS));
          return outcome && { admitted: outcome.admitted, refusal: outcome.refusal, useCount: outcome.useCount, inFlight: outcome.inFlight };
        };

        expect(await take(other.tight, 'a')).toEqual(admitted(1, 1));
        // The other limit refuses with a slot free: the refusal sees 1 lease and takes none.
        expect(await take(other.tight, 'b')).toEqual(refused(other.refusal, 1, 1));
        expect(await take(other.relaxed, 'c')).toEqual(admitted(2, 2));
        // Both refuse: the most lasting one is reported.
        expect(await take(other.tight, 'd')).toEqual(refused(other.refusal, 2, 2));
        expect(await take(other.relaxed, 'd')).toEqual(refused('concurrency_limited', 2, 2));
      });
    }

    testWhen('concurrency', 'a consume without a claim ignores the leases: admitted when they are full, and reports no inFlight', async (store) => {
      const record = makeRecord({ maxUses: 3, maxConcurrent: 1 });
      await store.insert(record);
      expect(await store.consume(record.id, claiming(request(NOON, 3, null), 1, 'a', LEASE_MS))).toEqual(admitted(1, 1));

      const without = await store.consume(record.id, request(NOON, 3, null));
      expect(without).toEqual({ admitted: true, useCount: 2 });
      expect(without?.inFlight).toBeUndefined();
      expect(await store.consume(record.id, request(NOON, 3, null))).toEqual({ admitted: true, useCount: 3 });
      const exhausted = await store.consume(record.id, request(NOON, 3, null));
      expect(exhausted).toEqual({ admitted: false, refusal: 'usage_exhausted', useCount: 3 });
      expect(exhausted?.inFlight).toBeUndefined();
      // The lease is still held, and counted by the next claim.
      expect(await store.consume(record.id, claiming(request(NOON, 10, null), 1, 'b', LEASE_MS))).toEqual(refused('concurrency_limited', 3, 1));
    });

    testWhen('concurrency', 'deadline and lifecycle refusals take no slot and report no inFlight', async (store) => {
      for (const early of EARLY_REFUSALS) {
        const record = makeRecord({ ...early.record, maxConcurrent: 1 });
        await store.insert(record);
        const outcome = await store.consume(record.id, claiming(early.refusedRequest(), 1, 'refused', LEASE_MS));
        // No inFlight: the decision never reached the limits.
        expect({ case: early.title, outcome }).toEqual({ case: early.title, outcome: { admitted: false, refusal: early.refusal, useCount: 0 } });
        if (early.reopen) {
          // The only slot is still free.
          const reopened = await early.reopen(store, record);
          const after = await store.consume(record.id, claiming(reopened, 1, 'admitted', LEASE_MS));
          expect({ case: early.title, after }).toEqual({ case: early.title, after: admitted(1, 1) });
        }
      }
    });

    testWhen('concurrency', 'is atomic: 100 concurrent consumes with limit 5 admit exactly 5, and 5 more once those are released', async (store) => {
      const record = makeRecord({ maxConcurrent: 5 });
      await store.insert(record);
      const release = releaseOf(store);
      const burst = async (round: number) => {
        const leases = range(1, 100).map((i) => `round ${round} lease ${i}`);
        const outcomes = await consumeEachConcurrently(store, record.id, leases.map((lease) => claiming(request(NOON, null, null), 5, lease, LEASE_MS)));
        const admittedLeases = leases.filter((_, i) => outcomes[i]?.admitted === true);
        const refusals = outcomes.filter((outcome) => outcome?.admitted !== true);
        return { admittedLeases, outcomes, refusals };
      };

      const first = await burst(1);
      expect(first.admittedLeases).toHaveLength(5);
      expect(ascending(first.outcomes.filter((o) => o?.admitted).map((o) => o?.inFlight ?? -1))).toEqual(range(1, 5));
      expect(first.refusals.map((o) => [o?.refusal, o?.inFlight])).toEqual(Array(95).fill(['concurrency_limited', 5]));
      expect((await store.findById(record.id))?.useCount).toBe(5);

      await Promise.all(first.admittedLeases.map((lease) => release(record.id, lease)));
      expect(await leasesLive(store, record.id, NOON)).toBe(0);

      const second = await burst(2);
      expect(second.admittedLeases).toHaveLength(5);
      expect(ascending(second.outcomes.filter((o) => o?.admitted).map((o) => o?.inFlight ?? -1))).toEqual(range(1, 5));
      expect(second.refusals.map((o) => [o?.refusal, o?.inFlight])).toEqual(Array(95).fill(['concurrency_limited', 5]));
      expect((await store.findById(record.id))?.useCount).toBe(10);
    });

    testWhen('concurrency', "keeps leases per key: another key's leases never count, and a lease id reused across keys is a different lease", async (store) => {
      const [a, b] = await seed(store, [makeRecord({ maxConcurrent: 2 }), makeRecord({ maxConcurrent: 2 })]);
      if (!a || !b) throw new Error('seed failed');
      const take = (id: string, lease: string) => store.consume(id, claiming(request(NOON, null, null), 2, lease, LEASE_MS));
      const release = releaseOf(store);

      expect(await take(a.id, 'shared')).toEqual(admitted(1, 1));
      expect(await take(a.id, 'only-a')).toEqual(admitted(2, 2));
      expect(await take(a.id, 'third')).toEqual(refused('concurrency_limited', 2, 2));
      // b is empty, whatever a holds, and may hold a lease of the same id.
      expect(await take(b.id, 'shared')).toEqual(admitted(1, 1));

      await release(a.id, 'shared');
      expect({ a: await leasesLive(store, a.id, NOON), b: await leasesLive(store, b.id, NOON) }).toEqual({ a: 1, b: 1 });
      await release(b.id, 'shared');
      await release(b.id, 'only-a');
      expect({ a: await leasesLive(store, a.id, NOON), b: await leasesLive(store, b.id, NOON) }).toEqual({ a: 1, b: 0 });
    });

    testWhen('concurrency', 'keeps lease ids as data: quotes, SQL, JSON paths, patterns, __proto__, unicode, 64 characters', async (store) => {
      const limit = HOSTILE_LEASES.length;
      const record = makeRecord({ maxConcurrent: limit });
      await store.insert(record);
      const take = (lease: string) => store.consume(record.id, claiming(request(NOON, null, null), limit, lease, LEASE_MS));

      // Each is a lease of its own: none collapses into another (by truncation, normalisation or escaping).
      for (const [i, lease] of HOSTILE_LEASES.entries()) {
        expect({ lease, outcome: await take(lease) }).toEqual({ lease, outcome: admitted(i + 1, i + 1) });
      }
      expect(await take('one too many')).toEqual(refused('concurrency_limited', limit, limit));

      // Releasing each frees exactly its own slot: releasing it twice would free a second one had the first freed another lease.
      for (const [i, lease] of HOSTILE_LEASES.entries()) {
        await releaseResolving(store, record.id, lease, `the lease ${JSON.stringify(lease)}`);
        await releaseResolving(store, record.id, lease, `the lease ${JSON.stringify(lease)}, again`);
        expect({ released: lease, inFlight: await leasesLive(store, record.id, NOON) }).toEqual({ released: lease, inFlight: limit - i - 1 });
      }
      expect(await take(HOSTILE_LEASES[0] as string)).toEqual(admitted(limit + 1, 1));
    });
  });
}
