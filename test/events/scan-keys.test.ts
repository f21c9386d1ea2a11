/**
 * `keys.scanKeys()`: every live key expiring within the horizon gets `key.expiring`, every key older
 * than its `rotationFrequencyDays` gets `key.rotation_due`, on every run, across pages of the store.
 */
import { type KeygateEvents, MemoryStore, keygate } from '../../src/index';
import { T0, testClock } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();
const DAY = 86_400_000;

describe('keys.scanKeys()', () => {
  it('emits key.expiring and key.rotation_due for the live keys that need them, and returns them', async () => {
    const clock = testClock();
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256', now: clock.now }));
    const expiring: KeygateEvents['key.expiring'][] = [];
    const due: KeygateEvents['key.rotation_due'][] = [];
    keys.on('key.expiring', (event) => void expiring.push(event));
    keys.on('key.rotation_due', (event) => void due.push(event));

    const soon = await keys.create({ name: 'soon', expiresAt: T0 + 3 * DAY });
    const later = await keys.create({ name: 'later', expiresAt: T0 + 30 * DAY });
    const old = await keys.create({ name: 'old', rotationFrequencyDays: 10 });
    const young = await keys.create({ name: 'young', rotationFrequencyDays: 90 });
    const revoked = await keys.create({ name: 'revoked soon', expiresAt: T0 + DAY, rotationFrequencyDays: 1 });
    await keys.revoke(revoked.apiKey.id);
    // 1,200 more keys: the scan reads past the store's first page.
    for (let i = 0; i < 1_200; i++) await keys.create({ name: `filler ${i}` });
    const last = await keys.create({ name: 'last page', expiresAt: T0 + DAY });
    clock.advance(11 * DAY - 1_000);

    // Expired by now: `soon` and `last page` are past their expiry, so not live any more.
    const first = await keys.scanKeys({ expiringWithinMs: 20 * DAY });
    expect(first.expiring.map((key) => key.name)).toEqual(['later']);
    expect(first.rotationDue.map((key) => key.name)).toEqual(['old']);
    expect(expiring).toEqual([{ apiKey: expect.objectContaining({ id: later.apiKey.id }), expiresAt: new Date(T0 + 30 * DAY), expiresInMs: 19 * DAY + 1_000, at: new Date(T0 + 11 * DAY - 1_000) }]);
    expect(due).toEqual([{ apiKey: expect.objectContaining({ id: old.apiKey.id }), dueAt: new Date(T0 + 10 * DAY), at: new Date(T0 + 11 * DAY - 1_000) }]);
    expect([soon, young, last].some((key) => first.expiring.some((found) => found.id === key.apiKey.id))).toBe(false);

    // Again on the next run; and the default horizon is 7 days.
    const second = await keys.scanKeys();
    expect(second.expiring).toEqual([]);
    expect(second.rotationDue.map((key) => key.name)).toEqual(['old']);
    expect(due).toHaveLength(2);
    await expect(keys.scanKeys({ expiringWithinMs: -1 })).rejects.toMatchObject({ code: 'invalid_argument', field: 'expiringWithinMs' });
    await expect(keys.scanKeys({ horizon: 1 } as never)).rejects.toMatchObject({ code: 'invalid_argument', field: 'horizon' });
  });
});
