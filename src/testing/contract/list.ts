/**
 * Contract feature: `list`. Records come in (createdAt, id) order, filtered by owner, tenant and
 * status, at most `limit` at a time, and keyset pagination with `after` visits each record exactly
 * once, even among tied createdAt and while records are being inserted. The records here are
 * never deleted; how `list` treats deleted records (`includeDeleted`) is tested with delete and purge.
 */
import type { ApiKeyStore } from '../../stores/store.js';
import type { ApiKeyRecord } from '../../types.js';
import { CREATED, type ContractSuite, type ListFilters, NOON, SECOND, byPosition, ids, makeRecord, seed, walkPages } from './shared.js';

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

/** Filters of a list query, and the predicate that selects the same records. */
type FilterCase = { query: ListFilters; keep: (record: ApiKeyRecord) => boolean };

/** Registers the `list` tests. */
export function listContract(suite: ContractSuite): void {
  const { describe, test, expect } = suite;

  /** Checks that each query returns exactly the fixture's records `keep` selects, in order. */
  async function expectFiltered(store: ApiKeyStore, records: ApiKeyRecord[], cases: FilterCase[]): Promise<void> {
    for (const { query, keep } of cases) {
      expect({ query, ids: ids(await store.list({ ...query, limit: 100 })) }).toEqual({ query, ids: ids(records.filter(keep).sort(byPosition)) });
    }
  }

  describe('list', () => {
    test('returns every record ordered by (createdAt, id) ascending, whatever the insertion order', async (store) => {
      const records = await seed(store, listFixture());
      const listed = await store.list({ limit: 100 });
      expect(listed).toStrictEqual([...records].sort(byPosition));
    });

    test('filters by ownerId, by tenantId and by status', async (store) => {
      const records = await seed(store, listFixture());
      await expectFiltered(store, records, [
        { query: { ownerId: 'alice' }, keep: (r) => r.ownerId === 'alice' },
        { query: { ownerId: 'carol' }, keep: (r) => r.ownerId === 'carol' },
        { query: { tenantId: 't2' }, keep: (r) => r.tenantId === 't2' },
        { query: { status: 'active' }, keep: (r) => r.status === 'active' },
        { query: { status: 'suspended' }, keep: (r) => r.status === 'suspended' },
        { query: { status: 'revoked' }, keep: (r) => r.status === 'revoked' },
      ]);
      expect(await store.list({ ownerId: 'nobody', limit: 100 })).toStrictEqual([]);
    });

    test('combines filters', async (store) => {
      const records = await seed(store, listFixture());
      await expectFiltered(store, records, [
        { query: { ownerId: 'alice', tenantId: 't1' }, keep: (r) => r.ownerId === 'alice' && r.tenantId === 't1' },
        {
          query: { ownerId: 'alice', tenantId: 't1', status: 'active' },
          keep: (r) => r.ownerId === 'alice' && r.tenantId === 't1' && r.status === 'active',
        },
        { query: { tenantId: 't1', status: 'revoked' }, keep: (r) => r.tenantId === 't1' && r.status === 'revoked' },
      ]);
      expect(await store.list({ ownerId: 'carol', tenantId: 't1', limit: 100 })).toStrictEqual([]);
    });

    test('returns at most limit records, the first ones in order', async (store) => {
      const sorted = (await seed(store, listFixture())).sort(byPosition);
      for (const limit of [1, 4, sorted.length, sorted.length + 5]) {
        expect({ limit, ids: ids(await store.list({ limit })) }).toEqual({ limit, ids: ids(sorted.slice(0, limit)) });
      }
      const alice = sorted.filter((r) => r.ownerId === 'alice');
      expect(ids(await store.list({ ownerId: 'alice', limit: 2 }))).toEqual(ids(alice.slice(0, 2)));
    });

    test('pages with after, visiting every record exactly once even among identical createdAt', async (store) => {
      const sorted = (await seed(store, listFixture())).sort(byPosition);
      for (const pageSize of [1, 2, 3, 4, sorted.length]) {
        const pages = await walkPages(store, {}, pageSize, sorted.length + 2);
        for (const page of pages) expect(page.length <= pageSize).toBe(true);
        expect({ pageSize, visited: pages.flatMap(ids) }).toEqual({ pageSize, visited: ids(sorted) });
      }
    });

    test('pages with after and filters together', async (store) => {
      const records = await seed(store, listFixture());
      const expected = ids(records.filter((r) => r.tenantId === 't1').sort(byPosition));
      const pages = await walkPages(store, { tenantId: 't1' }, 2, records.length + 1);
      expect(pages.flatMap(ids)).toEqual(expected);
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
}
