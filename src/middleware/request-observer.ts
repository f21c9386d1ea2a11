/**
 * What happens to a request after keygate decided on it: when its response ends (or its
 * connection closes), the usage analytics count it and `request.admitted` / `request.refused` are
 * emitted, with the route Express matched, the status and the time taken. Only when someone wants
 * them: with no usage analytics and no listener, a request costs one check and no listener.
 */
import { performance } from 'node:perf_hooks';
import type { Request, Response } from 'express';
import type { Alerts, AlertedKey } from '../alerts/alerts.js';
import type { RefusalCode } from '../errors.js';
import type { EventHub } from '../events/hub.js';
import type { RequestEvent } from '../events/events.js';
import type { UsageRecorder } from '../usage/recorder.js';

/** The longest route pattern recorded; a longer one is cut (patterns are code, not input). */
const MAX_ROUTE = 256;

/**
 * A mount path as the request took it, in lower case but for its `:name` / `*name` segments:
 * Express matches mount paths without regard to case (unless `case sensitive routing` is on), so
 * `/V1/Leads` and `/v1/leads` are one route, and must be one cell, not one per spelling a client tries.
 */
function caseless(base: string): string {
  return /[A-Z]/.test(base) ? base.replace(/(^|\/)([^/:*][^/]*)/g, (_match, slash: string, segment: string) => slash + segment.toLowerCase()) : base;
}

/** The route pattern of `route` (Express's `req.route`) matched under `baseUrl`, or `null`: never the URL. */
function patternOf(route: unknown, baseUrl: string | undefined): string | null {
  if (route === undefined || route === null) return null;
  const raw = (route as { path?: unknown }).path;
  const path = typeof raw === 'string' ? raw : String(raw);
  const base = baseUrl === undefined ? '' : caseless(baseUrl);
  const full = `${base}${path === '/' && base ? '' : path}` || '/';
  return full.length > MAX_ROUTE ? full.slice(0, MAX_ROUTE) : full;
}

/**
 * The route pattern Express matched for `req` (`/v1/leads/:id`), or `null`, read now from
 * `req.baseUrl` and `req.route`. The observer follows the request instead ({@link RouteTrack}),
 * since both change on the way out of a router.
 */
export function routeOf(req: Request): string | null {
  return patternOf((req as { route?: unknown }).route, req.baseUrl);
}

/** Names of the parameters of each route seen (`/:id/notes/:note` → id, note), by route object. */
const ROUTE_PARAMETERS = new WeakMap<object, ReadonlySet<string>>();
const NO_NAMES: ReadonlySet<string> = new Set();

function parameterNames(route: object): ReadonlySet<string> {
  let names = ROUTE_PARAMETERS.get(route);
  if (names) return names;
  const path = (route as { path?: unknown }).path;
  const found = typeof path === 'string' ? [...path.matchAll(/[:*]([A-Za-z0-9_$]+)/g)].map((match) => match[1] as string) : [];
  names = found.length === 0 ? NO_NAMES : new Set(found);
  ROUTE_PARAMETERS.set(route, names);
  return names;
}

/** Whether `value`, a parameter's value, may be a segment of `base` (cheap; exactness is checked later). */
function mayHold(base: string, value: unknown): boolean {
  if (typeof value === 'string') return value !== '' && (base.includes(value) || base.includes('%'));
  return Array.isArray(value) && value.length > 0;
}

/**
 * `base` (a `req.baseUrl`: the concrete path the routers above the route were mounted on) with
 * each segment that is the value of a parameter in `sources` replaced by `:name`, so that a router
 * mounted on a path with parameters (`app.use('/tenants/:tenant', router)`) gives
 * `/tenants/:tenant`, never the tenant. `own` names the route's own parameters, which belong to
 * the route's path, not to the base. A base without parameters (the usual case) is returned as is,
 * at the cost of a look at each parameter.
 */
function templatedBase(base: string, sources: readonly unknown[], own: ReadonlySet<string>): string {
  if (base === '') return base;
  let values: Map<string, string> | undefined;
  for (const source of sources) {
    if (source === null || typeof source !== 'object') continue;
    const params = source as Record<string, unknown>;
    for (const name in params) {
      const value = params[name];
      if (own.has(name) || !mayHold(base, value)) continue;
      values ??= new Map();
      if (typeof value === 'string') {
        if (!values.has(value)) values.set(value, `:${name}`);
      } else {
        // Express 5 wildcards (`*rest`) hold the segments they matched.
        for (const part of value as unknown[]) if (typeof part === 'string' && part !== '' && !values.has(part)) values.set(part, `*${name}`);
      }
    }
  }
  if (values === undefined) return base;
  const names = values;
  return base
    .split('/')
    .map((segment) => {
      if (segment === '') return segment;
      let decoded = segment;
      try {
        decoded = decodeURIComponent(segment);
      } catch {
        // not percent-encoded text: compare it as it is
      }
      return names.get(decoded) ?? names.get(segment) ?? segment;
    })
    .join('/')
    .replace(/(\/\*[^/]+)(?:\1)+/g, '$1');
}

/**
 * What Express's routers did to one request's `req.route`, kept so that its route pattern is known
 * as it was matched, whatever happens later. When a router dispatches to a route it sets
 * `req.route` (twice: as it matches the route's layer, and as the route dispatches), and the
 * `req.baseUrl` of that moment is the path of the routers above; once the request has left them
 * (an error passed to an app-level handler, a `next()` out of the router) Express puts
 * `req.baseUrl` back, while `req.route` stays. The parameters seen at those moments are kept too:
 * those of a mount path (`/tenants/:tenant`) name the segments of the base that are values.
 */
class RouteTrack {
  route: unknown;
  base: unknown;
  /** `req.params` as the route's layer was matched: the parameters carried into its router. */
  outer: unknown;
  /** `req.params` as the route dispatched: its own (and, with `mergeParams`, those above). */
  inner: unknown;

  constructor(req: Request) {
    const state = req as unknown as { route?: unknown; baseUrl?: unknown; params?: unknown };
    this.route = state.route;
    this.base = state.baseUrl;
    this.inner = state.params;
  }

  matched(route: unknown, base: unknown, params: unknown): void {
    if (route === this.route) this.inner = params;
    else {
      this.outer = params;
      this.inner = undefined;
    }
    this.route = route;
    this.base = base;
  }

  /** The route pattern, or `null` when no route matched. */
  pattern(paramsNow: unknown): string | null {
    const route = this.route;
    if (route === undefined || route === null) return null;
    const base = typeof this.base === 'string' ? this.base : '';
    const own = typeof route === 'object' ? parameterNames(route) : NO_NAMES;
    return patternOf(route, templatedBase(base, [this.outer, this.inner, paramsNow], own));
  }
}

/** The tracks of the requests being watched (by any keygate instance: a request has one route). */
const TRACKS = new WeakMap<object, RouteTrack>();

/**
 * `req.route` as an accessor that tells the request's {@link RouteTrack}. One descriptor (one pair
 * of functions) for every request: defining it keeps the request object in V8's fast mode, unlike
 * a pair of closures per request.
 */
const ROUTE_PROPERTY: PropertyDescriptor = {
  configurable: true,
  enumerable: true,
  get(this: object): unknown {
    return TRACKS.get(this)?.route;
  },
  set(this: object, value: unknown): void {
    const request = this as { baseUrl?: unknown; params?: unknown };
    TRACKS.get(this)?.matched(value, request.baseUrl, request.params);
  },
};

/** Starts following `req`'s route (once, whichever instance asks); the track, or `undefined` when the request refuses. */
function trackRoute(req: Request): RouteTrack | undefined {
  let track = TRACKS.get(req);
  if (track) return track;
  track = new RouteTrack(req);
  try {
    Object.defineProperty(req, 'route', ROUTE_PROPERTY);
  } catch {
    // A request object that refuses the property (frozen by someone): read it at the end instead.
    return undefined;
  }
  TRACKS.set(req, track);
  return track;
}

/** What the middleware knows once it decided. */
export interface Decision {
  /** The key, once its secret verified; `undefined` for a request refused before. */
  key: AlertedKey | undefined;
  /** `admitted`, or the refusal's code. */
  outcome: 'admitted' | RefusalCode;
}

/** Watches the requests of one keygate instance. */
export class RequestObserver {
  constructor(
    private readonly hub: EventHub,
    private readonly usage: UsageRecorder | undefined,
    private readonly alerts: Alerts,
    private readonly now: () => number,
  ) {}

  /** Whether a request needs watching at all: checked once per request, before anything is allocated. */
  get active(): boolean {
    return this.usage !== undefined || this.hub.wants('request.admitted') || this.hub.wants('request.refused');
  }

  /** A start instant for {@link RequestObserver.watch}, when active. */
  start(): number {
    return performance.now();
  }

  /**
   * A request this instance admitted (and watches) was refused after all, by a later check of the
   * same admission (a route's own `authenticate({ scopes })`, a scope guard): it is counted, and
   * reported in `request.refused`, with that code. A request not watched is left alone.
   */
  refusedAfterAdmission(decision: Decision | undefined, code: RefusalCode): void {
    if (decision?.outcome === 'admitted') decision.outcome = code;
  }

  /** Reports the request when its response is over. `started` is from {@link RequestObserver.start}. */
  watch(req: Request, res: Response, started: number, decision: Decision): void {
    if (decision.key && this.usage) this.alerts.watch(decision.key);
    const at = this.now();
    const track = trackRoute(req);
    // The usual case: the response has the connection. One plain listener ('close' comes once),
    // no once() wrapper and nothing to remove.
    if (res.socket !== null && (res as { closed?: boolean }).closed !== true) {
      res.on('close', () => this.#ended(req, res, started, decision, at, track ? track.pattern((req as { params?: unknown }).params) : routeOf(req), true));
      return;
    }
    // 'close' comes once the response is finished or the connection is gone, whichever is first:
    // one listener covers both, for a response that has the connection. A pipelined response
    // still queued behind another (no `res.socket` yet) gets no 'close' if the connection dies
    // first: the connection's own 'close' ends it then, so that no request goes unrecorded, and
    // unless it got the connection meanwhile, no status reached the client.
    const queuedOn = res.socket === null ? req.socket : null;
    let delivered = queuedOn === null;
    const assigned = (): void => {
      delivered = true;
    };
    let over = false;
    const end = (): void => {
      if (over) return;
      over = true;
      res.off('close', end);
      if (queuedOn) {
        queuedOn.off('close', end);
        res.off('socket', assigned);
      }
      this.#ended(req, res, started, decision, at, track ? track.pattern((req as { params?: unknown }).params) : routeOf(req), delivered);
    };
    // The client may have gone while keygate was deciding: then 'close' has come already.
    if ((res as { closed?: boolean }).closed === true) {
      queueMicrotask(end);
      return;
    }
    res.once('close', end);
    if (queuedOn) {
      res.once('socket', assigned);
      if (queuedOn.destroyed) queueMicrotask(end);
      else queuedOn.once('close', end);
    }
  }

  #ended(req: Request, res: Response, started: number, decision: Decision, at: number, route: string | null, delivered: boolean): void {
    const micros = (performance.now() - started) * 1_000;
    const statusCode = delivered && res.headersSent ? res.statusCode : undefined;
    const { key, outcome } = decision;
    if (key && this.usage) this.usage.record(key.id, at, route, outcome, statusCode, micros);
    const name = outcome === 'admitted' ? 'request.admitted' : 'request.refused';
    if (!this.hub.wants(name)) return;
    const event: RequestEvent = {
      keyId: key?.id ?? null,
      keyPrefix: key?.record.keyPrefix ?? null,
      route,
      method: req.method,
      ...addressOf(req),
      ...(statusCode === undefined ? {} : { statusCode }),
      durationMs: micros / 1_000,
      at: new Date(at),
    };
    if (outcome === 'admitted') this.hub.emit('request.admitted', event);
    else this.hub.emit('request.refused', { ...event, code: outcome });
  }
}

/** `{ ip }` when Express knows the client address. */
function addressOf(req: Request): { ip?: string } {
  try {
    const ip = req.ip;
    return typeof ip === 'string' && ip.length > 0 ? { ip } : {};
  } catch {
    return {};
  }
}
