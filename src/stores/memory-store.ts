/**
 * The in-process store: the default for development, tests and single-process apps. Every method
 * runs synchronously under the hood, so each call is atomic in Node's single thread: concurrent
 * consumes can never over-admit, a usage batch is added whole, and of concurrent alert claims one
 * wins. Records and audit entries are kept as JSON text and rebuilt on every read, so a caller
 * mutating what it got back cannot change the store.
 */
import { type CounterState, countingInstant, decideConsume, initialCounters } from '../policy/limits.js';
import { epochOf, lifecycleRefusal } from '../policy/status.js';
import { type Hold, type ReserveOutcome, type ReserveRequest, type Settlement, decideReservation, decideSettlement } from '../policy/reservation.js';
import { INSTANT_FIELDS, OPTIONAL_FIELDS, RECORD_FIELDS, type RecordField } from '../record/schema.js';
import { ownValue } from '../record/decode.js';
import { invalidArgument } from '../errors.js';
import {
  ChangeListeners,
  alreadyExists,
  deletedAtAfterUpdate,
  isPurgeable,
  isRetired,
  replacementFor,
  retiredKeyCannotRotate,
  revokedAtAfterUpdate,
  revokedKeyCannotChangeStatus,
} from './toolkit.js';
import type { ApiKeyRecord, ApiKeyStatus } from '../types.js';
import { RETAIN_BATCH_IDS_MS, mergeCell } from '../usage/cells.js';
import type {
  AlertClaim,
  ApiKeyPatch,
  ApiKeyStore,
  AuditEntry,
  ConsumeOutcome,
  ConsumeRequest,
  StoreAuditQuery,
  StoreListQuery,
  StorePurge,
  StoreRotation,
  StoreUsageQuery,
  UsageBatch,
  UsageCell,
} from './store.js';

/** Options of {@link MemoryStore}. */
export interface MemoryStoreOptions {
  /**
   * Suppress the one-time warning printed when the store is used in a cluster worker, where each
   * process would hold its own keys and counters. @default false
   */
  silenceClusterWarning?: boolean;
}

/**
 * A record at rest. Its settings are one JSON string: a string is a single object the garbage
 * collector never has to look inside, where a record of nested objects, arrays and Dates is dozens
 * (this is what keeps a million keys cheap in heap and in GC time). The string is an array of the
 * values alone, in schema order, instants as epoch milliseconds: field names and ISO dates were
 * more than half of it. The fields `list` filters on, the lifecycle `consume` checks and the
 * counters it touches are kept as plain fields beside it, and not again in the string; the slot
 * itself is the key's `CounterState`.
 */
class StoredKey implements CounterState {
  readonly id: string;
  readonly keyPrefix: string;
  readonly ownerId: string | undefined;
  readonly tenantId: string | undefined;
  status: ApiKeyStatus;
  /** Epoch ms of `revokedAt` / `expiresAt`, or `null`: the consume checks them on every use. */
  revokedAt: number | null;
  expiresAt: number | null;
  readonly createdAt: number;
  /** Epoch ms of `deletedAt`, or `null`: `list` and `purge` look at it. */
  deletedAt: number | null;
  lastUsedAt: number | null;
  useCount: number;
  minute: number;
  minuteCount: number;
  hour: number;
  hourCount: number;
  day: number;
  dayCount: number;
  month: number;
  monthCount: number;
  tokens: number | null;
  tokensAt: number;
  /** Concurrency leases (lease → lapse instant), or `null` until the key's first claim. */
  leases: Map<string, number> | null = null;
  /** Reservations of leased mode not yet settled (lease → hold), or `null` when there are none. */
  holds: Record<string, Hold> | null = null;
  /** No lease lapses before this instant (a lower bound: a released lease may have held it). */
  firstLapse = NO_LEASE_YET;
  /** The record as JSON, without `useCount` and `lastUsedAt`. */
  settings: string;

  // A class, not an object literal: one fixed shape for every key, the smallest V8 can make it.
  constructor(record: ApiKeyRecord) {
    const counters = initialCounters(record.useCount);
    this.id = flat(record.id);
    this.keyPrefix = flat(record.keyPrefix);
    // Own values only: a polluted Object.prototype must not lend a record an owner.
    this.ownerId = ownValue(record, 'ownerId') as string | undefined;
    this.tenantId = ownValue(record, 'tenantId') as string | undefined;
    this.status = record.status;
    this.revokedAt = epochOf(record.revokedAt);
    this.expiresAt = epochOf(record.expiresAt);
    this.createdAt = record.createdAt.getTime();
    this.deletedAt = epochOf(record.deletedAt);
    this.lastUsedAt = epochOf(record.lastUsedAt);
    this.useCount = counters.useCount;
    this.minute = counters.minute;
    this.minuteCount = counters.minuteCount;
    this.hour = counters.hour;
    this.hourCount = counters.hourCount;
    this.day = counters.day;
    this.dayCount = counters.dayCount;
    this.month = counters.month;
    this.monthCount = counters.monthCount;
    this.tokens = counters.tokens;
    this.tokensAt = counters.tokensAt;
    this.settings = settingsOf(record);
  }
}

type Slot = StoredKey;

let warnedAboutCluster = false;

/**
 * `firstLapse` of a key that never held a lease. A small integer, not `Infinity`: V8 boxes a
 * double field in its own heap object, one more per key for a million keys that never use
 * `maxConcurrent`; and a key's first claim then scans its (empty) leases once, which sets it.
 */
const NO_LEASE_YET = -1;

/**
 * A flat copy of a string. Strings built by concatenation (`crypto.randomUUID()`, a key's base62
 * text built character by character) are chains of small pieces in V8: kept for years by a store,
 * a chain costs several times its text (~700 B per key made by `keys.create`, measured). JSON text
 * round-trips every string exactly, lone surrogates included.
 */
function flat(text: string): string {
  return JSON.parse(JSON.stringify(text)) as string;
}

/** The record fields a slot keeps as plain fields (instants as epoch ms), never in `settings`. */
const SLOT_FIELDS: ReadonlySet<string> = new Set<RecordField>(['id', 'keyPrefix', 'ownerId', 'tenantId', 'status', 'revokedAt', 'expiresAt', 'createdAt', 'deletedAt', 'useCount', 'lastUsedAt']);

/** Every other field, in schema order: `settings` is the JSON array of their values. */
const PACKED_FIELDS = RECORD_FIELDS.filter(({ field }) => !SLOT_FIELDS.has(field)).map(({ field }) => ({ field, instant: INSTANT_FIELDS.includes(field) }));

/**
 * Stores a record's settings; JSON text copies everything, so the caller keeps nothing of ours.
 * An absent optional field is `null` (an optional field is a string when present, never `null`).
 */
function settingsOf(record: ApiKeyRecord): string {
  return JSON.stringify(
    PACKED_FIELDS.map(({ field, instant }) => {
      // Own values only, as JSON.stringify of the record would have taken.
      const value = ownValue(record, field);
      if (value === undefined) return null;
      return instant && value instanceof Date ? value.getTime() : value;
    }),
  );
}

/**
 * A fresh record from a slot, its fields in schema order. JSON.parse builds it with this realm's
 * constructors (under jest's vm context too), and a `"__proto__"` key in metadata stays plain data.
 */
function thaw(slot: Slot): ApiKeyRecord {
  const values = JSON.parse(slot.settings) as unknown[];
  const packed = new Map<string, unknown>();
  PACKED_FIELDS.forEach(({ field, instant }, i) => {
    const value = values[i] ?? null;
    packed.set(field, instant && typeof value === 'number' ? new Date(value) : value);
  });
  const fromSlot: Record<string, unknown> = {
    id: slot.id,
    keyPrefix: slot.keyPrefix,
    ownerId: slot.ownerId,
    tenantId: slot.tenantId,
    status: slot.status,
    revokedAt: dateOf(slot.revokedAt),
    expiresAt: dateOf(slot.expiresAt),
    createdAt: new Date(slot.createdAt),
    deletedAt: dateOf(slot.deletedAt),
    useCount: slot.useCount,
    lastUsedAt: dateOf(slot.lastUsedAt),
  };
  const record: Record<string, unknown> = {};
  for (const { field, spec } of RECORD_FIELDS) {
    const value = SLOT_FIELDS.has(field) ? fromSlot[field] : packed.get(field);
    // An absent optional field stays absent, as it came in.
    if (!(spec.kind === 'optionalText' && (value === null || value === undefined))) record[field] = value;
  }
  return record as unknown as ApiKeyRecord;
}

function dateOf(epochMs: number | null): Date | null {
  return epochMs === null ? null : new Date(epochMs);
}

/** Rewrites a slot from a (changed) record, keeping its counters. */
function refreeze(slot: Slot, record: ApiKeyRecord): void {
  slot.settings = settingsOf(record);
  slot.status = record.status;
  slot.revokedAt = epochOf(record.revokedAt);
  slot.expiresAt = epochOf(record.expiresAt);
  slot.deletedAt = epochOf(record.deletedAt);
}

/** True when a slot's key is revoked for good at `at`: the status says so, or `revokedAt` has passed. */
function isRevoked(slot: Slot, at: number): boolean {
  return lifecycleRefusal(slot.status, slot.revokedAt, null, at) === 'api_key_revoked';
}

/** The leases still live at `at`. */
function liveCount(leases: Map<string, number>, at: number): number {
  let live = 0;
  for (const lapse of leases.values()) if (lapse > at) live++;
  return live;
}

/** Drops the leases lapsed at `at` (their instant is at or before it) and finds the next lapse. */
function pruneLeases(slot: Slot, leases: Map<string, number>, at: number): void {
  let first = Number.POSITIVE_INFINITY;
  for (const [lease, lapse] of leases) {
    if (lapse <= at) leases.delete(lease);
    else if (lapse < first) first = lapse;
  }
  slot.firstLapse = first;
}

function compareByPosition(a: Slot, b: Slot): number {
  const byTime = a.createdAt - b.createdAt;
  if (byTime !== 0) return byTime;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * An audit entry at rest: the entry as JSON text (copied in, rebuilt on every read, like a record's
 * settings), beside the fields `listAudit` orders and filters on.
 */
interface StoredEntry {
  /** Epoch ms of `at`: the JSON keeps `at` as ISO text, which sorts wrongly before year 0 and after 9999. */
  readonly at: number;
  readonly id: string;
  readonly keyId: string | null;
  readonly actorId: string | undefined;
  readonly tenantId: string | undefined;
  readonly environment: string | undefined;
  readonly json: string;
}

/** (at, id) order of the audit trail; ids compare as JavaScript strings. */
function compareEntries(a: { at: number; id: string }, b: { at: number; id: string }): number {
  const byTime = a.at - b.at;
  if (byTime !== 0) return byTime;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** The first index of `entries` (sorted) whose position comes after `position` (`strictly`) or not before it. */
function positionIndex(entries: readonly StoredEntry[], position: { at: number; id: string }, strictly: boolean): number {
  let low = 0;
  let high = entries.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    const order = compareEntries(entries[middle] as StoredEntry, position);
    if (order < 0 || (strictly && order === 0)) low = middle + 1;
    else high = middle;
  }
  return low;
}

/** A fresh entry from its JSON text; `at` becomes a Date again. */
function thawEntry(stored: StoredEntry): AuditEntry {
  const entry = JSON.parse(stored.json) as Record<string, unknown>;
  entry.at = new Date(stored.at);
  return entry as unknown as AuditEntry;
}

/** Whether a stored entry matches the filters of a query (its position is checked by the caller). */
function entryMatches(stored: StoredEntry, query: StoreAuditQuery): boolean {
  return (
    (query.keyId === undefined || (stored.keyId !== null && stored.keyId === query.keyId)) &&
    (query.actorId === undefined || stored.actorId === query.actorId) &&
    (query.tenantId === undefined || stored.tenantId === query.tenantId) &&
    (query.environment === undefined || stored.environment === query.environment)
  );
}

/** A usage cell's identity within its key: (day, route, outcome). */
function cellIdentity(cell: UsageCell): string {
  return JSON.stringify([cell.day, cell.route, cell.outcome]);
}

/**
 * Names that live until an instant of the callers' clocks (applied batch ids, alert claims), with
 * lazy clean-up: a name whose instant has passed is dropped by the first call that sees a clock at
 * or past the earliest such instant, so what is kept stays bounded by what is live.
 */
class ExpiringNames {
  readonly #until = new Map<string, number>();
  /** No name lapses before this instant (a lower bound: the name that held it may be gone). */
  #firstLapse = Number.POSITIVE_INFINITY;

  /** The instant `name` lives until, or `undefined`. */
  get(name: string): number | undefined {
    return this.#until.get(name);
  }

  set(name: string, until: number): void {
    this.#until.set(name, until);
    if (until < this.#firstLapse) this.#firstLapse = until;
  }

  /**
   * Drops every name whose instant is at or before `now`. It scans only once one of them may have
   * lapsed, so in steady use a sweep happens when something is there to drop.
   */
  sweep(now: number): void {
    if (now < this.#firstLapse) return;
    let first = Number.POSITIVE_INFINITY;
    for (const [name, until] of this.#until) {
      if (until <= now) this.#until.delete(name);
      else if (until < first) first = until;
    }
    this.#firstLapse = first;
  }
}

/** Applies a patch to a record in place: `null` removes an optional field; a revocation stamps `revokedAt`. */
function applyPatch(record: ApiKeyRecord, patch: ApiKeyPatch): void {
  const fields = record as unknown as Record<string, unknown>;
  const deletedAt = deletedAtAfterUpdate(epochOf(record.deletedAt), patch);
  for (const [field, value] of Object.entries(patch)) {
    if (value === undefined || field === 'deletedAt') continue;
    if (value === null && (OPTIONAL_FIELDS as readonly string[]).includes(field)) delete fields[field];
    else fields[field] = value;
  }
  const revokedAt = revokedAtAfterUpdate(epochOf(record.revokedAt), patch);
  if (revokedAt !== undefined) record.revokedAt = revokedAt === null ? null : new Date(revokedAt);
  if (deletedAt !== undefined) record.deletedAt = new Date(deletedAt);
}

/**
 * Keeps keys in a `Map` in this process.
 *
 * @example
 * ```ts
 * const keys = keygate({ store: new MemoryStore(), prefix: 'sk_test' });
 * ```
 */
export class MemoryStore implements ApiKeyStore {
  // ES private fields keep records (and their hashes) out of util.inspect and JSON.stringify.
  readonly #byId = new Map<string, Slot>();
  readonly #idByKeyPrefix = new Map<string, string>();
  readonly #listeners = new ChangeListeners();
  /** The audit trail in (at, id) order, so a page is a binary search and a short scan. */
  readonly #audit: StoredEntry[] = [];
  readonly #auditIds = new Set<string>();
  /** Usage cells by key, then by (day, route, outcome); flat objects of numbers, copied in and out. */
  readonly #usage = new Map<string, Map<string, UsageCell>>();
  /** Applied batch ids, each until `RETAIN_BATCH_IDS_MS` after its batch's `now`. */
  readonly #batches = new ExpiringNames();
  /** Alert claims, each until its `expiresAt`. */
  readonly #claims = new ExpiringNames();

  constructor(options: MemoryStoreOptions = {}) {
    if (!options.silenceClusterWarning && !warnedAboutCluster && isClusterWorker()) {
      warnedAboutCluster = true;
      process.emitWarning(
        'MemoryStore keeps keys and counters per process; in a cluster each worker enforces its own limits. Use RedisStore or SqlStore to share them.',
        { code: 'KEYGATE_MEMORY_STORE_CLUSTER' },
      );
    }
  }

  /** Number of records held. */
  get size(): number {
    return this.#byId.size;
  }

  async insert(record: ApiKeyRecord): Promise<void> {
    this.#insertNow(record);
  }

  async findById(id: string): Promise<ApiKeyRecord | null> {
    const slot = this.#byId.get(id);
    return slot ? thaw(slot) : null;
  }

  async findByKeyPrefix(keyPrefix: string): Promise<ApiKeyRecord | null> {
    const id = this.#idByKeyPrefix.get(keyPrefix);
    return id === undefined ? null : this.findById(id);
  }

  async update(id: string, patch: ApiKeyPatch): Promise<ApiKeyRecord | null> {
    const slot = this.#byId.get(id);
    if (!slot) return null;
    if (patch.status !== undefined && patch.status !== 'revoked' && isRevoked(slot, patch.updatedAt.getTime())) {
      throw revokedKeyCannotChangeStatus();
    }
    const record = thaw(slot);
    applyPatch(record, patch);
    refreeze(slot, record);
    this.#listeners.notify(id);
    return thaw(slot);
  }

  async rotate(rotation: StoreRotation): Promise<{ old: ApiKeyRecord; replacement: ApiKeyRecord } | null> {
    const slot = this.#byId.get(rotation.oldId);
    if (!slot) return null;
    if (isRetired(slot.status, slot.revokedAt, rotation.now.getTime())) throw retiredKeyCannotRotate();
    const old = thaw(slot);
    const inserted = this.#insertNow(replacementFor(rotation, old));
    const patch: ApiKeyPatch = { revokedAt: rotation.oldRevokedAt, updatedAt: rotation.now };
    if (rotation.oldStatus) patch.status = rotation.oldStatus;
    applyPatch(old, patch);
    refreeze(slot, old);
    this.#listeners.notify(rotation.oldId);
    return { old: thaw(slot), replacement: thaw(inserted) };
  }

  async list(query: StoreListQuery): Promise<ApiKeyRecord[]> {
    const after = query.after;
    const afterTime = after?.createdAt.getTime() ?? 0;
    const matches: Slot[] = [];
    for (const slot of this.#byId.values()) {
      if (query.ownerId !== undefined && slot.ownerId !== query.ownerId) continue;
      if (query.tenantId !== undefined && slot.tenantId !== query.tenantId) continue;
      if (query.status !== undefined && slot.status !== query.status) continue;
      if (slot.deletedAt !== null && query.includeDeleted !== true) continue;
      if (after) {
        const time = slot.createdAt - afterTime;
        if (time < 0 || (time === 0 && slot.id <= after.id)) continue;
      }
      matches.push(slot);
    }
    matches.sort(compareByPosition);
    return matches.slice(0, query.limit).map(thaw);
  }

  async purge(purge: StorePurge): Promise<number> {
    let removed = 0;
    for (const slot of this.#byId.values()) {
      if (!isPurgeable(slot.deletedAt, purge)) continue;
      this.#byId.delete(slot.id);
      this.#idByKeyPrefix.delete(slot.keyPrefix);
      // Its usage goes with it, every day at once; its audit entries stay (the trail outlives keys).
      this.#usage.delete(slot.id);
      this.#listeners.notify(slot.id);
      removed++;
    }
    return removed;
  }

  async consume(id: string, request: ConsumeRequest): Promise<ConsumeOutcome | null> {
    return this.consumeNow(id, request);
  }

  /** {@link consume}, answered at once: everything it does is in this process. */
  consumeNow(id: string, request: ConsumeRequest): ConsumeOutcome | null {
    const slot = this.#byId.get(id);
    if (!slot) return null;
    if (request.deadline !== undefined && Date.now() > request.deadline) {
      return { admitted: false, refusal: 'deadline_exceeded', useCount: slot.useCount };
    }
    const lifecycle = lifecycleRefusal(slot.status, slot.revokedAt, slot.expiresAt, request.now);
    if (lifecycle) return { admitted: false, refusal: lifecycle, useCount: slot.useCount };
    const claim = request.concurrency;
    if (claim === undefined) return this.#count(slot, request, decideConsume(slot, request));
    // The model's liveLeases / leasesAfter, without copying the leases on every request: they are
    // scanned only once one of them may have lapsed. A refusal changes nothing, lapsed leases
    // included: a later caller whose clock lags may still count them.
    const at = countingInstant(slot, request.now);
    const leases = (slot.leases ??= new Map());
    const mayHaveLapsed = at >= slot.firstLapse;
    const decision = decideConsume(slot, request, mayHaveLapsed ? liveCount(leases, at) : leases.size);
    if (decision.next) {
      if (mayHaveLapsed) pruneLeases(slot, leases, at);
      const lapse = at + claim.leaseMs;
      leases.set(claim.lease, lapse);
      if (lapse < slot.firstLapse) slot.firstLapse = lapse;
    }
    return this.#count(slot, request, decision);
  }

  async release(id: string, lease: string): Promise<void> {
    this.#byId.get(id)?.leases?.delete(lease);
  }

  async reserve(id: string, request: ReserveRequest): Promise<ReserveOutcome | null> {
    if (!Number.isSafeInteger(request.units) || request.units < 1) throw invalidArgument('units', 'must be a whole number of uses, at least 1');
    if (!Number.isSafeInteger(request.leaseMs) || request.leaseMs < 1) throw invalidArgument('leaseMs', 'must be a whole number of milliseconds, at least 1');
    const slot = this.#byId.get(id);
    if (!slot) return null;
    if (request.deadline !== undefined && Date.now() > request.deadline) {
      return { admitted: false, refusal: 'deadline_exceeded', granted: 0, useCount: slot.useCount };
    }
    const lifecycle = lifecycleRefusal(slot.status, slot.revokedAt, slot.expiresAt, request.now);
    if (lifecycle) return { admitted: false, refusal: lifecycle, granted: 0, useCount: slot.useCount };
    const decision = decideReservation(slot, slot.holds, request);
    if (decision.next) {
      this.#count(slot, request, decision);
      slot.holds = decision.holds;
    }
    return decision.outcome;
  }

  async settle(id: string, settlement: Settlement): Promise<void> {
    if (!Number.isFinite(settlement.unspent)) throw invalidArgument('unspent', 'must be a finite number');
    const slot = this.#byId.get(id);
    if (!slot) return;
    const decision = decideSettlement(slot, slot.holds, settlement);
    if (!decision) return;
    const { next, holds } = decision;
    slot.useCount = next.useCount;
    slot.minuteCount = next.minuteCount;
    slot.hourCount = next.hourCount;
    slot.dayCount = next.dayCount;
    slot.monthCount = next.monthCount;
    slot.tokens = next.tokens;
    slot.tokensAt = next.tokensAt;
    slot.holds = Object.keys(holds).length === 0 ? null : holds;
  }

  async appendAudit(entry: AuditEntry): Promise<void> {
    if (this.#auditIds.has(entry.id)) throw alreadyExists('id', entry.id);
    const stored: StoredEntry = {
      at: entry.at.getTime(),
      id: entry.id,
      keyId: entry.keyId,
      actorId: entry.actor?.id,
      tenantId: entry.tenantId,
      environment: entry.environment,
      // JSON text copies everything, and leaves out an `undefined` tenantId, environment or keyPrefix.
      json: JSON.stringify(entry),
    };
    const entries = this.#audit;
    const last = entries[entries.length - 1];
    // Entries mostly arrive in order: then the append is a push, not a search and a splice.
    if (last === undefined || compareEntries(last, stored) < 0) entries.push(stored);
    else entries.splice(positionIndex(entries, stored, false), 0, stored);
    this.#auditIds.add(entry.id);
  }

  async listAudit(query: StoreAuditQuery): Promise<AuditEntry[]> {
    const entries = this.#audit;
    // Start at the later of `from` (inclusive) and `after` (exclusive), and stop at `to`.
    let start = query.from === undefined ? 0 : positionIndex(entries, { at: query.from.getTime(), id: '' }, false);
    if (query.after) start = Math.max(start, positionIndex(entries, { at: query.after.at.getTime(), id: query.after.id }, true));
    const to = query.to?.getTime() ?? Number.POSITIVE_INFINITY;
    const found: AuditEntry[] = [];
    for (let i = start; i < entries.length && found.length < query.limit; i++) {
      const stored = entries[i] as StoredEntry;
      if (stored.at >= to) break;
      if (entryMatches(stored, query)) found.push(thawEntry(stored));
    }
    return found;
  }

  async addUsage(batch: UsageBatch): Promise<void> {
    const now = batch.now.getTime();
    this.#batches.sweep(now);
    if (this.#batches.get(batch.id) !== undefined) return;
    for (const cell of batch.cells) {
      // A key not held (never inserted, or purged) keeps no usage: a flush that comes after its
      // purge must not bring its cells back.
      if (!this.#byId.has(cell.keyId)) continue;
      let cells = this.#usage.get(cell.keyId);
      if (!cells) this.#usage.set(cell.keyId, (cells = new Map()));
      const identity = cellIdentity(cell);
      const stored = cells.get(identity);
      if (stored) mergeCell(stored, cell);
      else cells.set(identity, { ...cell });
    }
    this.#batches.set(batch.id, now + RETAIN_BATCH_IDS_MS);
  }

  async readUsage(query: StoreUsageQuery): Promise<UsageCell[]> {
    const found: UsageCell[] = [];
    for (const cell of this.#usage.get(query.keyId)?.values() ?? []) {
      if (cell.day >= query.fromDay && cell.day <= query.toDay) found.push({ ...cell });
    }
    return found;
  }

  async claimAlert(claim: AlertClaim): Promise<boolean> {
    const now = claim.now.getTime();
    this.#claims.sweep(now);
    const live = this.#claims.get(claim.name);
    if (live !== undefined && live > now) return false;
    this.#claims.set(claim.name, claim.expiresAt.getTime());
    return true;
  }

  /** Stores an admitted consume's counters; returns its outcome. */
  #count(slot: Slot, request: { now: number }, { outcome, next }: { outcome: ConsumeOutcome; next: CounterState | null }): ConsumeOutcome {
    if (next) {
      slot.useCount = next.useCount;
      slot.minute = next.minute;
      slot.minuteCount = next.minuteCount;
      slot.hour = next.hour;
      slot.hourCount = next.hourCount;
      slot.day = next.day;
      slot.dayCount = next.dayCount;
      slot.month = next.month;
      slot.monthCount = next.monthCount;
      slot.tokens = next.tokens;
      slot.tokensAt = next.tokensAt;
      slot.lastUsedAt = request.now;
    }
    return outcome;
  }

  /** A secret-free summary: the number of records. */
  toJSON(): { size: number } {
    return { size: this.#byId.size };
  }

  subscribe(listener: (id: string | null) => void): () => void {
    return this.#listeners.add(listener);
  }

  #insertNow(record: ApiKeyRecord): Slot {
    if (this.#byId.has(record.id)) throw alreadyExists('id', record.id);
    if (this.#idByKeyPrefix.has(record.keyPrefix)) throw alreadyExists('keyPrefix', record.keyPrefix);
    const slot = new StoredKey(record);
    this.#byId.set(slot.id, slot);
    this.#idByKeyPrefix.set(slot.keyPrefix, slot.id);
    return slot;
  }
}

function isClusterWorker(): boolean {
  return process.env.NODE_UNIQUE_ID !== undefined || process.env.pm_id !== undefined;
}
