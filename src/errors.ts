/**
 * The one error class keygate throws or returns, with codes that stay stable across minor versions
 * (messages may change; match on `code`).
 */

/**
 * Every error code with its HTTP status, its problem title and, for the codes that refuse a
 * request, the client-safe message of the refusal (what the problem's `detail` says). This table
 * is the only place these words live.
 */
export const ERROR_CODES = {
  missing_api_key: { status: 401, title: 'API key required', message: 'An API key is required.' },
  malformed_api_key: { status: 401, title: 'Malformed API key', message: 'The API key is not in the expected format.' },
  invalid_api_key: { status: 401, title: 'Invalid API key', message: 'The API key is not valid.' },
  api_key_revoked: { status: 401, title: 'API key revoked', message: 'The API key has been revoked.' },
  api_key_expired: { status: 401, title: 'API key expired', message: 'The API key has expired.' },
  api_key_disabled: { status: 403, title: 'API key disabled', message: 'The API key is suspended.' },
  ip_not_allowed: { status: 403, title: 'Client IP not allowed', message: 'The API key may not be used from this address.' },
  origin_not_allowed: { status: 403, title: 'Origin not allowed', message: 'The API key may not be used from this origin.' },
  environment_not_allowed: { status: 403, title: 'Environment not allowed', message: 'The API key belongs to an environment this endpoint does not accept.' },
  https_required: { status: 403, title: 'HTTPS required', message: 'The API key may only be used over HTTPS.' },
  client_certificate_required: {
    status: 403,
    title: 'Client certificate required',
    message: 'The API key requires a pinned client certificate.',
  },
  insufficient_scope: { status: 403, title: 'Insufficient scope', message: 'The API key lacks a required scope.' },
  usage_exhausted: { status: 403, title: 'API key usage exhausted', message: 'The API key has used all of its allowed requests.' },
  quota_exceeded: { status: 429, title: 'Quota exceeded', message: 'The API key has used its quota for this period.' },
  rate_limited: { status: 429, title: 'Rate limit exceeded', message: 'Too many requests for this API key; slow down.' },
  concurrency_limited: {
    status: 429,
    title: 'Too many concurrent requests',
    message: 'The API key already has as many requests in flight as it may; retry when one has finished.',
  },
  ambiguous_credentials: { status: 400, title: 'Ambiguous credentials', message: 'The request carries more than one API key.' },
  too_many_failed_attempts: { status: 429, title: 'Too many failed attempts', message: 'Too many failed attempts with this API key; retry later.' },
  store_unavailable: { status: 503, title: 'API key store unavailable', message: 'The API key service is temporarily unavailable; retry shortly.' },
  verification_busy: { status: 503, title: 'Too many verifications in progress', message: 'Too many API keys are being verified at once; retry shortly.' },
  invalid_argument: { status: 400, title: 'Invalid argument' },
  payload_too_large: { status: 413, title: 'Payload too large' },
  method_not_allowed: { status: 405, title: 'Method not allowed' },
  not_found: { status: 404, title: 'API key not found' },
  already_exists: { status: 409, title: 'API key already exists' },
  invalid_record: { status: 500, title: 'Stored API key record is invalid' },
} as const satisfies Record<string, { status: number; title: string; message?: string }>;

/** Every code a {@link KeygateError} can carry. */
export type KeygateErrorCode = keyof typeof ERROR_CODES;

/** Codes that refuse a request (as opposed to manager misuse such as `invalid_argument`). */
export type RefusalCode = Exclude<KeygateErrorCode, 'invalid_argument' | 'not_found' | 'already_exists' | 'invalid_record' | 'payload_too_large' | 'method_not_allowed'>;

/** Extra, secret-free facts attached to an error. */
export interface KeygateErrorDetails {
  /** The option or field an `invalid_argument` error is about. */
  field?: string;
  /** Seconds after which a `rate_limited` / `quota_exceeded` / `concurrency_limited` request may succeed. */
  retryAfter?: number;
  /** Scopes that would have admitted an `insufficient_scope` request. */
  requiredScopes?: readonly string[];
  /** Underlying failure of a `store_unavailable` error (its message is kept, never a key). */
  cause?: unknown;
}

/**
 * A refused request or a rejected manager call.
 *
 * `code` is stable and documented; `status` is the HTTP status the middleware answers with.
 * The message never contains a raw key, a secret or a stored hash.
 *
 * @example
 * ```ts
 * try { await keys.revoke(id); }
 * catch (err) { if (err instanceof KeygateError && err.code === 'not_found') { ... } }
 * ```
 */
export class KeygateError extends Error {
  /** Stable machine-readable code, e.g. `api_key_revoked`. */
  readonly code: KeygateErrorCode;
  /** HTTP status this error maps to. */
  readonly status: number;
  /** The field an `invalid_argument` error names. */
  readonly field: string | undefined;
  /** Seconds until a rate-limited request may succeed. */
  readonly retryAfter: number | undefined;
  /** Scopes an `insufficient_scope` refusal asked for. */
  readonly requiredScopes: readonly string[] | undefined;

  constructor(code: KeygateErrorCode, message?: string, details: KeygateErrorDetails = {}) {
    super(message ?? ERROR_CODES[code].title, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'KeygateError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.field = details.field;
    this.retryAfter = details.retryAfter;
    this.requiredScopes = details.requiredScopes;
  }

  /** A plain, secret-free object for logs and JSON: name, code, status, message and details. */
  toJSON(): Record<string, unknown> {
    const json: Record<string, unknown> = { name: this.name, code: this.code, status: this.status, message: this.message };
    if (this.field !== undefined) json.field = this.field;
    if (this.retryAfter !== undefined) json.retryAfter = this.retryAfter;
    if (this.requiredScopes !== undefined) json.requiredScopes = this.requiredScopes;
    return json;
  }

  /** The problem title for this code (RFC 9457 `title`). */
  get title(): string {
    return ERROR_CODES[this.code].title;
  }
}

/**
 * The error of a refused request, in the table's client-safe words. Every refusal keygate answers
 * is built here. An `insufficient_scope` refusal with `requiredScopes` names them.
 */
export function refusalError(code: RefusalCode, details: Pick<KeygateErrorDetails, 'retryAfter' | 'requiredScopes' | 'cause'> = {}): KeygateError {
  const message =
    code === 'insufficient_scope' && details.requiredScopes
      ? `The API key lacks the required scope: ${details.requiredScopes.join(' ')}.`
      : ERROR_CODES[code].message;
  // A refusal is an expected answer, not a fault: its stack trace would say nothing and capturing
  // one is the most expensive part of building it (it matters under a flood of bad requests).
  const stackTraceLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new KeygateError(code, message, details);
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
  }
}

/** `not_found` for a record id: the one wording of the manager's "no such key". */
export function notFound(id: string): KeygateError {
  return new KeygateError('not_found', `no API key with id ${id}`);
}

/** Shorthand for the manager's argument errors: names the field in code and message. */
export function invalidArgument(field: string, problem: string): KeygateError {
  return new KeygateError('invalid_argument', `${field}: ${problem}`, { field });
}

/** True when `value` is a {@link KeygateError}. Works across duplicated copies of the package. */
export function isKeygateError(value: unknown): value is KeygateError {
  return value instanceof KeygateError || (value instanceof Error && value.name === 'KeygateError' && 'code' in value);
}

/**
 * What went wrong, for operators: the messages of the error's causes (the store's own error is
 * kept as a cause of the client-safe 503), innermost last.
 */
export function failureReason(error: unknown): string {
  const messages: string[] = [];
  let current: unknown = error instanceof Error && error.cause !== undefined ? error.cause : error;
  for (let depth = 0; current !== undefined && depth < 5; depth++) {
    messages.push(current instanceof Error ? current.message : String(current));
    current = current instanceof Error ? current.cause : undefined;
  }
  return messages.join(': ');
}
