/**
 * The quota windows of the Redis consume script (generated from QUOTA_WINDOWS, see WINDOW_LUA in
 * src/stores/redis/scripts.ts), against the TypeScript engine on a real redis-server:
 * - the Lua window indices, the calendar month above all, equal `windowIndex` for random instants
 *   over the whole range of a JavaScript Date and for every month boundary around the edge cases
 *   (leap years, 1900/2000/2100, the years around 0, before 1970, fractional instants);
 * - random consume sequences agree with `decideConsume`, outcome for outcome;
 * - records laid out before minute/hour/month existed go on counting; junk window counters fail
 *   closed; the generated script follows the table.
 */
import Redis from 'ioredis';
import { RedisStore } from 'keygate/redis';
import { type ConsumeOutcome, type ConsumeRequest, type CounterState, decideConsume, initialCounters } from '../../src/policy/limits';
import { QUOTA_WINDOWS, windowIndex } from '../../src/policy/windows';
import type { RateLimit } from '../../src/types';
import { CONSUME_SCRIPT, WINDOW_LUA, counterField } from '../../src/stores/redis/scripts';
import { testRecord } from '../helpers/records';
import { describeWithRedis, RedisServer } from '../helpers/redis-server';

jest.setTimeout(60_000);

const MAX_DATE = 8.64e15;

/** A small seeded PRNG (mulberry32), so a failure can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Every window index of each instant, computed by the generated Lua: 'invalid' where it gives false. */
const INDICES_SCRIPT = `${WINDOW_LUA}
local out = {}
for i = 1, #ARGV do
  local at = tonumber(ARGV[i])
  local row = {}
  for j, window in ipairs(WINDOWS) do
    local index = window_index(window, at)
    if index == false then row[j] = 'invalid' else row[j] = string.format('%.17g', index) end
  end
  out[i] = table.concat(row, ',')
end
return out
`;

function expectedIndices(at: number): string {
  return QUOTA_WINDOWS.map((window) => {
    const index = windowIndex(window, at);
    return Number.isNaN(index) ? 'invalid' : String(index === 0 ? 0 : index);
  }).join(',');
}

/** Instants around the first of every month of `year` (and the year after's January). */
function monthEdges(year: number): number[] {
  const instants: number[] = [];
  for (let month = 0; month <= 12; month++) {
    const date = new Date(0);
    date.setUTCFullYear(year, month, 1);
    const start = date.getTime();
    if (!Number.isFinite(start)) continue;
    instants.push(start, start - 1, start + 1, start - 0.5, start + 0.5, start - 0.25, start + 86_399_999, start - 86_400_000);
  }
  return instants;
}

describeWithRedis('Redis consume: quota windows generated from QUOTA_WINDOWS', () => {
  let server: RedisServer;
  let client: Redis;
  let namespace = 0;

  beforeAll(async () => {
    server = await RedisServer.start();
    client = server.client();
    await new Promise((resolve) => client.once('ready', resolve));
  });

  afterAll(async () => {
    await client?.quit();
    await server?.stop();
  });

  async function luaIndices(instants: readonly number[]): Promise<string[]> {
    const out: string[] = [];
    for (let i = 0; i < instants.length; i += 1000) {
      const batch = instants.slice(i, i + 1000);
      out.push(...((await client.eval(INDICES_SCRIPT, 0, ...batch.map(String))) as string[]));
    }
    return out;
  }

  async function expectAgreement(instants: readonly number[]): Promise<void> {
    const got = await luaIndices(instants);
    const mismatches = instants
      .map((at, i) => ({ at, iso: Number.isNaN(new Date(Math.floor(at)).getTime()) ? 'invalid' : new Date(Math.floor(at)).toISOString(), lua: got[i], js: expectedIndices(at) }))
      .filter((row) => row.lua !== row.js);
    expect(mismatches.slice(0, 10)).toEqual([]);
  }

  it('generates one WINDOWS entry per window of QUOTA_WINDOWS, in its order, with its counter fields', () => {
    const entries = WINDOW_LUA.split('\n').filter((line) => line.trim().startsWith('{ name ='));
    expect(entries).toHaveLength(QUOTA_WINDOWS.length);
    QUOTA_WINDOWS.forEach((window, i) => {
      expect(entries[i]).toContain(`name = '${window.name}'`);
      expect(entries[i]).toContain(`index = '${counterField(window.indexField)}'`);
      expect(entries[i]).toContain(`count = '${counterField(window.countField)}'`);
      expect(entries[i]).toContain(`length = ${window.lengthMs === null ? 'false' : window.lengthMs}`);
      expect(entries[i]).toContain(`limit = ${6 + i}`);
    });
    expect(CONSUME_SCRIPT).toContain(WINDOW_LUA);
  });

  it('computes every window index like windowIndex at month boundaries: leap years, centuries, before 1970, fractions', async () => {
    const years = [
      1970, 1969, 1968, 1900, 1904, 2000, 2001, 2024, 2025, 2026, 2100, 2400, 1600, 1601, 1599, 400, 100, 4, 1, 0, -1, -4, -100, -399, -400,
      -401, 9999, 10000, 275759, 275760, -271820, -271821,
    ];
    const instants = years.flatMap(monthEdges);
    instants.push(0, -0.5, 0.5, -1, 1, -0.999, 86_400_000 * 59, Date.UTC(2024, 1, 29, 23, 59, 59, 999), Date.UTC(2023, 1, 28, 23, 59, 59, 999));
    instants.push(MAX_DATE, -MAX_DATE, MAX_DATE - 1, -MAX_DATE + 1, MAX_DATE + 1, -MAX_DATE - 1, 1e16, -1e16);
    await expectAgreement(instants);
  });

  it('computes every window index like windowIndex for 20 000 random instants across the range of a Date', async () => {
    const random = prng(20_260_115);
    const instants: number[] = [];
    for (let i = 0; i < 5_000; i++) instants.push(Math.floor((random() * 2 - 1) * MAX_DATE));
    // Denser around today and the epoch, where keys live; some with fractions of a millisecond.
    for (let i = 0; i < 5_000; i++) instants.push(Math.floor((random() * 2 - 1) * 4e12));
    for (let i = 0; i < 5_000; i++) instants.push(1.7e12 + random() * 1e11);
    for (let i = 0; i < 5_000; i++) instants.push((random() * 2 - 1) * 1e11);
    await expectAgreement(instants);
  });

  it('agrees with decideConsume on random sequences of clocks and limits, window counts included', async () => {
    const random = prng(42);
    const pick = <T>(values: readonly T[]): T => values[Math.floor(random() * values.length)] as T;
    const store = new RedisStore({ client, keyPrefix: `windows${++namespace}:` });
    const starts = [Date.UTC(2024, 1, 29, 23, 59, 58), Date.UTC(2025, 11, 31, 23, 59, 59), Date.UTC(1969, 11, 31, 23, 59, 59, 990), Date.UTC(2026, 0, 15, 12)];
    const steps = [0, 0, 1, 250, 999, 1_000, 30_000, 59_999, 60_000, 3_600_000, 86_400_000, 31 * 86_400_000, -5_000];
    for (let run = 0; run < 40; run++) {
      const rateLimit: RateLimit = {};
      if (random() < 0.5) rateLimit.perMinute = 1 + Math.floor(random() * 4);
      if (random() < 0.5) rateLimit.perHour = 1 + Math.floor(random() * 6);
      if (random() < 0.4) rateLimit.perDay = 1 + Math.floor(random() * 8);
      if (random() < 0.5) rateLimit.perMonth = 1 + Math.floor(random() * 10);
      if (random() < 0.3) {
        rateLimit.perSecond = pick([0.5, 1, 2, 3]);
        if (random() < 0.5) rateLimit.burst = pick([1, 2, 5]);
      }
      const maxUses = random() < 0.2 ? 5 + Math.floor(random() * 10) : null;
      const record = testRecord(Date.UTC(1960, 0, 1), { maxUses, rateLimit });
      await store.insert(record);
      let state: CounterState = initialCounters(0);
      let now = pick(starts);
      for (let i = 0; i < 25; i++) {
        now += pick(steps);
        const request: ConsumeRequest = { now, maxUses, rateLimit };
        const expected = decideConsume(state, request);
        const got = await store.consume(record.id, request);
        expect({ run, i, now, outcome: got }).toEqual({ run, i, now, outcome: expected.outcome as ConsumeOutcome });
        if (expected.next) state = expected.next;
      }
    }
  });

  describe('on a record', () => {
    let store: RedisStore;
    let ns: string;

    beforeEach(() => {
      ns = `windows${++namespace}:`;
      store = new RedisStore({ client, keyPrefix: ns });
    });

    const recordKey = (id: string) => `${ns}key:{${id}}`;
    const NOW = Date.UTC(2026, 0, 31, 23, 59, 30);

    it('writes the empty state of every window for a new record', async () => {
      const record = testRecord(NOW);
      await store.insert(record);
      const hash = await client.hgetall(recordKey(record.id));
      const empty = initialCounters(0);
      for (const window of QUOTA_WINDOWS) {
        expect(hash[counterField(window.indexField)]).toBe(String(empty[window.indexField]));
        expect(hash[counterField(window.countField)]).toBe(String(empty[window.countField]));
      }
      expect(hash['c:tokens']).toBe('null');
      expect(hash['c:tokensAt']).toBe('0');
    });

    it('reports the count of exactly the windows whose quota is set', async () => {
      for (const window of QUOTA_WINDOWS) {
        const record = testRecord(NOW);
        await store.insert(record);
        const rateLimit: RateLimit = { [window.limit]: 2 };
        expect(await store.consume(record.id, { now: NOW, maxUses: null, rateLimit })).toEqual({ admitted: true, useCount: 1, [window.countField]: 1 });
        expect(await store.consume(record.id, { now: NOW, maxUses: null, rateLimit })).toEqual({ admitted: true, useCount: 2, [window.countField]: 2 });
        expect(await store.consume(record.id, { now: NOW, maxUses: null, rateLimit })).toEqual({
          admitted: false,
          refusal: 'quota_exceeded',
          useCount: 2,
          [window.countField]: 2,
        });
      }
    });

    it('counts every window whether or not a quota is set, and a refusal in none', async () => {
      const record = testRecord(NOW);
      await store.insert(record);
      await store.consume(record.id, { now: NOW, maxUses: null, rateLimit: null });
      await store.consume(record.id, { now: NOW, maxUses: null, rateLimit: { perMonth: 2 } });
      expect(await store.consume(record.id, { now: NOW, maxUses: null, rateLimit: { perMinute: 5, perMonth: 2 } })).toEqual({
        admitted: false,
        refusal: 'quota_exceeded',
        useCount: 2,
        minuteCount: 2,
        monthCount: 2,
      });
      const hash = await client.hgetall(recordKey(record.id));
      for (const window of QUOTA_WINDOWS) {
        expect(hash[counterField(window.indexField)]).toBe(String(windowIndex(window, NOW)));
        expect(hash[counterField(window.countField)]).toBe('2');
      }
      // A new minute, and a new month 30 seconds later: those counts start again, the hour's and day's do not.
      expect(await store.consume(record.id, { now: NOW + 30_000, maxUses: null, rateLimit: { perMinute: 1, perHour: 9, perDay: 9, perMonth: 1 } })).toEqual({
        admitted: true,
        useCount: 3,
        minuteCount: 1,
        hourCount: 1,
        dayCount: 1,
        monthCount: 1,
      });
    });

    it('goes on counting a record laid out before the minute, hour and month windows (their counters absent)', async () => {
      const record = testRecord(NOW, { rateLimit: { perDay: 3 } });
      await store.insert(record);
      const day = Math.floor(NOW / 86_400_000);
      await client.hdel(recordKey(record.id), 'c:minute', 'c:minuteCount', 'c:hour', 'c:hourCount', 'c:month', 'c:monthCount');
      await client.hset(recordKey(record.id), { useCount: '2', 'c:day': String(day), 'c:dayCount': '2', 'c:tokensAt': String(NOW - 1) });
      const rateLimit = { perMinute: 5, perHour: 5, perDay: 3, perMonth: 5 };
      expect(await store.consume(record.id, { now: NOW, maxUses: null, rateLimit })).toEqual({
        admitted: true,
        useCount: 3,
        minuteCount: 1,
        hourCount: 1,
        dayCount: 3,
        monthCount: 1,
      });
      expect(await store.consume(record.id, { now: NOW, maxUses: null, rateLimit })).toEqual({
        admitted: false,
        refusal: 'quota_exceeded',
        useCount: 3,
        minuteCount: 1,
        hourCount: 1,
        dayCount: 3,
        monthCount: 1,
      });
    });

    it.each(
      QUOTA_WINDOWS.flatMap((window) => [
        [counterField(window.indexField), 'soon'],
        [counterField(window.indexField), '1.5'],
        [counterField(window.indexField), 'nan'],
        [counterField(window.countField), 'lots'],
        [counterField(window.countField), '-1'],
        [counterField(window.countField), 'inf'],
      ]),
    )('fails closed (an error, nothing written) on %s = %j', async (field, junk) => {
      const record = testRecord(NOW);
      await store.insert(record);
      await store.consume(record.id, { now: NOW, maxUses: null, rateLimit: null });
      await client.hset(recordKey(record.id), field, junk);
      const before = await client.hgetall(recordKey(record.id));
      await expect(store.consume(record.id, { now: NOW, maxUses: null, rateLimit: null })).rejects.toThrow(`counter ${field}`);
      expect(await client.hgetall(recordKey(record.id))).toEqual(before);
    });

    it('reports the most lasting refusal: month before day, hour and minute', async () => {
      const record = testRecord(NOW);
      await store.insert(record);
      const rateLimit = { perMinute: 1, perHour: 1, perDay: 1, perMonth: 1, perSecond: 1 };
      expect((await store.consume(record.id, { now: NOW, maxUses: null, rateLimit }))?.admitted).toBe(true);
      expect(await store.consume(record.id, { now: NOW, maxUses: null, rateLimit })).toEqual({
        admitted: false,
        refusal: 'quota_exceeded',
        useCount: 1,
        minuteCount: 1,
        hourCount: 1,
        dayCount: 1,
        monthCount: 1,
        tokens: 0,
      });
      expect(await store.consume(record.id, { now: NOW, maxUses: 1, rateLimit })).toMatchObject({ admitted: false, refusal: 'usage_exhausted' });
    });
  });
});
