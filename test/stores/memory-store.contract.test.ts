import { MemoryStore } from 'keygate';
import { describeStoreContract } from 'keygate/testing';

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
  capabilities: { subscribe: true, concurrency: true },
});

afterAll(() => {
  expect(created.length).toBeGreaterThan(0);
  expect(destroyed).toHaveLength(created.length);
  expect(created.every((store, i) => destroyed[i] === store)).toBe(true);
});
