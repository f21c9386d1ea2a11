/**
 * Heap per key in MemoryStore: heapUsed (after full GCs) before and after adding keys. Run with
 * --expose-gc by run.mjs. Three measurements:
 * - `create`: N_create keys made by `keys.create` (sha256), the bench key's settings (scopes,
 *   allowlist, limits, metadata, tags): exactly what an application holds per key.
 * - `insert-full` / `insert-minimal`: copies of records made by `keys.create`, inserted through
 *   `store.insert` as the 1M-key server fills its store (`fillStore`), flat strings, the bench
 *   key's settings (1M) / a name-only key (250k).
 * Prints one JSON line.
 */
import { PEPPER, PREFIX, benchOptions, fillStore, importKeygate, keySettings } from './lib/keys.mjs';

const options = benchOptions();
const keygateModule = await importKeygate(options.dist);
const { keygate, MemoryStore } = keygateModule;

if (typeof globalThis.gc !== 'function') throw new Error('run with --expose-gc');

function settle() {
  for (let i = 0; i < 4; i++) globalThis.gc();
  return process.memoryUsage();
}

/** Heap and RSS per key added by `fill(keys, store)` to a MemoryStore that already holds one key. */
async function measure(kind, count, fill) {
  const store = new MemoryStore();
  const keys = keygate({ store, prefix: PREFIX, hashing: 'sha256', pepper: PEPPER });
  await keys.create({ name: 'first' });
  const before = settle();
  const started = performance.now();
  await fill(keys, store);
  const elapsedMs = performance.now() - started;
  const after = settle();
  const result = {
    kind,
    keys: count,
    heapBytesPerKey: (after.heapUsed - before.heapUsed) / count,
    rssBytesPerKey: (after.rss - before.rss) / count,
    heapUsedMB: Math.round(after.heapUsed / 1e6),
    microsPerKey: (1000 * elapsedMs) / count,
    storeSize: store.size,
  };
  await keys.close();
  return result;
}

const insertKeys = options.heapKeys ?? 1_000_000;
const createKeys = options.heapCreateKeys ?? 100_000;
const minimalKeys = options.heapMinimalKeys ?? 250_000;
const settings = keySettings();
const results = [
  await measure('create', createKeys, async (keys) => {
    for (let i = 0; i < createKeys; i++) await keys.create(settings);
  }),
  await measure('insert-full', insertKeys, (keys, store) => fillStore(keygateModule, store, settings, insertKeys)),
  await measure('insert-minimal', minimalKeys, (keys, store) => fillStore(keygateModule, store, { name: 'k' }, minimalKeys)),
];
process.stdout.write(`${JSON.stringify(results)}\n`);
