/**
 * A polluted `Object.prototype` (an `ownerId`, a `status`, `scopes` set on it by a bug elsewhere in
 * the app) must never fill in a field of a record, patch, rotation or query that SqlStore writes or
 * filters by: the store reads own properties only. Before, renaming a suspended key wrote the
 * inherited `status: 'active'` and `scopes: ['admin']` on both dialects.
 */
import { type ApiKeyRecord, keygate } from 'keygate';
import { SqlStore } from 'keygate/sql';
import { closeAfterEach } from '../helpers/managers';
import { describeEachDialect } from '../helpers/sql-stores';
import { testRecord } from '../helpers/records';

jest.setTimeout(30_000);

const CREATED = Date.UTC(2025, 0, 2, 3, 4, 5, 678);
const HOUR = 3_600_000;

/** What a prototype-pollution bug elsewhere in the app might have left on every object. */
const POLLUTION: Record<string, unknown> = {
  ownerId: 'attacker',
  tenantId: 'attacker_tenant',
  environment: 'attacker_env',
  description: 'inherited',
  status: 'active',
  scopes: ['admin'],
  allowedIps: ['0.0.0.0/0'],
  maxUses: 1_000_000,
  metadata: { admin: true },
  tags: ['inherited'],
  oldStatus: 'revoked',
};

/** Runs `action` with `POLLUTION` assigned onto Object.prototype (enumerable, as an assignment makes it), removed afterwards. */
async function polluted<T>(action: () => Promise<T>): Promise<T> {
  const prototype = Object.prototype as Record<string, unknown>;
  for (const [field, value] of Object.entries(POLLUTION)) prototype[field] = value;
  try {
    return await action();
  } finally {
    for (const field of Object.keys(POLLUTION)) delete prototype[field];
  }
}

const track = closeAfterEach();

function describePollution(store: () => SqlStore): void {
  it('store.insert stores no inherited field: absent optional fields stay absent', async () => {
    const key = testRecord(CREATED, { name: 'plain' });
    await polluted(() => store().insert(key));
    expect(await store().findById(key.id)).toStrictEqual(key);
    expect(await store().list({ ownerId: 'attacker', limit: 10 })).toEqual([]);
  });

  it('store.update of a suspended key: a rename keeps it suspended with its own scopes', async () => {
    const key = testRecord(CREATED, { name: 'narrow', status: 'suspended', scopes: ['leads:read'] });
    await store().insert(key);
    const renamed = await polluted(() => store().update(key.id, { name: 'renamed', updatedAt: new Date(CREATED + HOUR) }));
    const expected = { ...key, name: 'renamed', updatedAt: new Date(CREATED + HOUR) };
    expect(renamed).toStrictEqual(expected);
    expect(await store().findById(key.id)).toStrictEqual(expected);
  });

  it('store.list filters only by the query it was given', async () => {
    const key = testRecord(CREATED, { name: 'listed', ownerId: 'owner_1' });
    await store().insert(key);
    const listed = await polluted(() => store().list({ limit: 1_000 }));
    expect(listed.map((record) => record.id)).toContain(key.id);
  });

  it('store.rotate: the replacement holds only what the old key holds, and the old key keeps its status in its grace', async () => {
    const key = testRecord(CREATED, { name: 'rotated', scopes: ['leads:read'] });
    await store().insert(key);
    const replacement = testRecord(CREATED + HOUR, { name: 'rotated', scopes: ['leads:read'], rotatedFromId: key.id });
    const rotated = await polluted(() =>
      store().rotate({ oldId: key.id, replacement, oldRevokedAt: new Date(CREATED + 2 * HOUR), now: new Date(CREATED + HOUR) }),
    );
    expect(rotated?.replacement).toStrictEqual(replacement);
    expect(rotated?.old).toStrictEqual({ ...key, revokedAt: new Date(CREATED + 2 * HOUR), updatedAt: new Date(CREATED + HOUR) });
  });

  it('through a keygate manager: created without inherited fields, suspended, renamed, still suspended', async () => {
    const keys = track(keygate({ store: store(), hashing: 'sha256' }));
    const { apiKey } = await polluted(() => keys.create({ name: 'managed', scopes: ['leads:read'] }));
    await polluted(() => keys.update(apiKey.id, { status: 'suspended' }));
    await polluted(() => keys.update(apiKey.id, { name: 'renamed' }));
    const stored = (await store().findById(apiKey.id)) as ApiKeyRecord;
    expect(stored).toMatchObject({ name: 'renamed', status: 'suspended', scopes: ['leads:read'], allowedIps: [], maxUses: null, metadata: {}, tags: [] });
    for (const field of ['ownerId', 'tenantId', 'environment', 'description']) expect(Object.hasOwn(stored, field)).toBe(false);
  });
}

describeEachDialect('SqlStore under a polluted Object.prototype', ({ store }) => describePollution(store));
