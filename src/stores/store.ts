/**
 * The contract between keygate and a place that keeps keys. Stores do I/O and atomic counting
 * only: every decision about status, expiry, IPs and scopes is made before a store is called, and
 * every timestamp comes from the caller (`now`), never from the store's own clock.
 *
 * Prove an implementation with `describeStoreContract` from `keygate/testing`.
 */
import type { ConsumeOutcome, ConsumeRequest } from '../policy/limits.js';
import type { ReserveOutcome, ReserveRequest, Settlement } from '../policy/reservation.js';
import type { ApiKeyRecord, ApiKeyStatus, UpdateApiKeyInput } from '../types.js';
import type { AuditEntry, StoreAuditQuery } from '../audit/entry.js';
import type { StoreUsageQuery, UsageBatch, UsageCell } from '../usage/cells.js';
import type { AlertClaim } from '../alerts/claim.js';

export type { Actor, AuditAction, AuditEntry, StoreAuditQuery } from '../audit/entry.js';
export type { StoreUsageQuery, UsageBatch, UsageCell } from '../usage/cells.js';
export type { AlertClaim } from '../alerts/claim.js';

// The consume's request and outcome are the limit policy's vocabulary; stores speak it.
export type { ConcurrencyClaim, ConsumeOutcome, ConsumeRefusal, ConsumeRequest, Leases } from '../policy/limits.js';
export type { Hold, Holds, ReserveOutcome, ReserveRequest, Settlement } from '../policy/reservation.js';

/**
 * Changes `update` may apply to a record. `undefined` leaves a field as it is; `null` clears a
 * nullable one (and removes `description`).
 */
export interface ApiKeyPatch extends Omit<UpdateApiKeyInput, 'expiresAt'> {
  /** Always a Date here: the manager has parsed the caller's input. */
  expiresAt?: Date | null;
  /** Set by revocation and rotation. */
  revokedAt?: Date | null;
  /**
   * Set by `delete`, together with `status: 'revoked'`. A key is deleted once: the store keeps the
   * stored `deletedAt` when it has one (`deletedAtAfterUpdate` of the store toolkit).
   */
  deletedAt?: Date;
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
  /** Also return deleted records (`deletedAt` set); they are left out otherwise. */
  includeDeleted?: boolean;
}

/** What one `purge` call removes. */
export interface StorePurge {
  /** Remove every record whose `deletedAt` is set and earlier than this. */
  deletedBefore: Date;
}

/** The atomic rotation a store performs in one step. */
export interface StoreRotation {
  /** The record being replaced. */
  oldId: string;
  /**
   * The new record, ready to insert: its identity (`id`, `keyPrefix`, `keyHash`) and keygate's own
   * fields (timestamps, `rotatedFromId`, counters) are the caller's. Inside its atomic step the
   * store replaces every field a caller sets (`CREATE_FIELDS` of the record schema: name, status,
   * scopes, allowedIps, limits, expiry, metadata, …; absent on the old record means absent here)
   * with the old record's values at that moment, and `maxUses` with the uses the old key has left
   * (`null` when unlimited, never below 0): the caller read the old record earlier, and an update
   * made since must reach the new key. `replacementFor(rotation, old)` of the store toolkit does it.
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
 * The persistence interface every store implements.
 *
 * What must be atomic (one indivisible step with respect to every other call from any process
 * sharing the store): `consume`; `update` with its checks; and, for `rotate`, the decision on the
 * old record (refuse a retired key, else retire it and read the uses it has left), so that of
 * concurrent rotations of one key exactly one succeeds. A store whose data spans places no single
 * step can cover (Redis Cluster hash slots) may perform `insert` and the rest of `rotate` as an
 * ordered sequence instead, provided that a failure part-way leaves nothing a key holder can use
 * that they should not (an index entry without its record, a retiring key without a replacement
 * nobody holds) and that the store documents the order. Each built-in store states which of the
 * two it does (MemoryStore and SqlStore: every method atomic; RedisStore: everything atomic on a
 * standalone server; on a Cluster insert, rotate, purge and a delete's entry in the deleted set are
 * ordered).
 *
 * The shared pieces (listeners, refusals, the rotation and revocation rules) are exported as the
 * store toolkit (`ChangeListeners`, `alreadyExists`, `replacementFor`, … from `keygate`); the
 * contract suite (`keygate/testing`) checks all of it.
 */
export interface ApiKeyStore {
  /** Inserts a new record. Rejects with `KeygateError('already_exists')` when its `id` or `keyPrefix` is taken. */
  insert(record: ApiKeyRecord): Promise<void>;
  /** The record with this id, or `null`. */
  findById(id: string): Promise<ApiKeyRecord | null>;
  /** The record with this keyPrefix, or `null`. */
  findByKeyPrefix(keyPrefix: string): Promise<ApiKeyRecord | null>;
  /**
   * Applies `patch` and returns the updated record, or `null` when the id is unknown. The checks
   * below and the write are one atomic step: the manager never reads a record before updating it,
   * so two administrators racing cannot undo each other's revocation.
   *
   * - A revoked key stays revoked: when the patch sets `status` to anything but `revoked` and the
   *   stored record is revoked (`status` is `revoked`, or `revokedAt` is at or before
   *   `patch.updatedAt`), the store rejects with `KeygateError('invalid_argument')` (field
   *   `status`; `revokedKeyCannotChangeStatus()` of the store toolkit builds it) and changes nothing.
   * - A key is deleted once: when the patch sets `deletedAt` and the stored record has one, the
   *   stored one stays (`deletedAtAfterUpdate` of the store toolkit).
   * - A revocation is stamped by the store: when the patch sets `status` to `revoked`, `revokedAt`
   *   becomes the earlier of its stored value and `patch.updatedAt` (a key already revoked keeps
   *   its instant; a key in a rotation grace period stops now). `revokedAtAfterUpdate` of the
   *   store toolkit computes it.
   */
  update(id: string, patch: ApiKeyPatch): Promise<ApiKeyRecord | null>;
  /**
   * Inserts the replacement and retires the old record in one atomic step, carrying the old key's
   * remaining uses. Returns both records as stored, or `null` when `oldId` is unknown.
   * Rejects with `already_exists` (and changes nothing) when the replacement's id or keyPrefix is taken.
   * Rejects with `KeygateError('invalid_argument')` (field `id`) and changes nothing when the old
   * record is already retired or retiring: `status` is `revoked`, or `revokedAt` is set (a rotation
   * already happened). Otherwise a key in its grace period could be rotated again and again, each
   * time minting a key with the full remaining uses.
   */
  rotate(rotation: StoreRotation): Promise<{ old: ApiKeyRecord; replacement: ApiKeyRecord } | null>;
  /**
   * Records matching the filters, ordered by (createdAt, id) ascending. Deleted records (`deletedAt`
   * set) only with `includeDeleted`.
   */
  list(query: StoreListQuery): Promise<ApiKeyRecord[]>;
  /**
   * Removes for good every record whose `deletedAt` is earlier than `purge.deletedBefore`, with
   * everything the store keeps for it (lookup index entries, list entries, counters, concurrency
   * leases), and returns how many records it removed. Each record goes in one atomic step, so no
   * reader ever finds it half removed: `findByKeyPrefix` gives the record or `null`, never an index
   * entry pointing nowhere. A record not deleted, or deleted at or after `deletedBefore`, is never
   * touched, whatever happens to it meanwhile (a record is deleted once: `deletedAt` never moves).
   */
  purge(purge: StorePurge): Promise<number>;
  /**
   * Atomically checks and counts one use, all or nothing, in this order:
   * 1. `request.deadline` has passed on the store's clock: `deadline_exceeded`;
   * 2. the record as stored now, with `request.now`: `status` other than `active`
   *    (`api_key_disabled` for `suspended`, `api_key_revoked` for anything else), `revokedAt` at
   *    or before now (`api_key_revoked`), `expiresAt` at or before now (`api_key_expired`). This is
   *    what makes a revocation final in every process at once, whatever their caches hold;
   * 3. the limits of the request, as `decideConsume` (`policy/limits.ts`) decides them: `maxUses`,
   *    the quota windows (month, day, hour, minute), the token bucket and, when the request has a
   *    `concurrency` claim, the key's live leases against `concurrency.limit`. The request counts
   *    at `countingInstant(counters, request.now)`.
   * Updates `useCount`, `lastUsedAt` and the counters when admitted, and records the claim's lease
   * (`leasesAfter`), all in the same atomic step. A refusal writes nothing, not even the removal
   * of lapsed leases: a later caller whose clock lags counts at an earlier instant, where they may
   * still be live. Returns `null` for an unknown id.
   *
   * A store that cannot hold leases (it has no `release`) must never be given a `concurrency`
   * claim: keygate refuses keys with `maxConcurrent` on such a store before it calls `consume`.
   */
  consume(id: string, request: ConsumeRequest): Promise<ConsumeOutcome | null>;
  /**
   * Optional (capability `concurrency`): gives back the concurrency slot `lease` of the record `id`
   * took by an admitted `consume`. Changes nothing else (no counter, no `updatedAt`, no change
   * notification), and resolves without error when the record or the lease is unknown (already
   * released, lapsed, or the record deleted): keygate calls it once a response has ended, and may
   * call it for a lease that a timed-out consume never took. A store with `release` holds leases in
   * `consume`; one without cannot enforce `maxConcurrent`.
   */
  release?(id: string, lease: string): Promise<void>;
  /**
   * Optional (capability `synchronous`): the same consume as {@link consume}, answered before
   * returning, for a store that counts in the caller's own process (MemoryStore). keygate calls
   * it instead of `consume` for requests without a concurrency claim, so a cached key is admitted
   * with no promise at all. The request object is valid only during the call. It must decide
   * exactly as `consume` does, over the same counters: the two may be interleaved freely.
   */
  consumeNow?(id: string, request: ConsumeRequest): ConsumeOutcome | null;
  /**
   * Optional (capability `leases`, with `settle`): reserves up to `request.units` uses of a key in
   * one atomic step, for `keygate({ consistency: 'leased' })`. The same checks as a consume, in
   * the same order (deadline, the record's lifecycle at `request.now`, then the limits), and then,
   * as `decideReservation` (`policy/reservation.ts`) decides it: the grant is the smallest of
   * `units`, the uses left, each quota's room in its current window and the whole tokens of the
   * bucket, the bucket refilling only up to its capacity minus the tokens of the key's live holds.
   * Admitted, the grant is counted (useCount, every window, the bucket; `lastUsedAt` is
   * `request.now`, as for a consume) and kept as a hold (lease: until = at + leaseMs, units, tokens, at), lapsed
   * holds dropped, all in the same atomic step; refused, nothing changes. Returns `null` for an
   * unknown id. Holds are removed with their record by `purge`.
   */
  reserve?(id: string, request: ReserveRequest): Promise<ReserveOutcome | null>;
  /**
   * Optional (capability `leases`, with `reserve`): ends a reservation, atomically, as
   * `decideSettlement` decides it: the unspent units (at most the hold's) are given back to
   * `useCount` and to the windows the reservation counted in that are still current, its tokens to
   * the bucket while the hold is live, and the hold is removed. Without a hold of that lease
   * (settled already, lapsed and dropped, or an unknown record) it changes nothing, so a retry
   * gives nothing back twice. Changes no `updatedAt` and notifies no listener.
   */
  settle?(id: string, settlement: Settlement): Promise<void>;
  /**
   * Optional: calls `listener` with a record's id whenever it changes through this store or any
   * store sharing its data, so verification caches can drop it; with `null` when changes may have
   * been missed (a lost subscription connection), so caches drop everything. Returns an
   * unsubscribe function; once every listener has unsubscribed, the store releases what it opened
   * for them.
   */
  subscribe?(listener: (id: string | null) => void): () => void;
  /**
   * Optional (capability `audit`): appends one entry to the audit trail. Rejects with
   * `KeygateError('already_exists')` when an entry with its id exists (and changes nothing).
   * Entries are kept until the application removes them; `purge` does not touch them.
   */
  appendAudit?(entry: AuditEntry): Promise<void>;
  /**
   * Optional (capability `audit`): entries matching every filter of the query, ordered by
   * (at, id) ascending, at most `query.limit`.
   */
  listAudit?(query: StoreAuditQuery): Promise<AuditEntry[]>;
  /**
   * Optional (capability `usage`): adds a batch of usage cells to the stored ones, atomically
   * per key (another reader never sees a key's cells of one batch half added) and exactly once per
   * batch id: a batch applied before (a retry after a lost answer) adds nothing. Counts add up;
   * `maxResponseMicros` keeps the larger. A cell of a key the store does not hold (no record with
   * that id: never inserted, or purged) is dropped, in the same atomic step that applies the key's
   * other cells, so a purge racing a flush leaves none of the key's cells behind whichever comes
   * first; the batch id still counts as applied (a retry adds nothing either way). Cells of a key
   * that exists, deleted but not purged included, are added.
   */
  addUsage?(batch: UsageBatch): Promise<void>;
  /**
   * Optional (capability `usage`): every stored cell of `query.keyId` with a day in
   * `[fromDay, toDay]`, one per (day, route, outcome), in any order.
   */
  readUsage?(query: StoreUsageQuery): Promise<UsageCell[]>;
  /**
   * Optional (capability `alerts`): claims `claim.name` until `claim.expiresAt`, atomically across
   * every process sharing the store. Resolves `true` when no live claim of that name existed (this
   * caller has it now), `false` otherwise (and changes nothing).
   */
  claimAlert?(claim: AlertClaim): Promise<boolean>;
}
