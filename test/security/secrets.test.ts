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
