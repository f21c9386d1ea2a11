/**
 * The authentication middleware: wires extraction, the verification pipeline and the answer
 * together, and does nothing else.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { type RefusalCode, refusalError } from '../errors.js';
import type { TLSSocket } from 'node:tls';
import { refuse, setRateLimitHeaders } from '../http/respond.js';
import { requestOrigin } from '../policy/origin.js';
import { normalizeFingerprint } from '../policy/transport.js';
import { extractCredential } from '../key/extract.js';
import { type Admission, type Refusal, type Verdict, type Verifier, type VerifyContext, isPromise } from '../verification/verifier.js';
import { type AdmissionMark, admissionOf, markAdmitted } from './admission.js';
import type { ResolvedAuthenticate } from './authenticate-options.js';
import { warnIfTrustingEveryProxy } from './trust-proxy-warning.js';
import type { Decision, RequestObserver } from './request-observer.js';

/**
 * What the policies may ask of a request, each computed only when a key asks for it (a getter on
 * the prototype, so a request allocates this one object and no closures).
 */
class RequestContext implements VerifyContext {
  readonly scopes: readonly string[] | undefined;
  readonly anyScopes: readonly string[] | undefined;
  readonly environments: readonly string[] | undefined;
  readonly requireHttps: boolean;

  constructor(
    private readonly req: Request,
    settings: ResolvedAuthenticate,
  ) {
    this.scopes = settings.scopes;
    this.anyScopes = settings.anyScopes;
    this.environments = settings.environments;
    this.requireHttps = settings.requireHttps;
  }

  get ip(): string | undefined {
    return this.req.ip;
  }

  get origin(): string | null {
    return requestOrigin(this.req.headers.origin, this.req.headers.referer);
  }

  get secure(): boolean {
    return this.req.secure;
  }

  get clientCertificate(): string | null {
    return clientCertificateOf(this.req);
  }
}

/** Builds the middleware for validated settings. */
export function createAuthenticate(verifier: Verifier, settings: ResolvedAuthenticate, observer: RequestObserver): RequestHandler {
  const { sources, scopes, anyScopes, style, requireHttps, environments } = settings;
  const context = { scopes, anyScopes };
  let checkedTrustProxy = false;
  const refusedLater = (mark: AdmissionMark, code: RefusalCode): void => {
    verifier.refusedAfterAdmission(code);
    observer.refusedAfterAdmission(mark.observed, code);
  };

  return function keygateAuthenticate(req: Request, res: Response, next: NextFunction): void {
    const earlier = admissionOf(req);
    if (earlier?.owner === verifier) {
      // Admitted and counted by this same instance: only this route's own scopes are left to
      // check, answered in this middleware's style. Another instance's admission proves nothing
      // here (its prefix, store and limits are its own): the whole pipeline runs.
      const refused =
        requireHttps && !req.secure
          ? refusalError('https_required')
          : environments !== undefined && !environments.includes(earlier.environment as string)
            ? refusalError('environment_not_allowed')
            : verifier.checkScopes(earlier, context);
      if (!refused) return next();
      earlier.refusedLater?.(earlier, refused.code as RefusalCode);
      return refuse(refused, req, res, next, style);
    }
    const started = observer.active ? observer.start() : -1;
    const found = extractCredential(req.rawHeaders, sources.query ? req.query : undefined, sources);
    if (found.kind !== 'key') {
      const code = found.kind === 'none' ? 'missing_api_key' : 'ambiguous_credentials';
      if (started >= 0) observer.watch(req, res, started, { key: undefined, outcome: code });
      return refuse(refusalError(code), req, res, next, style);
    }
    if (!checkedTrustProxy) {
      checkedTrustProxy = true;
      warnIfTrustingEveryProxy(req);
    }
    let verdict: Verdict;
    try {
      verdict = verifier.admit(found.key, new RequestContext(req, settings));
    } catch (error) {
      return next(error);
    }
    // A cached key counted in process (or from a leased unit) is answered now, with no promise.
    if (isPromise(verdict)) verdict.then((result) => answer(result, req, res, next, started), next);
    else answer(verdict, req, res, next, started);
  };

  /** Hands the request on, or refuses it, once its verification is decided. */
  function answer(result: Admission | Refusal, req: Request, res: Response, next: NextFunction, started: number): void {
    // Everything up to the hand-over runs guarded, so a fault in keygate reaches the app's error
    // handler; `next()` itself runs outside, so an error thrown below this middleware is not
    // mistaken for one of ours (and `next` is never called twice).
    try {
      const decision: Decision | undefined = started >= 0 ? { key: result.key, outcome: result.ok ? 'admitted' : (result.error.code as RefusalCode) } : undefined;
      if (decision) observer.watch(req, res, started, decision);
      if (!result.ok) {
        const rateLimit = result.limits && { policyHeader: result.key?.policyHeader, limits: result.limits };
        return refuse(result.error, req, res, next, style, rateLimit || undefined);
      }
      if (style.rateLimitHeaders) setRateLimitHeaders(res, result.key.policyHeader, result.limits ?? undefined);
      // A client already gone holds no slot, and its handler would run for nobody.
      if (result.release && !holdSlot(req, res, result.release)) return;
      markAdmitted(req, res, {
        scopes: result.key.scopes,
        style,
        owner: verifier,
        environment: result.key.record.environment,
        observed: decision,
        refusedLater,
        admission: result,
      });
    } catch (error) {
      return next(error);
    }
    next();
  }
}

/**
 * Ties a concurrency slot to the request: released when the response has been sent or the
 * connection is gone, whichever comes first, and only once. Returns false, having released it,
 * when the connection was gone before the admission ended (a client that sent a request and reset
 * the connection at once): no event would ever come for it.
 *
 * The connection's own `close` is watched too, because a pipelined response still queued behind
 * another gets neither `finish` nor `close` when the connection dies. Not `req`'s `close`: that
 * comes as soon as a body parser has read the body, while the handler is still running. The
 * socket listener is removed when the response ends, so a keep-alive connection carrying many
 * requests does not collect them.
 */
function holdSlot(req: Request, res: Response, release: () => Promise<void>): boolean {
  const socket = req.socket;
  if (socket.destroyed || res.writableFinished) {
    void release();
    return false;
  }
  const done = (): void => {
    socket.off('close', done);
    res.off('finish', done);
    res.off('close', done);
    void release();
  };
  res.once('finish', done);
  res.once('close', done);
  socket.once('close', done);
  return true;
}

/**
 * The SHA-256 fingerprint of the client certificate the TLS handshake presented (which also proved
 * the client holds its private key), or `null`: plain HTTP, no certificate, or TLS ended at a proxy.
 */
function clientCertificateOf(req: Request): string | null {
  const socket = req.socket as Partial<TLSSocket>;
  if (typeof socket.getPeerCertificate !== 'function') return null;
  const certificate = socket.getPeerCertificate();
  return certificate && typeof certificate.fingerprint256 === 'string' ? normalizeFingerprint(certificate.fingerprint256) : null;
}
