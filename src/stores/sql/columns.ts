/**
 * How each field of an {@link ApiKeyRecord} maps to a column, and the counter columns that only
 * the store uses. Both dialects, the schema, the row decoder and the patch builder read this one
 * table, so a field cannot be forgotten in one of them.
 */
import type { ApiKeyRecord } from '../../types.js';

/**
 * How a field is stored:
 * - `text`: a required string; `optionalText`: a string, or NULL for an absent optional field;
 * - `list`: an array of strings; `json`: a JSON object; `rateLimit`: a JSON object or NULL;
 * - `count` / `nullableCount`: a safe integer (or NULL); `instant` / `nullableInstant`: a Date (or NULL).
 */
export type ColumnKind = 'text' | 'optionalText' | 'list' | 'json' | 'rateLimit' | 'count' | 'nullableCount' | 'instant' | 'nullableInstant';

/** One record field and its column. */
export interface Column {
  readonly field: keyof ApiKeyRecord;
  readonly name: string;
  readonly kind: ColumnKind;
}

/** Every record field, in table order. */
export const RECORD_COLUMNS: readonly Column[] = [
  { field: 'id', name: 'id', kind: 'text' },
  { field: 'keyPrefix', name: 'key_prefix', kind: 'text' },
  { field: 'keyHash', name: 'key_hash', kind: 'text' },
  { field: 'name', name: 'name', kind: 'text' },
  { field: 'description', name: 'description', kind: 'optionalText' },
  { field: 'ownerId', name: 'owner_id', kind: 'optionalText' },
  { field: 'tenantId', name: 'tenant_id', kind: 'optionalText' },
  { field: 'environment', name: 'environment', kind: 'optionalText' },
  { field: 'status', name: 'status', kind: 'text' },
  { field: 'scopes', name: 'scopes', kind: 'list' },
  { field: 'allowedIps', name: 'allowed_ips', kind: 'list' },
  { field: 'maxUses', name: 'max_uses', kind: 'nullableCount' },
  { field: 'useCount', name: 'use_count', kind: 'count' },
  { field: 'rateLimit', name: 'rate_limit', kind: 'rateLimit' },
  { field: 'expiresAt', name: 'expires_at', kind: 'nullableInstant' },
  { field: 'createdAt', name: 'created_at', kind: 'instant' },
  { field: 'updatedAt', name: 'updated_at', kind: 'instant' },
  { field: 'lastUsedAt', name: 'last_used_at', kind: 'nullableInstant' },
  { field: 'revokedAt', name: 'revoked_at', kind: 'nullableInstant' },
  { field: 'rotatedFromId', name: 'rotated_from_id', kind: 'optionalText' },
  { field: 'metadata', name: 'metadata', kind: 'json' },
  { field: 'tags', name: 'tags', kind: 'list' },
];

/** The column of a record field. */
export function columnOf(field: keyof ApiKeyRecord): Column {
  const column = RECORD_COLUMNS.find((candidate) => candidate.field === field);
  if (!column) throw new Error(`keygate: no column for field ${String(field)}`);
  return column;
}

/**
 * Fields `update` may change (the fields of `ApiKeyPatch`), in a fixed order so that the same
 * patch shape always builds the same statement.
 */
export const PATCHABLE_FIELDS = [
  'name',
  'description',
  'scopes',
  'allowedIps',
  'maxUses',
  'rateLimit',
  'expiresAt',
  'metadata',
  'tags',
  'status',
  'revokedAt',
  'updatedAt',
] as const satisfies readonly (keyof ApiKeyRecord)[];

/**
 * The counter columns beside `use_count`, mirroring `CounterState` of `policy/limits`: the UTC day
 * index `day` with its `day_count`, and the token bucket level `tokens` (NULL = never drawn from,
 * hence full) at `tokens_at`, the latest admitted instant in epoch milliseconds.
 */
export const COUNTER_COLUMNS = ['day', 'day_count', 'tokens', 'tokens_at'] as const;
