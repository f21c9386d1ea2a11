/**
 * Seeing what keys do: events, the audit trail, usage analytics, Prometheus metrics and a signed
 * webhook alert, on one small API.
 *
 *   npx tsx examples/observability.ts
 *
 * It starts the API (with `/metrics`) and a webhook receiver on free ports, makes a few requests
 * with a metered key until it crosses its quota thresholds, then prints what keygate saw: the
 * events, the webhook the receiver verified, the key's usage by route, its audit trail, and a few
 * lines of `/metrics`.
 */
import express from 'express';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { Webhook } from 'standardwebhooks';
import { MemoryStore, keygate, problemHandler } from 'keygate';

// A Standard Webhooks secret: `whsec_` and base64 of random bytes, shared with the receivers.
const WEBHOOK_SECRET = `whsec_${Buffer.from('an example secret, 32 bytes long!').toString('base64')}`;

const keys = keygate({
  store: new MemoryStore(),
  prefix: 'pk_live',
  hashing: 'sha256',
  pepper: process.env.KEYGATE_PEPPER || 'example-pepper',
  audit: true,
  usage: { flushIntervalMs: 1_000 },
  webhooks: { secret: WEBHOOK_SECRET, allowUrl: (url) => url.hostname === '127.0.0.1' },
});

// Events: every management change and every request, here printed as one line each.
for (const event of ['key.created', 'key.updated', 'key.revoked', 'quota.threshold'] as const) {
  keys.on(event, (payload) => console.log(`event ${event}`, JSON.stringify(payload).slice(0, 160)));
}
keys.on('request.refused', ({ code, route, keyPrefix }) => console.log(`event request.refused ${code} on ${route ?? '(no route)'} by ${keyPrefix ?? '(no key)'}`));

const registry = new Registry();
keys.metrics(registry);

const app = express();
app.disable('x-powered-by');
app.get('/metrics', async (_req, res) => {
  res.type(registry.contentType).send(await registry.metrics());
});
app.use(keys.authenticate());
const v1 = express.Router();
v1.get('/leads/:id', (req, res) => {
  res.json({ id: req.params.id });
});
v1.get('/reports', (_req, res) => {
  res.status(500).json({ error: 'the report service is down' });
});
app.use('/v1', v1);
app.use(problemHandler());

/** A receiver of keygate's alert webhooks: it checks each signature before trusting the body. */
function webhookReceiver(): Promise<{ url: string; close: () => void; received: unknown[] }> {
  const received: unknown[] = [];
  const verifier = new Webhook(WEBHOOK_SECRET);
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
    req.on('end', () => {
      try {
        received.push(verifier.verify(body, req.headers as Record<string, string>));
        res.writeHead(204).end();
      } catch {
        res.writeHead(400).end();
      }
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/keygate`, close: () => server.close(), received })),
  );
}

async function main(): Promise<void> {
  const receiver = await webhookReceiver();
  const api = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => api.once('listening', resolve));
  const base = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;

  const { key, apiKey } = await keys.create(
    { name: 'CRM sync', ownerId: 'user_42', maxUses: 10, alerts: { quotaThreshold: 0.5, webhookUrl: receiver.url } },
    { actor: 'ops@example.com' },
  );
  await keys.update(apiKey.id, { description: 'nightly lead import' }, { actor: 'ops@example.com' });

  const get = (path: string, withKey = true) => fetch(`${base}${path}`, withKey ? { headers: { authorization: `Bearer ${key}` } } : {});
  for (let i = 1; i <= 6; i++) await get(`/v1/leads/${i}`);
  await get('/v1/reports');
  await get('/v1/leads/7', false);

  await keys.flushUsage();
  const usage = await keys.usage(apiKey.id, { groupBy: 'route' });
  console.log('\nusage by route:');
  for (const point of usage.items) console.log(`  ${point.route ?? '(no route)'}: ${point.requests} requests, error rate ${point.errorRate}, avg ${point.averageResponseTimeMs} ms`);

  await keys.revoke(apiKey.id, { actor: 'ops@example.com' });
  console.log('\naudit trail:');
  for (const entry of (await keys.auditLog({ keyId: apiKey.id })).items) console.log(`  ${entry.at.toISOString()} ${entry.action} by ${entry.actor?.id ?? '-'} ${JSON.stringify(entry.changes)}`);

  // Webhooks are sent off the request path: give the one for the 50 % threshold a moment.
  for (let i = 0; i < 50 && receiver.received.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
  console.log(`\nwebhooks verified by the receiver: ${receiver.received.length}`, JSON.stringify(receiver.received[0] ?? null).slice(0, 160));

  const metrics = await (await fetch(`${base}/metrics`)).text();
  console.log('\n/metrics (excerpt):');
  for (const line of metrics.split('\n').filter((text) => text.startsWith('keygate_requests_total') || text.startsWith('keygate_cache_hit_ratio'))) console.log(`  ${line}`);

  api.close();
  receiver.close();
  await keys.close();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
