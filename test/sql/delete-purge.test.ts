/**
 * Soft delete and purge in SqlStore, on each dialect's own terms (the store-independent behaviour
 * is the contract suite's, src/testing/contract/delete.ts, run by the two SQL contract files):
 *
 * - a key is deleted once, in the update's own statement (`coalesce` on the stored `deleted_at`);
 * - purge's boundary (a key deleted exactly at `deletedBefore` stays), and it removes nothing else;
 * - `list` leaves deleted keys out with every filter, keeps keyset pagination, and reads only its
 *   own `includeDeleted`;
 * - purge runs in bounded batches (each one transaction, one query: on PostgreSQL its lock and its
 *   removal sent together), through the partial index on deleted keys,
 *   and tells listeners every id it removed (and `null` when a batch may have been lost);
 * - a table created by version 2's DDL (test/sql/fixtures/version-2-*.sql, frozen) gains
 *   `deleted_at` and its index on migrate(), and its rows read `deletedAt: null`;
 * - PostgreSQL under concurrency: deletes, purges and consumes racing, purges racing each other in
 *   small batches, and a purged key's consume answering `null`, which keygate treats as unknown
 *   even in a process whose cache still holds the key.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Pool } from 'pg';
import { type ApiKeyPatch, type ApiKeyRecord, isKeygateError, keygate } from 'keygate';
import { type PostgresClient, SqlStore } from 'keygate/sql';
import { PostgresEngine } from '../../src/stores/sql/postgres';
import { purgeStatements } from '../../src/stores/sql/postgres-sql';
import { SqliteEngine } from '../../src/stores/sql/sqlite';
import { parseTableName } from '../../src/stores/sql/table-name';
import { testRecord } from '../helpers/records';
import { rejection } from '../helpers/rejection';
import { describeEachDialect, postgresColumns } from '../helpers/sql-stores';

jest.setTimeout(60_000);

const CREATED = Date.UTC(2025, 0, 2, 3, 4, 5, 678);
const T = Date.UTC(2025, 5, 1, 12);
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** The latest instant a Date holds: purges everything deleted. */
const END_OF_TIME = new Date(8.64e15);

function record(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return testRecord(CREATED, { name: 'deletable', ...overrides });
}

/** The patch keygate's delete sends. */
function deletion(at: number): ApiKeyPatch {
  return { status: 'revoked', deletedAt: new Date(at), updatedAt: new Date(at) };
}

function idsOf(records: readonly { id: string }[]): string[] {
  return records.map((found) => found.id);
}

function byPosition(a: ApiKeyRecord, b: ApiKeyRecord): number {
  return a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** Every page of a list walk, following the last record of each page. */
async function walk(store: SqlStore, filters: Record<string, unknown>, limit: number): Promise<ApiKeyRecord[][]> {
  const pages: ApiKeyRecord[][] = [];
  let after: { createdAt: Date; id: string } | undefined;
  for (let i = 0; i < 100; i++) {
    const page = await store.list({ ...filters, ...(after ? { after } : {}), limit });
    pages.push(page);
    const last = page[page.length - 1];
    if (page.length < limit || !last) return pages;
    after = { createdAt: last.createdAt, id: last.id };
  }
  throw new Error('the walk never ended');
}

/** The version-2 DDL as shipped, for `table`. */
function version2(dialect: 'postgres' | 'sqlite', table: string): string {
  return readFileSync(join(__dirname, 'fixtures', `version-2-${dialect}.sql`), 'utf8').replaceAll('keygate_api_keys', table);
}

let tables = 0;

describeEachDialect(
  'soft delete and purge',
  ({ store, pool }, dialect) => {
    // Every test's deleted keys go afterwards, so that each purge count below is the test's own.
    afterEach(async () => {
      await store().purge({ deletedBefore: END_OF_TIME });
    });

    /** A fresh migrated table and the engine under a store on it, for batch-level tests. */
    async function freshTable(): Promise<{ store: SqlStore; engine: PostgresEngine | SqliteEngine; statements: string[]; close: () => void }> {
      const statements: string[] = [];
      if (dialect === 'postgres') {
        const table = `purge_batches_${++tables}`;
        const recording: PostgresClient = { query: (text, values) => (statements.push(text), pool().query(text, values)) };
        const fresh = new SqlStore({ dialect: 'postgres', client: pool(), table });
        await fresh.migrate();
        return { store: fresh, engine: new PostgresEngine(recording, parseTableName(table, true)), statements, close: () => undefined };
      }
      const db = new Database(':memory:');
      const fresh = new SqlStore({ dialect: 'sqlite', client: db });
      await fresh.migrate();
      return { store: fresh, engine: new SqliteEngine(db, parseTableName(undefined, false)), statements, close: () => db.close() };
    }

    describe('a key is deleted once', () => {
      it('a second delete keeps the first deletedAt (and revokedAt); so does a bare deletedAt, earlier or later', async () => {
        const key = record();
        await store().insert(key);
        const first = await store().update(key.id, deletion(T));
        expect(first).toStrictEqual({ ...key, status: 'revoked', revokedAt: new Date(T), deletedAt: new Date(T), updatedAt: new Date(T) });

        const again = await store().update(key.id, deletion(T + HOUR));
        expect(again && [again.deletedAt, again.revokedAt, again.updatedAt]).toEqual([new Date(T), new Date(T), new Date(T + HOUR)]);
        // Without status: the UPDATE takes no lock first, and the rule still holds, in the assignment itself.
        const earlier = await store().update(key.id, { deletedAt: new Date(T - DAY), name: 'renamed', updatedAt: new Date(T + 2 * HOUR) });
        expect(earlier && [earlier.deletedAt, earlier.name]).toEqual([new Date(T), 'renamed']);
        expect((await store().findById(key.id))?.deletedAt).toEqual(new Date(T));
      });

      it('a record inserted deleted keeps its deletedAt; a null deletedAt (outside the type) never undeletes', async () => {
        const key = record({ deletedAt: new Date(T - DAY) });
        await store().insert(key);
        await store().update(key.id, deletion(T));
        await store().update(key.id, { deletedAt: null, updatedAt: new Date(T + 1) } as unknown as ApiKeyPatch);
        expect((await store().findById(key.id))?.deletedAt).toEqual(new Date(T - DAY));
      });

      if (dialect === 'postgres') {
        it('postgres: the delete is one statement, whose assignment keeps a stored deleted_at', async () => {
          const key = record();
          await store().insert(key);
          const texts: string[] = [];
          const recording: PostgresClient = { query: (text, values) => (texts.push(text), pool().query(text, values)) };
          const recorded = new SqlStore({ dialect: 'postgres', client: recording });
          await recorded.update(key.id, deletion(T));
          await recorded.update(key.id, { deletedAt: new Date(T + 1), updatedAt: new Date(T + 1) });
          expect(texts).toHaveLength(2);
          for (const text of texts) expect(text).toMatch(/"deleted_at" = coalesce\("k"\."deleted_at", \$\d+::timestamptz\)/);
          expect((await store().findById(key.id))?.deletedAt).toEqual(new Date(T));
        });
      }
    });

    describe('purge', () => {
      it('removes a key deleted before deletedBefore; one deleted exactly at it, or after, stays', async () => {
        const before = record({ deletedAt: new Date(T - 1) });
        const at = record({ deletedAt: new Date(T) });
        const after = record({ deletedAt: new Date(T + 1) });
        const live = record();
        for (const key of [before, at, after, live]) await store().insert(key);

        expect(await store().purge({ deletedBefore: new Date(T) })).toBe(1);
        expect(await store().findById(before.id)).toBeNull();
        expect(await store().findByKeyPrefix(before.keyPrefix)).toBeNull();
        for (const key of [at, after, live]) expect(await store().findById(key.id)).toStrictEqual(key);

        expect(await store().purge({ deletedBefore: new Date(T) })).toBe(0);
        expect(await store().purge({ deletedBefore: new Date(T + 1) })).toBe(1);
        expect(await store().findById(at.id)).toBeNull();
        expect(await store().purge({ deletedBefore: new Date(T + 2) })).toBe(1);
        expect(await store().findById(live.id)).toStrictEqual(live);
      });

      it('removes nothing else: live, suspended, revoked, expired, rotating and later-deleted keys stay exactly as they were', async () => {
        const tenantId = randomUUID();
        const old = new Date(T - 400 * DAY);
        const kept = [
          record({ tenantId, createdAt: old, updatedAt: old }),
          record({ tenantId, status: 'suspended' }),
          record({ tenantId, status: 'revoked', revokedAt: old }),
          record({ tenantId, expiresAt: old }),
          record({ tenantId, revokedAt: new Date(T + DAY) }),
          record({ tenantId, status: 'revoked', revokedAt: new Date(T), deletedAt: new Date(T + HOUR) }),
        ];
        const purged = [record({ tenantId, maxUses: 10, maxConcurrent: 5 }), record({ tenantId, deletedAt: old })];
        for (const key of [...kept, ...purged]) await store().insert(key);
        // Used counters and a held lease on a kept key and on a purged one.
        for (const key of [kept[0] as ApiKeyRecord, purged[0] as ApiKeyRecord]) {
          expect(await store().consume(key.id, { now: T - DAY, maxUses: 10, rateLimit: { perDay: 100 }, concurrency: { limit: 5, lease: 'held', leaseMs: DAY } })).toMatchObject({ admitted: true });
        }
        await store().update((purged[0] as ApiKeyRecord).id, deletion(T - HOUR));
        const snapshot = await Promise.all(kept.map((key) => store().findById(key.id)));

        expect(await store().purge({ deletedBefore: new Date(T) })).toBe(2);
        expect(await Promise.all(kept.map((key) => store().findById(key.id)))).toStrictEqual(snapshot);
        expect(idsOf(await store().list({ tenantId, includeDeleted: true, limit: 100 })).sort()).toEqual(idsOf(kept).sort());
        for (const key of purged) {
          expect(await store().findById(key.id)).toBeNull();
          expect(await store().findByKeyPrefix(key.keyPrefix)).toBeNull();
          expect(await store().consume(key.id, { now: T, maxUses: 10, rateLimit: null })).toBeNull();
          await expect(store().release(key.id, 'held')).resolves.toBeUndefined();
          expect(await store().update(key.id, deletion(T))).toBeNull();
        }
        // The kept key's counters and lease are untouched: its next claim sees the lease still held.
        expect(await store().consume((kept[0] as ApiKeyRecord).id, { now: T - DAY + 1, maxUses: 10, rateLimit: { perDay: 100 }, concurrency: { limit: 5, lease: 'next', leaseMs: DAY } })).toMatchObject({
          admitted: true,
          useCount: 2,
          dayCount: 2,
          inFlight: 2,
        });
        // The purged key's id and keyPrefix are free again, and a new row starts from nothing.
        const reborn = { ...(purged[0] as ApiKeyRecord), deletedAt: null, status: 'active' as const, revokedAt: null, useCount: 0 };
        await store().insert(reborn);
        expect(await store().consume(reborn.id, { now: T, maxUses: 10, rateLimit: null, concurrency: { limit: 1, lease: 'new', leaseMs: DAY } })).toEqual({ admitted: true, useCount: 1, inFlight: 1 });
      });

      it('refuses a deletedBefore that is not a valid Date with invalid_argument, removing nothing', async () => {
        const key = record({ deletedAt: new Date(T) });
        await store().insert(key);
        for (const deletedBefore of [new Date(Number.NaN), T + 1, String(new Date(T + 1)), undefined]) {
          const error = await rejection(() => store().purge({ deletedBefore } as never));
          expect(isKeygateError(error) && [error.code, error.field]).toEqual(['invalid_argument', 'deletedBefore']);
        }
        // Inherited from a polluted prototype is not given.
        const error = await rejection(() => store().purge(Object.create({ deletedBefore: END_OF_TIME }) as never));
        expect(isKeygateError(error) && error.code).toBe('invalid_argument');
        expect(await store().findById(key.id)).toStrictEqual(key);
      });

      it('runs in bounded batches, each one query, until a batch comes back short', async () => {
        const fresh = await freshTable();
        try {
          const deleted = Array.from({ length: 7 }, (_, i) => record({ deletedAt: new Date(T - (i + 1) * HOUR) }));
          const live = [record(), record({ deletedAt: new Date(T) })];
          for (const key of [...deleted, ...live]) await fresh.store.insert(key);
          const batches: string[][] = [];
          expect(await fresh.engine.purge({ deletedBefore: new Date(T) }, (ids) => batches.push([...ids]), 3)).toBe(7);
          expect(batches.map((batch) => batch.length)).toEqual([3, 3, 1]);
          expect(batches.flat().sort()).toEqual(idsOf(deleted).sort());
          // Oldest deletions first (the index's order).
          expect(batches[0]?.sort()).toEqual(idsOf(deleted.slice(4)).sort());
          if (dialect === 'postgres') expect(fresh.statements).toHaveLength(3);
          for (const key of live) expect(await fresh.store.findById(key.id)).toStrictEqual(key);

          // A purge of exactly two full batches needs a third query, which finds nothing.
          const six = Array.from({ length: 6 }, () => record({ deletedAt: new Date(T - DAY) }));
          for (const key of six) await fresh.store.insert(key);
          fresh.statements.length = 0;
          batches.length = 0;
          expect(await fresh.engine.purge({ deletedBefore: new Date(T) }, (ids) => batches.push([...ids]), 3)).toBe(6);
          expect(batches.map((batch) => batch.length)).toEqual([3, 3]);
          if (dialect === 'postgres') expect(fresh.statements).toHaveLength(3);
        } finally {
          fresh.close();
        }
      });

      if (dialect === 'sqlite') {
        it('sqlite: yields to the event loop between batches, so a huge purge never holds the write lock for long', async () => {
          const fresh = await freshTable();
          try {
            for (let i = 0; i < 5; i++) await fresh.store.insert(record({ deletedAt: new Date(T - DAY) }));
            // Other work of this process, one event loop turn at a time.
            let turns = 0;
            let ticking: NodeJS.Immediate | undefined;
            const tick = (): void => {
              turns++;
              ticking = setImmediate(tick);
            };
            tick();
            const seen: number[] = [];
            try {
              await fresh.engine.purge({ deletedBefore: new Date(T) }, () => seen.push(turns), 1);
            } finally {
              clearImmediate(ticking);
            }
            expect(seen).toHaveLength(5);
            for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1] as number);
          } finally {
            fresh.close();
          }
        });
      }

      it('finds what it removes through the partial index on deleted keys', async () => {
        if (dialect === 'postgres') {
          const client = await pool().connect();
          try {
            await client.query('SET enable_seqscan = off');
            // The statement that finds (and locks) the batch; the one that removes it goes by id.
            const { rows } = await client.query(`EXPLAIN ${purgeStatements(parseTableName(undefined, true), new Date(T), 1000).lock}`);
            expect(rows.map((row: { 'QUERY PLAN': string }) => row['QUERY PLAN']).join('\n')).toContain('keygate_api_keys_deleted_at_idx');
          } finally {
            client.release();
          }
          const { rows } = await pool().query("SELECT indexdef FROM pg_indexes WHERE indexname = 'keygate_api_keys_deleted_at_idx'");
          expect(rows).toEqual([{ indexdef: expect.stringMatching(/USING btree \(deleted_at\) WHERE \(deleted_at IS NOT NULL\)$/) }]);
        } else {
          const db = new Database(':memory:');
          try {
            await new SqlStore({ dialect: 'sqlite', client: db }).migrate();
            const plan = db
              .prepare('EXPLAIN QUERY PLAN SELECT "id" FROM "keygate_api_keys" WHERE "deleted_at" IS NOT NULL AND "deleted_at" < ? ORDER BY "deleted_at" LIMIT ?')
              .all(T, 1000) as { detail: string }[];
            expect(plan.map((row) => row.detail).join('\n')).toContain('keygate_api_keys_deleted_at_idx');
          } finally {
            db.close();
          }
        }
      });
    });

    describe('purge tells listeners', () => {
      it('every id it removes, in every SqlStore of this process on the same client and table, and no other', async () => {
        const removed = [record({ deletedAt: new Date(T - 2) }), record({ deletedAt: new Date(T - 1) })];
        const kept = [record({ deletedAt: new Date(T) }), record()];
        for (const key of [...removed, ...kept]) await store().insert(key);
        const heard: (string | null)[] = [];
        const heardByTwin: (string | null)[] = [];
        const twin = dialect === 'postgres' ? new SqlStore({ dialect: 'postgres', client: pool() }) : undefined;
        const unsubscribe = store().subscribe((id) => heard.push(id));
        const unsubscribeTwin = twin?.subscribe((id) => heardByTwin.push(id));
        try {
          expect(await store().purge({ deletedBefore: new Date(T) })).toBe(2);
          expect([...heard].sort()).toEqual(idsOf(removed).sort());
          if (twin) expect([...heardByTwin].sort()).toEqual(idsOf(removed).sort());
          // Nothing removed, nothing heard.
          expect(await store().purge({ deletedBefore: new Date(T) })).toBe(0);
          expect(heard).toHaveLength(2);
        } finally {
          unsubscribe();
          unsubscribeTwin?.();
        }
      });

      if (dialect === 'postgres') {
        it('postgres: a batch that fails (it may have committed) tells listeners null, after the ids of the batches before it', async () => {
          const ids = [randomUUID(), randomUUID()];
          let calls = 0;
          const flaky: PostgresClient = {
            query: async () => {
              calls++;
              if (calls === 1) return { rows: [{ selected: '1000', removed: JSON.stringify(ids) }] };
              throw Object.assign(new Error('Connection terminated unexpectedly'), { code: undefined });
            },
          };
          const failing = new SqlStore({ dialect: 'postgres', client: flaky });
          const heard: (string | null)[] = [];
          const unsubscribe = failing.subscribe((id) => heard.push(id));
          try {
            await expect(failing.purge({ deletedBefore: new Date(T) })).rejects.toThrow('Connection terminated unexpectedly');
            expect(heard).toEqual([...ids, null]);
            // A refused argument changed nothing: nothing heard.
            heard.length = 0;
            await expect(failing.purge({ deletedBefore: new Date(Number.NaN) })).rejects.toMatchObject({ code: 'invalid_argument' });
            expect(heard).toEqual([]);
          } finally {
            unsubscribe();
          }
        });
      }
    });

    describe('list leaves deleted keys out unless includeDeleted', () => {
      it('with each filter and keyset pagination over ties, pages full until the last', async () => {
        const tenantId = randomUUID();
        const statuses = ['active', 'suspended', 'revoked'] as const;
        const keys = Array.from({ length: 18 }, (_, i) =>
          record({
            tenantId,
            ownerId: i % 2 === 0 ? 'alice' : 'bob',
            status: statuses[i % 3] ?? 'active',
            createdAt: new Date(CREATED + Math.floor(i / 4) * 1000),
            ...(i % 3 === 1 || i % 5 === 0 ? { deletedAt: new Date(T) } : {}),
          }),
        );
        for (const key of [...keys].reverse()) await store().insert(key);
        for (const filters of [{}, { ownerId: 'alice' }, { status: 'revoked' }, { ownerId: 'bob', status: 'active' }] as Record<string, unknown>[]) {
          for (const includeDeleted of [undefined, false, true]) {
            const query = { tenantId, ...filters, ...(includeDeleted === undefined ? {} : { includeDeleted }) };
            const expected = keys
              .filter((key) => Object.entries(filters).every(([field, value]) => (key as unknown as Record<string, unknown>)[field] === value))
              .filter((key) => includeDeleted === true || key.deletedAt === null)
              .sort(byPosition);
            for (const limit of [1, 2, 5]) {
              const pages = await walk(store(), query, limit);
              expect({ query, limit, listed: pages.flat() }).toStrictEqual({ query, limit, listed: expected });
              expect(pages.slice(0, -1).every((page) => page.length === limit)).toBe(true);
            }
          }
        }
      });

      it('reads only its own includeDeleted: one inherited from a polluted prototype shows nothing deleted', async () => {
        const tenantId = randomUUID();
        const deleted = record({ tenantId, deletedAt: new Date(T) });
        const live = record({ tenantId });
        await store().insert(deleted);
        await store().insert(live);
        const query = Object.assign(Object.create({ includeDeleted: true }) as object, { tenantId, limit: 10 });
        expect(idsOf(await store().list(query as never))).toEqual([live.id]);
        expect(idsOf(await store().list({ tenantId, includeDeleted: 'yes', limit: 10 } as never))).toEqual([live.id]);
      });
    });

    describe('migrate() on a table created by version 2', () => {
      if (dialect === 'sqlite') {
        it('sqlite: gains deleted_at and its partial index; existing rows read deletedAt null; delete, list and purge work at once', async () => {
          const db = new Database(':memory:');
          try {
            db.exec(version2('sqlite', 'v2_keys'));
            const v2Columns = (db.prepare('SELECT name FROM pragma_table_info(?) ORDER BY cid').all('v2_keys') as { name: string }[]).map((column) => `"${column.name}"`);
            expect(v2Columns).not.toContain('"deleted_at"');
            const key = record({ useCount: 3 });
            const scratch = new SqlStore({ dialect: 'sqlite', client: db, table: 'scratch_keys' });
            await scratch.migrate();
            await scratch.insert(key);
            db.exec(`INSERT INTO "v2_keys" (${v2Columns.join(', ')}) SELECT ${v2Columns.join(', ')} FROM "scratch_keys"`);

            const upgraded = new SqlStore({ dialect: 'sqlite', client: db, table: 'v2_keys' });
            await upgraded.migrate();
            await upgraded.migrate();
            await new SqlStore({ dialect: 'sqlite', client: db, table: 'fresh_keys' }).migrate();
            const describeTable = (table: string) => db.prepare('SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid').all(table);
            expect(describeTable('v2_keys')).toEqual(describeTable('fresh_keys'));
            const indexes = (table: string) =>
              (db.prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL ORDER BY name").all(table) as { sql: string }[]).map((row) =>
                row.sql.replaceAll(table, 'T'),
              );
            expect(indexes('v2_keys')).toEqual(indexes('fresh_keys'));
            expect(indexes('v2_keys')).toContain('CREATE INDEX "T_deleted_at_idx" ON "T" ("deleted_at") WHERE "deleted_at" IS NOT NULL');

            expect(await upgraded.findById(key.id)).toStrictEqual({ ...key, deletedAt: null });
            expect(idsOf(await upgraded.list({ limit: 10 }))).toEqual([key.id]);
            await upgraded.update(key.id, deletion(T));
            expect(await upgraded.list({ limit: 10 })).toEqual([]);
            expect(idsOf(await upgraded.list({ includeDeleted: true, limit: 10 }))).toEqual([key.id]);
            expect(await upgraded.purge({ deletedBefore: new Date(T + 1) })).toBe(1);
            expect(await upgraded.findById(key.id)).toBeNull();
          } finally {
            db.close();
          }
        });

        it('sqlite: today\'s docs/sql/sqlite.sql upgrades a version-2 table once its commented ADD COLUMN runs first, and says so when it did not', () => {
          const db = new Database(':memory:');
          try {
            db.exec(version2('sqlite', 'v2_scripted'));
            const today = readFileSync(join(__dirname, '../../docs/sql/sqlite.sql'), 'utf8').replaceAll('keygate_api_keys', 'v2_scripted');
            // The index on deleted keys needs the column: the script fails loudly instead of leaving the table behind.
            expect(() => db.exec(today)).toThrow(/no such column: "?deleted_at/);
            const addColumn = today.match(/^-- (ALTER TABLE "v2_scripted" ADD COLUMN "deleted_at" [^;]*;)$/m)?.[1];
            expect(addColumn).toBe('ALTER TABLE "v2_scripted" ADD COLUMN "deleted_at" INTEGER;');
            db.exec(addColumn as string);
            // The columns of versions 4 and 5, which no index needs: without them the script runs, and the table lacks them.
            for (const column of ['rotation_frequency_days', 'alerts', 'lease_holds']) {
              db.exec(today.match(new RegExp(`^-- (ALTER TABLE "v2_scripted" ADD COLUMN "${column}" [^;]*;)$`, 'm'))?.[1] as string);
            }
            db.exec(today);
            db.exec(today);
            db.exec(today.replaceAll('v2_scripted', 'fresh_scripted'));
            const describeTable = (table: string) => db.prepare('SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid').all(table);
            expect(describeTable('v2_scripted')).toEqual(describeTable('fresh_scripted'));
          } finally {
            db.close();
          }
        });
      } else {
        const describeTable = (table: string) => postgresColumns(pool(), table);

        async function indexesOf(table: string): Promise<string[]> {
          const { rows } = await pool().query('SELECT indexdef FROM pg_indexes WHERE tablename = $1 ORDER BY indexname', [table]);
          return rows.map((row: { indexdef: string }) => row.indexdef.replaceAll(table, 'T'));
        }

        it('postgres: gains deleted_at and its partial index (migrations racing); existing rows read deletedAt null; delete, list and purge work at once', async () => {
          await pool().query(version2('postgres', 'v2_keys'));
          const v2Columns = (await describeTable('v2_keys')).map((column) => `"${(column as { column_name: string }).column_name}"`);
          expect(v2Columns).not.toContain('"deleted_at"');
          const key = record({ useCount: 3 });
          const scratch = new SqlStore({ dialect: 'postgres', client: pool(), table: 'scratch_v2_keys' });
          await scratch.migrate();
          await scratch.insert(key);
          await pool().query(`INSERT INTO "v2_keys" (${v2Columns.join(', ')}) SELECT ${v2Columns.join(', ')} FROM "scratch_v2_keys"`);

          const upgraded = new SqlStore({ dialect: 'postgres', client: pool(), table: 'v2_keys' });
          await Promise.all([upgraded.migrate(), upgraded.migrate(), upgraded.migrate()]);
          await new SqlStore({ dialect: 'postgres', client: pool(), table: 'fresh_v2_keys' }).migrate();
          expect(await describeTable('v2_keys')).toEqual(await describeTable('fresh_v2_keys'));
          expect(await indexesOf('v2_keys')).toEqual(await indexesOf('fresh_v2_keys'));
          expect(await indexesOf('v2_keys')).toContain('CREATE INDEX T_deleted_at_idx ON public.T USING btree (deleted_at) WHERE (deleted_at IS NOT NULL)');

          expect(await upgraded.findById(key.id)).toStrictEqual({ ...key, deletedAt: null });
          await upgraded.update(key.id, deletion(T));
          expect(await upgraded.list({ limit: 10 })).toEqual([]);
          expect(idsOf(await upgraded.list({ includeDeleted: true, limit: 10 }))).toEqual([key.id]);
          expect(await upgraded.purge({ deletedBefore: new Date(T + 1) })).toBe(1);
          expect(await upgraded.findById(key.id)).toBeNull();
        });

        it('postgres: today\'s docs/sql/postgres.sql upgrades a version-2 table too, and runs again', async () => {
          await pool().query(version2('postgres', 'v2_scripted'));
          const today = readFileSync(join(__dirname, '../../docs/sql/postgres.sql'), 'utf8').replaceAll('keygate_api_keys', 'v2_scripted');
          await pool().query(today);
          await pool().query(today);
          await new SqlStore({ dialect: 'postgres', client: pool(), table: 'fresh_v2_scripted' }).migrate();
          expect(await describeTable('v2_scripted')).toEqual(await describeTable('fresh_v2_scripted'));
          expect(await indexesOf('v2_scripted')).toEqual(await indexesOf('fresh_v2_scripted'));
        });
      }
    });

    if (dialect !== 'postgres') return;

    describe('postgres under concurrency', () => {
      it('deletes, purges and consumes racing: no error, every key ends deleted then purged, whole; consumes see it whole or not at all', async () => {
        const keys = Array.from({ length: 24 }, () => record({ maxUses: 1_000, rateLimit: { perDay: 1_000 } }));
        for (const key of keys) await store().insert(key);
        const consume = (key: ApiKeyRecord) => store().consume(key.id, { now: T, maxUses: 1_000, rateLimit: { perDay: 1_000 } });
        // Every key's delete between consumes of it, purges all along: shuffled (seeded), then sent at once.
        type Operation = { kind: 'delete' | 'consume' | 'purge'; run: () => Promise<unknown> };
        const operations: Operation[] = [
          ...keys.flatMap((key, i): Operation[] => [
            { kind: 'consume', run: () => consume(key) },
            { kind: 'delete', run: () => store().update(key.id, deletion(T - DAY + i)) },
            { kind: 'consume', run: () => consume(key) },
            { kind: 'consume', run: () => consume(key) },
          ]),
          ...Array.from({ length: 8 }, (): Operation => ({ kind: 'purge', run: () => store().purge({ deletedBefore: new Date(T) }) })),
        ];
        let seed = 12_345;
        for (let i = operations.length - 1; i > 0; i--) {
          seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
          const j = seed % (i + 1);
          [operations[i], operations[j]] = [operations[j] as Operation, operations[i] as Operation];
        }
        const results = await Promise.allSettled(operations.map((operation) => operation.run()));
        expect(results.filter((result) => result.status === 'rejected')).toEqual([]);
        const outcomes = (kind: Operation['kind']) =>
          results.flatMap((result, i) => (operations[i]?.kind === kind ? [(result as PromiseFulfilledResult<unknown>).value] : []));
        const seen = new Set<string>();
        for (const outcome of outcomes('consume')) {
          // Before the delete: admitted; between the delete and the purge: revoked; after the purge: unknown (null).
          seen.add(outcome === null ? 'unknown' : (outcome as { admitted: boolean; refusal?: string }).admitted ? 'admitted' : String((outcome as { refusal?: string }).refusal));
        }
        expect([...seen].every((kind) => ['admitted', 'api_key_revoked', 'unknown'].includes(kind))).toBe(true);
        const purgedSoFar = outcomes('purge').reduce<number>((sum, count) => sum + (count as number), 0);
        const remaining = (await Promise.all(keys.map((key) => store().findById(key.id)))).filter((found) => found !== null);
        // What the racing purges missed (deleted after their batch looked) is still whole, and deleted.
        for (const found of remaining) expect(found).toMatchObject({ status: 'revoked', deletedAt: expect.any(Date) });
        expect(purgedSoFar + remaining.length).toBe(keys.length);
        expect(await store().purge({ deletedBefore: new Date(T) })).toBe(remaining.length);
        for (const key of keys) expect(await consume(key)).toBeNull();
      });

      it('purges racing each other in small batches take turns: no deadlock, each key removed and counted once', async () => {
        const fresh = await freshTable();
        const keys = Array.from({ length: 60 }, (_, i) => record({ deletedAt: new Date(T - DAY + (i % 7)) }));
        for (const key of keys) await fresh.store.insert(key);
        const heard: string[] = [];
        const counts = await Promise.all(
          Array.from({ length: 5 }, () => fresh.engine.purge({ deletedBefore: new Date(T) }, (ids) => heard.push(...ids), 4)),
        );
        expect(counts.reduce((sum, count) => sum + count, 0)).toBe(keys.length);
        expect([...heard].sort()).toEqual(idsOf(keys).sort());
        expect(await fresh.store.list({ includeDeleted: true, limit: 100 })).toEqual([]);
      });

      it('a purged key is unknown to keygate, even in a process whose cache still holds it (its consume answers null)', async () => {
        // Another "process": its own pool, so this process's listeners never reach its cache.
        const elsewhere = new Pool({ ...pool().options, max: 2 });
        elsewhere.on('error', () => undefined);
        const here = keygate({ store: store(), prefix: 'pk_test', hashing: 'sha256' });
        const there = keygate({ store: new SqlStore({ dialect: 'postgres', client: elsewhere }), prefix: 'pk_test', hashing: 'sha256' });
        try {
          const { key, apiKey } = await here.create({ name: 'short-lived' });
          expect((await there.verify(key)).ok).toBe(true); // cached there
          await here.delete(apiKey.id);
          expect(await there.verify(key)).toMatchObject({ ok: false, error: { code: 'api_key_revoked' } });
          expect(await here.purge({ deletedBefore: Date.now() + 1_000 })).toBeGreaterThanOrEqual(1);
          expect(await store().consume(apiKey.id, { now: Date.now(), maxUses: null, rateLimit: null })).toBeNull();
          expect(await there.verify(key)).toMatchObject({ ok: false, error: { code: 'invalid_api_key' } });
          expect(await here.verify(key)).toMatchObject({ ok: false, error: { code: 'invalid_api_key' } });
          expect(await here.get(apiKey.id)).toBeNull();
        } finally {
          await here.close();
          await there.close();
          await elsewhere.end();
        }
      });
    });
  },
  { poolMax: 10 },
);
