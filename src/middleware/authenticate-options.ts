/**
 * The options of `keys.authenticate()`: their types, their defaults and their checks, done once
 * when the middleware is built. A wrong option is a programming mistake: a `TypeError` naming it.
 */
import type { ErrorHandler, RefusalStyle } from '../http/respond.js';
import type { CredentialSources } from '../key/extract.js';
import { rejectUnknownOptions, stringListOption } from '../options/checks.js';
import { REQUIRED_SCOPE_RULE, isValidRequiredScope } from '../policy/scopes.js';

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
  /**
   * Refuse requests that did not arrive over TLS (`req.secure`, so `trust proxy` applies) with
   * `403 https_required`, whatever the key says. @default false
   */
  requireHttps?: boolean;
  /**
   * Admit only keys of these environments (with `keygate({ prefix: { live, test } })`, or the
   * `environment` given at create); others are refused with `403 environment_not_allowed`.
   * @example `keys.authenticate({ environments: ['live'] })`
   */
  environments?: string[];
}

/** Fully resolved middleware settings. */
export interface ResolvedAuthenticate {
  sources: CredentialSources;
  scopes: readonly string[] | undefined;
  anyScopes: readonly string[] | undefined;
  style: RefusalStyle;
  requireHttps: boolean;
  environments: readonly string[] | undefined;
}

const AUTHENTICATE_OPTIONS = ['scopes', 'anyScopes', 'bearer', 'header', 'query', 'realm', 'rateLimitHeaders', 'onError', 'passErrors', 'requireHttps', 'environments'];

/** Required scopes given to a middleware or guard at construction: literal scopes, or a TypeError. */
export function requiredScopesOption(value: unknown, name: string): string[] {
  return stringListOption(value, name, isValidRequiredScope, REQUIRED_SCOPE_RULE);
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Validates `authenticate()` options and applies defaults. */
export function resolveAuthenticate(options: unknown): ResolvedAuthenticate {
  if (options === undefined) options = {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError('authenticate() takes an options object, e.g. authenticate({ scopes: ["leads:read"] })');
  }
  const input = options as AuthenticateOptions;
  rejectUnknownOptions(input, AUTHENTICATE_OPTIONS, 'authenticate()');
  const scopes = input.scopes === undefined ? undefined : requiredScopesOption(input.scopes, 'authenticate(): `scopes`');
  const anyScopes = input.anyScopes === undefined ? undefined : requiredScopesOption(input.anyScopes, 'authenticate(): `anyScopes`');

  const header = input.header === undefined ? 'x-api-key' : input.header;
  if (header !== false && (typeof header !== 'string' || !HEADER_NAME.test(header))) {
    throw new TypeError('authenticate(): `header` must be a header name or false');
  }
  const query = input.query ?? false;
  if (query !== false && (typeof query !== 'string' || query.length === 0)) {
    throw new TypeError('authenticate(): `query` must be a parameter name or false');
  }
  const bearer = input.bearer ?? true;
  if (typeof bearer !== 'boolean') throw new TypeError('authenticate(): `bearer` must be a boolean');
  if (!bearer && header === false && query === false) throw new TypeError('authenticate(): every credential source is turned off');

  const realm = input.realm ?? 'api';
  // eslint-disable-next-line no-control-regex -- control characters are exactly what a header value must not hold
  if (typeof realm !== 'string' || /[\u0000-\u001f\u007f]/.test(realm)) throw new TypeError('authenticate(): `realm` must be a printable string');
  if (input.onError !== undefined && typeof input.onError !== 'function') throw new TypeError('authenticate(): `onError` must be a function');
  const onError: ErrorHandler | undefined = input.onError;
  const passErrors = input.passErrors ?? false;
  if (typeof passErrors !== 'boolean') throw new TypeError('authenticate(): `passErrors` must be a boolean');
  if (passErrors && onError) throw new TypeError('authenticate(): give either `onError` or `passErrors`, not both');
  const rateLimitHeaders = input.rateLimitHeaders ?? true;
  if (typeof rateLimitHeaders !== 'boolean') throw new TypeError('authenticate(): `rateLimitHeaders` must be a boolean');
  const requireHttps = input.requireHttps ?? false;
  if (typeof requireHttps !== 'boolean') throw new TypeError('authenticate(): `requireHttps` must be a boolean');

  return {
    sources: { bearer, header: header === false ? null : header.toLowerCase(), query: query === false ? null : query },
    scopes: scopes && scopes.length > 0 ? scopes : undefined,
    anyScopes: anyScopes && anyScopes.length > 0 ? anyScopes : undefined,
    style: { realm, rateLimitHeaders, onError, passErrors },
    requireHttps,
    environments:
      input.environments === undefined
        ? undefined
        : stringListOption(input.environments, 'authenticate(): `environments`', (entry) => entry.length > 0, 'an environment name such as "live"'),
  };
}
