/**
 * Several processes sharing keys and limits through Redis.
 *
 *   REDIS_URL=redis://127.0.0.1:6379 npx tsx examples/redis.ts     # WORKERS=4 PORT=3000 by default
 *
 * The primary process mints a demo key (maxUses 20, 5 requests per second), then forks WORKERS
 * Express servers sharing one port (node:cluster). Whichever worker answers, the limits are the
 * same: every worker counts in Redis, with one Lua script per request. A key revoked through any
 * process is refused by all of them within a second (publish/subscribe), not after a cache TTL.
 */
import cluster from 'node:cluster';
import express from 'express';
import Redis from 'ioredis';
import { keygate, requireScopes } from 'keygate';
import { RedisStore } from 'keygate/redis';

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const port = Number(process.env.PORT ?? 3000);
const workers = Number(process.env.WORKERS ?? 4);

function connect(): Redis {
  // Do not resend a command that was in flight when the connection dropped: a consume sent twice
  // would count twice. keygate refuses (503) while the connection is down instead.
  return new Redis(redisUrl, { autoResendUnfulfilledCommands: false });
}

function manager(redis: Redis) {
  return keygate({ store: new RedisStore({ client: redis }), prefix: 'pk_demo', hashing: 'sha256', pepper: process.env.KEYGATE_PEPPER ?? 'demo-pepper' });
}

async function primary(): Promise<void> {
  const redis = connect();
  const keys = manager(redis);
  const { key, apiKey } = await keys.create({ name: 'shared demo key', scopes: ['leads:read'], maxUses: 20, rateLimit: { perSecond: 5 } });
  for (let i = 0; i < workers; i++) cluster.fork({ KEYGATE_DEMO_ID: apiKey.id });
  console.log(`${workers} workers on http://localhost:${port}, sharing keys and counters through ${redisUrl}\n`);
  console.log(`Demo key: ${key}\n`);
  console.log('# 20 uses in all, whichever worker answers: the 21st and later get 403 usage_exhausted');
  console.log(`for i in $(seq 1 25); do curl -s -o /dev/null -w "%{http_code} " -H "Authorization: Bearer ${key}" http://localhost:${port}/leads; sleep 0.25; done; echo\n`);
  console.log('# Revoke it through the primary (type "r" + Enter here): every worker refuses it at once');
  process.stdin.on('data', async (line) => {
    if (line.toString().trim() === 'r') {
      await keys.revoke(apiKey.id);
      console.log('revoked; try the curl line again: 401 api_key_revoked');
    }
  });
  const stop = async () => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.kill();
    await keys.close();
    await redis.quit();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

function worker(): void {
  const redis = connect();
  const keys = manager(redis);
  const app = express();
  app.use(keys.authenticate());
  app.get('/leads', requireScopes('leads:read'), (req, res) => {
    res.json({ servedBy: process.pid, useCount: req.apiKey?.useCount });
  });
  app.listen(port);
}

if (cluster.isPrimary) {
  primary().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
} else {
  worker();
}
