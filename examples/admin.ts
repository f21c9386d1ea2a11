/**
 * Key management over HTTP for a multi-tenant API: one admin key per tenant, each managing only
 * its own tenant's keys through `keys.adminRouter()`, and a platform key that manages them all.
 *
 *   npx tsx examples/admin.ts
 *
 * It starts the API on a free port, then plays a tenant administrator against it with fetch():
 * creates a key, lists its tenant's keys, tries to reach another tenant's key (404, as if it did not
 * exist) and to hand out a scope it does not hold (400), rotates and deletes the key, and finally
 * purges deleted keys as the platform would on a schedule.
 */
import express from 'express';
import type { AddressInfo } from 'node:net';
import { MemoryStore, keygate, problemHandler } from 'keygate';

const keys = keygate({ store: new MemoryStore(), prefix: 'sk_live', hashing: 'sha256', pepper: process.env.KEYGATE_PEPPER || 'example-pepper' });

const app = express();
app.disable('x-powered-by');
// The admin API checks keys itself: the calling key needs `keys:admin`.
app.use('/v1/api-keys', keys.adminRouter());
app.use(keys.authenticate());
app.get('/v1/invoices', (req, res) => {
  res.json({ tenant: req.apiKey?.tenantId, items: [] });
});
app.use(problemHandler());

async function call(base: string, key: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text.length > 0 ? (JSON.parse(text) as unknown) : null };
}

async function main(): Promise<void> {
  // Bootstrapping: the first admin keys come from code (or the CLI), never from the API itself.
  const acmeAdmin = await keys.create({ name: 'acme admin', tenantId: 'acme', scopes: ['keys:admin', 'invoices:*'] });
  const globex = await keys.create({ name: 'globex billing', tenantId: 'globex', scopes: ['invoices:read'] });

  const server = app.listen(0);
  await new Promise((resolve) => server.once('listening', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const created = await call(base, acmeAdmin.key, 'POST', '/v1/api-keys', { name: 'acme CI', scopes: ['invoices:read'], rateLimit: { perSecond: 5 } });
    const { key, apiKey } = created.body as { key: string; apiKey: { id: string; tenantId: string } };
    console.log(`created ${created.status}: ${apiKey.id} in tenant ${apiKey.tenantId} (the raw key is in this answer only)`);
    console.log('the new key works:', (await call(base, key, 'GET', '/v1/invoices')).status);

    const listed = await call(base, acmeAdmin.key, 'GET', '/v1/api-keys');
    console.log('acme sees:', (listed.body as { items: { name: string }[] }).items.map((item) => item.name).join(', '));

    const foreign = await call(base, acmeAdmin.key, 'GET', `/v1/api-keys/${globex.apiKey.id}`);
    console.log(`another tenant's key: ${foreign.status} ${(foreign.body as { code: string }).code}`);

    const escalation = await call(base, acmeAdmin.key, 'POST', '/v1/api-keys', { name: 'too strong', scopes: ['payroll:write'] });
    console.log(`granting a scope acme's admin lacks: ${escalation.status} ${(escalation.body as { field: string }).field}`);

    const rotated = await call(base, acmeAdmin.key, 'POST', `/v1/api-keys/${apiKey.id}/rotate`, { gracePeriodMs: 60_000 });
    const replacement = (rotated.body as { apiKey: { id: string } }).apiKey.id;
    console.log(`rotated ${rotated.status}: the old key works for another minute, the new one is ${replacement}`);

    console.log('deleted:', (await call(base, acmeAdmin.key, 'DELETE', `/v1/api-keys/${replacement}`)).status);
    console.log('purged (platform clean-up):', await keys.purge({ deletedBefore: Date.now() + 1 }));
  } finally {
    server.close();
    await keys.close();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
