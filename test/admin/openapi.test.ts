/**
 * The admin API's OpenAPI document: valid OpenAPI 3.1 by a real validator, generated from the
 * route table (every route once, and a route added to the table appears), its problem answers
 * from ERROR_CODES, its ApiKey schema from the record schema, and its schemas true to what the API
 * really sends (real views validate) and to what the manager really accepts (the manager's own
 * validation agrees with the input schemas on every sample).
 */
import SwaggerParser from '@apidevtools/swagger-parser';
import Ajv2020, { type ValidateFunction } from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import {
  type JsonSchema,
  type OpenApiDocument,
  type OpenApiOperation,
  type OpenApiResponse,
  adminOpenApi,
  buildOpenApi,
  openApiPath,
  routeErrorCodes,
} from '../../src/admin/openapi';
import { ADMIN_ROUTES, AUDIT_QUERY, type AdminRoute, LIST_QUERY } from '../../src/admin/routes';
import { ERROR_CODES, type KeygateErrorCode } from '../../src/errors';
import { PROBLEM_TYPE_BASE } from '../../src/http/problem';
import { MemoryStore, keygate } from '../../src/index';
import { validateCreate, validateUpdate } from '../../src/manager/validate';
import { CREATE_FIELDS, RECORD_SCHEMA, SETTINGS_FIELDS } from '../../src/record/schema';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();
const SCOPE = 'keys:admin';
// The document with every route, the audit routes included (served when the manager keeps an audit trail).
const doc = adminOpenApi({ scope: SCOPE, audit: true });

const METHODS = ['get', 'post', 'patch', 'delete'] as const;

/** Every operation of a document with its method and path. */
function operations(document: OpenApiDocument): { method: string; path: string; op: OpenApiOperation }[] {
  const found: { method: string; path: string; op: OpenApiOperation }[] = [];
  for (const [path, item] of Object.entries(document.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (op) found.push({ method: method.toUpperCase(), path, op });
    }
  }
  return found;
}

function operationOf(document: OpenApiDocument, operationId: string): OpenApiOperation {
  const found = operations(document).find((entry) => entry.op.operationId === operationId);
  if (!found) throw new Error(`no operation ${operationId}`);
  return found.op;
}

function response(op: OpenApiOperation, status: number): OpenApiResponse {
  const answer = op.responses[String(status)];
  if (!answer) throw new Error(`${op.operationId} has no ${status} response`);
  return answer;
}

/** The problem codes a response declares (its schema's `code` enum). */
function problemCodes(answer: OpenApiResponse): string[] {
  const schema = answer.content?.['application/problem+json']?.schema;
  return (schema?.properties?.code?.enum ?? []) as string[];
}

/** Follows a `#/components/...` reference. */
function resolve(document: OpenApiDocument, reference: string): unknown {
  let node: unknown = document;
  for (const part of reference.replace(/^#\//, '').split('/')) node = (node as Record<string, unknown>)[part];
  return node;
}

/** Every `$ref` anywhere in a value. */
function refs(value: unknown, out: string[] = []): string[] {
  if (Array.isArray(value)) for (const item of value) refs(item, out);
  else if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      if (key === '$ref' && typeof item === 'string') out.push(item);
      else refs(item, out);
    }
  }
  return out;
}

/** Points the document's schema references at the validator's copy of its schemas. */
const relocated = (schema: unknown): object => JSON.parse(JSON.stringify(schema).replaceAll('"#/components/schemas/', '"components#/$defs/')) as object;

/** A strict JSON Schema 2020-12 validator of the document's component schemas, and of any schema referring to them. */
function schemaValidator(document: OpenApiDocument): { schemas: (name: string) => ValidateFunction; compile: (schema: JsonSchema) => ValidateFunction } {
  const ajv = new Ajv2020({ strict: true, allowUnionTypes: true, allErrors: true });
  addFormats(ajv);
  ajv.addSchema({ $id: 'components', $defs: relocated(document.components.schemas) });
  return {
    schemas: (name) => {
      const validate = ajv.getSchema(`components#/$defs/${name}`);
      if (!validate) throw new Error(`no schema ${name}`);
      return validate;
    },
    compile: (schema) => ajv.compile(relocated(schema)),
  };
}

const { schemas, compile } = schemaValidator(doc);

function expectValid(name: string, value: unknown): void {
  const validate = schemas(name);
  const ok = validate(value);
  if (!ok) throw new Error(`${name} rejects ${JSON.stringify(value)}: ${JSON.stringify(validate.errors)}`);
}

/** What travels over the wire: the value after JSON serialisation. */
const wire = (value: unknown): unknown => JSON.parse(JSON.stringify(value)) as unknown;

const REFUSAL_CODES = (Object.keys(ERROR_CODES) as KeygateErrorCode[]).filter((code) => 'message' in ERROR_CODES[code]);
const codesOf = (status: number, codes: readonly KeygateErrorCode[] = REFUSAL_CODES): string[] => codes.filter((code) => ERROR_CODES[code].status === status);

describe('adminOpenApi(): the document', () => {
  it('is a valid OpenAPI 3.1 document for @apidevtools/swagger-parser, whose every $ref resolves', async () => {
    expect(doc.openapi).toBe('3.1.0');
    await expect(SwaggerParser.validate(structuredClone(doc) as never)).resolves.toBeDefined();
    await expect(SwaggerParser.dereference(structuredClone(doc) as never)).resolves.toBeDefined();
    for (const reference of refs(doc)) expect([reference, resolve(doc, reference)]).toEqual([reference, expect.anything()]);
  });

  it('is plain JSON: serialising it loses nothing', () => {
    expect(wire(doc)).toEqual(doc);
  });

  it('has every route of ADMIN_ROUTES exactly once, at its method and path, with its operationId and summary, and nothing else', () => {
    const found = operations(doc).map(({ method, path, op }) => ({ method, path, operationId: op.operationId, summary: op.summary, action: op['x-keygate-action'] }));
    const expected = ADMIN_ROUTES.map((route) => ({
      method: route.method,
      path: '/' + route.segments.map((segment) => (segment === ':id' ? '{id}' : segment)).join('/'),
      operationId: route.operationId,
      summary: route.summary,
      action: route.action,
    }));
    const order = (a: { operationId: string }, b: { operationId: string }) => a.operationId.localeCompare(b.operationId);
    expect(found.sort(order)).toEqual(expected.sort(order));
    expect(new Set(found.map((entry) => entry.operationId)).size).toBe(ADMIN_ROUTES.length);
    expect(Object.keys(doc.paths).sort()).toEqual(['/', '/audit', '/openapi.json', '/{id}', '/{id}/audit', '/{id}/revoke', '/{id}/rotate']);
  });

  it('turns every :id segment into a required string path parameter {id}, and declares no other path parameter', () => {
    for (const { path, op } of operations(doc)) {
      const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((match) => match[1]);
      const declared = (op.parameters ?? []).filter((parameter) => parameter.in === 'path');
      expect(declared.map((parameter) => parameter.name)).toEqual(templated);
      for (const parameter of declared) expect(parameter).toMatchObject({ required: true, schema: { type: 'string', minLength: 1, maxLength: 128 } });
    }
  });

  it('gives GET / the query parameters of LIST_QUERY, the audit routes those of AUDIT_QUERY, with their schemas, and no other operation any', () => {
    const list = operationOf(doc, 'listApiKeys');
    const query = (list.parameters ?? []).filter((parameter) => parameter.in === 'query');
    expect(query.map((parameter) => parameter.name)).toEqual([...LIST_QUERY]);
    const schemaOf = (name: string) => query.find((parameter) => parameter.name === name)?.schema;
    expect(schemaOf('status')).toEqual({ type: 'string', enum: ['active', 'suspended', 'revoked'] });
    expect(schemaOf('limit')).toMatchObject({ type: 'integer', minimum: 1, maximum: 1000 });
    expect(schemaOf('includeDeleted')).toMatchObject({ type: 'boolean' });
    expect(schemaOf('cursor')).toMatchObject({ type: 'string' });
    expect(schemaOf('ownerId')).toMatchObject({ type: 'string', minLength: 1 });
    expect(schemaOf('tenantId')).toMatchObject({ type: 'string', minLength: 1 });
    for (const parameter of query) expect(parameter.required).toBe(false);
    const audits = [operationOf(doc, 'listAuditLog'), operationOf(doc, 'listApiKeyAuditLog')];
    const auditQuery = (op: typeof list) => (op.parameters ?? []).filter((parameter) => parameter.in === 'query');
    expect(auditQuery(audits[0]!).map((parameter) => parameter.name)).toEqual(['keyId', ...AUDIT_QUERY]);
    expect(auditQuery(audits[1]!).map((parameter) => parameter.name)).toEqual([...AUDIT_QUERY]);
    expect(auditQuery(audits[0]!).find((parameter) => parameter.name === 'from')?.schema).toMatchObject({ type: 'string', format: 'date-time' });
    for (const { op } of operations(doc)) {
      if (op !== list && !audits.includes(op)) expect((op.parameters ?? []).filter((parameter) => parameter.in === 'query')).toEqual([]);
    }
  });

  it('takes the request body a route names, as application/json; an Empty body is optional', () => {
    for (const route of ADMIN_ROUTES) {
      const op = operationOf(doc, route.operationId);
      if (route.body === undefined) {
        expect(op.requestBody).toBeUndefined();
        continue;
      }
      expect(op.requestBody?.content).toEqual({ 'application/json': { schema: { $ref: `#/components/schemas/${route.body}` } } });
      expect(op.requestBody?.required).toBe(route.body !== 'Empty');
    }
    expect(doc.components.schemas.Empty).toMatchObject({ type: 'object', maxProperties: 0 });
    expect(doc.components.schemas.RotateApiKeyInput).toEqual(
      expect.objectContaining({ additionalProperties: false, properties: { gracePeriodMs: expect.objectContaining({ type: 'integer', minimum: 0 }) } }),
    );
  });

  it('answers each route with its success status and body: a raw key with no-store and a Location, 204 with no body', () => {
    for (const route of ADMIN_ROUTES) {
      const op = operationOf(doc, route.operationId);
      const success = Object.keys(op.responses).filter((status) => Number(status) < 400);
      expect(success).toEqual([String(route.status)]);
      const answer = response(op, route.status);
      if (route.result === null) expect(answer.content).toBeUndefined();
      else expect(answer.content).toEqual({ 'application/json': { schema: { $ref: `#/components/schemas/${route.result}` } } });
      expect(answer.headers?.['Cache-Control']).toEqual({ $ref: '#/components/headers/NoStore' });
      if (route.status === 201) expect(answer.headers?.Location).toEqual({ $ref: '#/components/headers/Location' });
      else expect(answer.headers?.Location).toBeUndefined();
    }
    expect(doc.components.headers.NoStore).toMatchObject({ required: true, schema: { const: 'no-store' } });
    expect(ADMIN_ROUTES.filter((route) => route.mintsKey).map((route) => route.status)).toEqual([201, 201]);
  });

  it('names only codes of ERROR_CODES, each under its own status, as application/problem+json referencing Problem', () => {
    let seen = 0;
    for (const { op } of operations(doc)) {
      for (const [status, answer] of Object.entries(op.responses)) {
        if (Number(status) < 400) continue;
        expect(Object.keys(answer.content ?? {})).toEqual(['application/problem+json']);
        const media = answer.content?.['application/problem+json'];
        expect(media?.schema.allOf).toEqual([{ $ref: '#/components/schemas/Problem' }]);
        const codes = problemCodes(answer);
        expect(codes.length).toBeGreaterThan(0);
        for (const code of codes) {
          expect(Object.keys(ERROR_CODES)).toContain(code);
          expect([code, ERROR_CODES[code as KeygateErrorCode].status]).toEqual([code, Number(status)]);
          expect(media?.examples?.[code]).toEqual({ $ref: `#/components/examples/${code}` });
          seen++;
        }
        expect(Object.keys(media?.examples ?? {})).toEqual(codes);
        expect(answer.headers?.['Cache-Control']).toEqual({ $ref: '#/components/headers/NoStore' });
      }
    }
    expect(seen).toBeGreaterThan(50);
    expect(Object.keys(doc.components.examples).every((code) => code in ERROR_CODES)).toBe(true);
  });

  it("gives every problem example the API's own shape (Problem, and its response's narrowed schema)", () => {
    for (const { op } of operations(doc)) {
      for (const [status, answer] of Object.entries(op.responses)) {
        const media = answer.content?.['application/problem+json'];
        if (!media) continue;
        const validate = compile(media.schema);
        for (const code of problemCodes(answer)) {
          const example = doc.components.examples[code]?.value;
          expect([op.operationId, status, code, validate(example)]).toEqual([op.operationId, status, code, true]);
        }
        // A code of another status is not this response's.
        const foreign = Object.values(doc.components.examples).find((example) => (example.value as { status: number }).status !== Number(status));
        expect(validate(foreign?.value)).toBe(false);
      }
    }
    for (const [code, example] of Object.entries(doc.components.examples)) {
      expectValid('Problem', example.value);
      expect(example.value).toMatchObject({ type: PROBLEM_TYPE_BASE + code, code, status: ERROR_CODES[code as KeygateErrorCode].status, title: ERROR_CODES[code as KeygateErrorCode].title });
    }
    expect(doc.components.examples.invalid_argument?.value).toMatchObject({ field: 'name' });
    const problem = doc.components.schemas.Problem as JsonSchema;
    expect(problem.required).toEqual(['type', 'title', 'status', 'detail', 'code']);
    expect(problem.properties?.code?.enum).toEqual(Object.keys(ERROR_CODES));
    expect(problem.properties?.field).toEqual(expect.objectContaining({ type: 'string' }));
  });

  describe('every problem a route can give', () => {
    const guarded = ADMIN_ROUTES.filter((route) => route.action !== 'describe');

    it.each(guarded.map((route) => [route.operationId, route] as const))('%s', (_name, route: AdminRoute) => {
      const op = operationOf(doc, route.operationId);
      const hasId = route.segments.includes(':id');
      // Authentication: every refusal of the key check, whatever the route.
      expect(problemCodes(response(op, 401))).toEqual(['missing_api_key', 'malformed_api_key', 'invalid_api_key', 'api_key_revoked', 'api_key_expired']);
      expect(problemCodes(response(op, 403))).toEqual(codesOf(403));
      expect(problemCodes(response(op, 403))).toEqual(expect.arrayContaining(['api_key_disabled', 'ip_not_allowed', 'insufficient_scope']));
      expect(problemCodes(response(op, 429))).toEqual(['quota_exceeded', 'rate_limited', 'concurrency_limited', 'too_many_failed_attempts']);
      expect(problemCodes(response(op, 503))).toEqual(['store_unavailable', 'verification_busy']);
      expect(response(op, 401).headers?.['WWW-Authenticate']).toEqual({ $ref: '#/components/headers/BearerChallenge' });
      expect(response(op, 403).headers?.['WWW-Authenticate']).toEqual({ $ref: '#/components/headers/ScopeChallenge' });
      expect(response(op, 429).headers?.['Retry-After']).toEqual({ $ref: '#/components/headers/RetryAfter' });
      expect(response(op, 503).headers?.['Retry-After']).toEqual({ $ref: '#/components/headers/RetryAfter' });
      // What the route reads.
      expect(problemCodes(response(op, 400))).toEqual(['ambiguous_credentials', 'invalid_argument']);
      expect(op.responses['404'] === undefined).toBe(!hasId);
      if (hasId) expect(problemCodes(response(op, 404))).toEqual(['not_found']);
      expect(op.responses['413'] === undefined).toBe(route.body === undefined);
      if (route.body !== undefined) expect(problemCodes(response(op, 413))).toEqual(['payload_too_large']);
      // Every status it declares comes from those codes.
      expect(Object.keys(op.responses).filter((status) => Number(status) >= 400).sort()).toEqual(
        [...new Set(routeErrorCodes(route).map((code) => String(ERROR_CODES[code].status)))].sort(),
      );
    });

    it('GET /openapi.json is public: no key, no refusal', () => {
      const op = operationOf(doc, 'getOpenApiDocument');
      expect(op.security).toEqual([]);
      expect(Object.keys(op.responses)).toEqual(['200']);
    });
  });

  it('declares Bearer and X-API-Key, either one granting the scope, and says which scope the caller needs', () => {
    expect(doc.components.securitySchemes).toEqual({
      bearerAuth: expect.objectContaining({ type: 'http', scheme: 'bearer' }),
      apiKeyHeader: expect.objectContaining({ type: 'apiKey', in: 'header', name: 'X-API-Key' }),
    });
    expect(doc.security).toEqual([{ bearerAuth: [SCOPE] }, { apiKeyHeader: [SCOPE] }]);
    expect(doc.info.description).toContain('`keys:admin`');
    for (const { op } of operations(doc)) {
      if (op.operationId !== 'getOpenApiDocument') {
        expect(op.security).toBeUndefined();
        expect(op.description).toContain('`keys:admin`');
      }
    }
    const other = adminOpenApi({ scope: 'admin:keys:write' });
    expect(other.security).toEqual([{ bearerAuth: ['admin:keys:write'] }, { apiKeyHeader: ['admin:keys:write'] }]);
    expect(JSON.stringify(other)).not.toContain('keys:admin');
  });

  it('takes a title and a version, and refuses options it cannot use', () => {
    expect(doc.info).toMatchObject({ title: 'keygate admin API', version: '1.0.0' });
    expect(adminOpenApi({ scope: SCOPE, title: 'Acme keys', version: '2.3.4' }).info).toMatchObject({ title: 'Acme keys', version: '2.3.4' });
    expect(() => adminOpenApi({ scope: '' })).toThrow(TypeError);
    expect(() => adminOpenApi({ scope: 'keys:*' })).toThrow(/literal scope/);
    expect(() => adminOpenApi({ scope: SCOPE, title: '' })).toThrow(TypeError);
    expect(() => adminOpenApi({ scope: SCOPE, verison: '1' } as never)).toThrow(/did you mean `version`/);
    expect(() => adminOpenApi(undefined as never)).toThrow(TypeError);
  });

  it('is what keys.openapi() returns: with the audit routes exactly when the instance keeps an audit trail', async () => {
    const audited = track(keygate({ store: new MemoryStore(), hashing: 'sha256', audit: true }));
    expect(audited.openapi()).toEqual(doc);
    expect(audited.openapi({ scope: 'ops:keys' })).toEqual(adminOpenApi({ scope: 'ops:keys', audit: true }));
    const plain = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    const without = plain.openapi();
    expect(without).toEqual(adminOpenApi({ scope: SCOPE }));
    expect(Object.keys(without.paths).sort()).toEqual(['/', '/openapi.json', '/{id}', '/{id}/revoke', '/{id}/rotate']);
    expect(Object.keys(doc.paths).sort()).toEqual(['/', '/audit', '/openapi.json', '/{id}', '/{id}/audit', '/{id}/revoke', '/{id}/rotate']);
  });

  it('builds fresh objects each time: changing one document changes no other', () => {
    const first = adminOpenApi({ scope: SCOPE, audit: true });
    (first.components.schemas.ApiKey as JsonSchema).properties = {};
    first.paths['/']!.get!.summary = 'changed';
    first.paths['/']!.get!.parameters!.find((parameter) => parameter.name === 'status')!.schema.enum!.push('changed');
    first.paths['/{id}']!.get!.parameters![0]!.schema.maxLength = 1;
    first.security[0]!.bearerAuth!.push('changed');
    expect(adminOpenApi({ scope: SCOPE, audit: true })).toEqual(doc);
  });
});

describe('buildOpenApi(): the document follows the route table', () => {
  const suspend: AdminRoute = {
    operationId: 'suspendApiKey',
    method: 'POST',
    segments: [':id', 'suspend'],
    action: 'update',
    summary: 'Suspend a key',
    body: 'Empty',
    status: 200,
    result: 'ApiKey',
  };

  it('documents a route added to a copy of the table, with its path parameter, body and answers', async () => {
    const extended = buildOpenApi([...ADMIN_ROUTES, suspend], { scope: SCOPE });
    await expect(SwaggerParser.validate(structuredClone(extended) as never)).resolves.toBeDefined();
    expect(operations(extended)).toHaveLength(ADMIN_ROUTES.length + 1);
    const op = extended.paths['/{id}/suspend']?.post;
    expect(op).toMatchObject({ operationId: 'suspendApiKey', summary: 'Suspend a key', 'x-keygate-action': 'update' });
    expect(op?.parameters).toEqual([expect.objectContaining({ name: 'id', in: 'path', required: true })]);
    expect(op?.requestBody).toMatchObject({ required: false, content: { 'application/json': { schema: { $ref: '#/components/schemas/Empty' } } } });
    expect(Object.keys(op?.responses ?? {})).toEqual(['200', '400', '401', '403', '404', '413', '429', '500', '503']);
    // The rest of the document is unchanged.
    const { ['/{id}/suspend']: _added, ...rest } = extended.paths;
    expect(rest).toEqual(doc.paths);
  });

  it('documents a smaller table with only its routes, and an empty one with none', () => {
    const only = buildOpenApi(ADMIN_ROUTES.filter((route) => route.action === 'get'), { scope: SCOPE });
    expect(operations(only).map(({ op }) => op.operationId)).toEqual(['getApiKey']);
    expect(buildOpenApi([], { scope: SCOPE }).paths).toEqual({});
  });

  it('maps any :name segment to a {name} parameter', () => {
    const nested: AdminRoute = { ...suspend, operationId: 'x', method: 'GET', segments: [':id', 'grants', ':grant'], body: undefined };
    expect(openApiPath(nested)).toBe('/{id}/grants/{grant}');
    const op = buildOpenApi([nested], { scope: SCOPE }).paths['/{id}/grants/{grant}']?.get;
    expect(op?.parameters?.map((parameter) => [parameter.name, parameter.in, parameter.required])).toEqual([
      ['id', 'path', true],
      ['grant', 'path', true],
    ]);
  });

  it('refuses a table with two routes for one method and path, or two routes of one operationId', () => {
    expect(() => buildOpenApi([...ADMIN_ROUTES, { ...suspend, segments: [':id'], method: 'GET' }], { scope: SCOPE })).toThrow(/two routes for GET \/\{id\}/);
    expect(() => buildOpenApi([...ADMIN_ROUTES, { ...suspend, operationId: 'getApiKey' }], { scope: SCOPE })).toThrow(/two routes named getApiKey/);
  });
});

describe('the schemas', () => {
  it('compile as strict JSON Schema 2020-12, as do the bodies and parameters of every operation', () => {
    for (const name of Object.keys(doc.components.schemas)) expect(() => schemas(name)).not.toThrow();
    for (const { op } of operations(doc)) {
      for (const parameter of op.parameters ?? []) expect(() => compile(parameter.schema)).not.toThrow();
      for (const answer of Object.values(op.responses)) {
        for (const media of Object.values(answer.content ?? {})) expect(() => compile(media.schema)).not.toThrow();
      }
    }
    for (const header of Object.values(doc.components.headers)) expect(() => compile(header.schema)).not.toThrow();
    expect(Object.keys(doc.components.schemas).sort()).toEqual(
      ['Alerts', 'ApiKey', 'ApiKeyPage', 'AuditPage', 'CreateApiKeyInput', 'CreatedApiKey', 'Empty', 'OpenApiDocument', 'Problem', 'RateLimit', 'RotateApiKeyInput', 'UpdateApiKeyInput'].sort(),
    );
  });

  it('ApiKey: every record field but keyHash, plus isActive and isTestKey; required unless optional text', () => {
    const apiKey = doc.components.schemas.ApiKey as JsonSchema;
    const fields = Object.keys(RECORD_SCHEMA).filter((field) => field !== 'keyHash');
    expect(Object.keys(apiKey.properties ?? {})).toEqual([...fields, 'isActive', 'isTestKey']);
    const optional = fields.filter((field) => RECORD_SCHEMA[field as keyof typeof RECORD_SCHEMA].kind === 'optionalText');
    expect(optional).toEqual(['description', 'ownerId', 'tenantId', 'environment', 'rotatedFromId']);
    expect(apiKey.required).toEqual([...fields.filter((field) => !optional.includes(field)), 'isActive', 'isTestKey']);
    const properties = apiKey.properties ?? {};
    expect(properties.status).toMatchObject({ enum: ['active', 'suspended', 'revoked'] });
    expect(properties.rateLimit).toEqual(expect.objectContaining({ anyOf: [{ $ref: '#/components/schemas/RateLimit' }, { type: 'null' }] }));
    expect(properties.useCount).toMatchObject({ type: 'integer', minimum: 0 });
    expect(properties.maxUses).toMatchObject({ type: ['integer', 'null'] });
    expect(properties.createdAt).toMatchObject({ type: 'string', format: 'date-time' });
    expect(properties.deletedAt).toMatchObject({ type: ['string', 'null'], format: 'date-time' });
    expect(properties.scopes).toMatchObject({ type: 'array', items: { type: 'string' } });
    expect(properties.metadata).toMatchObject({ type: 'object' });
    expect(properties.requireHttps).toMatchObject({ type: 'boolean' });
    expect(properties.id).toMatchObject({ type: 'string', minLength: 1 });
    expect(properties.description).toMatchObject({ type: 'string' });
  });

  it('CreateApiKeyInput and UpdateApiKeyInput: the create and settings fields of the record schema, closed, only name required', () => {
    const create = doc.components.schemas.CreateApiKeyInput as JsonSchema;
    const update = doc.components.schemas.UpdateApiKeyInput as JsonSchema;
    expect(Object.keys(create.properties ?? {})).toEqual([...CREATE_FIELDS]);
    expect(create).toMatchObject({ required: ['name'], additionalProperties: false });
    expect(Object.keys(update.properties ?? {})).toEqual([...SETTINGS_FIELDS]);
    expect(update.required).toBeUndefined();
    expect(update.additionalProperties).toBe(false);
    expect(create.properties?.name).toMatchObject({ maxLength: 200 });
    expect(create.properties?.description).toMatchObject({ maxLength: 2000 });
    expect(create.properties?.maxConcurrent).toMatchObject({ minimum: 1, maximum: 1000 });
    expect(update.properties?.description).toMatchObject({ type: ['string', 'null'] });
    expect(doc.components.schemas.RateLimit).toMatchObject({ additionalProperties: false, dependentRequired: { burst: ['perSecond'] } });
  });

  describe('describe what the API really sends', () => {
    it('a created key, a full one, a rotated one, a revoked and a deleted one, and pages of keys', async () => {
      const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
      const minimal = await keys.create({ name: 'minimal' });
      expectValid('CreatedApiKey', wire(minimal));
      expectValid('ApiKey', wire(minimal.apiKey));

      const full = await keys.create({
        name: 'full',
        description: 'every field',
        ownerId: 'user-1',
        tenantId: 'acme',
        environment: 'test',
        scopes: ['billing:*', 'leads:read'],
        allowedIps: ['10.0.0.0/8', '::1'],
        maxUses: 10,
        rateLimit: { perSecond: 5, burst: 10, perMinute: 100, perHour: 1000, perDay: 10_000, perMonth: 100_000 },
        expiresAt: '2099-01-01T00:00:00Z',
        metadata: { plan: 'pro', nested: { list: [1, 'two', null] } },
        tags: ['ci'],
        allowedOrigins: ['https://app.example.com'],
        requireHttps: true,
        clientCertificateSha256: ['ab'.repeat(32)],
        maxConcurrent: 3,
      });
      expectValid('CreatedApiKey', wire(full));
      expect(full.apiKey.isTestKey).toBe(true);

      const rotated = await keys.rotate(full.apiKey.id, { gracePeriodMs: 60_000 });
      expectValid('CreatedApiKey', wire(rotated));
      expect(rotated.apiKey.rotatedFromId).toBe(full.apiKey.id);
      expectValid('ApiKey', wire(await keys.get(full.apiKey.id)));

      expectValid('ApiKey', wire(await keys.revoke(minimal.apiKey.id)));
      const doomed = await keys.create({ name: 'doomed' });
      expectValid('ApiKey', wire(await keys.delete(doomed.apiKey.id)));
      expectValid('ApiKey', wire(await keys.update(rotated.apiKey.id, { description: null, rateLimit: null, status: 'suspended' })));

      const first = await keys.list({ limit: 1, includeDeleted: true });
      expect(first.nextCursor).toEqual(expect.any(String));
      expectValid('ApiKeyPage', wire(first));
      expectValid('ApiKeyPage', wire(await keys.list({ includeDeleted: true })));
      expectValid('ApiKeyPage', wire(await keys.list({ ownerId: 'nobody' })));

      // The schema names every field the view has (it stays open to fields added later).
      for (const view of (await keys.list({ includeDeleted: true })).items) {
        expect(Object.keys(doc.components.schemas.ApiKey?.properties ?? {})).toEqual(expect.arrayContaining(Object.keys(wire(view) as object)));
      }
      expectValid('OpenApiDocument', wire(doc));
    });

    it('and refuse what it does not: a view missing a field or with a value of the wrong kind', async () => {
      const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
      const created = wire(await keys.create({ name: 'probe' })) as { key: string; apiKey: Record<string, unknown> };
      const view = created.apiKey;
      expectValid('ApiKey', view);
      const { isActive: _isActive, ...withoutIsActive } = view;
      for (const wrong of [withoutIsActive, { ...view, useCount: -1 }, { ...view, status: 'deleted' }, { ...view, createdAt: 'yesterday' }, { ...view, rateLimit: { perSecond: 0 } }, { ...view, scopes: 'a' }]) {
        expect(schemas('ApiKey')(wrong)).toBe(false);
      }
      expect(schemas('CreatedApiKey')({ key: created.key })).toBe(false);
      expect(schemas('CreatedApiKey')({ apiKey: view })).toBe(false);
      expect(schemas('ApiKeyPage')({ items: [{}] })).toBe(false);
      expect(schemas('ApiKeyPage')({ items: [view], nextCursor: '' })).toBe(false);
    });
  });

  describe("agree with the manager's own validation", () => {
    const name = 'a key';
    const valid: Record<string, unknown>[] = [
      { name },
      { name, description: 'd'.repeat(2000), ownerId: 'o', tenantId: 't', environment: 'live' },
      { name, scopes: ['billing:*', '*', 'a:*:b', 'leads:read'] },
      { name, allowedIps: ['10.0.0.0/8'], allowedOrigins: ['https://*.example.com'] },
      { name, maxUses: 0 },
      { name, maxUses: null, rateLimit: null, expiresAt: null, maxConcurrent: null },
      { name, rateLimit: {} },
      { name, rateLimit: { perSecond: 1, burst: 2, perMonth: 9 } },
      { name, expiresAt: '2027-01-01T00:00:00Z' },
      { name, expiresAt: '2027-01-01T00:00:00.123+02:00' },
      { name, expiresAt: '2027-01-01' },
      { name, expiresAt: 1_893_456_000_000 },
      { name, metadata: { a: [1, { b: null }] }, tags: ['x', 'y'] },
      { name, status: 'suspended', requireHttps: true },
      { name, clientCertificateSha256: ['AB:'.repeat(31) + 'AB', 'cd'.repeat(32)] },
      { name, maxConcurrent: 1 },
      { name, maxConcurrent: 1000 },
    ];
    const invalid: Record<string, unknown>[] = [
      {},
      { name: '' },
      { name: '   ' },
      { name: 'n'.repeat(201) },
      { name: 42 },
      { name, description: 'd'.repeat(2001) },
      { name, ownerId: '' },
      { name, colour: 'blue' },
      { name, keyHash: 'x' },
      { name, id: 'chosen' },
      { name, scopes: ['a b'] },
      { name, scopes: ['a*'] },
      { name, scopes: ['a::b'] },
      { name, scopes: 'a' },
      { name, tags: [''] },
      { name, tags: ['t'.repeat(201)] },
      { name, status: 'deleted' },
      { name, maxUses: -1 },
      { name, maxUses: 1.5 },
      { name, rateLimit: { perSecond: 0 } },
      { name, rateLimit: { burst: 5 } },
      { name, rateLimit: { perWeek: 1 } },
      { name, expiresAt: 'tomorrow' },
      { name, expiresAt: '2027-02-30' },
      { name, expiresAt: '2027-01-01T00:00:00' },
      { name, expiresAt: true },
      { name, metadata: [] },
      { name, metadata: 'x' },
      { name, requireHttps: 'yes' },
      { name, clientCertificateSha256: ['abc'] },
      { name, maxConcurrent: 0 },
      { name, maxConcurrent: 1001 },
    ];
    const accepts = (validate: (value: unknown) => unknown, value: unknown): boolean => {
      try {
        validate(value);
        return true;
      } catch {
        return false;
      }
    };

    it.each(valid.map((input) => [JSON.stringify(input).slice(0, 90), input] as const))('create accepts %s', (_label, input) => {
      expect(accepts(validateCreate, input)).toBe(true);
      expectValid('CreateApiKeyInput', input);
    });

    it.each(invalid.map((input) => [JSON.stringify(input).slice(0, 90), input] as const))('create refuses %s', (_label, input) => {
      expect(accepts(validateCreate, input)).toBe(false);
      expect(schemas('CreateApiKeyInput')(input)).toBe(false);
    });

    it('update: settings only, every one optional, null clears a nullable one', () => {
      const cases: [Record<string, unknown>, boolean][] = [
        [{}, true],
        [{ description: null }, true],
        [{ maxConcurrent: null, maxUses: null, rateLimit: null, expiresAt: null }, true],
        [{ name: 'renamed', scopes: ['x:*'], status: 'active' }, true],
        [{ name: null }, false],
        [{ status: null }, false],
        [{ ownerId: 'moved' }, false],
        [{ tenantId: 'moved' }, false],
        [{ environment: 'live' }, false],
        [{ maxConcurrent: 0 }, false],
        [{ useCount: 0 }, false],
      ];
      for (const [patch, ok] of cases) {
        expect([patch, accepts(validateUpdate, patch)]).toEqual([patch, ok]);
        expect([patch, schemas('UpdateApiKeyInput')(patch)]).toEqual([patch, ok]);
      }
    });

    it('rotate takes only gracePeriodMs, a non-negative integer; Empty takes nothing', () => {
      expect(schemas('RotateApiKeyInput')({})).toBe(true);
      expect(schemas('RotateApiKeyInput')({ gracePeriodMs: 0 })).toBe(true);
      expect(schemas('RotateApiKeyInput')({ gracePeriodMs: 86_400_000 })).toBe(true);
      expect(schemas('RotateApiKeyInput')({ gracePeriodMs: -1 })).toBe(false);
      expect(schemas('RotateApiKeyInput')({ gracePeriodMs: 1.5 })).toBe(false);
      expect(schemas('RotateApiKeyInput')({ grace: 1 })).toBe(false);
      expect(schemas('Empty')({})).toBe(true);
      expect(schemas('Empty')({ reason: 'x' })).toBe(false);
    });
  });
});
