import type Redis from 'ioredis';
import { describeStoreContract } from 'keygate/testing';
import { RedisStore } from 'keygate/redis';
import { describeWithRedis, RedisServer } from '../helpers/redis-server';

// The contract every store passes, against a real redis-server. Each test gets its own namespace
// on a shared server, so tests never see each other's records.
describeWithRedis('RedisStore contract', () => {
  let server: RedisServer;
  let client: Redis;
  let namespace = 0;

  beforeAll(async () => {
    server = await RedisServer.start();
    client = server.client();
    await new Promise((resolve) => client.once('ready', resolve));
  });

  afterAll(async () => {
    await client?.quit();
    await server?.stop();
  });

  describeStoreContract('RedisStore', {
    create: () => new RedisStore({ client, keyPrefix: `contract${++namespace}:` }),
    capabilities: { subscribe: true, concurrency: true, audit: true, usage: true, alerts: true, leases: true },
    // A few hundred sequences cost well under a second here (KEYGATE_AGREEMENT_RUNS overrides).
    agreement: { numRuns: 200 },
  });
});
