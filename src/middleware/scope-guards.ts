/**
 * Per-route scope guards. They run after an `authenticate()` admitted (and counted) the request;
 * a refusal here does not give the use back.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { refusalError } from '../errors.js';
import { type RefusalStyle, refuse } from '../http/respond.js';
import { checkAllScopes, checkAnyScope, compileScopes } from '../policy/scopes.js';
import { admissionOf } from './admission.js';
import { requiredScopesOption } from './authenticate-options.js';

const DEFAULT_STYLE: RefusalStyle = { realm: 'api', rateLimitHeaders: true, onError: undefined, passErrors: false };

/** Builds a guard; a wrong scope list is the developer's mistake, so it throws a TypeError at mount time. */
function guard(name: string, check: typeof checkAllScopes, scopes: unknown[]): RequestHandler {
  const required = requiredScopesOption(scopes, `${name}() scopes`);
  if (required.length === 0) throw new TypeError(`${name} needs at least one scope`);

  return function keygateScopeGuard(req: Request, res: Response, next: NextFunction): void {
    const admission = admissionOf(req);
    // A principal set by other means (tests, custom auth) is honoured; no principal at all is refused.
    const granted = admission?.scopes ?? (req.apiKey ? compileScopes(req.apiKey.scopes) : undefined);
    const style = admission?.style ?? DEFAULT_STYLE;
    if (!granted) return refuse(refusalError('missing_api_key'), req, res, next, style);
    if (check(granted, required).ok) return next();
    admission?.refusedLater?.(admission, 'insufficient_scope');
    return refuse(refusalError('insufficient_scope', { requiredScopes: required }), req, res, next, style);
  };
}

/**
 * Admits a request whose key has every one of `scopes` (wildcards in the key's granted scopes
 * apply). Mount it after `keys.authenticate()`.
 *
 * @example
 * ```ts
 * app.get('/leads', requireScopes('leads:read'), listLeads);
 * ```
 */
export function requireScopes(...scopes: string[]): RequestHandler {
  return guard('requireScopes', checkAllScopes, scopes);
}

/**
 * Admits a request whose key has at least one of `scopes`.
 *
 * @example
 * ```ts
 * app.post('/leads', requireAnyScope('leads:write', 'admin'), createLead);
 * ```
 */
export function requireAnyScope(...scopes: string[]): RequestHandler {
  return guard('requireAnyScope', checkAnyScope, scopes);
}
