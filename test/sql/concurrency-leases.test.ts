/**
 * Concurrency leases (`maxConcurrent`) in SqlStore: the `concurrency_leases` column of the key's
 * row, read and written under the consume's row lock, on both dialects. The generic behaviour is
 * the store contract's (src/testing/contract/concurrency.ts); these tests look at the SQL itself:
 *
 * - many concurrent consumes of one key on a PostgreSQL pool admit exactly the limit (the leases
 *   are re-read after each wait for the row lock, never from the statement's snapshot);
 * - lapsed leases are pruned when a claim is admitted, and the lapse instants written are
 *   JavaScript's `at + leaseMs`, to the last bit;
 * - a column edited by hand into something that is not an object of instants fails closed;
 * - `release` of an unknown lease (or key) writes nothing; of a known one, changes only the leases;
 * - a consume without a claim neither reads nor writes the column;
 * - random sequences of claims, plain consumes and releases equal `decideConsume` / `leasesAfter`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import type { Pool } from 'pg';
import type { ApiKeyRecord } from 'keygate';
import { SqlStore } from 'keygate/sql';
import { type ConcurrencyClaim, type ConsumeRequest, type CounterState, countingInstant, decideConsume, initialCounters, leasesAfter, liveLeases } from '../../src/policy/limits';
import { parseTableName } from '../../src/stores/sql/table-name';
import { postgresStatements } from '../../src/stores/sql/postgres-sql';
import { testRecord } from '../helpers/records';
import { rejection } from '../helpers/rejection';
import { describeEachDialect } from '../helpers/sql-stores';

jest.setTimeout(60_000);

const RUNS = Number(process.env.KEYGATE_PROPERTY_RUNS ?? 40);
const T = Date.UTC(2026, 2, 1, 12);
const TABLE = '"keygate_api_keys"';

function claim(lease: string, limit = 5, leaseMs = 60_000): ConcurrencyClaim {
  return { limit, lease, leaseMs };
}

function request(now: number, concurrency?: ConcurrencyClaim, overrides: Partial<ConsumeRequest> = {}): ConsumeRequest {
  return { now, maxUses: null, rateLimit: null, ...(concurrency ? { concurrency } : {}), ...overrides };
}

/** Raw access to the key's row, in each dialect's SQL. */
interface Raw {
  /** The column as stored: JSON text. */
  leasesText(id: string): Promise<string>;
  /** The column, parsed. */
  leases(id: string): Promise<Record<string, number>>;
  /** Sets the column to a literal of the dialect's SQL. */
  setLeases(id: string, literal: string): Promise<void>;
  /** Something that changes whenever the row is written (PostgreSQL: xmin; SQLite: the connection's total_changes()). */
  version(id: string): Promise<string>;
  row(id: string): Promise<Record<string, unknown>>;
}

function postgresRaw(pool: Pool): Raw {
  const query = async (text: string, values: unknown[]) => (await pool.query(text, values)).rows as Record<string, unknown>[];
  return {
    leasesText: async (id) => String((await query(`SELECT "concurrency_leases"::text AS "l" FROM ${TABLE} WHERE "id" = $1`, [id]))[0]?.l),
    // Each instant as float8 text, parsed by JavaScript: exactly the double the consume compares.
    leases: async (id) => {
      const rows = await query(`SELECT "key", "value"::float8::text AS "value" FROM ${TABLE}, jsonb_each("concurrency_leases") WHERE "id" = $1`, [id]);
      return Object.fromEntries(rows.map((row) => [String(row.key), Number(row.value)]));
    },
    setLeases: async (id, literal) => void (await query(`UPDATE ${TABLE} SET "concurrency_leases" = ${literal} WHERE "id" = $1`, [id])),
    version: async (id) => String((await query(`SELECT xmin::text AS "v" FROM ${TABLE} WHERE "id" = $1`, [id]))[0]?.v),
    row: async (id) => (await query(`SELECT * FROM ${TABLE} WHERE "id" = $1`, [id]))[0] ?? {},
  };
}

function sqliteRaw(db: Database.Database): Raw {
  const text = (id: string) => String((db.prepare(`SELECT "concurrency_leases" AS "l" FROM ${TABLE} WHERE "id" = ?`).get(id) as { l: string }).l);
  return {
    leasesText: async (id) => text(id),
    leases: async (id) => JSON.parse(text(id)) as Record<string, number>,
    setLeases: async (id, literal) => void db.prepare(`UPDATE ${TABLE} SET "concurrency_leases" = ${literal} WHERE "id" = ?`).run(id),
    version: async () => String((db.prepare('SELECT total_changes() AS "v"').get() as { v: number }).v),
    row: async (id) => db.prepare(`SELECT * FROM ${TABLE} WHERE "id" = ?`).get(id) as Record<string, unknown>,
  };
}

/** The double just below a positive `x`. */
function previousDouble(x: number): number {
  const bits = new Float64Array([x]);
  new BigInt64Array(bits.buffer)[0]! -= 1n;
  return bits[0] as number;
}

describe('the PostgreSQL statements', () => {
  const statements = postgresStatements(parseTableName(undefined, true));

  it('a consume without a claim never names the leases column, nor the claim parameters', () => {
    expect(statements.consume).not.toContain('concurrency_leases');
    expect(statements.consume).not.toMatch(/\$1[234]\b/);
    expect(statements.consumeClaim).toContain('concurrency_leases');
  });

  it('release uses jsonb_exists, never the ? operator a driver could read as a placeholder', () => {
    expect(statements.release).toContain('jsonb_exists(');
    expect(statements.release).not.toContain('?');
  });
});

describeEachDialect(
  'concurrency leases',
  (fixture, dialect) => {
    let raw: Raw;
    let store: SqlStore;
    // SQLite: a database of this file's own, to read the column with SQL (the fixture keeps its
    // Database to itself); PostgreSQL: the fixture's store and pool.
    let dir: string | undefined;
    let db: Database.Database | undefined;

    beforeAll(async () => {
      if (dialect === 'sqlite') {
        dir = mkdtempSync(join(tmpdir(), 'keygate-leases-'));
        db = new Database(join(dir, 'keys.db'));
        db.pragma('journal_mode = WAL');
        store = new SqlStore({ dialect: 'sqlite', client: db });
        await store.migrate();
        raw = sqliteRaw(db);
      } else {
        store = fixture.store();
        raw = postgresRaw(fixture.pool());
      }
    });

    afterAll(() => {
      db?.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    async function newKey(overrides: Partial<ApiKeyRecord> = {}): Promise<ApiKeyRecord> {
      const key = testRecord(T - 60_000, overrides);
      await store.insert(key);
      return key;
    }

    it('100 concurrent consumes with limit 5 admit exactly 5, each seeing the leases the others left', async () => {
      const key = await newKey();
      const outcomes = await Promise.all(Array.from({ length: 100 }, (_, i) => store.consume(key.id, request(T, claim(`lease-${i}`)))));
      const admitted = outcomes.filter((outcome) => outcome?.admitted);
      expect(admitted).toHaveLength(5);
      expect(admitted.map((outcome) => outcome?.inFlight).sort()).toEqual([1, 2, 3, 4, 5]);
      for (const outcome of outcomes) if (!outcome?.admitted) expect(outcome).toEqual({ admitted: false, refusal: 'concurrency_limited', useCount: expect.any(Number), inFlight: 5 });
      const leases = await raw.leases(key.id);
      expect(Object.keys(leases)).toHaveLength(5);
      expect(Object.values(leases)).toEqual(Array(5).fill(T + 60_000));
      expect((await store.findById(key.id))?.useCount).toBe(5);

      // Released, the slots are free again: five more, and no sixth.
      await Promise.all(Object.keys(leases).map((lease) => store.release(key.id, lease)));
      expect(await raw.leases(key.id)).toEqual({});
      const again = await Promise.all(Array.from({ length: 20 }, (_, i) => store.consume(key.id, request(T + 1, claim(`again-${i}`)))));
      expect(again.filter((outcome) => outcome?.admitted)).toHaveLength(5);
    });

    it('prunes the leases lapsed at the counting instant (lapse <= at) when a claim is admitted', async () => {
      const key = await newKey();
      expect(await store.consume(key.id, request(T, claim('a', 2, 1000)))).toEqual({ admitted: true, useCount: 1, inFlight: 1 });
      expect(await store.consume(key.id, request(T + 500, claim('b', 2, 1000)))).toEqual({ admitted: true, useCount: 2, inFlight: 2 });
      expect(await store.consume(key.id, request(T + 999, claim('c', 2, 1000)))).toEqual({ admitted: false, refusal: 'concurrency_limited', useCount: 2, inFlight: 2 });
      // A refusal writes nothing: the leases are as they were.
      expect(await raw.leases(key.id)).toEqual({ a: T + 1000, b: T + 1500 });
      // At T + 1000, `a` lapses (its instant is not later than at): `c` takes its slot.
      expect(await store.consume(key.id, request(T + 1000, claim('c', 2, 1000)))).toEqual({ admitted: true, useCount: 3, inFlight: 2 });
      expect(await raw.leases(key.id)).toEqual({ b: T + 1500, c: T + 2000 });
      // A caller whose clock lags counts at the key's latest instant: `b` and `c` are live there.
      expect(await store.consume(key.id, request(T - 10_000, claim('d', 2, 1000)))).toEqual({
        admitted: false,
        refusal: 'concurrency_limited',
        useCount: 3,
        inFlight: 2,
        countedAt: T + 1000,
      });
      // Far later, every lease has lapsed and is dropped.
      expect(await store.consume(key.id, request(T + 10_000, claim('e', 2, 1000)))).toEqual({ admitted: true, useCount: 4, inFlight: 1 });
      expect(await raw.leases(key.id)).toEqual({ e: T + 11_000 });
    });

    it('writes at + leaseMs as JavaScript adds the doubles, and compares instants as doubles', async () => {
      const key = await newKey();
      const now = T + 1 / 3;
      const leaseMs = 1 / 7;
      // The sum needs every digit of a double: fifteen (float8 → numeric in PostgreSQL) would lose it.
      expect(Number((now + leaseMs).toPrecision(15))).not.toBe(now + leaseMs);
      await store.consume(key.id, request(now, claim('x', 1, leaseMs)));
      expect((await raw.leases(key.id)).x).toBe(now + leaseMs);
      // One ulp before the lapse instant the lease is live; at the instant it is not.
      const lapse = now + leaseMs;
      const before = previousDouble(lapse);
      expect(await store.consume(key.id, request(before, claim('y', 1, leaseMs)))).toMatchObject({ admitted: false, refusal: 'concurrency_limited', inFlight: 1 });
      expect(await store.consume(key.id, request(lapse, claim('y', 1, leaseMs)))).toMatchObject({ admitted: true, inFlight: 1 });
      expect(await raw.leases(key.id)).toEqual({ y: lapse + leaseMs });
    });

    it('concurrency_limited comes after every other limit, and a lifecycle refusal reports no inFlight', async () => {
      const key = await newKey({ maxUses: 1 });
      await store.consume(key.id, request(T, claim('a', 1), { maxUses: 1 }));
      expect(await store.consume(key.id, request(T, claim('b', 1), { maxUses: 1 }))).toEqual({ admitted: false, refusal: 'usage_exhausted', useCount: 1, inFlight: 1 });
      const other = await newKey();
      const limited = { perSecond: 1, burst: 1 };
      expect(await store.consume(other.id, request(T, claim('a', 1), { rateLimit: limited }))).toEqual({ admitted: true, useCount: 1, tokens: 0, inFlight: 1 });
      expect(await store.consume(other.id, request(T, claim('b', 1), { rateLimit: limited }))).toEqual({ admitted: false, refusal: 'rate_limited', useCount: 1, tokens: 0, inFlight: 1 });
      expect(await store.consume(other.id, request(T + 1000, claim('b', 1), { rateLimit: limited }))).toEqual({
        admitted: false,
        refusal: 'concurrency_limited',
        useCount: 1,
        tokens: 1,
        inFlight: 1,
      });
      await store.update(other.id, { status: 'suspended', updatedAt: new Date(T) });
      expect(await store.consume(other.id, request(T, claim('c', 1)))).toEqual({ admitted: false, refusal: 'api_key_disabled', useCount: 1 });
    });

    const GARBAGE: Record<'sqlite' | 'postgres', [string, string][]> = {
      sqlite: [
        ['text that is not JSON', "'not json'"],
        ['an array', "'[]'"],
        ['a number', "'5'"],
        ['JSON null', "'null'"],
        ['an instant that is text', `'{"a":"${T + 60_000}"}'`],
        ['an instant that is null', `'{"a":null}'`],
      ],
      postgres: [
        ['an array', "'[\"a\"]'::jsonb"],
        ['a number', "'5'::jsonb"],
        ['JSON null', "'null'::jsonb"],
        ['a string', "'\"{}\"'::jsonb"],
        ['an instant that is text', `'{"a":"${T + 60_000}"}'::jsonb`],
        ['an instant that is null', `'{"a":null}'::jsonb`],
        ['an instant beyond any double', `'{"a":1e400}'::jsonb`],
      ],
    };

    it.each(GARBAGE[dialect])('fails closed when the column was edited by hand into %s: a claim rejects and counts nothing', async (_what, literal) => {
      const key = await newKey();
      await raw.setLeases(key.id, literal);
      const before = await raw.leasesText(key.id);
      const error = await rejection(() => store.consume(key.id, request(T, claim('a', 100))));
      expect(error).toBeInstanceOf(Error);
      if (!/out of range|overflow/.test(String((error as Error).message))) expect(error).toMatchObject({ code: 'invalid_record', field: 'concurrencyLeases' });
      expect((await store.findById(key.id))?.useCount).toBe(0);
      expect(await raw.leasesText(key.id)).toBe(before);
      // A consume without a claim does not read the column: it counts, and leaves it as it is.
      expect(await store.consume(key.id, request(T))).toEqual({ admitted: true, useCount: 1 });
      expect(await raw.leasesText(key.id)).toBe(before);
      // release of a lease it does not hold resolves, and leaves it as it is too.
      await store.release(key.id, 'b');
      expect(await raw.leasesText(key.id)).toBe(before);
      // A lifecycle refusal still comes first.
      await store.update(key.id, { status: 'revoked', updatedAt: new Date(T) });
      expect(await store.consume(key.id, request(T, claim('a', 100)))).toEqual({ admitted: false, refusal: 'api_key_revoked', useCount: 1 });
    });

    it('release of an unknown lease, or of an unknown key, resolves and writes nothing', async () => {
      const key = await newKey();
      await store.consume(key.id, request(T, claim('held')));
      const version = await raw.version(key.id);
      await expect(store.release(key.id, 'never-taken')).resolves.toBeUndefined();
      await expect(store.release(key.id, '__proto__')).resolves.toBeUndefined();
      await expect(store.release(key.id, "it's \"quoted\" $.a[0]")).resolves.toBeUndefined();
      await expect(store.release('no-such-key', 'held')).resolves.toBeUndefined();
      await expect(store.release(key.id, 'nul\u0000')).resolves.toBeUndefined();
      expect(await raw.version(key.id)).toBe(version);
      expect(await raw.leases(key.id)).toEqual({ held: T + 60_000 });
    });

    it('release removes that lease only, changes no counter nor updated_at, and notifies nobody', async () => {
      const key = await newKey();
      const awkward = ['a', "it's \"quoted\"", '$.b', 'a.b', '__proto__', 'x'.repeat(64), 'ünï ✓'];
      for (const [i, lease] of awkward.entries()) await store.consume(key.id, request(T + i, claim(lease, 10)));
      const before = await raw.row(key.id);
      const changes: (string | null)[] = [];
      const unsubscribe = store.subscribe((id) => changes.push(id));
      try {
        await store.release(key.id, '$.b');
        await store.release(key.id, '__proto__');
      } finally {
        unsubscribe();
      }
      expect(changes).toEqual([]);
      const after = await raw.row(key.id);
      const leases = await raw.leases(key.id);
      expect(Object.keys(leases).sort()).toEqual(awkward.filter((lease) => lease !== '$.b' && lease !== '__proto__').sort());
      const { concurrency_leases: _before, ...restBefore } = before;
      const { concurrency_leases: _after, ...restAfter } = after;
      expect(restAfter).toEqual(restBefore);
      expect(await store.findById(key.id)).toStrictEqual({ ...key, useCount: awkward.length, lastUsedAt: new Date(T + awkward.length - 1) });
    });

    it('a consume without a claim leaves the column untouched, lapsed leases included', async () => {
      const key = await newKey();
      await store.consume(key.id, request(T, claim('short', 5, 10)));
      await store.consume(key.id, request(T, claim('long', 5, 60_000)));
      const before = await raw.leasesText(key.id);
      for (let i = 0; i < 3; i++) expect(await store.consume(key.id, request(T + 1000 * i))).toMatchObject({ admitted: true });
      expect(await raw.leasesText(key.id)).toBe(before);
      expect(await raw.leases(key.id)).toEqual({ short: T + 10, long: T + 60_000 });
    });

    it('a rotation\'s replacement starts with no lease; the old key keeps its own', async () => {
      const key = await newKey();
      await store.consume(key.id, request(T, claim('old', 1)));
      const replacement = testRecord(T, { rotatedFromId: key.id });
      await store.rotate({ oldId: key.id, replacement, oldRevokedAt: new Date(T + 60_000), now: new Date(T) });
      expect(await raw.leases(replacement.id)).toEqual({});
      expect(await raw.leases(key.id)).toEqual({ old: T + 60_000 });
      expect(await store.consume(replacement.id, request(T, claim('new', 1)))).toMatchObject({ admitted: true, inFlight: 1 });
    });

    it('random sequences of claims, plain consumes and releases equal decideConsume and leasesAfter', async () => {
      const step = fc.record({
        dt: fc.oneof(fc.constantFrom(0, 1, 10, 999, 1000), fc.integer({ min: -2000, max: 3000 }), fc.double({ min: -50, max: 500, noNaN: true })),
        action: fc.oneof(
          fc.record({ kind: fc.constant('claim' as const), limit: fc.integer({ min: 1, max: 3 }), leaseMs: fc.oneof(fc.integer({ min: 1, max: 2000 }), fc.double({ min: 0.001, max: 2000, noNaN: true })) }),
          fc.record({ kind: fc.constant('plain' as const) }),
          fc.record({ kind: fc.constant('release' as const), which: fc.nat() }),
        ),
        perSecond: fc.option(fc.constantFrom(1, 2, 5), { nil: undefined }),
      });
      let run = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 14 }), async (steps) => {
          const key = await newKey();
          let state: CounterState = initialCounters(0);
          let leases: Record<string, number> = {};
          const taken: string[] = [];
          let now = T;
          run++;
          for (const [i, { dt, action, perSecond }] of steps.entries()) {
            now += dt;
            if (action.kind === 'release') {
              const lease = taken.length === 0 ? 'none' : (taken[action.which % taken.length] as string);
              delete leases[lease];
              await store.release(key.id, lease);
              continue;
            }
            const rateLimit = perSecond === undefined ? null : { perSecond };
            const concurrency = action.kind === 'claim' ? { limit: action.limit, lease: `r${run}-${i}`, leaseMs: action.leaseMs } : undefined;
            const consume = request(now, concurrency, { rateLimit });
            const at = countingInstant(state, now);
            const { outcome, next } = decideConsume(state, consume, Object.keys(liveLeases(leases, at)).length);
            if (concurrency && next) {
              leases = { ...leasesAfter(leases, concurrency, at) };
              taken.push(concurrency.lease);
            }
            if (next) state = next;
            expect(await store.consume(key.id, consume)).toEqual(outcome);
          }
          expect(await raw.leases(key.id)).toEqual(leases);
        }),
        { numRuns: RUNS },
      );
    });
  },
  { poolMax: 12 },
);
