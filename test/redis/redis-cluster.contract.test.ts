import { Cluster } from 'ioredis';
import { describeStoreContract } from 'keygate/testing';
import { RedisStore } from 'keygate/redis';
import { describeWithRedis, RedisClusterServers } from '../helpers/redis-server';

// The same contract on a real three-node Redis Cluster: every script touches one hash slot, and
// the writes that span slots still behave as the contract says.
describeWithRedis('RedisStore on Redis Cluster', () => {
  let servers: RedisClusterServers;
  let client: Cluster;
  let namespace = 0;

  beforeAll(async () => {
    servers = await RedisClusterServers.start();
    client = new Cluster(servers.startupNodes, { redisOptions: { autoResendUnfulfilledCommands: false } });
    await new Promise((resolve) => client.once('ready', resolve));
  }, 60_000);

  afterAll(async () => {
    await client?.quit();
    await servers?.stop();
  });

  describeStoreContract('RedisStore (Cluster)', {
    create: () => new RedisStore({ client, keyPrefix: `cluster${++namespace}:` }),
    capabilities: { subscribe: true, concurrency: true, audit: true, usage: true, alerts: true, leases: true },
    // A few hundred sequences cost well under a second here (KEYGATE_AGREEMENT_RUNS overrides).
    agreement: { numRuns: 200 },
  });
});
