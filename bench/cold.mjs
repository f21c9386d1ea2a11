/**
 * Cold path: how long the FIRST verification of a key takes (record lookup + secret hash), in
 * process, with `keys.verify` (the middleware's pipeline). Run by run.mjs on the server core.
 *
 * For each hashing: N keys are created; then each key is verified once by a fresh manager
 * (`first`: a new keygate() on the same store, empty cache), and again by the same manager
 * (`warm`: a cache hit). One discarded key first warms the JIT. Prints one JSON line.
 */
import { PEPPER, PREFIX, REQUIRED_SCOPES, benchOptions, importKeygate, keySettings } from './lib/keys.mjs';
import { median } from './lib/report.mjs';

const options = benchOptions();
const { keygate, MemoryStore } = await importKeygate(options.dist);

async function coldPath(hashing, count) {
  const store = new MemoryStore();
  const creator = keygate({ store, prefix: PREFIX, hashing, pepper: PEPPER });
  const keys = [];
  for (let i = 0; i <= count; i++) keys.push((await creator.create(keySettings())).key);
  const context = { ip: '127.0.0.1', scopes: REQUIRED_SCOPES };
  const first = [];
  const warm = [];
  for (const [index, key] of keys.entries()) {
    const manager = keygate({ store, prefix: PREFIX, pepper: PEPPER });
    let started = performance.now();
    const cold = await manager.verify(key, context);
    const coldMs = performance.now() - started;
    started = performance.now();
    const again = await manager.verify(key, context);
    const warmMs = performance.now() - started;
    await manager.close();
    if (!cold.ok || !again.ok) throw new Error(`${hashing}: verification failed: ${(cold.error ?? again.error)?.code}`);
    if (index === 0) continue; // JIT warm-up
    first.push(coldMs);
    warm.push(warmMs);
  }
  await creator.close();
  return {
    hashing,
    samples: first.length,
    firstMs: { median: median(first), min: Math.min(...first), max: Math.max(...first) },
    warmMs: { median: median(warm), min: Math.min(...warm), max: Math.max(...warm) },
  };
}

const results = [await coldPath('bcrypt', options.coldBcrypt ?? 15), await coldPath('sha256', options.coldSha256 ?? 201)];
process.stdout.write(`${JSON.stringify(results)}\n`);
