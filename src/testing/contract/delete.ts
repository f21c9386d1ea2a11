/**
 * Contract feature: soft delete and purge, required of every store.
 *
 * - Delete is an `update`: keygate deletes a key with one patch, `{ status: 'revoked', deletedAt,
 *   updatedAt }`, which revokes it (`revokedAt` stamped by the revocation rule) and marks it
 *   deleted. A key is deleted once: when the stored record has a `deletedAt`, it stays, whatever
 *   a later patch says. A deleted record is still found by id and by keyPrefix.
 * - `list` leaves deleted records out unless `includeDeleted`, with every filter and with keyset
 *   pagination; a page still has `limit` records unless it is the last, however many deleted
 *   records lie between the live ones.
 * - `purge({ deletedBefore })` removes for good exactly the records deleted before that instant
 *   (deleted at it, later, or not at all: untouched), with everything the store keeps for them
 *   (the keyPrefix index, counters, leases), and returns how many it removed. The id and keyPrefix
 *   of a purged record are free again: a new record may take them, and starts from its own
 *   counters. Each record goes in one atomic step, so a consume or update racing the purge finds
 *   the record whole or not at all; concurrent purges remove, and count, each record once.
 * - With the subscribe capability, listeners hear the id of every purged record.
 */
import type { ApiKeyPatch, ApiKeyStore, ConsumeOutcome } from '../../stores/store.js';
import type { ApiKeyRecord, RateLimit } from '../../types.js';
import {
  CREATED,
  type ContractSuite,
  DAY,
  type ListFilters,
  NOON,
  SECOND,
  byPosition,
  claiming,
  consumeTimes,
  errorShape,
  eventually,
  ids,
  makeFullRecord,
  makeRecord,
  pageSizes,
  probeRequest,
  releaseOf,
  request,
  seed,
  subscribeOf,
  walkPages,
} from './shared.js';

/** The patch keygate's `delete` sends: revoke, and mark deleted, at `at`. */
function deletion(at: number): ApiKeyPatch {
  return { status: 'revoked', deletedAt: new Date(at), updatedAt: new Date(at) };
}

/** A patch that only marks a record deleted at `at`, leaving its status (a store never decides on status). */
function deletedOnly(at: number): ApiKeyPatch {
  return { deletedAt: new Date(at), updatedAt: new Date(at) };
}

/** The records as `findById` returns them now, in the order given (`null` for one that is gone). */
async function current(store: ApiKeyStore, records: readonly ApiKeyRecord[]): Promise<(ApiKeyRecord | null)[]> {
  return Promise.all(records.map((record) => store.findById(record.id)));
}

/** The records as stored now, failing when one is missing. */
async function stored(store: ApiKeyStore, records: readonly ApiKeyRecord[]): Promise<ApiKeyRecord[]> {
  return (await current(store, records)).map((found, i) => {
    if (!found) throw new Error(`the record ${records[i]?.id} vanished`);
    return found;
  });
}

/** Whether `record` matches the filters of a list query (the deleted ones only with `includeDeleted`). */
function matches(record: ApiKeyRecord, filters: ListFilters): boolean {
  return (
    (filters.ownerId === undefined || record.ownerId === filters.ownerId) &&
    (filters.tenantId === undefined || record.tenantId === filters.tenantId) &&
    (filters.status === undefined || record.status === filters.status) &&
    (record.deletedAt === null || filters.includeDeleted === true)
  );
}

/** The filter combinations the list tests try, each without and with the deleted records. */
const FILTERS: readonly ListFilters[] = (
  [
    {},
    { ownerId: 'alice' },
    { tenantId: 't1' },
    { status: 'active' },
    { status: 'revoked' },
    { status: 'suspended' },
    { ownerId: 'alice', tenantId: 't1' },
    { ownerId: 'bob', status: 'revoked' },
    { ownerId: 'alice', tenantId: 't1', status: 'active' },
  ] satisfies ListFilters[]
).flatMap((filters): ListFilters[] => [filters, { ...filters, includeDeleted: false }, { ...filters, includeDeleted: true }]);

/**
 * Sixteen records over two owners, two tenants and every status, with tied createdAt; the odd
 * ones are deleted, some by the insert itself (whatever their status), some later by an update.
 * Returns them as stored.
 */
async function deletedFixture(store: ApiKeyStore): Promise<ApiKeyRecord[]> {
  const statuses = ['active', 'suspended', 'revoked'] as const;
  const records = Array.from({ length: 16 }, (_, i) =>
    makeRecord({
      ownerId: i % 3 === 2 ? 'bob' : 'alice',
      tenantId: i % 4 < 2 ? 't1' : 't2',
      status: statuses[i % 3] ?? 'active',
      createdAt: new Date(CREATED + Math.floor(i / 3) * SECOND),
      // Inserted deleted: the record as a store may hold it, whatever keygate would have done.
      ...(i % 4 === 1 ? { deletedAt: new Date(NOON - DAY) } : {}),
    }),
  );
  await seed(store, [...records].reverse());
  for (const [i, record] of records.entries()) {
    if (i % 8 === 3) await store.update(record.id, deletion(NOON));
    if (i % 8 === 7) await store.update(record.id, deletedOnly(NOON));
  }
  return stored(store, records);
}

/** A fresh record at `CREATED + offset` seconds, deleted (`deletedAt` set, status left) when `deleted`. */
function positioned(offset: number, deleted: boolean, overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return makeRecord({ createdAt: new Date(CREATED + offset * SECOND), ...(deleted ? { deletedAt: new Date(NOON - DAY) } : {}), ...overrides });
}

/** The limits the tests' consumes count under: every window and the bucket, so every counter moves. */
const LIMITS: Readonly<RateLimit> = { perSecond: 100, burst: 1_000, perMinute: 1_000, perHour: 1_000, perDay: 1_000, perMonth: 1_000 };

/** Registers the delete and purge tests. */
export function deleteContract(suite: ContractSuite): void {
  const { describe, test, testWhen, expect } = suite;

  /** Walks `filters` with `pageSize` and checks the walk: full pages until the last, exactly `expected`, in order. */
  async function expectWalk(store: ApiKeyStore, filters: ListFilters, pageSize: number, expected: readonly ApiKeyRecord[]): Promise<void> {
    const pages = await walkPages(store, filters, pageSize, expected.length + 2);
    expect({ filters, pageSize, sizes: pages.map((page) => page.length), visited: pages.flatMap(ids) }).toEqual({
      filters,
      pageSize,
      sizes: pageSizes(expected.length, pageSize),
      visited: ids([...expected].sort(byPosition)),
    });
  }

  /** Checks that a purged record is gone for every call that reads or writes it. */
  async function expectGone(store: ApiKeyStore, record: ApiKeyRecord): Promise<void> {
    const what = { id: record.id };
    expect({ ...what, byId: await store.findById(record.id) }).toEqual({ ...what, byId: null });
    expect({ ...what, byKeyPrefix: await store.findByKeyPrefix(record.keyPrefix) }).toEqual({ ...what, byKeyPrefix: null });
    expect({ ...what, listed: ids(await store.list({ includeDeleted: true, limit: 1_000 })).includes(record.id) }).toEqual({ ...what, listed: false });
  }

  describe('delete and purge', () => {
    // -------------------------------------------------------------------------------------------
    describe('delete (an update with deletedAt)', () => {
      test('revokes and marks deleted in one update; find by id and by keyPrefix still returns the record', async (store) => {
        // Every field set, and in a rotation grace period (revokedAt ahead): the delete stops it now.
        const record = makeFullRecord({ status: 'active', revokedAt: new Date(NOON + DAY) });
        await store.insert(record);

        const updated = await store.update(record.id, deletion(NOON));
        const expected = { ...record, status: 'revoked', revokedAt: new Date(NOON), deletedAt: new Date(NOON), updatedAt: new Date(NOON) };
        expect(updated).toStrictEqual(expected);
        expect(await store.findById(record.id)).toStrictEqual(expected);
        expect(await store.findByKeyPrefix(record.keyPrefix)).toStrictEqual(expected);
        expect(await store.consume(record.id, request(NOON, null, null))).toEqual({ admitted: false, refusal: 'api_key_revoked', useCount: record.useCount });
      });

      test('a key is deleted once: a second delete keeps the first deletedAt and revokedAt', async (store) => {
        const record = makeRecord();
        await store.insert(record);
        await store.update(record.id, deletion(NOON));

        const again = await store.update(record.id, deletion(NOON + DAY));
        const expected = { ...record, status: 'revoked', revokedAt: new Date(NOON), deletedAt: new Date(NOON), updatedAt: new Date(NOON + DAY) };
        expect(again).toStrictEqual(expected);
        expect(await store.findById(record.id)).toStrictEqual(expected);

        // An earlier deletedAt does not move it either.
        const earlier = await store.update(record.id, { deletedAt: new Date(NOON - DAY), updatedAt: new Date(NOON + 2 * DAY) });
        expect(earlier).toStrictEqual({ ...expected, updatedAt: new Date(NOON + 2 * DAY) });
        expect(await store.findByKeyPrefix(record.keyPrefix)).toStrictEqual({ ...expected, updatedAt: new Date(NOON + 2 * DAY) });
      });

      test('a patch with deletedAt sets it on a record never deleted, and changes nothing it does not give', async (store) => {
        const record = makeRecord({ ownerId: 'alice', maxUses: 5 });
        await store.insert(record);
        const updated = await store.update(record.id, deletedOnly(NOON));
        const expected = { ...record, deletedAt: new Date(NOON), updatedAt: new Date(NOON) };
        expect(updated).toStrictEqual(expected);
        expect(await store.findById(record.id)).toStrictEqual(expected);
        // The status is the caller's: a record deleted but still active is consumed as any other.
        expect(await store.consume(record.id, request(NOON, 5, null))).toEqual({ admitted: true, useCount: 1 });
      });

      test('a patch without deletedAt (or with it undefined) leaves the stored deletedAt as it is', async (store) => {
        const record = makeRecord({ status: 'revoked', revokedAt: new Date(NOON - DAY), deletedAt: new Date(NOON - DAY) });
        await store.insert(record);
        const renamed = await store.update(record.id, { name: 'renamed', updatedAt: new Date(NOON) });
        expect(renamed).toStrictEqual({ ...record, name: 'renamed', updatedAt: new Date(NOON) });
        const undefinedDeletedAt = await store.update(record.id, { deletedAt: undefined, updatedAt: new Date(NOON + 1) } as ApiKeyPatch);
        expect(undefinedDeletedAt).toStrictEqual({ ...record, name: 'renamed', updatedAt: new Date(NOON + 1) });
        expect(await store.findById(record.id)).toStrictEqual({ ...record, name: 'renamed', updatedAt: new Date(NOON + 1) });
      });

      test('concurrent deletes agree on one deletedAt, and the key is revoked at the earliest of them', async (store) => {
        const record = makeRecord();
        await store.insert(record);
        // Instants out of order, so the earliest is neither the first nor the last sent.
        const instants = [5, 2, 8, 3, 9, 4, 7, 6].map((seconds) => NOON + seconds * SECOND);
        const updated = await Promise.all(instants.map((at) => store.update(record.id, deletion(at))));

        const found = await store.findById(record.id);
        const deletedAt = found?.deletedAt?.getTime();
        expect(instants).toContain(deletedAt);
        expect(found?.revokedAt?.getTime()).toBe(NOON + 2 * SECOND);
        // Each update saw either no deletedAt (and set it) or the one that stays: all return the same.
        expect(updated.map((result) => result?.deletedAt?.getTime())).toEqual(instants.map(() => deletedAt));
      });
    });

    // -------------------------------------------------------------------------------------------
    describe('list leaves deleted records out unless includeDeleted', () => {
      test('round-trips a deleted record with every field set, listed only with includeDeleted', async (store) => {
        const record = makeFullRecord({ deletedAt: new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6)) });
        await store.insert(record);
        expect(await store.findById(record.id)).toStrictEqual(record);
        expect(await store.findByKeyPrefix(record.keyPrefix)).toStrictEqual(record);
        expect(await store.list({ limit: 10 })).toStrictEqual([]);
        expect(await store.list({ includeDeleted: false, limit: 10 })).toStrictEqual([]);
        expect(await store.list({ includeDeleted: true, limit: 10 })).toStrictEqual([record]);
        const { ownerId, tenantId, status } = record;
        expect(await store.list({ ownerId, tenantId, status, includeDeleted: true, limit: 10 })).toStrictEqual([record]);
      });

      test('with every filter combination (ownerId, tenantId, status), returning deleted records with their deletedAt', async (store) => {
        const records = await deletedFixture(store);
        for (const filters of FILTERS) {
          const expected = records.filter((record) => matches(record, filters)).sort(byPosition);
          expect({ filters, listed: await store.list({ ...filters, limit: 100 }) }).toStrictEqual({ filters, listed: expected });
        }
      });

      test('pages with after and every filter combination, each page full but the last', async (store) => {
        const records = await deletedFixture(store);
        for (const filters of FILTERS) {
          const expected = records.filter((record) => matches(record, filters));
          for (const pageSize of [1, 3]) await expectWalk(store, filters, pageSize, expected);
        }
      });

      test('pages stay full when every other record is deleted: 30 records, limit 4', async (store) => {
        // Triples with the same createdAt, so ties are broken by id across page boundaries.
        const records = Array.from({ length: 30 }, (_, i) =>
          makeRecord({ ownerId: i % 3 === 2 ? 'bob' : 'alice', createdAt: new Date(CREATED + Math.floor(i / 3) * SECOND) }),
        );
        await seed(store, [...records].reverse());
        const sorted = [...records].sort(byPosition);
        // Every other one in list order, deleted by keygate's delete or by a bare deletedAt.
        for (const [i, record] of sorted.entries()) {
          if (i % 4 === 1) await store.update(record.id, deletion(NOON));
          if (i % 4 === 3) await store.update(record.id, deletedOnly(NOON));
        }
        const all = await stored(store, sorted);
        const live = all.filter((record) => record.deletedAt === null);
        expect(live).toHaveLength(15);

        await expectWalk(store, {}, 4, live);
        await expectWalk(store, { includeDeleted: true }, 4, all);
        for (const filters of [{ ownerId: 'alice' }, { status: 'active' as const }, { status: 'active' as const, includeDeleted: true }]) {
          for (const pageSize of [1, 2, 4, 5]) await expectWalk(store, filters, pageSize, all.filter((record) => matches(record, filters)));
        }
        expect(ids(await store.list({ limit: 4 }))).toEqual(ids(live.slice(0, 4)));
      });

      test('pages stay full across a long run of deleted records', async (store) => {
        // Three live, forty deleted, three live: a store that filters what it reads must read on.
        const records = [
          ...[0, 1, 2].map((offset) => positioned(offset, false)),
          ...Array.from({ length: 40 }, (_, i) => positioned(3 + i, true)),
          ...[43, 44, 45].map((offset) => positioned(offset, false)),
        ];
        await seed(store, records);
        const live = records.filter((record) => record.deletedAt === null);
        for (const pageSize of [1, 2, 3, 4, 6, 7]) await expectWalk(store, {}, pageSize, live);
        await expectWalk(store, { includeDeleted: true }, 10, records);
        expect(await store.list({ limit: 5 })).toStrictEqual(live.slice(0, 5));
        expect(await store.list({ after: { createdAt: new Date(CREATED + 2 * SECOND), id: records[2]?.id ?? '' }, limit: 1 })).toStrictEqual(live.slice(3, 4));
      });

      test('neither skips nor repeats live records when records are deleted between page fetches, the cursor included', async (store) => {
        const records = Array.from({ length: 12 }, (_, i) => positioned(Math.floor(i / 2), false));
        await seed(store, records);
        const sorted = [...records].sort(byPosition);
        const first = await store.list({ limit: 4 });
        expect(ids(first)).toEqual(ids(sorted.slice(0, 4)));
        const cursor = first[first.length - 1];
        if (!cursor) throw new Error('the first page is empty');

        // The cursor itself and two records of the next page are deleted before it is fetched.
        const deleted = [cursor, sorted[4], sorted[6]].filter((record): record is ApiKeyRecord => record !== undefined);
        for (const record of deleted) await store.update(record.id, deletion(NOON));

        const visited = ids(first);
        let after = { createdAt: cursor.createdAt, id: cursor.id };
        for (let pages = 0; pages <= records.length; pages++) {
          const page = await store.list({ after, limit: 4 });
          visited.push(...ids(page));
          const last = page[page.length - 1];
          if (!last || page.length < 4) break;
          after = { createdAt: last.createdAt, id: last.id };
        }
        const gone = new Set(ids(deleted));
        expect(visited).toEqual([...ids(first), ...ids(sorted.slice(4).filter((record) => !gone.has(record.id)))]);
      });
    });

    // -------------------------------------------------------------------------------------------
    describe('purge', () => {
      test('removes exactly the records deleted before deletedBefore, and returns their number', async (store) => {
        const live = makeRecord({ createdAt: new Date(CREATED + SECOND) });
        const revoked = makeRecord({ status: 'revoked', revokedAt: new Date(NOON - DAY) });
        const justBefore = makeRecord({ status: 'revoked', revokedAt: new Date(NOON - 1), deletedAt: new Date(NOON - 1) });
        const atBoundary = makeRecord({ status: 'revoked', revokedAt: new Date(NOON), deletedAt: new Date(NOON) });
        const justAfter = makeRecord({ deletedAt: new Date(NOON + 1) });
        const longAgo = makeRecord({ status: 'suspended', deletedAt: new Date(NOON - 365 * DAY) });
        const byUpdate = makeRecord({ createdAt: new Date(CREATED - SECOND) });
        await seed(store, [live, revoked, justBefore, atBoundary, justAfter, longAgo, byUpdate]);
        await store.update(byUpdate.id, deletion(NOON - SECOND));
        const survivors = await stored(store, [live, revoked, atBoundary, justAfter]);

        expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(3);
        for (const record of [justBefore, longAgo, byUpdate]) await expectGone(store, record);
        expect(await current(store, [live, revoked, atBoundary, justAfter])).toStrictEqual(survivors);
        for (const survivor of survivors) expect(await store.findByKeyPrefix(survivor.keyPrefix)).toStrictEqual(survivor);
        expect(await store.list({ includeDeleted: true, limit: 100 })).toStrictEqual([...survivors].sort(byPosition));
        expect(await store.list({ limit: 100 })).toStrictEqual([live, revoked].sort(byPosition));

        // Nothing left to remove before that instant; a later one takes the rest.
        expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(0);
        expect(await store.purge({ deletedBefore: new Date(NOON + 2) })).toBe(2);
        expect(await store.list({ includeDeleted: true, limit: 100 })).toStrictEqual([live, revoked].sort(byPosition));
      });

      test('returns 0 and changes nothing when nothing is deleted before deletedBefore, or the store is empty', async (store) => {
        expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(0);
        const records = await seed(store, [
          makeRecord(),
          makeRecord({ status: 'revoked', revokedAt: new Date(NOON - DAY) }),
          makeRecord({ deletedAt: new Date(NOON) }),
          makeRecord({ deletedAt: new Date(NOON + DAY) }),
        ]);
        const before = await stored(store, records);
        expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(0);
        expect(await current(store, records)).toStrictEqual(before);
        expect(await store.list({ includeDeleted: true, limit: 100 })).toStrictEqual([...before].sort(byPosition));
      });

      test('a purged record is gone for every call: find, list, consume, update, rotate, purge', async (store) => {
        const record = makeRecord({ maxUses: 10, rateLimit: { ...LIMITS } });
        const other = makeRecord();
        await seed(store, [record, other]);
        await consumeTimes(store, record.id, 3, request(NOON - 10 * SECOND, 10, { ...LIMITS }));
        await store.update(record.id, deletion(NOON - SECOND));

        expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(1);
        await expectGone(store, record);
        expect(await store.consume(record.id, request(NOON, 10, { ...LIMITS }))).toBeNull();
        expect(await store.update(record.id, { name: 'ghost', updatedAt: new Date(NOON) })).toBeNull();
        expect(await store.update(record.id, deletion(NOON))).toBeNull();
        const replacement = makeRecord({ rotatedFromId: record.id });
        expect(await store.rotate({ oldId: record.id, replacement, oldRevokedAt: new Date(NOON), oldStatus: 'revoked', now: new Date(NOON) })).toBeNull();
        expect(await store.findById(replacement.id)).toBeNull();
        // None of those calls brought any of it back.
        await expectGone(store, record);
        expect(await store.purge({ deletedBefore: new Date(NOON + DAY) })).toBe(0);
        expect(await store.list({ includeDeleted: true, limit: 10 })).toStrictEqual([other]);
        // A position at the purged record is still a position.
        expect(await store.list({ after: { createdAt: record.createdAt, id: record.id }, includeDeleted: true, limit: 10 })).toStrictEqual(
          byPosition(other, record) > 0 ? [other] : [],
        );
      });

      test('frees the keyPrefix and the id: a new record may take them, and counts from its own counters', async (store) => {
        const byKeyPrefix = makeRecord({ rateLimit: { ...LIMITS } });
        const byId = makeRecord({ rateLimit: { ...LIMITS } });
        await seed(store, [byKeyPrefix, byId]);
        for (const record of [byKeyPrefix, byId]) {
          await consumeTimes(store, record.id, 4, request(NOON - 10 * SECOND, null, { ...LIMITS }));
          await store.update(record.id, deletion(NOON - SECOND));
        }
        expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(2);

        // The same keyPrefix under a new id; the same id (and keyPrefix) again.
        const takesKeyPrefix = makeRecord({ keyPrefix: byKeyPrefix.keyPrefix });
        const takesId = makeRecord({ id: byId.id, keyPrefix: byId.keyPrefix });
        const fresh = makeRecord();
        await seed(store, [takesKeyPrefix, takesId, fresh]);
        expect(await store.findByKeyPrefix(byKeyPrefix.keyPrefix)).toStrictEqual(takesKeyPrefix);
        expect(await store.findById(byKeyPrefix.id)).toBeNull();
        expect(await store.findById(byId.id)).toStrictEqual(takesId);
        expect(await store.findByKeyPrefix(byId.keyPrefix)).toStrictEqual(takesId);
        // No counter of the purged record survived under its id: the new one's are a fresh record's.
        const freshCounters = await store.consume(fresh.id, probeRequest(NOON));
        expect(await store.consume(takesId.id, probeRequest(NOON))).toEqual(freshCounters);
        expect(await store.consume(takesId.id, request(NOON, null, { ...LIMITS }))).toEqual(await store.consume(fresh.id, request(NOON, null, { ...LIMITS })));
      });

      testWhen('concurrency', 'takes the leases of a purged record with it (capability: concurrency)', async (store) => {
        const record = makeRecord({ maxConcurrent: 1 });
        await store.insert(record);
        const held = await store.consume(record.id, claiming(request(NOON - 10 * SECOND, null, null), 1, 'held', 60_000));
        expect(held).toEqual({ admitted: true, useCount: 1, inFlight: 1 });
        await store.update(record.id, deletedOnly(NOON - SECOND));
        expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(1);
        // Releasing a lease of a purged record resolves, as for any unknown record.
        await releaseOf(store)(record.id, 'held');

        const again = makeRecord({ id: record.id, keyPrefix: record.keyPrefix, maxConcurrent: 1 });
        await store.insert(again);
        expect(await store.consume(again.id, claiming(request(NOON, null, null), 1, 'new', 60_000))).toEqual({ admitted: true, useCount: 1, inFlight: 1 });
      });

      test('leaves every other record as it was: every field, its keyPrefix and its counters', async (store) => {
        const survivor = makeFullRecord({ status: 'active', revokedAt: null });
        const deletedLater = makeFullRecord({ ownerId: 'user_43', deletedAt: new Date(NOON + DAY) });
        const victim = makeFullRecord({ status: 'revoked', deletedAt: new Date(NOON - DAY) });
        await seed(store, [survivor, victim, deletedLater]);
        const limits = survivor.rateLimit ?? {};
        await consumeTimes(store, survivor.id, 3, request(NOON - 10 * SECOND, survivor.maxUses, limits));
        const [before] = await stored(store, [survivor]);
        const counters = await store.consume(survivor.id, probeRequest(NOON));

        expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(1);
        await expectGone(store, victim);
        expect(await store.findById(survivor.id)).toStrictEqual(before);
        expect(await store.findByKeyPrefix(survivor.keyPrefix)).toStrictEqual(before);
        expect(await store.findById(deletedLater.id)).toStrictEqual(deletedLater);
        expect(await store.findByKeyPrefix(deletedLater.keyPrefix)).toStrictEqual(deletedLater);
        expect(counters?.useCount).toBe(survivor.useCount + 3);
        expect(await store.consume(survivor.id, probeRequest(NOON))).toEqual(counters);
      });

      test('purges many records in one call, interleaved with live ones', async (store) => {
        // 150 deleted, 50 live, every fourth record live in (createdAt, id) order.
        const records = Array.from({ length: 200 }, (_, i) => positioned(i, i % 4 !== 0, { ownerId: i % 2 === 0 ? 'alice' : 'bob' }));
        await seed(store, records);
        const live = records.filter((record) => record.deletedAt === null);

        expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(150);
        expect(await store.list({ includeDeleted: true, limit: 1_000 })).toStrictEqual(live);
        await expectWalk(store, { includeDeleted: true }, 7, live);
        for (const record of [records[1], records[99], records[199]]) if (record) await expectGone(store, record);
        expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(0);
      });

      // -----------------------------------------------------------------------------------------
      testWhen('subscribe', 'tells a listener the id of every record it purges (capability: subscribe)', async (store) => {
        const purged = [makeRecord({ deletedAt: new Date(NOON - DAY) }), makeRecord({ deletedAt: new Date(NOON - 1) })];
        const byUpdate = makeRecord();
        await seed(store, [...purged, byUpdate, makeRecord(), makeRecord({ deletedAt: new Date(NOON) })]);
        await store.update(byUpdate.id, deletion(NOON - SECOND));
        purged.push(byUpdate);

        const heard: (string | null)[] = [];
        const unsubscribe = subscribeOf(store)((id) => heard.push(id));
        try {
          expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(3);
          // Stores sharing data across processes notify asynchronously: wait, within reason.
          expect(await eventually(() => purged.every((record) => heard.includes(record.id)))).toBe(true);
          for (const record of purged) expect(heard).toContain(record.id);
        } finally {
          unsubscribe();
        }
      });

      // -----------------------------------------------------------------------------------------
      describe('atomic with every other call', () => {
        test('purge racing consumes and updates of the deleted record: no undocumented error, the record ends gone, whole', async (store) => {
          for (let round = 0; round < 5; round++) {
            // Deleted but still active, so the consumes racing the purge are admitted and write counters.
            const victim = makeRecord({ deletedAt: new Date(NOON - DAY), rateLimit: { ...LIMITS } });
            const bystander = makeRecord({ rateLimit: { ...LIMITS } });
            await seed(store, [victim, bystander]);
            const consume = (record: ApiKeyRecord, i: number) => ({
              kind: 'consume' as const,
              call: store.consume(record.id, request(NOON + i, null, { ...LIMITS })),
            });
            const update = (patch: ApiKeyPatch) => ({ kind: 'update' as const, call: store.update(victim.id, patch) });
            const calls = [
              consume(victim, 0),
              update({ name: `renamed ${round}`, updatedAt: new Date(NOON) }),
              consume(victim, 1),
              consume(bystander, 0),
              consume(victim, 2),
              { kind: 'purge' as const, call: store.purge({ deletedBefore: new Date(NOON) }) },
              consume(victim, 3),
              update(deletion(NOON + SECOND)),
              consume(bystander, 1),
              consume(victim, 4),
              update({ status: 'suspended', updatedAt: new Date(NOON + 2 * SECOND) }),
              consume(victim, 5),
              update({ metadata: { round }, updatedAt: new Date(NOON + 3 * SECOND) }),
              consume(bystander, 2),
            ];
            const settled = await Promise.allSettled(calls.map(({ call }) => call));

            settled.forEach((outcome, i) => {
              const kind = calls[i]?.kind;
              if (outcome.status === 'rejected') {
                // The one documented refusal: a status change of a key the delete has revoked.
                expect({ round, kind, error: errorShape(outcome.reason) }).toEqual({
                  round,
                  kind: 'update',
                  error: { keygateError: true, code: 'invalid_argument', field: 'status' },
                });
              } else if (kind === 'purge') {
                expect({ round, purged: outcome.value }).toEqual({ round, purged: 1 });
              } else if (kind === 'update' && outcome.value !== null) {
                // Found whole, and deleted once: a later deletedAt never moved it.
                const found = outcome.value as ApiKeyRecord;
                expect({ round, id: found.id, deletedAt: found.deletedAt }).toEqual({ round, id: victim.id, deletedAt: new Date(NOON - DAY) });
              } else if (kind === 'consume' && outcome.value !== null) {
                const result = outcome.value as ConsumeOutcome;
                expect({ round, admittedOrLifecycle: result.admitted || result.refusal === 'api_key_revoked' || result.refusal === 'api_key_disabled' }).toEqual({
                  round,
                  admittedOrLifecycle: true,
                });
              }
            });

            await expectGone(store, victim);
            expect(await store.consume(victim.id, request(NOON + DAY, null, null))).toBeNull();
            expect(await store.update(victim.id, { name: 'ghost', updatedAt: new Date(NOON + DAY) })).toBeNull();
            expect((await store.findById(bystander.id))?.useCount).toBe(3);

            // Nothing of the victim is left behind under its id: taken again, it has a fresh record's counters.
            const again = makeRecord({ id: victim.id, keyPrefix: victim.keyPrefix });
            const fresh = makeRecord();
            await seed(store, [again, fresh]);
            expect({ round, counters: await store.consume(again.id, probeRequest(NOON + DAY)) }).toEqual({
              round,
              counters: await store.consume(fresh.id, probeRequest(NOON + DAY)),
            });
          }
        });

        test('purge racing the delete itself: the record ends either purged or deleted and whole', async (store) => {
          for (let round = 0; round < 5; round++) {
            const record = makeRecord({ rateLimit: { ...LIMITS } });
            const older = Array.from({ length: 3 }, () => makeRecord({ deletedAt: new Date(NOON - DAY) }));
            await seed(store, [record, ...older]);
            const [updated, purged] = await Promise.all([
              store.update(record.id, deletion(NOON - SECOND)),
              store.purge({ deletedBefore: new Date(NOON) }),
              store.consume(record.id, request(NOON - 2 * SECOND, null, { ...LIMITS })),
              store.consume(record.id, request(NOON - 2 * SECOND, null, { ...LIMITS })),
            ]);
            // The purge cannot remove the record before the delete marked it, so the update found it.
            expect({ round, deletedAt: updated?.deletedAt }).toEqual({ round, deletedAt: new Date(NOON - SECOND) });
            for (const gone of older) await expectGone(store, gone);

            const byId = await store.findById(record.id);
            const byKeyPrefix = await store.findByKeyPrefix(record.keyPrefix);
            const listed = (await store.list({ includeDeleted: true, limit: 1_000 })).filter((found) => found.id === record.id);
            if (purged === 4) {
              expect({ round, byId, byKeyPrefix, listed }).toEqual({ round, byId: null, byKeyPrefix: null, listed: [] });
            } else {
              expect({ round, purged }).toEqual({ round, purged: 3 });
              expect({ round, byKeyPrefix, listed, deletedAt: byId?.deletedAt, status: byId?.status }).toStrictEqual({
                round,
                byKeyPrefix: byId,
                listed: [byId],
                deletedAt: new Date(NOON - SECOND),
                status: 'revoked',
              });
              expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(1);
              await expectGone(store, record);
            }
          }
        });

        test('concurrent purges remove each record once: their counts add up to the records removed', async (store) => {
          const deleted = Array.from({ length: 24 }, (_, i) => positioned(i, true));
          const live = Array.from({ length: 4 }, (_, i) => positioned(i, false));
          await seed(store, [...deleted, ...live]);
          const counts = await Promise.all(Array.from({ length: 4 }, () => store.purge({ deletedBefore: new Date(NOON) })));
          expect(counts.reduce((sum, count) => sum + count, 0)).toBe(deleted.length);
          expect(ids(await store.list({ includeDeleted: true, limit: 100 }))).toEqual(ids([...live].sort(byPosition)));
          for (const record of deleted) await expectGone(store, record);
        });
      });
    });
  });
}

