/**
 * The contract between keygate and a place that keeps keys. Stores do I/O and atomic counting
 * only: every decision about status, expiry, IPs and scopes is made before a store is called, and
 * every timestamp comes from the caller (`now`), never from the store's own clock.
 *
 * Prove an implementation with `describeStoreContract` from `keygate/testing`.
 */
import type { ApiKeyRecord, ApiKeyStatus, RateLimit, UpdateApiKeyInput } from '../types.js';

/**
 * Changes `update` may apply to a record. `undefined` leaves a field as it is; `null` clears a
 * nullable one (and removes `description`).
 */
export interface ApiKeyPatch extends Omit<UpdateApiKeyInput, 'expiresAt'> {
  /** Always a Date here: the manager has parsed the caller's input. */
  expiresAt?: Date | null;
  /** Set by revocation and rotation. */
  revokedAt?: Date | null;
  /** Always set by the caller, from its clock. */
  updatedAt: Date;
}

/** Filters and keyset position of one `list` call. */
export interface StoreListQuery {
  ownerId?: string;
  tenantId?: string;
  status?: ApiKeyStatus;
  /** Return records strictly after this position in (createdAt, id) order. */
  after?: { createdAt: Date; id: string };
  /** Maximum number of records to return (the store may return fewer only at the end). */
  limit: number;
}

/** The atomic rotation a store performs in one step. */
export interface StoreRotation {
  /** The record being replaced. */
  oldId: string;
  /**
   * The new record, ready to insert. When the old record has `maxUses`, the store replaces
   * `replacement.maxUses` with the uses the old key has left at this moment (never below 0).
   */
  replacement: ApiKeyRecord;
  /** When the old key stops working (now, or the end of the grace period). */
  oldRevokedAt: Date;
  /** `revoked` when the old key stops at once, `undefined` to leave its status. */
  oldStatus?: ApiKeyStatus;
  /** The caller's clock, for `updatedAt`. */
  now: Date;
}

/**
 * One atomic consume: the limits to enforce and the caller's clock. The limits travel with the
 * request (they come from the record the caller verified), so a store need not read the record.
 */
export interface ConsumeRequest {
  /** Caller's clock, epoch milliseconds. */
  now: number;
  maxUses: number | null;
  rateLimit: RateLimit | null;
}

/** Why a consume was refused, most lasting first. */
export type ConsumeRefusal = 'usage_exhausted' | 'quota_exceeded' | 'rate_limited';

/**
 * The result of one consume. When refused, nothing was counted (all-or-nothing) and the counters
 * describe the state that caused the refusal.
 */
export interface ConsumeOutcome {
  admitted: boolean;
  /** The most lasting limit that refused, when `admitted` is false. */
  refusal?: ConsumeRefusal;
  /** Lifetime admitted uses, including this one when admitted. */
  useCount: number;
  /** Requests counted in the current UTC day (present when `perDay` is set). */
  dayCount?: number;
  /** Tokens left in the bucket after this request (present when `perSecond` is set). */
  tokens?: number;
}

/**
 * The persistence interface every store implements.
 *
 * Implementations must make `consume` and `rotate` atomic with respect to each other and to
 * concurrent calls from any process sharing the store.
 */
export interface ApiKeyStore {
  /** Inserts a new record. Rejects with `KeygateError('already_exists')` when its `id` or `keyPrefix` is taken. */
  insert(record: ApiKeyRecord): Promise<void>;
  /** The record with this id, or `null`. */
  findById(id: string): Promise<ApiKeyRecord | null>;
  /** The record with this keyPrefix, or `null`. */
  findByKeyPrefix(keyPrefix: string): Promise<ApiKeyRecord | null>;
  /** Applies `patch` and returns the updated record, or `null` when the id is unknown. */
  update(id: string, patch: ApiKeyPatch): Promise<ApiKeyRecord | null>;
  /**
   * Inserts the replacement and retires the old record in one atomic step, carrying the old key's
   * remaining uses. Returns both records as stored, or `null` when `oldId` is unknown.
   * Rejects with `already_exists` (and changes nothing) when the replacement's id or keyPrefix is taken.
   */
  rotate(rotation: StoreRotation): Promise<{ old: ApiKeyRecord; replacement: ApiKeyRecord } | null>;
  /** Records matching the filters, ordered by (createdAt, id) ascending. */
  list(query: StoreListQuery): Promise<ApiKeyRecord[]>;
  /**
   * Atomically checks and counts one use: `maxUses`, the UTC-day quota and the token bucket, all or
   * nothing. Updates `useCount` and `lastUsedAt` when admitted. Returns `null` for an unknown id.
   */
  consume(id: string, request: ConsumeRequest): Promise<ConsumeOutcome | null>;
  /**
   * Optional: calls `listener` with a record's id whenever it changes through this store or any
   * store sharing its data, so verification caches can drop it; with `null` when changes may have
   * been missed (a lost subscription connection), so caches drop everything. Returns an
   * unsubscribe function; once every listener has unsubscribed, the store releases what it opened
   * for them.
   */
  subscribe?(listener: (id: string | null) => void): () => void;
}
