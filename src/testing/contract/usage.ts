/**
 * Contract feature: usage cells (`addUsage`, `readUsage`), an optional capability.
 *
 * - A cell is identified by (keyId, day, route, outcome): a `null` route is a cell of its own,
 *   distinct from every route string (`'null'` included), and routes and outcomes are opaque data.
 * - `addUsage(batch)` adds each cell's counts (`requests`, `status2xx…5xx`, `totalResponseMicros`)
 *   into the stored cell, created from zero, and keeps the larger `maxResponseMicros`, exactly, up
 *   to `Number.MAX_SAFE_INTEGER`. All cells of one key in one batch are applied in one indivisible
 *   step (a reader never sees some of them), and concurrent batches add up with no update lost.
 * - A batch is applied once per id: the same id again (a retry after a lost answer, sequential or
 *   concurrent with the first call, up to `RETAIN_BATCH_IDS_MS` after the batch's `now`) adds
 *   nothing. Only "the same id again adds nothing" is checked: a store that applies per key may
 *   add, on a retry, the keys a batch cut short had not reached, which no test here provokes.
 * - Cells of a key the store does not hold (no record with that id: never inserted, or purged) are
 *   dropped, in the same atomic step that applies the key's other cells, so that a purge racing a
 *   flush leaves none of the purged key's cells behind, whichever comes first; the batch id still
 *   counts as applied (its retry adds nothing, even once a record with that id exists). Cells of a
 *   key that exists, deleted but not yet purged included, are added as above.
 * - `readUsage({ keyId, fromDay, toDay })` returns every stored cell of the key with a day in
 *   `[fromDay, toDay]`, one per (day, route, outcome), in any order, as fresh objects.
 * - `purge` removes every cell of the keys it removes (every day), and no other; `delete` none.
 *
 * The tests run when the store declares `capabilities: { usage: true }` and are reported as
 * skipped otherwise.
 */
import { randomUUID } from 'node:crypto';
import { RETAIN_BATCH_IDS_MS, type StoreUsageQuery, type UsageBatch, type UsageCell, cellKeyOf, mergeCell } from '../../usage/cells.js';
import type { ApiKeyStore } from '../../stores/store.js';
import { type ContractSuite, DAY, NOON, deepCopy, makeRecord, seed } from './shared.js';

/** The usage methods of a store that declared the capability. */
interface UsageMethods {
  add(batch: UsageBatch): Promise<void>;
  read(query: StoreUsageQuery): Promise<UsageCell[]>;
}

/** The store's usage methods (the capability check guards the declaration; this names what is missing). */
function usageOf(store: ApiKeyStore): UsageMethods {
  const { addUsage, readUsage } = store;
  if (!addUsage || !readUsage) throw new Error('capabilities.usage is declared, but the store lacks addUsage() or readUsage()');
  return { add: addUsage.bind(store), read: readUsage.bind(store) };
}

/** One hour, in milliseconds. */
const HOUR = 3_600_000;
/** The UTC day index of {@link NOON}, the day most cells are on. */
const TODAY = Math.floor(NOON / DAY);
/** The first and last UTC day a Date can name: a read over them sees every cell of a key. */
const EVERY_DAY = { fromDay: Math.floor(-8.64e15 / DAY), toDay: Math.floor(8.64e15 / DAY) };

/** A cell of `keyId` today, on a route, admitted, with small non-zero counts; `overrides` must not carry `undefined`. */
function usageCell(keyId: string, overrides: Partial<UsageCell> = {}): UsageCell {
  return {
    keyId,
    day: TODAY,
    route: '/v1/leads/:id',
    outcome: 'admitted',
    requests: 3,
    status2xx: 2,
    status3xx: 0,
    status4xx: 1,
    status5xx: 0,
    totalResponseMicros: 4_500,
    maxResponseMicros: 2_000,
    ...overrides,
  };
}

/** A batch of copies of `cells` with a fresh id, sent at `now`. */
function batchOf(cells: readonly UsageCell[], now = NOON, id: string = randomUUID()): UsageBatch {
  return { id, cells: cells.map((cell) => ({ ...cell })), now: new Date(now) };
}

/** Cells in one fixed order (by identity), so reads in any order compare. */
function sortedCells(cells: readonly UsageCell[]): UsageCell[] {
  return [...cells].sort((a, b) => {
    const [x, y] = [cellKeyOf(a), cellKeyOf(b)];
    return x < y ? -1 : x > y ? 1 : 0;
  });
}

/** What the store must hold after adding `batches` (in any order): one cell per identity, merged by the one rule. */
function totals(batches: readonly (readonly UsageCell[])[]): UsageCell[] {
  const byIdentity = new Map<string, UsageCell>();
  for (const cell of batches.flat()) {
    const held = byIdentity.get(cellKeyOf(cell));
    if (held) mergeCell(held, cell);
    else byIdentity.set(cellKeyOf(cell), { ...cell });
  }
  return sortedCells([...byIdentity.values()]);
}

/**
 * The ids of `count` fresh live records, inserted first: a store keeps the cells of keys it holds
 * only.
 */
async function heldKeys(store: ApiKeyStore, count: number): Promise<string[]> {
  return (await seed(store, Array.from({ length: count }, () => makeRecord()))).map((record) => record.id);
}

/** The id of one fresh live record, inserted first. */
async function heldKey(store: ApiKeyStore): Promise<string> {
  return (await heldKeys(store, 1))[0] as string;
}

/** The cells of `keyId` as the store holds them now, on every day, sorted. */
async function readAll(usage: UsageMethods, keyId: string): Promise<UsageCell[]> {
  return sortedCells(await usage.read({ keyId, ...EVERY_DAY }));
}

/** Registers the usage cell tests, skipped unless the store declares the capability. */
export function usageContract(suite: ContractSuite): void {
  const { describe, testWhen, expect } = suite;
  const test = (title: string, body: (store: ApiKeyStore) => Promise<void>) => testWhen('usage', title, body);

  describe('usage cells (capability: usage)', () => {
    // -------------------------------------------------------------------------------------------
    describe('addUsage and readUsage', () => {
      test('stores the cells of a batch and reads them back exactly, as fresh objects', async (store) => {
        const usage = usageOf(store);
        const key = await heldKey(store);
        const cells = [
          usageCell(key),
          usageCell(key, { day: TODAY - 1, route: null, outcome: 'rate_limited', requests: 5, status2xx: 0, status4xx: 5, totalResponseMicros: 1_250, maxResponseMicros: 400 }),
          usageCell(key, { outcome: 'insufficient_scope', requests: 1, status2xx: 0, status3xx: 0, status4xx: 1, status5xx: 0, totalResponseMicros: 90, maxResponseMicros: 90 }),
          usageCell(key, { route: '/v1/export', requests: 7, status2xx: 1, status3xx: 2, status4xx: 1, status5xx: 3, totalResponseMicros: 9_876_543, maxResponseMicros: 5_000_000 }),
          // A connection closed before any response: counted, with no status and no time.
          usageCell(key, { route: '/v1/stream', requests: 1, status2xx: 0, status3xx: 0, status4xx: 0, status5xx: 0, totalResponseMicros: 0, maxResponseMicros: 0 }),
        ];
        const batch = batchOf(cells);
        await usage.add(batch);
        expect(await readAll(usage, key)).toStrictEqual(sortedCells(cells));

        // Mutating the batch after the fact, and what readUsage returned.
        for (const cell of batch.cells) cell.requests += 100;
        batch.cells.length = 0;
        for (const cell of await usage.read({ keyId: key, ...EVERY_DAY })) {
          cell.requests = 0;
          cell.route = '/mutated';
          cell.maxResponseMicros = Number.MAX_SAFE_INTEGER;
        }
        expect(await readAll(usage, key)).toStrictEqual(sortedCells(cells));
      });

      test('adds later batches into the stored cells; maxResponseMicros keeps the larger', async (store) => {
        const usage = usageOf(store);
        const key = await heldKey(store);
        const first = [usageCell(key, { maxResponseMicros: 2_000 }), usageCell(key, { route: null, maxResponseMicros: 500 })];
        const second = [
          usageCell(key, { requests: 10, status2xx: 9, status5xx: 1, totalResponseMicros: 12_345, maxResponseMicros: 1_999 }),
          usageCell(key, { route: null, requests: 1, status2xx: 1, status4xx: 0, totalResponseMicros: 9_000, maxResponseMicros: 9_000 }),
          usageCell(key, { day: TODAY + 1 }),
        ];
        const third = [usageCell(key, { requests: 1, status2xx: 1, status4xx: 0, totalResponseMicros: 0, maxResponseMicros: 0 })];
        for (const cells of [first, second, third]) await usage.add(batchOf(cells));

        const expected = totals([first, second, third]);
        expect(await readAll(usage, key)).toStrictEqual(expected);
        const admitted = expected.find((cell) => cell.route === '/v1/leads/:id' && cell.day === TODAY);
        expect(admitted).toStrictEqual(usageCell(key, { requests: 14, status2xx: 12, status4xx: 2, status5xx: 1, totalResponseMicros: 16_845, maxResponseMicros: 2_000 }));
      });

      test('keeps a null route apart from every route string, and cells apart by key, day, route and outcome', async (store) => {
        const usage = usageOf(store);
        const [key, other] = [await heldKey(store), await heldKey(store)];
        // Each differs from the first in one identity field only.
        const cells = [
          usageCell(key, { route: null }),
          usageCell(key, { route: 'null' }),
          usageCell(key, { route: '/null' }),
          usageCell(key, { route: 'undefined' }),
          usageCell(key, { route: '/' }),
          usageCell(key, { route: null, outcome: 'rate_limited' }),
          usageCell(key, { route: null, outcome: 'Admitted' }),
          usageCell(key, { route: null, outcome: 'admitted ' }),
          usageCell(key, { route: null, day: TODAY + 1 }),
          usageCell(key, { route: null, day: TODAY - 1 }),
          usageCell(other, { route: null }),
        ];
        // Numbered counts, so a cell that took another's adds shows.
        const numbered = cells.map((cell, i) => ({ ...cell, requests: i + 1, totalResponseMicros: 1_000 * (i + 1), maxResponseMicros: 100 + i }));
        await usage.add(batchOf(numbered));
        await usage.add(batchOf(numbered));

        const expected = totals([numbered, numbered]);
        expect(await readAll(usage, key)).toStrictEqual(expected.filter((cell) => cell.keyId === key));
        expect(await readAll(usage, other)).toStrictEqual(expected.filter((cell) => cell.keyId === other));
      });

      test('keeps routes and outcomes as opaque data: separators, quotes, patterns, unicode, 256 characters', async (store) => {
        const usage = usageOf(store);
        const key = await heldKey(store);
        const routes = [
          '/v1/leads/:id',
          '/v1/leads/:id/notes/:noteId',
          '/a|b',
          '/a:b:c',
          '/a,b;c',
          '/"quoted"',
          "/it's",
          '/back\\slash',
          '/%',
          '/_',
          '/*',
          '/[a-z]+',
          '/{"a":1}',
          '/a b',
          '/ключ/🔑/鍵',
          `/${'r'.repeat(255)}`,
        ];
        const cells = [
          ...routes.map((route, i) => usageCell(key, { route, requests: i + 1 })),
          ...['quota_exceeded', 'ip_not_allowed', 'origin_not_allowed', 'concurrency_limited'].map((outcome, i) => usageCell(key, { outcome, requests: 100 + i })),
        ];
        expect(routes.at(-1)).toHaveLength(256);
        await usage.add(batchOf(cells));
        await usage.add(batchOf(cells));
        expect(await readAll(usage, key)).toStrictEqual(totals([cells, cells]));
      });

      test('reads exactly the days in [fromDay, toDay], both included', async (store) => {
        const usage = usageOf(store);
        const key = await heldKey(store);
        // Days around today, and around 9 999 / 10 000 (May 1997), where text would sort differently from numbers.
        const days = [TODAY - 2, TODAY - 1, TODAY, TODAY + 1, TODAY + 2, 9_998, 9_999, 10_000, 10_001];
        const cells = days.map((day, i) => usageCell(key, { day, requests: i + 1 }));
        await usage.add(batchOf(cells));

        const ranges: [number, number][] = [
          [TODAY, TODAY],
          [TODAY - 1, TODAY + 1],
          [TODAY + 1, TODAY + 10],
          [TODAY + 3, TODAY + 10],
          [9_999, 10_000],
          [10_000, 10_000],
          [9_000, 9_999],
          [0, TODAY],
          [10_001, TODAY - 2],
          [TODAY + 1, TODAY - 1],
        ];
        for (const [fromDay, toDay] of ranges) {
          const read = sortedCells(await usage.read({ keyId: key, fromDay, toDay }));
          expect({ fromDay, toDay, read }).toStrictEqual({ fromDay, toDay, read: sortedCells(cells.filter((cell) => cell.day >= fromDay && cell.day <= toDay)) });
        }
      });

      test('reads only the cells of the key asked for; a key or days without cells read as []', async (store) => {
        const usage = usageOf(store);
        const keys = await heldKeys(store, 3);
        const cells = keys.flatMap((keyId, i) => [usageCell(keyId, { requests: i + 1 }), usageCell(keyId, { route: null, requests: i + 10 })]);
        await usage.add(batchOf(cells));
        for (const keyId of keys) expect(await readAll(usage, keyId)).toStrictEqual(sortedCells(cells.filter((cell) => cell.keyId === keyId)));
        expect(await usage.read({ keyId: randomUUID(), ...EVERY_DAY })).toStrictEqual([]);
        expect(await usage.read({ keyId: keys[0] ?? '', fromDay: TODAY + 1, toDay: TODAY + 100 })).toStrictEqual([]);
      });

      test('adds exactly up to Number.MAX_SAFE_INTEGER (no 32-bit and no floating-point columns)', async (store) => {
        const usage = usageOf(store);
        const key = await heldKey(store);
        const big = 2 ** 52;
        const first = usageCell(key, { requests: big, status2xx: big, status3xx: 2 ** 32, status4xx: 2 ** 31, status5xx: 1, totalResponseMicros: big, maxResponseMicros: big - 1 });
        const second = usageCell(key, {
          requests: big - 1,
          status2xx: big - 1,
          status3xx: 2 ** 32 - 1,
          status4xx: 2 ** 31,
          status5xx: 2 ** 53 - 2,
          totalResponseMicros: big - 1,
          maxResponseMicros: Number.MAX_SAFE_INTEGER,
        });
        await usage.add(batchOf([first]));
        await usage.add(batchOf([second]));
        expect(await readAll(usage, key)).toStrictEqual([
          usageCell(key, {
            requests: Number.MAX_SAFE_INTEGER,
            status2xx: Number.MAX_SAFE_INTEGER,
            status3xx: 2 ** 33 - 1,
            status4xx: 2 ** 32,
            status5xx: Number.MAX_SAFE_INTEGER,
            totalResponseMicros: Number.MAX_SAFE_INTEGER,
            maxResponseMicros: Number.MAX_SAFE_INTEGER,
          }),
        ]);
      });

      test("drops the cells of a key the store never held, adds the same batch's cells of a held key, and counts the batch id as applied", async (store) => {
        const usage = usageOf(store);
        const held = await heldKey(store);
        const [unknown, later] = [randomUUID(), randomUUID()];
        const cells = [usageCell(unknown), usageCell(unknown, { day: TODAY - 30, route: null }), usageCell(held), usageCell(held, { route: null }), usageCell(later)];
        const batch = batchOf(cells);
        await usage.add(batch);
        expect(await readAll(usage, held)).toStrictEqual(totals([cells]).filter((cell) => cell.keyId === held));
        for (const keyId of [unknown, later]) expect({ keyId, cells: await readAll(usage, keyId) }).toStrictEqual({ keyId, cells: [] });
        expect(await store.findById(unknown)).toBeNull();

        // A batch of unknown keys only is applied all the same (its cells dropped): a retry adds
        // nothing, even once a record with that id exists.
        const onlyUnknown = batchOf([usageCell(later, { requests: 5 }), usageCell(later, { day: TODAY + 1 })]);
        await usage.add(onlyUnknown);
        await store.insert(makeRecord({ id: later }));
        await usage.add(batchOf(cells, NOON + HOUR, batch.id));
        await usage.add(batchOf(onlyUnknown.cells, NOON + HOUR, onlyUnknown.id));
        expect(await readAll(usage, later)).toStrictEqual([]);
        expect(await readAll(usage, held)).toStrictEqual(totals([cells]).filter((cell) => cell.keyId === held));

        // The key held now, a new batch adds its cells; the never-held one still gets none.
        await usage.add(batchOf(cells, NOON + HOUR));
        expect(await readAll(usage, later)).toStrictEqual(totals([cells]).filter((cell) => cell.keyId === later));
        expect(await readAll(usage, held)).toStrictEqual(totals([cells, cells]).filter((cell) => cell.keyId === held));
        expect(await readAll(usage, unknown)).toStrictEqual([]);
      });
    });

    // -------------------------------------------------------------------------------------------
    describe('exactly once per batch id', () => {
      test('the same batch id again adds nothing, up to RETAIN_BATCH_IDS_MS after its now, even with other cells', async (store) => {
        const usage = usageOf(store);
        const [key, other] = [await heldKey(store), await heldKey(store)];
        const cells = [usageCell(key), usageCell(key, { route: null }), usageCell(other, { day: TODAY - 1 })];
        const batch = batchOf(cells, NOON);
        await usage.add(batch);
        // Retries: at once, an hour later, and just before the id may be forgotten.
        await usage.add(batchOf(cells, NOON, batch.id));
        await usage.add(batchOf(cells, NOON + HOUR, batch.id));
        await usage.add(batchOf(cells, NOON + RETAIN_BATCH_IDS_MS - 1, batch.id));
        // The same id with other counts for the same keys: the id decides, not the content.
        await usage.add(batchOf(cells.map((cell) => ({ ...cell, requests: cell.requests + 1, maxResponseMicros: cell.maxResponseMicros + 1 })), NOON + HOUR, batch.id));
        expect(await readAll(usage, key)).toStrictEqual(totals([cells]).filter((cell) => cell.keyId === key));
        expect(await readAll(usage, other)).toStrictEqual(totals([cells]).filter((cell) => cell.keyId === other));

        // Another id with the very same cells is another flush: it adds.
        await usage.add(batchOf(cells, NOON + HOUR));
        expect(await readAll(usage, key)).toStrictEqual(totals([cells, cells]).filter((cell) => cell.keyId === key));
        expect(await readAll(usage, other)).toStrictEqual(totals([cells, cells]).filter((cell) => cell.keyId === other));
      });

      test('remembers an applied batch id while later batches come and go', async (store) => {
        const usage = usageOf(store);
        const key = await heldKey(store);
        const cells = [usageCell(key)];
        const first = batchOf(cells, NOON);
        await usage.add(first);
        // Later flushes, up to 23 hours on: their bookkeeping must not forget the first id early.
        const later = [1, 6, 12, 23].map((hours) => batchOf(cells, NOON + hours * HOUR));
        for (const batch of later) {
          await usage.add(batch);
          await usage.add(batchOf(cells, batch.now.getTime(), first.id));
        }
        for (const batch of later) await usage.add(batchOf(cells, NOON + 23 * HOUR, batch.id));
        expect(await readAll(usage, key)).toStrictEqual(totals([cells, ...later.map(() => cells)]));
      });

      test('the same batch sent by concurrent callers is applied once', async (store) => {
        const usage = usageOf(store);
        const keys = await heldKeys(store, 3);
        const cells = keys.flatMap((keyId) => [usageCell(keyId), usageCell(keyId, { route: null, outcome: 'rate_limited' }), usageCell(keyId, { day: TODAY - 1 })]);
        const id = randomUUID();
        await Promise.all(Array.from({ length: 20 }, (_, i) => usage.add(batchOf(cells, NOON + i, id))));
        for (const keyId of keys) expect(await readAll(usage, keyId)).toStrictEqual(totals([cells]).filter((cell) => cell.keyId === keyId));
      });
    });

    // -------------------------------------------------------------------------------------------
    describe('concurrency and atomicity', () => {
      test('concurrent batches from 50 callers add up exactly, with no update lost', async (store) => {
        const usage = usageOf(store);
        const keys = await heldKeys(store, 3);
        // Every batch adds to one cell of each key every batch shares, and to cells a few others share.
        const batches = Array.from({ length: 50 }, (_, i) =>
          keys.flatMap((keyId, k) => [
            usageCell(keyId, { requests: i + 1, status2xx: i, status5xx: 1, totalResponseMicros: 1_000 * (i + 1) + k, maxResponseMicros: (i * 37) % 50 }),
            usageCell(keyId, { route: `/v1/route/${i % 5}`, requests: 1, status2xx: 1, status4xx: 0, totalResponseMicros: i, maxResponseMicros: i }),
            usageCell(keyId, { route: null, day: TODAY - (i % 2), outcome: 'rate_limited', requests: 2, status2xx: 0, status4xx: 2, totalResponseMicros: 7, maxResponseMicros: 4 }),
          ]),
        );
        await Promise.all(batches.map((cells, i) => usage.add(batchOf(cells, NOON + i))));

        const expected = totals(batches);
        for (const keyId of keys) expect(await readAll(usage, keyId)).toStrictEqual(expected.filter((cell) => cell.keyId === keyId));
        const shared = expected.find((cell) => cell.keyId === keys[0] && cell.route === '/v1/leads/:id');
        expect(shared?.requests).toBe((50 * 51) / 2);
        expect(shared?.maxResponseMicros).toBe(49);
      });

      test("a reader never sees a key's cells of one batch half added", async (store) => {
        const usage = usageOf(store);
        const key = await heldKey(store);
        // Twelve cells of one key over three days, each batch adding one request to every one of them.
        const cells = [TODAY - 1, TODAY, TODAY + 1].flatMap((day) =>
          ['/v1/a', null].flatMap((route) => ['admitted', 'rate_limited'].map((outcome) => usageCell(key, { day, route, outcome, requests: 1, status2xx: 1, status4xx: 0 }))),
        );
        const reads: UsageCell[][] = [];
        const writes: Promise<void>[] = [];
        const readers: Promise<void>[] = [];
        for (let i = 0; i < 30; i++) {
          writes.push(usage.add(batchOf(cells, NOON + i)));
          readers.push(usage.read({ keyId: key, fromDay: TODAY - 1, toDay: TODAY + 1 }).then((read) => void reads.push(read)));
        }
        await Promise.all([...writes, ...readers]);

        for (const read of reads) {
          const counts = read.map((cell) => cell.requests);
          // None or all twelve cells, every one counting the same number of batches.
          expect({ cells: read.length === 0 || read.length === cells.length, sameCount: counts.every((count) => count === counts[0]) }).toEqual({ cells: true, sameCount: true });
        }
        expect(await readAll(usage, key)).toStrictEqual(totals(Array.from({ length: 30 }, () => cells)));
      });
    });

    // -------------------------------------------------------------------------------------------
    describe('purge and delete', () => {
      test("purge removes every usage cell of the purged keys, on every day, and no other key's", async (store) => {
        const usage = usageOf(store);
        const purged = [
          makeRecord({ status: 'revoked', revokedAt: new Date(NOON - DAY), deletedAt: new Date(NOON - DAY) }),
          makeRecord({ deletedAt: new Date(NOON - 1) }),
        ];
        const deletedLater = makeRecord({ deletedAt: new Date(NOON) });
        const live = makeRecord();
        await seed(store, [...purged, deletedLater, live]);
        // Cells on days far apart (a store that removes only recent days shows), and some added after the delete.
        const days = [0, TODAY - 400, TODAY - 1, TODAY, TODAY + 1];
        const everyKey = [...purged.map((record) => record.id), deletedLater.id, live.id];
        const cells = everyKey.flatMap((keyId) => days.flatMap((day) => [usageCell(keyId, { day }), usageCell(keyId, { day, route: null, outcome: 'rate_limited' })]));
        await usage.add(batchOf(cells));
        const before = await Promise.all([deletedLater.id, live.id].map((keyId) => readAll(usage, keyId)));

        expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(2);
        for (const record of purged) expect({ id: record.id, cells: await usage.read({ keyId: record.id, ...EVERY_DAY }) }).toStrictEqual({ id: record.id, cells: [] });
        const after = await Promise.all([deletedLater.id, live.id].map((keyId) => readAll(usage, keyId)));
        expect(after).toStrictEqual(before);
        expect(after.every((kept) => kept.length === days.length * 2)).toBe(true);

        // The purged ids, taken by new records, start with no usage.
        const again = purged.map((record) => makeRecord({ id: record.id }));
        await seed(store, again);
        for (const record of again) expect(await usage.read({ keyId: record.id, ...EVERY_DAY })).toStrictEqual([]);
      });

      test('delete (an update with deletedAt) leaves usage cells as they are', async (store) => {
        const usage = usageOf(store);
        const record = makeRecord();
        await store.insert(record);
        const cells = [usageCell(record.id), usageCell(record.id, { day: TODAY - 1, route: null })];
        await usage.add(batchOf(cells));
        await store.update(record.id, { status: 'revoked', deletedAt: new Date(NOON), updatedAt: new Date(NOON) });
        expect(await readAll(usage, record.id)).toStrictEqual(sortedCells(deepCopy(cells)));
        // Usage still adds up for a deleted key (requests refused after the delete are counted too).
        await usage.add(batchOf(cells, NOON + 1));
        expect(await readAll(usage, record.id)).toStrictEqual(totals([cells, cells]));
      });

      test('a key deleted but not purged gets its cells until it is purged; none after', async (store) => {
        const usage = usageOf(store);
        // Inserted already deleted (an import), and one deleted after its insert.
        const imported = makeRecord({ status: 'revoked', revokedAt: new Date(NOON - DAY), deletedAt: new Date(NOON - DAY) });
        const deleted = makeRecord();
        await seed(store, [imported, deleted]);
        await store.update(deleted.id, { deletedAt: new Date(NOON - DAY + 1), updatedAt: new Date(NOON - DAY + 1) });
        const cells = [imported.id, deleted.id].flatMap((keyId) => [usageCell(keyId), usageCell(keyId, { day: TODAY - 1, route: null, outcome: 'api_key_revoked' })]);
        await usage.add(batchOf(cells));
        // Not purgeable yet (deleted at or after deletedBefore): kept, and still adding up.
        expect(await store.purge({ deletedBefore: new Date(NOON - DAY) })).toBe(0);
        await usage.add(batchOf(cells, NOON + 1));
        for (const keyId of [imported.id, deleted.id]) expect(await readAll(usage, keyId)).toStrictEqual(totals([cells, cells]).filter((cell) => cell.keyId === keyId));

        expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(2);
        await usage.add(batchOf(cells, NOON + 2));
        for (const keyId of [imported.id, deleted.id]) expect({ keyId, cells: await usage.read({ keyId, ...EVERY_DAY }) }).toStrictEqual({ keyId, cells: [] });
      });

      test("a flush after the purge of its key brings none of the key's cells back; the same batch's other keys add up", async (store) => {
        const usage = usageOf(store);
        const purged = makeRecord({ status: 'revoked', revokedAt: new Date(NOON - DAY), deletedAt: new Date(NOON - DAY) });
        const live = makeRecord();
        await seed(store, [purged, live]);
        // Cells flushed before the purge (removed by it), then cells buffered before it and flushed after.
        const before = [usageCell(purged.id), usageCell(live.id)];
        const buffered = [usageCell(purged.id, { requests: 9 }), usageCell(purged.id, { day: TODAY + 1, route: null }), usageCell(purged.id, { day: 0 }), usageCell(live.id, { route: null })];
        await usage.add(batchOf(before));
        expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(1);
        expect(await readAll(usage, purged.id)).toStrictEqual([]);
        const late = batchOf(buffered, NOON + 1);
        await usage.add(late);
        await usage.add(batchOf(buffered, NOON + 2, late.id));
        await usage.add(batchOf(buffered.filter((cell) => cell.keyId === purged.id), NOON + 3));
        expect(await readAll(usage, purged.id)).toStrictEqual([]);
        expect(await store.findById(purged.id)).toBeNull();
        expect(await readAll(usage, live.id)).toStrictEqual(totals([before, buffered]).filter((cell) => cell.keyId === live.id));
        // Nothing of the purged key is left behind for a new record that takes its id.
        await store.insert(makeRecord({ id: purged.id }));
        expect(await readAll(usage, purged.id)).toStrictEqual([]);
      });

      test("purges racing flushes leave none of the purged keys' cells, whichever comes first", async (store) => {
        const usage = usageOf(store);
        for (let round = 0; round < 3; round++) {
          const purged = Array.from({ length: 4 }, (_, i) => makeRecord({ status: 'revoked', revokedAt: new Date(NOON - DAY), deletedAt: new Date(NOON - DAY + i) }));
          const live = makeRecord();
          await seed(store, [...purged, live]);
          const cells = [...purged, live].flatMap((record) => [usageCell(record.id), usageCell(record.id, { day: TODAY - 1, route: null, outcome: 'api_key_revoked' })]);
          await usage.add(batchOf(cells, NOON));
          // Flushes before, alongside and after the purge, all sent at once.
          const flushes = Array.from({ length: 20 }, (_, i) => usage.add(batchOf(cells, NOON + 1 + i)));
          const [removed] = await Promise.all([store.purge({ deletedBefore: new Date(NOON) }), ...flushes]);
          await usage.add(batchOf(cells, NOON + 100));
          expect(removed).toBe(purged.length);
          for (const record of purged) expect({ round, id: record.id, cells: await usage.read({ keyId: record.id, ...EVERY_DAY }) }).toStrictEqual({ round, id: record.id, cells: [] });
          expect(await readAll(usage, live.id)).toStrictEqual(totals(Array.from({ length: 22 }, () => cells)).filter((cell) => cell.keyId === live.id));
        }
      });
    });
  });
}
