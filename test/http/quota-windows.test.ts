/**
 * The minute, hour and month quotas as clients see them: the RateLimit-Policy field names every
 * policy with its window (a month's is its length in seconds), a refused request gets 429
 * `quota_exceeded` with `Retry-After` to the end of the window that refused, and a cached key's
 * month window follows the calendar.
 */
import request from 'supertest';
import { EXPRESS_VERSIONS, testApp, testKeys } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();
const JANUARY_SECONDS = 31 * 86_400;
const FEBRUARY_2026_SECONDS = 28 * 86_400;

describe.each(EXPRESS_VERSIONS)('quota windows over HTTP (%s)', (_name, makeExpress) => {
  it('names every policy, shortest window first, with the month as long as the current month', async () => {
    const { keys } = testKeys();
    track(keys);
    const { key } = await keys.create({ name: 'k', rateLimit: { perSecond: 10, perMinute: 100, perHour: 1_000, perDay: 5_000, perMonth: 50_000 } });
    const res = await request(testApp(makeExpress, keys)).get('/whoami').set('X-API-Key', key);
    expect(res.status).toBe(200);
    expect(res.headers['ratelimit-policy']).toBe(
      `"second";q=10;w=1, "minute";q=100;w=60, "hour";q=1000;w=3600, "day";q=5000;w=86400, "month";q=50000;w=${JANUARY_SECONDS}`,
    );
  });

  it('refuses past a minute quota with 429 quota_exceeded and Retry-After to the minute\'s end; the next minute admits again', async () => {
    const { keys, clock } = testKeys();
    track(keys);
    clock.set(Date.UTC(2026, 0, 15, 12, 0, 40)); // 20 s before the minute ends
    const { key } = await keys.create({ name: 'k', rateLimit: { perMinute: 2 } });
    const app = testApp(makeExpress, keys);
    for (let i = 0; i < 2; i++) expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
    const refused = await request(app).get('/whoami').set('X-API-Key', key);
    expect(refused.status).toBe(429);
    expect(refused.body.code).toBe('quota_exceeded');
    expect(refused.headers['retry-after']).toBe('20');
    expect(refused.headers.ratelimit).toBe('"minute";r=0;t=20');
    clock.set(Date.UTC(2026, 0, 15, 12, 1, 0));
    expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
  });

  it('reports the most lasting window that refused: a spent month outlasts a spent minute', async () => {
    const { keys, clock } = testKeys();
    track(keys);
    clock.set(Date.UTC(2026, 0, 31, 23, 58, 0)); // the minute ends in 60 s, the month in 120 s
    const { key } = await keys.create({ name: 'k', rateLimit: { perMinute: 1, perMonth: 1 } });
    const app = testApp(makeExpress, keys);
    expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
    const refused = await request(app).get('/whoami').set('X-API-Key', key);
    expect(refused.status).toBe(429);
    expect(refused.body.code).toBe('quota_exceeded');
    expect(refused.headers['retry-after']).toBe('120');
    clock.set(Date.UTC(2026, 1, 1, 0, 0, 0));
    const february = await request(app).get('/whoami').set('X-API-Key', key);
    expect(february.status).toBe(200);
    expect(february.headers['ratelimit-policy']).toBe(`"minute";q=1;w=60, "month";q=1;w=${FEBRUARY_2026_SECONDS}`);
  });

  it('a month quota spent early in a month is refused until the 1st of the next, with Retry-After saying so', async () => {
    const { keys, clock } = testKeys();
    track(keys);
    clock.set(Date.UTC(2026, 1, 27, 0, 0, 0)); // two days before March (2026 is not a leap year)
    const { key } = await keys.create({ name: 'k', rateLimit: { perMonth: 1, perMinute: 10 } });
    const app = testApp(makeExpress, keys);
    expect((await request(app).get('/whoami').set('X-API-Key', key)).status).toBe(200);
    const refused = await request(app).get('/whoami').set('X-API-Key', key);
    expect(refused.status).toBe(429);
    expect(refused.headers['retry-after']).toBe(String(2 * 86_400));
  });
});

describe('quota validation', () => {
  it.each(['perMinute', 'perHour', 'perMonth'])('refuses %s of 0, a fraction or a string as invalid_argument naming it', async (field) => {
    const { keys } = testKeys();
    track(keys);
    for (const value of [0, 1.5, '10', -1]) {
      await expect(keys.create({ name: 'k', rateLimit: { [field]: value } as never })).rejects.toMatchObject({
        code: 'invalid_argument',
        field: `rateLimit.${field}`,
      });
    }
    const { apiKey } = await keys.create({ name: 'k', rateLimit: { [field]: 7 } });
    expect(apiKey.rateLimit).toEqual({ [field]: 7 });
  });
});

describe('a caller whose clock lags the key\'s latest use (two instances, one store)', () => {
  it('gets Retry-After and RateLimit of the window the request was counted in, not of its own clock', async () => {
    const { MemoryStore, keygate } = await import('../../src/index');
    const express = (await import('express')).default;
    const store = new MemoryStore();
    const ahead = track(keygate({ store, prefix: 'pk_test', hashing: 'sha256', now: () => Date.UTC(2027, 1, 1, 0, 0, 1) }));
    const behind = track(keygate({ store, prefix: 'pk_test', hashing: 'sha256', now: () => Date.UTC(2027, 0, 31, 23, 59, 58) }));
    const { key } = await ahead.create({ name: 'k', rateLimit: { perMonth: 1 } });
    expect((await ahead.verify(key)).ok).toBe(true);

    const app = express();
    app.use(behind.authenticate());
    app.get('/x', (_req, res) => res.json({ ok: true }));
    const refused = await request(app).get('/x').set('X-API-Key', key);
    expect(refused.status).toBe(429);
    // Counted in February 2027 (the key's latest use): the quota frees on 1 March, 28 days less 1 s away.
    expect(refused.headers['retry-after']).toBe(String(28 * 86_400 - 1));
    expect(refused.headers['ratelimit-policy']).toBe(`"month";q=1;w=${28 * 86_400}`);
    expect(refused.headers.ratelimit).toBe(`"month";r=0;t=${28 * 86_400 - 1}`);
  });
});
