import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describeStoreContract } from 'keygate/testing';
import { JsonFileStore } from '../../examples/custom-store';

// The custom-store example must stay a store that passes the contract, or it teaches the wrong thing.
describeStoreContract('examples/custom-store.ts JsonFileStore', {
  create: () => new JsonFileStore(join(mkdtempSync(join(tmpdir(), 'keygate-json-store-')), 'keys.json')),
  destroy: (store) => rmSync(dirname(store.path), { recursive: true, force: true }),
  capabilities: { subscribe: true, concurrency: true },
});
