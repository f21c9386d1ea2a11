/**
 * The audit trail, usage analytics and alert claims of RedisStore (capabilities `audit`, `usage`,
 * `alerts`), observed on real servers (see the header comment of src/stores/redis/redis-store.ts);
 * the store contract covers what every store does:
 * - on both deployments: entries round-trip exactly and list in (at, id) order under every
 *   combination of filters, range and cursor (checked against a model), also when the filters
 *   rarely meet (several short scripts, not one long one); usage cells add up exactly, once per
 *   (batch id, key), also across processes; a purge removes a record's usage with it; a claim is
 *   judged on the caller's clock and won by exactly one of many processes;
 * - Redis Cluster: every script's keys are in one hash slot (the audit trail in `{audit}`'s, a
 *   key's usage in its record's);
 * - the record fields of schema version 4 (`rotationFrequencyDays`, `alerts`) round-trip, and a
 *   record hash written before they existed reads them as null.
 */
import { randomUUID } from 'node:crypto';
import Redis, { Cluster } from 'ioredis';
import { RedisStore } from 'keygate/redis';
import type { ApiKeyPatch, ApiKeyRecord } from 'keygate';
import type { AuditEntry, StoreAuditQuery, UsageBatch, UsageCell } from '../../src/stores/store';
import { RETAIN_BATCH_IDS_MS } from '../../src/usage/cells';
import { testRecord } from '../helpers/records';
import { clusterDeployment, commandsRunDuring, describeWithRedis, keyspaceOf, ready, RedisServer, standaloneDeployment } from '../helpers/redis-server';
import { Worker } from '../helpers/workers';

jest.setTimeout(60_000);

const NOW = Date.UTC(2026, 0, 15, 12, 0, 0);
const SECOND = 1000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const TODAY = Math.floor(NOW / DAY);
/** The worker fixture, relative to test/fixtures (where the workers helper looks). */
const WORKER = '../redis/fixtures/observability-worker.cjs';

async function rejection(operation: Promise<unknown>): Promise<Error & { code?: string }> {
  return operation.then(
    () => {
      throw new Error('the call succeeded');
    },
    (error: unknown) => error as Error & { code?: string },
  );
}

/** The patch keygate's `delete` sends. */
function deletion(at: number): ApiKeyPatch {
  return { status: 'revoked', deletedAt: new Date(at), updatedAt: new Date(at) };
}

/** A deterministic pseudo-random generator (mulberry32), so a failing model test replays. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function entry(overrides: Partial<AuditEntry> = {}): AuditEntry {
  return { id: randomUUID(), at: new Date(NOW), action: 'key.updated', keyId: 'key-1', actor: null, changes: { name: 'x' }, ...overrides };
}

/** The model of listAudit: every filter, the range and the cursor, in (at, id) order. */
function expectedAudit(entries: readonly AuditEntry[], query: StoreAuditQuery): AuditEntry[] {
  const position = (e: { at: Date; id: string }) => [e.at.getTime(), e.id] as const;
  const before = (a: readonly [number, string], b: readonly [number, string]) => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
  return entries
    .filter(
      (e) =>
        (query.keyId === undefined || e.keyId === query.keyId) &&
        (query.actorId === undefined || e.actor?.id === query.actorId) &&
        (query.tenantId === undefined || e.tenantId === query.tenantId) &&
        (query.environment === undefined || e.environment === query.environment) &&
        (query.from === undefined || e.at.getTime() >= query.from.getTime()) &&
        (query.to === undefined || e.at.getTime() < query.to.getTime()) &&
        (query.after === undefined || before(position(query.after), position(e))),
    )
    .sort((a, b) => (before(position(a), position(b)) ? -1 : 1))
    .slice(0, query.limit);
}

function cell(keyId: string, day: number, route: string | null, outcome: string, requests: number, micros = 1000 * requests): UsageCell {
  return {
    keyId,
    day,
    route,
    outcome,
    requests,
    status2xx: outcome === 'admitted' ? requests : 0,
    status3xx: 0,
    status4xx: outcome === 'admitted' ? 0 : requests,
    status5xx: 0,
    totalResponseMicros: micros,
    maxResponseMicros: Math.ceil(micros / Math.max(1, requests)),
  };
}

function batch(cells: UsageCell[], now = NOW, id: string = randomUUID()): UsageBatch {
  return { id, cells, now: new Date(now) };
}

/** Cells sorted by identity, to compare readUsage (any order) with an expectation. */
function sorted(cells: UsageCell[]): UsageCell[] {
  const identity = (c: UsageCell) => JSON.stringify([c.keyId, c.day, c.route, c.outcome]);
  return [...cells].sort((a, b) => (identity(a) < identity(b) ? -1 : 1));
}

/** The sum of cells per identity, as a store must hold them. */
function summed(cells: UsageCell[]): UsageCell[] {
  const sums = new Map<string, UsageCell>();
  for (const c of cells) {
    const key = JSON.stringify([c.keyId, c.day, c.route, c.outcome]);
    const into = sums.get(key);
    if (!into) {
      sums.set(key, { ...c });
      continue;
    }
    for (const field of ['requests', 'status2xx', 'status3xx', 'status4xx', 'status5xx', 'totalResponseMicros'] as const) into[field] += c[field];
    into.maxResponseMicros = Math.max(into.maxResponseMicros, c.maxResponseMicros);
  }
  return sorted([...sums.values()]);
}

interface Deployment {
  /** The client the stores use. */
  client(): Redis | Cluster;
  /** One plain client per node (a single one on standalone Redis), for KEYS and CLUSTER KEYSLOT. */
  nodes(): Redis[];
  /** What a worker needs to connect: a port, or the Cluster's startup nodes. */
  workerTarget(): { port: number } | { cluster: { host: string; port: number }[] };
  cluster: boolean;
}

function describeObservability(deployment: string, setUp: () => Deployment): void {
  describe(`RedisStore audit, usage and alerts on ${deployment}`, () => {
    const context = setUp();
    // Known when the suite is declared: each deployment's own checks run on it alone.
    const itOnCluster = context.cluster ? it : it.skip;
    const itOnStandalone = context.cluster ? it.skip : it;
    let namespace = 0;
    let ns = '';

    beforeEach(() => {
      ns = `obs${++namespace}:`;
    });

    function store(): RedisStore {
      return new RedisStore({ client: context.client(), keyPrefix: ns });
    }

    function keyspace(): Promise<Record<string, unknown>> {
      return keyspaceOf(context.nodes(), `${ns}*`);
    }

    /** The hash slot of a key (on a Cluster; standalone Redis has none to check). */
    function slotOf(key: string): Promise<number> {
      return context.nodes()[0]!.cluster('KEYSLOT', key) as Promise<number>;
    }

    describe('audit', () => {
      it('round-trips entries exactly: actor forms, absent tenant and environment, nested unicode changes of 64 KiB, instants before 1970', async () => {
        const redisStore = store();
        const big = 'é🔑'.repeat(64 * 1024 / 8);
        const entries: AuditEntry[] = [
          entry({ actor: null }),
          entry({ at: new Date(NOW + 1), actor: { id: 'user-1' }, tenantId: 't-1' }),
          entry({ at: new Date(NOW + 2), actor: { id: 'admin-key', keyPrefix: 'pk_live_abc' }, environment: 'live' }),
          entry({ at: new Date(-DAY - 1), keyId: null, action: 'key.purged', changes: { removed: 3, deletedBefore: new Date(NOW).toISOString() } }),
          entry({ at: new Date(NOW + 3), changes: { nested: { list: [1, 'two', null, { three: [true, false] }], text: big, 'ключ': 'значение' } } }),
        ];
        for (const e of entries) await redisStore.appendAudit(e);
        const listed = await redisStore.listAudit({ limit: 100 });
        expect(listed).toEqual([entries[3], entries[0], entries[1], entries[2], entries[4]]);
        expect(Object.keys(listed[1]!).sort()).toEqual(['action', 'actor', 'at', 'changes', 'id', 'keyId']);
        expect(Object.keys(listed[3]!.actor!)).toEqual(['id', 'keyPrefix']);
        expect(Object.keys(listed[2]!.actor!)).toEqual(['id']);
        expect(listed[0]!.at).toBeInstanceOf(Date);
        // Fresh objects: changing one changes nothing stored.
        listed[4]!.changes.nested = 'changed';
        listed[2]!.actor!.id = 'someone else';
        expect(await redisStore.listAudit({ limit: 100 })).toEqual([entries[3], entries[0], entries[1], entries[2], entries[4]]);
      });

      it('refuses an id that exists with already_exists, changing nothing', async () => {
        const redisStore = store();
        const first = entry({ keyId: 'k-1', tenantId: 't-1' });
        await redisStore.appendAudit(first);
        const before = await keyspace();
        const error = await rejection(redisStore.appendAudit({ ...first, keyId: 'k-2', tenantId: 't-2', environment: 'live', at: new Date(NOW - DAY) }));
        expect(error.code).toBe('already_exists');
        expect(await keyspace()).toEqual(before);
        expect(await redisStore.listAudit({ limit: 10 })).toEqual([first]);
        expect(await redisStore.listAudit({ limit: 10, keyId: 'k-2' })).toEqual([]);
      });

      it('lists by (at, id) under every combination of filters, range, cursor and limit, as the model does', async () => {
        const redisStore = store();
        const next = random(13);
        const pick = <T>(values: readonly T[]): T => values[Math.floor(next() * values.length)] as T;
        const instants = [-2 * DAY, -1, 0, NOW - HOUR, NOW, NOW + 1, NOW + DAY];
        const entries: AuditEntry[] = [];
        for (let i = 0; i < 400; i++) {
          const e = entry({
            id: `e-${Math.floor(next() * 1e6).toString(36)}-${i}`,
            at: new Date(pick(instants)),
            keyId: pick(['k-1', 'k-2', 'k-3', null]),
            actor: pick([null, { id: 'a-1' }, { id: 'a-2', keyPrefix: 'pk_test_x' }]),
          });
          const tenant = pick(['t-1', 't-2', undefined]);
          const environment = pick(['live', 'test', undefined]);
          if (tenant !== undefined) e.tenantId = tenant;
          if (environment !== undefined) e.environment = environment;
          entries.push(e);
        }
        await Promise.all(entries.map((e) => redisStore.appendAudit(e)));
        for (let run = 0; run < 150; run++) {
          const query: StoreAuditQuery = { limit: pick([1, 3, 10, 50, 1000]) };
          if (next() < 0.5) query.keyId = pick(['k-1', 'k-2', 'k-3', 'k-none']);
          if (next() < 0.3) query.actorId = pick(['a-1', 'a-2']);
          if (next() < 0.4) query.tenantId = pick(['t-1', 't-2']);
          if (next() < 0.4) query.environment = pick(['live', 'test']);
          if (next() < 0.3) query.from = new Date(pick(instants));
          if (next() < 0.3) query.to = new Date(pick(instants));
          if (next() < 0.3) {
            const at = pick(entries);
            query.after = { at: at.at, id: next() < 0.5 ? at.id : 'e-m' };
          }
          expect({ query, listed: await redisStore.listAudit(query) }).toEqual({ query, listed: expectedAudit(entries, query) });
        }
        // Paging with the cursor through one filter gives the whole filtered trail, once each.
        const all = expectedAudit(entries, { tenantId: 't-1', limit: 10_000 });
        const paged: AuditEntry[] = [];
        let after: StoreAuditQuery['after'];
        for (;;) {
          const page = await redisStore.listAudit({ tenantId: 't-1', limit: 7, ...(after ? { after } : {}) });
          paged.push(...page);
          if (page.length < 7) break;
          after = { at: page[6]!.at, id: page[6]!.id };
        }
        expect(paged).toEqual(all);
      });

      /** 3000 entries of tenant `busy` in `live`, 3000 of `other` in `rare`, and two of `busy` in `rare` after them all. */
      async function rarelyMeeting(redisStore: RedisStore): Promise<AuditEntry[]> {
        const filler: AuditEntry[] = [];
        for (let i = 0; i < 3000; i++) {
          filler.push(entry({ at: new Date(NOW + i), tenantId: 'busy', environment: 'live' }));
          filler.push(entry({ at: new Date(NOW + i), tenantId: 'other', environment: 'rare' }));
        }
        const wanted = [entry({ at: new Date(NOW + 5000), tenantId: 'busy', environment: 'rare' }), entry({ at: new Date(NOW + 5001), tenantId: 'busy', environment: 'rare' })];
        await Promise.all([...filler, ...wanted].map((e) => redisStore.appendAudit(e)));
        return wanted;
      }

      it('finds entries whose filters rarely meet, past thousands that match one filter only', async () => {
        const redisStore = store();
        const wanted = await rarelyMeeting(redisStore);
        expect(await redisStore.listAudit({ tenantId: 'busy', environment: 'rare', limit: 10 })).toEqual(wanted);
        expect(await redisStore.listAudit({ tenantId: 'busy', environment: 'rare', limit: 1 })).toEqual([wanted[0]]);
        expect(await redisStore.listAudit({ tenantId: 'busy', environment: 'rare', limit: 10, to: new Date(NOW + 5001) })).toEqual([wanted[0]]);
        expect(await redisStore.listAudit({ tenantId: 'busy', environment: 'rare', limit: 10, after: { at: wanted[0]!.at, id: wanted[0]!.id } })).toEqual([wanted[1]]);
      });

      itOnStandalone('walks such a query in several short scripts, never one that reads the whole index', async () => {
        const redisStore = store();
        const wanted = await rarelyMeeting(redisStore);
        // Loads the script (a script's first run is EVALSHA, NOSCRIPT, then EVAL).
        await redisStore.listAudit({ limit: 1 });
        let listed: AuditEntry[] = [];
        const seen = await commandsRunDuring(context.nodes()[0]!, async () => {
          listed = await redisStore.listAudit({ tenantId: 'busy', environment: 'rare', limit: 10 });
        });
        expect(listed).toEqual(wanted);
        const scripts = seen.filter((command) => command.source === 'client' && command.args[0]?.toLowerCase() === 'evalsha');
        // Some 3000 members of the index walked, at most 1024 per script.
        expect(scripts.length).toBe(3);
        const ranges = seen.filter((command) => command.source === 'lua' && command.args[0]?.toLowerCase() === 'zrangebylex');
        expect(Math.max(...ranges.map((command) => Number(command.args[command.args.length - 1])))).toBeLessThanOrEqual(256);
      });

      it('purge and delete never touch the audit trail', async () => {
        const redisStore = store();
        const record = testRecord(NOW - DAY);
        await redisStore.insert(record);
        const entries = [entry({ keyId: record.id, action: 'key.created' }), entry({ keyId: record.id, at: new Date(NOW + 1), action: 'key.deleted' })];
        for (const e of entries) await redisStore.appendAudit(e);
        await redisStore.update(record.id, deletion(NOW - SECOND));
        expect(await redisStore.purge({ deletedBefore: new Date(NOW) })).toBe(1);
        expect(await redisStore.listAudit({ keyId: record.id, limit: 10 })).toEqual(entries);
      });

      itOnCluster('keeps the whole trail in one hash slot', async () => {
        const redisStore = store();
        await redisStore.appendAudit(entry({ keyId: 'k-1', tenantId: 't-1', environment: 'live', actor: { id: 'a-1' } }));
        const keys = Object.keys(await keyspace());
        expect(keys.length).toBe(6);
        const slots = new Set(await Promise.all(keys.map(slotOf)));
        expect(slots.size).toBe(1);
      });
    });

    describe('usage', () => {
      /** Inserts records with these ids: the store keeps the cells of keys it holds only. */
      async function hold(redisStore: RedisStore, ...ids: string[]): Promise<void> {
        for (const id of ids) await redisStore.insert(testRecord(NOW - DAY, { id }));
      }

      it('adds cells up (counts summed, the larger max kept), route null apart from any string, and reads a range of days', async () => {
        const redisStore = store();
        const first = [
          cell('k-1', TODAY, '/v1/leads/:id', 'admitted', 3, 3000),
          cell('k-1', TODAY, null, 'admitted', 1, 50),
          cell('k-1', TODAY, 'null', 'admitted', 2, 70),
          cell('k-1', TODAY, '/v1/leads/:id', 'rate_limited', 1, 10),
          cell('k-1', TODAY - 1, '/v1/leads/:id', 'admitted', 5),
          cell('k-1', -3, '/old', 'admitted', 1),
          cell('k-2', TODAY, '/v1/leads/:id', 'admitted', 7),
        ];
        const second = [cell('k-1', TODAY, '/v1/leads/:id', 'admitted', 2, 9000), cell('k-1', TODAY + 1, null, 'insufficient_scope', 4)];
        await hold(redisStore, 'k-1', 'k-2');
        await redisStore.addUsage(batch(first));
        await redisStore.addUsage(batch(second));
        const all = summed([...first, ...second]);
        const ofKey = (keyId: string, from: number, to: number) => all.filter((c) => c.keyId === keyId && c.day >= from && c.day <= to);
        expect(sorted(await redisStore.readUsage({ keyId: 'k-1', fromDay: TODAY, toDay: TODAY }))).toEqual(ofKey('k-1', TODAY, TODAY));
        expect(sorted(await redisStore.readUsage({ keyId: 'k-1', fromDay: TODAY - 1, toDay: TODAY + 1 }))).toEqual(ofKey('k-1', TODAY - 1, TODAY + 1));
        expect(sorted(await redisStore.readUsage({ keyId: 'k-1', fromDay: Number.MIN_SAFE_INTEGER, toDay: Number.MAX_SAFE_INTEGER }))).toEqual(ofKey('k-1', -Infinity, Infinity));
        expect(sorted(await redisStore.readUsage({ keyId: 'k-1', fromDay: -Infinity, toDay: Infinity }))).toEqual(ofKey('k-1', -Infinity, Infinity));
        expect(await redisStore.readUsage({ keyId: 'k-1', fromDay: TODAY + 2, toDay: TODAY + 9 })).toEqual([]);
        expect(await redisStore.readUsage({ keyId: 'k-1', fromDay: TODAY, toDay: TODAY - 1 })).toEqual([]);
        expect(await redisStore.readUsage({ keyId: 'k-unknown', fromDay: 0, toDay: TODAY })).toEqual([]);
        const merged = all.find((c) => c.keyId === 'k-1' && c.day === TODAY && c.route === '/v1/leads/:id' && c.outcome === 'admitted');
        expect(merged).toMatchObject({ requests: 5, totalResponseMicros: 12_000, maxResponseMicros: 4500 });
        // Fresh objects.
        const read = await redisStore.readUsage({ keyId: 'k-2', fromDay: TODAY, toDay: TODAY });
        read[0]!.requests = 1e6;
        expect(await redisStore.readUsage({ keyId: 'k-2', fromDay: TODAY, toDay: TODAY })).toEqual(ofKey('k-2', TODAY, TODAY));
      });

      it('keeps numbers up to the largest safe integer exactly', async () => {
        const redisStore = store();
        const huge = { ...cell('k-1', TODAY, '/', 'admitted', 1), totalResponseMicros: Number.MAX_SAFE_INTEGER - 10, maxResponseMicros: Number.MAX_SAFE_INTEGER - 10 };
        await hold(redisStore, 'k-1');
        await redisStore.addUsage(batch([huge]));
        await redisStore.addUsage(batch([{ ...huge, totalResponseMicros: 10, maxResponseMicros: 3 }]));
        const [read] = await redisStore.readUsage({ keyId: 'k-1', fromDay: TODAY, toDay: TODAY });
        expect(read).toMatchObject({ requests: 2, totalResponseMicros: Number.MAX_SAFE_INTEGER, maxResponseMicros: Number.MAX_SAFE_INTEGER - 10 });
      });

      it('applies a batch id once: a retry adds nothing, another id adds again', async () => {
        const redisStore = store();
        const cells = [cell('k-1', TODAY, '/a', 'admitted', 2), cell('k-2', TODAY, '/a', 'admitted', 3)];
        await hold(redisStore, 'k-1', 'k-2');
        const once = batch(cells);
        await redisStore.addUsage(once);
        await redisStore.addUsage(once);
        await Promise.all([redisStore.addUsage(once), redisStore.addUsage({ ...once, now: new Date(NOW + HOUR) })]);
        expect(sorted(await redisStore.readUsage({ keyId: 'k-1', fromDay: TODAY, toDay: TODAY }))).toEqual([cells[0]]);
        await redisStore.addUsage(batch(cells));
        expect(sorted(await redisStore.readUsage({ keyId: 'k-2', fromDay: TODAY, toDay: TODAY }))).toEqual(summed([cells[1]!, cells[1]!]));
      });

      it('applies per (batch id, key): a batch half applied, retried, adds only the keys it had not reached', async () => {
        const redisStore = store();
        const cells = [cell('k-1', TODAY, '/a', 'admitted', 2), cell('k-2', TODAY, '/a', 'admitted', 3), cell('k-3', TODAY - 1, null, 'admitted', 4)];
        await hold(redisStore, 'k-1', 'k-2', 'k-3');
        const id = randomUUID();
        // The process died after k-1's script ran (the same id, k-1's cells only).
        await redisStore.addUsage(batch([cells[0]!], NOW, id));
        await redisStore.addUsage(batch(cells, NOW, id));
        for (const c of cells) expect(await redisStore.readUsage({ keyId: c.keyId, fromDay: c.day, toDay: c.day })).toEqual([c]);
      });

      it('remembers batch ids for RETAIN_BATCH_IDS_MS after their now (the caller clock), then forgets them, and expires the set of an idle key', async () => {
        const redisStore = store();
        const key = `${ns}usage:{k-1}:batches`;
        await hold(redisStore, 'k-1');
        const first = batch([cell('k-1', TODAY, '/a', 'admitted', 1)], NOW);
        await redisStore.addUsage(first);
        await redisStore.addUsage(batch([cell('k-1', TODAY, '/a', 'admitted', 1)], NOW + RETAIN_BATCH_IDS_MS - 1));
        expect(await context.client().zcard(key)).toBe(2);
        await redisStore.addUsage(first);
        expect((await redisStore.readUsage({ keyId: 'k-1', fromDay: TODAY, toDay: TODAY }))[0]!.requests).toBe(2);
        await redisStore.addUsage(batch([cell('k-1', TODAY, '/a', 'admitted', 1)], NOW + RETAIN_BATCH_IDS_MS + 1));
        // The first one's retention has passed for this caller: forgotten.
        expect(await context.client().zscore(key, first.id)).toBeNull();
        expect(await context.client().zcard(key)).toBe(2);
        const ttl = await context.client().pttl(key);
        expect(ttl).toBeGreaterThan(RETAIN_BATCH_IDS_MS);
        expect(ttl).toBeLessThanOrEqual(RETAIN_BATCH_IDS_MS + HOUR);
      });

      it('adds many concurrent batches exactly', async () => {
        const redisStore = store();
        await hold(redisStore, 'k-0', 'k-1', 'k-2', 'k-3');
        const batches = Array.from({ length: 60 }, (_, i) => batch([cell('k-1', TODAY, '/a', 'admitted', 1 + (i % 3), 100 * i), cell(`k-${i % 4}`, TODAY - (i % 2), null, 'rate_limited', 1)]));
        await Promise.all(batches.flatMap((b) => [redisStore.addUsage(b), redisStore.addUsage(b)]));
        const expected = summed(batches.flatMap((b) => b.cells));
        const read: UsageCell[] = [];
        for (const keyId of ['k-0', 'k-1', 'k-2', 'k-3']) read.push(...(await redisStore.readUsage({ keyId, fromDay: TODAY - 1, toDay: TODAY })));
        expect(sorted(read)).toEqual(expected);
      });

      it("a key's cells of a batch are all or nothing: a stored cell that cannot be read refuses them all, and the batch id stays unapplied", async () => {
        const redisStore = store();
        const dayKey = `${ns}usage:{k-1}:d:${TODAY}`;
        await hold(redisStore, 'k-1');
        await context.client().hset(dayKey, JSON.stringify(['/broken', 'admitted']), 'not,numbers');
        const before = await keyspace();
        const cells = [cell('k-1', TODAY, '/fine', 'admitted', 1), cell('k-1', TODAY - 1, '/fine', 'admitted', 1), cell('k-1', TODAY, '/broken', 'admitted', 1)];
        const once = batch(cells);
        await expect(redisStore.addUsage(once)).rejects.toThrow(/usage cell/);
        expect(await keyspace()).toEqual(before);
        await context.client().hdel(dayKey, JSON.stringify(['/broken', 'admitted']));
        await redisStore.addUsage(once);
        expect(sorted(await redisStore.readUsage({ keyId: 'k-1', fromDay: TODAY - 1, toDay: TODAY }))).toEqual(sorted(cells));
      });

      it('purge removes the usage of every record it removes (every day), and only theirs; delete leaves it', async () => {
        const redisStore = store();
        const victim = testRecord(NOW - DAY);
        const survivor = testRecord(NOW - DAY);
        await redisStore.insert(victim);
        await redisStore.insert(survivor);
        const victimCells = [cell(victim.id, TODAY, '/a', 'admitted', 1), cell(victim.id, TODAY - 40, null, 'admitted', 2), cell(victim.id, -5, '/b', 'api_key_revoked', 3)];
        const survivorCells = [cell(survivor.id, TODAY, '/a', 'admitted', 4)];
        await redisStore.addUsage(batch([...victimCells, ...survivorCells]));
        await redisStore.update(victim.id, deletion(NOW - SECOND));
        expect(sorted(await redisStore.readUsage({ keyId: victim.id, fromDay: -Infinity, toDay: Infinity }))).toEqual(sorted(victimCells));
        expect(await redisStore.purge({ deletedBefore: new Date(NOW) })).toBe(1);
        expect(await redisStore.readUsage({ keyId: victim.id, fromDay: -Infinity, toDay: Infinity })).toEqual([]);
        expect(await redisStore.readUsage({ keyId: survivor.id, fromDay: -Infinity, toDay: Infinity })).toEqual(survivorCells);
        // What is left of the victim: its applied-batch set, which expires on its own.
        const left = Object.keys(await keyspace()).filter((key) => key.includes(victim.id));
        expect(left).toEqual([`${ns}usage:{${victim.id}}:batches`]);
        // Neither a retried flush of a batch applied before the purge nor a flush of cells buffered
        // before it brings the victim's cells back: its record is gone, so they are dropped.
        await redisStore.addUsage(batch(victimCells, NOW, (await context.client().zrange(left[0]!, 0, -1))[0]));
        await redisStore.addUsage(batch([...victimCells, cell(survivor.id, TODAY, '/a', 'admitted', 1)], NOW + 1));
        expect(await redisStore.readUsage({ keyId: victim.id, fromDay: -Infinity, toDay: Infinity })).toEqual([]);
        expect(Object.keys(await keyspace()).filter((key) => key.includes(victim.id))).toEqual(left);
        expect(await redisStore.readUsage({ keyId: survivor.id, fromDay: -Infinity, toDay: Infinity })).toEqual(summed([...survivorCells, cell(survivor.id, TODAY, '/a', 'admitted', 1)]));
      });

      it('drops the cells of a key without a record in the script that would add them, and records the batch id only', async () => {
        const redisStore = store();
        const held = testRecord(NOW - DAY);
        await redisStore.insert(held);
        const cells = [cell('k-none', TODAY, '/a', 'admitted', 1), cell('k-none', TODAY - 1, null, 'admitted', 2), cell(held.id, TODAY, '/a', 'admitted', 3)];
        const once = batch(cells);
        await redisStore.addUsage(once);
        expect(await redisStore.readUsage({ keyId: 'k-none', fromDay: -Infinity, toDay: Infinity })).toEqual([]);
        expect(await redisStore.readUsage({ keyId: held.id, fromDay: -Infinity, toDay: Infinity })).toEqual([cells[2]]);
        // Nothing of the unknown key but its applied-batch set, expiring like any other.
        const batches = `${ns}usage:{k-none}:batches`;
        expect(Object.keys(await keyspace()).filter((key) => key.includes('k-none'))).toEqual([batches]);
        expect(await context.client().zscore(batches, once.id)).toBe(String(NOW + RETAIN_BATCH_IDS_MS));
        expect(await context.client().pttl(batches)).toBeGreaterThan(RETAIN_BATCH_IDS_MS);

        // The script itself: 2 (dropped) for a key without a record, then 0 (applied already) for the same batch id.
        const client = context.client() as unknown as Record<string, (...args: (string | number)[]) => Promise<unknown>>;
        const keys = [`${ns}key:{k-gone}`, `${ns}usage:{k-gone}:days`, `${ns}usage:{k-gone}:batches`, `${ns}usage:{k-gone}:d:${TODAY}`];
        const args = ['batch-1', String(NOW), String(NOW + RETAIN_BATCH_IDS_MS), String(RETAIN_BATCH_IDS_MS + HOUR), '4', String(TODAY), JSON.stringify(['/a', 'admitted']), '1', '1', '0', '0', '0', '10', '10'];
        expect(await client.keygateAddUsageV2!(keys.length, ...keys, ...args)).toBe(2);
        expect(await client.keygateAddUsageV2!(keys.length, ...keys, ...args)).toBe(0);
        expect(Object.keys(await keyspace()).filter((key) => key.includes('k-gone'))).toEqual([keys[2]]);
        // Once the record exists, a new batch id adds (and the one recorded while it did not, nothing).
        await redisStore.insert(testRecord(NOW - DAY, { id: 'k-gone' }));
        expect(await client.keygateAddUsageV2!(keys.length, ...keys, ...args)).toBe(0);
        expect(await client.keygateAddUsageV2!(keys.length, ...keys, 'batch-2', ...args.slice(1))).toBe(1);
        expect(await redisStore.readUsage({ keyId: 'k-gone', fromDay: TODAY, toDay: TODAY })).toEqual([cell('k-gone', TODAY, '/a', 'admitted', 1, 10)]);
      });

      itOnCluster("keeps a key's usage in its record's hash slot", async () => {
        const redisStore = store();
        const record = testRecord(NOW - DAY);
        await redisStore.insert(record);
        await redisStore.addUsage(batch([cell(record.id, TODAY, '/a', 'admitted', 1), cell(record.id, TODAY - 1, '/a', 'admitted', 1)]));
        const keys = Object.keys(await keyspace()).filter((key) => key.includes(record.id));
        expect(keys.length).toBe(5);
        expect(new Set(await Promise.all(keys.map(slotOf))).size).toBe(1);
      });

      it('the read and purge scripts refuse days that are not the ones stored (a flush added one): nothing written', async () => {
        const redisStore = store();
        const record = testRecord(NOW - DAY, { deletedAt: new Date(NOW - DAY) });
        await redisStore.insert(record);
        await redisStore.addUsage(batch([cell(record.id, TODAY, '/a', 'admitted', 1), cell(record.id, TODAY - 1, '/a', 'admitted', 1)]));
        const client = context.client() as unknown as Record<string, (...args: (string | number)[]) => Promise<unknown>>;
        const daysKey = `${ns}usage:{${record.id}}:days`;
        const dayKey = (day: number) => `${ns}usage:{${record.id}}:d:${day}`;
        // Declared: only today (yesterday was added since the caller read the days).
        expect(await client.keygateReadUsageV1!(2, daysKey, dayKey(TODAY), String(TODAY - 5), String(TODAY), String(TODAY))).toBe('changed');
        const before = await keyspace();
        const purgeRecord = client.keygatePurgeRecordV3!(
          5,
          `${ns}key:{${record.id}}`,
          `${ns}key:{${record.id}}:leases`,
          `${ns}key:{${record.id}}:holds`,
          daysKey,
          dayKey(TODAY),
          String(NOW),
          `${ns}invalidate`,
          record.id,
          JSON.stringify(record.keyPrefix),
          String(TODAY),
        );
        expect(await purgeRecord).toBe('changed');
        expect(await keyspace()).toEqual(before);
        // The store itself reads the days again and purges everything.
        expect(await redisStore.purge({ deletedBefore: new Date(NOW) })).toBe(1);
        expect(Object.keys(await keyspace()).filter((key) => key.includes(record.id))).toEqual([`${ns}usage:{${record.id}}:batches`]);
      });

      it('refuses cells that are not what a cell holds, before writing anything', async () => {
        const redisStore = store();
        const good = cell('k-1', TODAY, '/a', 'admitted', 1);
        for (const bad of [{ ...good, requests: -1 }, { ...good, requests: 1.5 }, { ...good, day: 0.5 }, { ...good, keyId: '' }, { ...good, outcome: 7 as unknown as string }]) {
          await expect(redisStore.addUsage(batch([good, bad]))).rejects.toThrow(TypeError);
        }
        expect(await keyspace()).toEqual({});
      });
    });

    describe('alert claims', () => {
      it('one claim at a time, judged on the caller clock: live until expiresAt, then claimable again', async () => {
        const redisStore = store();
        const name = 'error_rate:k-1:20468:0.5';
        expect(await redisStore.claimAlert({ name, expiresAt: new Date(NOW + SECOND), now: new Date(NOW) })).toBe(true);
        expect(await redisStore.claimAlert({ name, expiresAt: new Date(NOW + DAY), now: new Date(NOW) })).toBe(false);
        expect(await redisStore.claimAlert({ name, expiresAt: new Date(NOW + DAY), now: new Date(NOW + SECOND - 1) })).toBe(false);
        expect(await redisStore.claimAlert({ name: `${name} `, expiresAt: new Date(NOW + DAY), now: new Date(NOW) })).toBe(true);
        // Lapsed on this caller's clock, although Redis still holds the key (its expiry has a margin).
        expect(await redisStore.claimAlert({ name, expiresAt: new Date(NOW + 2 * SECOND), now: new Date(NOW + SECOND) })).toBe(true);
        expect(await redisStore.claimAlert({ name, expiresAt: new Date(NOW + 3 * SECOND), now: new Date(NOW + SECOND + 1) })).toBe(false);
        // A caller whose clock lags still sees the claim.
        expect(await redisStore.claimAlert({ name, expiresAt: new Date(NOW + DAY), now: new Date(NOW - HOUR) })).toBe(false);
      });

      it('expires claims on their own, a margin after expiresAt, so storage does not grow', async () => {
        const redisStore = store();
        await redisStore.claimAlert({ name: 'quota:k-1:month:0.8', expiresAt: new Date(NOW + HOUR), now: new Date(NOW) });
        const ttl = await context.client().pttl(`${ns}alert:quota:k-1:month:0.8`);
        expect(ttl).toBeGreaterThan(HOUR);
        expect(ttl).toBeLessThanOrEqual(HOUR + 60_000);
      });

      it('names are exact strings: unicode, braces, colons and 512 characters', async () => {
        const redisStore = store();
        const names = ['a{b}c', '{k-1}', 'ключ:🔔', 'x'.repeat(512), 'x'.repeat(511), 'A', 'a'];
        for (const name of names) expect(await redisStore.claimAlert({ name, expiresAt: new Date(NOW + HOUR), now: new Date(NOW) })).toBe(true);
        for (const name of names) expect(await redisStore.claimAlert({ name, expiresAt: new Date(NOW + HOUR), now: new Date(NOW) })).toBe(false);
      });

      it('of many concurrent claims of one name, exactly one wins', async () => {
        const redisStore = store();
        const results = await Promise.all(Array.from({ length: 50 }, () => redisStore.claimAlert({ name: 'race', expiresAt: new Date(NOW + HOUR), now: new Date(NOW) })));
        expect(results.filter(Boolean).length).toBe(1);
      });
    });

    describe('across processes', () => {
      const workers: Worker[] = [];
      afterEach(async () => {
        await Promise.all(workers.splice(0).map((worker) => worker.stop()));
      });

      async function startWorkers(count: number): Promise<Worker[]> {
        const started = await Promise.all(Array.from({ length: count }, () => Worker.start(WORKER, { ...context.workerTarget(), namespace: ns })));
        workers.push(...started);
        return started;
      }

      it('4 processes adding and retrying batches at once sum exactly; of 4 processes claiming 30 names, exactly one wins each', async () => {
        const pool = await startWorkers(4);
        const keys = Array.from({ length: 12 }, (_, i) => `mp-${i}`);
        const redisStore = store();
        for (const id of keys) await redisStore.insert(testRecord(NOW - DAY, { id }));
        const plans = pool.map((_worker, w) =>
          Array.from({ length: 25 }, (_, b) =>
            batch(
              keys.filter((_key, k) => (k + b + w) % 3 !== 0).map((keyId, k) => cell(keyId, TODAY - (k % 2), k % 4 === 0 ? null : '/v1/x', 'admitted', 1 + ((b + w) % 5), 100 * (b + 1))),
              NOW + b,
            ),
          ),
        );
        const wire = (b: UsageBatch) => ({ id: b.id, cells: b.cells, now: b.now.getTime() });
        await Promise.all(pool.map((worker, w) => worker.ask({ type: 'addUsage', batches: plans[w]!.map(wire), times: 2 }, 'usageAdded')));
        const expected = summed(plans.flat().flatMap((b) => b.cells));
        const read: UsageCell[] = [];
        for (const keyId of keys) read.push(...(await redisStore.readUsage({ keyId, fromDay: TODAY - 1, toDay: TODAY })));
        expect(sorted(read)).toEqual(expected);

        const names = Array.from({ length: 30 }, (_, i) => `quota:mp-${i}:day:1`);
        const claims = await Promise.all(pool.map((worker) => worker.ask({ type: 'claim', names, expiresAt: NOW + HOUR, now: NOW }, 'claimed')));
        const won = claims.flatMap((reply) => reply.won as string[]);
        expect(won.sort()).toEqual([...names].sort());
      });
    });
  });
}

describeWithRedis('RedisStore observability on both deployments', () => {
  describeObservability('standalone Redis', () => {
    const deployment = standaloneDeployment();
    return { ...deployment, workerTarget: () => ({ port: deployment.server().port }), cluster: false };
  });

  describeObservability('Redis Cluster', () => {
    const deployment = clusterDeployment();
    return { ...deployment, workerTarget: () => ({ cluster: deployment.servers().startupNodes }), cluster: true };
  });
});

describeWithRedis('RedisStore record fields of schema version 4', () => {
  const NS = 'v4:';
  let server: RedisServer;
  let client: Redis;

  beforeAll(async () => {
    server = await RedisServer.start();
    client = server.client();
    await ready(client);
  });

  afterAll(async () => {
    await client?.quit();
    await server?.stop();
  });

  it('round-trips rotationFrequencyDays and alerts through insert, update and rotate', async () => {
    const redisStore = new RedisStore({ client, keyPrefix: NS });
    const alerts = { quotaThreshold: 0.8, errorRateThreshold: 0.25, webhookUrl: 'https://hooks.example.com/keygate?x=é' };
    const record = testRecord(NOW - DAY, { rotationFrequencyDays: 90, alerts });
    await redisStore.insert(record);
    expect(await redisStore.findById(record.id)).toEqual(record);
    expect(await client.hget(`${NS}key:{${record.id}}`, 'alerts')).toBe(JSON.stringify(alerts));
    expect(await client.hget(`${NS}key:{${record.id}}`, 'rotationFrequencyDays')).toBe('90');

    const updated = await redisStore.update(record.id, { rotationFrequencyDays: null, alerts: { quotaThreshold: 0.5 }, updatedAt: new Date(NOW) });
    expect(updated).toMatchObject({ rotationFrequencyDays: null, alerts: { quotaThreshold: 0.5 } });
    expect(await redisStore.findById(record.id)).toEqual(updated);

    const cleared = await redisStore.update(record.id, { alerts: null, rotationFrequencyDays: 30, updatedAt: new Date(NOW) });
    expect(cleared).toMatchObject({ rotationFrequencyDays: 30, alerts: null });

    const { replacement } = (await redisStore.rotate({
      oldId: record.id,
      replacement: testRecord(NOW, { rotatedFromId: record.id }),
      oldRevokedAt: new Date(NOW),
      oldStatus: 'revoked',
      now: new Date(NOW),
    }))!;
    // Settings a caller sets are carried by the rotation from the old record as stored.
    expect(replacement).toMatchObject({ rotationFrequencyDays: 30, alerts: null });
    expect(await redisStore.findById(replacement.id)).toEqual(replacement);
  });

  it('reads a record hash written before they existed (schema version 3) with both null, and writes them on update', async () => {
    const redisStore = new RedisStore({ client, keyPrefix: NS });
    const record: ApiKeyRecord = testRecord(NOW - DAY);
    await redisStore.insert(record);
    const key = `${NS}key:{${record.id}}`;
    // What the store of schema version 3 wrote: no field for either.
    await client.hdel(key, 'rotationFrequencyDays', 'alerts');
    expect(await client.hexists(key, 'deletedAt')).toBe(1);
    expect(await redisStore.findById(record.id)).toEqual({ ...record, rotationFrequencyDays: null, alerts: null });
    expect(await redisStore.findByKeyPrefix(record.keyPrefix)).toEqual({ ...record, rotationFrequencyDays: null, alerts: null });
    const updated = await redisStore.update(record.id, { alerts: { errorRateThreshold: 1 }, updatedAt: new Date(NOW) });
    expect(updated).toMatchObject({ rotationFrequencyDays: null, alerts: { errorRateThreshold: 1 } });
    expect(await redisStore.consume(record.id, { now: NOW, maxUses: null, rateLimit: null })).toMatchObject({ admitted: true, useCount: 1 });
  });
});
