import { checkAllScopes, checkAnyScope, compileScopes, hasScope, isValidGrantedScope, isValidRequiredScope } from '../../src/policy/scopes';
import { scopeGrants } from '../../src/index';

const grants = (granted: string[], required: string) => hasScope(compileScopes(granted), required);
const admitted = { ok: true };
const refused = { ok: false, code: 'insufficient_scope' };

describe('hasScope (SPEC §7)', () => {
  it.each([
    // exact
    ['leads:read', 'leads:read', true],
    ['leads:read', 'leads:write', false],
    ['leads:read', 'leads', false],
    ['leads:read', 'leads:read:all', false],
    ['leads', 'leads:read', false],
    ['Leads:read', 'leads:read', false],
    ['billing:invoices:write', 'billing:invoices:write', true],
    // `*` alone grants everything
    ['*', 'leads:read', true],
    ['*', 'leads', true],
    ['*', 'billing:invoices:write', true],
    // trailing `*`: one or more remaining segments, not zero
    ['leads:*', 'leads:read', true],
    ['leads:*', 'leads:read:all', true],
    ['leads:*', 'leads', false],
    ['leads:*', 'leadsx:read', false],
    ['leads:*', 'contacts:read', false],
    ['billing:invoices:*', 'billing:invoices:write', true],
    ['billing:invoices:*', 'billing:invoices', false],
    ['billing:invoices:*', 'billing:payments:write', false],
    // `*` in the middle: exactly one segment
    ['billing:*:write', 'billing:invoices:write', true],
    ['billing:*:write', 'billing:payments:write', true],
    ['billing:*:write', 'billing:invoices:read', false],
    ['billing:*:write', 'billing:write', false],
    ['billing:*:write', 'billing:a:b:write', false],
    ['*:read', 'leads:read', true],
    ['*:read', 'leads:write', false],
    ['*:read', 'read', false],
    ['*:read', 'leads:x:read', false],
    ['*:*', 'a:b', true],
    ['*:*', 'a:b:c', true],
    ['*:*', 'a', false],
    // required scopes are literal: a required `*` is not a wildcard
    ['leads:read', '*', false],
    ['leads:read', 'leads:*', false],
    ['leads:*', 'leads:*', true],
    ['*', '*', true],
  ])('granted %j covers required %j: %p', (granted, required, expected) => {
    expect(grants([granted], required)).toBe(expected);
  });

  it('grants when any one of several granted scopes covers the requirement', () => {
    expect(grants(['contacts:read', 'leads:*'], 'leads:write')).toBe(true);
    expect(grants(['contacts:read', 'leads:read'], 'leads:write')).toBe(false);
    expect(grants([], 'leads:read')).toBe(false);
  });
});

describe('checkAllScopes', () => {
  it.each([
    [['leads:read', 'leads:write'], ['leads:read', 'leads:write'], admitted],
    [['leads:read'], ['leads:read', 'leads:write'], refused],
    [['leads:*'], ['leads:read', 'leads:write'], admitted],
    [['*'], ['a', 'b:c'], admitted],
    [['leads:read'], [], admitted],
    [[], [], admitted],
    [[], ['leads:read'], refused],
  ])('granted %j, all of %j required → %j', (granted, required, expected) => {
    expect(checkAllScopes(compileScopes(granted), required)).toEqual(expected);
  });
});

describe('checkAnyScope', () => {
  it.each([
    [['leads:write'], ['leads:write', 'admin'], admitted],
    [['admin'], ['leads:write', 'admin'], admitted],
    [['leads:read'], ['leads:write', 'admin'], refused],
    [['leads:*'], ['contacts:read', 'leads:write'], admitted],
    [[], ['admin'], refused],
    [['leads:read'], [], admitted],
  ])('granted %j, any of %j required → %j', (granted, required, expected) => {
    expect(checkAnyScope(compileScopes(granted), required)).toEqual(expected);
  });
});

describe('isValidGrantedScope', () => {
  it.each(['leads:read', 'read:posts', 'billing:invoices:write', 'admin', '*', 'leads:*', '*:read', 'billing:*:write', '*:*', 'a.b:c-d', 'x'.repeat(256)])(
    'accepts %j',
    (scope) => {
      expect(isValidGrantedScope(scope)).toBe(true);
    },
  );

  it.each([
    '', ':', 'leads:', ':read', 'leads::read', 'leads read', ' leads', 'leads:read ', 'leads\tread', 'leads\n',
    'lea*ds', 'leads:re*', '**', 'leads:**', 'x'.repeat(257),
  ])('refuses %j', (scope) => {
    expect(isValidGrantedScope(scope)).toBe(false);
  });

  it.each([undefined, null, 5, ['leads:read']])('refuses the non-string %p', (scope) => {
    expect(isValidGrantedScope(scope)).toBe(false);
  });
});

describe('isValidRequiredScope', () => {
  it.each(['leads:read', 'admin', 'billing:invoices:write', 'a.b:c-d', 'x'.repeat(256)])('accepts the literal %j', (scope) => {
    expect(isValidRequiredScope(scope)).toBe(true);
  });

  it.each(['*', 'leads:*', '*:read', 'lea*ds', '', ':', 'leads:', 'leads::read', 'leads read', ' leads', 'x'.repeat(257)])(
    'refuses %j (required scopes are literal and well-formed)',
    (scope) => {
      expect(isValidRequiredScope(scope)).toBe(false);
    },
  );

  it.each([undefined, null, 5, ['leads:read']])('refuses the non-string %p', (scope) => {
    expect(isValidRequiredScope(scope)).toBe(false);
  });
});

describe('scopeGrants (exported)', () => {
  it.each([
    [['billing:*'], 'billing:invoices:write', true],
    [['*'], 'anything:at:all', true],
    [['leads:read'], 'leads:write', false],
    [[], 'leads:read', false],
  ])('scopeGrants(%j, %p) is %p', (granted, required, expected) => {
    expect(scopeGrants(granted, required)).toBe(expected);
  });

  // Audit item 12: `scopeGrants(['a:*'], 'a:')` was true. A required scope is validated as the
  // guards validate it: an empty segment, a wildcard or whitespace is a programming mistake.
  it.each(['a:', ':a', 'a::b', 'a:*', '*', '', 'a b'])('throws a TypeError for the required scope %p instead of answering', (required) => {
    expect(() => scopeGrants(['a:*'], required)).toThrow(TypeError);
    expect(() => scopeGrants(['*'], required)).toThrow(TypeError);
  });
});
