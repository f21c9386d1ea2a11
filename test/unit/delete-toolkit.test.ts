/** The store toolkit's rules of delete and purge, as every store applies them. */
import { deletedAtAfterUpdate, isPurgeable } from '../../src/index';

const T = Date.UTC(2026, 0, 15, 12);

describe('deletedAtAfterUpdate: a key is deleted once', () => {
  const at = new Date(T);
  it.each([
    ['a delete of a key never deleted sets the patch deletedAt', null, { deletedAt: at }, T],
    ['a second delete keeps the stored deletedAt (a later one)', T - 5, { deletedAt: at }, undefined],
    ['a second delete keeps the stored deletedAt (an earlier one)', T + 5, { deletedAt: at }, undefined],
    ['a stored deletedAt at the epoch (0) is a deletedAt', 0, { deletedAt: at }, undefined],
    ['a stored deletedAt before 1970 is a deletedAt', -86_400_000, { deletedAt: at }, undefined],
    ['a patch deletedAt before 1970 applies to a key never deleted', null, { deletedAt: new Date(-1) }, -1],
    ['a patch without deletedAt leaves a key never deleted as it is', null, {}, undefined],
    ['a patch without deletedAt leaves a deleted key as it is', T - 5, {}, undefined],
    ['a patch with deletedAt undefined leaves it as it is', null, { deletedAt: undefined }, undefined],
  ] as const)('%s', (_what, stored, patch, expected) => {
    expect(deletedAtAfterUpdate(stored, patch)).toBe(expected);
  });

  it('reads the patch through own properties: a polluted Object.prototype.deletedAt deletes nothing', () => {
    const prototype = Object.prototype as unknown as Record<string, unknown>;
    prototype.deletedAt = new Date(T);
    try {
      expect(deletedAtAfterUpdate(null, {})).toBeUndefined();
      expect(deletedAtAfterUpdate(null, { updatedAt: new Date(T) } as never)).toBeUndefined();
    } finally {
      delete prototype.deletedAt;
    }
  });

  it('looks only at deletedAt: a revocation or other fields in the patch change nothing', () => {
    expect(deletedAtAfterUpdate(null, { status: 'revoked', updatedAt: new Date(T + 9), deletedAt: new Date(T) } as never)).toBe(T);
    expect(deletedAtAfterUpdate(null, { status: 'revoked', updatedAt: new Date(T) } as never)).toBeUndefined();
  });
});

describe('isPurgeable: deleted strictly before deletedBefore', () => {
  const deletedBefore = new Date(T);
  it.each([
    ['a key never deleted is never purged', null, false],
    ['deleted a millisecond before', T - 1, true],
    ['deleted exactly at deletedBefore stays', T, false],
    ['deleted after deletedBefore stays', T + 1, false],
    ['deleted long before', T - 365 * 86_400_000, true],
    ['deleted at the epoch (0)', 0, true],
    ['deleted before 1970', -1, true],
  ] as const)('%s', (_what, deletedAt, expected) => {
    expect(isPurgeable(deletedAt, { deletedBefore })).toBe(expected);
  });

  it('with deletedBefore at the epoch or before 1970, compares the instants as they are', () => {
    expect(isPurgeable(-1, { deletedBefore: new Date(0) })).toBe(true);
    expect(isPurgeable(0, { deletedBefore: new Date(0) })).toBe(false);
    expect(isPurgeable(-10, { deletedBefore: new Date(-5) })).toBe(true);
    expect(isPurgeable(-5, { deletedBefore: new Date(-5) })).toBe(false);
  });

  it('an invalid deletedBefore (NaN) purges nothing', () => {
    expect(isPurgeable(T - 1, { deletedBefore: new Date(Number.NaN) })).toBe(false);
    expect(isPurgeable(0, { deletedBefore: new Date(Number.NaN) })).toBe(false);
  });
});
