/**
 * A small Express 5 API protected by keygate, on the in-process MemoryStore.
 *
 *   npm start                 # or: PORT=8080 npm start
 *
 * At start it mints a demo key (scope `leads:read`, 2 requests per second, 1000 per day) and an
 * admin key (scope `keys:admin`, for the admin API at /admin/keys), prints them once, and prints
 * curl lines to paste into another terminal: one admitted (200), one refused for scope (403
 * insufficient_scope), a burst that gets rate limited (429 with Retry-After), and the admin API
 * creating, listing and revoking keys.
 *
 * Keys live in memory, so a restart forgets them: this is a demo, not a deployment.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import { KeygateError, MemoryStore, keygate, problemHandler, requireAnyScope, requireScopes } from 'keygate';

const port = Number(process.env.PORT ?? 3000);

// Hashing: keygate's default is bcrypt (cost 10), which is deliberately slow so a stolen key table
// resists brute force. Thanks to the verification cache only the first request of a key pays it,
// but a cold start still takes ~50-100 ms per key. keygate's secrets are 190 random bits, which no
// one can brute-force through a fast hash either, so this demo uses `sha256` (HMAC-SHA-256): it is
// instant, and with a `pepper` kept outside the database (an env var here) a leaked table alone is
// not enough to check a guess. Pick bcrypt when you cannot keep a pepper secret apart from the data.
const keys = keygate({
  store: new MemoryStore(),
  prefix: 'pk_test',
  hashing: 'sha256',
  pepper: process.env.KEYGATE_PEPPER || 'demo-pepper-change-me',
});

interface Lead {
  id: number;
  name: string;
  email: string;
  createdBy: string;
}

const leads: Lead[] = [
  { id: 1, name: 'Ada Lovelace', email: 'ada@example.com', createdBy: 'seed' },
  { id: 2, name: 'Grace Hopper', email: 'grace@example.com', createdBy: 'seed' },
];

const app = express();
app.disable('x-powered-by');
app.use(express.json());

// Mounted before authenticate(): no key needed, and it does not count against any key.
app.get('/health', (_req, res) => {
  res.json({ ok: true });
});

// The admin API: create, list, update, rotate, revoke and delete keys over JSON. It checks keys
// itself (the caller needs the scope keys:admin), so it is mounted before authenticate().
app.use('/admin/keys', keys.adminRouter());

// Every route below needs a valid key. Each admitted request is counted once, here.
app.use(keys.authenticate());

// `req.apiKey` is typed (declaration merging): no cast. It never contains the key or its hash.
app.get('/me', (req, res) => {
  res.json(req.apiKey);
});

app.get('/leads', requireScopes('leads:read'), (req, res) => {
  res.json({ items: leads, requestedBy: req.apiKey?.name });
});

app.post('/leads', requireAnyScope('leads:write', 'admin'), (req, res) => {
  const body = (req.body ?? {}) as Partial<Lead>;
  if (typeof body.name !== 'string' || typeof body.email !== 'string') {
    res.status(400).json({ error: 'name and email are required' });
    return;
  }
  const lead: Lead = { id: leads.length + 1, name: body.name, email: body.email, createdBy: req.apiKey?.keyPrefix ?? '?' };
  leads.push(lead);
  res.status(201).json(lead);
});

// Refusals are answered by keygate itself (application/problem+json); a KeygateError that reaches
// next(err) (a manager call in a route of yours, or authenticate({ passErrors: true })) is answered
// the same way by problemHandler(). The handler after it only sees other errors.
app.use(problemHandler());
app.use((error: unknown, _req: Request, res: Response, _next: NextFunction) => {
  if (error instanceof KeygateError) {
    res.status(error.status).json({ code: error.code, message: error.message });
    return;
  }
  console.error(error);
  res.status(500).json({ error: 'internal error' });
});

async function main(): Promise<void> {
  const { key, apiKey } = await keys.create({
    name: 'demo key',
    scopes: ['leads:read'],
    rateLimit: { perSecond: 2, burst: 2, perDay: 1000 },
    metadata: { createdBy: 'examples/basic.ts' },
  });
  const admin = await keys.create({ name: 'demo admin', scopes: ['keys:admin', 'leads:read'], metadata: { createdBy: 'examples/basic.ts' } });

  const server = app.listen(port, (error?: Error) => {
    if (error) {
      console.error(`Could not listen on port ${port}: ${error.message}`);
      process.exit(1);
    }
    const address = server.address();
    const actualPort = address && typeof address === 'object' ? address.port : port;
    const base = `http://localhost:${actualPort}`;
    const auth = `-H "Authorization: Bearer ${key}"`;
    console.log(
      [
        `keygate demo API listening on ${base}`,
        '',
        `Demo key (shown once, never stored; only its hash is kept):`,
        `  ${key}`,
        `  id ${apiKey.id}, keyPrefix ${apiKey.keyPrefix} (safe to log), scopes ${apiKey.scopes.join(' ')},`,
        `  2 requests per second (burst 2), 1000 per day`,
        '',
        'Try it from another terminal:',
        '',
        '# 200: allowed, the key has leads:read',
        `curl -si ${auth} ${base}/leads`,
        '',
        '# 403 insufficient_scope: POST /leads needs leads:write or admin',
        `curl -si -X POST ${auth} -H "Content-Type: application/json" -d '{"name":"Alan","email":"alan@example.com"}' ${base}/leads`,
        '',
        '# 429 rate_limited: the bucket holds 2 requests and refills 2 per second, so the 3rd+ quick request is refused',
        '# (the sleep lets the bucket fill up first)',
        `sleep 1; for i in 1 2 3 4 5; do curl -s -o /dev/null -w "%{http_code}\\n" ${auth} ${base}/leads; done`,
        '',
        '# The headers keygate sends (RateLimit-Policy, RateLimit; Retry-After on a 429). Run it right after the loop above',
        `for i in 1 2 3; do curl -s -o /dev/null -D - ${auth} ${base}/leads; done`,
        '',
        '# 401 with no key (WWW-Authenticate: Bearer realm="api"), and the unauthenticated health check',
        `curl -si ${base}/leads`,
        `curl -si ${base}/health`,
        '',
        `Admin key (scope keys:admin, for the admin API at ${base}/admin/keys):`,
        `  ${admin.key}`,
        '',
        '# 201: create a key (the raw key is in this answer only), then list the keys and revoke the new one',
        `curl -s -X POST -H "Authorization: Bearer ${admin.key}" -H "Content-Type: application/json" -d '{"name":"from curl","scopes":["leads:read"]}' ${base}/admin/keys`,
        `curl -s -H "Authorization: Bearer ${admin.key}" ${base}/admin/keys`,
        `curl -s -X POST -H "Authorization: Bearer ${admin.key}" ${base}/admin/keys/<id from the create answer>/revoke`,
        '',
        '# 403 insufficient_scope: the demo key cannot manage keys; 400: the admin key cannot grant a scope it lacks',
        `curl -si ${auth} ${base}/admin/keys`,
        `curl -si -X POST -H "Authorization: Bearer ${admin.key}" -H "Content-Type: application/json" -d '{"name":"escalation","scopes":["leads:write"]}' ${base}/admin/keys`,
        '',
        `# The admin API's OpenAPI 3.1 document`,
        `curl -s ${base}/admin/keys/openapi.json`,
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
      keys.close().then(
        () => process.exit(0),
        (error: unknown) => {
          console.error(error);
          process.exit(1);
        },
      );
    });
    // Keep-alive connections would hold close() open; idle ones can go now.
    server.closeIdleConnections();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
