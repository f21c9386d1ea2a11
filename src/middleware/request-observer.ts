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

/** The route pattern Express matched for `req` (`/v1/leads/:id`), or `null`: never the URL. */
export function routeOf(req: Request): string | null {
  const route = (req as { route?: { path?: unknown } }).route;
  if (route === undefined || route === null) return null;
  const path = typeof route.path === 'string' ? route.path : String(route.path);
  const full = `${req.baseUrl ?? ''}${path === '/' && req.baseUrl ? '' : path}` || '/';
  return full.length > MAX_ROUTE ? full.slice(0, MAX_ROUTE) : full;
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

  /** Reports the request when its response is over. `started` is from {@link RequestObserver.start}. */
  watch(req: Request, res: Response, started: number, decision: Decision): void {
    if (decision.key && this.usage) this.alerts.watch(decision.key);
    const at = this.now();
    // 'close' comes once the response is finished or the connection is gone, whichever is first:
    // one listener covers both.
    res.once('close', () => this.#ended(req, res, started, decision, at));
  }

  #ended(req: Request, res: Response, started: number, decision: Decision, at: number): void {
    const micros = (performance.now() - started) * 1_000;
    const route = routeOf(req);
    const statusCode = res.headersSent ? res.statusCode : undefined;
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
