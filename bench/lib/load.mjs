/**
 * Starting a server child (pinned to the server core) and driving load at it with autocannon's
 * programmatic API from this process (pinned to the load core). Every load is bounded in time.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { cpuSince, cpuSnapshot, pinned, processCpuMs, stopProcess, threadCpuMs, threadCpuPct, track } from './infra.mjs';

const SERVER = fileURLToPath(new URL('../server.mjs', import.meta.url));

/**
 * Starts `variant` in its own process. Resolves `{ ready: {...}, child, counted(), stop() }`,
 * or `{ skip: reason }`. Rejects when the server fails to start.
 */
export async function startServer(plan, variant, options, { nodeArgs = [], startTimeoutMs = 180_000 } = {}) {
  const { command, args } = pinned(plan, plan.serverCore, process.execPath, [...nodeArgs, SERVER]);
  const child = spawn(command, args, {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, BENCH_VARIANT: variant.name, BENCH_OPTIONS: JSON.stringify(options) },
  });
  track(child);
  const waiting = new Map();
  child.on('message', (message) => {
    const queue = waiting.get(message?.type);
    queue?.shift()?.(message);
  });
  const ask = (message, replyType, timeoutMs = 60_000) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${variant.name}: no ${replyType} reply`)), timeoutMs);
      if (!waiting.has(replyType)) waiting.set(replyType, []);
      waiting.get(replyType).push((reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
      child.send(message);
    });
  const first = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${variant.name}: server not ready after ${startTimeoutMs} ms`)), startTimeoutMs);
    child.once('message', (message) => {
      clearTimeout(timer);
      resolve(message);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${variant.name}: server exited (${code ?? signal}) before it was ready`));
    });
  });
  if (first.type === 'skip') {
    await stopProcess(child, 'SIGTERM', { timeoutMs: 5_000 });
    return { skip: first.reason };
  }
  if (first.type !== 'ready') {
    await stopProcess(child, 'SIGKILL');
    throw new Error(`${variant.name}: server failed: ${first.message}`);
  }
  return {
    ready: first,
    child,
    pid: child.pid,
    url: `http://127.0.0.1:${first.port}/`,
    /** `{ value, stats }`: the variant's count of admitted requests, and its store call counters if any. */
    counted() {
      return ask({ type: 'counted' }, 'counted');
    },
    profileStart(intervalUs) {
      return ask({ type: 'profile-start', intervalUs }, 'profile-started');
    },
    profileStop(path) {
      return ask({ type: 'profile-stop', path }, 'profile');
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      if (child.connected) child.send({ type: 'stop' });
      else child.kill('SIGTERM');
      await exited;
      clearTimeout(timer);
    },
  };
}

/** One GET with a key: `{ status, body, headers }`. */
export async function probe(url, key) {
  const response = await fetch(url, { headers: { 'x-api-key': key }, signal: AbortSignal.timeout(30_000) });
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: response.status, body, headers: Object.fromEntries(response.headers) };
}

/**
 * Runs autocannon for `seconds` against `url` with `connections` keep-alive connections,
 * pipelining 1. `keys`, when given, is a list of keys cycled per request (the flood).
 */
export function load({ url, key, keys, connections, seconds, timeoutS = 30 }) {
  const options = {
    url,
    connections,
    pipelining: 1,
    duration: seconds,
    timeout: timeoutS,
    headers: { 'x-api-key': key ?? keys?.[0] ?? '' },
  };
  if (keys) {
    let next = 0;
    options.requests = [
      {
        method: 'GET',
        path: '/',
        setupRequest(request) {
          const headers = { ...request.headers, 'x-api-key': keys[next++ % keys.length] };
          return { ...request, headers };
        },
      },
    ];
  }
  return new Promise((resolve, reject) => {
    autocannon(options, (error, result) => (error ? reject(error) : resolve(result)));
  });
}

/** The figures of one autocannon result. */
export function summarize(result) {
  const ok = result['2xx'] ?? 0;
  return {
    rps: ok / result.duration,
    total: result.requests.total,
    ok,
    non2xx: result.non2xx ?? 0,
    statusCodes: result.statusCodeStats ?? undefined,
    errors: result.errors ?? 0,
    timeouts: result.timeouts ?? 0,
    durationS: result.duration,
    latency: { p50: result.latency.p50, p90: result.latency.p90, p99: result.latency.p99, max: result.latency.max, mean: result.latency.average },
  };
}

/**
 * A measured load: warm-up (discarded), then `seconds` measured, with the server's and this
 * process's CPU use over the measured window (percent of one core).
 */
export async function measure(server, { key, connections, warmupS, seconds }) {
  const warm = warmupS > 0 ? summarize(await load({ url: server.url, key, connections, seconds: warmupS })) : null;
  const serverCpu0 = processCpuMs(server.pid);
  const threads0 = threadCpuMs(server.pid, server.ready.threadsAtStart);
  const ownCpu0 = process.cpuUsage();
  const cpu0 = cpuSnapshot();
  const result = await load({ url: server.url, key, connections, seconds });
  const own = process.cpuUsage(ownCpu0);
  const cpu = cpuSince(cpu0);
  const stats = summarize(result);
  stats.coreBusyPct = cpu.coreBusyPct;
  stats.oursCpuPct = cpu.ours;
  stats.unexplainedCpuPct = cpu.unexplained;
  // What disturbs a measurement: visible foreign processes, or unexplained CPU beyond a margin.
  stats.foreignCpuPct = Math.max(cpu.foreign, cpu.unexplained - 10);
  stats.serverCpuPct = (100 * (processCpuMs(server.pid) - serverCpu0)) / cpu.elapsedMs;
  // Which threads of the server used the CPU: the main thread, V8's GC/compiler helpers, and the
  // threads the variant started (keygate's hashing pool).
  stats.serverThreadsCpuPct = threadCpuPct(threads0, threadCpuMs(server.pid, server.ready.threadsAtStart), cpu.elapsedMs);
  stats.loadCpuPct = (100 * (own.user + own.system)) / 1000 / cpu.elapsedMs;
  stats.warmupOk = warm?.ok ?? 0;
  stats.warmupRps = warm?.rps ?? null;
  return stats;
}
