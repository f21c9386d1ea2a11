/**
 * Contract feature: `consume`. One atomic, all-or-nothing check and count per call: max uses, the
 * UTC-day quota and the token bucket of the request, with the most lasting refusal reported; and,
 * before any limit, the lifecycle of the record as stored now (revoked, suspended, expired, a
 * passed deadline), which is what makes a revocation final in every process at once.
 */
import { randomUUID } from 'node:crypto';
import type { ConsumeOutcome, ConsumeRequest } from '../../stores/store.js';
import type { ApiKeyRecord, RateLimit } from '../../types.js';
import {
  type ContractSuite,
  DAY,
  MIDNIGHT,
  NOON,
  SECOND,
  ascending,
  consumeConcurrently,
  consumeTimes,
  makeRecord,
  range,
  request,
  seed,
} from './shared.js';

/** Registers the `consume` tests, limits first, then the lifecycle refusals. */
export function consumeContract(suite: ContractSuite): void {
  const { describe, test, expect } = suite;

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
        countedAt: NOON, // counted at the key's latest use: its counters never move back in time
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
        countedAt: nextMidnight + 10,
      });
      expect(await store.consume(record.id, request(nextMidnight - 5, null, limits))).toEqual({
        admitted: false,
        refusal: 'quota_exceeded',
        useCount: 2,
        dayCount: 2,
        countedAt: nextMidnight + 10,
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

    // One limit of 50 at a time, 200 requests at once: exactly 50 get in, each seeing its own count.
    const atomicCases: {
      title: string;
      record: Partial<ApiKeyRecord>;
      request: ConsumeRequest;
      counter: (outcome: ConsumeOutcome) => number | undefined;
      counts: number[];
      refusal: ConsumeOutcome['refusal'];
    }[] = [
      {
        title: 'against maxUses 50',
        record: { maxUses: 50 },
        request: request(NOON, 50, null),
        counter: (o) => o.useCount,
        counts: range(1, 50),
        refusal: 'usage_exhausted',
      },
      {
        title: 'against perDay 50',
        record: { rateLimit: { perDay: 50 } },
        request: request(NOON, null, { perDay: 50 }),
        counter: (o) => o.dayCount,
        counts: range(1, 50),
        refusal: 'quota_exceeded',
      },
      {
        title: 'against a burst of 50 at one instant',
        record: { rateLimit: { perSecond: 1, burst: 50 } },
        request: request(NOON, null, { perSecond: 1, burst: 50 }),
        counter: (o) => o.tokens,
        counts: range(0, 49),
        refusal: 'rate_limited',
      },
    ];
    for (const atomic of atomicCases) {
      test(`is atomic: 200 concurrent consumes ${atomic.title} admit exactly 50`, async (store) => {
        const record = makeRecord(atomic.record);
        await store.insert(record);

        const { admitted, refused } = await consumeConcurrently(store, record.id, 200, atomic.request);
        expect(admitted).toHaveLength(50);
        expect(ascending(admitted.map((o) => atomic.counter(o) ?? -1))).toEqual(atomic.counts);
        expect(refused.map((o) => o?.refusal)).toEqual(Array(150).fill(atomic.refusal));
        expect((await store.findById(record.id))?.useCount).toBe(50);
      });
    }

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
}
