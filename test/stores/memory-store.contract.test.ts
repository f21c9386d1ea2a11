import { MemoryStore } from 'keygate';
import { describeStoreContract } from 'keygate/testing';
import { RETAIN_BATCH_IDS_MS, type UsageCell } from '../../src/usage/cells';
import { testRecord } from '../helpers/records';

// The contract suite every store passes, run against the in-process store. `destroy` records what
// it receives, so the suite's own promise (every store `create` made is handed to `destroy`) is
// checked too.
const created: MemoryStore[] = [];
const destroyed: MemoryStore[] = [];

describeStoreContract('MemoryStore', {
  create: () => {
    const store = new MemoryStore();
    created.push(store);
    return store;
  },
  destroy: (store) => {
    expect(store).toBeInstanceOf(MemoryStore);
    destroyed.push(store);
  },
  capabilities: { subscribe: true, concurrency: true, audit: true, usage: true, alerts: true, leases: true, synchronous: true },
});

afterAll(() => {
  expect(created.length).toBeGreaterThan(0);
  expect(destroyed).toHaveLength(created.length);
  expect(created.every((store, i) => destroyed[i] === store)).toBe(true);
});

// Beyond the contract, which only requires remembering a batch id for RETAIN_BATCH_IDS_MS: the
// in-process store forgets it afterwards, so its memory does not grow with every flush ever made.
describe('MemoryStore usage bookkeeping', () => {
  const noon = Date.UTC(2025, 2, 14, 12);
  const day = Math.floor(noon / 86_400_000);
  const keyId = 'key-1';
  const cell: UsageCell = { keyId, day, route: '/v1/leads', outcome: 'admitted', requests: 1, status2xx: 1, status3xx: 0, status4xx: 0, status5xx: 0, totalResponseMicros: 10, maxResponseMicros: 10 };
  const requests = async (store: MemoryStore) => (await store.readUsage({ keyId, fromDay: day, toDay: day }))[0]?.requests;

  it('remembers an applied batch id until RETAIN_BATCH_IDS_MS after its now, and forgets it then', async () => {
    const store = new MemoryStore();
    await store.insert(testRecord(noon, { id: keyId })); // cells of a key the store does not hold are dropped
    const batch = { id: 'batch-1', cells: [cell], now: new Date(noon) };
    await store.addUsage(batch);
    await store.addUsage({ ...batch, now: new Date(noon + RETAIN_BATCH_IDS_MS - 1) });
    expect(await requests(store)).toBe(1);

    // A later flush sweeps the id out; a retry that late is no retry keygate makes, and adds again.
    await store.addUsage({ id: 'batch-2', cells: [cell], now: new Date(noon + RETAIN_BATCH_IDS_MS) });
    await store.addUsage({ ...batch, now: new Date(noon + RETAIN_BATCH_IDS_MS) });
    expect(await requests(store)).toBe(3);
  });
});
