/**
 * `keys.delete()`, `list({ includeDeleted })` and `keys.purge()` as an app uses them: a deleted
 * key stops working at once and leaves the list, `get()` still shows it until it is purged, and a
 * purge removes only keys deleted before its instant. (Every store's part is in the store contract.)
 */
import { keygate } from '../../src/index';
import { testKeys } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();
const DAY = 86_400_000;

describe('keys.delete()', () => {
  it('revokes the key at once and marks it deleted; get() still shows it, list() leaves it out unless includeDeleted', async () => {
    const { keys, clock } = testKeys();
    track(keys);
    const { key, apiKey } = await keys.create({ name: 'doomed', ownerId: 'u1' });
    const { apiKey: kept } = await keys.create({ name: 'kept', ownerId: 'u1' });
    expect((await keys.verify(key)).ok).toBe(true);

    const deleted = await keys.delete(apiKey.id);
    expect(deleted).toMatchObject({ id: apiKey.id, status: 'revoked', isActive: false });
    expect(deleted.deletedAt).toEqual(new Date(clock.now()));
    expect(deleted.revokedAt).toEqual(new Date(clock.now()));
    expect(await keys.verify(key)).toMatchObject({ ok: false, error: { code: 'api_key_revoked' } });

    expect((await keys.get(apiKey.id))?.deletedAt).toEqual(new Date(clock.now()));
    expect((await keys.list()).items.map((item) => item.id)).toEqual([kept.id]);
    expect((await keys.list({ ownerId: 'u1', includeDeleted: true })).items.map((item) => item.id).sort()).toEqual([apiKey.id, kept.id].sort());
    expect((await keys.list({ status: 'revoked' })).items).toEqual([]);
    expect((await keys.list({ status: 'revoked', includeDeleted: true })).items.map((item) => item.id)).toEqual([apiKey.id]);
  });

  it('deleting twice keeps the first deletedAt (and revokedAt)', async () => {
    const { keys, clock } = testKeys();
    track(keys);
    const { apiKey } = await keys.create({ name: 'k' });
    const first = clock.now();
    await keys.delete(apiKey.id);
    clock.advance(DAY);
    const again = await keys.delete(apiKey.id);
    expect(again.deletedAt).toEqual(new Date(first));
    expect(again.revokedAt).toEqual(new Date(first));
  });

  it('an unknown id is not_found; a bad id is invalid_argument', async () => {
    const { keys } = testKeys();
    track(keys);
    await expect(keys.delete('no-such-key')).rejects.toMatchObject({ code: 'not_found' });
    await expect(keys.delete('' as string)).rejects.toMatchObject({ code: 'invalid_argument', field: 'id' });
    await expect(keys.delete(42 as unknown as string)).rejects.toMatchObject({ code: 'invalid_argument', field: 'id' });
  });

  it('a deleted key cannot be rotated or brought back', async () => {
    const { keys } = testKeys();
    track(keys);
    const { apiKey } = await keys.create({ name: 'k' });
    await keys.delete(apiKey.id);
    await expect(keys.rotate(apiKey.id)).rejects.toMatchObject({ code: 'invalid_argument', field: 'id' });
    await expect(keys.update(apiKey.id, { status: 'active' })).rejects.toMatchObject({ code: 'invalid_argument', field: 'status' });
  });

  it('list() refuses an includeDeleted that is not a boolean', async () => {
    const { keys } = testKeys();
    track(keys);
    await expect(keys.list({ includeDeleted: 'yes' as unknown as boolean })).rejects.toMatchObject({ code: 'invalid_argument', field: 'includeDeleted' });
  });
});

describe('keys.purge()', () => {
  it('removes exactly the keys deleted before deletedBefore, and says how many', async () => {
    const { keys, clock } = testKeys();
    track(keys);
    const { apiKey: old } = await keys.create({ name: 'deleted long ago' });
    const { apiKey: recent } = await keys.create({ name: 'deleted lately' });
    const { key: liveKey, apiKey: live } = await keys.create({ name: 'live' });
    await keys.delete(old.id);
    const cutoff = clock.now() + DAY;
    clock.set(cutoff);
    await keys.delete(recent.id); // deleted exactly at the cutoff: stays

    expect(await keys.purge({ deletedBefore: new Date(cutoff) })).toBe(1);
    expect(await keys.get(old.id)).toBeNull();
    expect(await keys.get(recent.id)).not.toBeNull();
    expect((await keys.list({ includeDeleted: true })).items.map((item) => item.id).sort()).toEqual([recent.id, live.id].sort());
    expect((await keys.verify(liveKey)).ok).toBe(true);
    // Nothing left to purge before that instant; ISO text and epoch ms work too.
    expect(await keys.purge({ deletedBefore: new Date(cutoff).toISOString() })).toBe(0);
    expect(await keys.purge({ deletedBefore: cutoff + 1 })).toBe(1);
    expect(await keys.get(recent.id)).toBeNull();
  });

  it('is not cut short by storeTimeoutMs: a slow purge runs to its end and reports its count', async () => {
    const { keys, store, clock } = testKeys({ storeTimeoutMs: 20 });
    track(keys);
    const { apiKey } = await keys.create({ name: 'k' });
    await keys.delete(apiKey.id);
    const purge = store.purge;
    store.purge = async (input) => {
      await new Promise((resolve) => setTimeout(resolve, 150));
      return purge(input);
    };
    await expect(keys.purge({ deletedBefore: clock.now() + 1 })).resolves.toBe(1);
  });

  it('a purged key is unknown to verification, also to another instance that had it cached', async () => {
    const { keys, store, clock } = testKeys();
    track(keys);
    const other = track(keygate({ store, prefix: 'pk_test', hashing: 'sha256', now: clock.now }));
    const { key, apiKey } = await keys.create({ name: 'k' });
    expect((await other.verify(key)).ok).toBe(true);
    await keys.delete(apiKey.id);
    await keys.purge({ deletedBefore: clock.now() + 1 });
    expect(await keys.verify(key)).toMatchObject({ ok: false, error: { code: 'invalid_api_key' } });
    expect(await other.verify(key)).toMatchObject({ ok: false, error: { code: 'invalid_api_key' } });
  });

  it.each([[undefined], [null], [{}], [{ deletedBefore: 'yesterday' }], [{ deletedBefore: Number.NaN }], [{ deletedBefore: new Date(0), extra: 1 }]])(
    'refuses %p with invalid_argument and removes nothing',
    async (input) => {
      const { keys, store } = testKeys();
      track(keys);
      const { apiKey } = await keys.create({ name: 'k' });
      await keys.delete(apiKey.id);
      await expect(keys.purge(input as never)).rejects.toMatchObject({ code: 'invalid_argument' });
      expect(store.calls.purge).toBe(0);
      expect(await keys.get(apiKey.id)).not.toBeNull();
    },
  );
});
