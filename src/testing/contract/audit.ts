/**
 * Contract feature: the audit trail (`appendAudit`, `listAudit`), an optional capability.
 *
 * - `appendAudit(entry)` stores a copy; an entry whose `id` is taken is refused with
 *   `already_exists` and changes nothing (of concurrent appends of one id, exactly one succeeds).
 * - `listAudit(query)` returns the entries matching every filter given: `keyId` (an entry with
 *   `keyId: null`, `key.purged`, matches none), `actorId` (`entry.actor?.id`, never its keyPrefix),
 *   `tenantId`, `environment` (all exact strings), `from` (inclusive) and `to` (exclusive) on `at`,
 *   and `after`, strictly after a position in (at, id) order that need not be a stored entry.
 *   Entries come ordered by (at, id) ascending, at most `limit` of them, fewer only when no more
 *   match; paging with `after` visits each entry once, even while entries are appended.
 * - Entries come back exactly: `at` to the millisecond over the whole range of a Date a record
 *   holds, `actor` `null`, `{ id }` or `{ id, keyPrefix }`, `tenantId` and `environment` absent when
 *   not given, `changes` a deep-equal JSON object (nested, unicode, up to 64 KiB), and every call
 *   hands out fresh copies.
 * - Entries stay until the application removes them: `purge` leaves them all.
 *
 * The tests run when the store declares `capabilities: { audit: true }` and are reported as
 * skipped otherwise.
 */
import { randomUUID } from 'node:crypto';
import { AUDIT_ACTIONS, type Actor, type AuditEntry, type StoreAuditQuery } from '../../audit/entry.js';
import type { ApiKeyStore } from '../../stores/store.js';
import { type ContractSuite, DAY, NOON, SECOND, deepCopy, errorShape, hasOwn, makeRecord, rejectionOf, seed } from './shared.js';

/** The audit methods of a store that declared the capability. */
interface AuditMethods {
  append(entry: AuditEntry): Promise<void>;
  list(query: StoreAuditQuery): Promise<AuditEntry[]>;
}

/** The store's audit methods (the capability check guards the declaration; this names what is missing). */
function auditOf(store: ApiKeyStore): AuditMethods {
  const { appendAudit, listAudit } = store;
  if (!appendAudit || !listAudit) throw new Error('capabilities.audit is declared, but the store lacks appendAudit() or listAudit()');
  return { append: appendAudit.bind(store), list: listAudit.bind(store) };
}

/** The filters of an audit query, without its position and page size. */
type AuditFilters = Omit<StoreAuditQuery, 'limit' | 'after'>;

/** An entry at {@link NOON} about a fresh key, by nobody; `overrides` must not carry `undefined`. */
function auditEntry(overrides: Partial<AuditEntry> = {}): AuditEntry {
  return { id: randomUUID(), at: new Date(NOON), action: 'key.updated', keyId: randomUUID(), actor: null, changes: { name: 'renamed' }, ...overrides };
}

/** A place in the order of `listAudit`: an entry, or the `after` of a query. */
type Position = NonNullable<StoreAuditQuery['after']>;

/** (at, id) ascending: the order of `listAudit`. Ids compare as JavaScript strings (UTF-16 code units). */
function byAuditPosition(a: Position, b: Position): number {
  const byTime = a.at.getTime() - b.at.getTime();
  if (byTime !== 0) return byTime;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** The ids of `entries`, in order. */
function entryIds(entries: readonly AuditEntry[]): string[] {
  return entries.map((entry) => entry.id);
}

/** `entries` sorted in list order, without changing them. */
function inOrder(entries: readonly AuditEntry[]): AuditEntry[] {
  return [...entries].sort(byAuditPosition);
}

/** Whether `entry` matches every filter given (what `listAudit` must select). */
function matches(entry: AuditEntry, filters: AuditFilters): boolean {
  const at = entry.at.getTime();
  return (
    (filters.keyId === undefined || (entry.keyId !== null && entry.keyId === filters.keyId)) &&
    (filters.actorId === undefined || (entry.actor !== null && entry.actor.id === filters.actorId)) &&
    (filters.tenantId === undefined || entry.tenantId === filters.tenantId) &&
    (filters.environment === undefined || entry.environment === filters.environment) &&
    (filters.from === undefined || at >= filters.from.getTime()) &&
    (filters.to === undefined || at < filters.to.getTime())
  );
}

/**
 * The same items in an order that is neither the list order nor its reverse (odd positions, then
 * the even ones backwards), so a store that relies on the order of appends shows.
 */
function scrambled<T>(items: readonly T[]): T[] {
  return [...items.filter((_, i) => i % 2 === 1), ...items.filter((_, i) => i % 2 === 0).reverse()];
}

/** Appends the entries one after the other, in the order given. */
async function appendAll(audit: AuditMethods, entries: readonly AuditEntry[]): Promise<void> {
  for (const entry of entries) await audit.append(entry);
}

/**
 * Walks every page of `filters` with `pageSize`, each page starting `after` the last entry of the
 * one before; stops at a short page, or after `maxPages` (a store that never ends a walk fails the
 * caller's assertion instead of hanging).
 */
async function walkAudit(audit: AuditMethods, filters: AuditFilters, pageSize: number, maxPages: number): Promise<AuditEntry[][]> {
  const pages: AuditEntry[][] = [];
  let after: StoreAuditQuery['after'];
  for (let n = 0; n < maxPages; n++) {
    const page = await audit.list(after ? { ...filters, after, limit: pageSize } : { ...filters, limit: pageSize });
    pages.push(page);
    const last = page[page.length - 1];
    if (!last || page.length < pageSize) break;
    after = { at: last.at, id: last.id };
  }
  return pages;
}

/** The page sizes a walk of `total` entries must see: full pages, then one short (maybe empty) page. */
function pageSizes(total: number, pageSize: number): number[] {
  return [...Array.from({ length: Math.floor(total / pageSize) }, () => pageSize), total % pageSize];
}

/** The keys, actors, tenants and environments the filter fixture spreads its entries over. */
interface AuditFixture {
  entries: AuditEntry[];
  keys: [string, string, string];
}

/** Actors of the fixture: nobody, ids alone, ids with the keyPrefix of the calling key, ids differing only in case. */
const FIXTURE_ACTORS: readonly (Actor | null)[] = [
  null,
  { id: 'alice' },
  { id: 'alice', keyPrefix: 'kg_adminKey000001' },
  { id: 'bob', keyPrefix: 'kg_bobKey00000001' },
  { id: 'Alice' },
];

/**
 * Forty-two entries over three keys (and `key.purged` entries with no key), five actors, two
 * tenants and two environments (and none), every action, at fourteen instants one second apart,
 * three entries tied on each.
 */
function auditFixture(): AuditFixture {
  const keys: [string, string, string] = [randomUUID(), randomUUID(), randomUUID()];
  const entries = Array.from({ length: 42 }, (_, i): AuditEntry => {
    const purged = i % 7 === 6;
    const tenant = Math.floor(i / 2) % 3;
    const environment = i % 4;
    return {
      id: randomUUID(),
      at: new Date(NOON + Math.floor(i / 3) * SECOND),
      action: purged ? 'key.purged' : (AUDIT_ACTIONS[i % (AUDIT_ACTIONS.length - 1)] ?? 'key.updated'),
      keyId: purged ? null : (keys[i % 3] ?? null),
      actor: deepCopy(FIXTURE_ACTORS[i % FIXTURE_ACTORS.length] ?? null),
      ...(tenant === 0 ? {} : { tenantId: tenant === 1 ? 't1' : 't2' }),
      ...(environment === 3 ? {} : { environment: environment === 2 ? 'test' : 'live' }),
      changes: purged ? { removed: i, deletedBefore: new Date(NOON - DAY).toISOString() } : { index: i },
    };
  });
  return { entries, keys };
}

/**
 * Instants far apart, in order: before year 0 (1001 BC, within what PostgreSQL's timestamptz holds,
 * as every record instant must be), before 1970, around the epoch, after 9999, and the last instant
 * a Date holds. Kept as ISO text they would sort wrongly; as seconds, they would lose milliseconds.
 */
const FAR_INSTANTS: readonly number[] = [
  new Date('-001000-06-15T12:00:00.000Z').getTime(),
  Date.UTC(1969, 6, 20, 20, 17, 40, 123),
  -1,
  0,
  1,
  NOON,
  Date.UTC(9999, 11, 31, 23, 59, 59, 999),
  new Date('+010000-01-01T00:00:00.000Z').getTime(),
  8.64e15,
];

/** A JSON object of nested objects, arrays, numbers, unicode and escapes, exactly `bytes` long as UTF-8 JSON. */
function changesOfSize(bytes: number): Record<string, unknown> {
  const changes: Record<string, unknown> = {
    name: 'Clé de production — ünïcödé 🔑 鍵 مفتاح',
    scopes: ['leads:read', 'leads:write', 'billing:*'],
    rateLimit: { perSecond: 5, burst: 20, perDay: 10_000 },
    expiresAt: '2026-06-30T23:59:59.999Z',
    metadata: {
      plan: 'pro',
      ratio: 0.1,
      tiny: 1e-7,
      huge: Number.MAX_SAFE_INTEGER,
      negative: -42,
      flags: [true, false, null],
      quote: 'a "quoted" \\ string\nwith a newline and a tab\t',
      nested: { deeper: { list: [1, 'two', { three: [3] }, []], empty: {} } },
      'ключ with spaces': 'значение',
    },
    filler: '',
  };
  const size = (): number => new TextEncoder().encode(JSON.stringify(changes)).length;
  const room = bytes - size();
  if (room < 0) throw new Error(`changesOfSize(${bytes}) is smaller than the fixture`);
  // Two-byte characters, then one ASCII character when the room is odd, so the size is exact.
  changes.filler = 'é'.repeat(Math.floor(room / 2)) + 'x'.repeat(room % 2);
  if (size() !== bytes) throw new Error(`changesOfSize(${bytes}) came to ${size()} bytes`);
  return changes;
}

/** Registers the audit trail tests, skipped unless the store declares the capability. */
export function auditContract(suite: ContractSuite): void {
  const { describe, testWhen, expect } = suite;
  const test = (title: string, body: (store: ApiKeyStore) => Promise<void>) => testWhen('audit', title, body);

  /** Walks `filters` with `pageSize` and checks the walk: full pages until the last, exactly `expected`, in order. */
  async function expectWalk(audit: AuditMethods, filters: AuditFilters, pageSize: number, expected: readonly AuditEntry[]): Promise<void> {
    const pages = await walkAudit(audit, filters, pageSize, expected.length + 2);
    expect({ filters, pageSize, sizes: pages.map((page) => page.length), visited: pages.flatMap(entryIds) }).toEqual({
      filters,
      pageSize,
      sizes: pageSizes(expected.length, pageSize),
      visited: entryIds(inOrder(expected)),
    });
  }

  /** Checks that each query returns exactly the entries of `entries` it matches, in order. */
  async function expectFiltered(audit: AuditMethods, entries: readonly AuditEntry[], cases: readonly AuditFilters[]): Promise<void> {
    for (const filters of cases) {
      const listed = await audit.list({ ...filters, limit: 1_000 });
      expect({ filters, ids: entryIds(listed) }).toEqual({ filters, ids: entryIds(inOrder(entries.filter((entry) => matches(entry, filters)))) });
    }
  }

  describe('audit trail (capability: audit)', () => {
    // -------------------------------------------------------------------------------------------
    describe('appendAudit and round trips', () => {
      test('round-trips entries exactly: actor null, { id } or { id, keyPrefix }; tenantId and environment absent unless given', async (store) => {
        const audit = auditOf(store);
        const entries = [
          auditEntry({ action: 'key.created', changes: {} }),
          auditEntry({ action: 'key.revoked', actor: { id: 'user_42' }, tenantId: 'tenant_7', changes: { status: 'revoked' } }),
          auditEntry({
            action: 'key.rotated',
            actor: { id: 'svc-admin', keyPrefix: 'kg_AdminKey00001' },
            environment: 'live',
            changes: { replacementId: randomUUID(), gracePeriodMs: 3_600_000 },
          }),
          auditEntry({ action: 'key.purged', keyId: null, actor: { id: 'cron' }, changes: { removed: 3, deletedBefore: new Date(NOON - DAY).toISOString() } }),
          auditEntry({ action: 'key.deleted', actor: { id: 'ünïcödé 🔑 鍵' }, tenantId: 'tenant_7', environment: 'test', changes: { status: 'revoked', deletedAt: new Date(NOON).toISOString() } }),
        ];
        // Appended in reverse, listed in order: the entries tie on `at`, so the order is the ids'.
        await appendAll(audit, [...entries].reverse());

        const listed = await audit.list({ limit: 100 });
        expect(listed).toStrictEqual(inOrder(entries));
        for (const found of listed) {
          const given = entries.find((entry) => entry.id === found.id);
          // toStrictEqual already tells `{ tenantId: undefined }` from no tenantId; the messages here say which.
          expect({ id: found.id, tenantId: hasOwn(found, 'tenantId'), environment: hasOwn(found, 'environment') }).toEqual({
            id: found.id,
            tenantId: given?.tenantId !== undefined,
            environment: given?.environment !== undefined,
          });
          if (found.actor !== null) expect({ id: found.id, keyPrefix: hasOwn(found.actor, 'keyPrefix') }).toEqual({ id: found.id, keyPrefix: given?.actor?.keyPrefix !== undefined });
          expect(found.at instanceof Date).toBe(true);
        }
      });

      test('round-trips every action', async (store) => {
        const audit = auditOf(store);
        const entries = AUDIT_ACTIONS.map((action, i) => auditEntry({ action, at: new Date(NOON + i), keyId: action === 'key.purged' ? null : randomUUID() }));
        await appendAll(audit, scrambled(entries));
        expect(await audit.list({ limit: 100 })).toStrictEqual(entries);
      });

      test('round-trips the largest entry: a 128-character id, a 256-character actor id, 64 KiB of changes', async (store) => {
        const audit = auditOf(store);
        const changes = changesOfSize(64 * 1_024);
        // Padded with ASCII, so the length is exact without cutting a surrogate pair in two.
        const actorId = 'actor ünïcödé 🔑 鍵 ';
        const largest = auditEntry({
          id: `audit-${'0123456789abcdef'.repeat(8)}`.slice(0, 128),
          actor: { id: actorId + 'a'.repeat(256 - actorId.length), keyPrefix: 'kg_0123456789ABCDEFabcdef' },
          tenantId: 'tenant-ünïcödé',
          environment: 'staging',
          changes,
        });
        expect(largest.id).toHaveLength(128);
        expect(largest.actor?.id).toHaveLength(256);
        await audit.append(largest);
        const found = await audit.list({ keyId: largest.keyId ?? '', limit: 10 });
        expect(found).toStrictEqual([largest]);
        expect(await audit.list({ actorId: largest.actor?.id ?? '', limit: 10 })).toStrictEqual([largest]);
      });

      test('keeps at to the millisecond and orders by it as an instant, from 1001 BC to the last instant a Date holds', async (store) => {
        const audit = auditOf(store);
        const entries = FAR_INSTANTS.map((at) => auditEntry({ at: new Date(at) }));
        await appendAll(audit, scrambled(entries));
        expect(await audit.list({ limit: 100 })).toStrictEqual(entries);
        // The range filters compare instants too: from 1969 (inclusive) to year 10000 (exclusive).
        const [from, to] = [FAR_INSTANTS[1] ?? 0, FAR_INSTANTS[7] ?? 0];
        expect(entryIds(await audit.list({ from: new Date(from), to: new Date(to), limit: 100 }))).toEqual(entryIds(entries.slice(1, 7)));
        expect(entryIds(await audit.list({ from: new Date(0), limit: 100 }))).toEqual(entryIds(entries.slice(3)));
        expect(entryIds(await audit.list({ to: new Date(0), limit: 100 }))).toEqual(entryIds(entries.slice(0, 3)));
      });

      test('hands out copies: mutating an appended or a listed entry does not change the store', async (store) => {
        const audit = auditOf(store);
        const actor = { id: 'alice', keyPrefix: 'kg_aliceKey000001' };
        const changes = { scopes: ['leads:read'], metadata: { plan: 'pro', nested: { list: [1, 2] } } };
        const entry = auditEntry({ actor, tenantId: 't1', changes });
        const original = deepCopy(entry);
        await audit.append(entry);

        // Mutating the object given to appendAudit after the fact.
        entry.at.setTime(0);
        entry.keyId = 'mutated';
        actor.id = 'mallory';
        changes.scopes.push('admin');
        changes.metadata.nested.list.push(3);
        expect(await audit.list({ limit: 10 })).toStrictEqual([original]);

        // Mutating what listAudit returned.
        for (const copy of await audit.list({ limit: 10 })) {
          copy.at.setTime(0);
          copy.action = 'key.deleted';
          copy.tenantId = 't2';
          if (copy.actor) copy.actor.id = 'mallory';
          (copy.changes.scopes as string[]).push('admin');
          (copy.changes.metadata as { plan: string }).plan = 'free';
        }
        expect(await audit.list({ limit: 10 })).toStrictEqual([original]);
        expect(await audit.list({ actorId: 'alice', tenantId: 't1', limit: 10 })).toStrictEqual([original]);
      });

      test('rejects an entry whose id is taken with already_exists, and changes nothing', async (store) => {
        const audit = auditOf(store);
        const first = auditEntry({ actor: { id: 'alice' }, tenantId: 't1' });
        await audit.append(first);
        // Another entry in every field but the id: at another position, about another key, by another actor.
        const duplicate = auditEntry({ id: first.id, at: new Date(NOON - DAY), action: 'key.deleted', actor: { id: 'bob' }, tenantId: 't2', changes: { other: true } });

        expect(errorShape(await rejectionOf(() => audit.append(duplicate)))).toEqual({ keygateError: true, code: 'already_exists' });
        expect(await audit.list({ limit: 10 })).toStrictEqual([first]);
        expect(await audit.list({ keyId: duplicate.keyId ?? '', limit: 10 })).toStrictEqual([]);
        expect(await audit.list({ actorId: 'bob', limit: 10 })).toStrictEqual([]);
        expect(await audit.list({ to: new Date(NOON), limit: 10 })).toStrictEqual([]);
      });

      test('of concurrent appends of one id, exactly one is stored; the others reject with already_exists', async (store) => {
        const audit = auditOf(store);
        const id = randomUUID();
        const contenders = Array.from({ length: 12 }, (_, i) => auditEntry({ id, at: new Date(NOON + (i % 4) * SECOND), changes: { contender: i } }));
        const settled = await Promise.allSettled(contenders.map((entry) => audit.append(entry)));

        const winners = contenders.filter((_, i) => settled[i]?.status === 'fulfilled');
        expect(winners).toHaveLength(1);
        for (const outcome of settled) {
          if (outcome.status === 'rejected') expect(errorShape(outcome.reason)).toEqual({ keygateError: true, code: 'already_exists' });
        }
        expect(await audit.list({ limit: 100 })).toStrictEqual(winners);
      });

      test('purge leaves the audit trail alone, the entries about purged keys included', async (store) => {
        const audit = auditOf(store);
        const purged = makeRecord({ status: 'revoked', revokedAt: new Date(NOON - DAY), deletedAt: new Date(NOON - DAY) });
        const kept = makeRecord();
        await seed(store, [purged, kept]);
        const entries = [
          auditEntry({ action: 'key.created', keyId: purged.id, at: new Date(NOON - 2 * DAY) }),
          auditEntry({ action: 'key.deleted', keyId: purged.id, at: new Date(NOON - DAY), changes: { status: 'revoked', deletedAt: new Date(NOON - DAY).toISOString() } }),
          auditEntry({ action: 'key.created', keyId: kept.id, at: new Date(NOON - DAY) }),
        ];
        await appendAll(audit, entries);

        expect(await store.purge({ deletedBefore: new Date(NOON) })).toBe(1);
        const purgedEntry = auditEntry({ action: 'key.purged', keyId: null, changes: { removed: 1, deletedBefore: new Date(NOON).toISOString() } });
        await audit.append(purgedEntry);
        expect(await store.purge({ deletedBefore: new Date(NOON + DAY) })).toBe(0);

        expect(await audit.list({ limit: 100 })).toStrictEqual(inOrder([...entries, purgedEntry]));
        expect(await audit.list({ keyId: purged.id, limit: 100 })).toStrictEqual(entries.slice(0, 2));
      });
    });

    // -------------------------------------------------------------------------------------------
    describe('listAudit filters, order and limit', () => {
      test('returns every entry ordered by (at, id) ascending, whatever the order of appends', async (store) => {
        const audit = auditOf(store);
        const { entries } = auditFixture();
        await appendAll(audit, scrambled(entries));
        expect(await audit.list({ limit: 1_000 })).toStrictEqual(inOrder(entries));
      });

      test('filters by keyId, actorId, tenantId, environment, from and to, each alone', async (store) => {
        const audit = auditOf(store);
        const { entries, keys } = auditFixture();
        await appendAll(audit, scrambled(entries));
        const [from, to] = [new Date(NOON + 4 * SECOND), new Date(NOON + 10 * SECOND)];
        await expectFiltered(audit, entries, [
          { keyId: keys[0] },
          { keyId: keys[2] },
          { actorId: 'alice' },
          { actorId: 'bob' },
          { actorId: 'Alice' },
          { tenantId: 't1' },
          { tenantId: 't2' },
          { environment: 'live' },
          { environment: 'test' },
          { from },
          { to },
        ]);
      });

      test('combines filters: an entry must match every one given', async (store) => {
        const audit = auditOf(store);
        const { entries, keys } = auditFixture();
        await appendAll(audit, scrambled(entries));
        const [from, to] = [new Date(NOON + 4 * SECOND), new Date(NOON + 10 * SECOND)];
        const cases: AuditFilters[] = [
          { from, to },
          { keyId: keys[0], actorId: 'alice' },
          { keyId: keys[2], tenantId: 't1' },
          { tenantId: 't1', environment: 'live' },
          { actorId: 'alice', environment: 'test' },
          { keyId: keys[1], from, to },
          { actorId: 'bob', tenantId: 't2', from },
          { tenantId: 't2', environment: 'live', to },
          { keyId: keys[0], actorId: 'alice', tenantId: 't1', environment: 'live', from: new Date(NOON), to: new Date(NOON + DAY) },
          { keyId: keys[0], actorId: 'bob', tenantId: 't2', environment: 'test', from, to },
        ];
        await expectFiltered(audit, entries, cases);
        // The fixture makes each combination select some entries and leave others out, but the last,
        // whose filters each match entries but never together (a store that ORs them returns some).
        const counts = cases.map((filters) => entries.filter((entry) => matches(entry, filters)).length);
        expect(counts.map((count, i) => (i === cases.length - 1 ? count === 0 : count > 0 && count < entries.length))).toEqual(cases.map(() => true));
      });

      test('matches filters as exact strings: no case folding, no prefix, no pattern, and null or absent fields match nothing', async (store) => {
        const audit = auditOf(store);
        const { entries, keys } = auditFixture();
        await appendAll(audit, scrambled(entries));
        const [key] = keys;
        const nothing: AuditFilters[] = [
          { keyId: key.toUpperCase() },
          { keyId: key.slice(0, 8) },
          { keyId: `${key.slice(0, -1)}%` },
          { keyId: `${key.slice(0, -1)}_` },
          { keyId: 'null' },
          { keyId: '*' },
          { actorId: 'ali' },
          { actorId: 'alic_' },
          { actorId: 'a%' },
          { actorId: 'ALICE' },
          { actorId: 'null' },
          // The keyPrefix of an actor is not its id.
          { actorId: 'kg_adminKey000001' },
          { tenantId: 't_' },
          { tenantId: 't%' },
          { tenantId: 'null' },
          { tenantId: 'undefined' },
          { tenantId: 'T1' },
          { environment: 'LIVE' },
          { environment: 'null' },
          { environment: 'liv%' },
        ];
        for (const filters of nothing) expect({ filters, listed: await audit.list({ ...filters, limit: 1_000 }) }).toEqual({ filters, listed: [] });
      });

      test('from is inclusive and to exclusive, to the millisecond', async (store) => {
        const audit = auditOf(store);
        const offsets = [-1, 0, 1, SECOND - 1, SECOND, SECOND + 1];
        const entries = offsets.map((offset) => auditEntry({ at: new Date(NOON + offset) }));
        await appendAll(audit, scrambled(entries));
        const at = (offset: number) => new Date(NOON + offset);
        await expectFiltered(audit, entries, [
          { from: at(0), to: at(SECOND) },
          { from: at(1), to: at(SECOND + 1) },
          { from: at(-1), to: at(0) },
          { from: at(SECOND + 1) },
          { to: at(-1) },
        ]);
        expect(entryIds(await audit.list({ from: at(0), to: at(SECOND), limit: 100 }))).toEqual(entryIds(entries.slice(1, 4)));
        // An empty range, and a reversed one, select nothing.
        expect(await audit.list({ from: at(1), to: at(1), limit: 100 })).toStrictEqual([]);
        expect(await audit.list({ from: at(SECOND), to: at(0), limit: 100 })).toStrictEqual([]);
      });

      test('returns at most limit entries, the first ones in order, also when the matching ones are few and far between', async (store) => {
        const audit = auditOf(store);
        const { entries } = auditFixture();
        // Fifty entries of other tenants come first in order; the matching ones are at the end.
        const crowd = Array.from({ length: 50 }, (_, i) => auditEntry({ at: new Date(NOON - DAY + i), tenantId: 'crowd' }));
        await appendAll(audit, scrambled([...entries, ...crowd]));
        const sorted = inOrder([...entries, ...crowd]);
        for (const limit of [1, 2, 13, sorted.length, sorted.length + 5]) {
          expect({ limit, ids: entryIds(await audit.list({ limit })) }).toEqual({ limit, ids: entryIds(sorted.slice(0, limit)) });
        }
        const t1 = sorted.filter((entry) => entry.tenantId === 't1');
        for (const limit of [1, 3, t1.length, t1.length + 1]) {
          expect({ limit, ids: entryIds(await audit.list({ tenantId: 't1', limit })) }).toEqual({ limit, ids: entryIds(t1.slice(0, limit)) });
        }
      });

      test('returns [] when nothing matches, on an empty trail too', async (store) => {
        const audit = auditOf(store);
        expect(await audit.list({ limit: 10 })).toStrictEqual([]);
        expect(await audit.list({ keyId: randomUUID(), limit: 10 })).toStrictEqual([]);
        await audit.append(auditEntry());
        expect(await audit.list({ keyId: randomUUID(), limit: 10 })).toStrictEqual([]);
        expect(await audit.list({ from: new Date(NOON + 1), limit: 10 })).toStrictEqual([]);
      });
    });

    // -------------------------------------------------------------------------------------------
    describe('listAudit keyset paging (after)', () => {
      test('after is strictly after a position in (at, id) order, which need not be a stored entry', async (store) => {
        const audit = auditOf(store);
        const { entries } = auditFixture();
        await appendAll(audit, scrambled(entries));
        const sorted = inOrder(entries);
        const tie = new Date(NOON + 5 * SECOND);
        const lowest = { at: tie, id: '00000000-0000-0000-0000-000000000000' };
        const highest = { at: tie, id: 'ffffffff-ffff-ffff-ffff-ffffffffffff' };
        const later = (position: Position) => entryIds(sorted.filter((entry) => byAuditPosition(entry, position) > 0));

        expect(entryIds(await audit.list({ after: lowest, limit: 100 }))).toEqual(entryIds(sorted.filter((entry) => entry.at >= tie)));
        expect(entryIds(await audit.list({ after: highest, limit: 100 }))).toEqual(entryIds(sorted.filter((entry) => entry.at > tie)));
        // After each stored entry tied on `tie`: the ones with a greater id at that instant, then the later ones.
        for (const position of sorted.filter((entry) => entry.at.getTime() === tie.getTime())) {
          const after = { at: position.at, id: position.id };
          expect({ after, ids: entryIds(await audit.list({ after, limit: 100 })) }).toEqual({ after, ids: later(after) });
        }
        expect(await audit.list({ after: { at: new Date(NOON + DAY), id: lowest.id }, limit: 100 })).toStrictEqual([]);
        expect(entryIds(await audit.list({ after: { at: new Date(NOON - DAY), id: highest.id }, limit: 100 }))).toEqual(entryIds(sorted));
      });

      test('after combines with from and to: the later of after and from starts the page', async (store) => {
        const audit = auditOf(store);
        const { entries, keys } = auditFixture();
        await appendAll(audit, scrambled(entries));
        const sorted = inOrder(entries);
        const third = sorted[20];
        if (!third) throw new Error('the fixture is too small');
        const after = { at: third.at, id: third.id };
        const expected = (filters: AuditFilters) => entryIds(sorted.filter((entry) => matches(entry, filters) && byAuditPosition(entry, third) > 0));
        const cases: AuditFilters[] = [
          { from: new Date(NOON) },
          { from: new Date(NOON + 10 * SECOND) },
          { to: new Date(NOON + 9 * SECOND) },
          { from: new Date(NOON + 2 * SECOND), to: new Date(NOON + 12 * SECOND) },
          { to: new Date(third.at.getTime()) },
          { keyId: keys[1], actorId: 'alice', from: new Date(NOON + 3 * SECOND) },
        ];
        for (const filters of cases) {
          expect({ filters, ids: entryIds(await audit.list({ ...filters, after, limit: 100 })) }).toEqual({ filters, ids: expected(filters) });
        }
      });

      test('pages with after and every filter, visiting each entry once, each page full but the last', async (store) => {
        const audit = auditOf(store);
        const { entries, keys } = auditFixture();
        await appendAll(audit, scrambled(entries));
        const [from, to] = [new Date(NOON + 4 * SECOND), new Date(NOON + 10 * SECOND)];
        const cases: AuditFilters[] = [
          {},
          { keyId: keys[0] },
          { actorId: 'alice' },
          { tenantId: 't2' },
          { environment: 'live' },
          { from, to },
          { keyId: keys[2], tenantId: 't1', from },
          { actorId: 'alice', environment: 'live', to },
        ];
        for (const filters of cases) {
          const expected = entries.filter((entry) => matches(entry, filters));
          for (const pageSize of [1, 3, 5]) await expectWalk(audit, filters, pageSize, expected);
        }
      });

      test('pages through 150 entries tied in threes without duplicates or gaps, whatever the page size', async (store) => {
        const audit = auditOf(store);
        const entries = Array.from({ length: 150 }, (_, i) => auditEntry({ at: new Date(NOON + Math.floor(i / 3) * SECOND), changes: { index: i } }));
        await appendAll(audit, scrambled(entries));
        for (const pageSize of [1, 7, 50, 149, 150, 151]) await expectWalk(audit, {}, pageSize, entries);
      });

      test('neither skips nor repeats entries when others are appended between page fetches', async (store) => {
        const audit = auditOf(store);
        const original = Array.from({ length: 30 }, (_, i) => auditEntry({ at: new Date(NOON + Math.floor(i / 2) * SECOND) }));
        await appendAll(audit, scrambled(original));
        const first = await audit.list({ limit: 8 });
        expect(entryIds(first)).toEqual(entryIds(inOrder(original).slice(0, 8)));
        const cursor = first[first.length - 1];
        if (!cursor) throw new Error('the first page is empty');

        // Entries before the cursor, tied with it (on both sides of its id), and after everything.
        const appended = [
          auditEntry({ at: new Date(NOON - SECOND) }),
          auditEntry({ at: new Date(cursor.at.getTime()), id: '00000000-0000-0000-0000-000000000000' }),
          auditEntry({ at: new Date(cursor.at.getTime()), id: 'ffffffff-ffff-ffff-ffff-ffffffffffff' }),
          auditEntry({ at: new Date(NOON + DAY) }),
        ];
        await appendAll(audit, appended);

        const visited = entryIds(first);
        let after = { at: cursor.at, id: cursor.id };
        for (let pages = 0; pages <= original.length + appended.length; pages++) {
          const page = await audit.list({ after, limit: 8 });
          visited.push(...entryIds(page));
          const last = page[page.length - 1];
          if (!last || page.length < 8) break;
          after = { at: last.at, id: last.id };
          // Another append in the middle of the walk, after the current cursor.
          if (pages === 0) {
            const more = auditEntry({ at: new Date(NOON + 12 * SECOND) });
            await audit.append(more);
            appended.push(more);
          }
        }

        const afterCursor = inOrder([...original, ...appended]).filter((entry) => byAuditPosition(entry, cursor) > 0);
        expect(visited).toEqual([...entryIds(first), ...entryIds(afterCursor)]);
        expect(new Set(visited).size).toBe(visited.length);
      });
    });
  });
}
