/**
 * The mark an admitted request carries, so a later `authenticate()` of the same keygate instance
 * does not count the request again, and scope guards can answer in the style of the
 * `authenticate()` that admitted it.
 *
 * The mark is keyed by the request's principal object (`req.apiKey`), which admission sets anyway:
 * adding a property of our own to every request would change the shape of Node's request objects
 * on the hot path. It names the instance (`owner`) that admitted the request: an admission made by
 * one keygate instance proves nothing to another (another prefix, another store, other limits),
 * which runs its whole pipeline.
 */
import type { Request } from 'express';
import type { RefusalCode } from '../errors.js';
import type { Decision } from './request-observer.js';
import type { RefusalStyle } from '../http/respond.js';
import type { CompiledScopes } from '../policy/scopes.js';
import type { ApiKey } from '../types.js';

/** What an admitted request remembers about its admission. */
export interface AdmissionMark {
  /** The scopes the key was verified with (private: not the view's array, which the app may change). */
  scopes: CompiledScopes;
  style: RefusalStyle;
  /** The instance that verified and counted the request. */
  owner: object;
  /** The key's environment as verified (private, like `scopes`). */
  environment: string | undefined;
  /** What the observer of the admitting instance watches of this request, when it watches it. */
  observed: Decision | undefined;
  /**
   * Told when a later check of this admission refuses the request (a route's own scopes, a scope
   * guard), so metrics, usage analytics and request events count it as refused with that code.
   */
  refusedLater: ((mark: AdmissionMark, code: RefusalCode) => void) | undefined;
}

const marks = new WeakMap<ApiKey, AdmissionMark>();

/** Marks a request as admitted with `apiKey` as its principal. */
export function markAdmitted(req: Request, apiKey: ApiKey, mark: AdmissionMark): void {
  req.apiKey = apiKey;
  marks.set(apiKey, mark);
}

/** The admission of a request, if an `authenticate()` of any keygate instance admitted it. */
export function admissionOf(req: Request): AdmissionMark | undefined {
  const apiKey = req.apiKey;
  return apiKey === undefined ? undefined : marks.get(apiKey);
}
