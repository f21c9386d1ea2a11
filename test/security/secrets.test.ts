/**
 * No raw key, secret, hash or pepper in anything the library prints, throws or returns, whatever
 * happens: success, every kind of refusal, store failures, misuse.
 */
import { inspect } from 'node:util';
import request from 'supertest';
import express from 'express';
import { keygate, KeygateError, MemoryStore } from 'keygate';
import { CountingStore } from '../helpers/harness';

const PEPPER = 'pepper-that-must-never-appear';

describe('secrets never leak', () => {
  it('keeps keys, secrets, hashes and the pepper out of logs, errors, answers and inspected objects', async () => {
    const printed: string[] = [];
    const capture = (...args: unknown[]) => {
      printed.push(args.map((arg) => (typeof arg === 'string' ? arg : inspect(arg, { depth: 8 }))).join(' '));
    };
    const spies = (['log', 'info', 'warn', 'error', 'debug'] as const).map((level) => jest.spyOn(console, level).mockImplementation(capture));
    const stderr = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      printed.push(String(chunk));
      return true;
    });
    const emitted = jest.spyOn(process, 'emitWarning').mockImplementation((warning: string | Error) => {
      printed.push(String(warning));
    });

    const store = new CountingStore();
    const keys = keygate({ store, prefix: 'pk_test', hashing: 'sha256', pepper: PEPPER, storeTimeoutMs: 50 });
    const outputs: unknown[] = [];
    const { key, apiKey } = await keys.create({ name: 'leak check', maxUses: 2, allowedIps: ['127.0.0.1', '::ffff:127.0.0.1'] });
    const record = await store.inner.findById(apiKey.id);
    const secret = key.slice(apiKey.keyPrefix.length + 1, -6);
    try {
      const app = express();
      app.set('trust proxy', true); // also triggers the trust-proxy warning
      app.use(keys.authenticate());
      app.get('/x', (req, res) => {
        res.json(req.apiKey);
      });
      const typo = `${key.slice(0, -1)}${key.endsWith('a') ? 'b' : 'a'}`;
      for (const value of [key, key, key, typo, `${apiKey.keyPrefix}_${'Z'.repeat(38)}`, 'garbage']) {
        const res = await request(app).get('/x').set('X-API-Key', value);
        outputs.push(res.text, res.headers);
      }
      const forwarded = await request(app).get('/x').set('X-API-Key', key).set('X-Forwarded-For', '203.0.113.1');
      outputs.push(forwarded.text, forwarded.headers);
      store.fail('consume', 'reject');
      outputs.push((await request(app).get('/x').set('X-API-Key', key)).text);
      store.fail('findByKeyPrefix', 'hang');
      const other = await keygate({ store: new MemoryStore(), prefix: 'pk_test', hashing: 'sha256' }).create({ name: 'o' });
      outputs.push((await request(app).get('/x').set('X-API-Key', other.key)).text);
      store.heal();

      for (const attempt of [
        () => keys.update(apiKey.id, { allowedIps: ['nope'] }),
        () => keys.rotate('missing'),
        () => keys.list({ cursor: key }),
        () => keys.create({ name: key, metadata: { fn: () => key } as never }),
      ]) {
        try {
          await attempt();
        } catch (error) {
          outputs.push(error, (error as Error).message, (error as Error).stack);
        }
      }
      outputs.push(await keys.verify(key), await keys.verify(typo), keys, store.inner, JSON.stringify(keys), JSON.stringify(store.inner));
      outputs.push(new KeygateError('store_unavailable', undefined, { cause: new Error('socket hang up') }).toJSON());
    } finally {
      await keys.close();
      for (const spy of [...spies, stderr, emitted]) spy.mockRestore();
    }

    const everything = [...printed, ...outputs.map((output) => (typeof output === 'string' ? output : inspect(output, { depth: 12, showHidden: true })))].join('\n');
    expect(everything).not.toContain(secret);
    expect(everything).not.toContain(record!.keyHash);
    expect(everything).not.toContain(record!.keyHash.slice('$hmac-sha256$'.length));
    expect(everything).not.toContain(PEPPER);
    // The key itself appears nowhere either: only its keyPrefix, which is safe to log.
    expect(everything).not.toContain(key);
    expect(printed.join('\n')).toContain('trust proxy');
  });
});

describe('secrets never leak through events, the audit trail, usage, metrics or webhooks', () => {
  it('keeps keys, secrets, hashes, the pepper, the webhook secret and URL values out of every observability output', async () => {
    const { subscribe, unsubscribe } = await import('node:diagnostics_channel');
    const { createServer } = await import('node:http');
    const { Registry } = await import('prom-client');
    const { EVENT_NAMES, channelNameOf } = await import('keygate');
    const WEBHOOK_SECRET = `whsec_${Buffer.alloc(32, 9).toString('base64')}`;
    const emitted = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);

    // A webhook receiver that keeps every body and header it gets.
    const received: string[] = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
      req.on('end', () => {
        received.push(JSON.stringify(req.headers), body);
        res.end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const hookUrl = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/hooks`;

    const keys = keygate({ store: new MemoryStore(), prefix: 'pk_test', hashing: 'sha256', pepper: PEPPER, audit: true, usage: true, webhooks: { secret: WEBHOOK_SECRET } });
    const registry = new Registry();
    keys.metrics(registry);
    const seen: unknown[] = [];
    for (const name of EVENT_NAMES) keys.on(name, (payload) => void seen.push(payload));
    const onChannel = (message: unknown) => void seen.push(message);
    for (const name of EVENT_NAMES) subscribe(channelNameOf(name), onChannel);
    const secrets: string[] = [PEPPER, WEBHOOK_SECRET, WEBHOOK_SECRET.slice('whsec_'.length), 'lead-9f3c1', 'token=s3cr3t'];
    try {
      const { key, apiKey } = await keys.create({ name: 'observed', maxUses: 2, alerts: { webhookUrl: hookUrl, quotaThreshold: 0.5 } }, { actor: 'ops' });
      const record = await keys.store.findById(apiKey.id);
      secrets.push(key, key.slice(apiKey.keyPrefix.length + 1, -6), record!.keyHash);
      const app = express();
      app.use(keys.authenticate());
      app.get('/leads/:id', (_req, res) => void res.json({}));
      for (let i = 0; i < 3; i++) await request(app).get('/leads/lead-9f3c1?token=s3cr3t').set('X-API-Key', key);
      await request(app).get('/leads/lead-9f3c1?token=s3cr3t').set('X-API-Key', `${key.slice(0, -8)}AAAAAAAA`);
      await request(app).get('/leads/lead-9f3c1?token=s3cr3t');
      const rotated = await keys.rotate(apiKey.id, { actor: 'ops' });
      secrets.push(rotated.key);
      await keys.update(rotated.apiKey.id, { name: 'renamed' });
      await keys.delete(rotated.apiKey.id);
      await keys.purge({ deletedBefore: Date.now() + 1 });
      await keys.scanKeys({ expiringWithinMs: 10 ** 12 });
      await keys.flushUsage();
      for (let i = 0; i < 100 && received.length < 4; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(received.length).toBeGreaterThanOrEqual(4);

      const outputs = [
        ['events and channel messages', JSON.stringify(seen)],
        ['the audit trail', JSON.stringify(await keys.auditLog())],
        ['usage', JSON.stringify([await keys.usage(apiKey.id, { groupBy: 'route' }), await keys.usage(apiKey.id), keys.usageStats()])],
        ['metrics', await registry.metrics()],
        ['webhooks', received.join('\n')],
        ['warnings', emitted.mock.calls.map((call) => String(call[0])).join('\n')],
      ] as const;
      for (const [where, text] of outputs) {
        for (const secret of secrets) expect({ where, leaked: text.includes(secret) ? secret.slice(0, 12) : null }).toEqual({ where, leaked: null });
        expect({ where, hash: /\$hmac-sha256\$|keyHash/.test(text) }).toEqual({ where, hash: false });
      }
      expect(seen.length).toBeGreaterThan(10);
    } finally {
      for (const name of EVENT_NAMES) unsubscribe(channelNameOf(name), onChannel);
      emitted.mockRestore();
      await keys.close();
      receiver.closeAllConnections();
      await new Promise((resolve) => receiver.close(resolve));
    }
  });
});
