/**
 * Contract feature: `update`. A patch changes exactly the fields it gives (`undefined` leaves a
 * field, `null` clears it), never the counters; a revoked key stays revoked; and a revocation is
 * stamped by the store itself (`revokedAt` = the earlier of the stored value and
 * `patch.updatedAt`), atomically with the write.
 */
import { randomUUID } from 'node:crypto';
import { type FieldKind, PATCHABLE_FIELDS, RECORD_FIELDS } from '../../record/schema.js';
import type { ApiKeyPatch } from '../../stores/store.js';
import type { ApiKeyRecord } from '../../types.js';
import {
  type ContractSuite,
  DAY,
  NOON,
  SECOND,
  consumeTimes,
  deepCopy,
  errorShape,
  hasOwn,
  makeFullRecord,
  makeRecord,
  rejectionOf,
  request,
  seed,
} from './shared.js';

/** Kinds a patch may clear with `null` (an optional text is removed instead). */
const CLEARABLE_KINDS: ReadonlySet<FieldKind> = new Set(['optionalText', 'nullableCount', 'nullableInstant', 'rateLimit']);

/**
 * Patchable fields a patch never clears: a key is deleted once, so `ApiKeyPatch.deletedAt` is a
 * Date or absent, never `null` (the delete and purge tests check it).
 */
const NEVER_CLEARED: ReadonlySet<string> = new Set(['deletedAt']);

/** The patchable fields `null` clears, from the schema, so a new nullable field is checked without an edit. */
const CLEARABLE_FIELDS = RECORD_FIELDS.filter(
  ({ field, spec }) => PATCHABLE_FIELDS.includes(field) && CLEARABLE_KINDS.has(spec.kind) && !NEVER_CLEARED.has(field),
);

/** Registers the `update` tests, the revoked-stays-revoked rule and the revocation stamp. */
export function updateContract(suite: ContractSuite): void {
  const { describe, test, expect } = suite;

  describe('update', () => {
    test('applies only the fields given (undefined leaves a field alone) and sets updatedAt', async (store) => {
      const record = makeFullRecord();
      await store.insert(record);
      const updatedAt = new Date(NOON);

      // Every patchable field present as undefined, except the one change.
      const untouched = Object.fromEntries(PATCHABLE_FIELDS.map((field) => [field, undefined]));
      const updated = await store.update(record.id, { ...untouched, name: 'renamed', updatedAt } as ApiKeyPatch);
      const expected = { ...record, name: 'renamed', updatedAt };
      expect(updated).toStrictEqual(expected);
      expect(await store.findById(record.id)).toStrictEqual(expected);
      expect(await store.findByKeyPrefix(record.keyPrefix)).toStrictEqual(expected);
    });

    test('replaces every patchable field, metadata and arrays as a whole', async (store) => {
      // Never revoked nor deleted, so the patch's revokedAt and deletedAt apply as given.
      const record = makeFullRecord({ status: 'active', revokedAt: null, deletedAt: null });
      await store.insert(record);
      // Required: a patchable field added to ApiKeyPatch does not compile until it is given here.
      const patch: Required<ApiKeyPatch> = {
        name: 'patched',
        description: 'new description',
        scopes: ['only:this'],
        allowedIps: ['198.51.100.0/24'],
        maxUses: 5,
        rateLimit: { perDay: 50 },
        expiresAt: new Date(NOON + DAY),
        metadata: { replaced: { entirely: true } },
        tags: [],
        allowedOrigins: ['https://patched.example.com'],
        requireHttps: false,
        clientCertificateSha256: ['f'.repeat(64)],
        maxConcurrent: 3,
        rotationFrequencyDays: 30,
        alerts: { quotaThreshold: 0.5 },
        deletedAt: new Date(NOON),
        status: 'revoked',
        revokedAt: new Date(NOON),
        updatedAt: new Date(NOON),
      };
      expect(Object.keys(patch).sort()).toEqual([...PATCHABLE_FIELDS].sort());

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

      const patch: Record<string, unknown> = { updatedAt };
      const expected: Record<string, unknown> = { ...record, updatedAt };
      for (const { field, spec } of CLEARABLE_FIELDS) {
        patch[field] = null;
        if (spec.kind === 'optionalText') delete expected[field];
        else expected[field] = null;
      }
      const updated = await store.update(record.id, patch as unknown as ApiKeyPatch);
      expect(updated).toStrictEqual(expected);
      const found = await store.findById(record.id);
      expect(found).toStrictEqual(expected);
      expect(found ? hasOwn(found, 'description') : 'missing').toBe(false);
      for (const { field, spec } of CLEARABLE_FIELDS) {
        if (spec.kind === 'optionalText') expect({ field, present: found ? hasOwn(found, field) : 'missing' }).toEqual({ field, present: false });
      }
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

    // -------------------------------------------------------------------------------------------
    describe('a revoked key stays revoked', () => {
      test('refuses to change the status of a revoked record and changes nothing', async (store) => {
        const record = makeRecord({ status: 'revoked', revokedAt: new Date(NOON - DAY) });
        await store.insert(record);
        for (const status of ['active', 'suspended'] as const) {
          const error = await rejectionOf(() => store.update(record.id, { status, updatedAt: new Date(NOON) }));
          expect(errorShape(error)).toEqual({ keygateError: true, code: 'invalid_argument', field: 'status' });
        }
        expect(await store.findById(record.id)).toStrictEqual(record);
      });

      test('refuses to change the status once revokedAt has passed, whatever the status says', async (store) => {
        const record = makeRecord({ status: 'active', revokedAt: new Date(NOON - SECOND) });
        await store.insert(record);
        const error = await rejectionOf(() => store.update(record.id, { status: 'suspended', updatedAt: new Date(NOON) }));
        expect(errorShape(error)).toEqual({ keygateError: true, code: 'invalid_argument', field: 'status' });
        expect(await store.findById(record.id)).toStrictEqual(record);
      });

      test('still changes other fields of a revoked record, and the status of a key in its grace period', async (store) => {
        const revoked = makeRecord({ status: 'revoked', revokedAt: new Date(NOON - DAY) });
        const retiring = makeRecord({ revokedAt: new Date(NOON + DAY) });
        await seed(store, [revoked, retiring]);
        expect((await store.update(revoked.id, { name: 'renamed', status: 'revoked', updatedAt: new Date(NOON) }))?.name).toBe('renamed');
        expect((await store.update(retiring.id, { status: 'suspended', updatedAt: new Date(NOON) }))?.status).toBe('suspended');
      });
    });

    // -------------------------------------------------------------------------------------------
    describe('a revocation is stamped by the store', () => {
      // The patch carries no revokedAt: the store computes it from what it holds, in the same
      // atomic step as the write, so a revocation can neither be postponed nor lost to a race.
      const cases: { title: string; stored: Partial<ApiKeyRecord>; revokedAt: number }[] = [
        { title: 'a key never revoked is revoked at patch.updatedAt', stored: { revokedAt: null }, revokedAt: NOON },
        {
          title: 'a key already revoked keeps the instant it was revoked',
          stored: { status: 'revoked', revokedAt: new Date(NOON - DAY) },
          revokedAt: NOON - DAY,
        },
        {
          title: 'a rotated-out key whose grace period has ended keeps its revokedAt',
          stored: { revokedAt: new Date(NOON - SECOND) },
          revokedAt: NOON - SECOND,
        },
        {
          title: 'a key in a rotation grace period stops now: its future revokedAt becomes patch.updatedAt',
          stored: { revokedAt: new Date(NOON + DAY) },
          revokedAt: NOON,
        },
      ];
      for (const { title, stored, revokedAt } of cases) {
        test(title, async (store) => {
          const record = makeRecord(stored);
          await store.insert(record);

          const updated = await store.update(record.id, { status: 'revoked', updatedAt: new Date(NOON) });
          const expected = { ...record, status: 'revoked', revokedAt: new Date(revokedAt), updatedAt: new Date(NOON) };
          expect(updated).toStrictEqual(expected);
          expect(await store.findById(record.id)).toStrictEqual(expected);
          expect(await store.consume(record.id, request(NOON, null, null))).toEqual({ admitted: false, refusal: 'api_key_revoked', useCount: 0 });
        });
      }

      test('concurrent revocations and reactivations: the key ends revoked at the earliest revocation', async (store) => {
        const record = makeRecord();
        await store.insert(record);
        // Revocation instants out of order, so the earliest is neither the first nor the last sent.
        const revokeAt = [5, 2, 8, 3, 9, 4, 7, 6].map((seconds) => NOON + seconds * SECOND);
        const calls = revokeAt.flatMap((at, i) => [
          { kind: 'revoke' as const, at, call: store.update(record.id, { status: 'revoked', updatedAt: new Date(at) }) },
          { kind: 'reactivate' as const, at: NOON + i, call: store.update(record.id, { status: 'active', updatedAt: new Date(NOON + i) }) },
        ]);
        const settled = await Promise.allSettled(calls.map(({ call }) => call));

        const revokedAt: number[] = [];
        calls.forEach(({ kind, at }, i) => {
          const outcome = settled[i];
          if (!outcome) throw new Error('a call went missing');
          if (kind === 'revoke') {
            // Revoking a revoked key is allowed: every revocation succeeds, never later than its own instant.
            expect({ kind, at, status: outcome.status }).toEqual({ kind, at, status: 'fulfilled' });
            if (outcome.status !== 'fulfilled') return;
            const returned = outcome.value;
            expect({ kind, at, status: returned?.status, stampedByThen: (returned?.revokedAt?.getTime() ?? Infinity) <= at }).toEqual({
              kind,
              at,
              status: 'revoked',
              stampedByThen: true,
            });
            revokedAt.push(at);
          } else if (outcome.status === 'rejected') {
            expect({ kind, at, error: errorShape(outcome.reason) }).toEqual({
              kind,
              at,
              error: { keygateError: true, code: 'invalid_argument', field: 'status' },
            });
          } else {
            // A reactivation may only have succeeded before every revocation: it saw no revokedAt.
            expect({ kind, at, status: outcome.value?.status, revokedAt: outcome.value?.revokedAt }).toEqual({
              kind,
              at,
              status: 'active',
              revokedAt: null,
            });
          }
        });

        const found = await store.findById(record.id);
        expect({ status: found?.status, revokedAt: found?.revokedAt?.getTime() }).toEqual({
          status: 'revoked',
          revokedAt: Math.min(...revokedAt),
        });
        expect(found?.revokedAt?.getTime()).toBe(NOON + 2 * SECOND);
      });
    });
  });
}
