/**
 * Every server the benchmark measures, in ONE place. Adding a server kind = adding one entry here.
 *
 * An entry is `{ name, group, label, needs, auth, build }`:
 * - `group`: `main` (the comparison table), `slow` (measured once, with its own durations),
 *   `scale` (1M keys vs 10), or `diagnostic` (not run by default: name them with `--only` to see
 *   what one feature costs).
 * - `needs`: infrastructure the parent must start first (`redis`, `postgres`); the parent passes
 *   its address in `ctx`.
 * - `auth`: true when the variant authenticates, so a wrong key must be refused (401): checked
 *   before measuring, so a variant that lets everything through cannot post a number.
 * - `build(ctx)`: runs in the server child process (bench/server.mjs), pinned to the server core.
 *   It imports its own dependencies (so the parent never loads them) and returns
 *   `{ middleware: RequestHandler[], key, wrongKey?, counted(): Promise<number>, close?(), info? }`.
 *   `counted()` is the variant's own count of admitted requests (keygate: the key's `useCount`),
 *   read before and after a measurement to prove the middleware really ran on every request.
 *
 * Every variant serves the same route (`GET /`) and the same small JSON, and every request carries
 * the same kind of `X-API-Key` header (bare and noop ignore it).
 */
import { createHash } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { PREFIX, hmacHash, mintLikeKeygate, randomBase62 } from './lib/keys.mjs';

/** Thrown by `build` when a variant cannot run here; the row reports the reason. */
export class SkipVariant extends Error {}

/** What every keygate key carries, so every check and every counter runs and nothing refuses. */
export function keySettings(now = Date.now()) {
  return {
    name: 'bench key',
    ownerId: 'user_42',
    tenantId: 'acme',
    environment: 'live',
    scopes: ['leads:read', 'leads:write', 'reports:*'],
    allowedIps: ['127.0.0.0/8', '::1', '::ffff:127.0.0.1/128'],
    maxUses: 1_000_000_000_000,
    rateLimit: { perSecond: 1_000_000_000, burst: 1_000_000_000, perDay: 1_000_000_000_000 },
    expiresAt: new Date(now + 365 * 86_400_000),
    metadata: { plan: 'pro' },
    tags: ['bench'],
  };
}

/** The scopes every keygate variant's route requires. */
export const REQUIRED_SCOPES = ['leads:read'];

function keygateModule(ctx, entry = 'index') {
  return import(pathToFileURL(join(ctx.dist, 'esm', `${entry}.js`)).href);
}

/** A flat (sequential) copy of a string, as a driver or JSON.parse would hand it over. */
function flat(text) {
  return Buffer.from(text, 'latin1').toString('latin1');
}

/**
 * Inserts `count` filler records straight through the store (not `keys.create`, which would hash,
 * validate and mint a million times: ~70 µs a key). Each is a copy of `template` with its own id,
 * keyPrefix (a random 4-character tag + a base62 counter: 16 characters, unique) and HMAC-SHA-256
 * hash, all flat strings, as a database or JSON would give them.
 */
export async function insertFiller(store, template, count) {
  const { randomUUID } = await import('node:crypto');
  const tag = randomBase62(4);
  const digits = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  for (let i = 0; i < count; i++) {
    let counter = '';
    for (let rest = i; counter.length < 12; rest = Math.floor(rest / 62)) counter = digits[rest % 62] + counter;
    const createdAt = new Date(template.createdAt.getTime() + i);
    await store.insert({
      ...template,
      id: flat(randomUUID()),
      keyPrefix: flat(`${PREFIX}_${tag}${counter}`),
      keyHash: flat(hmacHash(`${tag}${i}`, 'bench-pepper')),
      createdAt,
      updatedAt: createdAt,
      useCount: 0,
    });
  }
}

/** A keygate server: one `authenticate({ scopes })` in front of the route, a fully configured key. */
async function keygateVariant(ctx, { store, close, hashing, cache, fillerKeys = 0, stats, settings = keySettings(), authenticate = {} }) {
  const { keygate } = await keygateModule(ctx);
  const keys = keygate({
    store,
    prefix: PREFIX,
    ...(hashing ? { hashing, pepper: 'bench-pepper' } : {}),
    ...(cache === undefined ? {} : { cache }),
  });
  const { key, apiKey } = await keys.create(settings);
  if (fillerKeys > 0) {
    const started = performance.now();
    const template = { ...(await store.findById(apiKey.id)), status: 'active', revokedAt: null, lastUsedAt: null };
    await insertFiller(store, template, fillerKeys);
    ctx.info.fillerInsertMs = Math.round(performance.now() - started);
  }
  ctx.info.storeSize = store.size;
  return {
    middleware: [keys.authenticate({ scopes: REQUIRED_SCOPES, ...authenticate })],
    key,
    wrongKey: mintLikeKeygate().key,
    counted: async () => (await keys.get(apiKey.id))?.useCount ?? Number.NaN,
    stats,
    close: async () => {
      await keys.close();
      await close?.();
    },
  };
}

async function memoryStore(ctx) {
  const { MemoryStore } = await keygateModule(ctx);
  return new MemoryStore();
}

async function redisClient(ctx) {
  if (!ctx.redisUrl) throw new SkipVariant('no redis-server');
  const { default: Redis } = await import('ioredis');
  const client = new Redis(ctx.redisUrl, { autoResendUnfulfilledCommands: false, lazyConnect: true });
  await client.connect();
  return client;
}

/** Counts the commands an ioredis client sends (each one a request/response with Redis). */
function countRedisCommands(client) {
  const counter = { storeCalls: 0 };
  const send = client.sendCommand.bind(client);
  client.sendCommand = (command, ...rest) => {
    counter.storeCalls++;
    return send(command, ...rest);
  };
  return () => ({ ...counter });
}

/** Counts the statements a pg Pool runs. */
function countPoolQueries(pool) {
  const counter = { storeCalls: 0 };
  const query = pool.query.bind(pool);
  pool.query = (...args) => {
    counter.storeCalls++;
    return query(...args);
  };
  return () => ({ ...counter });
}

/** A hand-written principal for the peers, looked up by key (or by its digest). */
function principal() {
  return { id: 'user_42', scopes: ['leads:read', 'leads:write'] };
}

function headerKey(req) {
  return req.headers['x-api-key'];
}

/** The rate-limiter peers count per key: a window far longer than the run, a limit never reached. */
const PEER_LIMIT = 1_000_000_000;
const PEER_WINDOW_S = 24 * 3600;

export const VARIANTS = [
  {
    name: 'bare',
    group: 'main',
    label: 'Express 5, no middleware (reference)',
    async build() {
      return { middleware: [], key: mintLikeKeygate().key };
    },
  },
  {
    name: 'noop',
    group: 'main',
    label: 'one app.use() that calls next()',
    async build() {
      let counted = 0;
      return {
        middleware: [
          (req, res, next) => {
            counted++;
            next();
          },
        ],
        key: mintLikeKeygate().key,
        counted: async () => counted,
      };
    },
  },
  {
    name: 'noop-async',
    group: 'diagnostic',
    label: 'one app.use() that calls next() after an awaited promise (the cost of one async hop)',
    async build() {
      let counted = 0;
      return {
        middleware: [
          (req, res, next) => {
            Promise.resolve().then(() => {
              counted++;
              next();
            });
          },
        ],
        key: mintLikeKeygate().key,
        counted: async () => counted,
      };
    },
  },
  {
    name: 'keygate-memory',
    group: 'main',
    label: 'keygate, MemoryStore, warm path, every check and counter',
    auth: true,
    async build(ctx) {
      return keygateVariant(ctx, { store: await memoryStore(ctx) });
    },
  },
  {
    name: 'keygate-redis',
    group: 'main',
    label: 'keygate, RedisStore (ioredis), warm path',
    needs: ['redis'],
    auth: true,
    async build(ctx) {
      const { RedisStore } = await keygateModule(ctx, 'redis');
      const client = await redisClient(ctx);
      const store = new RedisStore({ client, keyPrefix: `bench:${process.pid}:` });
      const stats = countRedisCommands(client);
      return keygateVariant(ctx, { store, stats, close: () => client.quit() });
    },
  },
  {
    name: 'keygate-postgres',
    group: 'main',
    label: 'keygate, SqlStore on PostgreSQL (pg Pool), warm path',
    needs: ['postgres'],
    auth: true,
    async build(ctx) {
      if (!ctx.postgresUrl) throw new SkipVariant(ctx.postgresSkip ?? 'no PostgreSQL');
      let SqlStore;
      try {
        ({ SqlStore } = await keygateModule(ctx, 'sql'));
      } catch (error) {
        throw new SkipVariant(`SqlStore not available (${error.message})`);
      }
      const { default: pg } = await import('pg');
      const pool = new pg.Pool({ connectionString: ctx.postgresUrl, max: 10, statement_timeout: 5_000 });
      pool.on('error', () => undefined);
      let store;
      try {
        store = new SqlStore({ dialect: 'postgres', client: pool });
        await store.migrate();
      } catch (error) {
        await pool.end();
        throw new SkipVariant(`SqlStore not available (${error.message})`);
      }
      return keygateVariant(ctx, { store, stats: countPoolQueries(pool), close: () => pool.end() });
    },
  },
  {
    name: 'keygate-sha256-nocache',
    group: 'main',
    label: "keygate, MemoryStore, hashing 'sha256', cache: false (lookup + HMAC every request)",
    auth: true,
    async build(ctx) {
      return keygateVariant(ctx, { store: await memoryStore(ctx), hashing: 'sha256', cache: false });
    },
  },
  {
    name: 'passport-headerapikey',
    group: 'main',
    label: 'passport + passport-headerapikey, key looked up in a Map',
    auth: true,
    async build() {
      const { default: passport } = await import('passport');
      const headerapikey = await import('passport-headerapikey');
      const HeaderAPIKeyStrategy = headerapikey.HeaderAPIKeyStrategy ?? headerapikey.default.HeaderAPIKeyStrategy;
      const { key } = mintLikeKeygate();
      const principals = new Map([[key, principal()]]);
      let counted = 0;
      passport.use(
        new HeaderAPIKeyStrategy({ header: 'X-API-Key', prefix: '' }, false, (apiKey, done) => {
          const user = principals.get(apiKey);
          if (user) counted++;
          done(null, user ?? false);
        }),
      );
      return {
        middleware: [passport.initialize(), passport.authenticate('headerapikey', { session: false })],
        key,
        wrongKey: mintLikeKeygate().key,
        counted: async () => counted,
      };
    },
  },
  {
    name: 'express-rate-limit-memory',
    group: 'main',
    label: 'express-rate-limit keyed by the key, MemoryStore (no authentication)',
    async build() {
      const { rateLimit } = await import('express-rate-limit');
      const { key } = mintLikeKeygate();
      const limiter = rateLimit({
        windowMs: PEER_WINDOW_S * 1000,
        limit: PEER_LIMIT,
        keyGenerator: (req) => headerKey(req) ?? '',
        standardHeaders: 'draft-8',
        legacyHeaders: false,
      });
      return { middleware: [limiter], key, counted: async () => (await limiter.getKey(key))?.totalHits ?? 0 };
    },
  },
  {
    name: 'express-rate-limit-redis',
    group: 'main',
    label: 'express-rate-limit keyed by the key, rate-limit-redis (ioredis)',
    needs: ['redis'],
    async build(ctx) {
      const { rateLimit } = await import('express-rate-limit');
      const { RedisStore } = await import('rate-limit-redis');
      const client = await redisClient(ctx);
      const { key } = mintLikeKeygate();
      const limiter = rateLimit({
        windowMs: PEER_WINDOW_S * 1000,
        limit: PEER_LIMIT,
        keyGenerator: (req) => headerKey(req) ?? '',
        standardHeaders: 'draft-8',
        legacyHeaders: false,
        store: new RedisStore({ sendCommand: (command, ...args) => client.call(command, ...args), prefix: `erl:${process.pid}:` }),
      });
      return {
        middleware: [limiter],
        key,
        stats: countRedisCommands(client),
        counted: async () => (await limiter.getKey(key))?.totalHits ?? 0,
        close: () => client.quit(),
      };
    },
  },
  {
    name: 'rate-limiter-flexible-memory',
    group: 'main',
    label: 'rate-limiter-flexible RateLimiterMemory keyed by the key, as middleware (no authentication)',
    async build() {
      const { RateLimiterMemory } = await import('rate-limiter-flexible');
      const { key } = mintLikeKeygate();
      const limiter = new RateLimiterMemory({ points: PEER_LIMIT, duration: PEER_WINDOW_S });
      return {
        middleware: [rateLimiterFlexibleMiddleware(limiter)],
        key,
        counted: async () => (await limiter.get(key))?.consumedPoints ?? 0,
      };
    },
  },
  {
    name: 'rate-limiter-flexible-redis',
    group: 'main',
    label: 'rate-limiter-flexible RateLimiterRedis (ioredis) keyed by the key, as middleware',
    needs: ['redis'],
    async build(ctx) {
      const { RateLimiterRedis } = await import('rate-limiter-flexible');
      const client = await redisClient(ctx);
      const { key } = mintLikeKeygate();
      const limiter = new RateLimiterRedis({ storeClient: client, points: PEER_LIMIT, duration: PEER_WINDOW_S, keyPrefix: `rlf:${process.pid}` });
      return {
        middleware: [rateLimiterFlexibleMiddleware(limiter)],
        key,
        stats: countRedisCommands(client),
        counted: async () => (await limiter.get(key))?.consumedPoints ?? 0,
        close: () => client.quit(),
      };
    },
  },
  {
    name: 'hand-cached-sha256',
    group: 'main',
    label: 'hand-written auth: sha256 digest of the key looked up in a Map',
    auth: true,
    async build() {
      const { key } = mintLikeKeygate();
      const digest = (text) => createHash('sha256').update(text).digest('hex');
      const principals = new Map([[digest(key), principal()]]);
      let counted = 0;
      return {
        middleware: [
          (req, res, next) => {
            const presented = headerKey(req);
            const user = typeof presented === 'string' ? principals.get(digest(presented)) : undefined;
            if (!user) {
              res.status(401).json({ error: 'invalid_api_key' });
              return;
            }
            req.user = user;
            counted++;
            next();
          },
        ],
        key,
        wrongKey: mintLikeKeygate().key,
        counted: async () => counted,
      };
    },
  },
  {
    name: 'hand-bcrypt-per-request',
    group: 'slow',
    label: 'hand-written auth: bcryptjs compare (cost 10) on every request',
    auth: true,
    async build() {
      const { default: bcrypt } = await import('bcryptjs');
      const { key, keyPrefix } = mintLikeKeygate();
      const records = new Map([[keyPrefix, { hash: await bcrypt.hash(key, 10), user: principal() }]]);
      let counted = 0;
      return {
        middleware: [
          (req, res, next) => {
            const presented = headerKey(req);
            const record = typeof presented === 'string' ? records.get(presented.slice(0, presented.lastIndexOf('_'))) : undefined;
            if (!record) {
              res.status(401).json({ error: 'invalid_api_key' });
              return;
            }
            bcrypt.compare(presented, record.hash).then((ok) => {
              if (!ok) {
                res.status(401).json({ error: 'invalid_api_key' });
                return;
              }
              req.user = record.user;
              counted++;
              next();
            }, next);
          },
        ],
        key,
        // Same keyPrefix, wrong secret: reaches the compare.
        wrongKey: `${keyPrefix}_${randomBase62(38)}`,
        counted: async () => counted,
      };
    },
  },
  {
    name: 'noop-ratelimit-headers',
    group: 'diagnostic',
    label: "one app.use() that sets keygate's two RateLimit header fields (same values) and calls next()",
    async build() {
      let counted = 0;
      return {
        middleware: [
          (req, res, next) => {
            res.setHeader('RateLimit-Policy', '"second";q=1000000000;w=1, "day";q=1000000000000;w=86400');
            res.setHeader('RateLimit', '"second";r=999999999;t=1');
            counted++;
            next();
          },
        ],
        key: mintLikeKeygate().key,
        counted: async () => counted,
      };
    },
  },
  {
    name: 'keygate-memory-no-headers',
    group: 'diagnostic',
    label: 'keygate-memory with rateLimitHeaders: false',
    auth: true,
    async build(ctx) {
      return keygateVariant(ctx, { store: await memoryStore(ctx), authenticate: { rateLimitHeaders: false } });
    },
  },
  {
    name: 'keygate-memory-plain-key',
    group: 'diagnostic',
    label: 'keygate-memory, a key with scopes only (no allowlist, limits, expiry)',
    auth: true,
    async build(ctx) {
      return keygateVariant(ctx, { store: await memoryStore(ctx), settings: { name: 'plain', scopes: ['leads:read'] } });
    },
  },
  {
    name: 'keygate-memory-no-scopes-route',
    group: 'diagnostic',
    label: 'keygate-memory, authenticate() without route scopes',
    auth: true,
    async build(ctx) {
      const built = await keygateVariant(ctx, { store: await memoryStore(ctx), authenticate: { scopes: [] } });
      return built;
    },
  },
  ...[
    ['keygate-memory-10keys', 10],
    ['keygate-memory-1Mkeys', 1_000_000],
  ].map(([name, total]) => ({
    name,
    group: 'scale',
    label: `keygate-memory with ${total.toLocaleString('en-US')} keys in the store`,
    auth: true,
    keys: total,
    async build(ctx) {
      const count = (ctx.options.keys ?? total) - 1;
      return keygateVariant(ctx, { store: await memoryStore(ctx), fillerKeys: count });
    },
  })),
];

function rateLimiterFlexibleMiddleware(limiter) {
  return (req, res, next) => {
    limiter.consume(headerKey(req) ?? '').then(
      () => next(),
      () => res.status(429).send('Too Many Requests'),
    );
  };
}

export function variantNamed(name) {
  const variant = VARIANTS.find((candidate) => candidate.name === name);
  if (!variant) throw new Error(`unknown variant ${name}; known: ${VARIANTS.map((v) => v.name).join(', ')}`);
  return variant;
}
