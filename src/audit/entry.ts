/**
 * The audit trail's vocabulary: one entry per management event (a key created, updated, revoked,
 * rotated, deleted, or keys purged), with who did it and what changed. Entries are written
 * through the key store (optional capability `audit`) and read back by `keys.auditLog()`.
 */

/** The management events the audit trail records: the `key.*` event names. */
export const AUDIT_ACTIONS = ['key.created', 'key.updated', 'key.revoked', 'key.rotated', 'key.deleted', 'key.purged'] as const;

/** One of {@link AUDIT_ACTIONS}. */
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

/**
 * Who made a change: the calling key of the admin API (`id` and `keyPrefix`), or whatever the
 * application passes to a manager write as `{ actor }` (a user id, a service name).
 */
export interface Actor {
  /** A non-empty identifier of at most 256 characters. */
  id: string;
  /** The keyPrefix of the key that made the call, when a key did. */
  keyPrefix?: string;
}

/**
 * One entry of the audit trail. Never holds a secret or a hash: `changes` carries the fields a
 * caller set and their new values, which are settings (scopes, limits, expiry, …), never `keyHash`.
 */
export interface AuditEntry {
  /** A UUID, unique across processes. */
  id: string;
  /** When the change was made (keygate's clock). */
  at: Date;
  action: AuditAction;
  /** The key concerned; `null` for `key.purged`, which concerns many. */
  keyId: string | null;
  /** Who made the change; `null` when the caller did not say. */
  actor: Actor | null;
  /** The tenant of the key concerned, so a tenant's admin reads only its tenant's entries. */
  tenantId?: string;
  /** The environment of the key concerned, for the same reason. */
  environment?: string;
  /**
   * What changed, as a plain JSON object: for `key.created` the settings the key was created
   * with, for `key.updated` the fields of the patch with their new values, for `key.revoked` and
   * `key.deleted` the status (and `deletedAt`), for `key.rotated` `{ replacementId, gracePeriodMs }`,
   * for `key.purged` `{ removed, deletedBefore }`. Instants are ISO 8601 strings.
   */
  changes: Record<string, unknown>;
}

/** Filters and keyset position of one `listAudit` call. Entries come ordered by (at, id) ascending. */
export interface StoreAuditQuery {
  /** Only entries about this key. */
  keyId?: string;
  /** Only entries made by this actor id. */
  actorId?: string;
  /** Only entries about keys of this tenant. */
  tenantId?: string;
  /** Only entries about keys of this environment. */
  environment?: string;
  /** Only entries at or after this instant. */
  from?: Date;
  /** Only entries strictly before this instant. */
  to?: Date;
  /** Only entries strictly after this position in (at, id) order. */
  after?: { at: Date; id: string };
  /** Maximum number of entries to return (the store may return fewer only at the end). */
  limit: number;
}
