/**
 * Contract feature: `insert`, `findById` and `findByKeyPrefix`. Records come back exactly as they
 * went in (types included), copies never share state with the store, and an id or keyPrefix
 * cannot be taken twice.
 */
import { randomUUID } from 'node:crypto';
import { randomBase62 } from '../../key/base62.js';
import { OPTIONAL_FIELDS, RECORD_FIELDS } from '../../record/schema.js';
import type { RateLimit } from '../../types.js';
import {
  CREATED,
  type ContractSuite,
  NOON,
  consumeTimes,
  deepCopy,
  errorShape,
  hasOwn,
  ids,
  makeFullRecord,
  makeRecord,
  rejectionOf,
  request,
  seed,
} from './shared.js';

/** Registers the `insert and find` tests. */
export function recordsContract(suite: ContractSuite): void {
  const { describe, test, expect } = suite;

  describe('insert and find', () => {
    test('round-trips a record with every field set, by id and by keyPrefix', async (store) => {
      const record = makeFullRecord();
      // The fixture must really set every field of the schema, or a new field goes unchecked.
      for (const { field } of RECORD_FIELDS) expect({ field, set: record[field] !== undefined }).toEqual({ field, set: true });
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
        // Every field with an initial value (null, [], {}, 0, 'active') comes back as exactly that.
        for (const { field, spec } of RECORD_FIELDS) {
          if (spec.initial) expect({ field, value: found[field] }).toStrictEqual({ field, value: spec.initial() });
        }
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

    for (const taken of ['id', 'keyPrefix'] as const) {
      test(`rejects a duplicate ${taken} with already_exists and changes nothing`, async (store) => {
        const first = makeFullRecord();
        await store.insert(first);
        const duplicate = makeRecord({ [taken]: first[taken], name: 'duplicate' });

        const error = await rejectionOf(() => store.insert(duplicate));
        expect(errorShape(error)).toEqual({ keygateError: true, code: 'already_exists' });
        expect(await store.findById(first.id)).toStrictEqual(first);
        expect(await store.findByKeyPrefix(first.keyPrefix)).toStrictEqual(first);
        // The duplicate's other, free, identity was not stored either.
        if (taken !== 'id') expect(await store.findById(duplicate.id)).toBeNull();
        if (taken !== 'keyPrefix') expect(await store.findByKeyPrefix(duplicate.keyPrefix)).toBeNull();
        expect(ids(await store.list({ limit: 10 }))).toEqual([first.id]);
      });
    }

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
}
