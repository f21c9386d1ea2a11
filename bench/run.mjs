#!/usr/bin/env node
/**
 * `npm run bench`: keygate against bare Express and against what users would pick instead, in one
 * run, as ratios to bare Express measured in the same run. See docs/benchmarks.md.
 *
 * Shape: every server variant (bench/variants.mjs) runs in its own process pinned to core 0 (one
 * process per server for the whole run, frozen with SIGSTOP while the others are measured); this
 * process (autocannon, the load generator) runs pinned to core 1; Redis and PostgreSQL, when a
 * variant needs them, run on core 1 too (`--store-core`), as a store on another machine would not
 * take the server's core. Rounds are interleaved (A B C … A B C …, the order rotated each round)
 * and each figure is the median of its rounds; a warm-up before each measurement is discarded.
 * Before a variant is measured it must answer 200 with the expected body for the legitimate key
 * (401 for a wrong one when it authenticates), and its own counter (keygate: the key's useCount)
 * must have grown by the number of answered requests afterwards (leased mode: at least that, and
 * at most the variant's `countsAhead` more, since the server's first request); otherwise the row
 * is reported invalid rather than posting a number. The wrong-secret flood runs in two thread
 * placements: every server thread on the server core, and keygate's hashing thread(s) moved to
 * the load core. At the end every target of issue 14 is printed with met / MISS (or n/m: not
 * measured in this run).
 *
 * Options (flag, or environment variable BENCH_<NAME>):
 *   --quick                 smoke run: ~1 s per measurement, 1 round, 100k keys
 *   --rounds N              interleaved rounds of the main table (3)
 *   --warmup S / --duration S   seconds of discarded warm-up / measured load (3 / 5); the first
 *                           round of each server gets --first-warmup S more (5)
 *   --fresh-servers         a new server process per round (default: one per server, frozen with
 *                           SIGSTOP while the others are measured)
 *   --connections N         autocannon connections (50), pipelining 1
 *   --only a,b              main-table variants to run (bare is always included); also runs the
 *                           `diagnostic` variants of bench/variants.mjs when named; an unknown
 *                           name stops the run before it starts
 *   --skip scale,attack,cold,heap,profile,main   phases to leave out
 *   --scale-keys N          keys in the big MemoryStore (1000000)
 *   --heap-keys N           keys inserted to measure heap per key (1000000)
 *   --attack-rounds N / --flood-connections N   the wrong-secret flood (3 / 50), per placement
 *   --noise-limit PCT       CPU (% of a core) other processes may use during a measurement before
 *                           it is measured again, then left out (15)
 *   --store-core N|none     core for redis-server and PostgreSQL (1)
 *   --dist DIR              keygate build to measure (default: ./dist, copied first so a rebuild
 *                           during the run cannot change it)
 *   --ref GIT_REF           build that commit into a temporary folder and measure it instead
 *   --out DIR               where results go (bench/results)
 */
import { execFileSync, execSync, spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { LATER_THREADS, cpuSince, cpuSnapshot, pinThread, pinned, pinningPlan, startPostgres, startRedis, stopProcess, threadCores, threadsStartedAfter, track } from './lib/infra.mjs';
import { createdRecords, importKeygate, wrongSecretsFor } from './lib/keys.mjs';
import { load, measure, probe, startServer, summarize } from './lib/load.mjs';
import { analyseProfile, compareProfiles } from './lib/profile.mjs';
import { MAIN_COLUMNS, fmt, fmtInt, fmtMs, fmtRatio, mainRows, markdownTable, median, statusCounts, textTable } from './lib/report.mjs';
import { VARIANTS, variantNamed } from './variants.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const HERE = dirname(fileURLToPath(import.meta.url));

// ---------------------------------------------------------------------------------------------
// configuration

const DEFAULTS = {
  quick: false,
  rounds: 3,
  // Discarded load before each measurement; the first round of each server gets `firstWarmup` more
  // (a fresh keygate server needs ~10 s of load to reach its steady rate here: JIT, heap growth).
  warmup: 3,
  firstWarmup: 5,
  duration: 5,
  // Start a new server process for every round instead of one per server for the whole run.
  freshServers: false,
  connections: 50,
  // No separate warm-up for the bcrypt-per-request row: the compares queued by a warm-up run keep
  // the server busy after that run's connections close, eating the measured window. One long
  // window instead (the first compare warms the JIT; ~10 compares a second here).
  slowWarmup: 0,
  slowDuration: 10,
  scaleKeys: 1_000_000,
  scaleRounds: 3,
  attackRounds: 3,
  floodConnections: 50,
  floodLead: 1,
  wrongKeys: 10_000,
  coldBcrypt: 15,
  coldSha256: 201,
  heapKeys: 1_000_000,
  heapCreateKeys: 100_000,
  heapMinimalKeys: 250_000,
  profileDuration: 6,
  profileInterval: 250,
  storeCore: '1',
  noiseLimit: 15,
  only: '',
  skip: '',
  dist: '',
  ref: '',
  out: 'bench/results',
};

const QUICK = {
  rounds: 1,
  warmup: 0.5,
  firstWarmup: 0.5,
  duration: 1,
  slowWarmup: 0,
  slowDuration: 3,
  scaleKeys: 100_000,
  scaleRounds: 1,
  attackRounds: 1,
  coldBcrypt: 3,
  coldSha256: 21,
  heapKeys: 100_000,
  heapCreateKeys: 10_000,
  heapMinimalKeys: 50_000,
  profileDuration: 1,
};

/** The phases of a run, in the order they run. */
const PHASE_NAMES = ['main', 'scale', 'attack', 'cold', 'heap', 'profile'];

const camel = (flag) => flag.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
const envName = (name) => `BENCH_${name.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;

function parseConfig(argv) {
  const flags = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${arg}`);
    const [rawName, inline] = arg.slice(2).split(/=(.*)/s);
    const name = camel(rawName);
    if (!(name in DEFAULTS)) throw new Error(`unknown option --${rawName}; see --help`);
    if (typeof DEFAULTS[name] === 'boolean') flags[name] = inline === undefined ? true : inline !== 'false';
    else flags[name] = inline ?? argv[++i];
  }
  const fromEnv = {};
  for (const name of Object.keys(DEFAULTS)) {
    const value = process.env[envName(name)];
    if (value !== undefined && value !== '') fromEnv[name] = typeof DEFAULTS[name] === 'boolean' ? value !== '0' && value !== 'false' : value;
  }
  const quick = flags.quick ?? fromEnv.quick ?? false;
  const merged = { ...DEFAULTS, ...(quick ? QUICK : {}), ...fromEnv, ...flags, quick };
  for (const [name, value] of Object.entries(merged)) {
    if (typeof DEFAULTS[name] === 'number') {
      merged[name] = Number(value);
      if (!Number.isFinite(merged[name]) || merged[name] < 0) throw new Error(`--${name}: not a number: ${value}`);
    }
  }
  merged.skipPhases = new Set(String(merged.skip).split(',').filter(Boolean));
  const unknownPhase = [...merged.skipPhases].find((phase) => !PHASE_NAMES.includes(phase));
  if (unknownPhase) throw new Error(`--skip: unknown phase ${unknownPhase}; phases: ${PHASE_NAMES.join(', ')}`);
  merged.onlyVariants = String(merged.only).split(',').filter(Boolean);
  // Checked before anything starts, so a typo costs nothing: only the servers of the main table
  // (and the diagnostic and slow ones) can be named; the scale servers belong to their own phase.
  const selectable = VARIANTS.filter((v) => ['main', 'diagnostic', 'slow'].includes(v.group)).map((v) => v.name);
  const unknown = merged.onlyVariants.filter((name) => !selectable.includes(name));
  if (unknown.length > 0) throw new Error(`--only: unknown variant ${unknown.join(', ')}; known: ${selectable.join(', ')}`);
  return merged;
}

if (process.argv.includes('--help')) {
  const source = readFileSync(fileURLToPath(import.meta.url), 'utf8');
  console.log(source.slice(source.indexOf(' * Options'), source.indexOf('*/')).replace(/^ \* ?/gm, '').trimEnd());
  process.exit(0);
}
let cfg;
try {
  cfg = parseConfig(process.argv.slice(2));
} catch (error) {
  console.error(`bench: ${error.message}`);
  process.exit(2);
}
const plan = pinningPlan();

// The load generator runs on its own core: re-run this script under taskset once.
if (plan.pinned && process.env.BENCH_LOAD_PINNED !== '1') {
  const again = spawnSync(plan.taskset, ['-c', String(plan.loadCore), process.execPath, ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, BENCH_LOAD_PINNED: '1' },
  });
  process.exit(again.status ?? 1);
}

const storeCore = cfg.storeCore === 'none' ? null : Number(cfg.storeCore);
const log = (...parts) => console.error(...parts);

if (!plan.pinned) {
  log(`\n${'!'.repeat(100)}\n!! NOT PINNING PROCESSES TO CORES: ${plan.reason}.\n!! Server and load generator share the CPU: ratios are less meaningful.\n${'!'.repeat(100)}\n`);
}

// ---------------------------------------------------------------------------------------------
// the keygate build under test

function git(args) {
  try {
    return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

function resolveDist() {
  // Inside the repository whatever --out says, so that the copy finds node_modules.
  const results = join(HERE, 'results');
  mkdirSync(results, { recursive: true });
  if (cfg.ref) {
    const sha = git(['rev-parse', '--verify', `${cfg.ref}^{commit}`]);
    if (!sha) throw new Error(`--ref ${cfg.ref}: not a commit`);
    const dir = mkdtempSync(join(results, '.keygate-ref-'));
    log(`building keygate at ${cfg.ref} (${sha.slice(0, 12)}) in ${dir}`);
    execSync(`git archive ${sha} src tsconfig.json | tar -x -C ${JSON.stringify(dir)}`, { cwd: ROOT, stdio: 'inherit' });
    execFileSync(join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', join(dir, 'src', 'tsconfig.build.json'), '--outDir', join(dir, 'dist', 'esm')], { stdio: 'inherit' });
    writeFileSync(join(dir, 'dist', 'esm', 'package.json'), '{"type":"module"}\n');
    return { dir: join(dir, 'dist'), source: `git ${cfg.ref} = ${sha}`, commit: sha, dirty: false, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
  }
  const source = cfg.dist ? resolve(cfg.dist) : join(ROOT, 'dist');
  if (!existsSync(join(source, 'esm', 'index.js'))) {
    throw new Error(`no keygate build in ${source}: run \`npm run build\` first (\`npm run bench\` does), or pass --ref HEAD`);
  }
  const snapshot = mkdtempSync(join(results, '.keygate-dist-'));
  cpSync(join(source, 'esm'), join(snapshot, 'esm'), { recursive: true });
  const dirty = cfg.dist ? null : Boolean(git(['status', '--porcelain', '--', 'src']));
  return { dir: snapshot, source, commit: cfg.dist ? null : git(['rev-parse', 'HEAD']), dirty, cleanup: () => rmSync(snapshot, { recursive: true, force: true }) };
}

// ---------------------------------------------------------------------------------------------
// environment

function packageVersion(name) {
  try {
    return JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version;
  } catch {
    return null;
  }
}

function machine() {
  let cpuModel = 'unknown';
  try {
    cpuModel = readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.+)$/m)?.[1]?.trim() ?? cpuModel;
  } catch {
    // not Linux
  }
  return {
    nproc: cpus().length,
    cpuModel,
    memoryGB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
  };
}

const PEER_PACKAGES = [
  'express', 'autocannon', 'passport', 'passport-headerapikey', 'express-rate-limit', 'rate-limit-redis',
  'rate-limiter-flexible', 'ioredis', 'pg', 'bcryptjs', 'lru-cache', 'ipaddr.js',
];

/** Waits (up to `maxS`) until other processes use less than the noise limit of one core. */
async function waitForQuiet(maxS = 30) {
  const deadline = Date.now() + maxS * 1000;
  for (;;) {
    const snapshot = cpuSnapshot();
    await delay(1000);
    const cpu = cpuSince(snapshot);
    const foreign = Math.max(cpu.foreign, cpu.unexplained);
    if (foreign < cfg.noiseLimit) return foreign;
    if (Date.now() > deadline) {
      log(`warning: other processes keep using ${foreign.toFixed(0)}% of a core; measuring anyway (rounds disturbed by them are retried once)`);
      return foreign;
    }
    log(`waiting for a quiet machine: other processes use ${foreign.toFixed(0)}% of a core`);
  }
}

// ---------------------------------------------------------------------------------------------
// measuring one server

let serverOptions;

async function preflight(server, variant) {
  const problems = [];
  const before = await server.counted();
  const good = await probe(server.url, server.ready.key);
  if (good.status !== 200 || JSON.stringify(good.body) !== JSON.stringify(server.ready.body)) {
    problems.push(`the legitimate key got ${good.status} ${JSON.stringify(good.body).slice(0, 200)}`);
  }
  if (variant.auth) {
    const wrong = await probe(server.url, server.ready.wrongKey);
    if (wrong.status !== 401) problems.push(`a wrong key got ${wrong.status}, not 401`);
  }
  const after = await server.counted();
  if (typeof before.value === 'number') {
    const delta = after.value - before.value;
    // Leased mode reserves a batch at the first request: up to `countsAhead` more than it answered.
    const counts = variant.countsAhead === undefined ? delta === 1 : delta >= 1 && delta <= 1 + variant.countsAhead;
    if (!counts) problems.push(`one admitted request was counted ${delta} times`);
    // What `measured` checks a counter that may run ahead against: everything since this request.
    server.tally = { base: before.value, answered: good.status === 200 ? 1 : 0, inFlight: 0 };
  }
  if (before.value !== null && typeof before.value !== 'number') problems.push(`counter unreadable: ${before.value}`);
  return problems;
}

/**
 * Measures a running server; validates that every answered request was counted by the variant:
 * exactly (up to the requests still in flight when the load stops), or, for a variant whose
 * counter may run ahead (`countsAhead`, leased mode), within that bound of everything the server
 * answered since its first request.
 */
async function measured(server, variant, { warmupS, seconds, connections = cfg.connections, retryOnNoise = true }) {
  // Admitted by the server but not yet answered when autocannon stops: counted, not in `answered`.
  const inFlight = 2 * connections + 2;
  const tallied = (stats) => {
    if (!server.tally) return;
    server.tally.answered += stats.warmupOk + stats.ok;
    server.tally.inFlight += inFlight;
  };
  let c0 = await server.counted();
  let stats = await measure(server, { key: server.ready.key, connections, warmupS, seconds });
  let c1 = await server.counted();
  if (retryOnNoise && stats.foreignCpuPct > cfg.noiseLimit) {
    log(`    other processes used ${stats.foreignCpuPct.toFixed(0)}% of a core during that measurement: measuring again`);
    await waitForQuiet(20);
    const firstForeign = stats.foreignCpuPct;
    tallied(stats);
    c0 = c1;
    stats = await measure(server, { key: server.ready.key, connections, warmupS: Math.min(1, warmupS), seconds });
    c1 = await server.counted();
    stats.retriedForNoise = firstForeign;
  }
  stats.problems = [];
  if (retryOnNoise && stats.foreignCpuPct > cfg.noiseLimit) {
    stats.problems.push(`disturbed by other processes (${stats.foreignCpuPct.toFixed(0)}% of a core), even when measured again`);
  }
  if (stats.non2xx || stats.errors || stats.timeouts) {
    stats.problems.push(`${stats.non2xx} non-2xx, ${stats.errors} errors, ${stats.timeouts} timeouts`);
  }
  tallied(stats);
  if (typeof c0.value === 'number') {
    const delta = c1.value - c0.value;
    const answered = stats.warmupOk + stats.ok;
    stats.countedDelta = delta;
    stats.answered = answered;
    if (variant.countsAhead === undefined) {
      if (delta < answered || delta > answered + inFlight) stats.problems.push(`the variant counted ${delta} admissions for ${answered} answered requests`);
    } else if (server.tally) {
      // See `countsAhead` in bench/variants.mjs: never fewer than answered, at most a lease more.
      const { base, answered: total, inFlight: slack } = server.tally;
      const growth = c1.value - base;
      stats.countedAheadBy = growth - total;
      if (growth < total || growth > total + variant.countsAhead + slack) {
        stats.problems.push(`the variant's counter grew by ${growth} since the server's first request, for ${total} answered requests (leased: allowed ${total} to ${total + variant.countsAhead + slack})`);
      }
    }
    if (c0.stats && c1.stats && delta > 0) stats.storeCallsPerRequest = (c1.stats.storeCalls - c0.stats.storeCalls) / delta;
  }
  return stats;
}

function describe(stats) {
  const core = stats.coreBusyPct?.[plan.serverCore ?? 0];
  return `${fmtInt(stats.rps).padStart(8)} req/s  p50 ${fmtMs(stats.latency.p50)} ms  p99 ${fmtMs(stats.latency.p99)} ms  server core ${Number.isFinite(core) ? core.toFixed(0) : '?'}%  load core ${Number.isFinite(stats.coreBusyPct?.[plan.loadCore ?? 1]) ? stats.coreBusyPct[plan.loadCore ?? 1].toFixed(0) : '?'}%${stats.problems?.length ? `  PROBLEMS: ${stats.problems.join('; ')}` : ''}`;
}

/**
 * Starts `variant`'s server and checks it: `{ server }`, or `{ skip }`, `{ invalid }`, `{ error }`
 * (the shapes `record` takes), with no server left running.
 */
async function startChecked(variant, options = serverOptions, startTimeoutMs = undefined) {
  let server;
  try {
    const started = performance.now();
    server = await startServer(plan, variant, options, { startTimeoutMs });
    if (server.skip) return { skip: server.skip };
    const { storeSize, heapUsedMB } = server.ready.info;
    if (storeSize > 1) log(`  ${variant.name}: ready in ${fmt((performance.now() - started) / 1000, 1)} s, store holds ${fmtInt(storeSize)} keys, heap ${heapUsedMB} MB`);
    const problems = await preflight(server, variant);
    if (problems.length === 0) return { server };
    await server.stop();
    return { invalid: problems };
  } catch (error) {
    await server?.stop?.();
    return { error: error.message };
  }
}

/** `startChecked` for a phase that cannot go on without the server. */
async function startOrThrow(variant) {
  const { server, ...failure } = await startChecked(variant);
  if (!server) throw new Error(`${variant.name}: ${outcomeLine(failure)}`);
  return server;
}

function rotate(list, by) {
  const shift = by % list.length;
  return [...list.slice(shift), ...list.slice(0, shift)];
}

function record(slot, outcome, round) {
  if (outcome.skip) slot.skip = outcome.skip;
  else if (outcome.invalid) slot.invalid = outcome.invalid;
  else if (outcome.error) slot.error = outcome.error;
  else {
    outcome.stats.round = round;
    slot.rounds.push(outcome.stats);
  }
}

function outcomeLine(outcome) {
  if (outcome.skip) return `skipped: ${outcome.skip}`;
  if (outcome.invalid) return `INVALID: ${outcome.invalid.join('; ')}`;
  if (outcome.error) return `ERROR: ${outcome.error.split('\n').slice(0, 3).join(' | ')}`;
  return describe(outcome.stats);
}

/**
 * Interleaved rounds over `variants` (A B C … A B C …, the order rotated each round): a slot of
 * rounds per variant. By default each server is one process for the whole run, as a deployed
 * server lives: all are started and checked first, then each is frozen (SIGSTOP) while the others
 * are measured, and its first round gets `firstWarmupS` more warm-up (keygate's code needs more
 * than 3 s of load to reach its steady rate here, and a process that lives on reaches it). With
 * `fresh`, a new process per variant and round instead.
 */
async function interleaved(variants, { rounds, warmupS, seconds, firstWarmupS = 0, fresh = false, optionsFor = () => serverOptions, startTimeoutMs }) {
  const slots = new Map(variants.map((v) => [v.name, { name: v.name, label: v.label, group: v.group, rounds: [], notes: [] }]));
  const servers = new Map();
  const start = async (variant) => {
    const { server, ...failure } = await startChecked(variant, optionsFor(variant), startTimeoutMs);
    if (!server) {
      record(slots.get(variant.name), failure);
      log(`  ${variant.name}: ${outcomeLine(failure)}`);
    }
    return server;
  };
  try {
    if (!fresh) {
      for (const variant of variants) {
        const server = await start(variant);
        if (!server) continue;
        server.child.kill('SIGSTOP');
        servers.set(variant.name, server);
      }
      log(`  ${servers.size} servers started and checked`);
    }
    for (let round = 0; round < rounds; round++) {
      for (const variant of rotate(variants, round)) {
        const slot = slots.get(variant.name);
        if (slot.skip || slot.invalid || slot.error) continue;
        const server = fresh ? await start(variant) : servers.get(variant.name);
        if (!server) continue;
        server.child.kill('SIGCONT');
        await delay(200);
        log(`  round ${round + 1}/${rounds}  ${variant.name.padEnd(30)}`);
        let outcome;
        try {
          const stats = await measured(server, variant, { warmupS: round === 0 && !fresh ? warmupS + firstWarmupS : warmupS, seconds });
          stats.info = server.ready.info;
          outcome = { stats };
        } catch (error) {
          outcome = { error: error.message };
        }
        if (fresh) await server.stop();
        else server.child.kill('SIGSTOP');
        record(slot, outcome, round);
        log(`    ${outcomeLine(outcome)}`);
      }
    }
  } finally {
    for (const server of servers.values()) {
      server.child.kill('SIGCONT');
      await server.stop();
    }
  }
  return [...slots.values()];
}

/** Medians of a slot's rounds; ratios paired with bare's rounds of the same index when given. */
function aggregate(slot, bareByRound, bareMedian) {
  const rounds = slot.rounds.filter((r) => r.problems.length === 0);
  const rejected = slot.rounds.length - rounds.length;
  slot.rps = median(rounds.map((r) => r.rps));
  slot.validRounds = rounds.length;
  slot.rpsMin = Math.min(...rounds.map((r) => r.rps));
  slot.rpsMax = Math.max(...rounds.map((r) => r.rps));
  slot.p50 = median(rounds.map((r) => r.latency.p50));
  slot.p99 = median(rounds.map((r) => r.latency.p99));
  slot.serverCoreBusyPct = median(rounds.map((r) => r.coreBusyPct?.[plan.serverCore ?? 0]));
  slot.serverProcessCpuPct = median(rounds.map((r) => r.serverCpuPct));
  slot.loadCoreBusyPct = median(rounds.map((r) => r.coreBusyPct?.[plan.loadCore ?? 1]));
  slot.storeCallsPerRequest = median(rounds.map((r) => r.storeCallsPerRequest));
  const paired = bareByRound ? rounds.map((r) => r.rps / bareByRound.get(r.round)).filter(Number.isFinite) : [];
  slot.ratio = paired.length > 0 ? median(paired) : slot.rps / bareMedian;
  slot.ratioPaired = paired.length > 0;
  if (slot.invalid) slot.notes.push(`INVALID: ${slot.invalid.join('; ')}`);
  if (slot.error) slot.notes.push(`ERROR: ${slot.error.split('\n')[0]}`);
  if (rejected > 0) slot.notes.push(`${rejected} round(s) left out: ${slot.rounds.find((r) => r.problems.length)?.problems.join('; ')}`);
  if (rounds.some((r) => r.retriedForNoise !== undefined)) slot.notes.push('a round was re-measured (other processes were busy)');
  const ahead = rounds.at(-1)?.countedAheadBy;
  if (Number.isFinite(ahead)) slot.notes.push(`useCount ${fmtInt(ahead)} ahead of the requests answered at the end (reserved, not yet spent)`);
  if (rounds.length > 0 && slot.serverCoreBusyPct < 90) {
    slot.notes.push(
      `server core only ${slot.serverCoreBusyPct.toFixed(0)}% busy${slot.loadCoreBusyPct > 90 ? ` (core ${plan.loadCore ?? 1}, shared by the load generator and the store, was the limit: ${slot.loadCoreBusyPct.toFixed(0)}% busy)` : ''}`,
    );
  }
  if (!slot.skip && rounds.length === 0 && !slot.invalid && !slot.error) slot.notes.push('no valid round');
  if (slot.group === 'slow') slot.notes.push(`1 round, ${cfg.slowWarmup} s warm-up + ${cfg.slowDuration} s; ratio to bare's median`);
  return slot;
}

// ---------------------------------------------------------------------------------------------
// phases

/** The variants of the main table (with the `diagnostic` ones named by --only), and the `slow` ones. */
function mainVariants() {
  const wanted = cfg.onlyVariants.length > 0 ? new Set(['bare', ...cfg.onlyVariants]) : null;
  for (const name of wanted ?? []) variantNamed(name);
  const picked = (v) => !wanted || wanted.has(v.name);
  return {
    main: VARIANTS.filter((v) => (v.group === 'main' && picked(v)) || (v.group === 'diagnostic' && wanted?.has(v.name))),
    slow: VARIANTS.filter((v) => v.group === 'slow' && picked(v)),
  };
}

async function mainPhase() {
  const { main, slow } = mainVariants();
  const slots = await interleaved(main, { rounds: cfg.rounds, warmupS: cfg.warmup, firstWarmupS: cfg.firstWarmup, seconds: cfg.duration, fresh: cfg.freshServers });
  if (slow.length > 0) log(`  slow: ${cfg.slowWarmup} s warm-up, ${cfg.slowDuration} s measured`);
  slots.push(...(await interleaved(slow, { rounds: 1, warmupS: cfg.slowWarmup, seconds: cfg.slowDuration, fresh: true })));
  const bare = slots.find((slot) => slot.name === 'bare');
  const bareByRound = new Map(bare.rounds.filter((r) => r.problems.length === 0).map((r) => [r.round, r.rps]));
  const bareMedian = median([...bareByRound.values()]);
  return slots.map((slot) => aggregate(slot, slot.group === 'main' ? bareByRound : null, bareMedian));
}

/** 1M keys vs 10: both servers stay up for every round; the one not measured is SIGSTOPped. */
async function scalePhase() {
  const variants = VARIANTS.filter((v) => v.group === 'scale');
  const slots = await interleaved(variants, {
    rounds: cfg.scaleRounds,
    warmupS: cfg.warmup,
    seconds: cfg.duration,
    optionsFor: (variant) => ({ ...serverOptions, keys: variant.keys >= 1_000_000 ? cfg.scaleKeys : variant.keys }),
    startTimeoutMs: 600_000,
  });
  const rows = slots.map((slot) => {
    const row = aggregate(slot, null, Number.NaN);
    row.keys = row.rounds[0]?.info.storeSize;
    row.heapUsedMB = row.rounds[0]?.info.heapUsedMB;
    return row;
  });
  const [small, big] = rows;
  return { rows, ratio: big.rps / small.rps };
}

/**
 * Where the server's threads run during the wrong-secret flood (issue 14 asks for both, side by
 * side). `shared`: every thread on the server core, as in every other phase (the process starts
 * under taskset and its threads inherit it), so keygate's bcrypt compares take time from the
 * event loop's core. `split`: the main thread, V8's and libuv's helpers stay there; the threads
 * the server started after it began (keygate's hashing pool; see `threadsStartedAfter`) are moved
 * with `taskset -p` to the load core, the only other core of a 2-core machine: they share it with
 * the load generator (both autocannons, the legitimate client and the flood), which a deployment
 * giving the hash thread a core of its own would not do.
 */
const PLACEMENTS = ['shared', 'split'];

function placementTitle(name) {
  const server = plan.serverCore ?? 0;
  const load = plan.loadCore ?? 1;
  return name === 'shared'
    ? `(a) every server thread on core ${server}`
    : `(b) main thread on core ${server}, hashing thread(s) on core ${load} (shared with the load generator)`;
}

/** The split placement cannot be made or was not what it claims: reported as not measured, with this reason. */
class PlacementError extends Error {}

/** Moves the server's later threads (keygate's hashing pool) to the load core: their thread ids. */
function moveHashThreads(server) {
  if (!server.ready.threadsAtStart?.length) throw new PlacementError("the server's threads cannot be listed (/proc/PID/task)");
  const tids = threadsStartedAfter(server.pid, server.ready.threadsAtStart);
  if (tids.length === 0) throw new PlacementError('no hashing thread: the server started no thread after it began');
  for (const tid of tids) {
    try {
      pinThread(plan, tid, plan.loadCore);
    } catch (error) {
      throw new PlacementError(error.message);
    }
  }
  return tids;
}

/**
 * Where the server's threads were at the end of a round, and what the later ones (the hashing
 * pool) did during the measured window: `{ hashThreads, hashThreadCores, mainThreadCores,
 * hashCpuPct, problems }`. A problem means the round did not run in the placement it names.
 */
function placementCheck(server, placement, stats) {
  const later = threadsStartedAfter(server.pid, server.ready.threadsAtStart ?? []);
  const cores = later.map((tid) => threadCores(server.pid, tid)).filter((c) => c !== null);
  const check = {
    hashThreads: later.length,
    hashThreadCores: [...new Set(cores)].join(', '),
    mainThreadCores: threadCores(server.pid, server.pid),
    hashCpuPct: stats.serverThreadsCpuPct?.[LATER_THREADS] ?? 0,
    problems: [],
  };
  if (!plan.pinned) return check;
  const want = String(placement === 'split' ? plan.loadCore : plan.serverCore);
  if (check.mainThreadCores !== String(plan.serverCore)) check.problems.push(`the main thread ran on core(s) ${check.mainThreadCores}, not ${plan.serverCore}`);
  if (cores.some((c) => c !== want)) check.problems.push(`the hashing thread(s) ran on core(s) ${check.hashThreadCores}, not ${want}`);
  // Every 401 of the flood is a bcrypt compare: threads that did them use CPU. If the moved ones
  // did not, the compares ran on threads that stayed behind.
  const compares = stats.flood?.statusCodes?.['401']?.count ?? 0;
  if (placement === 'split' && compares > 0 && check.hashCpuPct < 1) {
    check.problems.push(`the moved threads used ${fmt(check.hashCpuPct, 1)}% of a core while ${compares} wrong secrets were refused after a bcrypt compare: the compares ran elsewhere`);
  }
  return check;
}

/** One attack measurement on a fresh server, its threads placed as `placement` says: the legitimate client alone, or with the flood. */
async function attackRound(variant, mode, round, placement) {
  const server = await startOrThrow(variant);
  try {
    if (placement === 'split') moveHashThreads(server);
    const wrongKeys = wrongSecretsFor(server.ready.key, cfg.wrongKeys);
    const wrong = await probe(server.url, wrongKeys[0]);
    if (wrong.body?.code !== 'invalid_api_key') throw new Error(`a wrong secret for the key's prefix got ${wrong.status} ${wrong.body?.code}, not invalid_api_key`);
    log(`  round ${round + 1}/${cfg.attackRounds}  placement ${placement}  legitimate client ${mode === 'flood' ? `+ flood of wrong secrets (${cfg.floodConnections} connections)` : 'alone'}`);
    await load({ url: server.url, key: server.ready.key, connections: cfg.connections, seconds: cfg.warmup });
    let flood;
    if (mode === 'flood') {
      flood = load({ url: server.url, keys: wrongKeys, connections: cfg.floodConnections, seconds: cfg.floodLead + cfg.duration + 0.5 });
      await delay(cfg.floodLead * 1000);
    }
    // A pool that grows under the flood starts more threads: they move too, before the window.
    if (placement === 'split') moveHashThreads(server);
    const stats = await measured(server, variant, { warmupS: 0, seconds: cfg.duration, retryOnNoise: false });
    if (flood) {
      stats.flood = summarize(await flood);
      stats.flood.rps = stats.flood.total / stats.flood.durationS;
    }
    stats.placement = placementCheck(server, placement, stats);
    log(`    legitimate: ${describe(stats)}`);
    if (stats.flood) {
      log(`    flood: ${fmtInt(stats.flood.rps)} answers/s, status codes ${statusCounts(stats.flood.statusCodes)}, p99 ${fmtMs(stats.flood.latency.p99)} ms, ${stats.flood.timeouts} timeouts`);
    }
    log(`    threads: main on core ${stats.placement.mainThreadCores ?? '?'}, ${stats.placement.hashThreads} hashing thread(s) on core ${stats.placement.hashThreadCores || '?'} using ${fmt(stats.placement.hashCpuPct, 1)}% of a core`);
    if (placement === 'split' && stats.placement.problems.length > 0) throw new PlacementError(stats.placement.problems.join('; '));
    return stats;
  } finally {
    await server.stop();
  }
}

/** Medians of one placement's rounds, alone and under the flood, and their ratio. */
function attackSummary(name, { alone, flooded, notMeasured }) {
  if (notMeasured) return { placement: name, title: placementTitle(name), notMeasured };
  const rpsAlone = median(alone.map((s) => s.rps));
  const rpsFlood = median(flooded.map((s) => s.rps));
  return {
    placement: name,
    title: placementTitle(name),
    alone: { rps: rpsAlone, p50: median(alone.map((s) => s.latency.p50)), p99: median(alone.map((s) => s.latency.p99)), rounds: alone },
    flood: {
      rps: rpsFlood,
      p50: median(flooded.map((s) => s.latency.p50)),
      p99: median(flooded.map((s) => s.latency.p99)),
      floodRps: median(flooded.map((s) => s.flood.rps)),
      floodStatusCodes: flooded[0]?.flood.statusCodes,
      floodP99: median(flooded.map((s) => s.flood.latency.p99)),
      /** Refusals after a full secret check (401): each one a bcrypt compare. */
      flood401PerRound: median(flooded.map((s) => s.flood.statusCodes?.['401']?.count ?? 0)),
      loadCoreBusyPct: median(flooded.map((s) => s.coreBusyPct?.[plan.loadCore ?? 1])),
      serverCoreBusyPct: median(flooded.map((s) => s.coreBusyPct?.[plan.serverCore ?? 0])),
      /** CPU of the hashing thread(s) during the flood, percent of one core. */
      hashCpuPct: median(flooded.map((s) => s.placement.hashCpuPct)),
      hashThreads: Math.max(0, ...flooded.map((s) => s.placement.hashThreads)),
      hashThreadCores: flooded.at(-1)?.placement.hashThreadCores,
      rounds: flooded,
    },
    problems: [...new Set([...alone, ...flooded].flatMap((s) => s.placement.problems))],
    ratio: rpsFlood / rpsAlone,
  };
}

/**
 * A legitimate client with and without a flood of wrong secrets for its keyPrefix, in both thread
 * placements (PLACEMENTS), each on fresh servers, interleaved and the order rotated each round.
 */
async function attackPhase() {
  const variant = variantNamed('keygate-memory');
  const placements = {
    shared: { alone: [], flooded: [] },
    split: { alone: [], flooded: [], notMeasured: plan.pinned ? undefined : `threads cannot be placed here: ${plan.reason}` },
  };
  if (placements.split.notMeasured) log(`  placement split: not measured, ${placements.split.notMeasured}`);
  for (let round = 0; round < cfg.attackRounds; round++) {
    for (const name of rotate(PLACEMENTS, round)) {
      const placement = placements[name];
      for (const mode of rotate(['alone', 'flood'], round)) {
        if (placement.notMeasured) break;
        // A disturbed round is run again from scratch (new server, new flood), once.
        for (let attempt = 1; attempt <= 2; attempt++) {
          let stats;
          try {
            stats = await attackRound(variant, mode, round, name);
          } catch (error) {
            if (!(error instanceof PlacementError)) throw error;
            placement.notMeasured = error.message;
            log(`  placement ${name}: not measured, ${error.message}`);
            break;
          }
          if (stats.foreignCpuPct > cfg.noiseLimit && attempt === 1) {
            log(`    other processes used ${stats.foreignCpuPct.toFixed(0)}% of a core during that round: running it again`);
            await waitForQuiet(20);
            continue;
          }
          if (stats.foreignCpuPct > cfg.noiseLimit) stats.disturbed = stats.foreignCpuPct;
          (mode === 'flood' ? placement.flooded : placement.alone).push(stats);
          break;
        }
      }
    }
  }
  return Object.fromEntries(PLACEMENTS.map((name) => [name, attackSummary(name, placements[name])]));
}

/** Runs a script on the server core and parses the JSON line it prints. */
async function runChildJson(script, nodeArgs, options, timeoutMs) {
  const { command, args } = pinned(plan, plan.serverCore, process.execPath, [...nodeArgs, join(HERE, script)]);
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, BENCH_OPTIONS: JSON.stringify(options) } });
  track(child);
  let out = '';
  child.stdout.on('data', (chunk) => {
    out += chunk;
  });
  const timer = setTimeout(() => {
    log(`${script}: no answer after ${timeoutMs / 1000} s, stopping it`);
    stopProcess(child, 'SIGKILL');
  }, timeoutMs);
  const code = await new Promise((resolvePromise) => child.once('exit', resolvePromise));
  clearTimeout(timer);
  if (code !== 0) throw new Error(`${script} exited with ${code}`);
  return JSON.parse(out.trim().split('\n').pop());
}

async function coldPhase() {
  return runChildJson('cold.mjs', [], { ...serverOptions, coldBcrypt: cfg.coldBcrypt, coldSha256: cfg.coldSha256 }, 180_000);
}

async function heapPhase() {
  return runChildJson(
    'heap.mjs',
    ['--expose-gc', '--max-old-space-size=8192'],
    { ...serverOptions, heapKeys: cfg.heapKeys, heapCreateKeys: cfg.heapCreateKeys, heapMinimalKeys: cfg.heapMinimalKeys },
    600_000,
  );
}

/**
 * V8 sampling profiles (the profiler `node --cpu-prof` uses, started over IPC after the warm-up so
 * only the measured window is recorded) of bare Express and of the MemoryStore warm path, and the
 * per-request difference between them: where keygate's microseconds go.
 */
async function profilePhase(dist, outDir, stamp) {
  const profiles = {};
  for (const name of ['bare', 'keygate-memory']) {
    const variant = variantNamed(name);
    const server = await startOrThrow(variant);
    try {
      await load({ url: server.url, key: server.ready.key, connections: cfg.connections, seconds: cfg.warmup });
      await server.profileStart(cfg.profileInterval);
      const stats = await measure(server, { key: server.ready.key, connections: cfg.connections, warmupS: 0, seconds: cfg.profileDuration });
      const path = join(outDir, `profile-${name}-${stamp}.cpuprofile`);
      await server.profileStop(path);
      const analysis = analyseProfile(JSON.parse(readFileSync(path, 'utf8')), join(dist, 'esm'));
      log(`  ${name}: ${fmtInt(stats.rps)} req/s under the profiler, ${fmt(analysis.busyUs / stats.ok, 1)} µs of CPU per request → ${path}`);
      profiles[name] = { path, rpsUnderProfiler: stats.rps, requests: stats.ok, ...analysis };
    } finally {
      await server.stop();
    }
  }
  const bare = profiles.bare;
  const subject = profiles['keygate-memory'];
  const comparison = compareProfiles(bare, bare.requests, subject, subject.requests);
  const { selfUsByFunction: _a, selfUsByPackage: _b, ...kept } = subject;
  return { ...kept, bare: { path: bare.path, rpsUnderProfiler: bare.rpsUnderProfiler, busyUs: bare.busyUs, requests: bare.requests }, comparison };
}

// ---------------------------------------------------------------------------------------------
// targets and reports

/** All of `conditions` (true, false, or null = not measured): false if one fails, else null if one was not measured. */
function allOf(...conditions) {
  if (conditions.includes(false)) return false;
  return conditions.includes(null) ? null : true;
}

/** A key count as the targets say it: 1M for 1,000,000. */
const keysLabel = (count) => (count >= 1e6 && count % 1e6 === 0 ? `${count / 1e6}M` : fmtInt(count));

/**
 * The targets of issue 14, in its order, each `{ target, figure, met }`: `met` is true or false,
 * or null when this run could not measure it (a phase or a row it compares with was left out, or
 * the machine cannot place the threads); `info: true` marks a figure reported without a target.
 * A target whose keygate row is in the run but has no valid figure (skipped, invalid) is missed.
 */
function targets(results) {
  const main = new Map((results.main ?? []).map((row) => [row.name, row]));
  const list = [];
  const ok = (row) => row && !row.skip && Number.isFinite(row.rps) && row.rounds.some((r) => r.problems.length === 0);
  /** Why a row of the run has no figure. */
  const why = (row) => (row.skip ? `skipped: ${row.skip}` : (row.notes.find((note) => /^(INVALID|ERROR)/.test(note)) ?? 'no valid round'));
  const versus = (row) => `${row.name} ${fmtRatio(row.ratio)}`;

  const memory = main.get('keygate-memory');
  if (memory) {
    const target = 'MemoryStore warm path with every check ≥ 0.92 × bare, and ahead of every peer but the hand-written cached check';
    if (!ok(memory)) list.push({ target, figure: why(memory), met: false });
    else {
      // The hand-written cache checks nothing but a Map: issue 14 leaves it out of the comparison.
      const peers = [...main.values()].filter((row) => ok(row) && variantNamed(row.name).peer && row.name !== 'hand-cached-sha256');
      const ahead = peers.filter((row) => row.ratio >= memory.ratio);
      const standing = peers.length === 0 ? 'no peer row in this run' : ahead.length === 0 ? `ahead of all ${peers.length} peers` : `behind ${ahead.map(versus).join(', ')}`;
      list.push({ target, figure: `${fmtRatio(memory.ratio)} × bare; ${standing}`, met: allOf(memory.ratio >= 0.92, peers.length === 0 ? null : ahead.length === 0) });
    }
  }

  const redis = main.get('keygate-redis');
  if (redis) {
    const target = "RedisStore (exact) ≥ 0.85 × bare, and ahead of rate-limiter-flexible's Redis limiter";
    const limiter = main.get('rate-limiter-flexible-redis');
    if (!ok(redis)) list.push({ target, figure: why(redis), met: false });
    else {
      const standing = ok(limiter) ? versus(limiter) : `rate-limiter-flexible-redis ${limiter ? why(limiter) : 'not in this run'}`;
      list.push({ target, figure: `${fmtRatio(redis.ratio)} × bare; ${standing}`, met: allOf(redis.ratio >= 0.85, ok(limiter) ? redis.ratio > limiter.ratio : null) });
    }
  }

  for (const [name, store, least] of [
    ['keygate-redis-leased', 'RedisStore', 0.9],
    ['keygate-postgres-leased', 'PostgreSQL (SqlStore)', 0.8],
  ]) {
    const row = main.get(name);
    if (!row) continue;
    const target = `Leased mode: ${store} with consistency: 'leased' ≥ ${least.toFixed(2)} × bare`;
    list.push(ok(row) ? { target, figure: `${fmtRatio(row.ratio)} × bare`, met: row.ratio >= least } : { target, figure: why(row), met: false });
  }

  const pipelined = main.get('keygate-redis-autopipeline');
  if (pipelined) {
    const figure = !ok(pipelined)
      ? why(pipelined)
      : ok(redis)
        ? `${fmtRatio(pipelined.rps / redis.rps)} of keygate-redis (${fmtRatio(pipelined.ratio)} vs ${fmtRatio(redis.ratio)} × bare)`
        : `${fmtRatio(pipelined.ratio)} × bare; keygate-redis ${redis ? why(redis) : 'not in this run'}`;
    list.push({ target: 'ioredis auto-pipelining (keygate-redis-autopipeline ÷ keygate-redis)', figure, info: true });
  }

  if (results.scale || results.heap) {
    const big = results.scale?.rows.at(-1);
    const created = results.heap?.find((h) => h.kind === 'create');
    const inserted = results.heap?.find((h) => h.kind === 'insert-full');
    const worst = Math.max(created?.heapBytesPerKey ?? 0, inserted?.heapBytesPerKey ?? 0);
    list.push({
      target: '1M keys in a MemoryStore: req/s ≥ 0.85 of 10 keys, and under 1 KB of heap per key',
      figure: [
        results.scale ? `${fmtRatio(results.scale.ratio)} of 10 keys (${keysLabel(big?.keys ?? cfg.scaleKeys)} keys)` : 'req/s not measured (scale phase skipped)',
        results.heap ? `${fmtInt(created?.heapBytesPerKey)} B/key (keys.create), ${fmtInt(inserted?.heapBytesPerKey)} B/key (store.insert, flat strings)` : 'heap not measured (heap phase skipped)',
      ].join('; '),
      met: allOf(results.scale ? results.scale.ratio >= 0.85 : null, results.heap ? worst < 1024 : null),
    });
  }

  const gc = results.heap?.find((h) => h.kind === 'insert-full' && Number.isFinite(h.gcPauseMs));
  if (gc) list.push({ target: `GC pause at ${keysLabel(gc.keys)} keys`, figure: `${fmtMs(gc.gcPauseMs)} ms (empty store: ${fmtMs(gc.gcPauseEmptyMs)} ms)`, info: true });

  for (const name of results.attack ? PLACEMENTS : []) {
    const a = results.attack[name];
    const target = `Wrong-secret flood, ${a.title}: the legitimate client keeps ≥ 80% of its req/s`;
    list.push(a.notMeasured ? { target, figure: `not measured: ${a.notMeasured}`, met: null } : { target, figure: fmtRatio(a.ratio), met: a.ratio >= 0.8 });
  }

  const usage = main.get('keygate-memory-usage');
  if (ok(memory) && ok(usage)) {
    const cost = 1 - usage.rps / memory.rps;
    list.push({
      target: 'Usage analytics on: warm path within 5% of off (keygate-memory-usage vs keygate-memory)',
      figure: `${fmtRatio(usage.rps / memory.rps)} (${(100 * cost).toFixed(1)}% ${cost >= 0 ? 'slower' : 'faster'})`,
      met: cost <= 0.05,
    });
  }
  if (ok(redis)) {
    list.push({ target: 'RedisStore: one round trip per request', figure: `${fmt(redis.storeCallsPerRequest)} Redis commands per admitted request`, met: Math.round(redis.storeCallsPerRequest * 100) / 100 <= 1.0 });
  }
  const postgres = main.get('keygate-postgres');
  if (postgres) {
    list.push(
      ok(postgres)
        ? { target: 'PostgreSQL warm path: reported; one statement per admitted request', figure: `${fmtRatio(postgres.ratio)} × bare, ${fmt(postgres.storeCallsPerRequest)} statements per request`, met: Math.round(postgres.storeCallsPerRequest * 100) / 100 <= 1.0 }
        : { target: 'PostgreSQL warm path: reported', figure: postgres.skip ? `skipped: ${postgres.skip}` : 'no valid figure', met: false },
    );
  }
  return list;
}

/** A target's verdict: in the printed summary (fixed width) or in the Markdown report. */
function verdict(t, markdown) {
  if (t.info) return markdown ? 'informational' : 'info';
  if (t.met === null) return markdown ? 'not measured' : 'n/m ';
  if (t.met) return markdown ? 'yes' : 'met ';
  return markdown ? '**no**' : 'MISS';
}

function markdownReport(results) {
  const m = results.meta;
  const lines = [];
  lines.push(`# keygate benchmark — ${m.date}`, '');
  lines.push(`Command: \`${m.command}\``, '');
  lines.push(`Machine: ${m.machine.nproc} cores (${m.machine.cpuModel}), ${m.machine.memoryGB} GB, Linux ${m.machine.kernel}, Node ${m.machine.node}.`);
  lines.push(`Pinning: ${m.pinning.pinned ? `servers on core ${m.pinning.serverCore}, load generator (autocannon) on core ${m.pinning.loadCore}, redis-server/PostgreSQL on core ${m.storeCore ?? 'any'}` : `NONE (${m.pinning.reason})`}.`);
  lines.push(`keygate: ${m.keygate.source}${m.keygate.commit ? ` at ${m.keygate.commit.slice(0, 12)}` : ''}${m.keygate.dirty ? ' (src/ had uncommitted changes)' : ''}.`);
  lines.push(`Load: ${m.config.connections} connections, pipelining 1, ${m.config.warmup} s warm-up discarded (${m.config.warmup + m.config.firstWarmup} s in the first round), ${m.config.duration} s measured, ${m.config.rounds} interleaved round(s), ${m.config.freshServers ? 'a new server process per round' : 'one server process per server for the whole run'}, medians.`);
  lines.push(`Versions: ${Object.entries(m.versions).map(([k, v]) => `${k} ${v}`).join(', ')}.`, '');
  if (results.main) {
    lines.push('## Warm path, side by side', '');
    lines.push(markdownTable(MAIN_COLUMNS, mainRows(results.main)), '');
    lines.push('`× bare` = median over rounds of (req/s ÷ bare req/s in the same round). "server core busy" = CPU time of core 0 (server process + kernel network work); below ~100% the load generator, not the server, was the limit.', '');
    const rows = new Map(results.main.map((row) => [row.name, row]));
    const [redis, pipelined] = [rows.get('keygate-redis'), rows.get('keygate-redis-autopipeline')];
    if (redis?.validRounds && pipelined?.validRounds) {
      lines.push(`ioredis auto-pipelining (\`enableAutoPipelining: true\`): keygate-redis-autopipeline runs at **${fmtRatio(pipelined.rps / redis.rps)}** of keygate-redis (${fmtRatio(pipelined.ratio)} vs ${fmtRatio(redis.ratio)} × bare).`, '');
    }
    if (results.main.some((row) => variantNamed(row.name).countsAhead !== undefined)) {
      const bound = Math.max(...results.main.map((row) => variantNamed(row.name).countsAhead ?? 0));
      lines.push(`Leased rows (\`consistency: 'leased'\`): the key's \`useCount\` counts the uses a process reserved, so it may run ahead of the requests answered by up to one lease; the check is that it never falls behind them and stays within ${fmtInt(bound)} of them, counted from the server's first request (the notes say how far ahead it ended).`, '');
    }
  }
  if (results.cold) {
    lines.push('## Cold path (first verification of a key, in process)', '');
    lines.push(markdownTable(
      [{ title: 'hashing' }, { title: 'first verify, median ms', right: true }, { title: 'min–max ms', right: true }, { title: 'then cached, median ms', right: true }, { title: 'samples', right: true }],
      results.cold.map((c) => [c.hashing, fmtMs(c.firstMs.median), `${fmtMs(c.firstMs.min)}–${fmtMs(c.firstMs.max)}`, fmtMs(c.warmMs.median), String(c.samples)]),
    ), '');
  }
  if (results.scale || results.heap) lines.push('## Scale: MemoryStore with many keys', '');
  if (results.scale) {
    lines.push(markdownTable(
      [{ title: 'server' }, { title: 'keys', right: true }, { title: 'req/s', right: true }, { title: 'p50 ms', right: true }, { title: 'p99 ms', right: true }, { title: 'server heap MB', right: true }],
      results.scale.rows.map((r) => [r.name, fmtInt(r.keys), fmtInt(r.rps), fmtMs(r.p50), fmtMs(r.p99), fmtInt(r.heapUsedMB)]),
    ), '');
    lines.push(`Ratio 1M keys / 10 keys: **${fmtRatio(results.scale.ratio)}**.`, '');
  }
  if (results.heap) {
    lines.push(markdownTable(
      [{ title: 'how the keys were added' }, { title: 'keys', right: true }, { title: 'heap bytes / key', right: true }, { title: 'RSS bytes / key', right: true }, { title: 'µs / key', right: true }],
      results.heap.map((h) => [h.kind, fmtInt(h.keys), fmtInt(h.heapBytesPerKey), fmtInt(h.rssBytesPerKey), fmt(h.microsPerKey, 1)]),
    ), '');
    const gc = results.heap.find((h) => Number.isFinite(h.gcPauseMs));
    if (gc) {
      lines.push(`GC pause at ${keysLabel(gc.keys)} keys: **${fmtMs(gc.gcPauseMs)} ms** (empty store: ${fmtMs(gc.gcPauseEmptyMs)} ms). Median of ${gc.gcSamplesMs.full.length} forced full GCs (\`gc()\`, a stop-the-world mark-compact, timed on the main thread) with the ${fmtInt(gc.keys)} keys of the ${gc.kind} measurement in the store, and of as many with the same store holding one key before the fill; samples ${gc.gcSamplesMs.full.join(', ')} ms / ${gc.gcSamplesMs.empty.join(', ')} ms.`, '');
    }
  }
  if (results.attack) {
    const shown = PLACEMENTS.map((name) => results.attack[name]);
    const cell = (a, value) => (a.notMeasured ? 'not measured' : value(a));
    const row = (title, value) => [title, ...shown.map((a) => cell(a, value))];
    lines.push('## Under a wrong-secret flood', '');
    lines.push(markdownTable(
      [{ title: '' }, ...shown.map((a) => ({ title: a.title, right: true }))],
      [
        row('legitimate client alone, req/s', (a) => fmtInt(a.alone.rps)),
        row('… p50 / p99 ms', (a) => `${fmtMs(a.alone.p50)} / ${fmtMs(a.alone.p99)}`),
        row('legitimate client with the flood, req/s', (a) => fmtInt(a.flood.rps)),
        row('… p50 / p99 ms', (a) => `${fmtMs(a.flood.p50)} / ${fmtMs(a.flood.p99)}`),
        row('**ratio** (target ≥ 0.80)', (a) => `**${fmtRatio(a.ratio)}**`),
        row('per round, alone / with the flood, req/s', (a) => `${a.alone.rounds.map((r) => fmtInt(r.rps)).join(', ')} / ${a.flood.rounds.map((r) => fmtInt(r.rps)).join(', ')}`),
        row('flood: answers/s; 401 (bcrypt compare) per round', (a) => `${fmtInt(a.flood.floodRps)}; ${fmtInt(a.flood.flood401PerRound)}`),
        row('flood: status codes (first round)', (a) => statusCounts(a.flood.floodStatusCodes)),
        row('hashing thread(s): count, core, CPU during the flood', (a) => `${a.flood.hashThreads}, core ${a.flood.hashThreadCores || '?'}, ${fmt(a.flood.hashCpuPct, 0)}% of a core`),
        row('server core / load core busy during the flood', (a) => `${fmt(a.flood.serverCoreBusyPct, 0)}% / ${fmt(a.flood.loadCoreBusyPct, 0)}%`),
      ],
    ), '');
    for (const a of shown) {
      if (a.notMeasured) lines.push(`${a.title}: not measured: ${a.notMeasured}.`, '');
      else if (a.problems.length > 0) lines.push(`${a.title}: ${a.problems.join('; ')}.`, '');
      const disturbed = a.notMeasured ? 0 : [...a.alone.rounds, ...a.flood.rounds].filter((r) => r.disturbed !== undefined).length;
      if (disturbed > 0) lines.push(`${a.title}: ${disturbed} of its rounds were disturbed by other processes even when run again.`, '');
    }
    lines.push(`Each round is a fresh keygate-memory server (the key is bcrypt-hashed; keygate's default hashing pool). The flood: ${m.config.floodConnections} connections, ${fmtInt(m.config.wrongKeys)} distinct well-formed keys with the legitimate key's keyPrefix and wrong secrets; each 401 is a refusal after a full bcrypt compare, the rest are refused with 429 by the failure budget. Placement (a) is how every other phase runs: the server process on core ${m.pinning.serverCore ?? 0}, its threads with it. In (b) the threads the server started after it began (keygate's hashing pool; every thread of a Node 20 process is called "node", so the moment a thread appeared is what tells it apart) are moved with \`taskset -p\` to core ${m.pinning.loadCore ?? 1}, the only other core here, **which the load generator (the legitimate client's and the flood's autocannon) also uses**: the hash thread does not have a core to itself as it would on a bigger machine, and its compares take time from the load generator.`, '');
  }
  if (results.profile) {
    const p = results.profile;
    lines.push('## Profile of the MemoryStore warm path', '');
    lines.push(`V8 sampling profiler (${m.config.profileInterval} µs) over ${m.config.profileDuration} s of load after warm-up, ${fmtInt(p.rpsUnderProfiler)} req/s under the profiler. Busy ${fmtInt(p.busyMs)} ms, idle ${fmtInt(p.idleMs)} ms. keygate's own share (its code and what it calls — node:crypto, lru-cache, ipaddr.js — not the app after \`next()\`): ${fmt(p.keygateOwnPct, 1)}% of busy time; GC and other work outside any JavaScript frame: ${fmt(p.unownedPct, 1)}%. Profile: \`${p.path}\`.`, '');
    const c = p.comparison;
    lines.push(`CPU per request: bare ${fmt(c.baseUsPerRequest, 1)} µs, keygate-memory ${fmt(c.subjectUsPerRequest, 1)} µs (+${fmt(c.subjectUsPerRequest - c.baseUsPerRequest, 1)} µs); keygate's own code and what it calls: ${fmt(c.keygateOwnUsPerRequest, 1)} µs.`, '');
    lines.push('Where the extra microseconds per request go (self time per request, keygate-memory − bare):', '');
    lines.push(markdownTable(
      [{ title: 'package' }, { title: 'bare µs/req', right: true }, { title: 'keygate µs/req', right: true }, { title: 'Δ µs/req', right: true }],
      c.byPackage.filter((x) => Math.abs(x.deltaUs) >= 0.1).map((x) => [x.pkg, fmt(x.baseUs, 2), fmt(x.subjectUs, 2), fmt(x.deltaUs, 2)]),
    ), '');
    lines.push(markdownTable(
      [{ title: 'function (package, where)' }, { title: 'bare µs/req', right: true }, { title: 'keygate µs/req', right: true }, { title: 'Δ µs/req', right: true }],
      c.byFunction.map((x) => [x.function.replace(/\|/g, '\\|'), fmt(x.baseUs, 2), fmt(x.subjectUs, 2), fmt(x.deltaUs, 2)]),
    ), '');
    lines.push('Self time by package (keygate-memory):', '');
    lines.push(markdownTable([{ title: 'package' }, { title: 'self %', right: true }], p.packages.slice(0, 12).map((x) => [x.pkg, fmt(x.selfPct, 1)])), '');
    lines.push("keygate's functions by self time:", '');
    lines.push(markdownTable(
      [{ title: 'function' }, { title: 'where' }, { title: 'self %', right: true }, { title: 'total %', right: true }],
      p.keygateSelf.slice(0, 15).map((f) => [f.name, f.where, fmt(f.selfPct, 2), fmt(f.totalPct, 2)]),
    ), '');
    lines.push('Top functions overall by self time:', '');
    lines.push(markdownTable(
      [{ title: 'function' }, { title: 'package' }, { title: 'where' }, { title: 'self %', right: true }],
      p.topSelf.slice(0, 20).map((f) => [f.name, f.pkg, f.where, fmt(f.selfPct, 2)]),
    ), '');
  }
  if (results.targets) {
    lines.push('## Targets', '');
    if (m.config.quick) lines.push('**Quick run: these figures are a smoke test, not measurements.**', '');
    lines.push(markdownTable([{ title: 'target' }, { title: 'measured' }, { title: 'met' }], results.targets.map((t) => [t.target, t.figure, verdict(t, true)])), '');
  }
  lines.push(`Total run time: ${fmt(m.elapsedS / 60, 1)} min.`, '');
  return lines.join('\n');
}

function printSummary(results) {
  const out = [];
  if (results.main) out.push('', textTable(MAIN_COLUMNS, mainRows(results.main)));
  if (results.cold) out.push('', ...results.cold.map((c) => `cold path (${c.hashing}): first verification ${fmtMs(c.firstMs.median)} ms median (${fmtMs(c.firstMs.min)}–${fmtMs(c.firstMs.max)}), cached ${fmtMs(c.warmMs.median)} ms`));
  if (results.scale) out.push('', ...results.scale.rows.map((r) => `${r.name}: ${fmtInt(r.rps)} req/s (p99 ${fmtMs(r.p99)} ms)`), `1M keys / 10 keys: ${fmtRatio(results.scale.ratio)}`);
  if (results.heap) {
    out.push(...results.heap.map((h) => `heap per key (${h.kind}, ${fmtInt(h.keys)} keys): ${fmtInt(h.heapBytesPerKey)} B`));
    const gc = results.heap.find((h) => Number.isFinite(h.gcPauseMs));
    if (gc) out.push(`GC pause at ${keysLabel(gc.keys)} keys: ${fmtMs(gc.gcPauseMs)} ms (empty store: ${fmtMs(gc.gcPauseEmptyMs)} ms)`);
  }
  if (results.attack) {
    out.push('');
    for (const a of PLACEMENTS.map((name) => results.attack[name])) {
      out.push(
        a.notMeasured
          ? `wrong-secret flood, ${a.title}: not measured: ${a.notMeasured}`
          : `wrong-secret flood, ${a.title}: legitimate client alone ${fmtInt(a.alone.rps)} req/s, under the flood ${fmtInt(a.flood.rps)} req/s: ratio ${fmtRatio(a.ratio)}`,
      );
    }
  }
  if (results.profile) {
    const c = results.profile.comparison;
    out.push('', `profile: CPU per request bare ${fmt(c.baseUsPerRequest, 1)} µs, keygate-memory ${fmt(c.subjectUsPerRequest, 1)} µs (keygate's own code and callees ${fmt(c.keygateOwnUsPerRequest, 1)} µs); biggest increases per request:`);
    for (const x of c.byPackage.slice(0, 6)) out.push(`  ${fmt(x.deltaUs, 2).padStart(7)} µs  ${x.pkg}`);
    out.push(`keygate self time, top 10 (keygate's own share of busy time: ${fmt(results.profile.keygateOwnPct, 1)}%):`);
    for (const f of results.profile.keygateSelf.slice(0, 10)) out.push(`  ${fmt(f.selfPct, 2).padStart(6)}%  ${f.name}  ${f.where}`);
  }
  if (results.targets) {
    out.push('', cfg.quick ? 'targets (QUICK RUN: smoke-test figures, not measurements):' : 'targets:');
    for (const t of results.targets) out.push(`  [${verdict(t, false)}] ${t.target}: ${t.figure}`);
  }
  console.log(out.join('\n'));
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const t0 = performance.now();
  const outDir = resolve(ROOT, cfg.out);
  mkdirSync(outDir, { recursive: true });
  pruneLeftovers(join(HERE, 'results'));
  const dist = resolveDist();
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const infra = [];
  const results = {
    meta: {
      date: new Date().toISOString(),
      command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
      machine: machine(),
      pinning: plan,
      storeCore,
      keygate: { source: dist.source, commit: dist.commit, dirty: dist.dirty, version: JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version },
      versions: Object.fromEntries(PEER_PACKAGES.map((name) => [name, packageVersion(name)])),
      config: Object.fromEntries(Object.entries(cfg).filter(([k]) => !['skipPhases', 'onlyVariants'].includes(k))),
    },
  };
  try {
    const phases = PHASE_NAMES.filter((p) => !cfg.skipPhases.has(p));
    log(`keygate benchmark: ${dist.source}${dist.dirty ? ' (src/ has uncommitted changes)' : ''}; phases: ${phases.join(', ')}`);
    log(`machine: ${results.meta.machine.nproc} cores, ${results.meta.machine.cpuModel}, Node ${process.version}`);
    results.meta.foreignCpuAtStartPct = await waitForQuiet();

    const [peer, stranger] = await createdRecords(await importKeygate(dist.dir), 2);
    serverOptions = { dist: dist.dir, peerKey: peer.key, strangerKey: stranger.key };
    const { main, slow } = phases.includes('main') ? mainVariants() : { main: [], slow: [] };
    const needs = new Set([...main, ...slow].flatMap((v) => v.needs ?? []));
    if (needs.has('redis')) {
      const redis = await startRedis(plan, storeCore);
      infra.push(redis);
      serverOptions.redisUrl = redis.url;
      results.meta.versions['redis-server'] = redis.version;
      log(`redis-server on 127.0.0.1:${redis.port}`);
    }
    if (needs.has('postgres')) {
      try {
        const postgres = await startPostgres(plan, storeCore);
        infra.push(postgres);
        serverOptions.postgresUrl = postgres.connectionString;
        results.meta.versions.postgres = postgres.version;
        log(`PostgreSQL on 127.0.0.1:${postgres.port}`);
      } catch (error) {
        serverOptions.postgresSkip = `PostgreSQL did not start: ${error.message.split('\n')[0]}`;
        log(serverOptions.postgresSkip);
      }
    }

    const PHASES = {
      main: ['warm path, side by side', mainPhase],
      scale: ['scale: MemoryStore with many keys', scalePhase],
      attack: ['under a wrong-secret flood', attackPhase],
      cold: ['cold path', coldPhase],
      heap: ['heap per key', heapPhase],
      profile: ['profile of the MemoryStore warm path', () => profilePhase(dist.dir, outDir, stamp)],
    };
    for (const phase of phases) {
      const [title, run] = PHASES[phase];
      log(`\n== ${title} ==`);
      results[phase] = await run();
    }
    results.targets = targets(results);
  } finally {
    for (const service of infra.reverse()) await service.stop().catch(() => undefined);
    dist.cleanup();
  }
  results.meta.elapsedS = (performance.now() - t0) / 1000;
  const base = join(outDir, `bench-${stamp}`);
  writeFileSync(`${base}.json`, `${JSON.stringify(results, null, 2)}\n`);
  const markdown = markdownReport(results);
  writeFileSync(`${base}.md`, markdown);
  writeFileSync(join(outDir, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(join(outDir, 'latest.md'), markdown);
  printSummary(results);
  console.log(`\nresults: ${base}.json, ${base}.md (also latest.json / latest.md); ${fmt(results.meta.elapsedS / 60, 1)} min`);
}

/** Removes copies of builds left behind by an earlier run that was killed. */
function pruneLeftovers(outDir) {
  if (!existsSync(outDir)) return;
  for (const name of readdirSync(outDir)) if (name.startsWith('.keygate-')) rmSync(join(outDir, name), { recursive: true, force: true });
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
