/**
 * Process plumbing for the benchmark: CPU pinning, the runner's child processes, private
 * redis-server and PostgreSQL instances on loopback (started by test/helpers/servers.cjs, the same
 * code the tests use, pinned here to the store core), CPU accounting from /proc. Plain Node.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { HOST, freePort, initPostgres, redisServerBinary, spawnPostgres, spawnRedis, stopProcess } from '../../test/helpers/servers.cjs';

export { stopProcess };

/**
 * How processes are placed on cores. With taskset and at least two cores, servers go to
 * `serverCore` and the load generator to `loadCore`; otherwise nothing is pinned and the caller
 * is told why (loudly), and the results record it.
 */
export function pinningPlan() {
  // Online CPUs, not availableParallelism(): that follows this process's own affinity, which is
  // one core once the runner has pinned itself.
  const cores = cpus().length;
  const found = spawnSync('sh', ['-c', 'command -v taskset'], { encoding: 'utf8' });
  const taskset = found.status === 0 ? found.stdout.trim() : '';
  if (!taskset) return { pinned: false, reason: 'taskset (util-linux) not found: install util-linux', cores };
  if (cores < 2) return { pinned: false, reason: `only ${cores} core available`, cores };
  return { pinned: true, taskset, cores, serverCore: 0, loadCore: 1 };
}

/** Command and arguments that run `command args` on `core` (or unpinned when core is null). */
export function pinned(plan, core, command, args) {
  if (!plan.pinned || core === null || core === undefined) return { command, args };
  return { command: plan.taskset, args: ['-c', String(core), command, ...args] };
}

/** Children this process started (servers, measuring scripts): killed if the runner exits without stopping them. */
const children = new Set();
let hooked = false;

/** Registers a child process to be killed (SIGKILL) if the runner exits, or is interrupted, first. */
export function track(child) {
  if (!hooked) {
    hooked = true;
    process.once('exit', () => {
      for (const running of children) running.kill('SIGKILL');
    });
    for (const signal of ['SIGINT', 'SIGTERM']) {
      process.once(signal, () => {
        console.error(`\nbench: ${signal}, stopping every server it started`);
        process.exit(130);
      });
    }
  }
  children.add(child);
  child.once('exit', () => children.delete(child));
}

const versionOf = (binary) => spawnSync(binary, ['--version'], { encoding: 'utf8' }).stdout.trim();

/** A private redis-server (no persistence) on a free loopback port, on `core` when given: `{ port, url, version, stop() }`. */
export async function startRedis(plan, core) {
  const port = await freePort();
  const directory = mkdtempSync(join(tmpdir(), 'keygate-bench-redis-'));
  const child = await spawnRedis({ port, directory, wrap: (command, args) => pinned(plan, core, command, args) });
  return {
    port,
    url: `redis://${HOST}:${port}`,
    version: versionOf(redisServerBinary()),
    async stop() {
      await stopProcess(child, 'SIGKILL');
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

/**
 * A throw-away PostgreSQL (fsync off: we measure keygate, not the disk) on a free loopback port,
 * on `core` when given (its backends inherit it): `{ port, connectionString, version, stop() }`.
 */
export async function startPostgres(plan, core) {
  const cluster = initPostgres();
  const port = await freePort();
  const child = await spawnPostgres(cluster, { port, wrap: (command, args) => pinned(plan, core, command, args) });
  return {
    port,
    connectionString: `postgres://postgres@${HOST}:${port}/postgres`,
    version: versionOf(join(cluster.bin, 'postgres')),
    async stop() {
      await stopProcess(child, 'SIGINT');
      rmSync(cluster.dir, { recursive: true, force: true });
    },
  };
}

// Whole-machine CPU accounting, to tell a clean measurement from one disturbed by other work.

/** Per-core jiffies from /proc/stat: `[{ busy, total }]` indexed by core. */
function coreTimes() {
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
function coreBusyPct(before, after) {
  return after.map((core, i) => {
    const start = before[i];
    if (!start) return Number.NaN;
    const total = core.total - start.total;
    return total > 0 ? (100 * (core.busy - start.busy)) / total : Number.NaN;
  });
}

let ticksPerSecond;

/** Name and user + system CPU milliseconds from a `/proc/…/stat` file, and its fields from the state on (`fields[0]` is field 3). */
function readStat(path) {
  const stat = readFileSync(path, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  ticksPerSecond ??= Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
  // utime is field 14, stime field 15.
  return { name: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), fields, ms: ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond };
}

/** The entries of a /proc folder, or none when it is gone. */
function entries(dir) {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** CPU time (user + system) of a process and all its threads, in milliseconds. */
export function processCpuMs(pid) {
  try {
    return readStat(`/proc/${pid}/stat`).ms;
  } catch {
    return Number.NaN;
  }
}

/** CPU milliseconds of every process (not kernel threads), with parents: `Map<pid, { ms, ppid }>`. */
function processTable() {
  const table = new Map();
  for (const name of entries('/proc').filter((entry) => /^\d+$/.test(entry))) {
    try {
      const { fields, ms } = readStat(`/proc/${name}/stat`);
      if (Number(fields[6]) & 0x00200000) continue; // PF_KTHREAD
      table.set(Number(name), { ppid: Number(fields[1]), ms });
    } catch {
      // exited meanwhile
    }
  }
  return table;
}

/**
 * `{ ours, foreign }`: CPU (percent of one core) of this process tree, and of the other processes
 * alive at both snapshots. Processes that start and end between the snapshots (a test run's
 * initdb, a compiler) are invisible here; compare `ours` with the cores' busy time for those.
 */
function cpuSplit(before, after, elapsedMs, root = process.pid) {
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

/** Every process's and every core's CPU time now: what `cpuSince` compares with. */
export function cpuSnapshot() {
  return { processes: processTable(), cores: coreTimes(), at: performance.now() };
}

/**
 * CPU used since `snapshot`, in percent of one core: `coreBusyPct` (per core), `ours` (this
 * process tree), `foreign` (other processes alive at both times), `unexplained` (busy time no
 * process of ours accounts for: other people's processes, even short-lived ones; about 0 on a
 * quiet machine here, as the kernel's network work is charged to our processes), and `elapsedMs`.
 */
export function cpuSince(snapshot) {
  const elapsedMs = performance.now() - snapshot.at;
  const busy = coreBusyPct(snapshot.cores, coreTimes());
  const { ours, foreign } = cpuSplit(snapshot.processes, processTable(), elapsedMs);
  const unexplained = busy.reduce((sum, pct) => sum + (Number.isFinite(pct) ? pct : 0), 0) - ours;
  return { elapsedMs, coreBusyPct: busy, ours, foreign, unexplained };
}

/** Label of the threads a server started after it began (see `threadCpuMs`). */
export const LATER_THREADS = 'threads started by the variant';

/**
 * CPU milliseconds per thread name (comm) of a process: main thread, V8 GC/compiler helpers,
 * workers. Threads not in `atStart` (the thread ids the server had when bench/server.mjs began,
 * before the variant was built) are summed under LATER_THREADS: on Linux every Node thread is
 * called "node", and for keygate those later threads are its bcrypt hashing pool.
 */
export function threadCpuMs(pid, atStart = null) {
  const byName = {};
  const before = atStart ? new Set(atStart.map(Number)) : null;
  for (const tid of entries(`/proc/${pid}/task`)) {
    try {
      const { name, ms } = readStat(`/proc/${pid}/task/${tid}/stat`);
      const label = Number(tid) === pid ? 'main thread' : before && !before.has(Number(tid)) ? LATER_THREADS : name;
      byName[label] = (byName[label] ?? 0) + ms;
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

// Placing single threads of a process (the wrong-secret flood's second placement).

/** Thread ids (TIDs) of a process now, or none when it is gone or this is not Linux. */
export function threadIds(pid) {
  return entries(`/proc/${pid}/task`).map(Number);
}

/**
 * Threads of a server process that did not exist when bench/server.mjs began (`atStart`, sent in
 * its ready message): on Node 20 every thread is named "node", so names cannot tell keygate's
 * bcrypt worker threads apart; the moment they appeared can. The server's own threads (V8's
 * platform workers, libuv's pool, the inspector) exist once its modules are loaded, and a keygate
 * build starts its hashing pool on its first bcrypt call (keys.create of the bench key).
 */
export function threadsStartedAfter(pid, atStart) {
  const before = new Set(atStart.map(Number));
  return threadIds(pid).filter((tid) => tid !== pid && !before.has(tid));
}

/** Moves one thread (by TID) to `core` with `taskset -p`; throws with taskset's own words when it cannot. */
export function pinThread(plan, tid, core) {
  const result = spawnSync(plan.taskset, ['-p', '-c', String(core), String(tid)], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`taskset -p -c ${core} ${tid} failed: ${(result.stderr || result.stdout || `status ${result.status}`).trim()}`);
}

/** The cores a thread may run on, as the kernel says (`Cpus_allowed_list`: "0", "1", "0-1"), or null. */
export function threadCores(pid, tid) {
  try {
    return readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8').match(/^Cpus_allowed_list:\s*(\S+)/m)?.[1] ?? null;
  } catch {
    return null;
  }
}
