/**
 * Writing your own store: `JsonFileStore`, an `ApiKeyStore` that keeps every key in one JSON file.
 *
 *   npx tsx examples/custom-store.ts
 *
 * What every store must get right, and where this one does it:
 *
 * 1. `consume` is atomic. keygate never reads a counter, changes it and writes it back itself: it
 *    asks the store to check and count one use in one step. Here every operation runs in one
 *    in-process queue (`exclusive`), so no two read-modify-write cycles interleave. In a database
 *    the same guarantee comes from one statement (`UPDATE … WHERE … RETURNING`), a transaction
 *    with `SELECT … FOR UPDATE`, or a Redis Lua script. Without it, two concurrent requests both
 *    read `useCount = 2` of a `maxUses: 3` key, and both get in (here, concurrent writes would
 *    also trample each other's temporary file).
 * 2. Counting is all-or-nothing: a request refused by one limit uses up none of the others.
 * 3. Time comes from the caller (`request.now`, `rotation.now`, `patch.updatedAt`), never from
 *    the store's clock, so tests can move a day forward without sleeping.
 * 4. `insert` and `rotate` reject with `KeygateError('already_exists')` when the id or keyPrefix is
 *    taken (keygate then mints another key); `rotate` is atomic too and carries the uses left.
 * 5. A revoked key stays revoked, checked where the data is: `consume` refuses a record whose
 *    status, `revokedAt` or `expiresAt` says it is no longer usable (keygate's `lifecycleRefusal`,
 *    so a revocation made in one process stops every other process at once, whatever its cache
 *    holds); `consume` refuses after `request.deadline` (keygate has already answered 503);
 *    `update` will not bring a revoked key back, and stamps `revokedAt` itself when a patch
 *    revokes; `rotate` will not rotate a key twice.
 * 6. Optional: `release` (capability `concurrency`) lets keys have `maxConcurrent`. `consume`
 *    then keeps a key's leases (request slots) with its counters: the live ones are counted and
 *    the new one recorded in the same atomic step (`liveLeases` / `leasesAfter` of keygate's limit
 *    model), and `release` removes one. A store without `release` simply cannot take such keys.
 * 7. Records are copied in and out: a caller mutating what it got back cannot change the store.
 *    (Copy with a JSON round-trip or by hand, not `structuredClone`: its objects come from Node's
 *    main realm and fail jest's strict equality inside a test environment.)
 *
 * The rules that do not depend on where records live come from keygate's store toolkit
 * (`ChangeListeners`, `alreadyExists`, `replacementFor`, `isRetired`, `revokedAtAfterUpdate`, the
 * refusal builders), so this store says them in the same words as the built-in ones.
 *
 * The queue serialises calls within one process only. Several processes writing the same file
 * would need a file lock; in practice, share keys between processes with a database.
 *
 * Prove a store with the suite every built-in store passes, in a jest test file:
 *
 * ```ts
 * // test/json-file-store.test.ts
 * import { mkdtempSync, rmSync } from 'node:fs';
 * import { tmpdir } from 'node:os';
 * import { dirname, join } from 'node:path';
 * import { describeStoreContract } from 'keygate/testing';
 * import { JsonFileStore } from '../src/json-file-store';
 *
 * describeStoreContract('JsonFileStore', {
 *   // called for every test: a fresh, empty store
 *   create: async () => new JsonFileStore(join(mkdtempSync(join(tmpdir(), 'keygate-')), 'keys.json')),
 *   // called after every test with the store `create` made
 *   destroy: async (store) => rmSync(dirname(store.path), { recursive: true, force: true }),
 *   // the optional methods it implements: their tests run (undeclared ones are reported skipped)
 *   capabilities: { subscribe: true, concurrency: true },
 * });
 * ```
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type ApiKeyPatch,
  type ApiKeyRecord,
  type ApiKeyStore,
  type ConsumeOutcome,
  type ConsumeRequest,
  ChangeListeners,
  type CounterState,
  alreadyExists,
  countingInstant,
  decideConsume,
  deletedAtAfterUpdate,
  isPurgeable,
  initialCounters,
  type Leases,
  leasesAfter,
  liveLeases,
  isRetired,
  lifecycleRefusal,
  replacementFor,
  retiredKeyCannotRotate,
  revokedAtAfterUpdate,
  revokedKeyCannotChangeStatus,
  type StoreListQuery,
  type StorePurge,
  type StoreRotation,
  keygate,
} from 'keygate';

/** A record as JSON: every Date becomes epoch milliseconds. */
type StoredRecord = Omit<ApiKeyRecord, 'expiresAt' | 'createdAt' | 'updatedAt' | 'lastUsedAt' | 'revokedAt' | 'deletedAt'> & {
  expiresAt: number | null;
  deletedAt: number | null;
  createdAt: number;
  updatedAt: number;
  lastUsedAt: number | null;
  revokedAt: number | null;
};

/** The whole file. */
interface FileData {
  records: Record<string, StoredRecord>;
  /** Day quota and token bucket per record id; `useCount` lives in the record. */
  counters: Record<string, Omit<CounterState, 'useCount'>>;
  /** Concurrency leases per record id (only keys with `maxConcurrent` have any). */
  leases?: Record<string, Leases>;
}

const time = (date: Date | null): number | null => (date === null ? null : date.getTime());
const date = (ms: number | null): Date | null => (ms === null ? null : new Date(ms));
/** A deep copy through JSON: this store's data is JSON anyway, and a copy shares nothing with the caller. */
const jsonCopy = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

function toStored(record: ApiKeyRecord): StoredRecord {
  return jsonCopy({
    ...record,
    expiresAt: time(record.expiresAt),
    createdAt: record.createdAt.getTime(),
    updatedAt: record.updatedAt.getTime(),
    lastUsedAt: time(record.lastUsedAt),
    revokedAt: time(record.revokedAt),
    deletedAt: time(record.deletedAt),
  });
}

function fromStored(stored: StoredRecord): ApiKeyRecord {
  return {
    ...jsonCopy(stored),
    expiresAt: date(stored.expiresAt),
    createdAt: new Date(stored.createdAt),
    updatedAt: new Date(stored.updatedAt),
    lastUsedAt: date(stored.lastUsedAt),
    revokedAt: date(stored.revokedAt),
    // A record written before keys could be deleted has no deletedAt.
    deletedAt: date(stored.deletedAt ?? null),
  };
}

/**
 * Applies a patch: `undefined` leaves a field, `null` clears it (and removes `description`); a
 * revocation stamps `revokedAt` by the contract's rule (`revokedAtAfterUpdate` of the toolkit).
 */
function applyPatch(record: StoredRecord, patch: ApiKeyPatch): void {
  const { description, updatedAt, expiresAt, revokedAt: _revokedAt, deletedAt: _deletedAt, ...rest } = patch;
  for (const [field, value] of Object.entries(rest)) {
    if (value !== undefined) (record as unknown as Record<string, unknown>)[field] = jsonCopy(value);
  }
  if (description === null) delete record.description;
  else if (description !== undefined) record.description = description;
  if (expiresAt !== undefined) record.expiresAt = time(expiresAt);
  const revokedAt = revokedAtAfterUpdate(record.revokedAt, patch);
  if (revokedAt !== undefined) record.revokedAt = revokedAt;
  const deletedAt = deletedAtAfterUpdate(record.deletedAt ?? null, patch);
  if (deletedAt !== undefined) record.deletedAt = deletedAt;
  record.updatedAt = updatedAt.getTime();
}

/** The counters of a key never used: keygate's own starting state, without `useCount` (kept in the record). */
function freshCounters(): Omit<CounterState, 'useCount'> {
  const { useCount: _useCount, ...counters } = initialCounters(0);
  return counters;
}

/** Keeps keys in one JSON file; every call reads it and every write replaces it atomically. */
export class JsonFileStore implements ApiKeyStore {
  private queue: Promise<unknown> = Promise.resolve();
  private readonly listeners = new ChangeListeners();

  constructor(readonly path: string) {}

  async insert(record: ApiKeyRecord): Promise<void> {
    await this.exclusive(async () => {
      const data = await this.load();
      this.assertFree(data, record);
      data.records[record.id] = toStored(record);
      data.counters[record.id] = freshCounters();
      await this.save(data);
    });
  }

  async findById(id: string): Promise<ApiKeyRecord | null> {
    return this.exclusive(async () => {
      const stored = (await this.load()).records[id];
      return stored ? fromStored(stored) : null;
    });
  }

  async findByKeyPrefix(keyPrefix: string): Promise<ApiKeyRecord | null> {
    // A file has no index; a database would have a unique index on key_prefix.
    return this.exclusive(async () => {
      const stored = Object.values((await this.load()).records).find((record) => record.keyPrefix === keyPrefix);
      return stored ? fromStored(stored) : null;
    });
  }

  async update(id: string, patch: ApiKeyPatch): Promise<ApiKeyRecord | null> {
    const updated = await this.exclusive(async () => {
      const data = await this.load();
      const stored = data.records[id];
      if (!stored) return null;
      const revoked = lifecycleRefusal(stored.status, stored.revokedAt, null, patch.updatedAt.getTime()) === 'api_key_revoked';
      if (revoked && patch.status !== undefined && patch.status !== 'revoked') throw revokedKeyCannotChangeStatus();
      applyPatch(stored, patch);
      await this.save(data);
      return fromStored(stored);
    });
    if (updated) this.listeners.notify(id);
    return updated;
  }

  async rotate(rotation: StoreRotation): Promise<{ old: ApiKeyRecord; replacement: ApiKeyRecord } | null> {
    const rotated = await this.exclusive(async () => {
      const data = await this.load();
      const old = data.records[rotation.oldId];
      if (!old) return null;
      if (isRetired(old.status, old.revokedAt, rotation.now.getTime())) throw retiredKeyCannotRotate();
      this.assertFree(data, rotation.replacement);
      // Carry the uses the old key has left at this very moment (inside the lock).
      const replacement = toStored(replacementFor(rotation, fromStored(old)));
      data.records[replacement.id] = replacement;
      data.counters[replacement.id] = freshCounters();
      // The old key stays active until `oldRevokedAt` (end of the grace period), or is revoked now.
      const patch: ApiKeyPatch = { revokedAt: rotation.oldRevokedAt, updatedAt: rotation.now };
      if (rotation.oldStatus) patch.status = rotation.oldStatus;
      applyPatch(old, patch);
      await this.save(data);
      return { old: fromStored(old), replacement: fromStored(replacement) };
    });
    if (rotated) this.listeners.notify(rotation.oldId);
    return rotated;
  }

  async list(query: StoreListQuery): Promise<ApiKeyRecord[]> {
    return this.exclusive(async () => {
      const after = query.after && { createdAt: query.after.createdAt.getTime(), id: query.after.id };
      return Object.values((await this.load()).records)
        .filter((record) => query.ownerId === undefined || record.ownerId === query.ownerId)
        .filter((record) => query.tenantId === undefined || record.tenantId === query.tenantId)
        .filter((record) => query.status === undefined || record.status === query.status)
        .filter((record) => query.includeDeleted === true || (record.deletedAt ?? null) === null)
        .filter((record) => !after || record.createdAt > after.createdAt || (record.createdAt === after.createdAt && record.id > after.id))
        .sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
        .slice(0, query.limit)
        .map(fromStored);
    });
  }

  async consume(id: string, request: ConsumeRequest): Promise<ConsumeOutcome | null> {
    // Read, decide and write inside one exclusive section: this is what makes it atomic.
    return this.exclusive(async () => {
      const data = await this.load();
      const stored = data.records[id];
      if (!stored) return null;
      if (request.deadline !== undefined && Date.now() > request.deadline) {
        return { admitted: false, refusal: 'deadline_exceeded', useCount: stored.useCount };
      }
      const lifecycle = lifecycleRefusal(stored.status, stored.revokedAt, stored.expiresAt, request.now);
      if (lifecycle) return { admitted: false, refusal: lifecycle, useCount: stored.useCount };
      // keygate's own limit arithmetic (the rules of every built-in store), as a pure decision:
      // this store only supplies the state and writes back what the decision says.
      const state: CounterState = { ...(data.counters[id] ?? initialCounters(0)), useCount: stored.useCount };
      // A request of a key with maxConcurrent claims a slot: count the live ones with the rest.
      const claim = request.concurrency;
      const at = countingInstant(state, request.now);
      const leases = data.leases?.[id];
      const { outcome, next } = decideConsume(state, request, claim ? Object.keys(liveLeases(leases, at)).length : 0);
      if (next) {
        const { useCount, ...counters } = next;
        stored.useCount = useCount;
        stored.lastUsedAt = request.now;
        data.counters[id] = counters;
        if (claim) (data.leases ??= {})[id] = leasesAfter(leases, claim, at);
        await this.save(data);
      }
      return outcome;
    });
  }

  /** Removes the records deleted before `deletedBefore`, with their counters and leases. */
  async purge(purge: StorePurge): Promise<number> {
    return this.exclusive(async () => {
      const data = await this.load();
      const gone = Object.values(data.records).filter((record) => isPurgeable(record.deletedAt ?? null, purge));
      for (const record of gone) {
        delete data.records[record.id];
        delete data.counters[record.id];
        delete data.leases?.[record.id];
      }
      if (gone.length > 0) await this.save(data);
      for (const record of gone) this.listeners.notify(record.id);
      return gone.length;
    });
  }

  /** Gives back a slot an admitted consume took; unknown ids and leases are no-ops. */
  async release(id: string, lease: string): Promise<void> {
    await this.exclusive(async () => {
      const data = await this.load();
      const all = data.leases ?? {};
      const leases = all[id];
      if (!leases || !Object.hasOwn(leases, lease)) return;
      all[id] = Object.fromEntries(Object.entries(leases).filter(([held]) => held !== lease));
      await this.save(data);
    });
  }

  /** Lets keygate drop a changed key from its verification cache. */
  subscribe(listener: (id: string | null) => void): () => void {
    return this.listeners.add(listener);
  }

  /** Runs `task` after every task queued before it, alone. */
  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task);
    this.queue = run.catch(() => undefined); // one failed task must not block the ones after it
    return run;
  }

  private assertFree(data: FileData, record: ApiKeyRecord): void {
    if (data.records[record.id]) throw alreadyExists('id', record.id);
    if (Object.values(data.records).some((other) => other.keyPrefix === record.keyPrefix)) throw alreadyExists('keyPrefix', record.keyPrefix);
  }

  private async load(): Promise<FileData> {
    try {
      return JSON.parse(await readFile(this.path, 'utf8')) as FileData;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { records: {}, counters: {} };
      throw error; // keygate turns any other failure into 503 store_unavailable: fail closed
    }
  }

  private async save(data: FileData): Promise<void> {
    // Write a temporary file, then rename it over the old one: a crash never leaves half a file.
    const temporary = `${this.path}.tmp`;
    await writeFile(temporary, JSON.stringify(data), { mode: 0o600 });
    await rename(temporary, this.path);
  }
}

async function main(): Promise<void> {
  const directory = mkdtempSync(join(tmpdir(), 'keygate-example-'));
  const store = new JsonFileStore(join(directory, 'keys.json'));
  const keys = keygate({ store, prefix: 'sk_test', hashing: 'sha256', pepper: 'example-pepper' });
  try {
    const { key, apiKey } = await keys.create({ name: 'file-backed key', scopes: ['reports:*'], maxUses: 3 });
    console.log(`created ${apiKey.keyPrefix} (id ${apiKey.id}) in ${store.path}`);

    // A check that counts nothing, then one that counts a use.
    const dryRun = await keys.verify(key, { scopes: ['reports:read'], consume: false });
    console.log('verify without consuming:', dryRun.ok ? `ok, useCount ${dryRun.apiKey.useCount}` : dryRun.error.code);
    const result = await keys.verify(key, { scopes: ['reports:read'] });
    if (result.ok) {
      console.log('verify:', { ok: true, name: result.apiKey.name, scopes: result.apiKey.scopes, useCount: result.apiKey.useCount, usesRemaining: result.limits?.usesRemaining });
    } else {
      console.log('verify:', { ok: false, code: result.error.code });
    }

    // Five concurrent requests against the 2 uses left: exactly 2 get in, because consume is atomic.
    const burst = await Promise.all(Array.from({ length: 5 }, () => keys.verify(key)));
    console.log('5 concurrent verifies:', burst.map((r) => (r.ok ? 'ok' : r.error.code)).join(', '));

    const wrongScope = await keys.verify(key, { scopes: ['billing:write'] });
    console.log('verify with a scope it lacks:', wrongScope.ok ? 'ok' : `${wrongScope.error.code} (${wrongScope.error.status})`);

    const stored = await store.findById(apiKey.id);
    const algorithm = stored ? stored.keyHash.slice(0, stored.keyHash.lastIndexOf('$') + 1) : '?';
    console.log(`stored: useCount ${stored?.useCount}, keyHash ${algorithm}… (only a hash; the key itself is never written)`);
  } finally {
    await keys.close();
    rmSync(directory, { recursive: true, force: true });
  }
}

// Run the demo only when this file is executed (`npx tsx examples/custom-store.ts`), not when a
// test imports JsonFileStore from it.
if (process.argv[1]?.endsWith('custom-store.ts')) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
