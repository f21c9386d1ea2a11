/**
 * Every server the benchmark measures, in ONE place. Adding a server kind = adding one entry here.
 *
 * An entry is `{ name, group, label, needs, auth, peer, countsAhead, build }`:
 * - `group`: `main` (the comparison table), `slow` (measured once, with its own durations),
 *   `scale` (1M keys vs 10), or `diagnostic` (not run by default: name them with `--only` to see
 *   what one feature costs).
 * - `needs`: infrastructure the parent must start first (`redis`, `postgres`); the parent passes
 *   its address in `ctx`, with the run's options and two keys made by `keys.create` on a scratch
 *   store: `ctx.peerKey` (what the other servers accept) and `ctx.strangerKey` (known to no server).
 * - `auth`: true when the variant authenticates, so a wrong key must be refused (401): checked
 *   before measuring, so a variant that lets everything through cannot post a number.
 * - `peer`: true for what users would pick instead of keygate (the targets compare with these).
 * - `countsAhead`: how far the variant's counter may legitimately run ahead of the requests it
 *   answered (leased mode counts reserved units); without it the count must match exactly.
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
import { PEPPER, PREFIX, REQUIRED_SCOPES, fillStore, importKeygate, keySettings, wrongSecretsFor } from './lib/keys.mjs';

/** Thrown by `build` when a variant cannot run here; the row reports the reason. */
export class SkipVariant extends Error {}

/**
 * A keygate server: one `authenticate({ scopes })` in front of the route, a fully configured key.
 * A build that does not take one of `options` (a feature not built yet, or an older `--ref`)
 * makes the variant a skipped row that says so, not a failed run.
 */
async function keygateVariant(ctx, { store, close, hashing, cache, fillerKeys = 0, stats, settings = keySettings(), authenticate = {}, options = {} }) {
  const keygateModule = await importKeygate(ctx.dist);
  let keys;
  try {
    keys = keygateModule.keygate({
      store,
      prefix: PREFIX,
      ...(hashing ? { hashing, pepper: PEPPER } : {}),
      ...(cache === undefined ? {} : { cache }),
      ...options,
    });
  } catch (error) {
    // keygate() names an option it does not know: "keygate(): unsupported option `consistency`".
    const missing = error instanceof TypeError ? Object.keys(options).find((name) => error.message.includes(`unsupported option \`${name}\``)) : undefined;
    if (missing) throw new SkipVariant(`this keygate build has no \`${missing}\` option (${error.message})`);
    throw error;
  }
  const { key, apiKey } = await keys.create(settings);
  if (fillerKeys > 0) {
    const started = performance.now();
    await fillStore(keygateModule, store, settings, fillerKeys);
    ctx.info.fillerInsertMs = Math.round(performance.now() - started);
  }
  ctx.info.storeSize = store.size;
  return {
    middleware: [keys.authenticate({ scopes: REQUIRED_SCOPES, ...authenticate })],
    key,
    wrongKey: ctx.strangerKey,
    counted: async () => (await keys.get(apiKey.id))?.useCount ?? Number.NaN,
    stats,
    close: async () => {
      await keys.close();
      await close?.();
    },
  };
}

async function memoryStore(ctx) {
  const { MemoryStore } = await importKeygate(ctx.dist);
  return new MemoryStore();
}

/** Wraps `object[method]` to count its calls (each one a round trip to the store): `() => ({ storeCalls })`. */
function countCalls(object, method) {
  const counter = { storeCalls: 0 };
  const original = object[method].bind(object);
  object[method] = (...args) => {
    counter.storeCalls++;
    return original(...args);
  };
  return () => ({ ...counter });
}

/**
 * A variant on a fresh ioredis client (with `clientOptions` added to the bench's own): `build(client)`,
 * plus the client's command count and its closing. With `enableAutoPipelining` every command
 * still goes through `sendCommand` (the pipeline's flush calls it), so the count stays per command.
 */
async function onRedis(ctx, build, clientOptions = {}) {
  if (!ctx.redisUrl) throw new SkipVariant('no redis-server');
  const { default: Redis } = await import('ioredis');
  const client = new Redis(ctx.redisUrl, { autoResendUnfulfilledCommands: false, lazyConnect: true, ...clientOptions });
  await client.connect();
  const stats = countCalls(client, 'sendCommand');
  const close = () => client.quit();
  return { stats, close, ...(await build(client, { stats, close })) };
}

/** keygate on a RedisStore over a fresh ioredis client: `clientOptions` for ioredis, `options` for keygate(). */
async function keygateOnRedis(ctx, { clientOptions = {}, options = {} } = {}) {
  const { RedisStore } = await importKeygate(ctx.dist, 'redis');
  return onRedis(
    ctx,
    (client, { stats, close }) => keygateVariant(ctx, { store: new RedisStore({ client, keyPrefix: `bench:${process.pid}:` }), stats, close, options }),
    clientOptions,
  );
}

/** keygate on a SqlStore over a pg Pool on the run's PostgreSQL, `options` for keygate(). */
async function keygateOnPostgres(ctx, { options = {} } = {}) {
  if (!ctx.postgresUrl) throw new SkipVariant(ctx.postgresSkip ?? 'no PostgreSQL');
  const { default: pg } = await import('pg');
  const pool = new pg.Pool({ connectionString: ctx.postgresUrl, max: 10, statement_timeout: 5_000 });
  pool.on('error', () => undefined);
  let store;
  try {
    const { SqlStore } = await importKeygate(ctx.dist, 'sql');
    store = new SqlStore({ dialect: 'postgres', client: pool });
    await store.migrate();
  } catch (error) {
    await pool.end();
    throw new SkipVariant(`SqlStore not available (${error.message})`);
  }
  return keygateVariant(ctx, { store, stats: countCalls(pool, 'query'), close: () => pool.end(), options });
}

/**
 * Leased mode (`consistency: 'leased'`) counts a key's uses in the store when a process reserves
 * them, not when it spends them: `useCount` runs ahead of the requests answered by at most the
 * lease one process holds (its size adapts to the request rate and is capped), and never falls
 * behind them (that would be an over-admission, or a request the middleware did not count). With
 * one server process the runner checks, from the server's first request on, answered ≤ growth of
 * useCount ≤ answered + this bound; not per measurement, as a lease reserved before a measurement
 * pays for requests inside it, so a measurement alone can count fewer than it answered. The bound
 * is generous on purpose (a lease is capped far below it): it catches a counter that counts
 * something else, not a lease size.
 */
const LEASE_BOUND = 10_000;

const LEASED = { consistency: 'leased' };

/** A hand-written principal for the peers, looked up by key (or by its digest). */
const principal = () => ({ id: 'user_42', scopes: ['leads:read', 'leads:write'] });

const headerKey = (req) => req.headers['x-api-key'];

/** The rate-limiter peers count per key: a window far longer than the run, a limit never reached. */
const PEER_LIMIT = 1_000_000_000;
const PEER_WINDOW_S = 24 * 3600;

/** express-rate-limit keyed by the key, with `store` (its own MemoryStore when undefined). */
async function expressRateLimit(ctx, store) {
  const { rateLimit } = await import('express-rate-limit');
  const limiter = rateLimit({
    windowMs: PEER_WINDOW_S * 1000,
    limit: PEER_LIMIT,
    keyGenerator: (req) => headerKey(req) ?? '',
    standardHeaders: 'draft-8',
    legacyHeaders: false,
    ...(store ? { store } : {}),
  });
  return { middleware: [limiter], key: ctx.peerKey, counted: async () => (await limiter.getKey(ctx.peerKey))?.totalHits ?? 0 };
}

/**
 * A hand-written middleware that counts what it admits: `make(admit)` returns the middleware, which
 * calls `admit(next)` for a request it lets through.
 */
function counting(ctx, make, extra = {}) {
  let count = 0;
  const admit = (next) => {
    count++;
    next();
  };
  return { middleware: [make(admit)], key: ctx.peerKey, counted: async () => count, ...extra };
}

/** Refuses a request as the hand-written peers do. */
const refuse = (res) => res.status(401).json({ error: 'invalid_api_key' });

/** A rate-limiter-flexible limiter keyed by the key, as the usual `consume().then(next)` middleware. */
function rateLimiterFlexible(ctx, limiter) {
  return {
    middleware: [(req, res, next) => limiter.consume(headerKey(req) ?? '').then(() => next(), () => res.status(429).send('Too Many Requests'))],
    key: ctx.peerKey,
    counted: async () => (await limiter.get(ctx.peerKey))?.consumedPoints ?? 0,
  };
}

export const VARIANTS = [
  {
    name: 'bare',
    group: 'main',
    label: 'Express 5, no middleware (reference)',
    async build(ctx) {
      return { middleware: [], key: ctx.peerKey };
    },
  },
  {
    name: 'noop',
    group: 'main',
    label: 'one app.use() that calls next()',
    build: (ctx) => counting(ctx, (admit) => (req, res, next) => admit(next)),
  },
  {
    name: 'noop-async',
    group: 'diagnostic',
    label: 'one app.use() that calls next() after an awaited promise (the cost of one async hop)',
    build: (ctx) =>
      counting(ctx, (admit) => (req, res, next) => {
        Promise.resolve().then(() => admit(next));
      }),
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
    name: 'keygate-memory-usage',
    group: 'main',
    label: 'keygate-memory with usage analytics on (usage: true, flushed every 10 s)',
    auth: true,
    async build(ctx) {
      return keygateVariant(ctx, { store: await memoryStore(ctx), options: { usage: true } });
    },
  },
  {
    name: 'keygate-redis',
    group: 'main',
    label: 'keygate, RedisStore (ioredis), warm path',
    needs: ['redis'],
    auth: true,
    build: (ctx) => keygateOnRedis(ctx),
  },
  {
    // Issue 14: under 50 connections many EVALSHAs are in flight at once; ioredis can batch the
    // ones issued in the same tick into one write.
    name: 'keygate-redis-autopipeline',
    group: 'main',
    label: 'keygate-redis over an ioredis client with enableAutoPipelining: true',
    needs: ['redis'],
    auth: true,
    build: (ctx) => keygateOnRedis(ctx, { clientOptions: { enableAutoPipelining: true } }),
  },
  {
    name: 'keygate-redis-leased',
    group: 'main',
    label: "keygate-redis with consistency: 'leased' (uses reserved in batches, spent locally)",
    needs: ['redis'],
    auth: true,
    countsAhead: LEASE_BOUND,
    build: (ctx) => keygateOnRedis(ctx, { options: LEASED }),
  },
  {
    name: 'keygate-postgres',
    group: 'main',
    label: 'keygate, SqlStore on PostgreSQL (pg Pool), warm path',
    needs: ['postgres'],
    auth: true,
    build: (ctx) => keygateOnPostgres(ctx),
  },
  {
    name: 'keygate-postgres-leased',
    group: 'main',
    label: "keygate-postgres with consistency: 'leased' (uses reserved in batches, spent locally)",
    needs: ['postgres'],
    auth: true,
    countsAhead: LEASE_BOUND,
    build: (ctx) => keygateOnPostgres(ctx, { options: LEASED }),
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
    peer: true,
    label: 'passport + passport-headerapikey, key looked up in a Map',
    auth: true,
    async build(ctx) {
      const { default: passport } = await import('passport');
      const headerapikey = await import('passport-headerapikey');
      const HeaderAPIKeyStrategy = headerapikey.HeaderAPIKeyStrategy ?? headerapikey.default.HeaderAPIKeyStrategy;
      const principals = new Map([[ctx.peerKey, principal()]]);
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
        key: ctx.peerKey,
        wrongKey: ctx.strangerKey,
        counted: async () => counted,
      };
    },
  },
  {
    name: 'express-rate-limit-memory',
    group: 'main',
    peer: true,
    label: 'express-rate-limit keyed by the key, MemoryStore (no authentication)',
    build: (ctx) => expressRateLimit(ctx),
  },
  {
    name: 'express-rate-limit-redis',
    group: 'main',
    peer: true,
    label: 'express-rate-limit keyed by the key, rate-limit-redis (ioredis)',
    needs: ['redis'],
    async build(ctx) {
      const { RedisStore } = await import('rate-limit-redis');
      return onRedis(ctx, (client) =>
        expressRateLimit(ctx, new RedisStore({ sendCommand: (command, ...args) => client.call(command, ...args), prefix: `erl:${process.pid}:` })),
      );
    },
  },
  {
    name: 'rate-limiter-flexible-memory',
    group: 'main',
    peer: true,
    label: 'rate-limiter-flexible RateLimiterMemory keyed by the key, as middleware (no authentication)',
    async build(ctx) {
      const { RateLimiterMemory } = await import('rate-limiter-flexible');
      return rateLimiterFlexible(ctx, new RateLimiterMemory({ points: PEER_LIMIT, duration: PEER_WINDOW_S }));
    },
  },
  {
    name: 'rate-limiter-flexible-redis',
    group: 'main',
    peer: true,
    label: 'rate-limiter-flexible RateLimiterRedis (ioredis) keyed by the key, as middleware',
    needs: ['redis'],
    async build(ctx) {
      const { RateLimiterRedis } = await import('rate-limiter-flexible');
      return onRedis(ctx, (client) =>
        rateLimiterFlexible(ctx, new RateLimiterRedis({ storeClient: client, points: PEER_LIMIT, duration: PEER_WINDOW_S, keyPrefix: `rlf:${process.pid}` })),
      );
    },
  },
  {
    name: 'hand-cached-sha256',
    group: 'main',
    peer: true,
    label: 'hand-written auth: sha256 digest of the key looked up in a Map',
    auth: true,
    build: (ctx) => {
      const digest = (text) => createHash('sha256').update(text).digest('hex');
      const principals = new Map([[digest(ctx.peerKey), principal()]]);
      const middleware = (admit) => (req, res, next) => {
        const presented = headerKey(req);
        const user = typeof presented === 'string' ? principals.get(digest(presented)) : undefined;
        if (!user) return refuse(res);
        req.user = user;
        admit(next);
      };
      return counting(ctx, middleware, { wrongKey: ctx.strangerKey });
    },
  },
  {
    name: 'hand-bcrypt-per-request',
    group: 'slow',
    peer: true,
    label: 'hand-written auth: bcryptjs compare (cost 10) on every request',
    auth: true,
    async build(ctx) {
      const { default: bcrypt } = await import('bcryptjs');
      const keyPrefixOf = (key) => key.slice(0, key.lastIndexOf('_'));
      const records = new Map([[keyPrefixOf(ctx.peerKey), { hash: await bcrypt.hash(ctx.peerKey, 10), user: principal() }]]);
      const middleware = (admit) => (req, res, next) => {
        const presented = headerKey(req);
        const record = typeof presented === 'string' ? records.get(keyPrefixOf(presented)) : undefined;
        if (!record) return refuse(res);
        bcrypt.compare(presented, record.hash).then((ok) => {
          if (!ok) return refuse(res);
          req.user = record.user;
          admit(next);
        }, next);
      };
      // Same keyPrefix, wrong secret: reaches the compare.
      return counting(ctx, middleware, { wrongKey: wrongSecretsFor(ctx.peerKey, 1)[0] });
    },
  },
  {
    name: 'noop-ratelimit-headers',
    group: 'diagnostic',
    label: "one app.use() that sets keygate's two RateLimit header fields (same values) and calls next()",
    build: (ctx) =>
      counting(ctx, (admit) => (req, res, next) => {
        res.setHeader('RateLimit-Policy', '"second";q=1000000000;w=1, "day";q=1000000000000;w=86400');
        res.setHeader('RateLimit', '"second";r=999999999;t=1');
        admit(next);
      }),
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
      return keygateVariant(ctx, { store: await memoryStore(ctx), authenticate: { scopes: [] } });
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
      return keygateVariant(ctx, { store: await memoryStore(ctx), fillerKeys: (ctx.keys ?? total) - 1 });
    },
  })),
];

export function variantNamed(name) {
  const variant = VARIANTS.find((candidate) => candidate.name === name);
  if (!variant) throw new Error(`unknown variant ${name}; known: ${VARIANTS.map((v) => v.name).join(', ')}`);
  return variant;
}
