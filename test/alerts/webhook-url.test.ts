/**
 * `webhooks.allowUrl`: the application decides which webhook URLs keys may carry, so that an admin
 * of one tenant cannot point the server's webhook requests at the internal network.
 */
import { MemoryStore, keygate } from '../../src/index';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();
const SECRET = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;

describe('webhooks.allowUrl', () => {
  const keys = () =>
    track(
      keygate({
        store: new MemoryStore(),
        hashing: 'sha256',
        webhooks: { secret: SECRET, allowUrl: (url) => url.protocol === 'https:' && url.hostname.endsWith('.hooks.example.com') },
      }),
    );

  it('refuses, on create and on update, a URL it does not allow, and writes nothing', async () => {
    const manager = keys();
    for (const webhookUrl of ['http://169.254.169.254/latest/meta-data', 'https://localhost:8080/x', 'http://acme.hooks.example.com/x']) {
      await expect(manager.create({ name: 'x', alerts: { webhookUrl } })).rejects.toMatchObject({ code: 'invalid_argument', field: 'alerts.webhookUrl' });
    }
    expect((await manager.list()).items).toEqual([]);
    const { apiKey } = await manager.create({ name: 'ok', alerts: { webhookUrl: 'https://acme.hooks.example.com/keygate', quotaThreshold: 0.9 } });
    expect(apiKey.alerts).toEqual({ webhookUrl: 'https://acme.hooks.example.com/keygate', quotaThreshold: 0.9 });
    await expect(manager.update(apiKey.id, { alerts: { webhookUrl: 'http://10.0.0.1/' } })).rejects.toMatchObject({ field: 'alerts.webhookUrl' });
    expect((await manager.get(apiKey.id))?.alerts?.webhookUrl).toBe('https://acme.hooks.example.com/keygate');
    // Alerts without a URL, and clearing them, need no permission.
    expect((await manager.update(apiKey.id, { alerts: { quotaThreshold: 0.5 } })).alerts).toEqual({ quotaThreshold: 0.5 });
    expect((await manager.update(apiKey.id, { alerts: null })).alerts).toBeNull();
  });

  it('is checked when keygate() is built', () => {
    expect(() => keygate({ store: new MemoryStore(), webhooks: { secret: SECRET, allowUrl: 'https://' as never } })).toThrow(/allowUrl/);
    expect(() => keygate({ store: new MemoryStore(), webhooks: { secret: SECRET, retries: 3 } as never })).toThrow(TypeError);
  });
});
