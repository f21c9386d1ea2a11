/**
 * The admin HTTP API: key management over JSON, guarded by keygate itself. It dispatches on the
 * route table (`routes.ts`), reads bodies itself (bounded), checks delegation and tenants, and
 * leaves every decision about a key's fields to the manager's own validation.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { KeygateError, invalidArgument, isKeygateError, notFound, refusalError } from '../errors.js';
import { answerProblem, sendProblem } from '../http/respond.js';
import { encodeCursor } from '../manager/cursor.js';
import { rejectUnknownOptions } from '../options/checks.js';
import type { ApiKey, AuditLogQuery, AuditPage, CreateApiKeyInput, ListApiKeysInput, UpdateApiKeyInput, WriteOptions } from '../types.js';
import { type KeySettings, exceedsCaller, targetBeyondCaller } from './delegation.js';
import { AUDIT_QUERY, type AdminAction, type AdminRoute, LIST_QUERY, matchRoute, routesFor } from './routes.js';

/** Decides whether the calling key may perform `action` (on `target`, the key concerned, when there is one). */
export type AdminAuthorize = (req: Request, action: AdminAction, target: ApiKey | undefined) => boolean | Promise<boolean>;

/** Options of `keys.adminRouter()`. */
export interface AdminRouterOptions {
  /** The scope the calling key needs. Ignored when `authorize` is given. @default 'keys:admin' */
  scope?: string;
  /**
   * Replaces the scope check: called after the caller's key verified, for every request, with the
   * action and the key concerned. Tenant isolation and delegation still apply.
   */
  authorize?: AdminAuthorize;
  /** Largest request body accepted, in bytes; a larger one is `413 payload_too_large`. @default 102400 */
  bodyLimit?: number;
}

/** What the router needs from the manager. */
export interface AdminManager {
  authenticate(options: { scopes?: string[] }): RequestHandler;
  create(input: CreateApiKeyInput, options: WriteOptions): Promise<{ key: string; apiKey: ApiKey }>;
  list(query: ListApiKeysInput): Promise<{ items: ApiKey[]; nextCursor?: string }>;
  get(id: string): Promise<ApiKey | null>;
  update(id: string, patch: UpdateApiKeyInput, options: WriteOptions): Promise<ApiKey>;
  rotate(id: string, options: { gracePeriodMs?: number } & WriteOptions): Promise<{ key: string; apiKey: ApiKey }>;
  revoke(id: string, options: WriteOptions): Promise<ApiKey>;
  delete(id: string, options: WriteOptions): Promise<ApiKey>;
  /** Whether the manager keeps an audit trail: the audit routes are served only then. */
  readonly auditing: boolean;
  auditLog(query: AuditLogQuery): Promise<AuditPage>;
  openapi(options: { scope: string; audit: boolean }): unknown;
}

const DEFAULT_BODY_LIMIT = 100 * 1024;

/** The resolved router options. */
interface AdminSettings {
  scope: string;
  authorize: AdminAuthorize | undefined;
  bodyLimit: number;
}

function resolveAdminOptions(options: unknown): AdminSettings {
  if (options === null || typeof options !== 'object') throw new TypeError('adminRouter() takes an options object such as { scope: "keys:admin" }');
  rejectUnknownOptions(options, ['scope', 'authorize', 'bodyLimit'], 'adminRouter()');
  const { scope = 'keys:admin', authorize, bodyLimit = DEFAULT_BODY_LIMIT } = options as AdminRouterOptions;
  if (typeof scope !== 'string' || !/^[^\s:*]+(?::[^\s:*]+)*$/.test(scope)) throw new TypeError('adminRouter(): `scope` must be a literal scope such as "keys:admin"');
  if (authorize !== undefined && typeof authorize !== 'function') throw new TypeError('adminRouter(): `authorize` must be a function (req, action, target) => boolean');
  if (typeof bodyLimit !== 'number' || !Number.isSafeInteger(bodyLimit) || bodyLimit < 1) throw new TypeError('adminRouter(): `bodyLimit` must be a positive integer (bytes)');
  return { scope, authorize, bodyLimit };
}

/** Builds the admin API middleware for a manager. Mount it with `app.use(path, …)`. */
export function createAdminRouter(keys: AdminManager, options: AdminRouterOptions = {}): RequestHandler {
  const settings = resolveAdminOptions(options);
  const authenticate = keys.authenticate(settings.authorize ? {} : { scopes: [settings.scope] });
  const routes = routesFor({ audit: keys.auditing });
  let checkedMount = false;

  return function keygateAdmin(req: Request, res: Response, next: NextFunction): void {
    if (!checkedMount) {
      checkedMount = true;
      warnIfMountedAtRoot(req);
    }
    const matched = matchRoute(req.method, req.path, routes);
    if (matched === null) return next();
    if ('allowed' in matched) {
      res.setHeader('Allow', matched.allowed.join(', '));
      return sendProblem(new KeygateError('method_not_allowed', `${req.method} is not allowed here; use ${matched.allowed.join(' or ')}`), req, res);
    }
    const { route, id } = matched;
    if (id === null) return sendProblem(invalidArgument('id', 'is not valid percent-encoded UTF-8'), req, res);
    // The document describes the API; it is public like any API description.
    if (route.action === 'describe') {
      res.setHeader('Cache-Control', 'no-store');
      res.json(keys.openapi({ scope: settings.scope, audit: keys.auditing }));
      return;
    }
    authenticate(req, res, (error?: unknown) => {
      if (error !== undefined) return next(error);
      handle(keys, settings, route, id, req, res).catch((failure: unknown) => {
        if (isKeygateError(failure) && !res.headersSent) answerProblem(failure, req, res, 'api');
        else next(failure);
      });
    });
  };
}

/** Runs one authenticated route. */
async function handle(keys: AdminManager, settings: AdminSettings, route: AdminRoute, id: string | undefined, req: Request, res: Response): Promise<void> {
  const caller = req.apiKey as ApiKey;
  // Every change made through the API names the calling key in its event and audit entry.
  const by: WriteOptions = { actor: { id: caller.id, keyPrefix: caller.keyPrefix } };
  const body = route.body === undefined ? undefined : await readBody(req, route, settings.bodyLimit);
  // authorize() may look at what is asked for.
  if (body !== undefined) req.body = body;
  // The key concerned, if within the caller's tenant and environment: any other does not exist here.
  const target = id === undefined ? undefined : await visibleTarget(keys, caller, id);
  await authorizeCaller(settings, req, route.action, target);
  if (target && (route.action === 'update' || route.action === 'rotate' || route.action === 'revoke' || route.action === 'delete')) {
    const beyond = targetBeyondCaller(caller, target, route.action);
    if (beyond) {
      throw new KeygateError('insufficient_scope', `This key holds more than the calling key (its ${beyond.field ?? 'scopes'}): only a key holding at least as much may ${route.action} it.`, {
        requiredScopes: target.scopes,
      });
    }
  }

  switch (route.action) {
    case 'create': {
      const input = { ...(body as Record<string, unknown>) } as CreateApiKeyInput & Record<string, unknown>;
      if (caller.tenantId !== undefined) {
        if (input.tenantId !== undefined && input.tenantId !== caller.tenantId) throw invalidArgument('tenantId', 'must be the tenant of the calling key');
        input.tenantId = caller.tenantId;
      }
      if (caller.environment !== undefined && input.environment === undefined) input.environment = caller.environment;
      if (caller.environment !== undefined && input.environment !== caller.environment) throw invalidArgument('environment', 'must be the environment of the calling key');
      refuseBeyond(caller, input as KeySettings);
      const created = await keys.create(input, by);
      return sendCreated(req, res, created);
    }
    case 'list': {
      const query = listQuery(req);
      if (caller.tenantId !== undefined) {
        if (query.tenantId !== undefined && query.tenantId !== caller.tenantId) return sendJson(res, 200, { items: [] });
        query.tenantId = caller.tenantId;
      }
      return sendJson(res, 200, caller.environment === undefined ? await keys.list(query) : await listEnvironment(keys, query, caller.environment));
    }
    case 'get':
      return sendJson(res, 200, target);
    case 'update': {
      const patch = body as UpdateApiKeyInput;
      // The caller answers for what it sets: each setting in the patch must be within its own. A
      // setting the key already held is not the caller's doing (and suspending or narrowing a key
      // with more uses than the caller must stay possible).
      refuseBeyond(caller, patch as KeySettings, new Set(Object.keys(patch)));
      return sendJson(res, 200, await keys.update(id as string, patch, by));
    }
    case 'rotate': {
      // Only the calling key acts here: an `actor` in the body is not a field of this request.
      if (body !== undefined && Object.hasOwn(body, 'actor')) throw invalidArgument('actor', 'is not a field of this request: the calling key is the actor');
      return sendCreated(req, res, await keys.rotate(id as string, { ...((body ?? {}) as { gracePeriodMs?: number }), ...by }));
    }
    case 'revoke':
      return sendJson(res, 200, await keys.revoke(id as string, by));
    case 'audit':
      return sendJson(res, 200, await keys.auditLog(auditQuery(req, caller, target)));
    case 'describe':
      return;
    case 'delete':
      await keys.delete(id as string, by);
      res.setHeader('Cache-Control', 'no-store');
      res.status(204).end();
      return;
  }
}

/**
 * A page of `keys.list(query)` holding only keys of `environment`. Stores list by tenant, owner and
 * status, not by environment, so other environments' keys are skipped here, reading on (a thousand
 * at a time) until the page is full or the list ends; and the cursor is always the position of a
 * key the caller may see: a position built from a skipped key would hand out another
 * environment's key id.
 */
async function listEnvironment(keys: AdminManager, query: ListApiKeysInput, environment: string): Promise<{ items: ApiKey[]; nextCursor?: string }> {
  const wanted = query.limit ?? 100;
  const items: ApiKey[] = [];
  let cursor = query.cursor;
  for (;;) {
    const page = await keys.list({ ...query, limit: 1_000, ...(cursor === undefined ? {} : { cursor }) });
    for (const item of page.items) {
      if (item.environment !== environment) continue;
      items.push(item);
      if (items.length === wanted) return { items, nextCursor: encodeCursor(item.createdAt, item.id) };
    }
    if (page.nextCursor === undefined) return { items };
    cursor = page.nextCursor;
  }
}

/** Warns once when the router is mounted at the root, where it would answer every one-segment path. */
function warnIfMountedAtRoot(req: Request): void {
  if (req.baseUrl !== '') return;
  process.emitWarning(
    'keygate: adminRouter() is mounted at the root of the app, so it takes every one-segment path (GET /status is read as "get the key status"); mount it under its own path, such as app.use(\'/v1/api-keys\', keys.adminRouter())',
    { code: 'KEYGATE_ADMIN_ROUTER_AT_ROOT' },
  );
}

/**
 * The key `id` if the caller may see it; `not_found` for an unknown key and for a key of another
 * tenant or environment alike (a test key never reaches live keys).
 */
async function visibleTarget(keys: AdminManager, caller: ApiKey, id: string): Promise<ApiKey> {
  const target = await keys.get(id);
  if (!target || (caller.tenantId !== undefined && target.tenantId !== caller.tenantId) || (caller.environment !== undefined && target.environment !== caller.environment)) {
    throw notFound(id);
  }
  return target;
}

async function authorizeCaller(settings: AdminSettings, req: Request, action: AdminAction, target: ApiKey | undefined): Promise<void> {
  if (!settings.authorize) return;
  if ((await settings.authorize(req, action, target)) !== true) throw refusalError('insufficient_scope', { requiredScopes: [settings.scope] });
}

function refuseBeyond(caller: ApiKey, settings: KeySettings, only?: ReadonlySet<string>): void {
  const refusal = exceedsCaller(caller, settings, only);
  if (refusal) throw refusal;
}

/**
 * The audit routes' query, as `keys.auditLog()` takes it: only known parameters, once each, and
 * narrowed to what the caller may see: one key's entries for `GET /:id/audit`, and a tenant's
 * (and an environment's) for a caller that has one.
 */
function auditQuery(req: Request, caller: ApiKey, target: ApiKey | undefined): AuditLogQuery {
  const allowed: readonly string[] = target === undefined ? ['keyId', ...AUDIT_QUERY] : AUDIT_QUERY;
  const query: AuditLogQuery & Record<string, unknown> = { ...plainQuery(req, allowed) };
  if (typeof query.limit === 'string' && /^\d{1,4}$/.test(query.limit)) query.limit = Number(query.limit);
  if (target !== undefined) query.keyId = target.id;
  if (caller.tenantId !== undefined) query.tenantId = caller.tenantId;
  if (caller.environment !== undefined) query.environment = caller.environment;
  return query;
}

/** The query parameters of a request, each one of `allowed` and given once as plain text. */
function plainQuery(req: Request, allowed: readonly string[]): Record<string, string> {
  const query: Record<string, string> = {};
  const given = req.query as Record<string, unknown>;
  for (const name of Object.keys(given)) {
    if (!allowed.includes(name)) throw invalidArgument(name, 'is not a query parameter of this route');
    const value = given[name];
    if (typeof value !== 'string') throw invalidArgument(name, 'must be given once, as plain text');
    query[name] = value;
  }
  return query;
}

/** `GET /`'s query, as `keys.list()` takes it: only known parameters, once each. */
function listQuery(req: Request): ListApiKeysInput {
  const query: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(plainQuery(req, LIST_QUERY))) {
    if (name === 'limit') query.limit = /^\d{1,4}$/.test(value) ? Number(value) : value;
    else if (name === 'includeDeleted') query.includeDeleted = value === 'true' ? true : value === 'false' ? false : value;
    else query[name] = value;
  }
  return query as ListApiKeysInput;
}

function sendJson(res: Response, status: number, body: unknown): void {
  res.setHeader('Cache-Control', 'no-store');
  res.status(status).json(body);
}

/** A 201 carrying a raw key: never stored by a cache, with the new key's location. */
function sendCreated(req: Request, res: Response, created: { key: string; apiKey: ApiKey }): void {
  res.setHeader('Location', `${req.baseUrl}/${encodeURIComponent(created.apiKey.id)}`);
  sendJson(res, 201, { key: created.key, apiKey: created.apiKey });
}

/**
 * A route's body: a JSON object, read here (at most `limit` bytes) or taken from the app's own
 * JSON body parser, which then must have read JSON within the same limit. Only `create` and
 * `update` require one; `rotate`'s is optional and `revoke` takes none but `{}`.
 */
async function readBody(req: Request, route: AdminRoute, limit: number): Promise<Record<string, unknown>> {
  const type = req.headers['content-type'];
  const length = req.headers['content-length'];
  const charset = type === undefined ? undefined : /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(type)?.[1];
  if (charset !== undefined && !/^utf-?8$/i.test(charset)) {
    req.resume();
    throw invalidArgument('body', `must be JSON in UTF-8, not ${charset}`);
  }
  if (length !== undefined && Number(length) > limit) {
    req.resume();
    throw payloadTooLarge(limit);
  }
  const parsedByApp = (req as { _body?: unknown })._body === true || (req.body !== undefined && req.readableEnded);
  let value: unknown;
  if (parsedByApp) {
    if (type !== undefined && !JSON_TYPE.test(type)) throw invalidArgument('body', 'must be sent as Content-Type: application/json');
    value = req.body;
  } else {
    const text = await readText(req, limit);
    if (text.length > 0) {
      if (type === undefined || !JSON_TYPE.test(type)) throw invalidArgument('body', 'must be sent as Content-Type: application/json');
      try {
        value = JSON.parse(text) as unknown;
      } catch {
        throw invalidArgument('body', 'is not valid JSON');
      }
    }
  }
  const required = route.body === 'CreateApiKeyInput' || route.body === 'UpdateApiKeyInput';
  if (value === undefined || (parsedByApp && isEmptyObject(value) && !required)) {
    if (required) throw invalidArgument('body', 'is required: a JSON object');
    return {};
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw invalidArgument('body', 'must be a JSON object');
  const body = value as Record<string, unknown>;
  if (route.body === 'Empty' && Object.keys(body).length > 0) throw invalidArgument(Object.keys(body)[0] as string, 'is not a field of this request: it takes no body');
  return body;
}

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;

function isEmptyObject(value: unknown): boolean {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length === 0;
}

function payloadTooLarge(limit: number): KeygateError {
  return new KeygateError('payload_too_large', `the request body is larger than ${limit} bytes`);
}

/** The body as UTF-8 text, refusing it once it passes `limit` bytes. */
function readText(req: Request, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        req.resume();
        reject(payloadTooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks).toString('utf8'));
    };
    const onError = (error: Error) => {
      cleanup();
      reject(invalidArgument('body', `could not be read (${error.message})`));
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}
