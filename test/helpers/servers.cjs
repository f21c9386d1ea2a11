'use strict';
/**
 * Throw-away redis-server and PostgreSQL instances on loopback: how the tests
 * (test/helpers/redis-server.ts, test/helpers/postgres-server.ts) and the benchmark
 * (bench/lib/infra.mjs) start and stop them. One implementation, in plain CommonJS so that both
 * ts-jest (CommonJS) and the benchmark (plain Node ESM) load it as it is. Types: servers.d.cts.
 *
 * `wrap(command, args)` lets a caller change how a server is launched (the benchmark pins it to a
 * core with taskset); by default it runs as is. Every server still running when this process
 * exits is killed and its folder removed.
 */
const { execFileSync, spawn, spawnSync } = require('node:child_process');
const { chownSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync } = require('node:fs');
const { connect, createServer } = require('node:net');
const { tmpdir } = require('node:os');
const { delimiter, join } = require('node:path');
const { setTimeout: delay } = require('node:timers/promises');

const HOST = '127.0.0.1';
const asIs = (command, args) => ({ command, args });

/** A port nobody listens on right now, found by binding port 0 on 127.0.0.1. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** Servers started here and still running: killed (and their folder removed) if this process exits. */
const running = new Set();
let exitHookInstalled = false;

function track(child, exitSignal, directory) {
  const entry = { child, exitSignal, directory };
  running.add(entry);
  child.once('exit', () => running.delete(entry));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const { child: server, exitSignal: signal, directory: folder } of running) {
        try {
          server.kill(signal);
        } catch {
          // already gone
        }
        rmSync(folder, { recursive: true, force: true });
      }
    });
  }
}

/** Stops `child` with `signal`, then `fallbackSignal` after `timeoutMs`; resolves when it has exited. */
async function stopProcess(child, signal, { fallbackSignal = 'SIGKILL', timeoutMs = 10_000 } = {}) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill(fallbackSignal), timeoutMs);
  await exited;
  clearTimeout(timer);
}

/**
 * Polls `ready()` until it is true; rejects (after killing `child`) when the server exits first or
 * `timeoutMs` passes, with `describe()` in the message.
 */
async function waitUntilReady(child, name, ready, { timeoutMs, pollMs, describe = () => '' }) {
  const deadline = Date.now() + timeoutMs;
  while (!(await ready())) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      await stopProcess(child, 'SIGKILL');
      throw new Error(`${name} did not become ready${describe()}`);
    }
    await delay(pollMs);
  }
}

// ---------------------------------------------------------------------------------------------
// redis-server

/** The path of redis-server, or null when it is not installed. */
function redisServerBinary() {
  const found = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  const path = found.stdout.trim();
  return found.status === 0 && path ? path : null;
}

/** One raw PING over TCP: no client library, so nothing lingers after a failed attempt. */
function answersPing(port) {
  return new Promise((resolve) => {
    const socket = connect(port, HOST);
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
 * Starts redis-server on 127.0.0.1:`port`, no persistence, `directory` as its working folder,
 * `args` appended (e.g. `['--cluster-enabled', 'yes']`); resolves once it answers PING.
 */
async function spawnRedis({ port, directory, args = [], wrap = asIs }) {
  const binary = redisServerBinary();
  if (!binary) throw new Error('redis-server not found: install it (apt-get install -y redis-server)');
  const launch = wrap(binary, [
    '--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--protected-mode', 'yes', '--dir', directory, ...args,
  ]);
  const child = spawn(launch.command, launch.args, { stdio: 'ignore' });
  track(child, 'SIGKILL', directory);
  await waitUntilReady(child, `redis-server on port ${port}`, () => answersPing(port), { timeoutMs: 10_000, pollMs: 25 });
  return child;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: initdb into a temporary folder, trust authentication on 127.0.0.1, fsync off.

/** The folder holding `initdb` and `postgres`, or null. `KEYGATE_PG_BIN` picks a particular build. */
function findPostgresBinaries() {
  const candidates = [];
  if (process.env.KEYGATE_PG_BIN) candidates.push(process.env.KEYGATE_PG_BIN);
  candidates.push('/usr/lib/postgresql/15/bin');
  try {
    const majors = readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a));
    for (const major of majors) candidates.push(`/usr/lib/postgresql/${major}/bin`);
  } catch {
    // not a Debian-style layout
  }
  candidates.push('/usr/local/pgsql/bin', ...(process.env.PATH ?? '').split(delimiter).filter(Boolean));
  return candidates.find((dir) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres'))) ?? null;
}

/** PostgreSQL refuses to run as root: as root, its processes run as the `postgres` OS user. */
function serverIdentity() {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    throw new Error('running as root, but there is no `postgres` OS user to run the PostgreSQL server as');
  }
}

/** A fresh data directory (initdb) in a new temporary folder: what `spawnPostgres` starts. */
function initPostgres() {
  const bin = findPostgresBinaries();
  if (!bin) {
    throw new Error('PostgreSQL binaries (initdb, postgres) not found: apt-get install postgresql-15, or set KEYGATE_PG_BIN to their folder');
  }
  const identity = serverIdentity();
  const dir = mkdtempSync(join(tmpdir(), 'keygate-pg-'));
  if (identity) chownSync(dir, identity.uid, identity.gid);
  const data = join(dir, 'data');
  execFileSync(join(bin, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync'], {
    ...identity,
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, LC_ALL: 'C.UTF-8' },
  });
  return { bin, dir, data, log: join(dir, 'server.log'), identity };
}

/** Can a client run `SELECT 1` on this server now? */
async function answersQuery(port) {
  const { Client } = require('pg');
  const client = new Client({ host: HOST, port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 1_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    await client.end();
    return true;
  } catch {
    await client.end().catch(() => undefined);
    return false;
  }
}

/**
 * Starts the server of `cluster` (from `initPostgres`) on 127.0.0.1:`port`; resolves once it
 * answers a query. Stop it with `stopProcess(child, 'SIGINT')` (fast shutdown: sessions are cut).
 */
async function spawnPostgres(cluster, { port, wrap = asIs }) {
  const { bin, dir, data, log, identity } = cluster;
  const out = openSync(log, 'a');
  const launch = wrap(join(bin, 'postgres'), [
    '-D', data, '-p', String(port), '-k', dir, '-c', `listen_addresses=${HOST}`,
    '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200',
  ]);
  const child = spawn(launch.command, launch.args, { ...identity, cwd: dir, stdio: ['ignore', out, out] });
  closeSync(out);
  track(child, 'SIGQUIT', dir);
  await waitUntilReady(child, `PostgreSQL on port ${port}`, () => answersQuery(port), {
    timeoutMs: 30_000,
    pollMs: 50,
    describe: () => `:\n${existsSync(log) ? readFileSync(log, 'utf8').slice(-2_000) : '(no log)'}`,
  });
  return child;
}

module.exports = { HOST, findPostgresBinaries, freePort, initPostgres, redisServerBinary, spawnPostgres, spawnRedis, stopProcess };
