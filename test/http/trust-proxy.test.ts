/** The one-time warning for `trust proxy: true`, which lets clients forge req.ip. */
import request from 'supertest';
import express from 'express';
import { testKeys } from '../helpers/harness';

describe('trust proxy warning', () => {
  it('warns once, with a stable code, when the app trusts every proxy', async () => {
    const emitWarning = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const ours = () => emitWarning.mock.calls.filter(([, options]) => (options as { code?: string })?.code === 'KEYGATE_TRUST_PROXY_TRUE');
    try {
      const { keys } = testKeys();
      const { key } = await keys.create({ name: 'tp' });
      const safe = express();
      safe.set('trust proxy', 'loopback');
      safe.use(keys.authenticate());
      safe.get('/', (_req, res) => res.end('ok'));
      expect((await request(safe).get('/').set('X-API-Key', key)).status).toBe(200);
      expect(ours()).toHaveLength(0);

      const risky = express();
      risky.set('trust proxy', true);
      risky.use(keys.authenticate());
      risky.get('/', (_req, res) => res.end('ok'));
      expect((await request(risky).get('/').set('X-API-Key', key)).status).toBe(200);
      expect((await request(risky).get('/').set('X-API-Key', key)).status).toBe(200);
      expect(ours()).toHaveLength(1);
      expect(String(ours()[0]![0])).toMatch(/X-Forwarded-For/);
    } finally {
      emitWarning.mockRestore();
    }
  });
});
