/**
 * `list` on PostgreSQL orders by the table's (created_at, id), not by the select list's
 * `created_at` (epoch milliseconds as text, under the same name): ordered as text, a key created
 * in 1999 (12 digits) came after one of 2025 (13 digits), a page walk skipped and repeated keys
 * (its keyset condition compares the real column), and no index served the order, so every list
 * sorted the whole table.
 */
import type { ApiKeyRecord } from 'keygate';
import { SqlStore } from 'keygate/sql';
import { listStatement } from '../../src/stores/sql/postgres-sql';
import { parseTableName } from '../../src/stores/sql/table-name';
import { describePostgres, postgresWithPool } from '../helpers/postgres-server';
import { testRecord } from '../helpers/records';

jest.setTimeout(60_000);

describePostgres('list order (postgres)', () => {
  const pg = postgresWithPool(4);

  it('pages through keys created before 2001, before 1970 and since, in (createdAt, id) order, each once', async () => {
    const store = new SqlStore({ dialect: 'postgres', client: pg.pool, table: 'ordered' });
    await store.migrate();
    const instants = [Date.UTC(2025, 0, 1), Date.UTC(1999, 0, 1), -1_000, 0, Date.UTC(1960, 5, 1), Date.UTC(2025, 0, 1), 5, Date.UTC(2001, 8, 9, 1, 46, 40)];
    const keys = instants.map((createdAt) => testRecord(createdAt));
    for (const key of keys) await store.insert(key);
    const expected = [...keys].sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : 1)).map((key) => key.id);
    expect((await store.list({ limit: 100 })).map((key) => key.id)).toEqual(expected);
    const walked: string[] = [];
    let after: { createdAt: Date; id: string } | undefined;
    for (let page = 0; page < 20; page++) {
      const found: ApiKeyRecord[] = await store.list({ ...(after ? { after } : {}), limit: 3 });
      walked.push(...found.map((key) => key.id));
      const last = found[found.length - 1];
      if (found.length < 3 || !last) break;
      after = { createdAt: last.createdAt, id: last.id };
    }
    expect(walked).toEqual(expected);
  });

  it('reads the (created_at, id) index in order, with no sort', async () => {
    const store = new SqlStore({ dialect: 'postgres', client: pg.pool, table: 'indexed' });
    await store.migrate();
    await pg.pool.query(
      `INSERT INTO "indexed" ("id", "key_prefix", "key_hash", "name", "status", "created_at", "updated_at")
       SELECT 'k' || i, 'p' || i, 'h', 'n', 'active', timestamptz '2025-01-01' + i * interval '1 second', now() FROM generate_series(1, 20000) AS i`,
    );
    await pg.pool.query('ANALYZE "indexed"');
    const text = listStatement(parseTableName('indexed', true), { ownerId: false, tenantId: false, status: false, after: true, includeDeleted: false });
    const { rows } = await pg.pool.query(`EXPLAIN (FORMAT JSON) ${text}`, ['2025-01-01T00:00:00.000+00:00', 'k1', 50]);
    const plan = JSON.stringify(rows[0]['QUERY PLAN']);
    expect(plan).toContain('"Index Name":"indexed_created_at_id_idx"');
    expect(plan).not.toContain('"Node Type":"Sort"');
  });
});
