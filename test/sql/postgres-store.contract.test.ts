import { Pool } from 'pg';
import { describeStoreContract } from 'keygate/testing';
import { SqlStore } from 'keygate/sql';
import { type PostgresServer, describePostgres, startPostgres } from '../helpers/postgres-server';

// The contract suite against a real PostgreSQL 15, with a table of its own for every test
// (created by migrate() with the tables named from it, all dropped afterwards), all on one Pool as
// an application would have.
describePostgres('PostgreSQL', () => {
  let server: PostgresServer;
  let pool: Pool;
  let count = 0;

  beforeAll(async () => {
    server = await startPostgres();
    pool = new Pool({ connectionString: server.connectionString, max: 20 });
    pool.on('error', () => undefined);
  });

  afterAll(async () => {
    await pool?.end();
    await server?.destroy();
  });

  describeStoreContract('SqlStore (postgres)', {
    create: async () => {
      const store = new SqlStore({ dialect: 'postgres', client: pool, table: `contract_${process.pid}_${++count}` });
      await store.migrate();
      return store;
    },
    destroy: async (store) => {
      // The key table and the tables named from it (audit trail, usage cells, batch ids, alert claims).
      const tables = ['', '_audit', '_usage', '_usage_batches', '_alert_claims'].map((suffix) => `"${store.table}${suffix}"`);
      await pool.query(`DROP TABLE ${tables.join(', ')}`);
    },
    capabilities: { subscribe: true, concurrency: true, audit: true, usage: true, alerts: true, leases: true },
  });
});
