/**
 * The in-process store: the default for development, tests and single-process apps. Every method
 * runs synchronously under the hood, so each call is atomic in Node's single thread: concurrent
 * consumes can never over-admit. Records are copied in and out, so a caller mutating what it got
 * back cannot change the store.
 */
import { KeygateError } from '../errors.js';
import { type CounterState, decideConsume, initialCounters } from '../policy/limits.js';
import type { ApiKeyRecord } from '../types.js';
import type {
  ApiKeyPatch,
  ApiKeyStore,
  ConsumeOutcome,
  ConsumeRequest,
  StoreListQuery,
  StoreRotation,
} from './store.js';

/** Options of {@link MemoryStore}. */
export interface MemoryStoreOptions {
  /**
   * Suppress the one-time warning printed when the store is used in a cluster worker, where each
   * process would hold its own keys and counters. @default false
   */
  silenceClusterWarning?: boolean;
}

/** A record and its counters. `useCount` and `lastUsedAt` live in the record itself. */
interface Slot {
  record: ApiKeyRecord;
  counters: CounterState;
}

let warnedAboutCluster = false;

/**
 * A deep copy built with this realm's own `Date`, `Array` and `Object`. Not `structuredClone`: that
 * is Node's main-realm function, so code running in a vm context (jest's test environment) would
 * get back Dates that fail `instanceof Date` and arrays whose prototype is foreign. Records hold
 * JSON-like data and Dates; anything else (a Map in metadata, say) falls back to `structuredClone`.
 */
function clone<T>(value: T): T {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(clone) as T;
  const tag = Object.prototype.toString.call(value);
  if (tag === '[object Date]') return new Date(Date.prototype.getTime.call(value)) as T;
  if (tag === '[object Object]') {
    // fromEntries defines own properties, so a "__proto__" key stays data, never a prototype.
    return Object.fromEntries(Object.entries(value).map(([field, inner]) => [field, clone(inner)])) as T;
  }
  return structuredClone(value);
}

function copy(record: ApiKeyRecord): ApiKeyRecord {
  return clone(record);
}

function compareByPosition(a: ApiKeyRecord, b: ApiKeyRecord): number {
  const byTime = a.createdAt.getTime() - b.createdAt.getTime();
  if (byTime !== 0) return byTime;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** Applies a patch to a stored record in place. */
function applyPatch(record: ApiKeyRecord, patch: ApiKeyPatch): void {
  const { description, ...rest } = clone(patch);
  for (const [field, value] of Object.entries(rest)) {
    if (value !== undefined) (record as unknown as Record<string, unknown>)[field] = value;
  }
  if (description === null) delete record.description;
  else if (description !== undefined) record.description = description;
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
  readonly #listeners = new Set<(id: string | null) => void>();

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
    return slot ? copy(slot.record) : null;
  }

  async findByKeyPrefix(keyPrefix: string): Promise<ApiKeyRecord | null> {
    const id = this.#idByKeyPrefix.get(keyPrefix);
    return id === undefined ? null : this.findById(id);
  }

  async update(id: string, patch: ApiKeyPatch): Promise<ApiKeyRecord | null> {
    const slot = this.#byId.get(id);
    if (!slot) return null;
    applyPatch(slot.record, patch);
    this.#notify(id);
    return copy(slot.record);
  }

  async rotate(rotation: StoreRotation): Promise<{ old: ApiKeyRecord; replacement: ApiKeyRecord } | null> {
    const slot = this.#byId.get(rotation.oldId);
    if (!slot) return null;
    const replacement = copy(rotation.replacement);
    const { maxUses, useCount } = slot.record;
    if (maxUses !== null) replacement.maxUses = Math.max(0, maxUses - useCount);
    this.#insertNow(replacement);
    const patch: ApiKeyPatch = { revokedAt: rotation.oldRevokedAt, updatedAt: rotation.now };
    if (rotation.oldStatus) patch.status = rotation.oldStatus;
    applyPatch(slot.record, patch);
    this.#notify(rotation.oldId);
    return { old: copy(slot.record), replacement: copy(replacement) };
  }

  async list(query: StoreListQuery): Promise<ApiKeyRecord[]> {
    const after = query.after;
    const matches: ApiKeyRecord[] = [];
    for (const { record } of this.#byId.values()) {
      if (query.ownerId !== undefined && record.ownerId !== query.ownerId) continue;
      if (query.tenantId !== undefined && record.tenantId !== query.tenantId) continue;
      if (query.status !== undefined && record.status !== query.status) continue;
      if (after) {
        const time = record.createdAt.getTime() - after.createdAt.getTime();
        if (time < 0 || (time === 0 && record.id <= after.id)) continue;
      }
      matches.push(record);
    }
    matches.sort(compareByPosition);
    return matches.slice(0, query.limit).map(copy);
  }

  async consume(id: string, request: ConsumeRequest): Promise<ConsumeOutcome | null> {
    const slot = this.#byId.get(id);
    if (!slot) return null;
    const { outcome, next } = decideConsume(slot.counters, request);
    if (next) {
      slot.counters = next;
      slot.record.useCount = next.useCount;
      slot.record.lastUsedAt = new Date(request.now);
    }
    return outcome;
  }

  /** A secret-free summary: the number of records. */
  toJSON(): { size: number } {
    return { size: this.#byId.size };
  }

  subscribe(listener: (id: string | null) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #insertNow(record: ApiKeyRecord): void {
    if (this.#byId.has(record.id)) throw new KeygateError('already_exists', `a key with id ${record.id} already exists`);
    if (this.#idByKeyPrefix.has(record.keyPrefix)) {
      throw new KeygateError('already_exists', `a key with keyPrefix ${record.keyPrefix} already exists`);
    }
    const stored = copy(record);
    this.#byId.set(stored.id, { record: stored, counters: initialCounters(stored.useCount) });
    this.#idByKeyPrefix.set(stored.keyPrefix, stored.id);
  }

  #notify(id: string): void {
    for (const listener of this.#listeners) listener(id);
  }
}

function isClusterWorker(): boolean {
  return process.env.NODE_UNIQUE_ID !== undefined || process.env.pm_id !== undefined;
}
