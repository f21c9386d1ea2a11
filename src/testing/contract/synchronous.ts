/**
 * Contract feature: the synchronous consume (`consumeNow`), an optional capability of stores that
 * count in the caller's own process. It must be the very consume `consume` is: answered before it
 * returns (never a promise), deciding as `decideConsume` does over the same counters, so that
 * keygate can call either, interleaved, for the same key.
 *
 * The tests run when the store declares `capabilities: { synchronous: true }` and are reported as
 * skipped otherwise.
 */
import { type CounterState, decideConsume, initialCounters } from '../../policy/limits.js';
import type { ApiKeyStore, ConsumeOutcome, ConsumeRequest } from '../../stores/store.js';
import type { RateLimit } from '../../types.js';
import { type ContractSuite, NOON, makeRecord, request } from './shared.js';

/** The store's `consumeNow` (the capability check guards the declaration; this names what is missing). */
function consumeNowOf(store: ApiKeyStore): NonNullable<ApiKeyStore['consumeNow']> {
  if (!store.consumeNow) throw new Error('capabilities.synchronous is declared, but the store has no consumeNow() method');
  return store.consumeNow.bind(store);
}

/** Registers the synchronous consume tests, skipped unless the store declares the capability. */
export function synchronousContract(suite: ContractSuite): void {
  const { describe, testWhen, expect } = suite;
  const test = (title: string, body: (store: ApiKeyStore) => Promise<void>) => testWhen('synchronous', title, body);

  describe('synchronous consume (capability: synchronous)', () => {
    test('consumeNow answers before it returns, and decides as consume and decideConsume do, interleaved with consume', async (store) => {
      const consumeNow = consumeNowOf(store);
      const record = makeRecord();
      await store.insert(record);
      const limits: RateLimit = { perSecond: 2, burst: 3, perMinute: 7, perDay: 9 };
      let state: CounterState = initialCounters(0);
      for (let i = 0; i < 24; i++) {
        const given: ConsumeRequest = request(NOON + i * 400, 20, limits);
        const expected = decideConsume(state, given);
        let outcome: ConsumeOutcome | null;
        if (i % 2 === 0) {
          const answer: unknown = consumeNow(record.id, given);
          expect(answer instanceof Promise || typeof (answer as { then?: unknown } | null)?.then === 'function').toBe(false);
          outcome = answer as ConsumeOutcome | null;
        } else outcome = await store.consume(record.id, given);
        expect(outcome).toEqual(expected.outcome);
        if (expected.next) state = expected.next;
      }
      expect((await store.findById(record.id))?.useCount).toBe(state.useCount);
      expect(consumeNow('no-such-key', request(NOON, null, null))).toBeNull();
    });

    test('consumeNow refuses a revoked or suspended key and counts nothing', async (store) => {
      const consumeNow = consumeNowOf(store);
      const revoked = makeRecord({ status: 'revoked', revokedAt: new Date(NOON - 1) });
      const suspended = makeRecord({ status: 'suspended' });
      await store.insert(revoked);
      await store.insert(suspended);
      expect(consumeNow(revoked.id, request(NOON, null, null))).toMatchObject({ admitted: false, refusal: 'api_key_revoked' });
      expect(consumeNow(suspended.id, request(NOON, null, null))).toMatchObject({ admitted: false, refusal: 'api_key_disabled' });
      expect((await store.findById(revoked.id))?.useCount).toBe(0);
      expect((await store.findById(suspended.id))?.useCount).toBe(0);
    });
  });
}
