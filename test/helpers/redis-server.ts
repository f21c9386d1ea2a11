/**
 * A real redis-server for the tests, on a free loopback port, started and stopped by the test.
 * When the binary is missing the suites say so loudly and skip; under CI=true that is a failure.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Redis, { type RedisOptions } from 'ioredis';

/** Where a test can find redis-server, or why it cannot. */
export function redisServerBinary(): string | null {
  const found = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  const path = found.stdout.trim();
  return found.status === 0 && path ? path : null;
}

/** `describe` when redis-server exists; otherwise a loud skip, or a failure under CI=true. */
export function describeWithRedis(name: string, body: () => void): void {
  if (redisServerBinary()) {
    describe(name, body);
    return;
  }
  const message = `redis-server not found: the Redis suite "${name}" cannot run. Install it (apt-get install -y redis-server).`;
  if (process.env.CI === 'true') {
    describe(name, () => {
      it('needs redis-server', () => {
        throw new Error(message);
      });
    });
    return;
  }
  // eslint-disable-next-line no-console
  console.warn(`\n*** SKIPPED: ${message}\n`);
  describe.skip(name, body);
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** A running redis-server that a test can stop and start again on the same port. */
export class RedisServer {
  private process: ChildProcess | undefined;

  private readonly directory = mkdtempSync(join(tmpdir(), 'keygate-redis-'));

  private constructor(
    readonly port: number,
    private readonly extraArguments: string[],
  ) {}

  /** Starts a server; `extraArguments` go to redis-server (e.g. `['--cluster-enabled', 'yes']`). */
  static async start(extraArguments: string[] = []): Promise<RedisServer> {
    const server = new RedisServer(await freePort(), extraArguments);
    await server.startProcess();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** A new ioredis client for this server, with the options keygate recommends. */
  client(options: RedisOptions = {}): Redis {
    return new Redis({ host: '127.0.0.1', port: this.port, autoResendUnfulfilledCommands: false, ...options });
  }

  async startProcess(): Promise<void> {
    const child = spawn(
      redisServerBinary() ?? 'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'yes', '--dir', this.directory, ...this.extraArguments],
      { stdio: 'ignore' },
    );
    this.process = child;
    const deadline = Date.now() + 10_000;
    while (!(await this.answersPing())) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`redis-server did not start on port ${this.port}`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  /** One raw PING over TCP: no client library, so nothing lingers after a failed attempt. */
  private answersPing(): Promise<boolean> {
    return new Promise((resolve) => {
      const socket = connect(this.port, '127.0.0.1');
      let reply = '';
      const finish = (ok: boolean) => {
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

  /** Kills the server at once (no save, no goodbye), as a crash would. */
  async kill(): Promise<void> {
    const child = this.process;
    this.process = undefined;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.directory, { recursive: true, force: true });
  }
}

/** A three-node Redis Cluster (no replicas) on free loopback ports, built with `redis-cli --cluster create`. */
export class RedisClusterServers {
  private constructor(readonly nodes: RedisServer[]) {}

  static async start(size = 3): Promise<RedisClusterServers> {
    const nodes = await Promise.all(Array.from({ length: size }, () => RedisServer.start(['--cluster-enabled', 'yes'])));
    const cluster = new RedisClusterServers(nodes);
    const created = spawnSync(
      'redis-cli',
      ['--cluster', 'create', ...nodes.map((node) => `127.0.0.1:${node.port}`), '--cluster-replicas', '0', '--cluster-yes'],
      { encoding: 'utf8', timeout: 30_000 },
    );
    if (created.status !== 0) {
      await cluster.stop();
      throw new Error(`redis-cli --cluster create failed: ${created.stdout}${created.stderr}`);
    }
    return cluster;
  }

  /** Startup nodes for an ioredis `Cluster`. */
  get startupNodes(): { host: string; port: number }[] {
    return this.nodes.map((node) => ({ host: '127.0.0.1', port: node.port }));
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.stop()));
  }
}
