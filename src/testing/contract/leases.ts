/**
 * Contract feature: reservations for leased mode (`reserve`, `settle`), an optional capability.
 *
 * - `reserve` grants the smallest of the units asked for, the uses left, each quota's room in its
 *   current window and the whole tokens of the bucket, counts the grant against every limit at
 *   once, and keeps it as a hold; a grant of 0 is a refusal that changes nothing, reported as a
 *   consume reports it. Lifecycle and deadline refusals come first, as for a consume.
 * - The bucket refills only up to its capacity minus the tokens of live holds, so held tokens and
 *   the bucket together never exceed the capacity; a hold stops counting `leaseMs` after it.
 * - `settle` gives the unspent units back (to `useCount`, to the windows still current, and its
 *   tokens to the bucket while the hold is live) once: again, or for an unknown lease or key, it
 *   changes nothing.
 * - Reservations and consumes share the counters; concurrent reservations never grant more than a
 *   limit allows; `purge` removes holds with their record.
 * - On random sequences of reservations, settlements and consumes across window boundaries, the
 *   store agrees with `decideReservation`, `decideSettlement` and `decideConsume` step by step.
 *
 * The tests run when the store declares `capabilities: { leases: true }` and are reported as
 * skipped otherwise.
 */
import { type CounterState, decideConsume, initialCounters } from '../../policy/limits.js';
import { type Hold, type ReserveOutcome, type ReserveRequest, type Settlement, decideReservation, decideSettlement } from '../../policy/reservation.js';
import type { ApiKeyStore, ConsumeOutcome } from '../../stores/store.js';
import type { RateLimit } from '../../types.js';
import { loadFastCheck } from './agreement.js';
import { type ContractSuite, DAY, MIDNIGHT, NOON, SECOND, makeRecord, probeRequest, request } from './shared.js';

interface LeaseMethods {
  reserve: NonNullable<ApiKeyStore['reserve']>;
  settle: NonNullable<ApiKeyStore['settle']>;
}

/** The store's reservation methods (the capability check guards the declaration; this names what is missing). */
function leasesOf(store: ApiKeyStore): LeaseMethods {
  const { reserve, settle } = store;
  if (!reserve || !settle) throw new Error('capabilities.leases is declared, but the store lacks reserve() or settle()');
  return { reserve: reserve.bind(store), settle: settle.bind(store) };
}

let leaseCount = 0;

/** A reservation request at `now`; a fresh lease name unless one is given. */
function reservation(now: number, units: number, maxUses: number | null, rateLimit: RateLimit | null, leaseMs = 10 * SECOND, lease?: string): ReserveRequest {
  return { now, units, maxUses, rateLimit, leaseMs, lease: lease ?? `contract-lease-${process.pid}-${++leaseCount}` };
}

/** A settlement of `lease` at `now`. */
function settlement(lease: string, unspent: number, now: number, rateLimit: RateLimit | null): Settlement {
  return { lease, unspent, now, rateLimit };
}

/** The counters the store holds, read with a probe consume that is refused and counts nothing. */
async function probe(store: ApiKeyStore, id: string, now: number): Promise<ConsumeOutcome | null> {
  return store.consume(id, probeRequest(now));
}

/** Only the fields a reservation outcome defines, for exact comparison. */
function defined(outcome: ConsumeOutcome | null): Record<string, unknown> | null {
  if (outcome === null) return null;
  return Object.fromEntries(Object.entries(outcome).filter(([, value]) => value !== undefined));
}

/** Registers the reservation tests, skipped unless the store declares the capability. */
export function leasesContract(suite: ContractSuite): void {
  const { describe, testWhen, expect } = suite;
  const test = (title: string, body: (store: ApiKeyStore) => Promise<void>) => testWhen('leases', title, body);

  async function key(store: ApiKeyStore, useCount = 0): Promise<string> {
    const record = makeRecord({ useCount });
    await store.insert(record);
    return record.id;
  }

  describe('reservations for leased mode (capability: leases)', () => {
    test('reserve grants the smallest of units and the uses left, counts them, and refuses once none are left, changing nothing', async (store) => {
      const { reserve } = leasesOf(store);
      const id = await key(store, 2);
      expect(defined(await reserve(id, reservation(NOON, 4, 10, null)))).toEqual({ admitted: true, granted: 4, useCount: 6 });
      expect(defined(await reserve(id, reservation(NOON, 10, 10, null)))).toEqual({ admitted: true, granted: 4, useCount: 10 });
      expect(defined(await reserve(id, reservation(NOON, 1, 10, null)))).toEqual({ admitted: false, refusal: 'usage_exhausted', granted: 0, useCount: 10 });
      expect((await store.findById(id))?.useCount).toBe(10);
      expect((await store.findById(id))?.lastUsedAt?.getTime()).toBe(NOON);
    });

    test('each quota bounds the grant in its current window, and a new window starts empty', async (store) => {
      const { reserve } = leasesOf(store);
      const id = await key(store);
      const limits: RateLimit = { perDay: 7, perHour: 5 };
      expect(defined(await reserve(id, reservation(NOON, 3, null, limits)))).toEqual({ admitted: true, granted: 3, useCount: 3, hourCount: 3, dayCount: 3 });
      expect(defined(await reserve(id, reservation(NOON + 1, 9, null, limits)))).toEqual({ admitted: true, granted: 2, useCount: 5, hourCount: 5, dayCount: 5 });
      expect(defined(await reserve(id, reservation(NOON + 2, 9, null, limits)))).toEqual({ admitted: false, refusal: 'quota_exceeded', granted: 0, useCount: 5, hourCount: 5, dayCount: 5 });
      // The next hour has room for 5, the day for 2 more.
      expect(defined(await reserve(id, reservation(NOON + 3_600_000, 9, null, limits)))).toEqual({ admitted: true, granted: 2, useCount: 7, hourCount: 2, dayCount: 7 });
      expect(defined(await reserve(id, reservation(MIDNIGHT + DAY, 9, null, limits)))).toEqual({ admitted: true, granted: 5, useCount: 12, hourCount: 5, dayCount: 5 });
    });

    test('held tokens keep the bucket from refilling past its capacity until they are settled or lapse', async (store) => {
      const { reserve, settle } = leasesOf(store);
      const id = await key(store);
      const bucket: RateLimit = { perSecond: 10, burst: 10 };
      const first = reservation(NOON, 6, null, bucket, 5 * SECOND);
      expect(defined(await reserve(id, first))).toEqual({ admitted: true, granted: 6, useCount: 6, tokens: 4 });
      // A second later a plain bucket would be full again; 6 tokens are still held, so it holds 4.
      expect(defined(await reserve(id, reservation(NOON + SECOND, 10, null, bucket, 5 * SECOND)))).toEqual({ admitted: true, granted: 4, useCount: 10, tokens: 0 });
      expect(defined(await reserve(id, reservation(NOON + 2 * SECOND, 1, null, bucket)))).toEqual({ admitted: false, refusal: 'rate_limited', granted: 0, useCount: 10, tokens: 0 });
      // Settled with 5 unspent: they come back to the bucket (and to useCount).
      await settle(id, settlement(first.lease, 5, NOON + 2 * SECOND, bucket));
      expect(defined(await reserve(id, reservation(NOON + 2 * SECOND, 10, null, bucket)))).toEqual({ admitted: true, granted: 5, useCount: 10, tokens: 0 });
      // Once every hold has lapsed the bucket refills to its full capacity.
      expect(defined(await reserve(id, reservation(NOON + 20 * SECOND, 20, null, bucket)))).toEqual({ admitted: true, granted: 10, useCount: 20, tokens: 0 });
    });

    test('settle gives back the unspent units once: to useCount and the windows still current, never more than the hold', async (store) => {
      const { reserve, settle } = leasesOf(store);
      const id = await key(store);
      const limits: RateLimit = { perMinute: 100, perDay: 100 };
      const held = reservation(NOON, 10, 50, limits);
      await reserve(id, held);
      await settle(id, settlement(held.lease, 4, NOON + SECOND, limits));
      expect(defined(await probe(store, id, NOON + SECOND))).toMatchObject({ useCount: 6, minuteCount: 6, dayCount: 6 });
      // Again (a retry after a lost answer), an unknown lease, an unknown key: nothing changes.
      await settle(id, settlement(held.lease, 4, NOON + SECOND, limits));
      await settle(id, settlement('no-such-lease', 3, NOON + SECOND, limits));
      await settle('no-such-key', settlement(held.lease, 3, NOON + SECOND, limits));
      expect(defined(await probe(store, id, NOON + SECOND))).toMatchObject({ useCount: 6, minuteCount: 6, dayCount: 6 });
      // More unspent than granted gives back the grant only.
      const small = reservation(NOON + 2 * SECOND, 3, 50, limits);
      await reserve(id, small);
      await settle(id, settlement(small.lease, 1_000, NOON + 3 * SECOND, limits));
      expect(defined(await probe(store, id, NOON + 3 * SECOND))).toMatchObject({ useCount: 6, minuteCount: 6, dayCount: 6 });
      // Settled in a later minute: the minute it counted in keeps its count; the day and useCount get them back.
      const late = reservation(NOON + 4 * SECOND, 5, 50, limits);
      await reserve(id, late);
      await settle(id, settlement(late.lease, 5, NOON + 61 * SECOND, limits));
      expect(defined(await probe(store, id, NOON + 61 * SECOND))).toMatchObject({ useCount: 6, minuteCount: 0, dayCount: 6 });
      expect((await store.findById(id))?.useCount).toBe(6);
    });

    test('lifecycle and deadline refusals come first and change nothing; an unknown key is null', async (store) => {
      const { reserve } = leasesOf(store);
      const revoked = makeRecord({ status: 'revoked', revokedAt: new Date(NOON - 1) });
      const suspended = makeRecord({ status: 'suspended' });
      const expired = makeRecord({ expiresAt: new Date(NOON) });
      for (const record of [revoked, suspended, expired]) await store.insert(record);
      expect(await reserve(revoked.id, reservation(NOON, 5, null, null))).toMatchObject({ admitted: false, refusal: 'api_key_revoked', granted: 0 });
      expect(await reserve(suspended.id, reservation(NOON, 5, null, null))).toMatchObject({ admitted: false, refusal: 'api_key_disabled', granted: 0 });
      expect(await reserve(expired.id, reservation(NOON, 5, null, null))).toMatchObject({ admitted: false, refusal: 'api_key_expired', granted: 0 });
      const id = await key(store);
      expect(await reserve(id, { ...reservation(NOON, 5, null, null), deadline: Date.now() - 1_000 })).toMatchObject({ admitted: false, refusal: 'deadline_exceeded', granted: 0 });
      expect(await reserve('no-such-key', reservation(NOON, 5, null, null))).toBeNull();
      for (const record of [revoked, suspended, expired]) expect((await store.findById(record.id))?.useCount).toBe(0);
      expect((await store.findById(id))?.useCount).toBe(0);
    });

    test('reservations and consumes count on the same counters', async (store) => {
      const { reserve } = leasesOf(store);
      const id = await key(store);
      const limits: RateLimit = { perDay: 10 };
      await reserve(id, reservation(NOON, 6, null, limits));
      expect(await store.consume(id, request(NOON, null, limits))).toMatchObject({ admitted: true, dayCount: 7 });
      expect(defined(await reserve(id, reservation(NOON, 6, null, limits)))).toEqual({ admitted: true, granted: 3, useCount: 10, dayCount: 10 });
      expect(await store.consume(id, request(NOON, null, limits))).toMatchObject({ admitted: false, refusal: 'quota_exceeded', dayCount: 10 });
    });

    test('concurrent reservations never grant more than the limits allow, and grant all of it', async (store) => {
      const { reserve } = leasesOf(store);
      const id = await key(store);
      const limits: RateLimit = { perDay: 1_000, perSecond: 1_000, burst: 1_000 };
      const outcomes = await Promise.all(Array.from({ length: 40 }, (_, i) => reserve(id, reservation(NOON, 1 + (i % 5), 57, limits))));
      const granted = outcomes.reduce((sum, outcome) => sum + (outcome?.granted ?? 0), 0);
      expect(granted).toBe(57);
      expect(outcomes.every((outcome) => outcome !== null && (outcome.admitted ? outcome.granted >= 1 : outcome.granted === 0 && outcome.refusal === 'usage_exhausted'))).toBe(true);
      expect((await store.findById(id))?.useCount).toBe(57);
    });

    test('purge removes holds with their record: a later reserve finds no key, a settle changes nothing', async (store) => {
      const { reserve, settle } = leasesOf(store);
      const record = makeRecord();
      await store.insert(record);
      const held = reservation(NOON, 3, null, { perSecond: 5 });
      await reserve(record.id, held);
      await store.update(record.id, { status: 'revoked', deletedAt: new Date(NOON), updatedAt: new Date(NOON) });
      expect(await store.purge({ deletedBefore: new Date(NOON + 1) })).toBe(1);
      await settle(record.id, settlement(held.lease, 3, NOON + 1, { perSecond: 5 }));
      expect(await reserve(record.id, reservation(NOON + 1, 1, null, null))).toBeNull();
      expect(await store.findById(record.id)).toBeNull();
    });

    test('agrees with decideReservation, decideSettlement and decideConsume on random sequences across windows', async (store) => {
      const { reserve, settle } = leasesOf(store);
      const fc = await loadFastCheck();
      const step = fc.record({
        kind: fc.constantFrom('reserve', 'reserve', 'settle', 'consume'),
        advance: fc.oneof(fc.integer({ min: 0, max: 400 }), fc.integer({ min: 0, max: 70_000 }), fc.constant(3_600_000)),
        units: fc.integer({ min: 1, max: 6 }),
        unspent: fc.integer({ min: 0, max: 7 }),
        pick: fc.nat(),
        leaseMs: fc.integer({ min: 1, max: 3_000 }),
      });
      const limits = fc.record(
        { perSecond: fc.integer({ min: 1, max: 8 }), burst: fc.integer({ min: 1, max: 8 }), perMinute: fc.integer({ min: 1, max: 12 }), perDay: fc.integer({ min: 1, max: 30 }) },
        { requiredKeys: [] },
      );
      const scenario = fc.record({ limits, maxUses: fc.option(fc.integer({ min: 0, max: 40 }), { nil: null }), steps: fc.array(step, { minLength: 1, maxLength: 20 }) });
      await fc.assert(
        fc.asyncProperty(scenario, async ({ limits: rateLimit, maxUses, steps }) => {
          const id = await key(store);
          let state: CounterState = initialCounters(0);
          let holds: Record<string, Hold> | null = null;
          const taken: string[] = [];
          let now = NOON - 1_500;
          for (const { kind, advance, units, unspent, pick, leaseMs } of steps) {
            now += advance;
            if (kind === 'settle' && taken.length > 0) {
              const given = settlement(taken[pick % taken.length] as string, unspent, now, rateLimit);
              await settle(id, given);
              const decided = decideSettlement(state, holds, given);
              if (decided) ({ next: state, holds } = decided);
            } else if (kind === 'consume') {
              const given = request(now, maxUses, rateLimit);
              const decided = decideConsume(state, given);
              expect(defined(await store.consume(id, given))).toEqual(defined(decided.outcome));
              if (decided.next) state = decided.next;
            } else {
              const given = reservation(now, units, maxUses, rateLimit, leaseMs);
              const decided = decideReservation(state, holds, given);
              const outcome: ReserveOutcome | null = await reserve(id, given);
              expect(defined(outcome)).toEqual(defined(decided.outcome));
              if (decided.next) {
                state = decided.next;
                holds = decided.holds;
                taken.push(given.lease);
              }
            }
          }
          expect((await store.findById(id))?.useCount).toBe(state.useCount);
        }),
        { numRuns: suite.agreement.numRuns, ...(suite.agreement.seed === undefined ? {} : { seed: suite.agreement.seed }) },
      );
    });
  });
}
