/**
 * The one description of an {@link ApiKeyRecord}: every field, what kind of value it holds, the SQL
 * column it lives in, who sets it and what a new record starts with. Everything that handles whole
 * records is derived from this table: the manager's input validation (`manager/validate.ts`), the
 * decoder every stored record goes through (`record/decode.ts`), the Memory and Redis encodings,
 * the SQL columns, DDL and migrations, and the record factory of the contract suite.
 *
 * The table is typed against `keyof ApiKeyRecord`, and each field's kind against the field's type,
 * so the compiler rejects a field that is missing, extra, or of the wrong kind. Adding a field is a
 * change here (plus its validator in `manager/validate.ts` when callers set it, which the compiler
 * also asks for), and then its behaviour.
 */
import type { ApiKeyRecord, ApiKeyStatus, RateLimit } from '../types.js';

/**
 * What a field holds, independent of any store:
 * - `text` a non-empty string; `optionalText` a string, or absent;
 * - `status` one of {@link API_KEY_STATUSES};
 * - `list` an array of strings; `json` a plain JSON object;
 * - `rateLimit` a {@link RateLimit} or `null`;
 * - `count` a non-negative safe integer; `nullableCount` the same or `null`;
 * - `instant` a Date; `nullableInstant` a Date or `null`.
 */
export type FieldKind =
  | 'text'
  | 'optionalText'
  | 'status'
  | 'list'
  | 'json'
  | 'rateLimit'
  | 'count'
  | 'nullableCount'
  | 'instant'
  | 'nullableInstant';

/** The kinds a field of type `V` may have (brackets stop the union from distributing). */
export type KindFor<V> = [V] extends [ApiKeyStatus]
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
export const RATE_LIMIT_FIELDS = ['perSecond', 'burst', 'perDay'] as const satisfies readonly (keyof RateLimit)[];

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

/** Every field with its spec, in table order. */
export const RECORD_FIELDS: readonly { readonly field: RecordField; readonly spec: FieldSpec }[] = Object.entries(RECORD_SCHEMA).map(
  ([field, spec]) => ({ field: field as RecordField, spec }),
);

function fieldsWhere(test: (spec: FieldSpec) => boolean): readonly RecordField[] {
  return RECORD_FIELDS.filter((entry) => test(entry.spec)).map((entry) => entry.field);
}

/** Fields `create()` accepts. */
export const CREATE_FIELDS = fieldsWhere((spec) => spec.source !== 'system') as readonly CreateField[];

/** Fields `update()` accepts. */
export const SETTINGS_FIELDS = fieldsWhere((spec) => spec.source === 'settings') as readonly SettingsField[];

/** Fields holding an instant (a Date, or `null` where nullable). */
export const INSTANT_FIELDS = fieldsWhere((spec) => spec.kind === 'instant' || spec.kind === 'nullableInstant');

/** Fields that may be absent from a record (never present as `undefined`). */
export const OPTIONAL_FIELDS = fieldsWhere((spec) => spec.kind === 'optionalText');

/**
 * Fields a store's `update` may change (`ApiKeyPatch`): the settings, plus `revokedAt` (set by
 * revocation and rotation) and `updatedAt`, in a fixed order so that one patch shape always builds
 * one statement.
 */
export const PATCHABLE_FIELDS: readonly RecordField[] = [...SETTINGS_FIELDS, 'revokedAt', 'updatedAt'];

/** The values a new record starts with for every field that has an `initial`, fresh on every call. */
export function initialValues(): Partial<ApiKeyRecord> {
  const values: Record<string, unknown> = {};
  for (const { field, spec } of RECORD_FIELDS) if (spec.initial) values[field] = spec.initial();
  return values as Partial<ApiKeyRecord>;
}
