/**
 * One benchmark server: builds the variant named by BENCH_VARIANT (see variants.mjs), serves
 * `GET /` on 127.0.0.1 (a free port), and talks to the runner over the IPC channel:
 *
 *   child → parent: { type: 'ready', port, key, wrongKey, info, threadsAtStart } | { type: 'skip', reason } | { type: 'error', message }
 *   parent → child: { type: 'counted' } → { type: 'counted', value, stats }
 *                   { type: 'profile-start', intervalUs } / { type: 'profile-stop', path } → { type: 'profile', path }
 *                   { type: 'stop' }    → closes everything and exits (a --cpu-prof profile is written then)
 *
 * It exits by itself when the runner goes away (IPC disconnect) or after BENCH_MAX_LIFETIME_MS.
 */
import { readdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import express from 'express';
import { benchOptions } from './lib/keys.mjs';
import { SkipVariant, variantNamed } from './variants.mjs';

const BODY = { ok: true, service: 'bench' };

/**
 * This process's thread ids once its modules are loaded and before the variant is built: the
 * runner tells the threads the variant starts later (keygate's bcrypt hashing pool) from Node's
 * own by this list, as every thread of a Node 20 process is named "node". Empty off Linux.
 */
function ownThreadIds() {
  try {
    return readdirSync('/proc/self/task').map(Number);
  } catch {
    return [];
  }
}
const threadsAtStart = ownThreadIds();
const lifetime = Number(process.env.BENCH_MAX_LIFETIME_MS ?? 15 * 60_000);

function send(message) {
  if (process.connected) process.send(message);
}

setTimeout(() => {
  console.error(`bench server ${process.env.BENCH_VARIANT}: lifetime of ${lifetime} ms reached, exiting`);
  process.exit(3);
}, lifetime).unref();
process.on('disconnect', () => process.exit(0));

async function main() {
  const variant = variantNamed(process.env.BENCH_VARIANT);
  const ctx = { ...benchOptions(), info: {} };
  const started = performance.now();
  let built;
  try {
    built = await variant.build(ctx);
  } catch (error) {
    if (error instanceof SkipVariant) {
      send({ type: 'skip', reason: error.message });
      process.exit(0);
    }
    throw error;
  }
  ctx.info.setupMs = Math.round(performance.now() - started);

  const app = express();
  for (const middleware of built.middleware) app.use(middleware);
  app.get('/', (req, res) => {
    res.json(BODY);
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });

  let profiler;
  process.on('message', async (message) => {
    if (message?.type === 'counted') {
      const value = await Promise.resolve(built.counted?.() ?? null).catch((error) => `error: ${error.message}`);
      send({ type: 'counted', value, stats: built.stats?.() ?? null });
    } else if (message?.type === 'profile-start') {
      // The V8 sampling profiler over exactly the measured window (what --cpu-prof records, minus startup and warm-up).
      profiler = new Session();
      profiler.connect();
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.setSamplingInterval', { interval: message.intervalUs ?? 100 });
      await profiler.post('Profiler.start');
      send({ type: 'profile-started' });
    } else if (message?.type === 'profile-stop') {
      const { profile } = await profiler.post('Profiler.stop');
      profiler.disconnect();
      writeFileSync(message.path, JSON.stringify(profile));
      send({ type: 'profile', path: message.path });
    } else if (message?.type === 'stop') {
      server.closeAllConnections?.();
      server.close();
      try {
        await built.close?.();
      } catch {
        // closing is best effort
      }
      process.exit(0);
    }
  });

  ctx.info.heapUsedMB = Math.round(process.memoryUsage().heapUsed / 1e6);
  send({ type: 'ready', port: server.address().port, key: built.key, wrongKey: built.wrongKey, body: BODY, info: ctx.info, threadsAtStart });
}

main().catch((error) => {
  send({ type: 'error', message: error?.stack ?? String(error) });
  process.exit(1);
});
