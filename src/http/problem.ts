/**
 * Refusals as HTTP answers: RFC 9457 problem details (`application/problem+json`), and the
 * `WWW-Authenticate` challenge of RFC 6750 for Bearer credentials.
 */
import type { KeygateError } from '../errors.js';

/** The RFC 9457 body keygate sends. */
export interface ProblemDetails {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  /** The input field an `invalid_argument` error is about. */
  field?: string;
}

/** Base of the problem `type` URIs: a URN, stable, not meant to be dereferenced. */
export const PROBLEM_TYPE_BASE = 'urn:keygate:problem:';

/** The problem details of a refusal. */
export function problemDetails(error: KeygateError): ProblemDetails {
  const problem: ProblemDetails = {
    type: PROBLEM_TYPE_BASE + error.code,
    title: error.title,
    status: error.status,
    detail: error.message,
    code: error.code,
  };
  if (error.field !== undefined) problem.field = error.field;
  return problem;
}

/** Quotes a string as an RFC 9110 quoted-string. */
function quoted(value: string): string {
  return `"${value.replace(/["\\]/g, '\\$&')}"`;
}

/**
 * The `WWW-Authenticate` value for a refusal, or `undefined` when none belongs on it.
 * No `error=` when no key was given (RFC 6750 §3.1); `invalid_token` for a bad key;
 * `insufficient_scope` with the scopes needed.
 */
export function wwwAuthenticate(error: KeygateError, realm: string): string | undefined {
  const challenge = `Bearer realm=${quoted(realm)}`;
  if (error.code === 'missing_api_key') return challenge;
  if (error.code === 'insufficient_scope') {
    const scope = error.requiredScopes?.join(' ') ?? '';
    return `${challenge}, error="insufficient_scope", scope=${quoted(scope)}`;
  }
  if (error.status === 401) return `${challenge}, error="invalid_token"`;
  return undefined;
}
