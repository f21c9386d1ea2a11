/**
 * The mark an admitted request carries, so a later `authenticate()` of the same keygate instance
 * does not count the request again, and scope guards can answer in the style of the
 * `authenticate()` that admitted it; and the principal the app reads, `req.apiKey` and
 * `res.locals.apiKey`, built on first read.
 *
 * The mark is one property of the request under a symbol of this module. The principal is an
 * accessor installed once on the request prototype every Express request inherits (`express.request`,
 * which Express documents as the place to extend requests), so an admission builds no copy of the
 * key until the app reads it, and a request keeps the shape Express gave it. The copy is the same
 * deep copy as ever: nothing the app does to it reaches a decision.
 *
 * The mark names the instance (`owner`) that admitted the request: an admission made by one keygate
 * instance proves nothing to another (another prefix, another store, other limits), which runs its
 * whole pipeline. An app that assigns `req.apiKey` itself (a principal of its own) removes the mark,
 * so what it assigned is what later guards see.
 */
import { IncomingMessage } from 'node:http';
import type { Request, Response } from 'express';
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
  /** The admission: its `apiKey` is the app's copy, built on first read and then kept. */
  admission: { readonly apiKey: ApiKey };
}

const ADMITTED = Symbol('keygate admission');
/** Set on a prototype once the `apiKey` accessor is installed on it (or on one it inherits from). */
const VIEW_INSTALLED = Symbol('keygate apiKey accessor');

type Marked = { [ADMITTED]?: AdmissionMark | undefined; apiKey?: ApiKey | undefined };

/** Turns the accessor into a plain value: what the app assigned, with the mark gone. */
function assigned(target: Marked, value: unknown): void {
  target[ADMITTED] = undefined;
  Object.defineProperty(target, 'apiKey', { value, writable: true, enumerable: true, configurable: true });
}

const REQUEST_VIEW: PropertyDescriptor = {
  get(this: Marked): ApiKey | undefined {
    return this[ADMITTED]?.admission.apiKey;
  },
  set(this: Marked, value: unknown): void {
    assigned(this, value);
  },
  enumerable: false,
  configurable: true,
};

const LOCALS_VIEW: PropertyDescriptor = { ...REQUEST_VIEW, enumerable: true };

/**
 * Installs the `apiKey` accessor on the request prototype Express requests share (the last one
 * before `http.IncomingMessage.prototype`); false when the request has no such prototype (not an
 * Express request over `node:http`) or something else defines `apiKey` there already.
 */
function installView(req: object): boolean {
  let target: object | null = Object.getPrototypeOf(req) as object | null;
  while (target !== null && Object.getPrototypeOf(target) !== IncomingMessage.prototype) target = Object.getPrototypeOf(target) as object | null;
  if (target === null || Object.prototype.hasOwnProperty.call(target, 'apiKey')) return false;
  Object.defineProperty(target, 'apiKey', REQUEST_VIEW);
  Object.defineProperty(target, VIEW_INSTALLED, { value: true });
  return true;
}

/** Marks a request as admitted; `req.apiKey` and `res.locals.apiKey` give the admission's view. */
export function markAdmitted(req: Request, res: Response, mark: AdmissionMark): void {
  const marked = req as unknown as Marked;
  marked[ADMITTED] = mark;
  if (!(VIEW_INSTALLED in req) && !installView(req)) {
    Object.defineProperty(req, 'apiKey', { value: mark.admission.apiKey, writable: true, enumerable: true, configurable: true });
  } else if (Object.prototype.hasOwnProperty.call(req, 'apiKey')) {
    // An earlier principal the app assigned (or an earlier fallback) would hide the accessor.
    delete marked.apiKey;
  }
  const locals = res.locals as Marked;
  Object.defineProperty(locals, ADMITTED, { value: mark, writable: true, configurable: true });
  Object.defineProperty(locals, 'apiKey', LOCALS_VIEW);
}

/** The admission of a request, if an `authenticate()` of any keygate instance admitted it. */
export function admissionOf(req: Request): AdmissionMark | undefined {
  return (req as unknown as Marked)[ADMITTED];
}
