/**
 * The authentication middleware: wires extraction, the verification pipeline and the answer
 * together, and does nothing else.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { KeygateError } from '../errors.js';
import { type ErrorHandler, type RefusalStyle, refuse, setRateLimitHeaders } from '../http/respond.js';
import { type CredentialSources, extractCredential } from '../key/extract.js';
import type { Verifier } from '../verification/verifier.js';
import { admissionOf, markAdmitted } from './admission.js';
import { warnIfTrustingEveryProxy } from './trust-proxy-warning.js';

/** Options of `keys.authenticate()`. */
export interface AuthenticateOptions {
  /**
   * Scopes the key must all have for this route. Checked before the use is counted, so a key
   * refused here consumes nothing.
   * @example `keys.authenticate({ scopes: ['leads:read'] })`
   */
  scopes?: string[];
  /** The key must have at least one of these scopes. */
  anyScopes?: string[];
  /** Read `Authorization: Bearer <key>`. @default true */
  bearer?: boolean;
  /** Header to read the key from, or `false` for none. @default 'x-api-key' */
  header?: string | false;
  /**
   * Query parameter to read the key from, or `false`. Off by default: URLs end up in access logs,
   * browser history and Referer headers, where a key does not belong. @default false
   */
  query?: string | false;
  /** Realm of the `WWW-Authenticate` challenge. @default 'api' */
  realm?: string;
  /** Send the IETF `RateLimit` and `RateLimit-Policy` fields for limited keys. @default true */
  rateLimitHeaders?: boolean;
  /**
   * Takes over the answer to every refusal (headers such as `Retry-After` are already set).
   * @example `onError: (err, req, res) => res.status(err.status).json({ error: err.code })`
   */
  onError?: ErrorHandler;
  /** Call `next(err)` with the `KeygateError` so the app's error handler answers. @default false */
  passErrors?: boolean;
}

/** Fully resolved middleware settings. */
export interface ResolvedAuthenticate {
  sources: CredentialSources;
  scopes: readonly string[] | undefined;
  anyScopes: readonly string[] | undefined;
  style: RefusalStyle;
}

/** Builds the middleware for validated settings. */
export function createAuthenticate(verifier: Verifier, settings: ResolvedAuthenticate): RequestHandler {
  const { sources, scopes, anyScopes, style } = settings;
  const context = { scopes, anyScopes };
  let checkedTrustProxy = false;

  return function keygateAuthenticate(req: Request, res: Response, next: NextFunction): void {
    const earlier = admissionOf(req);
    if (earlier?.owner === verifier) {
      // Admitted and counted by this same instance: only this route's own scopes are left to
      // check, answered in this middleware's style. Another instance's admission proves nothing
      // here (its prefix, store and limits are its own): the whole pipeline runs.
      const refused = verifier.checkScopes(earlier, context);
      return refused ? refuse(refused, req, res, next, style) : next();
    }
    const found = extractCredential(req.rawHeaders, sources.query ? req.query : undefined, sources);
    if (found.kind === 'none') return refuse(missingApiKey(), req, res, next, style);
    if (found.kind === 'ambiguous') {
      return refuse(new KeygateError('ambiguous_credentials', 'The request carries more than one API key.'), req, res, next, style);
    }
    if (!checkedTrustProxy) {
      checkedTrustProxy = true;
      warnIfTrustingEveryProxy(req);
    }
    verifier.verify(found.key, { ip: () => req.ip, scopes, anyScopes }).then(
      (result) => {
        if (!result.ok) {
          const rateLimit = result.limits && { policyHeader: result.key?.policyHeader, limits: result.limits };
          return refuse(result.error, req, res, next, style, rateLimit || undefined);
        }
        if (style.rateLimitHeaders) setRateLimitHeaders(res, result.key.policyHeader, result.limits ?? undefined);
        markAdmitted(req, result.apiKey, { scopes: result.key.scopes, style, owner: verifier });
        res.locals.apiKey = result.apiKey;
        next();
      },
    ).catch((error: unknown) => next(error));
  };
}

/** The refusal for a request without a key (or that reached a scope guard unauthenticated). */
export function missingApiKey(): KeygateError {
  return new KeygateError('missing_api_key', 'An API key is required.');
}
