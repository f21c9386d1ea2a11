/**
 * Contract feature: `rotate`. The replacement is inserted and the old record retired in one step,
 * carrying the uses the old key has left; a key already retired or retiring is never rotated again
 * (else a key in its grace period could mint replacement after replacement, each with the full
 * remaining uses); a taken id or keyPrefix changes nothing.
 */
import { randomUUID } from 'node:crypto';
import type { StoreRotation } from '../../stores/store.js';
import type { ApiKeyRecord } from '../../types.js';
import {
  type ContractSuite,
  DAY,
  NOON,
  SECOND,
  byPosition,
  consumeTimes,
  errorShape,
  ids,
  makeFullRecord,
  makeRecord,
  makeReplacement,
  rejectionOf,
  request,
  seed,
} from './shared.js';

/** Registers the `rotate` tests. */
export function rotateContract(suite: ContractSuite): void {
  const { describe, test, expect } = suite;

  describe('rotate', () => {
    test('inserts the replacement and retires the old record in one step, carrying remaining uses', async (store) => {
      const old = makeFullRecord({ status: 'active', revokedAt: null, maxUses: 10, useCount: 0, rateLimit: null });
      await store.insert(old);
      await consumeTimes(store, old.id, 4, request(NOON, 10, null));
      const before = await store.findById(old.id);
      if (!before) throw new Error('the old record vanished');

      const now = NOON + SECOND;
      const replacement = makeReplacement(old, now);
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
      const replacement = makeReplacement(old, now);

      const result = await store.rotate({ oldId: old.id, replacement, oldRevokedAt: graceEnd, now: new Date(now) });
      const expectedOld = { ...old, revokedAt: graceEnd, updatedAt: new Date(now) };
      expect(result?.old).toStrictEqual(expectedOld);
      expect(result?.old.status).toBe('active');
      expect(result?.replacement).toStrictEqual({ ...replacement, maxUses: 6 });
      expect(await store.findById(old.id)).toStrictEqual(expectedOld);
    });

    test('the replacement takes the settings the old record holds at the rotation, not the ones the caller read earlier', async (store) => {
      // The caller (the manager) read the old key, then an update suspended it, narrowed its scopes
      // and IPs and removed its description, then the rotation reached the store.
      const read = makeFullRecord({ status: 'active', revokedAt: null, maxUses: 10, useCount: 0, rateLimit: { perSecond: 5 } });
      await store.insert(read);
      const current = await store.update(read.id, {
        status: 'suspended',
        scopes: ['leads:read'],
        allowedIps: ['10.0.0.1'],
        description: null,
        rateLimit: { perSecond: 1, perDay: 100 },
        updatedAt: new Date(NOON),
      });
      if (!current) throw new Error('update returned null for a known id');
      const stale = makeReplacement(read, NOON + SECOND);
      expect(stale.description === undefined).toBe(false);

      const result = await store.rotate({ oldId: read.id, replacement: stale, oldRevokedAt: new Date(NOON + DAY), now: new Date(NOON + SECOND) });
      if (!result) throw new Error('rotate returned null for a known id');
      const expected: ApiKeyRecord = { ...stale };
      delete expected.description;
      Object.assign(expected, { status: 'suspended', scopes: ['leads:read'], allowedIps: ['10.0.0.1'], rateLimit: { perSecond: 1, perDay: 100 }, maxUses: 10 });
      expect(result.replacement).toStrictEqual(expected);
      expect(await store.findById(stale.id)).toStrictEqual(expected);
    });

    test('carries remaining uses never below 0, and no limit stays no limit', async (store) => {
      const overused = makeRecord({ maxUses: 10, useCount: 12 });
      const exact = makeRecord({ maxUses: 3, useCount: 3 });
      const unlimited = makeRecord({ maxUses: null, useCount: 40 });
      await seed(store, [overused, exact, unlimited]);
      const at = { oldRevokedAt: new Date(NOON), oldStatus: 'revoked' as const, now: new Date(NOON) };

      const a = await store.rotate({ oldId: overused.id, replacement: makeReplacement(overused, NOON), ...at });
      const b = await store.rotate({ oldId: exact.id, replacement: makeReplacement(exact, NOON), ...at });
      const c = await store.rotate({ oldId: unlimited.id, replacement: makeReplacement(unlimited, NOON), ...at });
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
        replacement: makeReplacement(old, NOON),
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

    for (const taken of ['keyPrefix', 'id'] as const) {
      test(`rejects a replacement whose ${taken} is taken with already_exists and changes nothing`, async (store) => {
        const old = makeFullRecord({ status: 'active', revokedAt: null });
        const other = makeRecord();
        await seed(store, [old, other]);
        const replacement = makeReplacement(old, NOON, { [taken]: other[taken] });

        const error = await rejectionOf(() =>
          store.rotate({ oldId: old.id, replacement, oldRevokedAt: new Date(NOON), oldStatus: 'revoked', now: new Date(NOON) }),
        );
        expect(errorShape(error)).toEqual({ keygateError: true, code: 'already_exists' });
        expect(await store.findById(old.id)).toStrictEqual(old);
        expect(await store.findById(other.id)).toStrictEqual(other);
        expect(await store.findByKeyPrefix(other.keyPrefix)).toStrictEqual(other);
        // The replacement's other, free, identity was not stored either.
        if (taken !== 'id') expect(await store.findById(replacement.id)).toBeNull();
        if (taken !== 'keyPrefix') expect(await store.findByKeyPrefix(replacement.keyPrefix)).toBeNull();
        expect(await store.list({ limit: 10 })).toStrictEqual([old, other].sort(byPosition));
      });
    }

    // -------------------------------------------------------------------------------------------
    describe('a retired key is not rotated again', () => {
      const refusals: { title: string; old: Partial<ApiKeyRecord>; rotation: Pick<StoreRotation, 'oldRevokedAt' | 'oldStatus'> }[] = [
        {
          title: 'refuses a record already rotated (revokedAt set) and changes nothing',
          old: { maxUses: 100, revokedAt: new Date(NOON + DAY) },
          rotation: { oldRevokedAt: new Date(NOON + DAY) },
        },
        {
          title: 'refuses a revoked record and changes nothing',
          old: { status: 'revoked', revokedAt: null },
          rotation: { oldRevokedAt: new Date(NOON), oldStatus: 'revoked' },
        },
      ];
      for (const refusal of refusals) {
        test(refusal.title, async (store) => {
          const old = makeRecord(refusal.old);
          await store.insert(old);
          const replacement = makeRecord({ rotatedFromId: old.id });
          const error = await rejectionOf(() => store.rotate({ oldId: old.id, replacement, ...refusal.rotation, now: new Date(NOON) }));
          expect(errorShape(error)).toEqual({ keygateError: true, code: 'invalid_argument', field: 'id' });
          expect(await store.findById(old.id)).toStrictEqual(old);
          expect(await store.findById(replacement.id)).toBeNull();
          expect(await store.findByKeyPrefix(replacement.keyPrefix)).toBeNull();
        });
      }

      test('of five concurrent rotations of one key, exactly one succeeds', async (store) => {
        const old = makeRecord({ maxUses: 100 });
        await store.insert(old);
        const attempts = await Promise.allSettled(
          Array.from({ length: 5 }, () =>
            store.rotate({ oldId: old.id, replacement: makeRecord({ rotatedFromId: old.id }), oldRevokedAt: new Date(NOON + DAY), now: new Date(NOON) }),
          ),
        );
        expect(attempts.filter((attempt) => attempt.status === 'fulfilled')).toHaveLength(1);
        for (const attempt of attempts) {
          if (attempt.status === 'rejected') {
            expect(errorShape(attempt.reason)).toEqual({ keygateError: true, code: 'invalid_argument', field: 'id' });
          }
        }
        expect((await store.list({ limit: 10 })).filter((record) => record.rotatedFromId === old.id)).toHaveLength(1);
      });
    });
  });
}
