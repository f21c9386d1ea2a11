/**
 * The revocation stamp of `update`, in each dialect's own atomic step: a patch setting `status:
 * 'revoked'` leaves `revokedAt` at the earlier of the stored value and `patch.updatedAt`, and a
 * patch reviving a revoked key is refused, in the same step as the write (PostgreSQL: the one
 * guarded UPDATE statement; SQLite: its immediate transaction). The manager no longer reads a
 * record before revoking it, so this is what keeps racing administrators from undoing each other.
 */
import { randomUUID } from 'node:crypto';
import { type ApiKeyRecord, isKeygateError } from 'keygate';
import { type PostgresClient, SqlStore } from 'keygate/sql';
import { describeEachDialect } from '../helpers/sql-stores';
import { testRecord } from '../helpers/records';
import { rejection } from '../helpers/rejection';

jest.setTimeout(30_000);

const CREATED = Date.UTC(2025, 0, 2, 3, 4, 5, 678);
const HOUR = 3_600_000;

function record(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return testRecord(CREATED, { name: 'stamped', ...overrides });
}

/** The same behaviour, whichever dialect `store()` gives. */
function describeStamp(store: () => SqlStore): void {
  it('stamps revokedAt with updatedAt when the patch revokes, whatever revokedAt the patch carries', async () => {
    const key = record();
    await store().insert(key);
    const at = new Date(CREATED + HOUR);
    const revoked = await store().update(key.id, { status: 'revoked', revokedAt: new Date(CREATED + 9 * HOUR), updatedAt: at });
    expect(revoked && [revoked.status, revoked.revokedAt, revoked.updatedAt]).toEqual(['revoked', at, at]);
    expect(await store().findById(key.id)).toStrictEqual(revoked);
  });

  it('stops a key in its rotation grace now, and keeps the instant of a key revoked earlier', async () => {
    const graceEnd = new Date(CREATED + 24 * HOUR);
    const inGrace = record({ revokedAt: graceEnd });
    const earlier = new Date(CREATED + HOUR);
    const alreadyRevoked = record({ status: 'revoked', revokedAt: earlier });
    await store().insert(inGrace);
    await store().insert(alreadyRevoked);
    const now = new Date(CREATED + 2 * HOUR);
    expect((await store().update(inGrace.id, { status: 'revoked', updatedAt: now }))?.revokedAt).toEqual(now);
    expect((await store().update(alreadyRevoked.id, { status: 'revoked', updatedAt: now }))?.revokedAt).toEqual(earlier);
  });

  it('refuses to revive a revoked key with invalid_argument (field status) and changes nothing', async () => {
    const key = record({ status: 'revoked', revokedAt: new Date(CREATED) });
    await store().insert(key);
    const error = await rejection(() => store().update(key.id, { status: 'active', name: 'revived', updatedAt: new Date(CREATED + HOUR) }));
    expect(isKeygateError(error) && [error.code, error.field]).toEqual(['invalid_argument', 'status']);
    expect(await store().findById(key.id)).toStrictEqual(key);
  });

  it('leaves revokedAt to the patch when it does not revoke', async () => {
    const key = record();
    await store().insert(key);
    const at = new Date(CREATED + HOUR);
    const suspended = await store().update(key.id, { status: 'suspended', updatedAt: at });
    expect(suspended && [suspended.status, suspended.revokedAt]).toEqual(['suspended', null]);
    const graced = await store().update(key.id, { revokedAt: new Date(CREATED + 5 * HOUR), updatedAt: at });
    expect(graced?.revokedAt).toEqual(new Date(CREATED + 5 * HOUR));
    expect(await store().update(randomUUID(), { status: 'revoked', updatedAt: at })).toBeNull();
  });
}

describeEachDialect(
  'the revocation stamp',
  ({ store, pool }, dialect) => {
    describeStamp(store);
    if (dialect !== 'postgres') return;

    it('revokes in one statement: no read before the write', async () => {
      const key = record();
      await store().insert(key);
      const texts: string[] = [];
      const recording: PostgresClient = { query: (text, values) => (texts.push(text), pool().query(text, values)) };
      const recorded = new SqlStore({ dialect: 'postgres', client: recording });
      await recorded.update(key.id, { status: 'revoked', updatedAt: new Date(CREATED + HOUR) });
      expect(texts).toHaveLength(1);
      expect(texts[0]).toMatch(/FOR UPDATE[\s\S]*UPDATE/);
    });

    it('a revocation racing a suspension always ends revoked; racing revocations keep the earliest instant', async () => {
      for (let round = 0; round < 20; round++) {
        const key = record();
        await store().insert(key);
        const revokeAt = new Date(CREATED + HOUR + round);
        const [suspended, ...revoked] = await Promise.allSettled([
          store().update(key.id, { status: 'suspended', updatedAt: new Date(CREATED + HOUR) }),
          store().update(key.id, { status: 'revoked', updatedAt: new Date(revokeAt.getTime() + 2) }),
          store().update(key.id, { status: 'revoked', updatedAt: revokeAt }),
          store().update(key.id, { status: 'revoked', updatedAt: new Date(revokeAt.getTime() + 1) }),
        ]);
        expect(revoked.every((outcome) => outcome.status === 'fulfilled')).toBe(true);
        if (suspended?.status === 'rejected') expect(isKeygateError(suspended.reason) && suspended.reason.code).toBe('invalid_argument');
        const stored = await store().findById(key.id);
        expect(stored && [stored.status, stored.revokedAt]).toEqual(['revoked', revokeAt]);
      }
    });
  },
  { poolMax: 8 },
);
