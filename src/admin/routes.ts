/**
 * The admin API's routes, described once: the router dispatches on this table and the OpenAPI
 * document is generated from it, so the two cannot drift apart.
 */

/** What a route does to keys: the `action` an `authorize` hook is asked about. */
export type AdminAction = 'create' | 'list' | 'get' | 'update' | 'rotate' | 'revoke' | 'delete' | 'audit' | 'describe';

/** A request body a route takes, by the name of its schema in the OpenAPI document. */
export type AdminBody = 'CreateApiKeyInput' | 'UpdateApiKeyInput' | 'RotateApiKeyInput' | 'Empty';

/** A success answer's body, by the name of its schema (`null`: no body). */
export type AdminResult = 'CreatedApiKey' | 'ApiKey' | 'ApiKeyPage' | 'AuditPage' | 'OpenApiDocument' | null;

/** One route of the admin API. */
export interface AdminRoute {
  /** OpenAPI `operationId`. */
  readonly operationId: string;
  readonly method: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  /** Path segments below the mount point; `:id` is the key's id. */
  readonly segments: readonly string[];
  readonly action: AdminAction;
  readonly summary: string;
  /** The body it reads, if any. */
  readonly body?: AdminBody;
  /** Query parameters it reads (list only). */
  readonly query?: readonly string[];
  /** Success status and body. */
  readonly status: 200 | 201 | 204;
  readonly result: AdminResult;
  /** The answer holds a raw key: `Cache-Control: no-store` and a `Location` of the new key. */
  readonly mintsKey?: boolean;
  /** Served only when the manager keeps an audit trail (`keygate({ audit })`). */
  readonly audit?: boolean;
}

/** The query parameters of `GET /`, as `keys.list()` takes them. */
export const LIST_QUERY = ['ownerId', 'tenantId', 'status', 'limit', 'cursor', 'includeDeleted'] as const;

/** The query parameters of the audit routes (`GET /audit` also takes `keyId`), as `keys.auditLog()` takes them. */
export const AUDIT_QUERY = ['actor', 'from', 'to', 'cursor', 'limit'] as const;

/** Every route, in the order the router tries them. */
export const ADMIN_ROUTES: readonly AdminRoute[] = [
  { operationId: 'getOpenApiDocument', method: 'GET', segments: ['openapi.json'], action: 'describe', summary: 'The OpenAPI 3.1 document of this API', status: 200, result: 'OpenApiDocument' },
  { operationId: 'createApiKey', method: 'POST', segments: [], action: 'create', summary: 'Create a key; the raw key is in this answer only', body: 'CreateApiKeyInput', status: 201, result: 'CreatedApiKey', mintsKey: true },
  { operationId: 'listApiKeys', method: 'GET', segments: [], action: 'list', summary: 'List keys, oldest first, one page at a time', query: LIST_QUERY, status: 200, result: 'ApiKeyPage' },
  { operationId: 'listAuditLog', method: 'GET', segments: ['audit'], action: 'audit', summary: 'The audit trail of key management, oldest first', query: ['keyId', ...AUDIT_QUERY], status: 200, result: 'AuditPage', audit: true },
  { operationId: 'getApiKey', method: 'GET', segments: [':id'], action: 'get', summary: 'Get a key', status: 200, result: 'ApiKey' },
  { operationId: 'updateApiKey', method: 'PATCH', segments: [':id'], action: 'update', summary: "Change a key's settings", body: 'UpdateApiKeyInput', status: 200, result: 'ApiKey' },
  { operationId: 'rotateApiKey', method: 'POST', segments: [':id', 'rotate'], action: 'rotate', summary: 'Replace a key with a new one; the raw key is in this answer only', body: 'RotateApiKeyInput', status: 201, result: 'CreatedApiKey', mintsKey: true },
  { operationId: 'revokeApiKey', method: 'POST', segments: [':id', 'revoke'], action: 'revoke', summary: 'Revoke a key at once', body: 'Empty', status: 200, result: 'ApiKey' },
  { operationId: 'deleteApiKey', method: 'DELETE', segments: [':id'], action: 'delete', summary: 'Delete a key: revoke it and hide it from lists until it is purged', status: 204, result: null },
  { operationId: 'listApiKeyAuditLog', method: 'GET', segments: [':id', 'audit'], action: 'audit', summary: "One key's audit trail, oldest first", query: AUDIT_QUERY, status: 200, result: 'AuditPage', audit: true },
];

/** The routes of a router, with the audit routes only when its manager keeps an audit trail. */
export function routesFor(options: { audit: boolean }): readonly AdminRoute[] {
  return options.audit ? ADMIN_ROUTES : ADMIN_ROUTES.filter((route) => route.audit !== true);
}

/**
 * The route for a method and path below the mount point, with the key id it names (`null` when
 * the id segment is not valid percent-encoding: the route is meant, the id is wrong).
 */
export function matchRoute(
  method: string,
  path: string,
  routes: readonly AdminRoute[] = ADMIN_ROUTES,
): { route: AdminRoute; id: string | null | undefined } | { allowed: readonly string[] } | null {
  const segments = path.split('/').filter((segment) => segment.length > 0);
  const allowed: string[] = [];
  for (const route of routes) {
    if (route.segments.length !== segments.length) continue;
    let id: string | null | undefined;
    const fits = route.segments.every((expected, i) => {
      const actual = segments[i] as string;
      if (expected !== ':id') return expected === actual;
      id = decodeSegment(actual) ?? null;
      return id !== 'openapi.json';
    });
    if (!fits) continue;
    if (route.method === method || (route.method === 'GET' && method === 'HEAD')) return { route, id };
    allowed.push(route.method);
  }
  return allowed.length > 0 ? { allowed } : null;
}

/** A path segment, percent-decoded; `undefined` when it does not decode. */
function decodeSegment(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}
