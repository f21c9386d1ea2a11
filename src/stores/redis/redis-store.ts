/**
 * The Redis store: keys and exact counters shared by every process that uses the same Redis, with
 * ioredis (standalone or Cluster). The warm path of an admitted request is one EVALSHA (and, for
 * a key with `maxConcurrent`, one ZREM when its response ends); in leased mode, one EVALSHA per
 * batch of uses reserved and one when the batch is settled.
 *
 * Layout (`ns` is the `keyPrefix` option, default `keygate:`):
 * - `ns key:{<id>}`: the record, one hash field per record field, plus its counters (`c:*`).
 * - `ns key:{<id>}:leases`: the record's concurrency leases (`maxConcurrent`), a sorted set of
 *   lease ids scored by the instant each lapses, with an expiry a little past its newest lease.
 *   Same hash tag as the record, so the same slot: everything one consume touches is in these
 *   two keys, and each script on them is atomic on a Cluster too.
 * - `ns key:{<id>}:holds`: the record's holds of leased mode (capability `leases`), reservations
 *   not yet settled: a hash, field = the reservation's lease, value = `until,units,tokens,at`
 *   (the instant it lapses on the counting clock, the units and bucket tokens granted, the instant
 *   it counted at), each number written with `%.17g` so it reads back exactly; with an expiry a day
 *   past its newest hold (HOLDS_TTL_MARGIN_MS), which only collects the holds of a key nobody
 *   reserves any more. Same hash tag as the record, so a reservation or a settlement is one script
 *   on a Cluster too. The hash goes with its last hold.
 * - `ns kp:<keyPrefix>`: the id of the record with that keyPrefix (lookup index).
 * - `ns list`, `ns list:owner:<ownerId>`, `ns list:tenant:<tenantId>`: sorted sets of
 *   `<createdAt>:<id>` members for keyset pagination. A deleted record stays in them until it is
 *   purged; `list` leaves it out (unless `includeDeleted`) by the `deletedAt` of the record it
 *   reads, and reads on until the page is full. So deleting touches no list key, and the lists of
 *   a version that knew nothing of deletion are read as they are.
 * - `ns deleted`: the deleted set, one `<deletedAt>:<id>` member per deleted record (score 0,
 *   sorted as text, so by deletedAt), where `purge` finds what to remove without scanning the
 *   keyspace: one ZRANGEBYLEX up to `deletedBefore`.
 * - `ns invalidate`: the pub/sub channel that carries the id of every changed record.
 * - The audit trail (capability `audit`), all under the hash tag `{audit}`, so in one slot: an
 *   entry is appended with its index members by one script on a Cluster too. `ns {audit}:e:<id>`
 *   holds one entry as JSON (`at` in epoch ms; `actor`, `tenantId`, `environment` only as given).
 *   `ns {audit}:all` and, per value, `ns {audit}:key:<keyId>`, `ns {audit}:tenant:<tenantId>`,
 *   `ns {audit}:actor:<actor id>` and `ns {audit}:env:<environment>` are its indexes: sorted sets
 *   of `<at>:<id>` members at score 0, the instant offset and padded as in the list sets, so text
 *   order is (at, id) order and `from`, `to` and `after` are ZRANGEBYLEX bounds. An entry with
 *   `keyId: null` is in no key index. Entries are never changed nor removed by the store (purge
 *   leaves them alone); one key per entry rather than one hash of them all, so the trail's slot
 *   migrates key by key on a Cluster. (Ids are ordered as bytes of UTF-8, which is the order of
 *   JavaScript strings for every id below U+E000, UUIDs included.)
 * - A key's usage analytics (capability `usage`), under the record's hash tag `{<id>}`, so in the
 *   record's slot (only a key whose record exists gets cells): `ns usage:{<id>}:d:<day>`, one hash per UTC
 *   day with cells, field = the JSON of `[route, outcome]` (a null route is `null`, apart from
 *   every string), value = `requests,status2xx,status3xx,status4xx,status5xx,totalResponseMicros,
 *   maxResponseMicros` as integers; `ns usage:{<id>}:days`, a sorted set of those days (day →
 *   day), where readUsage and purge find the day hashes without scanning; and
 *   `ns usage:{<id>}:batches`, a sorted set of the batch ids applied to this key, each scored by
 *   the instant until which it must be remembered (its `now` + RETAIN_BATCH_IDS_MS, the caller's
 *   clock), pruned by each later batch (by its `now`) and expiring, on Redis's clock, an hour past
 *   that retention after the key's last batch.
 * - `ns alert:<name>`: an alert claim (capability `alerts`), a string holding its `expiresAt`
 *   (epoch ms), expiring a minute after it (ALERT_TTL_MARGIN_MS): liveness is judged from the
 *   stored instant and the caller's `now`, the expiry only collects claims nobody asks about.
 * The layout is the same on both deployments and across versions of this store: what one version
 * wrote, the next one reads (a record hash without `deletedAt`, written before it existed, reads
 * as not deleted).
 *
 * What is atomic, and what is only ordered:
 *
 * On both deployments, one Lua script on one record's hash (so one slot), each step indivisible
 * with respect to every other command from any process:
 * - consume: deadline, lifecycle and limits checked and counted together, and the concurrency
 *   lease (for a key with `maxConcurrent`) counted and taken in the same step;
 * - reserve (leased mode): deadline, lifecycle, the grant (`decideReservation`: units, uses left,
 *   each quota's room, the bucket's whole tokens refilled only up to its capacity minus the tokens
 *   of live holds), the counters it is counted in, the lapsed holds dropped and the new hold
 *   written; a refusal writes nothing;
 * - settle (leased mode): the hold looked up, the unspent units given back (`decideSettlement`:
 *   useCount, the windows still current, the bucket while the hold is live) and the hold removed
 *   with every lapsed one; without the hold, nothing. Neither reserve nor settle changes
 *   `updatedAt` or publishes: they are uses of a key, not changes to it;
 * - update: the "a revoked key stays revoked" check, the revocation stamp (`revokedAt` = the
 *   earlier of the stored one and `updatedAt`), the "deleted once" rule (a stored `deletedAt`
 *   stays), the write and its invalidation message.
 * And one script on one slot each, too:
 * - appendAudit: the "id taken" check, the entry and its member in every index it joins;
 * - addUsage, per key of the batch: the "batch already applied to this key" check, the "record
 *   exists" check (EXISTS on the record's hash: the cells of a key the store does not hold, never
 *   inserted or purged, are dropped), every cell of that key (on every day) added, the days set
 *   and the batch id recorded (also when the cells were dropped). Each key's script is
 *   sent at once (pipelined on one connection, or one per node on a Cluster); a batch is thus
 *   atomic per key, not as a whole, and exactly once per (batch id, key): a batch half applied
 *   when a process died, retried with its id, adds only the keys it had not reached. Sums are
 *   exact across processes (no read-modify-write outside a script);
 * - readUsage: every day hash of the key in the range, read in one step after checking that the
 *   days set still holds the days read just before (a ZRANGEBYSCORE; read again when a flush
 *   added a day in between), so a reader never sees half a key's batch, even across two days;
 * - claimAlert: compare the stored `expiresAt` with the caller's `now`, and claim, on the claim's key.
 * listAudit is a keyset walk, not a snapshot: LIST_AUDIT_SCRIPT reads up to 1024 members of the
 * filter index with the fewest members in the range and keeps those every other filter's index
 * holds (ZSCORE), then one MGET reads the page's entries; a query whose filters rarely meet is
 * walked in several such scripts from a cursor rather than one that would block Redis.
 *
 * On standalone Redis (a `Redis` client) every write is one script, because every key can be
 * declared to a script on a single server:
 * - insert: the record, its keyPrefix index and its list entries, or nothing (`already_exists`);
 * - rotate: the old record's claim (refused when it is revoked or already rotated), the checks
 *   that the replacement's id and keyPrefix are free, the replacement with the settings the old
 *   record holds at that instant (every field a caller sets, copied in the script: an update that
 *   landed after the caller read the old record reaches the new key) and the uses it has left,
 *   its index and list entries, and the invalidation message: all of it, or nothing.
 * - update: the same script also adds a deleted record's member to the deleted set (declared as
 *   its second key), so a delete (an update with `deletedAt`) is one EVALSHA too;
 * - insert of a record already deleted: its deleted-set member in the insert script;
 * - purge, per record: the record is read (HGETALL, for the keyPrefix, owner, tenant and createdAt
 *   that name its other keys) with its usage days set (the same round trip), then one script judges
 *   it as stored (`deletedAt` before `deletedBefore`) and removes the record, its leases, its
 *   holds, its usage (days set and day hashes), its index entry, its list entries and its
 *   deleted-set member, with the invalidation message; or nothing (and is sent again with the days
 *   read again when a flush added a day in between).
 * A single round trip each (a purge: two per record), so a process dying mid-call leaves either
 * everything or nothing.
 * (A rotation whose old record holds another owner or tenant than the caller read, which only an
 * edit made by hand can cause, is refused before any write and sent again with the right lists.)
 *
 * On Redis Cluster (a `Cluster` client) the index, the lists and the deleted set live in other
 * slots than the record, and no script can span slots, so insert, rotate, a delete's deleted-set
 * member and purge are ordered sequences instead, each ordered so that a failure part-way leaves
 * nothing a key holder can use and no index entry naming a record that is gone:
 * - insert: (1) the keyPrefix index (SET NX: of two inserts of one keyPrefix, one wins), (2) the
 *   list entries, (2b) for a record inserted already deleted, its deleted-set member, (3) the
 *   record, by a script that refuses an id in use; when any step fails (the id is taken, a list
 *   key holds something else, a command is refused, the connection drops), what (1), (2) and (2b)
 *   added is taken back. A process dying after (1), (2) or (2b) leaves an index, list or deleted
 *   entry without its record, which lookups and list() skip and purge removes.
 * - update with `deletedAt` (delete): the update script is atomic on the record as on standalone
 *   Redis; around it, (1) the member for the patch's `deletedAt` joins the deleted set (ZADD NX)
 *   before the script, so a record is never deleted without a member; (3) when the record kept an
 *   earlier `deletedAt`, the member for that one is added and the one from (1) taken back. When
 *   the script surely changed nothing (unknown id, refused, an error reply), (1) is taken back.
 *   A member whose record is not (yet) deleted is left alone by purge: it may be a delete between
 *   (1) and the script. A delete is therefore a ZADD and an EVALSHA on a Cluster.
 * - purge, per record: (0) read the record and judge it (a member whose record is gone is
 *   removed; one whose record is not deleted, or whose `deletedAt` cannot be read, stays);
 *   (1) the invalidation message, before any write, so that a client refused PUBLISH removes
 *   nothing; (2) the index entry, only while it names this id (compare-and-delete script);
 *   (3) the list entries; (4) the record, its leases, its holds and its usage (one slot: days set
 *   and day hashes, as read with the record in (0), and read again should a flush have added a
 *   day), by a script that judges the record again as stored and publishes; (5) the deleted-set
 *   member. The index goes before the record: between (2) and (4) the record exists without its
 *   index entry, so findByKeyPrefix answers null for a key being purged, never an index entry
 *   pointing nowhere, and findById still finds it, deleted. Should (4) keep the record after all (only an edit by hand can make a
 *   deleted record not purgeable), (2) and (3) are put back. A process dying before (4) leaves a
 *   deleted record without index or list entries and its member, which the next purge completes.
 *   (A record inserted already deleted whose member a concurrent purge takes for a crash's
 *   leftover, between (2b) and (3) of its insert, is then never purged: imports of deleted
 *   records should not run during a purge.)
 * - rotate: (0) the invalidation message, before any write, so that a client refused PUBLISH
 *   changes nothing. (1) The claim, atomic on the OLD record: it refuses a record already revoked
 *   or already rotated (`revokedAt` set), else sets its `revokedAt`, `updatedAt` (and `status`)
 *   and returns the record as of that instant. Of concurrent rotations of one key exactly one
 *   passes this step, before anything else is written. (2) The replacement is inserted as above,
 *   with the settings the old record held at the claim (its status from before the claim) and
 *   the uses left then. (3) The invalidation message again, now that the change is made. If (2)
 *   fails (`already_exists`, a lost connection, …), or the claimed record cannot be decoded, the
 *   claim is undone: the old record's revokedAt, updatedAt and status are restored exactly as
 *   they were, unless a change made in between (a revocation) touched them, which then stands.
 *   Between (1) and (2) the old record already shows the rotation while the replacement does not
 *   exist yet; a process dying there leaves the old key retiring at `oldRevokedAt` with no
 *   replacement anyone holds: rotate it no more, create a new key. A replacement written but
 *   never returned is a record whose secret nobody has.
 *
 * `release` is one ZREM on the leases key, on either deployment.
 *
 * Only purge deletes a record key, and always with its leases, its holds and its usage keys (same
 * slot, so one script on a Cluster too); an undone Cluster rotation restores fields of the old
 * record and takes back index and list entries, never a record. A consume or release after a
 * purge finds no record and writes no leases; a reserve or settle finds no record and writes no
 * holds. A flush after a purge finds no record either and drops the purged key's cells: the
 * record's existence is checked in the same script that adds them, and the purge removes the
 * record with its usage in one script, so a flush racing a purge leaves nothing behind whichever
 * runs first. A purge leaves the key's applied-batch set to expire on its own (within
 * RETAIN_BATCH_IDS_MS and an hour): it holds batch ids only.
 *
 * Reads are single commands per key, not snapshots across keys: findByKeyPrefix reads the index,
 * then the record (and checks that the record still has that keyPrefix; an index entry without
 * its record, which only a Cluster insert under way or a crashed one leaves, answers null); list()
 * reads a page of a sorted set, then each record.
 *
 * Invalidation: every write's id reaches this process's listeners at once and every other process
 * through Redis pub/sub (at most once: a subscriber that reconnects tells its listeners `null`).
 */
import type { Cluster, Redis } from 'ioredis';
import { decodeStoredRecord, invalidRecord, ownValue } from '../../record/decode.js';
import { CREATE_FIELDS } from '../../record/schema.js';
import { QUOTA_WINDOWS } from '../../policy/windows.js';
import type { ApiKeyRecord, RateLimit } from '../../types.js';
import type { AuditEntry, StoreAuditQuery } from '../../audit/entry.js';
import type { AlertClaim } from '../../alerts/claim.js';
import { RETAIN_BATCH_IDS_MS, USAGE_COUNT_FIELDS, cellKeyOf, mergeCell } from '../../usage/cells.js';
import type { StoreUsageQuery, UsageBatch, UsageCell } from '../../usage/cells.js';
import type {
  Actor,
  ApiKeyPatch,
  ApiKeyStore,
  ConcurrencyClaim,
  ConsumeOutcome,
  ConsumeRefusal,
  ConsumeRequest,
  ReserveOutcome,
  ReserveRequest,
  Settlement,
  StoreListQuery,
  StorePurge,
  StoreRotation,
} from '../store.js';
import {
  ChangeListeners,
  alreadyExists,
  rejectUnknownOptions,
  replacementFor,
  retiredKeyCannotRotate,
  revokedKeyCannotChangeStatus,
} from '../toolkit.js';
import { asStored, decodeRecord, encodePatch, encodeRecord, pairsToHash } from './codec.js';
import {
  ADD_USAGE_SCRIPT,
  APPEND_AUDIT_SCRIPT,
  CLAIM_ALERT_SCRIPT,
  CLAIM_ROTATION_SCRIPT,
  CONSUME_SCRIPT,
  DELETE_IF_SCRIPT,
  INSERT_RECORD_SCRIPT,
  INSERT_SCRIPT,
  LIST_AUDIT_SCRIPT,
  PURGE_RECORD_SCRIPT,
  PURGE_SCRIPT,
  READ_USAGE_SCRIPT,
  RESERVE_SCRIPT,
  ROTATE_SCRIPT,
  SETTLE_SCRIPT,
  UNDO_ROTATION_SCRIPT,
  UPDATE_SCRIPT,
} from './scripts.js';

/** An ioredis client: a `Redis` or a `Cluster`. */
export type RedisClient = Redis | Cluster;

/** Options of {@link RedisStore}. */
export interface RedisStoreOptions {
  /**
   * An ioredis `Redis` or `Cluster` client you own. The store never closes it. Create it with
   * `autoResendUnfulfilledCommands: false` if you can: otherwise a consume or a reservation in
   * flight when the connection drops may be sent again after reconnecting and counted twice.
   *
   * The kind of client decides what is atomic (see the class comment): with a `Redis` client,
   * insert, rotate, update and each record's purge are one script each; with a `Cluster`, insert,
   * rotate and purge are ordered steps.
   */
  client: RedisClient;
  /**
   * Namespace of every Redis key the store writes, so several keygate deployments (or other data)
   * can share one Redis. @default 'keygate:'
   */
  keyPrefix?: string;
}

/** Which field of a new record is already in use. */
type TakenField = 'id' | 'keyPrefix';

/**
 * The custom commands the store defines on the client. Names carry a version, bumped whenever a
 * script's arguments or replies change, so processes running an older keygate against the same
 * Redis (during a rolling upgrade) never run a script they do not expect.
 */
interface ScriptCommands {
  /** Cluster: the record's hash alone. 1, or 0 when the id is taken. */
  keygateInsertV1(key: string, ...args: string[]): Promise<number>;
  /** Standalone, `numberOfKeys` first: record, index, deleted set and lists in one step. */
  keygateInsertRecordV2(numberOfKeys: number, ...keysAndArgs: string[]): Promise<['inserted'] | ['taken', TakenField]>;
  /** Standalone, `numberOfKeys` first: the whole rotation; null for an unknown old id. */
  keygateRotateV2(
    numberOfKeys: number,
    ...keysAndArgs: string[]
  ): Promise<
    ['rotated', string[], string[]] | ['retired'] | ['taken', TakenField] | ['invalid', string, string] | ['lists', string, string] | null
  >;
  /**
   * `numberOfKeys` first: the record, then (standalone only) the deleted set. The hash after the
   * patch, null for an unknown id, 0 when the record is revoked and stays so.
   */
  keygateUpdateV4(numberOfKeys: number, ...keysAndArgs: string[]): Promise<string[] | 0 | null>;
  /** Standalone, `numberOfKeys` first: one record's whole purge, its holds and usage included (see PURGE_SCRIPT). */
  keygatePurgeV3(numberOfKeys: number, ...keysAndArgs: string[]): Promise<'purged' | 'gone' | 'kept' | 'changed'>;
  /** Cluster, `numberOfKeys` first: the record, its leases, its holds and its usage, the last step of its purge. */
  keygatePurgeRecordV3(numberOfKeys: number, ...keysAndArgs: string[]): Promise<'purged' | 'gone' | 'kept' | 'changed'>;
  /** `numberOfKeys` first: the entry's key, then its indexes. 1, or 0 when the id is taken. */
  keygateAppendAuditV1(numberOfKeys: number, ...keysAndArgs: string[]): Promise<number>;
  /** `numberOfKeys` first: the indexes of the query's filters. [state, cursor, matching members]. */
  keygateListAuditV1(numberOfKeys: number, ...keysAndArgs: string[]): Promise<['end' | 'more', string, string[]]>;
  /**
   * `numberOfKeys` first: one key's cells of a batch. 1, 0 when this batch was applied to the key
   * already, 2 when the record does not exist (cells dropped, batch id recorded).
   */
  keygateAddUsageV2(numberOfKeys: number, ...keysAndArgs: string[]): Promise<number>;
  /** `numberOfKeys` first: HGETALL replies of the declared day hashes, or 'changed'. */
  keygateReadUsageV1(numberOfKeys: number, ...keysAndArgs: string[]): Promise<string[][] | 'changed'>;
  /** 1 when claimed, 0 when a live claim exists. */
  keygateClaimAlertV1(key: string, ...args: string[]): Promise<number>;
  /** Deletes the key when it holds the value; 1 when it did. */
  keygateDeleteIfV1(key: string, value: string): Promise<number>;
  /** Cluster: [previous revokedAt, updatedAt, status ('' = absent), hash after the claim], null, or 0 when refused. */
  keygateClaimRotationV1(key: string, ...args: string[]): Promise<[string, string, string, string[]] | 0 | null>;
  /** Cluster: 1 when the claim was undone, 0 when the record changed meanwhile. */
  keygateUndoRotationV1(key: string, ...args: string[]): Promise<number>;
  /**
   * The record's key and its leases key first. [0, refusal, useCount] for a deadline or lifecycle
   * refusal, else [admitted, refusal, useCount, tokens, then one count per window of
   * QUOTA_WINDOWS in its order, the instant counted at, inFlight ('' without a claim)].
   */
  keygateConsumeV6(
    key: string,
    leasesKey: string,
    ...args: string[]
  ): Promise<[number, string, number] | [number, string, number, string, ...(number | string)[]] | null>;
  /**
   * The record's key and its holds key first. [0, refusal, useCount] for a deadline or lifecycle
   * refusal, else [admitted, refusal, useCount, tokens, then one count per window of QUOTA_WINDOWS
   * in its order, the instant counted at, granted], the numbers as text.
   */
  keygateReserveV1(key: string, holdsKey: string, ...args: string[]): Promise<[number, string, number] | [number, string, string, string, ...string[]] | null>;
  /** The record's key and its holds key first. 1 when settled, 0 without such a hold, null for an unknown record. */
  keygateSettleV1(key: string, holdsKey: string, ...args: string[]): Promise<number | null>;
}

const OPTIONS = ['client', 'keyPrefix'] as const;
/**
 * The fields a caller sets, which a rotation takes from the old record as stored at that moment
 * (ROTATE_SCRIPT copies them by these names; `replacementFor` on a Cluster). From the schema, so a
 * new field needs no change to the script.
 */
const CALLER_SET_FIELDS: readonly string[] = CREATE_FIELDS;
const CALLER_SET: ReadonlySet<string> = new Set(CALLER_SET_FIELDS);
/** How often a standalone rotation is sent again when the old record's owner or tenant was not the one its list keys were declared for. */
const LIST_ATTEMPTS = 3;
/**
 * Offsets an instant so that members sort as text, including dates before 1970: the range of a
 * JavaScript Date (±8.64e15 ms) becomes 0 … 1.728e16, 17 digits once zero-padded.
 */
const TIME_OFFSET = 8_640_000_000_000_000;
const LIST_BATCH = 200;
/** How many deleted-set members one purge reads, and purges concurrently, at a time. */
const PURGE_BATCH = 100;
/**
 * How many members of an audit index one run of LIST_AUDIT_SCRIPT may read before it answers with
 * what it found and a cursor: a query whose filters rarely meet is walked in several short scripts
 * rather than one that blocks Redis.
 */
const AUDIT_SCAN_BUDGET = 1024;
/**
 * How much longer than RETAIN_BATCH_IDS_MS a key's applied-batch set lives after the last batch
 * applied to it. Its expiry runs on Redis's clock and the retention on the callers' (`batch.now`):
 * the margin covers the difference, so a batch id is remembered at least RETAIN_BATCH_IDS_MS after
 * its `now` as long as the clocks disagree by less.
 */
const BATCH_IDS_TTL_MARGIN_MS = 3_600_000;
/**
 * How much longer than `expiresAt - now` an alert claim's key lives. The claim's liveness is judged
 * on the caller's clock from the stored `expiresAt`; the expiry only removes claims nobody asks
 * about any more, and the margin keeps a claim for callers whose clocks lag behind the claimer's.
 */
const ALERT_TTL_MARGIN_MS = 60_000;
/** The longest expiry the store gives a key (some 30 000 years): Redis refuses larger ones. */
const MAX_TTL_MS = 1e15;
/**
 * How often readUsage and a record's purge read a key's usage days again when a flush added a day
 * between their read and their script (only at the turn of a UTC day, so once is nearly always enough).
 */
const USAGE_ATTEMPTS = 5;
/** The numbers of a stored usage cell, in the order ADD_USAGE_SCRIPT keeps them. */
const USAGE_NUMBER_FIELDS = [...USAGE_COUNT_FIELDS, 'maxResponseMicros'] as const;

/** An instant as the sortable text that starts list and deleted-set members (see TIME_OFFSET). */
function sortableInstant(ms: number): string {
  return String(ms + TIME_OFFSET).padStart(17, '0');
}

function listMember(createdAt: Date, id: string): string {
  return `${sortableInstant(createdAt.getTime())}:${id}`;
}

/** A record's member in the deleted set (`deleted_member` of the scripts writes the same text). */
function deletedMember(deletedAt: number, id: string): string {
  return `${sortableInstant(deletedAt)}:${id}`;
}

/** The id in a list or deleted-set member (the instant before the first colon has none). */
function memberId(member: string): string {
  return member.slice(member.indexOf(':') + 1);
}

/** Epoch ms of a valid Date (from any realm), else null. */
function instantOf(value: unknown): number | null {
  if (Object.prototype.toString.call(value) !== '[object Date]') return null;
  const ms = (value as Date).getTime();
  return Number.isNaN(ms) ? null : ms;
}

/** A record's member in the deleted set, or '' when it is not deleted. Own properties only. */
function deletedMemberOf(record: ApiKeyRecord): string {
  const deletedAt = instantOf(ownValue(record, 'deletedAt'));
  return deletedAt === null ? '' : deletedMember(deletedAt, record.id);
}

/**
 * Whether `list` leaves a record out without `includeDeleted`: its `deletedAt` is a date. A value
 * that is neither null nor a date (edited by hand) is listed, and refused by the record decoder
 * when keygate reads it (`invalid_record`), rather than hidden on a guess.
 */
function isDeleted(record: ApiKeyRecord): boolean {
  return instantOf(ownValue(record, 'deletedAt')) !== null;
}

/**
 * The `deletedAt` of a raw hash value as the scripts' `instant_of` reads it: null when absent or
 * JSON null, the epoch ms of a JSON number a Date holds (truncated as a Date truncates it), else
 * 'unreadable'.
 */
function storedDeletedAt(raw: string | undefined): number | null | 'unreadable' {
  if (raw === undefined) return null;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return 'unreadable';
  }
  if (value === null) return null;
  if (typeof value !== 'number') return 'unreadable';
  const ms = new Date(value).getTime();
  return Number.isNaN(ms) ? 'unreadable' : ms;
}

/** What a purge needs of a stored record to find its index and list entries. */
interface StoredIdentity extends ListOwners {
  keyPrefix: string;
  createdAt: Date;
  /** The raw hash values of keyPrefix, ownerId, tenantId and createdAt ('' when absent), which PURGE_SCRIPT compares. */
  raw: [string, string, string, string];
}

/**
 * The identity of a record from its raw hash, or null when it cannot be read (edited by hand):
 * such a record is never purged, since its index and list entries cannot be found.
 */
function storedIdentity(hash: Record<string, string>): StoredIdentity | null {
  const parse = (field: string): { value: unknown } | null => {
    const raw = ownValue(hash, field) as string | undefined;
    if (raw === undefined) return { value: undefined };
    try {
      return { value: JSON.parse(raw) };
    } catch {
      return null;
    }
  };
  const keyPrefix = parse('keyPrefix')?.value;
  const createdAt = parse('createdAt')?.value;
  const owners: (string | undefined)[] = [];
  for (const field of ['ownerId', 'tenantId']) {
    const parsed = parse(field);
    if (!parsed) return null;
    // JSON null (written by hand) joins no list, as an absent owner.
    if (parsed.value === undefined || parsed.value === null) owners.push(undefined);
    else if (typeof parsed.value === 'string') owners.push(parsed.value);
    else return null;
  }
  if (typeof keyPrefix !== 'string' || keyPrefix.length === 0 || typeof createdAt !== 'number') return null;
  const created = new Date(createdAt);
  if (Number.isNaN(created.getTime())) return null;
  const rawOf = (field: string) => (ownValue(hash, field) as string | undefined) ?? '';
  return {
    keyPrefix,
    ownerId: owners[0],
    tenantId: owners[1],
    createdAt: created,
    raw: [rawOf('keyPrefix'), rawOf('ownerId'), rawOf('tenantId'), rawOf('createdAt')],
  };
}

/** A ZRANGEBYLEX range of the audit trail's `<at>:<id>` members. */
interface AuditRange {
  start: string;
  end: string;
}

/**
 * The range of an audit query: from `from` (inclusive) or strictly after `after`, whichever is
 * later, to `to` (exclusive). A member is `<at>:<id>`, so `[<at>` is before every member at that
 * instant and `(<at>` after none of them. Null when a bound is not a valid Date (nothing matches
 * it, as no comparison with NaN holds).
 */
function auditRange(query: StoreAuditQuery): AuditRange | null {
  let start = '-';
  const from = ownValue(query, 'from');
  if (from !== undefined && from !== null) {
    const ms = instantOf(from);
    if (ms === null) return null;
    start = `[${sortableInstant(ms)}`;
  }
  const after = ownValue(query, 'after') as StoreAuditQuery['after'] | null;
  if (after !== undefined && after !== null) {
    const ms = instantOf(ownValue(after, 'at'));
    if (ms === null) return null;
    const bound = `(${sortableInstant(ms)}:${String(ownValue(after, 'id'))}`;
    // Both texts start with the same number of digits: the later bound is the greater text.
    if (start === '-' || bound.slice(1) > start.slice(1)) start = bound;
  }
  let end = '+';
  const to = ownValue(query, 'to');
  if (to !== undefined && to !== null) {
    const ms = instantOf(to);
    if (ms === null) return null;
    end = `(${sortableInstant(ms)}`;
  }
  return { start, end };
}

/** What an audit entry is indexed by (and a query filters on): strings only, absent otherwise. */
interface AuditFilters {
  keyId: string | undefined;
  tenantId: string | undefined;
  actorId: string | undefined;
  environment: string | undefined;
}

function stringOrUndefined(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/** An audit entry as the store keeps it: JSON, `at` in epoch ms, only the fields the entry has. */
interface StoredAuditEntry {
  id: string;
  at: number;
  action: AuditEntry['action'];
  keyId: string | null;
  actor: Actor | null;
  tenantId?: string;
  environment?: string;
  changes: Record<string, unknown>;
}

/**
 * The JSON of an entry, built from its own fields one by one: an `actor` of `{ id }` stays without
 * `keyPrefix`, and a `tenantId` or `environment` not given stays absent, so they read back exactly.
 */
function encodeAuditEntry(entry: AuditEntry, at: number, filters: AuditFilters): string {
  const actor = ownValue(entry, 'actor') as Actor | null | undefined;
  let storedActor: Actor | null = null;
  if (actor !== null && actor !== undefined) {
    storedActor = { id: String(ownValue(actor, 'id')) };
    const keyPrefix = ownValue(actor, 'keyPrefix');
    if (typeof keyPrefix === 'string') storedActor.keyPrefix = keyPrefix;
  }
  const stored: StoredAuditEntry = {
    id: entry.id,
    at,
    action: ownValue(entry, 'action') as AuditEntry['action'],
    keyId: filters.keyId ?? null,
    actor: storedActor,
    changes: (ownValue(entry, 'changes') ?? {}) as Record<string, unknown>,
  };
  if (filters.tenantId !== undefined) stored.tenantId = filters.tenantId;
  if (filters.environment !== undefined) stored.environment = filters.environment;
  return JSON.stringify(stored);
}

/** An entry read back: a fresh object (JSON.parse), with `at` a Date again. */
function decodeAuditEntry(id: string, text: string): AuditEntry {
  let stored: StoredAuditEntry;
  try {
    stored = JSON.parse(text) as StoredAuditEntry;
  } catch {
    throw new Error(`RedisStore: the audit entry ${JSON.stringify(id)} is not valid JSON`);
  }
  if (stored === null || typeof stored !== 'object' || typeof stored.at !== 'number' || typeof stored.id !== 'string') {
    throw new Error(`RedisStore: the audit entry ${JSON.stringify(id)} is not an audit entry`);
  }
  const entry: AuditEntry = {
    id: stored.id,
    at: new Date(stored.at),
    action: stored.action,
    keyId: stored.keyId ?? null,
    actor: stored.actor ?? null,
    changes: stored.changes,
  };
  if (stored.tenantId !== undefined) entry.tenantId = stored.tenantId;
  if (stored.environment !== undefined) entry.environment = stored.environment;
  return entry;
}

/**
 * A usage cell as the store adds it: its own fields only, checked, since they become Redis keys,
 * hash fields and Lua numbers (a fraction or a negative would be stored for good).
 */
function usageCellOf(cell: UsageCell): UsageCell {
  const keyId = ownValue(cell, 'keyId');
  const day = ownValue(cell, 'day');
  const route = ownValue(cell, 'route');
  const outcome = ownValue(cell, 'outcome');
  // An empty keyId would put `usage:{}:…` keys in different slots (Redis hashes the whole key).
  if (typeof keyId !== 'string' || keyId === '') throw new TypeError('RedisStore.addUsage: a cell keyId must be a non-empty string');
  if (!Number.isSafeInteger(day)) throw new TypeError('RedisStore.addUsage: a cell day must be an integer');
  if (route !== null && typeof route !== 'string') throw new TypeError('RedisStore.addUsage: a cell route must be a string or null');
  if (typeof outcome !== 'string') throw new TypeError('RedisStore.addUsage: a cell outcome must be a string');
  const copy = { keyId, day: day as number, route, outcome } as UsageCell;
  for (const field of USAGE_NUMBER_FIELDS) {
    const value = ownValue(cell, field);
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
      throw new TypeError(`RedisStore.addUsage: a cell ${field} must be a non-negative safe integer`);
    }
    copy[field] = value;
  }
  return copy;
}

/** The hash field of a cell in its day hash: route (null distinct from every string) and outcome, as JSON. */
function usageField(cell: UsageCell): string {
  return JSON.stringify([cell.route, cell.outcome]);
}

/** The cells of one day hash, read back: fresh objects. */
function decodeUsageDay(keyId: string, day: number, hash: Record<string, string>): UsageCell[] {
  return Object.keys(hash).map((field) => {
    const unreadable = () => new Error(`RedisStore: the usage cell ${field} of key ${JSON.stringify(keyId)}, day ${day}, cannot be read`);
    let identity: unknown;
    try {
      identity = JSON.parse(field);
    } catch {
      throw unreadable();
    }
    if (!Array.isArray(identity) || identity.length !== 2) throw unreadable();
    const [route, outcome] = identity as unknown[];
    if ((route !== null && typeof route !== 'string') || typeof outcome !== 'string') throw unreadable();
    const numbers = String(hash[field]).split(',').map(Number);
    if (numbers.length !== USAGE_NUMBER_FIELDS.length || !numbers.every((n) => Number.isInteger(n) && n >= 0)) throw unreadable();
    const cell = { keyId, day, route, outcome } as UsageCell;
    USAGE_NUMBER_FIELDS.forEach((name, i) => {
      cell[name] = numbers[i] as number;
    });
    return cell;
  });
}

/** A sorted-set score bound for a day: Redis's `-inf`/`+inf` for a day beyond every number. */
function dayBound(day: number): string {
  if (day === Infinity) return '+inf';
  if (day === -Infinity) return '-inf';
  return String(day);
}

/** An error Redis replied with (the command ran and was refused, so it wrote nothing), not a lost connection. */
function isReplyError(error: unknown): boolean {
  return error instanceof Error && error.name === 'ReplyError';
}

/** What one record's purge did. */
type PurgeOutcome = 'purged' | 'gone' | 'kept';

function numberArg(value: number | null | undefined): string {
  return value === null || value === undefined ? '' : String(value);
}

/** The consume script's last three arguments: limit, lease, leaseMs; three '' without a claim. */
function claimArgs(claim: ConcurrencyClaim | undefined): [string, string, string] {
  if (claim === undefined) return ['', '', ''];
  // Own properties only, as for the limits. A limit or leaseMs that is not a number (`'undefined'`)
  // is an error reply: the consume fails closed.
  return [String(ownValue(claim, 'limit')), String(ownValue(claim, 'lease')), String(ownValue(claim, 'leaseMs'))];
}

/** A deadline for the consume script: '' (none) unless a finite number. */
function deadlineArg(value: number | undefined): string {
  return typeof value === 'number' && Number.isFinite(value) ? String(value) : '';
}

/** A field of a request's rate limit, or undefined. */
type LimitField = (field: keyof RateLimit) => number | undefined;

/**
 * The rate-limit fields of a consume, a reservation or a settlement. Own properties only: a
 * `burst` or `perDay` on a polluted Object.prototype is not this key's limit.
 */
function limitReader(request: { rateLimit: RateLimit | null }): LimitField {
  const limit = (ownValue(request, 'rateLimit') ?? null) as RateLimit | null;
  return (field) => (limit ? (ownValue(limit, field) as number | undefined) : undefined);
}

/**
 * The arguments the consume and reserve scripts share (KEY_STATE_LUA, ADMISSION_GATE_LUA and the
 * windows' quotas): now, maxUses, perSecond, burst, deadline, then each window's quota in
 * QUOTA_WINDOWS order ('' for none).
 */
function countingArgs(request: Pick<ConsumeRequest, 'now' | 'maxUses' | 'deadline'>, limitField: LimitField): string[] {
  return [
    String(request.now),
    numberArg(ownValue(request, 'maxUses') as number | null | undefined),
    numberArg(limitField('perSecond')),
    numberArg(limitField('burst')),
    deadlineArg(ownValue(request, 'deadline') as number | undefined),
    ...QUOTA_WINDOWS.map((window) => numberArg(limitField(window.limit))),
  ];
}

/**
 * The figures of a consume's or a reservation's limit decision (a reply longer than the three
 * elements of a deadline or lifecycle refusal): the count of each window the key has a quota for,
 * the bucket's tokens when it has perSecond, and the instant counted at when later than `now`
 * (the key's latest use, when this caller's clock lags).
 */
function addCountedFigures(outcome: ConsumeOutcome, reply: readonly (number | string)[], limitField: LimitField, now: number): void {
  QUOTA_WINDOWS.forEach((window, i) => {
    if (limitField(window.limit) !== undefined) outcome[window.countField] = Number(reply[4 + i]);
  });
  if (limitField('perSecond') !== undefined) outcome.tokens = Number(reply[3]);
  const countedAt = Number(reply[4 + QUOTA_WINDOWS.length]);
  if (countedAt > now) outcome.countedAt = countedAt;
}

/** The old record's side of a rotation, as the claim and rotate scripts take it. */
function retirementArgs(rotation: StoreRotation): [string, string, string] {
  const oldStatus = ownValue(rotation, 'oldStatus');
  return [String(rotation.oldRevokedAt.getTime()), String(rotation.now.getTime()), oldStatus === undefined ? '' : JSON.stringify(oldStatus)];
}

/** The owner and tenant whose lists a record joins: own properties only (never a polluted prototype's). */
interface ListOwners {
  ownerId: string | undefined;
  tenantId: string | undefined;
}

function listOwnersOf(record: ApiKeyRecord): ListOwners {
  return { ownerId: ownValue(record, 'ownerId') as string | undefined, tenantId: ownValue(record, 'tenantId') as string | undefined };
}

/** JSON text of an optional id for ROTATE_SCRIPT, '' for none; and back. */
function optionalArg(value: string | undefined): string {
  return value === undefined ? '' : JSON.stringify(value);
}

function fromOptionalArg(text: string): string | undefined {
  return text === '' ? undefined : (JSON.parse(text) as string);
}

function takenError(field: TakenField, record: ApiKeyRecord): Error {
  return alreadyExists(field, field === 'id' ? record.id : record.keyPrefix);
}

/**
 * Strips the command arguments ioredis attaches to its errors (`err.command.args`, also on the
 * node errors a Cluster error carries): for an insert or a rotation they hold the record, keyHash
 * included, and errors end up in logs. The command's name stays.
 */
function withoutArguments(error: unknown, depth = 0): unknown {
  if (error === null || typeof error !== 'object' || depth > 3) return error;
  const fields = error as { command?: unknown; lastNodeError?: unknown; cause?: unknown; previousErrors?: unknown };
  if (fields.command !== null && typeof fields.command === 'object') {
    const name = (fields.command as { name?: unknown }).name;
    try {
      Object.defineProperty(error, 'command', { value: { name }, enumerable: true, writable: true, configurable: true });
    } catch {
      // A frozen error: nothing more can be done here (keygate's own wrapping copies only safe fields).
    }
  }
  withoutArguments(fields.lastNodeError, depth + 1);
  withoutArguments(fields.cause, depth + 1);
  if (Array.isArray(fields.previousErrors)) for (const previous of fields.previousErrors) withoutArguments(previous, depth + 1);
  return error;
}

/** Runs a store operation and strips command arguments from what it throws. */
async function scrubbed<T>(operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    throw withoutArguments(error);
  }
}

/**
 * Keeps keys in Redis through ioredis. On standalone Redis every method is atomic (`purge` per
 * record, `addUsage` per key of the batch; `listAudit` reads in pages); on Redis Cluster, `insert`,
 * `rotate`, `purge` and a delete's entry in the deleted set are ordered steps (the file's header
 * comment says which). Implements the optional capabilities `subscribe`, `release`
 * (`concurrency`), `appendAudit`/`listAudit` (`audit`), `addUsage`/`readUsage` (`usage`),
 * `claimAlert` (`alerts`) and `reserve`/`settle` (`leases`, for `keygate({ consistency: 'leased' })`);
 * not `consumeNow` (`synchronous`), which only a store counting in the caller's process can offer.
 *
 * @example
 * ```ts
 * import Redis from 'ioredis';
 * import { RedisStore } from 'keygate/redis';
 *
 * const redis = new Redis(process.env.REDIS_URL, { autoResendUnfulfilledCommands: false });
 * const keys = keygate({ store: new RedisStore({ client: redis }), prefix: 'pk_live' });
 * ```
 */
export class RedisStore implements ApiKeyStore {
  readonly #client: RedisClient & ScriptCommands;
  /** The one wait for readiness shared by every call made while the client connects. */
  #becomingReady: Promise<void> | undefined;
  readonly #ns: string;
  readonly #channel: string;
  /** Listeners share one subscription connection, open while there is at least one. */
  readonly #listeners = new ChangeListeners({ onFirst: () => this.#openSubscriber(), onLast: () => this.#closeSubscriber() });
  #subscriber: RedisClient | undefined;

  constructor(options: RedisStoreOptions) {
    if (options === null || typeof options !== 'object') throw new TypeError('RedisStore needs options: { client }');
    rejectUnknownOptions(options, OPTIONS, 'RedisStore');
    const client = options.client as unknown;
    if (!client || typeof client !== 'object' || typeof (client as { defineCommand?: unknown }).defineCommand !== 'function') {
      throw new TypeError('RedisStore: `client` must be an ioredis Redis or Cluster instance');
    }
    const ns = options.keyPrefix ?? 'keygate:';
    if (typeof ns !== 'string' || /[\s{}]/.test(ns)) throw new TypeError('RedisStore: `keyPrefix` must be a string without spaces or braces');
    this.#ns = ns;
    this.#channel = `${ns}invalidate`;
    const redis = client as RedisClient;
    redis.defineCommand('keygateInsertV1', { numberOfKeys: 1, lua: INSERT_SCRIPT });
    // No numberOfKeys: the caller passes it first, as a record has one to three list keys.
    redis.defineCommand('keygateInsertRecordV2', { lua: INSERT_RECORD_SCRIPT });
    redis.defineCommand('keygateRotateV2', { lua: ROTATE_SCRIPT });
    // The deleted set is a second key on standalone Redis only (another slot on a Cluster).
    redis.defineCommand('keygateUpdateV4', { lua: UPDATE_SCRIPT });
    redis.defineCommand('keygatePurgeV3', { lua: PURGE_SCRIPT });
    // A record's usage is one day hash per day it has cells: a variable number of keys.
    redis.defineCommand('keygatePurgeRecordV3', { lua: PURGE_RECORD_SCRIPT });
    redis.defineCommand('keygateAppendAuditV1', { lua: APPEND_AUDIT_SCRIPT });
    redis.defineCommand('keygateListAuditV1', { lua: LIST_AUDIT_SCRIPT });
    redis.defineCommand('keygateAddUsageV2', { lua: ADD_USAGE_SCRIPT });
    redis.defineCommand('keygateReadUsageV1', { lua: READ_USAGE_SCRIPT });
    redis.defineCommand('keygateClaimAlertV1', { numberOfKeys: 1, lua: CLAIM_ALERT_SCRIPT });
    redis.defineCommand('keygateDeleteIfV1', { numberOfKeys: 1, lua: DELETE_IF_SCRIPT });
    redis.defineCommand('keygateClaimRotationV1', { numberOfKeys: 1, lua: CLAIM_ROTATION_SCRIPT });
    redis.defineCommand('keygateUndoRotationV1', { numberOfKeys: 1, lua: UNDO_ROTATION_SCRIPT });
    redis.defineCommand('keygateConsumeV6', { numberOfKeys: 2, lua: CONSUME_SCRIPT });
    redis.defineCommand('keygateReserveV1', { numberOfKeys: 2, lua: RESERVE_SCRIPT });
    redis.defineCommand('keygateSettleV1', { numberOfKeys: 2, lua: SETTLE_SCRIPT });
    this.#client = redis as RedisClient & ScriptCommands;
  }

  /** A secret-free summary: the namespace. */
  toJSON(): { keyPrefix: string } {
    return { keyPrefix: this.#ns };
  }

  /** One script on standalone Redis; on a Cluster, index, lists, then record (see the header comment). */
  async insert(record: ApiKeyRecord): Promise<void> {
    await scrubbed(async () => {
      const redis = await this.#connected();
      if (redis.isCluster) await this.#insertInOrder(redis, record);
      else await this.#insertAtOnce(redis, record);
    });
  }

  async findById(id: string): Promise<ApiKeyRecord | null> {
    return decodeRecord(await (await this.#connected()).hgetall(this.#recordKey(id)));
  }

  async findByKeyPrefix(keyPrefix: string): Promise<ApiKeyRecord | null> {
    const id = await (await this.#connected()).get(this.#indexKey(keyPrefix));
    if (id === null) return null;
    const record = await this.findById(id);
    return record && record.keyPrefix === keyPrefix ? record : null;
  }

  /**
   * One script on either deployment: checks, revocation stamp, "deleted once" rule, write and
   * invalidation message. On standalone Redis the same script adds a deleted record to the deleted
   * set; on a Cluster that set is written around it (see the header comment).
   */
  async update(id: string, patch: ApiKeyPatch): Promise<ApiKeyRecord | null> {
    const reply = await scrubbed(async () => {
      const redis = await this.#connected();
      const args = [this.#channel, id, ...encodePatch(patch)];
      if (!redis.isCluster) return redis.keygateUpdateV4(2, this.#recordKey(id), this.#deletedKey(), ...args);
      return this.#updateInOrder(redis, id, args, instantOf(ownValue(patch, 'deletedAt')));
    });
    if (reply === null) return null;
    if (typeof reply === 'number') throw revokedKeyCannotChangeStatus();
    // Other processes heard it from the script; this one's listeners hear it now.
    this.#listeners.notify(id);
    return decodeRecord(pairsToHash(reply));
  }

  /** One script on standalone Redis; on a Cluster, claim, insert and (on failure) undo (see the header comment). */
  async rotate(rotation: StoreRotation): Promise<{ old: ApiKeyRecord; replacement: ApiKeyRecord } | null> {
    const redis = await this.#connected();
    return redis.isCluster ? this.#rotateInOrder(redis, rotation) : this.#rotateAtOnce(redis, rotation);
  }

  /**
   * Pages through the list sorted set of the owner, the tenant or everyone, reading each record and
   * keeping those that match, until `limit` are found or the set ends. Deleted records stay in the
   * list sets until purged and are left out here (unless `includeDeleted`), from the record as
   * read, so a page is never short because of them.
   */
  async list(query: StoreListQuery): Promise<ApiKeyRecord[]> {
    const redis = await this.#connected();
    const includeDeleted = ownValue(query, 'includeDeleted') === true;
    const index =
      query.ownerId !== undefined
        ? `${this.#ns}list:owner:${query.ownerId}`
        : query.tenantId !== undefined
          ? `${this.#ns}list:tenant:${query.tenantId}`
          : `${this.#ns}list`;
    const found: ApiKeyRecord[] = [];
    let start = query.after ? `(${listMember(query.after.createdAt, query.after.id)}` : '-';
    while (found.length < query.limit) {
      const members = await redis.zrangebylex(index, start, '+', 'LIMIT', 0, LIST_BATCH);
      if (members.length === 0) break;
      const records = await Promise.all(members.map((member) => this.findById(memberId(member))));
      for (const record of records) {
        if (!record) continue;
        if (query.tenantId !== undefined && record.tenantId !== query.tenantId) continue;
        if (query.status !== undefined && record.status !== query.status) continue;
        if (!includeDeleted && isDeleted(record)) continue;
        found.push(record);
        if (found.length === query.limit) break;
      }
      if (members.length < LIST_BATCH) break;
      start = `(${members[members.length - 1] as string}`;
    }
    return found;
  }

  /**
   * Walks the deleted set from its start up to `deletedBefore` (one ZRANGEBYLEX per batch, the last
   * member as the cursor) and purges each record it names: on standalone Redis with one script per
   * record, on a Cluster with ordered steps (see the header comment). Each record is judged as
   * stored when it is removed, never by the deleted set alone. Returns how many this call removed.
   */
  async purge(purge: StorePurge): Promise<number> {
    const redis = await this.#connected();
    const before = instantOf(ownValue(purge, 'deletedBefore'));
    // No instant a Date holds is before an invalid or an earliest deletedBefore.
    if (before === null || before <= -TIME_OFFSET) return 0;
    const end = before > TIME_OFFSET ? '+' : `(${sortableInstant(before)}`;
    let start = '-';
    let removed = 0;
    for (;;) {
      const members = await redis.zrangebylex(this.#deletedKey(), start, end, 'LIMIT', 0, PURGE_BATCH);
      if (members.length === 0) break;
      const outcomes = await Promise.allSettled(
        members.map((member) => (redis.isCluster ? this.#purgeInOrder(redis, member, before) : this.#purgeAtOnce(redis, member, before))),
      );
      for (const outcome of outcomes) {
        if (outcome.status === 'rejected') throw withoutArguments(outcome.reason);
        if (outcome.value === 'purged') removed++;
      }
      if (members.length < PURGE_BATCH) break;
      start = `(${members[members.length - 1] as string}`;
    }
    return removed;
  }

  /**
   * One EVALSHA: deadline, lifecycle and limits, counted all or nothing (see CONSUME_SCRIPT), and
   * for a request with a concurrency claim its lease, in the same script.
   * `request.deadline` is compared with the Redis server's clock: keep the clocks of the app hosts
   * and of Redis in sync (NTP). A Redis clock running ahead by more than `storeTimeoutMs` would
   * refuse every consume with `deadline_exceeded`.
   */
  async consume(id: string, request: ConsumeRequest): Promise<ConsumeOutcome | null> {
    const limitField = limitReader(request);
    const claim = (ownValue(request, 'concurrency') ?? undefined) as ConcurrencyClaim | undefined;
    const reply = await this.#ready().keygateConsumeV6(this.#recordKey(id), this.#leasesKey(id), ...countingArgs(request, limitField), ...claimArgs(claim));
    if (!reply) return null;
    const [admitted, refusal, useCount] = reply;
    const outcome: ConsumeOutcome = { admitted: admitted === 1, useCount: Number(useCount) };
    if (refusal !== '') outcome.refusal = refusal as ConsumeRefusal;
    // A deadline or lifecycle refusal is the 3-element reply: no counters were looked at.
    if (reply.length > 3) {
      addCountedFigures(outcome, reply, limitField, request.now);
      if (claim !== undefined) outcome.inFlight = Number(reply[5 + QUOTA_WINDOWS.length]);
    }
    return outcome;
  }

  /**
   * One EVALSHA (RESERVE_SCRIPT): deadline, lifecycle and limits, as for a consume, then the grant
   * `decideReservation` decides (the bucket refilling only up to its capacity minus the tokens of
   * the key's live holds), counted and kept as a hold in the record's holds hash, lapsed holds
   * dropped, all or nothing; a refusal writes nothing. The deadline is compared with the Redis
   * server's clock, as for a consume. Changes no `updatedAt` and publishes nothing: a reservation
   * is a use of the key, not a change of it.
   */
  async reserve(id: string, request: ReserveRequest): Promise<ReserveOutcome | null> {
    const limitField = limitReader(request);
    const lease = ownValue(request, 'lease');
    if (typeof lease !== 'string') throw new TypeError('RedisStore.reserve: `lease` must be a string');
    const reply = await this.#ready().keygateReserveV1(
      this.#recordKey(id),
      this.#holdsKey(id),
      ...countingArgs(request, limitField),
      // Not a finite number (`'undefined'`, `'NaN'`): an error reply, nothing counted.
      String(ownValue(request, 'units')),
      lease,
      String(ownValue(request, 'leaseMs')),
    );
    if (!reply) return null;
    const [admitted, refusal, useCount] = reply;
    const outcome: ReserveOutcome = { admitted: admitted === 1, granted: 0, useCount: Number(useCount) };
    if (refusal !== '') outcome.refusal = refusal as ConsumeRefusal;
    if (reply.length > 3) {
      addCountedFigures(outcome, reply, limitField, request.now);
      outcome.granted = Number(reply[5 + QUOTA_WINDOWS.length]);
    }
    return outcome;
  }

  /**
   * One EVALSHA (SETTLE_SCRIPT): gives back what `decideSettlement` decides and removes the hold
   * (with every lapsed one), or changes nothing when the record or the hold is not there (settled
   * before, lapsed and dropped): a retry gives nothing back twice, so, unlike a consume, it may
   * wait for a connection being made and run late. Changes no `updatedAt` and publishes nothing.
   */
  async settle(id: string, settlement: Settlement): Promise<void> {
    const limitField = limitReader(settlement);
    const lease = ownValue(settlement, 'lease');
    if (typeof lease !== 'string') throw new TypeError('RedisStore.settle: `lease` must be a string');
    await (
      await this.#connected()
    ).keygateSettleV1(
      this.#recordKey(id),
      this.#holdsKey(id),
      String(settlement.now),
      lease,
      // Not a finite number: an error reply, nothing given back.
      String(ownValue(settlement, 'unspent')),
      numberArg(limitField('perSecond')),
      numberArg(limitField('burst')),
    );
  }

  /**
   * One ZREM on the record's leases key (a single key, so a single node on a Cluster). Changes no
   * counter and publishes nothing; an unknown record or lease is no error.
   */
  async release(id: string, lease: string): Promise<void> {
    await (await this.#connected()).zrem(this.#leasesKey(id), lease);
  }

  /**
   * Hears the changes every process publishes, over a connection of its own (a duplicate of the
   * client), opened for the first listener and closed after the last one leaves. After that
   * connection is lost and restored, listeners get `null`: what changed meanwhile is unknown.
   */
  subscribe(listener: (id: string | null) => void): () => void {
    return this.#listeners.add(listener);
  }

  /**
   * Appends an audit entry: one script writes its key and its member in every index it joins (the
   * global one, and those of its keyId, tenantId, actor id and environment), or nothing when an
   * entry with its id exists (`already_exists`). Every key is under the `{audit}` hash tag, so
   * this is one atomic step on a Cluster too. `purge` never touches the audit trail.
   */
  async appendAudit(entry: AuditEntry): Promise<void> {
    const at = instantOf(ownValue(entry, 'at'));
    if (at === null) throw new TypeError('RedisStore.appendAudit: `at` must be a valid Date');
    const id = ownValue(entry, 'id');
    if (typeof id !== 'string' || id === '') throw new TypeError('RedisStore.appendAudit: `id` must be a non-empty string');
    const actor = ownValue(entry, 'actor') ?? null;
    // Stored and indexed by its id: an actor without one could be stored but never found by it.
    if (actor !== null && (typeof actor !== 'object' || typeof ownValue(actor, 'id') !== 'string')) {
      throw new TypeError('RedisStore.appendAudit: `actor` must be null or { id: string, keyPrefix?: string }');
    }
    const filters: AuditFilters = {
      keyId: stringOrUndefined(ownValue(entry, 'keyId')),
      tenantId: stringOrUndefined(ownValue(entry, 'tenantId')),
      actorId: actor === null ? undefined : (ownValue(actor, 'id') as string),
      environment: stringOrUndefined(ownValue(entry, 'environment')),
    };
    const keys = [this.#auditKey(`e:${id}`), this.#auditKey('all'), ...this.#auditIndexes(filters)];
    const json = encodeAuditEntry(entry, at, filters);
    const reply = await scrubbed(async () => (await this.#connected()).keygateAppendAuditV1(keys.length, ...keys, json, listMember(new Date(at), id)));
    if (reply !== 1) throw alreadyExists('id', id);
  }

  /**
   * Walks, in (at, id) order, the index of the query's filter with the fewest entries in its range
   * (the global index without a filter), keeping the entries every other filter's index also holds,
   * until `limit` are found or the range ends: LIST_AUDIT_SCRIPT finds the members of one page
   * (reading at most AUDIT_SCAN_BUDGET of them per run, then answering with a cursor), then one MGET
   * reads their entries. The indexes and entries share one slot, so this works on a Cluster as is.
   */
  async listAudit(query: StoreAuditQuery): Promise<AuditEntry[]> {
    const limit = Math.floor(ownValue(query, 'limit') as number);
    if (!(limit > 0)) return [];
    const range = auditRange(query);
    if (range === null) return [];
    const filters = this.#auditIndexes({
      keyId: stringOrUndefined(ownValue(query, 'keyId')),
      tenantId: stringOrUndefined(ownValue(query, 'tenantId')),
      actorId: stringOrUndefined(ownValue(query, 'actorId')),
      environment: stringOrUndefined(ownValue(query, 'environment')),
    });
    const keys = filters.length > 0 ? filters : [this.#auditKey('all')];
    const redis = await this.#connected();
    const found: AuditEntry[] = [];
    let start = range.start;
    for (;;) {
      const wanted = String(limit - found.length);
      const [state, cursor, members] = await redis.keygateListAuditV1(keys.length, ...keys, start, range.end, wanted, String(AUDIT_SCAN_BUDGET));
      if (members.length > 0) {
        const ids = members.map(memberId);
        const texts = await redis.mget(...ids.map((id) => this.#auditKey(`e:${id}`)));
        // An index member without its entry (an entry removed by hand) is skipped; the walk goes on.
        texts.forEach((text, i) => {
          if (text !== null) found.push(decodeAuditEntry(ids[i] as string, text));
        });
      }
      if (found.length >= limit || state === 'end' || cursor === '') return found;
      start = `(${cursor}`;
    }
  }

  /**
   * Adds a batch of usage cells: one ADD_USAGE_SCRIPT per key, all sent at once (each in its key's
   * slot, so on a Cluster each goes to its own node). Each key's cells are added in one step, once
   * per (batch id, key), and only while its record exists (the cells of a key never inserted or
   * purged are dropped in that step): the script remembers the batch id beside the key's cells,
   * so a retried batch adds nothing to the keys it reached before and the rest to those it did not
   * (a batch half applied when a process died or the connection dropped). Rejects when any key's
   * script failed, after every one has answered, so the caller retries the batch with the same id.
   */
  async addUsage(batch: UsageBatch): Promise<void> {
    const now = instantOf(ownValue(batch, 'now'));
    if (now === null) throw new TypeError('RedisStore.addUsage: `now` must be a valid Date');
    const batchId = ownValue(batch, 'id');
    if (typeof batchId !== 'string' || batchId === '') throw new TypeError('RedisStore.addUsage: `id` must be a non-empty string');
    // Cells merged per key and identity: two cells of one identity in one batch (which the caller
    // should not send) would otherwise each read the stored cell before either is written.
    const byKey = new Map<string, Map<string, UsageCell>>();
    for (const given of batch.cells) {
      const cell = usageCellOf(given);
      let cells = byKey.get(cell.keyId);
      if (!cells) byKey.set(cell.keyId, (cells = new Map()));
      const identity = cellKeyOf(cell);
      const existing = cells.get(identity);
      if (existing) mergeCell(existing, cell);
      else cells.set(identity, cell);
    }
    if (byKey.size === 0) return;
    const redis = await this.#connected();
    const outcomes = await Promise.allSettled([...byKey].map(([keyId, cells]) => this.#addKeyUsage(redis, batchId, now, keyId, [...cells.values()])));
    const failed = outcomes.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
    if (failed) throw withoutArguments(failed.reason);
  }

  /**
   * The cells of one key in a range of days: the key's days set is read (ZRANGEBYSCORE), then
   * READ_USAGE_SCRIPT reads every day hash in one step, after checking the days are still those
   * (a flush at the turn of a day may add one in between: then both are read again). So a reader
   * never sees a key's cells of one batch half added, even when the batch spans two days.
   */
  async readUsage(query: StoreUsageQuery): Promise<UsageCell[]> {
    const keyId = ownValue(query, 'keyId');
    const fromDay = ownValue(query, 'fromDay') as number;
    const toDay = ownValue(query, 'toDay') as number;
    // No cell is ever stored under an empty keyId (addUsage refuses one).
    if (typeof keyId !== 'string' || keyId === '' || !(fromDay <= toDay)) return [];
    const redis = await this.#connected();
    const daysKey = this.#usageKey(keyId, 'days');
    for (let attempt = 1; attempt <= USAGE_ATTEMPTS; attempt++) {
      const days = await redis.zrangebyscore(daysKey, dayBound(fromDay), dayBound(toDay));
      if (days.length === 0) return [];
      const keys = [daysKey, ...days.map((day) => this.#usageKey(keyId, `d:${day}`))];
      const reply = await redis.keygateReadUsageV1(keys.length, ...keys, dayBound(fromDay), dayBound(toDay), ...days);
      if (reply === 'changed') continue;
      return reply.flatMap((pairs, i) => decodeUsageDay(keyId, Number(days[i]), pairsToHash(pairs)));
    }
    throw new Error('RedisStore: the usage days of a key kept changing while they were read');
  }

  /**
   * Claims a named alert with one script on the claim's key: `true` when no claim of that name is
   * live at `claim.now` (the caller's clock; the stored `expiresAt` decides, not Redis's expiry),
   * and the claim is stored until `expiresAt`. The key expires a margin after that on Redis's clock,
   * so claims take no room for good.
   */
  async claimAlert(claim: AlertClaim): Promise<boolean> {
    const name = ownValue(claim, 'name');
    const expiresAt = instantOf(ownValue(claim, 'expiresAt'));
    const now = instantOf(ownValue(claim, 'now'));
    if (typeof name !== 'string') throw new TypeError('RedisStore.claimAlert: `name` must be a string');
    if (expiresAt === null || now === null) throw new TypeError('RedisStore.claimAlert: `expiresAt` and `now` must be valid Dates');
    const ttl = Math.min(MAX_TTL_MS, Math.max(0, expiresAt - now) + ALERT_TTL_MARGIN_MS);
    const reply = await (await this.#connected()).keygateClaimAlertV1(this.#alertKey(name), String(expiresAt), String(now), String(ttl));
    return reply === 1;
  }

  /** One key's share of a usage batch: ADD_USAGE_SCRIPT on its record, days set, applied-batch set and day hashes. */
  async #addKeyUsage(redis: RedisClient & ScriptCommands, batchId: string, now: number, keyId: string, cells: UsageCell[]): Promise<void> {
    const keys = [this.#recordKey(keyId), this.#usageKey(keyId, 'days'), this.#usageKey(keyId, 'batches')];
    const positions = new Map<number, number>();
    const args = [batchId, String(now), String(now + RETAIN_BATCH_IDS_MS), String(RETAIN_BATCH_IDS_MS + BATCH_IDS_TTL_MARGIN_MS)];
    for (const cell of cells) {
      let position = positions.get(cell.day);
      if (position === undefined) {
        keys.push(this.#usageKey(keyId, `d:${cell.day}`));
        position = keys.length;
        positions.set(cell.day, position);
      }
      args.push(String(position), String(cell.day), usageField(cell), ...USAGE_NUMBER_FIELDS.map((field) => String(cell[field])));
    }
    await scrubbed(() => redis.keygateAddUsageV2(keys.length, ...keys, ...args));
  }

  /** Standalone insert: INSERT_RECORD_SCRIPT declares the record, its index and its lists. */
  async #insertAtOnce(redis: RedisClient & ScriptCommands, record: ApiKeyRecord): Promise<void> {
    const keys = [this.#recordKey(record.id), this.#indexKey(record.keyPrefix), this.#deletedKey(), ...this.#listKeys(listOwnersOf(record))];
    const reply = await redis.keygateInsertRecordV2(
      keys.length,
      ...keys,
      record.id,
      listMember(record.createdAt, record.id),
      deletedMemberOf(record),
      ...encodeRecord(record),
    );
    if (reply[0] === 'taken') throw takenError(reply[1], record);
  }

  /**
   * Cluster insert: index (SET NX), then lists, then (for a record inserted already deleted) its
   * deleted-set member, then the record. When any step fails (the id is taken, a list key holds
   * something else, the connection drops, the server refuses a command), what this call added is
   * taken back before the error is thrown: the index entry if it set it, the list and deleted-set
   * members that were new. An entry that already existed is left alone: it belongs to whichever
   * record owns it.
   */
  async #insertInOrder(redis: RedisClient & ScriptCommands, record: ApiKeyRecord): Promise<void> {
    const indexKey = this.#indexKey(record.keyPrefix);
    if ((await redis.set(indexKey, record.id, 'NX')) !== 'OK') throw takenError('keyPrefix', record);
    const member = listMember(record.createdAt, record.id);
    const lists = this.#listKeys(listOwnersOf(record));
    const deleted = deletedMemberOf(record);
    let added: string[] = [];
    let addedDeleted = false;
    try {
      // Listed before written: a crash here leaves list entries without a record, which list() skips.
      const outcomes = await Promise.allSettled(lists.map((list) => redis.zadd(list, 0, member)));
      added = lists.filter((_list, i) => {
        const outcome = outcomes[i];
        return outcome?.status === 'fulfilled' && outcome.value === 1;
      });
      const failed = outcomes.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
      if (failed) throw failed.reason;
      // Also before the record: a crash leaves a member without a record, which purge removes.
      if (deleted !== '') addedDeleted = (await redis.zadd(this.#deletedKey(), 'NX', 0, deleted)) === 1;
      if ((await redis.keygateInsertV1(this.#recordKey(record.id), ...encodeRecord(record))) !== 1) throw takenError('id', record);
    } catch (error) {
      await Promise.allSettled([
        ...added.map((list) => redis.zrem(list, member)),
        ...(addedDeleted ? [redis.zrem(this.#deletedKey(), deleted)] : []),
        this.#deleteIndexIf(indexKey, record.id),
      ]);
      throw error;
    }
  }

  /**
   * Standalone rotation: ROTATE_SCRIPT, every check and write in one step. The script copies the
   * settings from the old record as it holds them; only the replacement's identity and keygate's
   * own fields are sent. Its list keys are declared for the owner and tenant the caller gave the
   * replacement (the old record's, which no update changes); should the old record hold others
   * (edited by hand), the script refuses before any write, names them, and is sent once more.
   */
  async #rotateAtOnce(
    redis: RedisClient & ScriptCommands,
    rotation: StoreRotation,
  ): Promise<{ old: ApiKeyRecord; replacement: ApiKeyRecord } | null> {
    const next = rotation.replacement;
    const identity = encodeRecord(next, CALLER_SET);
    let owners = listOwnersOf(next);
    for (let attempt = 1; ; attempt++) {
      const keys = [this.#recordKey(rotation.oldId), this.#recordKey(next.id), this.#indexKey(next.keyPrefix), ...this.#listKeys(owners)];
      const reply = await scrubbed(() =>
        redis.keygateRotateV2(
          keys.length,
          ...keys,
          ...retirementArgs(rotation),
          this.#channel,
          rotation.oldId,
          next.id,
          listMember(next.createdAt, next.id),
          optionalArg(owners.ownerId),
          optionalArg(owners.tenantId),
          String(CALLER_SET_FIELDS.length),
          ...CALLER_SET_FIELDS,
          ...identity,
        ),
      );
      if (reply === null) return null;
      switch (reply[0]) {
        case 'retired':
          throw retiredKeyCannotRotate();
        case 'taken':
          throw takenError(reply[1], next);
        case 'invalid':
          throw invalidRecord(rotation.oldId, reply[1], reply[2]);
        case 'lists':
          if (attempt >= LIST_ATTEMPTS) throw new Error('RedisStore: the ownerId or tenantId of the record being rotated kept changing');
          owners = { ownerId: fromOptionalArg(reply[1]), tenantId: fromOptionalArg(reply[2]) };
          continue;
        case 'rotated':
          break;
      }
      this.#listeners.notify(rotation.oldId);
      return { old: decodeRecord(pairsToHash(reply[1])) as ApiKeyRecord, replacement: decodeRecord(pairsToHash(reply[2])) as ApiKeyRecord };
    }
  }

  /** Cluster rotation: claim the old record, insert the replacement, undo the claim if that fails. */
  async #rotateInOrder(
    redis: RedisClient & ScriptCommands,
    rotation: StoreRotation,
  ): Promise<{ old: ApiKeyRecord; replacement: ApiKeyRecord } | null> {
    const oldKey = this.#recordKey(rotation.oldId);
    const claimed = retirementArgs(rotation);
    // Published before anything is written, as the standalone script does: a server that refuses
    // this client PUBLISH (an ACL without it) refuses the rotation while it has changed nothing,
    // rather than after the replacement exists. A message with no change is harmless to a cache.
    await scrubbed(() => redis.publish(this.#channel, rotation.oldId));
    const claim = await scrubbed(() => redis.keygateClaimRotationV1(oldKey, ...claimed));
    if (claim === null) return null;
    if (typeof claim === 'number') throw retiredKeyCannotRotate();
    const [previousRevokedAt, previousUpdatedAt, previousStatus, pairs] = claim;
    let old: ApiKeyRecord;
    let replacement: ApiKeyRecord;
    try {
      const afterClaim = pairsToHash(pairs);
      old = decodeRecord(afterClaim) as ApiKeyRecord;
      // The settings and the uses left at the instant of the claim, as the same script saw them:
      // the record after the claim, with the status it had before (the claim may have revoked it).
      const beforeClaim = decodeRecord({ ...afterClaim, status: previousStatus }) as ApiKeyRecord;
      replacement = replacementFor(rotation, decodeStoredRecord(beforeClaim));
      await scrubbed(() => this.#insertInOrder(redis, replacement));
    } catch (error) {
      await scrubbed(() => redis.keygateUndoRotationV1(oldKey, ...claimed, previousRevokedAt, previousUpdatedAt, previousStatus)).catch(() => undefined);
      // Caches that read the old record while it was claimed read it again.
      await this.#publish(rotation.oldId).catch(() => undefined);
      throw error;
    }
    await this.#publish(rotation.oldId);
    return { old, replacement: asStored(replacement) };
  }

  /**
   * Cluster update. A patch without `deletedAt` is the update script alone. One with it (a delete)
   * is ordered around the script, as an insert is around its record: (1) the member for the
   * patch's `deletedAt` joins the deleted set (ZADD NX) before the record changes, so no deleted
   * record is ever missing from it; (2) the update script; (3) when the record kept an earlier
   * `deletedAt` (deleted before), its member for that one is added and the one from (1) taken
   * back. When (2) changes nothing for sure (unknown id, refused, an error reply), what (1) added
   * is taken back; after a lost connection it stays, and purge keeps a member whose record is not
   * deleted (it may be a delete under way) until the record is deleted.
   */
  async #updateInOrder(
    redis: RedisClient & ScriptCommands,
    id: string,
    args: string[],
    deletedAt: number | null,
  ): Promise<string[] | 0 | null> {
    const recordKey = this.#recordKey(id);
    if (deletedAt === null) return redis.keygateUpdateV4(1, recordKey, ...args);
    const deletedKey = this.#deletedKey();
    const provisional = deletedMember(deletedAt, id);
    const added = (await redis.zadd(deletedKey, 'NX', 0, provisional)) === 1;
    const takeBack = async () => {
      if (added) await redis.zrem(deletedKey, provisional).catch(() => undefined);
    };
    let reply: string[] | 0 | null;
    try {
      reply = await redis.keygateUpdateV4(1, recordKey, ...args);
    } catch (error) {
      if (isReplyError(error)) await takeBack();
      throw error;
    }
    if (reply === null || typeof reply === 'number') {
      await takeBack();
      return reply;
    }
    const kept = storedDeletedAt(ownValue(pairsToHash(reply), 'deletedAt') as string | undefined);
    if (typeof kept === 'number' && kept !== deletedAt) {
      await redis.zadd(deletedKey, 0, deletedMember(kept, id));
      await takeBack();
    }
    return reply;
  }

  /**
   * Standalone purge of the record a deleted-set member names: its hash and its usage days are
   * read together (for the keyPrefix, owner, tenant and createdAt that name its index and list
   * keys, and the day hashes of its usage), then PURGE_SCRIPT judges it as stored and removes
   * everything in one step. Read again and retried when those changed in between (an edit by hand,
   * an id used again, or a flush of the record's usage adding a day).
   */
  async #purgeAtOnce(redis: RedisClient & ScriptCommands, member: string, before: number): Promise<PurgeOutcome> {
    const id = memberId(member);
    const daysKey = this.#usageKey(id, 'days');
    const fixed = [this.#recordKey(id), this.#leasesKey(id), this.#holdsKey(id), this.#deletedKey(), daysKey];
    for (let attempt = 1; attempt <= USAGE_ATTEMPTS; attempt++) {
      // Sent together: one round trip.
      const [hash, days] = await Promise.all([redis.hgetall(fixed[0] as string), redis.zrange(daysKey, 0, -1)]);
      let keys = fixed;
      let declared = ['0'];
      if (Object.keys(hash).length > 0) {
        const identity = storedIdentity(hash);
        // A record whose index or lists cannot be found stays, for someone to look at.
        if (identity === null) return 'kept';
        const lists = this.#listKeys(identity);
        keys = [...fixed, this.#indexKey(identity.keyPrefix), ...lists, ...days.map((day) => this.#usageKey(id, `d:${day}`))];
        declared = [String(lists.length), ...identity.raw, listMember(identity.createdAt, id), ...days];
      }
      const reply = await redis.keygatePurgeV3(keys.length, ...keys, String(before), this.#channel, id, member, ...declared);
      if (reply === 'changed') continue;
      if (reply === 'purged') this.#listeners.notify(id);
      return reply;
    }
    throw new Error('RedisStore: the keyPrefix, ownerId, tenantId, createdAt or usage days of a record being purged kept changing');
  }

  /**
   * Cluster purge of the record a deleted-set member names, in steps ordered so that no index
   * entry ever names a record that is gone (see the header comment): read the record and judge it;
   * publish; remove its index entry (if it still names it) and its list entries; remove the
   * record and its leases by a script that judges it again as stored; then its deleted-set member.
   * Should that script keep the record after all (edited by hand meanwhile), the index and list
   * entries are put back.
   */
  async #purgeInOrder(redis: RedisClient & ScriptCommands, member: string, before: number): Promise<PurgeOutcome> {
    const id = memberId(member);
    const recordKey = this.#recordKey(id);
    const deletedKey = this.#deletedKey();
    const daysKey = this.#usageKey(id, 'days');
    // The usage days with the record, in the same slot and round trip, for step (4).
    const [hash, daysRead] = await Promise.all([redis.hgetall(recordKey), redis.zrange(daysKey, 0, -1)]);
    let days = daysRead;
    if (Object.keys(hash).length === 0) {
      await redis.zrem(deletedKey, member);
      return 'gone';
    }
    const deletedAt = storedDeletedAt(ownValue(hash, 'deletedAt') as string | undefined);
    // Not deleted (a delete under way, or one whose script never ran) or unreadable: kept as it is.
    if (deletedAt === null || deletedAt === 'unreadable') return 'kept';
    const own = deletedMember(deletedAt, id);
    if (own !== member) {
      await redis.zadd(deletedKey, 0, own);
      await redis.zrem(deletedKey, member);
    }
    if (!(deletedAt < before)) return 'kept';
    const identity = storedIdentity(hash);
    if (identity === null) return 'kept';
    // Before any write, as a rotation: a client refused PUBLISH removes nothing.
    await redis.publish(this.#channel, id);
    const indexKey = this.#indexKey(identity.keyPrefix);
    const unindexed = (await redis.keygateDeleteIfV1(indexKey, id)) === 1;
    const listed = listMember(identity.createdAt, id);
    const lists = this.#listKeys(identity);
    const outcomes = await Promise.allSettled(lists.map((list) => redis.zrem(list, listed)));
    const unlisted = lists.filter((_list, i) => {
      const outcome = outcomes[i];
      return outcome?.status === 'fulfilled' && outcome.value === 1;
    });
    const putBack = () =>
      Promise.allSettled([...(unindexed ? [redis.set(indexKey, id, 'NX')] : []), ...unlisted.map((list) => redis.zadd(list, 0, listed))]);
    const failed = outcomes.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
    if (failed) {
      await putBack();
      throw failed.reason;
    }
    let reply: PurgeOutcome | 'changed' = 'changed';
    for (let attempt = 1; attempt <= USAGE_ATTEMPTS && reply === 'changed'; attempt++) {
      // A flush of the record's usage added a day since they were read: read them again.
      if (attempt > 1) days = await redis.zrange(daysKey, 0, -1);
      const keys = [recordKey, this.#leasesKey(id), this.#holdsKey(id), daysKey, ...days.map((day) => this.#usageKey(id, `d:${day}`))];
      reply = await redis.keygatePurgeRecordV3(keys.length, ...keys, String(before), this.#channel, id, identity.raw[0], ...days);
    }
    if (reply === 'changed') {
      await putBack();
      throw new Error('RedisStore: the usage days of a record being purged kept changing');
    }
    if (reply === 'kept') {
      await putBack();
      return reply;
    }
    await redis.zrem(deletedKey, own);
    if (reply === 'purged') this.#listeners.notify(id);
    return reply;
  }

  #openSubscriber(): void {
    // Our own connection: it may close promptly, without the 2 s grace ioredis gives a socket to say goodbye.
    const client = this.#client;
    let subscriber: RedisClient;
    if (client.isCluster) {
      const cluster = client as Cluster;
      subscriber = cluster.duplicate([], { redisOptions: { ...cluster.options.redisOptions, disconnectTimeout: 200 } });
    } else {
      subscriber = (client as Redis).duplicate({ disconnectTimeout: 200 });
    }
    this.#subscriber = subscriber;
    let connectedBefore = false;
    subscriber.on('message', (channel: string, id: string) => {
      if (channel === this.#channel) this.#listeners.notify(id);
    });
    subscriber.on('ready', () => {
      if (connectedBefore) this.#listeners.notify(null);
      connectedBefore = true;
    });
    subscriber.on('error', () => {
      // Reconnection is ioredis's job; 'ready' after it drops every cache. Without a listener,
      // ioredis would report the error as unhandled.
    });
    subscriber.subscribe(this.#channel).catch(() => undefined);
  }

  #closeSubscriber(): void {
    const subscriber = this.#subscriber;
    this.#subscriber = undefined;
    subscriber?.disconnect();
  }

  /** For the Cluster rotation, whose steps publish nothing themselves. */
  async #publish(id: string): Promise<void> {
    // In-process listeners hear it at once; other processes through Redis.
    this.#listeners.notify(id);
    await this.#client.publish(this.#channel, id);
  }

  /**
   * The client, for a consume: only when connected. A command given to a disconnected ioredis
   * client waits in its offline queue and may run long after keygate answered 503, counting a use
   * that was refused; failing at once keeps "refused" meaning "nothing counted".
   */
  #ready(): RedisClient & ScriptCommands {
    const status = this.#client.status;
    if (status !== 'ready') throw new Error(`Redis is not connected (client status: ${status})`);
    return this.#client;
  }

  /**
   * The client, for everything but a consume: waits (up to 10 s) for a connection that is being
   * made, so an app can use the store right after creating its client. A late write after keygate
   * gave up is harmless here: an unreturned key nobody holds, or a change the caller will retry.
   */
  async #connected(): Promise<RedisClient & ScriptCommands> {
    const client = this.#client;
    if (client.status === 'ready') return client;
    if (client.status === 'end' || client.status === 'close') throw new Error(`Redis is not connected (client status: ${client.status})`);
    // One wait for every call made while connecting: a listener pair per call would pass Node's
    // limit of 10 and warn (MaxListenersExceededWarning) under any real load at start-up.
    this.#becomingReady ??= this.#waitForReady(client).finally(() => {
      this.#becomingReady = undefined;
    });
    await this.#becomingReady;
    return client;
  }

  /** Resolves when the client is ready; rejects when it ends, or after 10 s. */
  #waitForReady(client: RedisClient): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`Redis did not become ready (client status: ${client.status})`)), 10_000);
      const onReady = () => finish();
      const onEnd = () => finish(new Error('Redis connection ended'));
      function finish(error?: Error): void {
        clearTimeout(timer);
        client.off('ready', onReady);
        client.off('end', onEnd);
        if (error) reject(error);
        else resolve();
      }
      client.once('ready', onReady);
      client.once('end', onEnd);
    });
  }

  #recordKey(id: string): string {
    return `${this.#ns}key:{${id}}`;
  }

  /** The record's concurrency leases: the record key's hash tag, so the record's slot. */
  #leasesKey(id: string): string {
    return `${this.#recordKey(id)}:leases`;
  }

  /** The record's holds of leased mode (lease → hold): the record key's hash tag, so the record's slot. */
  #holdsKey(id: string): string {
    return `${this.#recordKey(id)}:holds`;
  }

  #indexKey(keyPrefix: string): string {
    return `${this.#ns}kp:${keyPrefix}`;
  }

  /** The deleted set: one member per deleted record, sorted by deletedAt (see scripts.ts). */
  #deletedKey(): string {
    return `${this.#ns}deleted`;
  }

  /**
   * A key of the audit trail. The `{audit}` hash tag puts the whole trail (entries and indexes) in
   * one slot, so that appending an entry with its index members is one script on a Cluster too.
   * The namespace has no braces, so the tag is always `audit`.
   */
  #auditKey(suffix: string): string {
    return `${this.#ns}{audit}:${suffix}`;
  }

  /** The indexes of the filters given (keyId, tenantId, actor id, environment), in that order. */
  #auditIndexes(filters: AuditFilters): string[] {
    const indexes: string[] = [];
    if (filters.keyId !== undefined) indexes.push(this.#auditKey(`key:${filters.keyId}`));
    if (filters.tenantId !== undefined) indexes.push(this.#auditKey(`tenant:${filters.tenantId}`));
    if (filters.actorId !== undefined) indexes.push(this.#auditKey(`actor:${filters.actorId}`));
    if (filters.environment !== undefined) indexes.push(this.#auditKey(`env:${filters.environment}`));
    return indexes;
  }

  /**
   * A key of one API key's usage analytics (`days`, `batches`, `d:<day>`), under the record key's
   * hash tag `{<id>}`, so in the record's slot: a purge removes them in the record's own script.
   */
  #usageKey(keyId: string, suffix: string): string {
    return `${this.#ns}usage:{${keyId}}:${suffix}`;
  }

  /** An alert claim: a string holding its expiresAt (epoch ms). */
  #alertKey(name: string): string {
    return `${this.#ns}alert:${name}`;
  }

  #listKeys(owners: ListOwners): string[] {
    const lists = [`${this.#ns}list`];
    if (owners.ownerId !== undefined) lists.push(`${this.#ns}list:owner:${owners.ownerId}`);
    if (owners.tenantId !== undefined) lists.push(`${this.#ns}list:tenant:${owners.tenantId}`);
    return lists;
  }

  async #deleteIndexIf(indexKey: string, id: string): Promise<void> {
    if ((await this.#client.get(indexKey)) === id) await this.#client.del(indexKey);
  }
}
