/**
 * Process plumbing for the benchmark: CPU pinning, free ports, private redis-server and PostgreSQL
 * instances on loopback, CPU accounting from /proc. No jest, no TypeScript: plain Node.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chownSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

/** Path of `taskset` (util-linux), or null. */
export function tasksetBinary() {
  const found = spawnSync('sh', ['-c', 'command -v taskset'], { encoding: 'utf8' });
  const path = found.stdout.trim();
  return found.status === 0 && path ? path : null;
}

/**
 * How processes are placed on cores. With taskset and at least two cores, servers go to
 * `serverCore` and the load generator to `loadCore`; otherwise nothing is pinned and the caller
 * is told why (loudly), and the results record it.
 */
export function pinningPlan() {
  // Online CPUs, not availableParallelism(): that follows this process's own affinity, which is
  // one core once the runner has pinned itself.
  const cores = cpus().length;
  const taskset = tasksetBinary();
  if (!taskset) return { pinned: false, reason: 'taskset (util-linux) not found: install util-linux', cores };
  if (cores < 2) return { pinned: false, reason: `only ${cores} core available`, cores };
  return { pinned: true, taskset, cores, serverCore: 0, loadCore: 1 };
}

/** Command and arguments that run `command args` on `core` (or unpinned when core is null). */
export function pinned(plan, core, command, args) {
  if (!plan.pinned || core === null || core === undefined) return { command, args };
  return { command: plan.taskset, args: ['-c', String(core), command, ...args] };
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** CPU time (user + system) of a process and all its threads, in milliseconds, from /proc. */
export function processCpuMs(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    const ticks = Number(fields[11]) + Number(fields[12]);
    return (ticks * 1000) / clockTicks();
  } catch {
    return Number.NaN;
  }
}

let ticksPerSecond;
function clockTicks() {
  if (ticksPerSecond === undefined) {
    const found = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    ticksPerSecond = Number(found.stdout.trim()) || 100;
  }
  return ticksPerSecond;
}

/** Children this process started, killed on exit whatever happens. */
const children = new Set();
let exitHook = false;

/** Registers a child process to be killed (SIGKILL) if the runner exits without stopping it. */
export function track(child, cleanup) {
  const entry = { child, cleanup };
  children.add(entry);
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const { child: running, cleanup: clean } of children) {
        try {
          if (running.exitCode === null && running.signalCode === null) running.kill('SIGKILL');
        } catch {
          // already gone
        }
        try {
          clean?.();
        } catch {
          // best effort
        }
      }
    });
    for (const signal of ['SIGINT', 'SIGTERM']) {
      process.once(signal, () => {
        console.error(`\nbench: ${signal}, stopping every server it started`);
        process.exit(130);
      });
    }
  }
  child.once('exit', () => {
    children.delete(entry);
  });
  return entry;
}

function waitExit(child, timeoutMs, fallbackSignal = 'SIGKILL') {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill(fallbackSignal), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Stops a child: `signal` first, SIGKILL after `timeoutMs`. */
export async function stopChild(child, signal = 'SIGTERM', timeoutMs = 5_000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = waitExit(child, timeoutMs);
  child.kill(signal);
  await exited;
}

// ---------------------------------------------------------------------------------------------
// redis-server

export function redisServerBinary() {
  const found = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  const path = found.stdout.trim();
  return found.status === 0 && path ? path : null;
}

function answersPing(port) {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let reply = '';
    const finish = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => finish(false));
    socket.once('error', () => finish(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('utf8');
      if (reply.includes('\r\n')) finish(reply.startsWith('+PONG'));
    });
  });
}

/**
 * A private redis-server on a free loopback port, no persistence, pinned to `core` when given.
 * Returns `{ port, url, stop() }`.
 */
export async function startRedis(plan, core) {
  const binary = redisServerBinary();
  if (!binary) throw new Error('redis-server not found: install it (apt-get install -y redis-server)');
  const port = await freePort();
  const directory = mkdtempSync(join(tmpdir(), 'keygate-bench-redis-'));
  const { command, args } = pinned(plan, core, binary, [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--protected-mode', 'yes', '--dir', directory, '--loglevel', 'warning',
  ]);
  const child = spawn(command, args, { stdio: 'ignore' });
  track(child, () => rmSync(directory, { recursive: true, force: true }));
  const deadline = Date.now() + 10_000;
  while (!(await answersPing(port))) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`redis-server did not start on port ${port}`);
    await delay(25);
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid,
    version: spawnSync(binary, ['--version'], { encoding: 'utf8' }).stdout.trim(),
    async stop() {
      await stopChild(child, 'SIGKILL');
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL (the same recipe as test/helpers/postgres-server.ts, without jest)

/** The folder holding `initdb` and `postgres`, or null. `KEYGATE_PG_BIN` picks a build. */
export function findPostgresBinaries() {
  const candidates = [];
  if (process.env.KEYGATE_PG_BIN) candidates.push(process.env.KEYGATE_PG_BIN);
  candidates.push('/usr/lib/postgresql/15/bin');
  try {
    const majors = readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a));
    for (const major of majors) candidates.push(`/usr/lib/postgresql/${major}/bin`);
  } catch {
    // not a Debian layout
  }
  candidates.push('/usr/local/pgsql/bin', ...(process.env.PATH ?? '').split(':').filter(Boolean));
  return candidates.find((dir) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres'))) ?? null;
}

/** PostgreSQL refuses to run as root: as root, run its processes as the `postgres` OS user. */
function postgresIdentity() {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    throw new Error('running as root, but there is no `postgres` OS user to run PostgreSQL as');
  }
}

/**
 * A throw-away PostgreSQL: initdb into a temporary folder, trust auth on 127.0.0.1, a free port,
 * fsync off (we measure keygate, not the disk). Pinned to `core` when given (its backends inherit).
 * Returns `{ port, connectionString, version, stop() }`.
 */
export async function startPostgres(plan, core) {
  const bin = findPostgresBinaries();
  if (!bin) throw new Error('PostgreSQL binaries (initdb, postgres) not found: apt-get install postgresql-15, or set KEYGATE_PG_BIN');
  const { default: pg } = await import('pg');
  const identity = postgresIdentity();
  const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-pg-'));
  if (identity) chownSync(dir, identity.uid, identity.gid);
  const data = join(dir, 'data');
  const log = join(dir, 'server.log');
  execFileSync(join(bin, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync'], {
    ...identity,
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, LC_ALL: 'C.UTF-8' },
  });
  const port = await freePort();
  const host = '127.0.0.1';
  const out = openSync(log, 'a');
  const { command, args } = pinned(plan, core, join(bin, 'postgres'), [
    '-D', data, '-p', String(port), '-k', dir, '-c', `listen_addresses=${host}`,
    '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200',
  ]);
  const child = spawn(command, args, { ...identity, cwd: dir, stdio: ['ignore', out, out] });
  closeSync(out);
  track(child, () => rmSync(dir, { recursive: true, force: true }));
  const deadline = Date.now() + 30_000;
  for (;;) {
    const client = new pg.Client({ host, port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 1_000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
      break;
    } catch {
      await client.end().catch(() => undefined);
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      const tail = existsSync(log) ? readFileSync(log, 'utf8').slice(-2_000) : '(no log)';
      throw new Error(`PostgreSQL did not become ready on port ${port}:\n${tail}`);
    }
    await delay(50);
  }
  return {
    port,
    pid: child.pid,
    connectionString: `postgres://postgres@${host}:${port}/postgres`,
    version: spawnSync(join(bin, 'postgres'), ['--version'], { encoding: 'utf8' }).stdout.trim(),
    async stop() {
      await stopChild(child, 'SIGINT', 10_000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Whole-machine CPU accounting, to tell a clean measurement from one disturbed by other work.

/** Per-core jiffies from /proc/stat: `[{ busy, total }]` indexed by core. */
export function coreTimes() {
  try {
    const lines = readFileSync('/proc/stat', 'utf8').split('\n').filter((line) => /^cpu\d+ /.test(line));
    return lines.map((line) => {
      const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1, 9).map(Number);
      const busy = user + nice + system + irq + softirq + steal;
      return { busy, total: busy + idle + iowait, softirq, steal };
    });
  } catch {
    return [];
  }
}

/** Busy percentage of each core between two `coreTimes()` snapshots. */
export function coreBusyPct(before, after) {
  return after.map((core, i) => {
    const start = before[i];
    if (!start) return Number.NaN;
    const total = core.total - start.total;
    return total > 0 ? (100 * (core.busy - start.busy)) / total : Number.NaN;
  });
}

/** CPU milliseconds of every process (not kernel threads), with parents: `Map<pid, { ms, ppid }>`. */
export function processTable() {
  const table = new Map();
  let entries = [];
  try {
    entries = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return table;
  }
  const hz = clockTicks();
  for (const name of entries) {
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ppid = Number(fields[1]);
      const flags = Number(fields[6]);
      if (flags & 0x00200000) continue; // PF_KTHREAD
      table.set(Number(name), { ppid, ms: ((Number(fields[11]) + Number(fields[12])) * 1000) / hz });
    } catch {
      // exited meanwhile
    }
  }
  return table;
}

/**
 * CPU (percent of one core) used between two `processTable()` snapshots by processes that are not
 * this process or its descendants: other people's work disturbing the measurement.
 */
export function foreignCpuPct(before, after, elapsedMs, root = process.pid) {
  return cpuSplit(before, after, elapsedMs, root).foreign;
}

/**
 * `{ ours, foreign }`: CPU (percent of one core) of this process tree, and of the other processes
 * alive at both snapshots. Processes that start and end between the snapshots (a test run's
 * initdb, a compiler) are invisible here; compare `ours` with the cores' busy time for those.
 */
export function cpuSplit(before, after, elapsedMs, root = process.pid) {
  const ours = new Set([root]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, { ppid }] of after) {
      if (!ours.has(pid) && ours.has(ppid)) {
        ours.add(pid);
        grew = true;
      }
    }
  }
  let foreign = 0;
  let own = 0;
  for (const [pid, { ms }] of after) {
    const delta = ms - (before.get(pid)?.ms ?? ms);
    if (ours.has(pid)) own += delta;
    else foreign += delta;
  }
  return { ours: (100 * own) / elapsedMs, foreign: (100 * foreign) / elapsedMs };
}

/** CPU milliseconds per thread name (comm) of a process: main thread, V8 GC/compiler helpers, workers. */
export function threadCpuMs(pid) {
  const byName = {};
  let tids = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return byName;
  }
  const hz = clockTicks();
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const label = Number(tid) === pid ? 'main thread' : name;
      byName[label] = (byName[label] ?? 0) + ((Number(fields[11]) + Number(fields[12])) * 1000) / hz;
    } catch {
      // thread ended
    }
  }
  return byName;
}

/** Per-thread-name CPU (percent of one core) between two `threadCpuMs` snapshots. */
export function threadCpuPct(before, after, elapsedMs) {
  const out = {};
  for (const [name, ms] of Object.entries(after)) {
    const pct = (100 * (ms - (before[name] ?? 0))) / elapsedMs;
    if (pct >= 0.05) out[name] = Math.round(pct * 10) / 10;
  }
  return out;
}
