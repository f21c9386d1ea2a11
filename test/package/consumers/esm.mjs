// An ES-module consumer of the installed package (test/package/tarball.test.ts copies it into an
// empty project whose node_modules holds the packed tarball, express and nothing of this repo).
// It prints one JSON line for the test to check.
import { once } from 'node:events';
import express from 'express';
import { keygate, MemoryStore } from 'keygate';

// The default hashing (bcrypt on worker threads) loads bcryptjs from the installed dependencies.
const keys = keygate({ store: new MemoryStore(), prefix: 'sk_esm' });
const { key, apiKey } = await keys.create({ name: 'esm consumer', ownerId: 'user_esm', scopes: ['leads:read'] });
const verified = await keys.verify(key, { scopes: ['leads:read'] });

const app = express();
app.get('/leads', keys.authenticate({ scopes: ['leads:read'] }), (req, res) => {
  res.json({ owner: req.apiKey?.ownerId });
});
const server = app.listen(0, '127.0.0.1');
await once(server, 'listening');
const base = `http://127.0.0.1:${server.address().port}`;

try {
  const admitted = await globalThis.fetch(`${base}/leads`, { headers: { authorization: `Bearer ${key}` } });
  const refused = await globalThis.fetch(`${base}/leads`);
  console.log(JSON.stringify({
    resolved: import.meta.resolve('keygate'),
    keyPrefix: key.startsWith('sk_esm_'),
    verified: verified.ok && verified.apiKey.id === apiKey.id,
    admitted: { status: admitted.status, body: await admitted.json() },
    refused: { status: refused.status, type: refused.headers.get('content-type'), code: (await refused.json()).code },
  }));
} finally {
  server.closeAllConnections();
  server.close();
  await keys.close();
}
