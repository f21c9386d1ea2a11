/**
 * Heap per key in MemoryStore: heapUsed (after full GCs) before and after adding keys. Run with
 * --expose-gc by run.mjs. Three measurements:
 * - `create`: N_create keys made by `keys.create` (sha256), the bench key's settings (scopes,
 *   allowlist, limits, metadata, tags): exactly what an application holds per key.
 * - `insert-full` / `insert-minimal`: copies of records made by `keys.create`, inserted through
 *   `store.insert` as the 1M-key server fills its store (`fillStore`), flat strings, the bench
 *   key's settings (1M) / a name-only key (250k).
 * With `insert-full` also the full-GC pause: the median time of a forced `gc()` (a full,
 * stop-the-world mark-compact, timed on this thread) with the keys in the store, and with the
 * same store holding one key before the fill: what a store of that size adds to every major GC.
 * Prints one JSON line.
 */
import { PEPPER, PREFIX, benchOptions, fillStore, importKeygate, keySettings } from './lib/keys.mjs';
import { median } from './lib/report.mjs';

const options = benchOptions();
const keygateModule = await importKeygate(options.dist);
const { keygate, MemoryStore } = keygateModule;

if (typeof globalThis.gc !== 'function') throw new Error('run with --expose-gc');

function settle() {
  for (let i = 0; i < 4; i++) globalThis.gc();
  return process.memoryUsage();
}

/** Forced full GCs timed one by one (after `settle`, so each finds the same live heap). */
const GC_SAMPLES = 7;

/** Median and every sample, in ms, of GC_SAMPLES forced full GCs. */
function gcPauses() {
  const samples = [];
  for (let i = 0; i < GC_SAMPLES; i++) {
    const started = performance.now();
    globalThis.gc();
    samples.push(performance.now() - started);
  }
  return { medianMs: median(samples), samplesMs: samples.map((ms) => Math.round(ms * 100) / 100) };
}

/**
 * Heap and RSS per key added by `fill(keys, store)` to a MemoryStore that already holds one key;
 * with `gc`, the full-GC pause before (one key) and after the fill.
 */
async function measure(kind, count, fill, { gc = false } = {}) {
  const store = new MemoryStore();
  const keys = keygate({ store, prefix: PREFIX, hashing: 'sha256', pepper: PEPPER });
  await keys.create({ name: 'first' });
  const before = settle();
  const gcEmpty = gc ? gcPauses() : null;
  const started = performance.now();
  await fill(keys, store);
  const elapsedMs = performance.now() - started;
  const after = settle();
  const gcFull = gc ? gcPauses() : null;
  const result = {
    kind,
    keys: count,
    heapBytesPerKey: (after.heapUsed - before.heapUsed) / count,
    rssBytesPerKey: (after.rss - before.rss) / count,
    heapUsedMB: Math.round(after.heapUsed / 1e6),
    microsPerKey: (1000 * elapsedMs) / count,
    storeSize: store.size,
    ...(gc ? { gcPauseMs: gcFull.medianMs, gcPauseEmptyMs: gcEmpty.medianMs, gcSamplesMs: { full: gcFull.samplesMs, empty: gcEmpty.samplesMs } } : {}),
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
  await measure('insert-full', insertKeys, (keys, store) => fillStore(keygateModule, store, settings, insertKeys), { gc: true }),
  await measure('insert-minimal', minimalKeys, (keys, store) => fillStore(keygateModule, store, { name: 'k' }, minimalKeys)),
];
process.stdout.write(`${JSON.stringify(results)}\n`);
