/**
 * `rotate()` against an `update()` that lands while it runs, on a real PostgreSQL with the two on
 * separate pools (as two app processes would be). The manager builds the replacement from a record
 * it read earlier; the store's one rotate statement must take every caller-set field from the old
 * row as it stands once locked, so a suspension or a narrowing committed before the rotation
 * reaches the new key, and one committed after it does not (it changed the retiring key only).
 */
import { Pool } from 'pg';
import type { ApiKeyRecord } from 'keygate';
import { SqlStore } from 'keygate/sql';
import { CREATE_FIELDS } from '../../src/record/schema';
import type { ApiKeyPatch } from '../../src/stores/store';
import { remainingUses } from '../../src/stores/toolkit';
import { type PostgresServer, describePostgres, startPostgres } from '../helpers/postgres-server';
import { testRecord } from '../helpers/records';

jest.setTimeout(60_000);

const CREATED = Date.UTC(2025, 0, 2, 3, 4, 5, 678);
const SECOND = 1_000;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** A key with every setting filled in, used once. */
function wideKey(): ApiKeyRecord {
  return testRecord(CREATED, {
    name: 'wide',
    description: 'full access for the export job',
    ownerId: 'owner_1',
    tenantId: 'tenant_1',
    environment: 'live',
    scopes: ['leads:read', 'leads:write', 'billing:*'],
    allowedIps: ['10.0.0.0/8', '192.168.1.1'],
    maxUses: 100,
    rateLimit: { perSecond: 50, burst: 100 },
    expiresAt: new Date(CREATED + 90 * DAY),
    metadata: { plan: 'pro' },
    tags: ['export'],
  });
}

/** The narrowing an administrator applies while the rotation is on its way. */
function narrowing(at: number): ApiKeyPatch {
  return {
    name: 'narrowed',
    description: null,
    status: 'suspended',
    scopes: ['leads:read'],
    allowedIps: ['10.0.0.7'],
    maxUses: 20,
    rateLimit: { perSecond: 1, perDay: 100 },
    expiresAt: new Date(CREATED + 2 * DAY),
    metadata: { plan: 'frozen' },
    tags: ['export', 'under-review'],
    updatedAt: new Date(at),
  };
}

/** The replacement as the manager builds it: the settings of its earlier read, a fresh identity. */
function replacementFrom(read: ApiKeyRecord, at: number): ApiKeyRecord {
  const settings = Object.fromEntries(CREATE_FIELDS.filter((field) => read[field] !== undefined).map((field) => [field, read[field]]));
  return testRecord(at, { ...settings, rotatedFromId: read.id });
}

/** What the replacement must hold: `replacement`'s own fields, with the settings of `old` as stored. */
function expectedReplacement(replacement: ApiKeyRecord, old: ApiKeyRecord): ApiKeyRecord {
  const expected: Record<string, unknown> = { ...replacement };
  for (const field of CREATE_FIELDS) {
    if (old[field] === undefined) delete expected[field];
    else expected[field] = old[field];
  }
  expected.maxUses = remainingUses(old.maxUses, old.useCount);
  return expected as unknown as ApiKeyRecord;
}

describePostgres('SqlStore (postgres) rotate racing update', () => {
  let server: PostgresServer;
  let updaters: Pool;
  let rotators: Pool;
  let lockers: Pool;
  let updating: SqlStore;
  let rotating: SqlStore;

  beforeAll(async () => {
    server = await startPostgres();
    updaters = new Pool({ connectionString: server.connectionString, max: 4 });
    rotators = new Pool({ connectionString: server.connectionString, max: 4 });
    lockers = new Pool({ connectionString: server.connectionString, max: 2 });
    for (const pool of [updaters, rotators, lockers]) pool.on('error', () => undefined);
    updating = new SqlStore({ dialect: 'postgres', client: updaters, table: 'raced' });
    rotating = new SqlStore({ dialect: 'postgres', client: rotators, table: 'raced' });
    await updating.migrate();
  });

  afterAll(async () => {
    await Promise.all([updaters, rotators, lockers].map((pool) => pool?.end()));
    await server?.destroy();
  });

  /** A key as the manager would find it before rotating: inserted, used once, then read. */
  async function readKey(): Promise<ApiKeyRecord> {
    const key = wideKey();
    await updating.insert(key);
    expect(await updating.consume(key.id, { now: CREATED + SECOND, maxUses: 100, rateLimit: null })).toMatchObject({ admitted: true });
    const read = await rotating.findById(key.id);
    if (!read) throw new Error('the key vanished');
    return read;
  }

  /** Resolves once `count` sessions wait for a lock. */
  async function waiters(count: number): Promise<void> {
    for (let attempt = 0; attempt < 500; attempt++) {
      const { rows } = await lockers.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'`);
      if ((rows[0] as { n: number }).n >= count) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    throw new Error(`${count} sessions never came to wait for the row lock`);
  }

  /**
   * Runs `first` and then `second` against the key's row in that order: a third session holds the
   * row lock while both queue behind it (first `first`, then `second`), then lets them go. PostgreSQL
   * grants a row's lock to its waiters in the order they came.
   */
  async function inOrder<A, B>(id: string, first: () => Promise<A>, second: () => Promise<B>): Promise<[A, B]> {
    const locker = await lockers.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('SELECT 1 FROM "raced" WHERE "id" = $1 FOR UPDATE', [id]);
      const a = first();
      a.catch(() => undefined);
      await waiters(1);
      const b = second();
      b.catch(() => undefined);
      await waiters(2);
      await locker.query('COMMIT');
      return [await a, await b];
    } finally {
      locker.release();
    }
  }

  it('an update committed while the rotation waited for the row reaches the replacement (status, scopes, IPs, every setting)', async () => {
    const read = await readKey();
    const stale = replacementFrom(read, CREATED + HOUR);
    const [updated, rotated] = await inOrder(
      read.id,
      () => updating.update(read.id, narrowing(CREATED + HOUR - SECOND)),
      () => rotating.rotate({ oldId: read.id, replacement: stale, oldRevokedAt: new Date(CREATED + HOUR), oldStatus: 'revoked', now: new Date(CREATED + HOUR) }),
    );
    if (!updated || !rotated) throw new Error('a known id came back unknown');
    const expected = expectedReplacement(stale, updated);
    expect(expected).toMatchObject({ status: 'suspended', scopes: ['leads:read'], allowedIps: ['10.0.0.7'], maxUses: 19 });
    expect('description' in expected).toBe(false);
    expect(rotated.replacement).toStrictEqual(expected);
    expect(await updating.findById(stale.id)).toStrictEqual(expected);
  });

  it('an update committed after the rotation changes the retiring key only', async () => {
    const read = await readKey();
    const stale = replacementFrom(read, CREATED + HOUR);
    const [rotated, updated] = await inOrder(
      read.id,
      () => rotating.rotate({ oldId: read.id, replacement: stale, oldRevokedAt: new Date(CREATED + DAY), now: new Date(CREATED + HOUR) }),
      () => updating.update(read.id, narrowing(CREATED + HOUR + SECOND)),
    );
    if (!updated || !rotated) throw new Error('a known id came back unknown');
    expect(updated).toMatchObject({ status: 'suspended', scopes: ['leads:read'], revokedAt: new Date(CREATED + DAY) });
    expect(rotated.replacement).toStrictEqual(expectedReplacement(stale, read));
    expect(await updating.findById(stale.id)).toStrictEqual(expectedReplacement(stale, read));
  });

  it('racing freely, the replacement always has the settings of every update that committed before the rotation', async () => {
    const orders = { updateFirst: 0, rotationFirst: 0 };
    for (let round = 0; round < 40; round++) {
      const read = await readKey();
      const stale = replacementFrom(read, CREATED + HOUR);
      const rotatedAt = new Date(CREATED + HOUR);
      const updatedAt = new Date(CREATED + HOUR - SECOND);
      const update = () => updating.update(read.id, narrowing(updatedAt.getTime()));
      // A grace period, so that an update landing after the rotation is still accepted on the old key.
      const rotate = () => rotating.rotate({ oldId: read.id, replacement: stale, oldRevokedAt: new Date(CREATED + DAY), now: rotatedAt });
      // Sent in alternating order, so that both interleavings occur.
      const [updated, rotated] =
        round % 2 === 0 ? await Promise.all([update(), rotate()]) : await Promise.all([rotate(), update()]).then(([r, u]) => [u, r] as const);
      if (!updated || !rotated) throw new Error('a known id came back unknown');
      // Whichever committed last wrote the old row's updated_at.
      const old = await updating.findById(read.id);
      const updateFirst = old?.updatedAt.getTime() === rotatedAt.getTime();
      orders[updateFirst ? 'updateFirst' : 'rotationFirst']++;
      const settingsAtRotation = updateFirst ? updated : read;
      expect(rotated.replacement).toStrictEqual(expectedReplacement(stale, settingsAtRotation));
      expect(await rotating.findById(stale.id)).toStrictEqual(rotated.replacement);
    }
    // Both interleavings happened, or the race proved less than it says (reported, not failed).
    if (orders.updateFirst === 0 || orders.rotationFirst === 0) console.warn(`rotate/update race: only one order occurred ${JSON.stringify(orders)}`);
  });
});
