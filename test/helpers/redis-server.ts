/**
 * A real redis-server for the tests, on a free loopback port, started and stopped by the test.
 * When the binary is missing the suites say so loudly and skip; under CI=true that is a failure.
 */
import { type ChildProcess, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Redis, { Cluster, type RedisOptions } from 'ioredis';
import { HOST, freePort, redisServerBinary, spawnRedis, stopProcess } from './servers.cjs';

export { freePort, redisServerBinary };

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
  console.warn(`\n*** SKIPPED: ${message}\n`);
  describe.skip(name, body);
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
    return `redis://${HOST}:${this.port}`;
  }

  /** A new ioredis client for this server, with the options keygate recommends. */
  client(options: RedisOptions = {}): Redis {
    return new Redis({ host: HOST, port: this.port, autoResendUnfulfilledCommands: false, ...options });
  }

  async startProcess(): Promise<void> {
    this.process = await spawnRedis({ port: this.port, directory: this.directory, args: this.extraArguments });
  }

  /** Kills the server at once (no save, no goodbye), as a crash would. */
  async kill(): Promise<void> {
    const child = this.process;
    this.process = undefined;
    if (child) await stopProcess(child, 'SIGKILL');
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
      ['--cluster', 'create', ...nodes.map((node) => `${HOST}:${node.port}`), '--cluster-replicas', '0', '--cluster-yes'],
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
    return this.nodes.map((node) => ({ host: HOST, port: node.port }));
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.stop()));
  }
}

/** One command Redis ran: sent by a client, or run by a script inside Redis (`lua`). */
export interface MonitoredCommand {
  source: 'client' | 'lua';
  args: string[];
}

/**
 * Every command Redis ran while `body` ran, seen through MONITOR on `admin` (a connection of its
 * own). The monitor feed and the replies travel on different connections, so it waits a moment
 * for the feed to arrive.
 */
export async function commandsRunDuring(admin: Redis, body: () => Promise<unknown>): Promise<MonitoredCommand[]> {
  const monitor = await admin.monitor();
  const seen: MonitoredCommand[] = [];
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    seen.push({ source: source === 'lua' ? 'lua' : 'client', args: args.map(String) });
  });
  try {
    await body();
    await new Promise((resolve) => setTimeout(resolve, 100));
  } finally {
    monitor.disconnect();
  }
  return seen;
}

/** The names (lower case) of the commands clients sent while `body` ran, not those scripts ran. */
export async function clientCommandsDuring(admin: Redis, body: () => Promise<unknown>): Promise<string[]> {
  return (await commandsRunDuring(admin, body)).filter((command) => command.source === 'client').map((command) => String(command.args[0]).toLowerCase());
}

/** Every key matching `pattern` on these nodes, with its type's content, sorted by key: to compare before and after. */
export async function keyspaceOf(nodes: readonly Redis[], pattern: string): Promise<Record<string, unknown>> {
  const contents: Record<string, unknown> = {};
  for (const node of nodes) {
    for (const key of await node.keys(pattern)) {
      const type = await node.type(key);
      if (type === 'hash') contents[key] = await node.hgetall(key);
      else if (type === 'zset') contents[key] = await node.zrange(key, 0, -1, 'WITHSCORES');
      else if (type === 'string') contents[key] = await node.get(key);
      else contents[key] = type;
    }
  }
  return Object.fromEntries(Object.entries(contents).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** Resolves once an ioredis client (standalone or Cluster) is ready for commands. */
export async function ready(redis: Redis | Cluster): Promise<void> {
  if (redis.status !== 'ready') await new Promise((resolve) => redis.once('ready', resolve));
}

/** A deployment a suite runs against: the store's client, and plain clients on every node for inspection. */
export interface RedisDeployment<C extends Redis | Cluster> {
  client: () => C;
  nodes: () => Redis[];
}

/**
 * A standalone server for the enclosing `describe`: started, with a store client and an admin
 * client, before its tests; both quit and the server stopped after them.
 */
export function standaloneDeployment(): RedisDeployment<Redis> & { server: () => RedisServer } {
  let server: RedisServer;
  let client: Redis;
  let admin: Redis;
  beforeAll(async () => {
    server = await RedisServer.start();
    client = server.client();
    admin = server.client();
    await Promise.all([ready(client), ready(admin)]);
  });
  afterAll(async () => {
    await client?.quit();
    await admin?.quit();
    await server?.stop();
  });
  return { client: () => client, nodes: () => [admin], server: () => server };
}

/** A three-node Cluster for the enclosing `describe`, with a Cluster client and one client per node. */
export function clusterDeployment(): RedisDeployment<Cluster> & { servers: () => RedisClusterServers } {
  let servers: RedisClusterServers;
  let client: Cluster;
  let nodes: Redis[] = [];
  beforeAll(async () => {
    servers = await RedisClusterServers.start();
    client = new Cluster(servers.startupNodes, { redisOptions: { autoResendUnfulfilledCommands: false } });
    nodes = servers.nodes.map((node) => node.client());
    await Promise.all([ready(client), ...nodes.map(ready)]);
  }, 60_000);
  afterAll(async () => {
    await client?.quit();
    await Promise.all(nodes.map((node) => node.quit()));
    await servers?.stop();
  });
  return { client: () => client, nodes: () => nodes, servers: () => servers };
}
