/**
 * Scope matching. Scopes are `:`-separated segments. In a granted scope, `*` matches any one
 * segment, a trailing `*` matches one or more remaining segments, and `*` alone grants everything.
 * Required scopes are literal.
 */
import { ADMIT, type PolicyResult } from './result.js';

/** Granted scopes split into segments once, so a request compares arrays, not strings. */
export type CompiledScopes = readonly (readonly string[])[];

/** Splits granted scopes into segments. */
export function compileScopes(granted: readonly string[]): CompiledScopes {
  return granted.map((scope) => scope.split(':'));
}

/** True when the granted scope (as segments) covers the required literal scope. */
function grants(granted: readonly string[], required: readonly string[]): boolean {
  const last = granted.length - 1;
  for (let i = 0; i < granted.length; i++) {
    const segment = granted[i];
    if (segment === '*' && i === last) return required.length > i;
    if (i >= required.length) return false;
    if (segment !== '*' && segment !== required[i]) return false;
  }
  return granted.length === required.length;
}

/** True when any granted scope covers `required`. */
export function hasScope(granted: CompiledScopes, required: string): boolean {
  const segments = required.split(':');
  for (const scope of granted) if (grants(scope, segments)) return true;
  return false;
}

/**
 * True when the granted scopes cover `required`, with the wildcard rules of keygate's scopes.
 * `required` must be a literal scope (non-empty segments, no `*`, no whitespace): anything else
 * throws a `TypeError`, as `requireScopes` does, instead of answering a question that has no answer.
 *
 * @example
 * ```ts
 * scopeGrants(['billing:*'], 'billing:invoices:write'); // true
 * scopeGrants(['leads:read'], 'leads:write');           // false
 * ```
 */
export function scopeGrants(granted: readonly string[], required: string): boolean {
  if (!isValidRequiredScope(required)) {
    throw new TypeError(`scopeGrants: ${JSON.stringify(required)} is not a literal scope such as "leads:read"`);
  }
  return hasScope(compileScopes(granted), required);
}

/** Admits when every required scope is granted. */
export function checkAllScopes(granted: CompiledScopes, required: readonly string[]): PolicyResult {
  for (const scope of required) if (!hasScope(granted, scope)) return { ok: false, code: 'insufficient_scope' };
  return ADMIT;
}

/** Admits when at least one required scope is granted (an empty list admits). */
export function checkAnyScope(granted: CompiledScopes, required: readonly string[]): PolicyResult {
  if (required.length === 0) return ADMIT;
  for (const scope of required) if (hasScope(granted, scope)) return ADMIT;
  return { ok: false, code: 'insufficient_scope' };
}

const SCOPE_PATTERN = /^[^\s:*]+(?::[^\s:*]+)*$/;
const SEGMENT_PATTERN = /^[^\s:]+$/;

/** Validates a granted scope: non-empty segments, no whitespace; `*` only as a whole segment. */
export function isValidGrantedScope(scope: unknown): scope is string {
  if (typeof scope !== 'string' || scope.length === 0 || scope.length > 256) return false;
  return scope.split(':').every((segment) => SEGMENT_PATTERN.test(segment) && (segment === '*' || !segment.includes('*')));
}

/** Validates a required scope: literal segments only. */
export function isValidRequiredScope(scope: unknown): scope is string {
  return typeof scope === 'string' && scope.length > 0 && scope.length <= 256 && SCOPE_PATTERN.test(scope);
}

/** How a granted scope is described in errors. */
export const GRANTED_SCOPE_RULE = 'a scope such as "leads:read" (segments without spaces; "*" only as a whole segment)';

/** How a required scope is described in errors. */
export const REQUIRED_SCOPE_RULE = 'a literal scope such as "leads:read"';
