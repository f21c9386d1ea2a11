/**
 * The one description of an {@link ApiKeyRecord}: every field, what kind of value it holds, the SQL
 * column it lives in, who sets it and what a new record starts with. Everything that handles whole
 * records is derived from this table: the manager's input validation (`manager/validate.ts`), the
 * decoder every stored record goes through (`record/decode.ts`), the Memory and Redis encodings,
 * the SQL columns, DDL and migrations, and the record factory of the contract suite.
 *
 * The table is typed against `keyof ApiKeyRecord`, and each field's kind against the field's type,
 * so the compiler rejects a field that is missing, extra, or of the wrong kind. Adding a field is a
 * change here, and then its behaviour: callers' values are validated by the field's kind (a
 * stricter rule, such as the scope grammar, is one entry in `manager/validate.ts`), and every store
 * keeps it (SQL stores add its column on `migrate()`). `test/record/schema-extension.test.ts`
 * proves this with a field that exists only in that test.
 */
import type { ApiKeyAlerts, ApiKeyRecord, ApiKeyStatus, RateLimit } from '../types.js';

/**
 * What a field holds, independent of any store:
 * - `text` a non-empty string; `optionalText` a string, or absent;
 * - `status` one of {@link API_KEY_STATUSES};
 * - `list` an array of strings; `json` a plain JSON object;
 * - `rateLimit` a {@link RateLimit} or `null`; `alerts` an {@link ApiKeyAlerts} or `null`;
 * - `count` a non-negative safe integer; `nullableCount` the same or `null`;
 * - `instant` a Date; `nullableInstant` a Date or `null`;
 * - `boolean` `true` or `false`.
 */
export type FieldKind =
  | 'text'
  | 'optionalText'
  | 'status'
  | 'list'
  | 'json'
  | 'rateLimit'
  | 'alerts'
  | 'count'
  | 'nullableCount'
  | 'instant'
  | 'nullableInstant'
  | 'boolean';

/** The kinds a field of type `V` may have (brackets stop the union from distributing). */
export type KindFor<V> = [V] extends [boolean]
  ? 'boolean'
  : [V] extends [ApiKeyStatus]
  ? 'status'
  : [V] extends [string]
    ? 'text'
    : [V] extends [string | undefined]
      ? 'optionalText'
      : [V] extends [string[]]
        ? 'list'
        : [V] extends [number]
          ? 'count'
          : [V] extends [number | null]
            ? 'nullableCount'
            : [V] extends [Date]
              ? 'instant'
              : [V] extends [Date | null]
                ? 'nullableInstant'
                : [V] extends [Record<string, unknown>]
                  ? 'json'
                  : [V] extends [RateLimit | null]
                    ? 'rateLimit'
                    : [V] extends [ApiKeyAlerts | null]
                      ? 'alerts'
                      : never;

/**
 * Who sets a field:
 * - `create`: the caller of `create()`, once (an owner cannot be moved by `update`);
 * - `settings`: the caller of `create()` and of `update()`;
 * - `system`: keygate (ids, hashes, timestamps) or the store's counting (`useCount`, `lastUsedAt`).
 */
export type FieldSource = 'create' | 'settings' | 'system';

/** One field of the record. */
export interface FieldSpec<K extends FieldKind = FieldKind> {
  readonly kind: K;
  /** Column name in SQL stores (snake_case). */
  readonly column: string;
  readonly source: FieldSource;
  /**
   * What a new record holds when the caller gives nothing (a fresh value on every call).
   * Absent for fields every new record must be given (and for optional fields, which stay absent).
   */
  readonly initial?: () => unknown;
  /**
   * The version of the record schema that introduced the field. Fields after the first are added
   * to existing SQL tables by `migrate()` (`ALTER TABLE … ADD COLUMN`), so they must be nullable
   * or start with an `initial` value.
   */
  readonly since?: number;
}

/** The schema's shape: exactly the fields of `ApiKeyRecord`, each with a kind its type allows. */
export type RecordSchema = { readonly [F in keyof ApiKeyRecord]-?: FieldSpec<KindFor<ApiKeyRecord[F]>> };

/** Every valid {@link ApiKeyStatus}, for validation. */
export const API_KEY_STATUSES: readonly ApiKeyStatus[] = ['active', 'suspended', 'revoked'];

/** The fields of a {@link RateLimit}, each a positive integer when present. */
export const RATE_LIMIT_FIELDS = ['perSecond', 'burst', 'perMinute', 'perHour', 'perDay', 'perMonth'] as const satisfies readonly (keyof RateLimit)[];

/** The fields of an {@link ApiKeyAlerts}. */
export const ALERT_FIELDS = ['quotaThreshold', 'errorRateThreshold', 'webhookUrl'] as const satisfies readonly (keyof ApiKeyAlerts)[];

const emptyList = (): string[] => [];
const none = (): null => null;

/** The record, field by field, in SQL table order. */
export const RECORD_SCHEMA = {
  id: { kind: 'text', column: 'id', source: 'system' },
  keyPrefix: { kind: 'text', column: 'key_prefix', source: 'system' },
  keyHash: { kind: 'text', column: 'key_hash', source: 'system' },
  name: { kind: 'text', column: 'name', source: 'settings' },
  description: { kind: 'optionalText', column: 'description', source: 'settings' },
  ownerId: { kind: 'optionalText', column: 'owner_id', source: 'create' },
  tenantId: { kind: 'optionalText', column: 'tenant_id', source: 'create' },
  environment: { kind: 'optionalText', column: 'environment', source: 'create' },
  status: { kind: 'status', column: 'status', source: 'settings', initial: (): ApiKeyStatus => 'active' },
  scopes: { kind: 'list', column: 'scopes', source: 'settings', initial: emptyList },
  allowedIps: { kind: 'list', column: 'allowed_ips', source: 'settings', initial: emptyList },
  maxUses: { kind: 'nullableCount', column: 'max_uses', source: 'settings', initial: none },
  useCount: { kind: 'count', column: 'use_count', source: 'system', initial: () => 0 },
  rateLimit: { kind: 'rateLimit', column: 'rate_limit', source: 'settings', initial: none },
  expiresAt: { kind: 'nullableInstant', column: 'expires_at', source: 'settings', initial: none },
  createdAt: { kind: 'instant', column: 'created_at', source: 'system' },
  updatedAt: { kind: 'instant', column: 'updated_at', source: 'system' },
  lastUsedAt: { kind: 'nullableInstant', column: 'last_used_at', source: 'system', initial: none },
  revokedAt: { kind: 'nullableInstant', column: 'revoked_at', source: 'system', initial: none },
  rotatedFromId: { kind: 'optionalText', column: 'rotated_from_id', source: 'system' },
  metadata: { kind: 'json', column: 'metadata', source: 'settings', initial: () => ({}) },
  tags: { kind: 'list', column: 'tags', source: 'settings', initial: emptyList },
  allowedOrigins: { kind: 'list', column: 'allowed_origins', source: 'settings', initial: emptyList, since: 2 },
  requireHttps: { kind: 'boolean', column: 'require_https', source: 'settings', initial: () => false, since: 2 },
  clientCertificateSha256: { kind: 'list', column: 'client_certificate_sha256', source: 'settings', initial: emptyList, since: 2 },
  maxConcurrent: { kind: 'nullableCount', column: 'max_concurrent', source: 'settings', initial: none, since: 2 },
  deletedAt: { kind: 'nullableInstant', column: 'deleted_at', source: 'system', initial: none, since: 3 },
  rotationFrequencyDays: { kind: 'nullableCount', column: 'rotation_frequency_days', source: 'settings', initial: none, since: 4 },
  alerts: { kind: 'alerts', column: 'alerts', source: 'settings', initial: none, since: 4 },
} as const satisfies RecordSchema;

/** A record field name. */
export type RecordField = keyof ApiKeyRecord;

/** Fields a caller may set at `create()`. */
export type CreateField = {
  [F in RecordField]: (typeof RECORD_SCHEMA)[F]['source'] extends 'create' | 'settings' ? F : never;
}[RecordField];

/** Fields a caller may change with `update()`. */
export type SettingsField = {
  [F in RecordField]: (typeof RECORD_SCHEMA)[F]['source'] extends 'settings' ? F : never;
}[RecordField];

/** One field of a schema with its spec. */
export interface SchemaField {
  readonly field: RecordField;
  readonly spec: FieldSpec;
}

/** The field lists every consumer of the schema reads, derived from one schema table. */
export interface DerivedSchema {
  /** Every field with its spec, in table order. */
  readonly RECORD_FIELDS: readonly SchemaField[];
  /** Fields `create()` accepts. */
  readonly CREATE_FIELDS: readonly CreateField[];
  /** Fields `update()` accepts. */
  readonly SETTINGS_FIELDS: readonly SettingsField[];
  /** Fields holding an instant (a Date, or `null` where nullable). */
  readonly INSTANT_FIELDS: readonly RecordField[];
  /** Fields that may be absent from a record (never present as `undefined`). */
  readonly OPTIONAL_FIELDS: readonly RecordField[];
  /**
   * Fields a store's `update` may change (`ApiKeyPatch`): the settings, plus `revokedAt` (set by
   * revocation and rotation), `deletedAt` (set by `delete`) and `updatedAt`, in a fixed order so that one patch shape always
   * builds one statement.
   */
  readonly PATCHABLE_FIELDS: readonly RecordField[];
  /** The values a new record starts with for every field that has an `initial`, fresh on every call. */
  readonly initialValues: () => Partial<ApiKeyRecord>;
}

/**
 * Derives the field lists from a schema table. Exported so that a test can derive them for a
 * schema with an extra field and prove every consumer follows.
 */
export function deriveSchema(schema: Readonly<Record<string, FieldSpec>>): DerivedSchema {
  const fields: SchemaField[] = Object.entries(schema).map(([field, spec]) => ({ field: field as RecordField, spec }));
  const where = (test: (spec: FieldSpec) => boolean): RecordField[] => fields.filter((entry) => test(entry.spec)).map((entry) => entry.field);
  const settings = where((spec) => spec.source === 'settings') as SettingsField[];
  return {
    RECORD_FIELDS: fields,
    CREATE_FIELDS: where((spec) => spec.source !== 'system') as CreateField[],
    SETTINGS_FIELDS: settings,
    INSTANT_FIELDS: where((spec) => spec.kind === 'instant' || spec.kind === 'nullableInstant'),
    OPTIONAL_FIELDS: where((spec) => spec.kind === 'optionalText'),
    PATCHABLE_FIELDS: [...settings, 'revokedAt', 'deletedAt', 'updatedAt'],
    initialValues: () => {
      const values: Record<string, unknown> = {};
      for (const { field, spec } of fields) if (spec.initial) values[field] = spec.initial();
      return values as Partial<ApiKeyRecord>;
    },
  };
}

export const { RECORD_FIELDS, CREATE_FIELDS, SETTINGS_FIELDS, INSTANT_FIELDS, OPTIONAL_FIELDS, PATCHABLE_FIELDS, initialValues } =
  deriveSchema(RECORD_SCHEMA);
