/**
 * Delegation: the admin API never lets a caller make or manage a key more powerful than its own.
 * Pure checks of (the caller's key, the settings asked for); the router calls them before the
 * manager writes anything.
 */
import ipaddr from 'ipaddr.js';
import { invalidArgument, type KeygateError } from '../errors.js';
import { parseIpRange } from '../policy/ip.js';
import { scopeGrants } from '../policy/scopes.js';
import type { ApiKey, RateLimit } from '../types.js';

/** The settings of a key the checks compare: what `create` takes and a key has. */
export interface KeySettings {
  scopes?: readonly string[] | undefined;
  allowedIps?: readonly string[] | undefined;
  maxUses?: number | null | undefined;
  rateLimit?: RateLimit | null | undefined;
  expiresAt?: Date | string | number | null | undefined;
  maxConcurrent?: number | null | undefined;
  allowedOrigins?: readonly string[] | undefined;
  requireHttps?: boolean | undefined;
  clientCertificateSha256?: readonly string[] | undefined;
}

/**
 * The first way an existing key `target` holds more than `caller` may act on with `action`, or
 * `undefined`. What each action puts in the caller's hands decides what is compared:
 * - `rotate` hands the caller a new raw key with the target's settings and the uses it has left,
 *   so the target must be no more powerful in every respect (its remaining uses counted);
 * - `update`, `revoke` and `delete` hand nothing out (an update's result is checked in full on its
 *   own); they only take away, so the one thing guarded is a narrow admin key disabling a key whose
 *   scopes it does not hold. Limits, uses and expiry do not count here: otherwise an admin key
 *   with a use limit could no longer revoke the keys it created after its next call.
 * A key may always revoke, delete or narrow itself.
 */
export function targetBeyondCaller(caller: ApiKey, target: ApiKey, action: 'update' | 'rotate' | 'revoke' | 'delete'): KeygateError | undefined {
  if (action === 'rotate') {
    const remaining = target.maxUses === null ? null : Math.max(0, target.maxUses - target.useCount);
    return exceedsCaller(caller, { ...target, maxUses: remaining });
  }
  if (target.id === caller.id) return undefined;
  const scope = target.scopes.find((granted) => !callerGrants(caller.scopes, granted));
  return scope === undefined ? undefined : invalidArgument('scopes', `grants ${JSON.stringify(scope)}, beyond the calling key's own`);
}

/** Whether `caller`'s scopes cover the granted scope `scope` (a literal, `p:*` or `*`). */
export function callerGrants(callerScopes: readonly string[], scope: string): boolean {
  if (callerScopes.includes('*')) return true;
  if (scope === '*') return false;
  if (!scope.endsWith(':*')) {
    try {
      return scopeGrants(callerScopes, scope);
    } catch {
      return false;
    }
  }
  const prefix = scope.slice(0, -2);
  return callerScopes.some((own) => own.endsWith(':*') && (prefix === own.slice(0, -2) || prefix.startsWith(own.slice(0, -1))));
}

/** Whether the address range `inner` lies inside `outer` (both allowlist entries). */
function rangeInside(inner: string, outer: string): boolean {
  const a = parseIpRange(inner);
  const b = parseIpRange(outer);
  if (!a || !b) return false;
  const [address, bits] = a;
  const [base, baseBits] = b;
  if (address.kind() !== base.kind() || bits < baseBits) return false;
  return (address as ipaddr.IPv4).match([base as ipaddr.IPv4, baseBits]);
}

/** An instant as epoch ms, or `null`; `NaN` for something that is no instant (validation says so later). */
function epoch(value: Date | string | number | null | undefined): number | null {
  if (value === null || value === undefined) return null;
  return new Date(value).getTime();
}

/** A setting the caller may not give: `invalid_argument` naming it. */
function beyond(field: string, what: string): KeygateError {
  return invalidArgument(field, `${what} the calling key's own: a key can only hand out what it holds`);
}

/**
 * The first way `settings` would make a key more powerful than `caller`, or `undefined`. Every
 * restriction the caller carries must be carried by the key too, at least as tight: scopes it
 * grants, addresses inside its own, limits and uses no larger, an expiry no later, its origins,
 * its HTTPS requirement and its pinned certificates. With `only`, just those settings are compared
 * (an update: the caller answers for what it sets, not for what the key held before).
 */
export function exceedsCaller(caller: ApiKey, settings: KeySettings, only?: ReadonlySet<string>): KeygateError | undefined {
  const compared = (field: keyof KeySettings): boolean => only === undefined || only.has(field);
  if (compared('scopes')) {
    for (const scope of settings.scopes ?? []) {
      if (!callerGrants(caller.scopes, scope)) return beyond('scopes', `grants ${JSON.stringify(scope)}, beyond`);
    }
  }
  if (caller.allowedIps.length > 0 && compared('allowedIps')) {
    const wanted = settings.allowedIps ?? [];
    if (wanted.length === 0) return beyond('allowedIps', 'admits every address, beyond');
    const outside = wanted.find((entry) => !caller.allowedIps.some((own) => rangeInside(entry, own)));
    if (outside !== undefined) return beyond('allowedIps', `admits ${JSON.stringify(outside)}, beyond`);
  }
  if (caller.maxUses !== null && compared('maxUses')) {
    const left = Math.max(0, caller.maxUses - caller.useCount);
    if (settings.maxUses === null || settings.maxUses === undefined || settings.maxUses > left) return beyond('maxUses', `allows more uses than the ${left} left to`);
  }
  const limit = caller.rateLimit;
  if (limit !== null && compared('rateLimit')) {
    // A bucket without `burst` has a burst of perSecond: that bounds the key's burst too.
    const fields = Object.keys(limit) as (keyof RateLimit)[];
    if (limit.perSecond !== undefined && !fields.includes('burst')) fields.push('burst');
    for (const field of fields) {
      const own = field === 'burst' ? (limit.burst ?? limit.perSecond) : limit[field];
      const wanted = settings.rateLimit?.[field] ?? (field === 'burst' ? settings.rateLimit?.perSecond : undefined);
      if (own !== undefined && (wanted === undefined || wanted > own)) return beyond(`rateLimit.${field}`, 'is looser than');
    }
  }
  // A key in its rotation grace period stops at revokedAt: that is when its holder's power ends.
  const expiries = [epoch(caller.expiresAt), epoch(caller.revokedAt)].filter((at): at is number => at !== null);
  const callerExpiry = expiries.length === 0 ? null : Math.min(...expiries);
  if (callerExpiry !== null && compared('expiresAt')) {
    const expiry = epoch(settings.expiresAt);
    if (expiry === null || !(expiry <= callerExpiry)) return beyond('expiresAt', 'outlives');
  }
  if (caller.maxConcurrent !== null && compared('maxConcurrent') && (settings.maxConcurrent === null || settings.maxConcurrent === undefined || settings.maxConcurrent > caller.maxConcurrent)) {
    return beyond('maxConcurrent', 'allows more requests in flight than');
  }
  if (caller.allowedOrigins.length > 0 && compared('allowedOrigins')) {
    const wanted = settings.allowedOrigins ?? [];
    if (wanted.length === 0 || wanted.some((origin) => !caller.allowedOrigins.includes(origin))) return beyond('allowedOrigins', 'admits origins beyond');
  }
  if (caller.requireHttps && compared('requireHttps') && settings.requireHttps !== true) return beyond('requireHttps', 'drops the HTTPS requirement of');
  if (caller.clientCertificateSha256.length > 0 && compared('clientCertificateSha256')) {
    const wanted = settings.clientCertificateSha256 ?? [];
    const own = caller.clientCertificateSha256;
    if (wanted.length === 0 || wanted.some((fingerprint) => !own.includes(fingerprint.replace(/:/g, '').toLowerCase()))) {
      return beyond('clientCertificateSha256', 'admits certificates beyond');
    }
  }
  return undefined;
}
