/**
 * Writing a refusal: the headers every refusal carries, then either the default problem+json
 * answer, the user's `onError`, or `next(err)` for the app's own error handler; and the same
 * problem+json answer as an error handler of the app's (`problemHandler()`).
 */
import type { ErrorRequestHandler, NextFunction, Request, Response } from 'express';
import { KeygateError, invalidArgument, isKeygateError } from '../errors.js';
import { rejectUnknownOptions } from '../options/checks.js';
import type { LimitsSnapshot } from '../policy/limits.js';
import { problemDetails, wwwAuthenticate } from './problem.js';
import { rateLimitHeader } from './rate-limit-headers.js';

/**
 * Takes over the answer to a refusal. It may be `async`: a rejection it returns goes to
 * `next(err)`, like an exception it throws.
 */
export type ErrorHandler = (error: KeygateError, req: Request, res: Response, next: NextFunction) => unknown;

/** How refusals are answered. */
export interface RefusalStyle {
  realm: string;
  rateLimitHeaders: boolean;
  onError: ErrorHandler | undefined;
  passErrors: boolean;
}

/**
 * Sets the `RateLimit-Policy` and `RateLimit` fields of a limited key. A key whose lifetime uses
 * are spent has no capacity left in any window, so it gets its policies but no `RateLimit` field:
 * reporting a window's remaining requests would promise requests it can no longer make.
 */
export function setRateLimitHeaders(res: Response, policyHeader: string | undefined, limits: LimitsSnapshot | undefined): void {
  if (policyHeader === undefined || !limits) return;
  const current = limits.usesRemaining === 0 ? undefined : rateLimitHeader(limits.policies);
  res.setHeader('RateLimit-Policy', policyHeader);
  if (current !== undefined) res.setHeader('RateLimit', current);
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (typeof value === 'object' || typeof value === 'function') && value !== null && typeof (value as { then?: unknown }).then === 'function';
}

/**
 * Answers a refusal. The refusal's headers (`WWW-Authenticate`, `Retry-After`, RateLimit fields)
 * are set first in every mode, so an app that formats errors itself still sends them.
 */
export function refuse(
  error: KeygateError,
  req: Request,
  res: Response,
  next: NextFunction,
  style: RefusalStyle,
  rateLimit?: { policyHeader: string | undefined; limits: LimitsSnapshot | undefined },
): void {
  if (!res.headersSent) {
    const challenge = wwwAuthenticate(error, style.realm);
    if (challenge !== undefined) res.setHeader('WWW-Authenticate', challenge);
    if (error.retryAfter !== undefined) res.setHeader('Retry-After', String(error.retryAfter));
    if (style.rateLimitHeaders && rateLimit) setRateLimitHeaders(res, rateLimit.policyHeader, rateLimit.limits);
  }
  if (style.passErrors) return next(error);
  if (style.onError) {
    let returned: unknown;
    try {
      returned = style.onError(error, req, res, next);
    } catch (handlerError) {
      return next(handlerError);
    }
    // An async handler that fails must reach the app's error handler, not become an unhandled
    // rejection that takes the process down (anyone can trigger a refusal).
    if (isThenable(returned)) returned.then(undefined, (handlerError: unknown) => next(handlerError));
    return;
  }
  if (res.headersSent) return next(error);
  sendProblem(error, req, res);
}

/** Writes `error` as the whole answer: RFC 9457 problem+json, never cached. */
export function sendProblem(error: KeygateError, req: Request, res: Response): void {
  const body = JSON.stringify(problemDetails(error));
  res.statusCode = error.status;
  res.setHeader('Content-Type', 'application/problem+json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.setHeader('Cache-Control', 'no-store');
  res.end(req.method === 'HEAD' ? undefined : body);
}

/**
 * The `KeygateError` a body parser's error stands for (`express.json()`, body-parser and others
 * built on raw-body mark theirs with a `type`), or `undefined` for any other error: an admin API
 * behind the app's own `express.json()` then answers a malformed or oversized body as it does
 * without one, in problem+json and without a stack trace.
 */
export function bodyParserProblem(error: unknown): KeygateError | undefined {
  if (error === null || typeof error !== 'object') return undefined;
  const { type, status } = error as { type?: unknown; status?: unknown };
  if (typeof type !== 'string' || typeof status !== 'number' || status < 400 || status > 499) return undefined;
  switch (type) {
    case 'entity.too.large':
      return new KeygateError('payload_too_large', 'the request body is larger than the body parser accepts');
    case 'entity.parse.failed':
      return invalidArgument('body', 'is not valid JSON');
    case 'charset.unsupported':
    case 'encoding.unsupported':
      return invalidArgument('body', 'must be JSON in UTF-8, without a content encoding the server does not accept');
    case 'entity.verify.failed':
      return invalidArgument('body', 'was refused by the body parser');
    default:
      return undefined;
  }
}

/**
 * An Express error handler that answers every `KeygateError` (a refusal passed on with
 * `passErrors`, or a manager error in your own route: `not_found`, `invalid_argument`, …) as RFC
 * 9457 problem+json with its status, `code` and, for `invalid_argument`, `field`; with
 * `Retry-After` when the error has one and the `WWW-Authenticate` challenge of a 401 or
 * `insufficient_scope`; and a body parser's error about the body (malformed JSON, a body over its
 * limit, an unsupported charset) as `400 invalid_argument` (field `body`) or `413
 * payload_too_large`. Anything else goes on to the next error handler, untouched, and so does an
 * error raised after the response has started.
 *
 * @example
 * ```ts
 * app.post('/v1/keys', async (req, res, next) => {
 *   try { res.status(201).json(await keys.create(req.body)); } catch (error) { next(error); }
 * });
 * app.use(problemHandler());
 * ```
 */
export function problemHandler(options: { realm?: string } = {}): ErrorRequestHandler {
  if (options === null || typeof options !== 'object') throw new TypeError('problemHandler() takes an options object such as { realm: "api" }');
  rejectUnknownOptions(options, ['realm'], 'problemHandler()');
  const realm = options.realm ?? 'api';
  if (typeof realm !== 'string' || realm.length === 0) throw new TypeError('problemHandler(): `realm` must be a non-empty string');
  return function keygateProblemHandler(failure: unknown, req: Request, res: Response, next: NextFunction): void {
    const error = isKeygateError(failure) ? failure : bodyParserProblem(failure);
    if (error === undefined || res.headersSent) return next(failure);
    answerProblem(error, req, res, realm);
  };
}

/**
 * Writes `error` as the whole answer with the headers of its kind: the `WWW-Authenticate`
 * challenge of a 401 or `insufficient_scope`, and `Retry-After` when it has one.
 */
export function answerProblem(error: KeygateError, req: Request, res: Response, realm: string): void {
  const challenge = wwwAuthenticate(error, realm);
  if (challenge !== undefined) res.setHeader('WWW-Authenticate', challenge);
  if (error.retryAfter !== undefined) res.setHeader('Retry-After', String(error.retryAfter));
  sendProblem(error, req, res);
}
