/**
 * `consistency: 'leased'` across processes: three application processes
 * (test/fixtures/leased-worker.cjs) share one Redis, then one PostgreSQL, each running keygate in
 * leased mode and calling keys.verify() as fast as 20 loops at once go. What the documentation of
 * `consistency` and `lease` promises (src/manager/options.ts), checked with real numbers:
 *
 * - never an over-admission: of maxUses, of a day quota, of the token bucket (in every interval,
 *   the admissions of all processes together are at most what one exact bucket admits);
 * - the under-admission (a refusal while other processes hold units) is bounded by the units
 *   the processes hold, and each scenario prints how large it was;
 * - unspent units come back on close(), exactly: a last process can use precisely the rest, also
 *   when a process went idle for longer than its hold lasts in the store;
 * - a revocation made elsewhere reaches every process within the documented bound: at once on
 *   Redis (pub/sub), within lease.ttlMs / 2 on PostgreSQL (no change notifications across processes).
 *
 * The single-process behaviour is test/leased/leased-mode.test.ts's.
 */
import { type ApiKeyStore, type Keygate, keygate } from '../../src/index';
import type { LeaseOptions } from '../../src/manager/options';
import { RedisStore } from '../../src/redis';
import { SqlStore } from '../../src/sql';
import { describePostgres, postgresWithPool } from '../helpers/postgres-server';
import { RedisServer, describeWithRedis } from '../helpers/redis-server';
import { Worker } from '../helpers/workers';

const PROCESSES = 3;
/** verify() calls each process keeps in flight. */
const IN_FLIGHT = 20;

/** What a worker reports after a load (see test/fixtures/leased-worker.cjs). Instants are epoch ms. */
interface Load {
  admitted: number;
  /** When asked for: [called, answered] of each admission, which happened somewhere between. */
  spans: Array<[number, number]>;
  refused: Record<string, number>;
  /** An admission had surely happened by then (the earliest answer of an admitted call). */
  firstAdmittedBy: number | null;
  /** An admission surely happened after then (the latest call that was admitted). */
  lastAdmittedAfter: number | null;
  startedAt: number;
  endedAt: number;
  calls: number;
  slowestMs: number;
}

/** How a suite's processes reach the shared store: the parent's own store, and the workers' config. */
interface Shared {
  store: ApiKeyStore;
  config: Record<string, unknown>;
}

/** How a store carries a revocation to processes that hold leases. */
interface RevocationPath {
  /** Lease options for the revocation scenario. */
  lease: Required<Pick<LeaseOptions, 'ttlMs'>> & LeaseOptions;
  /** The documented bound, in ms after the record's revokedAt (the instant the revoking instance asked). */
  boundMs: number;
  /** What the bound rests on, for the test's name. */
  how: string;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const sum = (values: number[]): number => values.reduce((a, b) => a + b, 0);

/** The most units one reservation asks for, as the lease book caps it: maxUnits, and share of the limit. */
function leaseCap(lease: Required<Pick<LeaseOptions, 'maxUnits' | 'share'>>, limit: number): number {
  return Math.max(1, Math.min(lease.maxUnits, Math.floor(limit * lease.share)));
}

/** Every refusal code the loads met, with its count over all processes. */
function refusals(loads: Load[]): Record<string, number> {
  const all: Record<string, number> = {};
  for (const load of loads) for (const [code, count] of Object.entries(load.refused)) all[code] = (all[code] ?? 0) + count;
  return all;
}

/**
 * The interval that most exceeds what one token bucket (capacity `burst`, refilled at
 * `perSecond`) admits in it: `burst + perSecond × length`. An admission is known only to lie
 * between its call and its answer, so an interval [s, e] surely holds every admission called at
 * or after s and answered by e; every call instant is tried as s and every answer as e, ties
 * counted whole. `excess` is how far over the bucket (negative: under).
 */
function worstInterval(spans: Array<[number, number]>, perSecond: number, burst: number): { excess: number; count: number; lengthMs: number } {
  const byCall = [...spans].sort((a, b) => a[0] - b[0]);
  // The answers of the admissions called at or after the current s, kept sorted.
  const answers: number[] = [];
  let worst = { excess: -Infinity, count: 0, lengthMs: 0 };
  for (let i = byCall.length - 1; i >= 0; i--) {
    const [from, answered] = byCall[i] as [number, number];
    let low = 0;
    let high = answers.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if ((answers[middle] as number) < answered) low = middle + 1;
      else high = middle;
    }
    answers.splice(low, 0, answered);
    if (i > 0 && (byCall[i - 1] as [number, number])[0] === from) continue;
    for (let m = 0; m < answers.length; m++) {
      if (m + 1 < answers.length && answers[m + 1] === answers[m]) continue;
      const to = answers[m] as number;
      const excess = m + 1 - (burst + (perSecond * (to - from)) / 1000);
      if (excess > worst.excess) worst = { excess, count: m + 1, lengthMs: to - from };
    }
  }
  return worst;
}

/** Waits out the end of the UTC day if it is nearer than `ms`: a day quota must be tested within one day. */
async function clearOfMidnight(ms: number): Promise<void> {
  const left = 86_400_000 - (Date.now() % 86_400_000);
  if (left < ms) await sleep(left + 100);
}

/**
 * The scenarios, on the store `shared()` describes (set up by the enclosing describe's earlier
 * beforeAll). Three workers are started once for all of them; each scenario opens a keygate
 * instance of its own in every worker, with its own lease options, and closes it.
 */
function leasedAcrossProcesses(kind: string, shared: () => Shared, revocation: RevocationPath): void {
  // A describe of its own: its afterAll (the workers' close() gives units back) runs before the
  // enclosing one stops the store's server.
  describe(`${PROCESSES} processes, ${IN_FLIGHT} verify() calls in flight each`, () => {
    scenarios(kind, shared, revocation);
  });
}

function scenarios(kind: string, shared: () => Shared, revocation: RevocationPath): void {
  const workers: Worker[] = [];
  let admin: Keygate;

  beforeAll(async () => {
    const { store, config } = shared();
    // The parent manages the keys in exact mode: what it reads is the store's count, no lease of its own.
    admin = keygate({ store, hashing: 'sha256' });
    workers.push(...(await Promise.all(Array.from({ length: PROCESSES }, () => Worker.start('leased-worker.cjs', config)))));
  }, 60_000);

  afterAll(async () => {
    await Promise.all(workers.map((worker) => worker.stop()));
    await admin?.close();
  });

  const openAll = (lease: LeaseOptions) => Promise.all(workers.map((worker) => worker.ask({ type: 'open', lease }, 'opened')));
  /** Runs a load in every worker at once: `load(index)` says each one's. */
  const loadEach = async (load: (index: number) => Record<string, unknown>): Promise<Load[]> =>
    (await Promise.all(workers.map((worker, index) => worker.ask({ type: 'load', inFlight: IN_FLIGHT, ...load(index) }, 'loaded', 30_000)))) as unknown as Load[];
  const loadAll = (load: Record<string, unknown>): Promise<Load[]> => loadEach(() => load);
  const closeAll = () => Promise.all(workers.map((worker) => worker.ask({ type: 'close' }, 'closed')));
  const useCount = async (id: string): Promise<number> => (await admin.get(id))?.useCount ?? Number.NaN;

  /** A last process (the parent, exact mode: one consume per request) uses the key until refused. */
  async function useTheRest(key: string): Promise<{ admitted: number; code: string }> {
    for (let admitted = 0; ; admitted++) {
      const result = await admin.verify(key);
      if (!result.ok) return { admitted, code: result.error.code };
    }
  }

  /**
   * A count limit (maxUses, a day quota) hammered past its size by the three processes: never more
   * admitted than the limit; while they hold leases, the store counts at most their units beyond
   * the admissions; after close() exactly the admissions; and the rest is there to be used.
   */
  async function countLimit(limit: number, lease: Required<Pick<LeaseOptions, 'ttlMs' | 'maxUnits' | 'share'>>, key: string, id: string, code: string, label: string): Promise<void> {
    const cap = leaseCap(lease, limit);
    await openAll(lease);
    // The first process stops early, still holding most of a lease; the other two each ask for
    // the whole limit and run it dry while the first holds its units: the early refusals leased
    // mode trades for its speed, which this measures.
    const loads = await loadEach((index) => ({ key, attempts: index === 0 ? Math.round(limit / 8) : limit }));
    const admittedEach = loads.map((load) => load.admitted);
    const admitted = sum(admittedEach);
    const refused = refusals(loads);
    expect(Object.keys(refused)).toEqual([code]);
    expect(admitted).toBeLessThanOrEqual(limit);

    // The processes are idle now, each holding what is left of its lease. The loads take well under
    // a second, far less than ttlMs: the holds are all still live in the store.
    // Demand exceeded the limit, so the store ran dry, and nothing has been given back since (no
    // lease has ended): every unit counted and not admitted is held by a process.
    const counted = await useCount(id);
    expect(counted).toBe(limit);
    const held = counted - admitted;
    expect(held).toBeGreaterThanOrEqual(0);
    expect(held).toBeLessThanOrEqual(PROCESSES * cap);
    const underAdmission = limit - admitted;

    await closeAll();
    expect(await useCount(id)).toBe(admitted);
    const rest = await useTheRest(key);
    expect(rest).toEqual({ admitted: limit - admitted, code });
    expect(admitted + rest.admitted).toBe(limit);
    console.log(
      `[${kind}] ${label} ${limit}, lease { maxUnits: ${lease.maxUnits}, share: ${lease.share} } (cap ${cap}): ${admitted} admitted (${admittedEach.join(' + ')}), ` +
        `${refused[code]} refused, ${held} held at the pause (bound ${PROCESSES * cap}); under-admission ${underAdmission} (${((100 * underAdmission) / limit).toFixed(1)} %); ` +
        `after close() the store counts ${admitted} and a last process used the ${rest.admitted} left`,
    );
  }

  it('maxUses: never more admissions than maxUses; unspent units come back on close(), and the rest is exactly usable', async () => {
    const maxUses = 500;
    const lease = { ttlMs: 5_000, maxUnits: 50, share: 0.2 };
    const { key, apiKey } = await admin.create({ name: 'maxUses', maxUses });
    await countLimit(maxUses, lease, key, apiKey.id, 'usage_exhausted', 'maxUses');
  }, 30_000);

  it('perDay: never more admissions in the day than the quota; unspent units come back on close(), and the rest is exactly usable', async () => {
    const perDay = 600;
    const lease = { ttlMs: 5_000, maxUnits: 50, share: 0.2 };
    await clearOfMidnight(20_000);
    const { key, apiKey } = await admin.create({ name: 'perDay', rateLimit: { perDay } });
    // A key without maxUses still counts its uses: in one day, useCount is the day's count.
    await countLimit(perDay, lease, key, apiKey.id, 'quota_exceeded', 'perDay');
  }, 60_000);

  it('perSecond: in every interval, all processes together admit no more than one exact token bucket would', async () => {
    const perSecond = 200;
    const burst = 50;
    const lease = { ttlMs: 1_000, maxUnits: 50, share: 0.3 };
    const durationMs = 3_000;
    const { key } = await admin.create({ name: 'perSecond', rateLimit: { perSecond, burst } });
    await openAll(lease);
    const loads = await loadAll({ key, durationMs, startAt: Date.now() + 200, spans: true });
    expect(Object.keys(refusals(loads))).toEqual(['rate_limited']);
    const spans = loads.flatMap((load) => load.spans);
    // No slack: each admission is placed only where it surely was (between its call and its answer),
    // so neither the clock's resolution nor a pause of the process between keygate's decision and
    // the worker's stamp (a GC, the scheduler: this machine runs 3 workers, the store and jest on 2
    // cores) can make an interval look fuller than it was. Single stamps taken after each answer
    // (Date.now()) showed up to 0.8 token over the bucket from those two alone.
    const worst = worstInterval(spans, perSecond, burst);
    expect(worst.excess).toBeLessThanOrEqual(0);
    const from = Math.min(...loads.map((load) => load.startedAt));
    const to = Math.max(...loads.map((load) => load.endedAt));
    const exactMost = burst + (perSecond * (to - from)) / 1000;
    expect(spans.length).toBeLessThanOrEqual(exactMost);
    // Not vacuous: every process admitted, and they were refused for the rate, not for a fault.
    for (const load of loads) expect(load.admitted).toBeGreaterThan(0);
    await closeAll();
    console.log(
      `[${kind}] perSecond ${perSecond}, burst ${burst}, lease { ttlMs: ${lease.ttlMs}, maxUnits: ${lease.maxUnits}, share: ${lease.share} } (cap ${leaseCap(lease, burst)}), ${(to - from).toFixed(0)} ms: ` +
        `${spans.length} admitted (${loads.map((load) => load.admitted).join(' + ')}) of the ${exactMost.toFixed(0)} an exact bucket admits at most ` +
        `(${((100 * spans.length) / exactMost).toFixed(1)} %; after the burst ${(((spans.length - burst) * 1000) / (to - from)).toFixed(0)}/s = ` +
        `${((100 * (spans.length - burst) * 1000) / (to - from) / perSecond).toFixed(1)} % of perSecond); ` +
        `fullest interval ${worst.count} admissions in ${worst.lengthMs.toFixed(1)} ms, ${(-worst.excess).toFixed(2)} under the bucket's most`,
    );
  }, 30_000);

  it(`a revocation made through another instance reaches every leased process ${revocation.how}`, async () => {
    const warmUpMs = 1_000;
    const { key, apiKey } = await admin.create({ name: 'revoked elsewhere' });
    await openAll(revocation.lease);
    const loading = loadAll({ key, durationMs: warmUpMs + revocation.boundMs + 1_000 });
    await sleep(warmUpMs);
    const revokedAt = (await admin.revoke(apiKey.id)).revokedAt?.getTime() ?? Number.NaN;
    // From here on the revocation is in the store.
    const written = Date.now();
    const loads = await loading;
    await closeAll();
    for (const load of loads) {
      // Each process was admitting under its lease before the revocation, and was refused after it.
      expect(load.firstAdmittedBy).toBeLessThan(revokedAt);
      expect(Object.keys(load.refused)).toEqual(['api_key_revoked']);
      expect(load.lastAdmittedAfter).toBeLessThanOrEqual(revokedAt + revocation.boundMs);
    }
    const reached = loads.map((load) => ((load.lastAdmittedAfter ?? 0) - revokedAt).toFixed(0));
    console.log(
      `[${kind}] revocation, lease { ttlMs: ${revocation.lease.ttlMs} }: revoke() took ${written - revokedAt} ms; last admission ${reached.join(', ')} ms after revokedAt ` +
        `in the three processes (bound ${revocation.boundMs} ms); ${sum(loads.map((load) => load.admitted))} admitted, slowest verify() ${Math.max(...loads.map((load) => load.slowestMs)).toFixed(0)} ms`,
    );
  }, 30_000);

  it('units of a process that went idle come back on close() even once their hold has lapsed in the store', async () => {
    const maxUses = 500;
    const lease = { ttlMs: 1_000, maxUnits: 50, share: 0.2 };
    const { key, apiKey } = await admin.create({ name: 'idle', maxUses });
    await openAll(lease);
    // One call at a time: each process reserves one lease (8 units, the first size) and spends 5.
    const loads = await loadAll({ key, attempts: 5, inFlight: 1 });
    const admitted = sum(loads.map((load) => load.admitted));
    expect(admitted).toBe(PROCESSES * 5);
    // 8 reserved each, unless a process's idle timer (at ttlMs / 2) has already given its 3 back.
    const held = await useCount(apiKey.id);
    expect(held).toBeGreaterThanOrEqual(admitted);
    expect(held).toBeLessThanOrEqual(PROCESSES * 8);
    // Traffic stops for longer than the hold lasts; then the processes shut down one after another.
    await sleep(lease.ttlMs + 200);
    for (const worker of workers) await worker.ask({ type: 'close' }, 'closed');
    expect(await useCount(apiKey.id)).toBe(admitted);
    expect(await useTheRest(key)).toEqual({ admitted: maxUses - admitted, code: 'usage_exhausted' });
  }, 30_000);
}

describeWithRedis('leased mode on a shared Redis', () => {
  let server: RedisServer;
  let client: ReturnType<RedisServer['client']>;
  const namespace = `leased-mp-${process.pid}:`;
  beforeAll(async () => {
    server = await RedisServer.start();
    client = server.client();
  });
  afterAll(async () => {
    await client?.quit();
    await server?.stop();
  });

  // A hold far longer than the bound: only the change notification can explain meeting it.
  leasedAcrossProcesses('Redis', () => ({ store: new RedisStore({ client, keyPrefix: namespace }), config: { store: 'redis', port: server.port, namespace } }), {
    lease: { ttlMs: 10_000, maxUnits: 1_000_000 },
    boundMs: 1_000,
    how: 'at once, through the store’s change notifications (within 1 s, though its leases may be spent for 5 s)',
  });
});

/**
 * A store round trip, beyond the documented lease.ttlMs / 2: revokedAt is the instant the revoking
 * instance asked, and the write reaches the row a round trip later. A reservation that got there
 * first still saw the key active, and its process spends it for ttlMs / 2 from when it began.
 */
const POSTGRES_ROUND_TRIP_MS = 100;

describePostgres('leased mode on a shared PostgreSQL', () => {
  const pg = postgresWithPool(4);
  let store: SqlStore;
  beforeAll(async () => {
    store = new SqlStore({ dialect: 'postgres', client: pg.pool });
    await store.migrate();
  });

  const ttlMs = 1_000;
  leasedAcrossProcesses('PostgreSQL', () => ({ store, config: { store: 'postgres', connectionString: pg.server.connectionString } }), {
    lease: { ttlMs, maxUnits: 1_000_000 },
    boundMs: ttlMs / 2 + POSTGRES_ROUND_TRIP_MS,
    how: `within lease.ttlMs / 2 plus a store round trip (${ttlMs / 2} + ${POSTGRES_ROUND_TRIP_MS} ms), with no notification across processes`,
  });
});
