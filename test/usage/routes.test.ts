/**
 * Routes in usage analytics cannot be used to flood the store or crowd other keys out (found by
 * review): Express matches mount paths without regard to case, and a router mounted on a regular
 * expression carries whatever the client typed, so the route a request took is not always a
 * pattern from the app. Spellings of one mount collapse into one route, and each key has at most
 * MAX_ROUTES_PER_KEY_DAY routes a day; the rest are counted, exactly, under OTHER_ROUTES.
 */
import { MemoryStore, keygate } from '../../src/index';
import { MAX_ROUTES_PER_KEY_DAY, OTHER_ROUTES } from '../../src/usage/recorder';
import { testClock } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';
import { EXPRESS_WITH_ROUTER, send, serve, untilRecorded } from './http';

const track = closeAfterEach();

describe.each(EXPRESS_WITH_ROUTER)('usage routes on %s', (_label, makeExpress, makeRouter) => {
  async function setUp() {
    const keys = track(keygate({ store: new MemoryStore(), prefix: 'pk_test', hashing: 'sha256', now: testClock().now, usage: { flushIntervalMs: 3_600_000 } }));
    const app = makeExpress();
    app.use(keys.authenticate());
    const leads = makeRouter();
    leads.get('/leads/:id', (_req, res) => void res.json({}));
    app.use('/v1/organizations', leads);
    const items = makeRouter();
    items.get('/items', (_req, res) => void res.json({}));
    app.use(/^\/users\/[0-9a-z]+/i, items);
    const served = await serve(app);
    return { keys, url: served.url, close: served.close };
  }

  it('records the spellings of one mount path as one route', async () => {
    const { keys, url, close } = await setUp();
    try {
      const { key, apiKey } = await keys.create({ name: 'k' });
      for (const spelling of ['/v1/organizations', '/V1/Organizations', '/v1/ORGANIZATIONS']) expect(await send(`${url}${spelling}/leads/7`, { key })).toBe(200);
      await untilRecorded(keys, 3);
      await keys.flushUsage();
      const { items } = await keys.usage(apiKey.id, { groupBy: 'route' });
      expect(items.map((point) => [point.route, point.requests])).toEqual([['/v1/organizations/leads/:id', 3]]);
    } finally {
      await close();
    }
  });

  it('caps a key at MAX_ROUTES_PER_KEY_DAY routes a day, counting the rest exactly under OTHER_ROUTES, and leaves other keys alone', async () => {
    const { keys, url, close } = await setUp();
    try {
      const attacker = await keys.create({ name: 'attacker' });
      const victim = await keys.create({ name: 'victim' });
      const spellings = MAX_ROUTES_PER_KEY_DAY + 36;
      for (let i = 0; i < spellings; i++) expect(await send(`${url}/users/u${i}/items`, { key: attacker.key })).toBe(200);
      for (let i = 0; i < 5; i++) expect(await send(`${url}/v1/organizations/leads/${i}`, { key: victim.key })).toBe(200);
      await untilRecorded(keys, spellings + 5);
      await keys.flushUsage();
      const attacked = await keys.usage(attacker.apiKey.id, { groupBy: 'route' });
      expect(attacked.items).toHaveLength(MAX_ROUTES_PER_KEY_DAY + 1);
      expect(attacked.items.find((point) => point.route === OTHER_ROUTES)?.requests).toBe(spellings - MAX_ROUTES_PER_KEY_DAY);
      expect(attacked.total.requests).toBe(spellings);
      const spared = await keys.usage(victim.apiKey.id, { groupBy: 'route' });
      expect(spared.items.map((point) => [point.route, point.requests])).toEqual([['/v1/organizations/leads/:id', 5]]);
      expect(keys.usageStats()?.dropped).toBe(0);
    } finally {
      await close();
    }
  });
});
