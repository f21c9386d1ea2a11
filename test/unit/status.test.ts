import { checkExpiry, checkStatus, isActiveAt } from '../../src/policy/status';
import type { ApiKeyStatus } from '../../src/types';

const NOW = Date.UTC(2025, 5, 1, 12, 0, 0);

function record(status: ApiKeyStatus, revokedAt: number | null = null, expiresAt: number | null = null) {
  return {
    status,
    revokedAt: revokedAt === null ? null : new Date(revokedAt),
    expiresAt: expiresAt === null ? null : new Date(expiresAt),
  };
}

describe('checkStatus', () => {
  it.each([
    ['an active key', record('active'), { ok: true }],
    ['a revoked key', record('revoked', NOW - 1000), { ok: false, code: 'api_key_revoked' }],
    ['a revoked key with no revokedAt', record('revoked'), { ok: false, code: 'api_key_revoked' }],
    ['a revoked key whose revokedAt is (oddly) in the future', record('revoked', NOW + 60_000), { ok: false, code: 'api_key_revoked' }],
    ['a suspended key', record('suspended'), { ok: false, code: 'api_key_disabled' }],
    ['an active key in its rotation grace (revokedAt in the future)', record('active', NOW + 1), { ok: true }],
    ['an active key whose grace ends exactly now', record('active', NOW), { ok: false, code: 'api_key_revoked' }],
    ['an active key whose grace ended before now', record('active', NOW - 1), { ok: false, code: 'api_key_revoked' }],
    ['a suspended key past its scheduled revocation (revoked wins)', record('suspended', NOW - 1), { ok: false, code: 'api_key_revoked' }],
    ['a suspended key before its scheduled revocation', record('suspended', NOW + 60_000), { ok: false, code: 'api_key_disabled' }],
  ])('answers %s with %j', (_what, rec, expected) => {
    expect(checkStatus(rec, NOW)).toEqual(expected);
  });

  it('lets a rotated-out key work while now < rotation time + grace and not a millisecond after', () => {
    const rotatedAt = NOW;
    const grace = 30_000;
    const rec = record('active', rotatedAt + grace);
    expect(checkStatus(rec, rotatedAt).ok).toBe(true);
    expect(checkStatus(rec, rotatedAt + grace - 1).ok).toBe(true);
    expect(checkStatus(rec, rotatedAt + grace)).toEqual({ ok: false, code: 'api_key_revoked' });
    expect(checkStatus(rec, rotatedAt + grace + 1)).toEqual({ ok: false, code: 'api_key_revoked' });
  });

  it('does not look at expiry', () => {
    expect(checkStatus(record('active', null, NOW - 1000), NOW).ok).toBe(true);
  });
});

describe('checkExpiry', () => {
  it.each([
    ['no expiry', null, { ok: true }],
    ['expiry a millisecond from now', NOW + 1, { ok: true }],
    ['expiry exactly now', NOW, { ok: false, code: 'api_key_expired' }],
    ['expiry a millisecond ago', NOW - 1, { ok: false, code: 'api_key_expired' }],
    ['expiry years ago', Date.UTC(2000, 0, 1), { ok: false, code: 'api_key_expired' }],
  ])('answers a key with %s: %j', (_what, expiresAt, expected) => {
    expect(checkExpiry(record('active', null, expiresAt), NOW)).toEqual(expected);
  });

  it('follows the injected clock, not the wall clock', () => {
    const rec = record('active', null, Date.UTC(2000, 0, 1));
    expect(checkExpiry(rec, Date.UTC(1999, 0, 1)).ok).toBe(true);
    expect(checkExpiry(rec, Date.UTC(2001, 0, 1)).ok).toBe(false);
  });
});

describe('isActiveAt', () => {
  it.each([
    ['active, no expiry, not revoked', record('active'), true],
    ['active in its grace period', record('active', NOW + 1), true],
    ['active with an expiry in the future', record('active', null, NOW + 1), true],
    ['active but expired', record('active', null, NOW), false],
    ['active but past its grace', record('active', NOW), false],
    ['suspended', record('suspended'), false],
    ['revoked', record('revoked', NOW - 1), false],
  ])('is %p for a key that is %s', (_what, rec, expected) => {
    expect(isActiveAt(rec, NOW)).toBe(expected);
  });
});
