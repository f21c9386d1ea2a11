/** The store toolkit exported for custom stores: each rule as the built-in stores apply it. */
import {
  ChangeListeners,
  alreadyExists,
  isRetired,
  rejectUnknownOptions,
  remainingUses,
  replacementFor,
  retiredKeyCannotRotate,
  revokedAtAfterUpdate,
  revokedKeyCannotChangeStatus,
} from '../../src/index';
import { testRecord } from '../helpers/records';

const T = Date.UTC(2026, 0, 15, 12);

describe('ChangeListeners', () => {
  it('runs onFirst for the first listener and onLast after the last one leaves; unsubscribing twice is harmless', () => {
    const events: string[] = [];
    const listeners = new ChangeListeners({ onFirst: () => events.push('first'), onLast: () => events.push('last') });
    const a = listeners.add(() => undefined);
    const b = listeners.add(() => undefined);
    expect(listeners.size).toBe(2);
    a();
    a();
    expect(events).toEqual(['first']);
    b();
    expect(events).toEqual(['first', 'last']);
    listeners.add(() => undefined);
    expect(events).toEqual(['first', 'last', 'first']);
  });

  it('a listener that throws is a warning: the others still hear the change, and notify() does not throw', () => {
    const warnings: { message: string; code?: string }[] = [];
    const spy = jest.spyOn(process, 'emitWarning').mockImplementation(((message: string, options?: { code?: string }) => {
      warnings.push({ message, ...(options?.code ? { code: options.code } : {}) });
    }) as typeof process.emitWarning);
    try {
      const listeners = new ChangeListeners();
      const heard: (string | null)[] = [];
      listeners.add(() => {
        throw new Error('listener bug');
      });
      listeners.add((id) => heard.push(id));
      expect(() => listeners.notify('k1')).not.toThrow();
      listeners.notify(null);
      expect(heard).toEqual(['k1', null]);
      expect(warnings).toEqual([
        { message: 'keygate: a store change listener threw: listener bug', code: 'KEYGATE_LISTENER_ERROR' },
        { message: 'keygate: a store change listener threw: listener bug', code: 'KEYGATE_LISTENER_ERROR' },
      ]);
    } finally {
      spy.mockRestore();
    }
  });
});

describe('the refusals every store answers in the same words', () => {
  it('already_exists names the field and value; the retirement refusals are invalid_argument naming id / status', () => {
    expect(alreadyExists('keyPrefix', 'kg_abc')).toMatchObject({ code: 'already_exists', status: 409, message: 'a key with keyPrefix kg_abc already exists' });
    expect(retiredKeyCannotRotate()).toMatchObject({ code: 'invalid_argument', field: 'id' });
    expect(revokedKeyCannotChangeStatus()).toMatchObject({ code: 'invalid_argument', field: 'status' });
  });

  it('rejectUnknownOptions is a TypeError with a "did you mean"', () => {
    expect(() => rejectUnknownOptions({ clinet: 1 }, ['client', 'keyPrefix'], 'new MyStore()')).toThrow(
      new TypeError('new MyStore(): unsupported option `clinet`, did you mean `client`?'),
    );
    expect(() => rejectUnknownOptions({ client: 1 }, ['client'], 'new MyStore()')).not.toThrow();
  });
});

describe('the rules of rotate', () => {
  it('remainingUses: null stays null, never below 0', () => {
    expect([remainingUses(null, 40), remainingUses(10, 4), remainingUses(3, 3), remainingUses(10, 12)]).toEqual([null, 6, 0, 0]);
  });

  it('isRetired: a revoked status or any revokedAt (a grace period running or over)', () => {
    expect(isRetired('active', null, T)).toBe(false);
    expect(isRetired('suspended', null, T)).toBe(false);
    expect(isRetired('revoked', null, T)).toBe(true);
    expect(isRetired('active', T + 60_000, T)).toBe(true);
    expect(isRetired('active', T - 1, T)).toBe(true);
    expect(isRetired('Revoked', null, T)).toBe(true); // an unknown status is never usable
  });

  it('replacementFor: identity and keygate fields from the replacement, every caller-set field from the old record as stored, the uses left', () => {
    const old = testRecord(T, { name: 'current', status: 'suspended', scopes: ['now'], maxUses: 10, useCount: 4, ownerId: 'o', metadata: { a: 1 } });
    const stale = testRecord(T + 1, { name: 'stale', status: 'active', scopes: ['then'], description: 'gone since', rotatedFromId: old.id });
    const replacement = replacementFor({ oldId: old.id, replacement: stale, oldRevokedAt: new Date(T), now: new Date(T) }, old);
    const expected: Record<string, unknown> = { ...stale, name: 'current', status: 'suspended', scopes: ['now'], ownerId: 'o', metadata: { a: 1 }, maxUses: 6 };
    delete expected.description;
    expect(replacement).toStrictEqual(expected);
    expect(replacement.id).toBe(stale.id);
    expect(replacement.useCount).toBe(0);
  });
});

describe('revokedAtAfterUpdate', () => {
  const at = new Date(T);
  it.each([
    ['a revocation of a never-revoked key stamps updatedAt', null, { status: 'revoked', updatedAt: at }, T],
    ['a revocation keeps an earlier revokedAt', T - 5, { status: 'revoked', updatedAt: at }, T - 5],
    ['a revocation stops a grace period now', T + 60_000, { status: 'revoked', updatedAt: at }, T],
    ['a revocation ignores a later revokedAt in the patch', null, { status: 'revoked', revokedAt: new Date(T + 9), updatedAt: at }, T],
    ['another patch leaves revokedAt alone', T - 5, { name: 'x', updatedAt: at }, undefined],
    ['another patch may set revokedAt explicitly', null, { revokedAt: new Date(T + 9), updatedAt: at }, T + 9],
  ] as const)('%s', (_what, stored, patch, expected) => {
    expect(revokedAtAfterUpdate(stored, patch as never)).toBe(expected);
  });

  it('reads the patch through own properties: a polluted Object.prototype.status revokes nothing', () => {
    const prototype = Object.prototype as unknown as Record<string, unknown>;
    prototype.status = 'revoked';
    try {
      expect(revokedAtAfterUpdate(null, { updatedAt: at })).toBeUndefined();
    } finally {
      delete prototype.status;
    }
  });
});
