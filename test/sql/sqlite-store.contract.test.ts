import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeStoreContract } from 'keygate/testing';
import { SqlStore } from 'keygate/sql';

// The contract suite against SQLite, with a fresh database file (not :memory:) for every test.
const dir = mkdtempSync(join(tmpdir(), 'keygate-sqlite-contract-'));
const databases = new Map<SqlStore, Database.Database>();
let count = 0;

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describeStoreContract('SqlStore (sqlite)', {
  create: async () => {
    const db = new Database(join(dir, `contract-${++count}.db`));
    db.pragma('journal_mode = WAL');
    const store = new SqlStore({ dialect: 'sqlite', client: db });
    await store.migrate();
    databases.set(store, db);
    return store;
  },
  destroy: (store) => {
    databases.get(store)?.close();
    databases.delete(store);
  },
  capabilities: { subscribe: true, concurrency: true, audit: true, usage: true, alerts: true, leases: true },
});
