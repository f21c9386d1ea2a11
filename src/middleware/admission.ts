/**
 * The mark an admitted request carries, so a later `authenticate()` of the same keygate instance
 * does not count the request again, and scope guards can answer in the style of the
 * `authenticate()` that admitted it; and the principal the app reads, `req.apiKey` and
 * `res.locals.apiKey`, built on first read.
 *
 * The mark is kept in a WeakMap keyed by the request, not in a property of it: Express has set the
 * request's prototype (`Object.setPrototypeOf`), and adding any property to such an object cost
 * 2–3 µs here, more than the rest of the warm path. The principal is an accessor installed once on
 * the request prototype every Express request inherits (`express.request`, which Express documents
 * as the place to extend requests), so an admission adds nothing to the request and builds no copy
 * of the key until the app reads it. The copy is the same deep copy as ever: nothing the app does to
 * it reaches a decision.
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

/** Admitted requests to their marks. */
const marks = new WeakMap<object, AdmissionMark>();
/** Principals the app assigned itself (`req.apiKey = …`): what the accessor gives until an admission. */
const assigned = new WeakMap<object, unknown>();
/** Prototypes (and what inherits from them) that have the `apiKey` accessor. */
const installedOn = new WeakSet<object>();
/** The prototype of the last request marked: nearly every request of an app has the same one. */
let lastPrototype: object | null = null;

const REQUEST_VIEW: PropertyDescriptor = {
  get(this: object): unknown {
    const mark = marks.get(this);
    return mark === undefined ? assigned.get(this) : mark.admission.apiKey;
  },
  set(this: object, value: unknown): void {
    // A principal of the app's own: later guards and authenticate() calls see it, not the admission.
    marks.delete(this);
    assigned.set(this, value);
  },
  enumerable: false,
  configurable: true,
};


/**
 * Installs the `apiKey` accessor on the request prototype Express requests share (the last one
 * before `http.IncomingMessage.prototype`); false when the request has no such prototype (not an
 * Express request over `node:http`) or something else defines `apiKey` there already.
 */
function installView(req: object): boolean {
  let target: object | null = Object.getPrototypeOf(req) as object | null;
  while (target !== null && Object.getPrototypeOf(target) !== IncomingMessage.prototype) target = Object.getPrototypeOf(target) as object | null;
  if (target === null) return false;
  const existing = Object.getOwnPropertyDescriptor(target, 'apiKey');
  if (existing !== undefined && existing.get !== REQUEST_VIEW.get) return false;
  if (existing === undefined) Object.defineProperty(target, 'apiKey', REQUEST_VIEW);
  installedOn.add(Object.getPrototypeOf(req) as object);
  return true;
}

/** Marks a request as admitted; `req.apiKey` and `res.locals.apiKey` give the admission's view. */
export function markAdmitted(req: Request, res: Response, mark: AdmissionMark): void {
  marks.set(req, mark);
  const prototype = Object.getPrototypeOf(req) as object | null;
  if (prototype !== lastPrototype) {
    if (prototype !== null && (installedOn.has(prototype) || installView(req))) lastPrototype = prototype;
    // Not an Express request: the same accessor, on the request itself.
    else Object.defineProperty(req, 'apiKey', { ...REQUEST_VIEW, enumerable: true });
  }
  // The same view through `res.locals`: closures over this mark (a second WeakMap entry per request cost more).
  const locals = res.locals as object;
  Object.defineProperty(locals, 'apiKey', {
    get: () => mark.admission.apiKey,
    set: (value: unknown) => Object.defineProperty(locals, 'apiKey', { value, writable: true, enumerable: true, configurable: true }),
    enumerable: true,
    configurable: true,
  });
}

/** The admission of a request, if an `authenticate()` of any keygate instance admitted it. */
export function admissionOf(req: Request): AdmissionMark | undefined {
  return marks.get(req);
}
