/**
 * Heap per key in MemoryStore: heapUsed (after full GCs) before and after adding keys. Run with
 * --expose-gc by run.mjs. Three measurements:
 * - `create`: N_create keys made by `keys.create` (sha256), the bench key's settings (scopes,
 *   allowlist, limits, metadata, tags): exactly what an application holds per key.
 * - `insert-full` / `insert-minimal`: records straight through `store.insert` (as the 1M-key
 *   server fills its store), flat strings, the bench key's settings (1M) / a name-only key (250k).
 * Prints one JSON line.
 */
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { PREFIX } from './lib/keys.mjs';
import { insertFiller, keySettings } from './variants.mjs';

const options = JSON.parse(process.env.BENCH_OPTIONS ?? '{}');
const { keygate, MemoryStore } = await import(pathToFileURL(join(options.dist, 'esm', 'index.js')).href);

if (typeof globalThis.gc !== 'function') throw new Error('run with --expose-gc');

function settle() {
  for (let i = 0; i < 4; i++) globalThis.gc();
  return process.memoryUsage();
}

async function measure(kind, settings, count, fill) {
  let store = new MemoryStore();
  const keys = keygate({ store, prefix: PREFIX, hashing: 'sha256', pepper: 'bench-pepper' });
  const { apiKey } = await keys.create(settings);
  const template = await store.findById(apiKey.id);
  const before = settle();
  const started = performance.now();
  await fill(keys, store, template);
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
  store = null;
  settle();
  return result;
}

const insertKeys = options.heapKeys ?? 1_000_000;
const createKeys = options.heapCreateKeys ?? 100_000;
const minimalKeys = options.heapMinimalKeys ?? 250_000;
const results = [
  await measure('create', keySettings(), createKeys, async (keys) => {
    const settings = keySettings();
    for (let i = 0; i < createKeys; i++) await keys.create(settings);
  }),
  await measure('insert-full', keySettings(), insertKeys, (keys, store, template) => insertFiller(store, template, insertKeys)),
  await measure('insert-minimal', { name: 'k' }, minimalKeys, (keys, store, template) => insertFiller(store, template, minimalKeys)),
];
process.stdout.write(`${JSON.stringify(results)}\n`);
