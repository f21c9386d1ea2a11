/**
 * An Express 5 API whose keys live in PostgreSQL, through `SqlStore` from `keygate/sql`.
 *
 *   DATABASE_URL=postgres://user:pass@localhost:5432/app npx tsx examples/postgres.ts
 *
 * At start it runs `migrate()` (creates the `keygate_api_keys` table and its indexes if they do not
 * exist: safe on every start, and from several processes at once), mints a demo key and prints curl
 * lines to try it. Keys, use counts and rate-limit counters are in the database, so they survive
 * restarts and are shared by every process of the app: run it twice on two ports (PORT=3001) and
 * the limits hold across both.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import { Pool } from 'pg';
import { KeygateError, keygate, requireScopes } from 'keygate';
import { SqlStore } from 'keygate/sql';

const port = Number(process.env.PORT ?? 3000);
const connectionString = process.env.DATABASE_URL;
if (!connectionString) {
  console.error('Set DATABASE_URL, e.g. DATABASE_URL=postgres://postgres@localhost:5432/postgres');
  process.exit(1);
}

// The pool is yours: keygate uses it and never closes it.
// - statement_timeout (server side) at or below keygate's storeTimeoutMs (1000 ms by default): a
//   consume keygate gave up on is cancelled by PostgreSQL instead of being counted later.
// - connectionTimeoutMillis: a request waits at most this long for a connection when the database
//   is unreachable (keygate refuses it with 503 store_unavailable after storeTimeoutMs anyway).
// - max: every admitted request runs one short statement; size the pool for your request rate.
const pool = new Pool({ connectionString, max: 10, statement_timeout: 1_000, connectionTimeoutMillis: 2_000 });
// Without an 'error' listener, a pooled connection cut by the server (a restart, a failover)
// crashes the process. With it, the pool drops the connection and opens a new one when needed.
pool.on('error', (error) => console.error('PostgreSQL connection lost (the pool will reconnect):', error.message));

const store = new SqlStore({ dialect: 'postgres', client: pool });

// sha256 (HMAC with a pepper kept out of the database) keeps cold starts instant; see
// examples/basic.ts for the trade-off against the default, bcrypt.
const keys = keygate({
  store,
  prefix: 'pk_test',
  hashing: 'sha256',
  pepper: process.env.KEYGATE_PEPPER || 'demo-pepper-change-me',
});

const app = express();
app.disable('x-powered-by');

app.get('/health', async (_req, res) => {
  try {
    await pool.query('SELECT 1');
    res.json({ ok: true, database: 'up' });
  } catch {
    res.status(503).json({ ok: false, database: 'down' });
  }
});

app.use(keys.authenticate());

app.get('/me', (req, res) => {
  res.json(req.apiKey);
});

app.get('/reports', requireScopes('reports:read'), (req, res) => {
  res.json({ reports: ['q1', 'q2'], for: req.apiKey?.ownerId });
});

app.use((error: unknown, _req: Request, res: Response, _next: NextFunction) => {
  if (error instanceof KeygateError) {
    res.status(error.status).json({ code: error.code, message: error.message });
    return;
  }
  console.error(error);
  res.status(500).json({ error: 'internal error' });
});

async function main(): Promise<void> {
  await store.migrate();
  const { key, apiKey } = await keys.create({
    name: 'postgres demo key',
    ownerId: 'user_demo',
    scopes: ['reports:read'],
    maxUses: 100,
    rateLimit: { perSecond: 2, burst: 2, perDay: 1000 },
    metadata: { createdBy: 'examples/postgres.ts' },
  });

  const server = app.listen(port, (error?: Error) => {
    if (error) {
      console.error(`Could not listen on port ${port}: ${error.message}`);
      process.exit(1);
    }
    const address = server.address();
    const base = `http://localhost:${address && typeof address === 'object' ? address.port : port}`;
    const auth = `-H "Authorization: Bearer ${key}"`;
    console.log(
      [
        `keygate + PostgreSQL demo API listening on ${base}`,
        '',
        'Demo key (shown once; the database keeps only its hash):',
        `  ${key}`,
        `  id ${apiKey.id}, keyPrefix ${apiKey.keyPrefix}, 100 uses, 2 per second, 1000 per day`,
        '',
        '# 200: the key has reports:read',
        `curl -si ${auth} ${base}/reports`,
        '',
        '# 429 rate_limited after the burst of 2 (the sleep lets the bucket refill first)',
        `sleep 1; for i in 1 2 3 4; do curl -s -o /dev/null -w "%{http_code}\\n" ${auth} ${base}/me; done`,
        '',
        '# The counters live in the database:',
        `psql "${connectionString}" -c "SELECT key_prefix, use_count, day_count, tokens FROM keygate_api_keys WHERE id = '${apiKey.id}'"`,
        '',
        '# 401 without a key; the health check needs none',
        `curl -si ${base}/me`,
        `curl -si ${base}/health`,
        '',
        'Ctrl+C to stop.',
      ].join('\n'),
    );
  });

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${signal} received, closing`);
    server.close(() => {
      // keygate first (its own timers and subscriptions), then the pool, which is ours to close.
      keys
        .close()
        .then(() => pool.end())
        .then(
          () => process.exit(0),
          (closeError: unknown) => {
            console.error(closeError);
            process.exit(1);
          },
        );
    });
    server.closeIdleConnections();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch(async (error: unknown) => {
  console.error(error);
  await pool.end().catch(() => undefined);
  process.exit(1);
});
