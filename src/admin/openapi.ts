/**
 * The OpenAPI 3.1 document of the admin API, generated, never hand-kept: its paths and operations
 * from the route table (`routes.ts`), its `ApiKey` schema from the record schema
 * (`record/schema.ts`, field by field, by kind), its input schemas from the same table with the
 * manager's validation rules (`manager/validate.ts`), and its problem answers and their codes from
 * `ERROR_CODES`. A route, a record field or an error code added there appears here by itself.
 */
import { ERROR_CODES, KeygateError, type KeygateErrorCode, invalidArgument, notFound } from '../errors.js';
import { PROBLEM_TYPE_BASE, problemDetails } from '../http/problem.js';
import { MAX_CONCURRENT, MAX_ROTATION_FREQUENCY_DAYS } from '../manager/validate.js';
import { MAX_WEBHOOK_URL } from '../record/alerts.js';
import { MAX_LIST_ENTRIES, rejectUnknownOptions } from '../options/checks.js';
import { isValidRequiredScope } from '../policy/scopes.js';
import {
  API_KEY_STATUSES,
  CREATE_FIELDS,
  type CreateField,
  type FieldKind,
  RATE_LIMIT_FIELDS,
  RECORD_FIELDS,
  RECORD_SCHEMA,
  type RecordField,
  SETTINGS_FIELDS,
} from '../record/schema.js';
import { AUDIT_QUERY, type AdminBody, type AdminResult, type AdminRoute, LIST_QUERY, routesFor } from './routes.js';
import { AUDIT_ACTIONS } from '../audit/entry.js';

// ---------------------------------------------------------------------------------------------
// The document's types: a plain JSON object, typed just enough to build it without `any`.
// ---------------------------------------------------------------------------------------------

/** A JSON value. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** The JSON Schema (2020-12) keywords the document uses. */
export interface JsonSchema {
  $ref?: string;
  type?: JsonSchemaType | JsonSchemaType[];
  title?: string;
  description?: string;
  enum?: (string | number | boolean | null)[];
  const?: string | number | boolean | null;
  default?: JsonValue;
  examples?: JsonValue[];
  format?: string;
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  items?: JsonSchema;
  minItems?: number;
  maxItems?: number;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  maxProperties?: number;
  dependentRequired?: Record<string, string[]>;
  allOf?: JsonSchema[];
  anyOf?: JsonSchema[];
  readOnly?: boolean;
}

/** A JSON Schema type name. */
export type JsonSchemaType = 'string' | 'number' | 'integer' | 'boolean' | 'object' | 'array' | 'null';

/** A reference to a component of the document. */
export interface OpenApiReference {
  $ref: string;
}

/** An OpenAPI parameter (path or query). */
export interface OpenApiParameter {
  name: string;
  in: 'path' | 'query';
  required: boolean;
  description?: string;
  schema: JsonSchema;
}

/** An OpenAPI header of a response. */
export interface OpenApiHeader {
  description: string;
  required?: boolean;
  schema: JsonSchema;
}

/** An example of a media type. */
export interface OpenApiExample {
  summary: string;
  value: JsonValue;
}

/** An OpenAPI media type: the schema of a body and its examples. */
export interface OpenApiMediaType {
  schema: JsonSchema;
  examples?: Record<string, OpenApiExample | OpenApiReference>;
}

/** An OpenAPI request body. */
export interface OpenApiRequestBody {
  description?: string;
  required: boolean;
  content: Record<string, OpenApiMediaType>;
}

/** An OpenAPI response. */
export interface OpenApiResponse {
  description: string;
  headers?: Record<string, OpenApiHeader | OpenApiReference>;
  content?: Record<string, OpenApiMediaType>;
}

/** An OpenAPI security requirement: scheme name → the scopes (roles) it must carry. */
export type OpenApiSecurityRequirement = Record<string, string[]>;

/** An OpenAPI operation. */
export interface OpenApiOperation {
  operationId: string;
  summary: string;
  description: string;
  tags: string[];
  parameters?: OpenApiParameter[];
  requestBody?: OpenApiRequestBody;
  responses: Record<string, OpenApiResponse>;
  /** Present only where it differs from the document's (`[]`: no key needed). */
  security?: OpenApiSecurityRequirement[];
  /** The `action` an `adminRouter({ authorize })` hook is asked about. */
  'x-keygate-action': string;
}

/** The operations of one path. */
export type OpenApiPathItem = Partial<Record<'get' | 'post' | 'patch' | 'delete', OpenApiOperation>>;

/** An OpenAPI security scheme. */
export type OpenApiSecurityScheme =
  | { type: 'http'; scheme: 'bearer'; description: string }
  | { type: 'apiKey'; in: 'header'; name: string; description: string };

/** An OpenAPI 3.1 document, as `keys.openapi()` returns it: plain JSON, ready to serialise or merge. */
export interface OpenApiDocument {
  openapi: '3.1.0';
  info: { title: string; version: string; description: string };
  tags: { name: string; description: string }[];
  security: OpenApiSecurityRequirement[];
  paths: Record<string, OpenApiPathItem>;
  components: {
    schemas: Record<string, JsonSchema>;
    headers: Record<string, OpenApiHeader>;
    examples: Record<string, OpenApiExample>;
    securitySchemes: Record<string, OpenApiSecurityScheme>;
  };
}

/** Options of {@link adminOpenApi}. */
export interface AdminOpenApiOptions {
  /** The scope the calling key needs (the router's `scope`), e.g. `keys:admin`. */
  scope: string;
  /** `info.title`. @default 'keygate admin API' */
  title?: string;
  /** `info.version`: the version of this API description. @default ADMIN_API_VERSION */
  version?: string;
}

/** The version of the admin API's contract, the document's default `info.version`. */
export const ADMIN_API_VERSION = '1.0.0';

const DEFAULT_TITLE = 'keygate admin API';
const TAG = 'API keys';

// The limits of the manager's validation (`manager/validate.ts`) that it does not export.
/** Longest text field (`name`, `ownerId`, `tenantId`, `environment`, a tag). */
const MAX_TEXT = 200;
/** Longest `description`. */
const MAX_DESCRIPTION = 2_000;
/** Longest granted scope. */
const MAX_SCOPE = 256;
/** Longest key id (`recordId`). */
const MAX_ID = 128;
/** Longest list cursor. */
const MAX_CURSOR = 512;
/** Largest list page. */
const MAX_PAGE = 1_000;
/** Default list page. */
const DEFAULT_PAGE = 100;
/** Latest instant a Date holds, in epoch ms. */
const MAX_EPOCH_MS = 8.64e15;

// ---------------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------------

const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });
const nullableRef = (name: string): JsonSchema => ({ anyOf: [ref(name), { type: 'null' }] });
const NOT_BLANK = '\\S';
/** A granted scope: `:`-separated segments without whitespace, `*` only as a whole segment (`policy/scopes.ts`). */
const GRANTED_SCOPE_PATTERN = '^(?:\\*|[^\\s:*]+)(?::(?:\\*|[^\\s:*]+))*$';
/** A SHA-256 fingerprint: 64 hex digits, or 32 colon-separated pairs (`policy/transport.ts`). */
const FINGERPRINT_PATTERN = '^(?:[0-9a-fA-F]{64}|[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){31})$';

const text = (max = MAX_TEXT): JsonSchema => ({ type: 'string', minLength: 1, maxLength: max, pattern: NOT_BLANK });
const stringList = (items: JsonSchema): JsonSchema => ({ type: 'array', maxItems: MAX_LIST_ENTRIES, items });
const instantInput = (): JsonSchema[] => [
  { type: 'string', format: 'date-time', description: 'An RFC 3339 date-time with a time zone, e.g. 2027-01-01T00:00:00Z' },
  { type: 'string', format: 'date', description: 'A date, meaning 00:00:00Z of that day' },
  { type: 'integer', minimum: -MAX_EPOCH_MS, maximum: MAX_EPOCH_MS, description: 'Epoch milliseconds' },
];

/** A record field's value as the API answers it (`ApiKey`), by the field's kind. */
const VIEW_KINDS: { readonly [K in FieldKind]: () => JsonSchema } = {
  text: () => ({ type: 'string', minLength: 1 }),
  optionalText: () => ({ type: 'string' }),
  status: () => ({ type: 'string', enum: [...API_KEY_STATUSES] }),
  list: () => ({ type: 'array', items: { type: 'string' } }),
  json: () => ({ type: 'object' }),
  rateLimit: () => nullableRef('RateLimit'),
  alerts: () => nullableRef('Alerts'),
  count: () => ({ type: 'integer', minimum: 0 }),
  nullableCount: () => ({ type: ['integer', 'null'], minimum: 0 }),
  instant: () => ({ type: 'string', format: 'date-time' }),
  nullableInstant: () => ({ type: ['string', 'null'], format: 'date-time' }),
  boolean: () => ({ type: 'boolean' }),
};

/** A record field's value as `create` and `update` accept it, by the field's kind (`KIND_VALIDATORS`). */
const INPUT_KINDS: { readonly [K in FieldKind]: () => JsonSchema } = {
  text: () => text(),
  optionalText: () => text(),
  status: () => ({ type: 'string', enum: [...API_KEY_STATUSES] }),
  list: () => stringList(text()),
  json: () => ({ type: 'object', description: 'Any JSON object, at most 64 KiB serialised and 16 levels deep; no `__proto__` keys.' }),
  rateLimit: () => nullableRef('RateLimit'),
  alerts: () => nullableRef('Alerts'),
  count: () => ({ type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
  nullableCount: () => ({ type: ['integer', 'null'], minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
  instant: () => ({ anyOf: instantInput() }),
  nullableInstant: () => ({ anyOf: [...instantInput(), { type: 'null' }] }),
  boolean: () => ({ type: 'boolean' }),
};

/** Fields whose rule is stricter than their kind's (`FIELD_VALIDATORS` of `manager/validate.ts`). */
const INPUT_FIELDS: { readonly [F in CreateField]?: () => JsonSchema } = {
  description: () => text(MAX_DESCRIPTION),
  scopes: () => stringList({ type: 'string', minLength: 1, maxLength: MAX_SCOPE, pattern: GRANTED_SCOPE_PATTERN }),
  allowedIps: () => stringList({ type: 'string', minLength: 1, description: 'An IP address or CIDR range (v4 or v6), e.g. 10.0.0.0/8' }),
  allowedOrigins: () => stringList({ type: 'string', minLength: 1, description: 'An origin such as https://app.example.com, or https://*.example.com' }),
  clientCertificateSha256: () => stringList({ type: 'string', pattern: FINGERPRINT_PATTERN }),
  maxConcurrent: () => ({ type: ['integer', 'null'], minimum: 1, maximum: MAX_CONCURRENT }),
  rotationFrequencyDays: () => ({ type: ['integer', 'null'], minimum: 1, maximum: MAX_ROTATION_FREQUENCY_DAYS }),
};

/** What a field means, where its name does not say it all. */
const FIELD_DESCRIPTIONS: { readonly [F in RecordField]?: string } = {
  id: 'The key id (the `{id}` of the paths).',
  keyPrefix: '`<prefix>_<lookupId>`: identifies the key without revealing it; safe to log and show.',
  status: 'Only `active` keys are admitted.',
  scopes: "Granted scopes: `:`-separated segments; `*` as a segment matches any one, a trailing `*` any rest, `*` alone everything.",
  allowedIps: 'IP addresses or CIDR ranges the key may be used from; empty admits any address.',
  maxUses: 'Requests the key may make in its lifetime; `null` for unlimited.',
  useCount: 'Requests the key has made.',
  rateLimit: 'Per-key rate limits; `null` for none.',
  expiresAt: 'When the key stops working; `null` for never.',
  revokedAt: 'When the key stopped (or, after a rotation, stops) working; `null` while not revoked.',
  rotatedFromId: 'The key this one replaced, for a key minted by a rotation.',
  metadata: 'Free-form JSON of the application.',
  allowedOrigins: 'Browser origins allowed to use the key; empty admits any.',
  requireHttps: 'Refuse requests that did not arrive over TLS.',
  clientCertificateSha256: 'SHA-256 fingerprints of the client certificates allowed; empty pins none.',
  maxConcurrent: 'Most requests of the key in flight at once (1 to 1000); `null` for no limit.',
  deletedAt: 'When the key was deleted; `null` for a key not deleted. A deleted key is revoked and left out of lists.',
  rotationFrequencyDays: 'Days after creation when the key is due for rotation (`key.rotation_due`); `null` for no schedule.',
  alerts: "When to warn about the key's quotas and error rate, and the webhook that receives the warnings; `null` for the defaults without a webhook.",
};

const RATE_LIMIT_DESCRIPTIONS: { readonly [F in (typeof RATE_LIMIT_FIELDS)[number]]: string } = {
  perSecond: 'Token bucket refilled at this many requests per second.',
  burst: 'Bucket capacity (defaults to `perSecond`); needs `perSecond`.',
  perMinute: 'Quota per UTC minute.',
  perHour: 'Quota per UTC hour.',
  perDay: 'Quota per UTC day (resets at 00:00:00Z).',
  perMonth: 'Quota per UTC calendar month (resets at 00:00:00Z on the 1st).',
};

function describe(schema: JsonSchema, field: RecordField): JsonSchema {
  const description = FIELD_DESCRIPTIONS[field];
  return description === undefined || schema.description !== undefined ? schema : { ...schema, description };
}

/** A field of `create` / `update` input, by its own rule or its kind's. */
function inputSchema(field: CreateField): JsonSchema {
  const own = Object.hasOwn(INPUT_FIELDS, field) ? INPUT_FIELDS[field] : undefined;
  return describe(own ? own() : INPUT_KINDS[RECORD_SCHEMA[field].kind](), field);
}

/** The `ApiKey` view: every record field but `keyHash`, by kind, plus `isActive` and `isTestKey`. */
function apiKeySchema(): JsonSchema {
  const properties: Record<string, JsonSchema> = {};
  const required: string[] = [];
  for (const { field, spec } of RECORD_FIELDS) {
    if (field === 'keyHash') continue;
    properties[field] = describe(VIEW_KINDS[spec.kind](), field);
    if (spec.kind !== 'optionalText') required.push(field);
  }
  properties.isActive = { type: 'boolean', description: 'Status active, not expired, and not revoked (nor past a rotation grace period).' };
  properties.isTestKey = { type: 'boolean', description: 'The key belongs to the `test` environment.' };
  required.push('isActive', 'isTestKey');
  return { type: 'object', description: 'An API key as keygate shows it: never the key itself nor its hash.', properties, required };
}

function createInputSchema(): JsonSchema {
  const properties: Record<string, JsonSchema> = {};
  const required: string[] = [];
  for (const field of CREATE_FIELDS) {
    const spec = RECORD_SCHEMA[field];
    properties[field] = inputSchema(field);
    // A field with neither an initial value nor the right to be absent must be given (`validateCreate`).
    if (!('initial' in spec) && spec.kind !== 'optionalText') required.push(field);
  }
  return { type: 'object', description: 'A new key: only `name` is required; every other field has a default.', properties, required, additionalProperties: false };
}

function updateInputSchema(): JsonSchema {
  const properties: Record<string, JsonSchema> = {};
  for (const field of SETTINGS_FIELDS) {
    const schema = inputSchema(field);
    // `null` clears an optional text (such as `description`); the other kinds say for themselves whether they take `null`.
    properties[field] = RECORD_SCHEMA[field].kind === 'optionalText' ? { ...schema, type: ['string', 'null'] } : schema;
  }
  return { type: 'object', description: "The settings to change; fields not given keep their value, `null` clears a nullable one.", properties, additionalProperties: false };
}

function rateLimitSchema(): JsonSchema {
  const properties: Record<string, JsonSchema> = {};
  for (const field of RATE_LIMIT_FIELDS) {
    properties[field] = { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: RATE_LIMIT_DESCRIPTIONS[field] };
  }
  return {
    type: 'object',
    description: 'Per-key rate limits; omit a field for no limit of that kind. Every admitted request counts against every window.',
    properties,
    additionalProperties: false,
    dependentRequired: { burst: ['perSecond'] },
  };
}

function alertsSchema(): JsonSchema {
  return {
    type: 'object',
    description: "When to warn about the key, and where; omit a field for keygate's default.",
    properties: {
      quotaThreshold: { type: 'number', exclusiveMinimum: 0, exclusiveMaximum: 1, description: 'Fraction of `maxUses`, the day quota or the month quota at which to alert (keygate alerts at 100 % too).' },
      errorRateThreshold: { type: 'number', exclusiveMinimum: 0, maximum: 1, description: "Fraction of a UTC day's requests answered 4xx or 5xx at which to alert." },
      webhookUrl: { type: 'string', format: 'uri', maxLength: MAX_WEBHOOK_URL, description: 'An http: or https: URL, without user name or password, receiving the alerts as signed Standard Webhooks.' },
    },
    additionalProperties: false,
  };
}

function problemSchema(): JsonSchema {
  const codes = Object.keys(ERROR_CODES);
  return {
    type: 'object',
    description: 'An RFC 9457 problem: every error of the API, with a stable `code`.',
    properties: {
      type: { type: 'string', enum: codes.map((code) => PROBLEM_TYPE_BASE + code), description: `\`${PROBLEM_TYPE_BASE}<code>\`: a URN, not meant to be dereferenced.` },
      title: { type: 'string' },
      status: { type: 'integer', minimum: 400, maximum: 599 },
      detail: { type: 'string' },
      code: { type: 'string', enum: codes, description: 'Stable across minor versions: match on it, not on `detail`.' },
      field: { type: 'string', description: 'The input field an `invalid_argument` problem is about.' },
    },
    required: ['type', 'title', 'status', 'detail', 'code'],
  };
}

/** The schema of every request body a route can name. */
function bodySchemas(): Record<AdminBody, JsonSchema> {
  return {
    CreateApiKeyInput: createInputSchema(),
    UpdateApiKeyInput: updateInputSchema(),
    RotateApiKeyInput: {
      type: 'object',
      properties: {
        gracePeriodMs: {
          type: 'integer',
          minimum: 0,
          maximum: Number.MAX_SAFE_INTEGER,
          default: 0,
          description: 'How long the old key keeps working, in milliseconds; 0 revokes it at once.',
        },
      },
      additionalProperties: false,
    },
    Empty: { type: 'object', description: 'No fields: send no body, or `{}`.', maxProperties: 0, additionalProperties: false },
  };
}

/** One entry of the audit trail (`AuditEntry`). */
function auditEntrySchema(): JsonSchema {
  return {
    type: 'object',
    description: 'One management event: what was done to which key, by whom, when. Never holds a secret or a hash.',
    properties: {
      id: { type: 'string', minLength: 1 },
      at: { type: 'string', format: 'date-time' },
      action: { type: 'string', enum: [...AUDIT_ACTIONS] },
      keyId: { type: ['string', 'null'], description: 'The key concerned; `null` for `key.purged`.' },
      actor: {
        type: ['object', 'null'],
        description: 'Who made the change: the calling key of this API, or the actor the application gave; `null` if none.',
        properties: { id: { type: 'string', minLength: 1 }, keyPrefix: { type: 'string', minLength: 1 } },
        required: ['id'],
      },
      tenantId: { type: 'string' },
      environment: { type: 'string' },
      changes: { type: 'object', description: 'The settings set, with their new values (instants as ISO strings).' },
    },
    required: ['id', 'at', 'action', 'keyId', 'actor', 'changes'],
  };
}

/** The schema of every success body a route can name. */
function resultSchemas(): Record<Exclude<AdminResult, null>, JsonSchema> {
  return {
    ApiKey: apiKeySchema(),
    CreatedApiKey: {
      type: 'object',
      description: 'A newly minted key.',
      properties: {
        key: { type: 'string', minLength: 1, description: 'The raw key: shown in this answer only, never again. Store it safely.' },
        apiKey: ref('ApiKey'),
      },
      required: ['key', 'apiKey'],
    },
    ApiKeyPage: {
      type: 'object',
      description: 'One page of keys, oldest first.',
      properties: {
        items: { type: 'array', items: ref('ApiKey') },
        nextCursor: { type: 'string', minLength: 1, description: 'Present while more pages follow: pass it as `cursor`.' },
      },
      required: ['items'],
    },
    AuditPage: {
      type: 'object',
      description: 'One page of the audit trail, oldest first.',
      properties: {
        items: { type: 'array', items: auditEntrySchema() },
        nextCursor: { type: 'string', minLength: 1, description: 'Present while more pages follow: pass it as `cursor`.' },
      },
      required: ['items'],
    },
    OpenApiDocument: {
      type: 'object',
      description: 'An OpenAPI 3.1 document.',
      properties: { openapi: { type: 'string', pattern: '^3\\.1\\.' }, info: { type: 'object' }, paths: { type: 'object' }, components: { type: 'object' } },
      required: ['openapi', 'info'],
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

/** The schemas of the query parameters of `GET /`, as `validateList` reads them. */
const LIST_PARAMETERS: { readonly [P in (typeof LIST_QUERY)[number]]: { schema: JsonSchema; description: string } } = {
  ownerId: { schema: text(), description: 'Only keys of this owner.' },
  tenantId: { schema: text(), description: "Only keys of this tenant (a caller whose key has a tenant sees only its own tenant's keys)." },
  status: { schema: { type: 'string', enum: [...API_KEY_STATUSES] }, description: 'Only keys in this status.' },
  limit: { schema: { type: 'integer', minimum: 1, maximum: MAX_PAGE, default: DEFAULT_PAGE }, description: 'Page size.' },
  cursor: { schema: { type: 'string', minLength: 1, maxLength: MAX_CURSOR }, description: "The previous page's `nextCursor`." },
  includeDeleted: { schema: { type: 'boolean', default: false }, description: 'Also list deleted keys.' },
};

/** The schemas of the query parameters of the audit routes, as `keys.auditLog()` reads them. */
const AUDIT_PARAMETERS: { readonly [P in (typeof AUDIT_QUERY)[number] | 'keyId']: { schema: JsonSchema; description: string } } = {
  keyId: { schema: { type: 'string', minLength: 1, maxLength: MAX_ID }, description: 'Only entries about this key.' },
  actor: { schema: text(), description: 'Only entries made by this actor id (a key id, for changes made through this API).' },
  from: { schema: { type: 'string', format: 'date-time' }, description: 'Only entries at or after this instant.' },
  to: { schema: { type: 'string', format: 'date-time' }, description: 'Only entries before this instant.' },
  cursor: { schema: { type: 'string', minLength: 1, maxLength: MAX_CURSOR }, description: "The previous page's `nextCursor`." },
  limit: { schema: { type: 'integer', minimum: 1, maximum: MAX_PAGE, default: DEFAULT_PAGE }, description: 'Page size.' },
};

/** The schemas of path parameters by name (`:id` is a key id, `recordId`). */
const PATH_PARAMETERS: Readonly<Record<string, { schema: JsonSchema; description: string }>> = {
  id: { schema: { type: 'string', minLength: 1, maxLength: MAX_ID }, description: 'The key id.' },
};

function queryParameter(route: AdminRoute, name: string): OpenApiParameter {
  const table: Readonly<Record<string, { schema: JsonSchema; description: string }>> = route.action === 'audit' ? AUDIT_PARAMETERS : LIST_PARAMETERS;
  const known = Object.hasOwn(table, name) ? table[name] : undefined;
  return { name, in: 'query', required: false, description: known?.description ?? name, schema: known ? structuredClone(known.schema) : { type: 'string' } };
}

function pathParameter(name: string): OpenApiParameter {
  const known = Object.hasOwn(PATH_PARAMETERS, name) ? PATH_PARAMETERS[name] : undefined;
  return { name, in: 'path', required: true, description: known?.description ?? name, schema: known ? structuredClone(known.schema) : { type: 'string', minLength: 1 } };
}

/** The OpenAPI path of a route: `:name` segments become `{name}`. */
export function openApiPath(route: AdminRoute): string {
  return '/' + route.segments.map((segment) => (segment.startsWith(':') ? `{${segment.slice(1)}}` : segment)).join('/');
}

const pathParameterNames = (route: AdminRoute): string[] => route.segments.filter((segment) => segment.startsWith(':')).map((segment) => segment.slice(1));

/** A route that answers without a key (the API description, public like any API description). */
function isPublic(route: AdminRoute): boolean {
  return route.action === 'describe';
}

type CodeSpec = { status: number; title: string; message?: string };
const CODES = ERROR_CODES as Readonly<Record<KeygateErrorCode, CodeSpec>>;
const ALL_CODES = Object.keys(CODES) as KeygateErrorCode[];

/**
 * Every code a route can answer with, derived from what it does: the refusals of the key check
 * (every code of `ERROR_CODES` with a client-safe message), `invalid_argument` for a route that
 * reads a body, a query or a key id (or meets a delegation rule), `not_found` for a key id,
 * `payload_too_large` (and any other 413) for a body, and `invalid_record` where a stored key is read.
 */
export function routeErrorCodes(route: AdminRoute): KeygateErrorCode[] {
  if (isPublic(route)) return [];
  const hasId = pathParameterNames(route).length > 0;
  const codes = new Set<KeygateErrorCode>(ALL_CODES.filter((code) => CODES[code].message !== undefined));
  if (route.body !== undefined || route.query !== undefined || hasId) codes.add('invalid_argument');
  if (hasId) codes.add('not_found');
  if (route.body !== undefined) for (const code of ALL_CODES) if (CODES[code].status === 413) codes.add(code);
  if (hasId || route.query !== undefined) codes.add('invalid_record');
  return ALL_CODES.filter((code) => codes.has(code));
}

/** A problem answer of `code`, built by the same function the API answers with. */
function exampleProblem(code: KeygateErrorCode): JsonValue {
  const spec = CODES[code];
  const error =
    code === 'invalid_argument'
      ? invalidArgument('name', 'must be a non-empty string')
      : code === 'not_found'
        ? notFound('7f9c2ba4-e88f-4b1a-9a3e-2f1d3c4b5a69')
        : new KeygateError(code, spec.message ?? spec.title);
  return { ...problemDetails(error) };
}

/** The response headers the API sends, by component name. */
function headerComponents(scope: string): Record<string, OpenApiHeader> {
  return {
    NoStore: { description: '`no-store`: no cache may keep the answer (every answer of this API carries it).', required: true, schema: { type: 'string', const: 'no-store' } },
    Location: { description: "The new key's URL: `<mount path>/<id>`.", required: true, schema: { type: 'string', format: 'uri-reference' } },
    BearerChallenge: {
      description: 'The Bearer challenge of RFC 6750: `Bearer realm="…"`, with `error="invalid_token"` when a key was given.',
      required: true,
      schema: { type: 'string' },
    },
    ScopeChallenge: {
      description: `On \`insufficient_scope\`: \`Bearer realm="…", error="insufficient_scope", scope="…"\` naming the scope needed (\`${scope}\`).`,
      schema: { type: 'string' },
    },
    RetryAfter: { description: 'Seconds after which the request may succeed.', schema: { type: 'integer', minimum: 0 } },
  };
}

const header = (name: string): OpenApiReference => ({ $ref: `#/components/headers/${name}` });

/** The headers of a problem answer of `status`. */
function problemHeaders(status: number, codes: readonly KeygateErrorCode[]): Record<string, OpenApiReference> {
  const headers: Record<string, OpenApiReference> = { 'Cache-Control': header('NoStore') };
  if (status === 401) headers['WWW-Authenticate'] = header('BearerChallenge');
  else if (codes.includes('insufficient_scope')) headers['WWW-Authenticate'] = header('ScopeChallenge');
  if (status === 429 || status === 503) headers['Retry-After'] = header('RetryAfter');
  return headers;
}

function problemResponse(status: number, codes: readonly KeygateErrorCode[]): OpenApiResponse {
  const examples: Record<string, OpenApiReference> = {};
  for (const code of codes) examples[code] = { $ref: `#/components/examples/${code}` };
  const list = codes.map((code) => `\`${code}\``).join(', ');
  return {
    description: `${codes.length === 1 ? CODES[codes[0] as KeygateErrorCode].title : 'Refused'}: ${list}.`,
    headers: problemHeaders(status, codes),
    content: {
      'application/problem+json': {
        schema: {
          type: 'object',
          allOf: [ref('Problem')],
          properties: { status: { const: status }, code: { enum: [...codes] } },
        },
        examples,
      },
    },
  };
}

const RESULT_DESCRIPTIONS: { readonly [R in Exclude<AdminResult, null>]: string } = {
  CreatedApiKey: 'The new key: `key` is in this answer only.',
  ApiKey: 'The key.',
  ApiKeyPage: 'One page of keys.',
  AuditPage: 'One page of the audit trail.',
  OpenApiDocument: 'This document.',
};

function successResponse(route: AdminRoute): OpenApiResponse {
  const headers: Record<string, OpenApiReference> = { 'Cache-Control': header('NoStore') };
  if (route.status === 201) headers.Location = header('Location');
  if (route.result === null) return { description: route.status === 204 ? 'Done: no content.' : 'Done.', headers };
  return { description: RESULT_DESCRIPTIONS[route.result], headers, content: { 'application/json': { schema: ref(route.result) } } };
}

function requestBody(body: AdminBody): OpenApiRequestBody {
  // The router requires a JSON body wherever a route reads one, except an `Empty` one (none is `{}`).
  const required = body !== 'Empty';
  const request: OpenApiRequestBody = { required, content: { 'application/json': { schema: ref(body) } } };
  if (!required) request.description = 'Optional: no body is `{}`.';
  return request;
}

function operation(route: AdminRoute, scope: string): OpenApiOperation {
  const description = isPublic(route)
    ? `${route.summary}. Public: no key needed.`
    : `${route.summary}. The calling key needs the scope \`${scope}\` (unless the router's \`authorize\` hook decides), and manages only what it could hold itself${route.mintsKey ? '. The answer holds a raw key: it is sent with `Cache-Control: no-store` and shown this once' : ''}.`;
  const op: OpenApiOperation = { operationId: route.operationId, summary: route.summary, description, tags: [TAG], responses: {}, 'x-keygate-action': route.action };
  const parameters = [...pathParameterNames(route).map(pathParameter), ...(route.query ?? []).map((name) => queryParameter(route, name))];
  if (parameters.length > 0) op.parameters = parameters;
  if (route.body !== undefined) op.requestBody = requestBody(route.body);
  op.responses[String(route.status)] = successResponse(route);
  const byStatus = new Map<number, KeygateErrorCode[]>();
  for (const code of routeErrorCodes(route)) {
    const status = CODES[code].status;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  for (const status of [...byStatus.keys()].sort((a, b) => a - b)) {
    op.responses[String(status)] = problemResponse(status, byStatus.get(status) as KeygateErrorCode[]);
  }
  if (isPublic(route)) op.security = [];
  return op;
}

// ---------------------------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------------------------

function checkOptions(options: unknown): Required<AdminOpenApiOptions> {
  if (options === null || typeof options !== 'object') throw new TypeError('adminOpenApi() takes an options object such as { scope: "keys:admin" }');
  rejectUnknownOptions(options, ['scope', 'title', 'version'], 'adminOpenApi()');
  const { scope, title = DEFAULT_TITLE, version = ADMIN_API_VERSION } = options as AdminOpenApiOptions;
  if (!isValidRequiredScope(scope)) throw new TypeError('adminOpenApi(): `scope` must be a literal scope such as "keys:admin"');
  if (typeof title !== 'string' || title.length === 0) throw new TypeError('adminOpenApi(): `title` must be a non-empty string');
  if (typeof version !== 'string' || version.length === 0) throw new TypeError('adminOpenApi(): `version` must be a non-empty string');
  return { scope, title, version };
}

/**
 * The OpenAPI 3.1 document of an admin API serving `routes`. {@link adminOpenApi} is this for the
 * router's own table; taking the table as an argument lets a test prove that the document follows it.
 */
export function buildOpenApi(routes: readonly AdminRoute[], options: AdminOpenApiOptions): OpenApiDocument {
  const { scope, title, version } = checkOptions(options);
  const paths: Record<string, OpenApiPathItem> = {};
  const operationIds = new Set<string>();
  const usedCodes = new Set<KeygateErrorCode>();
  for (const route of routes) {
    const path = openApiPath(route);
    const method = route.method.toLowerCase() as Lowercase<AdminRoute['method']>;
    const item = (paths[path] ??= {});
    if (item[method] !== undefined) throw new Error(`adminOpenApi(): two routes for ${route.method} ${path}`);
    if (operationIds.has(route.operationId)) throw new Error(`adminOpenApi(): two routes named ${route.operationId}`);
    operationIds.add(route.operationId);
    item[method] = operation(route, scope);
    for (const code of routeErrorCodes(route)) usedCodes.add(code);
  }
  const examples: Record<string, OpenApiExample> = {};
  for (const code of ALL_CODES) if (usedCodes.has(code)) examples[code] = { summary: CODES[code].title, value: exampleProblem(code) };
  const requirement = (scheme: string): OpenApiSecurityRequirement => ({ [scheme]: [scope] });
  return {
    openapi: '3.1.0',
    info: {
      title,
      version,
      description: [
        'Manage API keys: create, list, get, update, rotate, revoke and delete them.',
        'Paths are relative to where the router is mounted (e.g. `/v1/api-keys`).',
        `Every operation but the document itself needs an API key, as \`Authorization: Bearer <key>\` or \`X-API-Key: <key>\`, granting the scope \`${scope}\` (unless the router's \`authorize\` hook decides).`,
        'A caller never creates or manages a key more powerful than its own (scopes, addresses, limits, expiry), and a caller whose key has a `tenantId` sees only the keys of its tenant: any other key is `404`.',
        `Every error is an RFC 9457 problem (\`application/problem+json\`) whose \`type\` is \`${PROBLEM_TYPE_BASE}<code>\`.`,
      ].join('\n\n'),
    },
    tags: [{ name: TAG, description: 'Key management.' }],
    security: [requirement('bearerAuth'), requirement('apiKeyHeader')],
    paths,
    components: {
      schemas: {
        ...resultSchemas(),
        ...bodySchemas(),
        RateLimit: rateLimitSchema(),
        Alerts: alertsSchema(),
        Problem: problemSchema(),
      },
      headers: headerComponents(scope),
      examples,
      securitySchemes: {
        bearerAuth: { type: 'http', scheme: 'bearer', description: `An API key as \`Authorization: Bearer <key>\`, granting \`${scope}\`.` },
        apiKeyHeader: { type: 'apiKey', in: 'header', name: 'X-API-Key', description: `An API key as \`X-API-Key: <key>\`, granting \`${scope}\`.` },
      },
    },
  };
}

/**
 * The OpenAPI 3.1 document of `keys.adminRouter()`: the one it serves at `GET /openapi.json` and
 * `keys.openapi()` returns, to merge into an app's own API description.
 *
 * @example
 * ```ts
 * const doc = adminOpenApi({ scope: 'keys:admin' });
 * doc.paths['/{id}/rotate']?.post?.operationId; // 'rotateApiKey'
 * ```
 */
export function adminOpenApi(options: AdminOpenApiOptions & { audit?: boolean }): OpenApiDocument {
  const { audit = false, ...document } = options;
  return buildOpenApi(routesFor({ audit }), document);
}
