/**
 * The Redis store: keys and exact counters shared by every process that uses the same Redis, with
 * ioredis (standalone or Cluster). The warm path of an admitted request is one EVALSHA.
 *
 * Layout (`ns` is the `keyPrefix` option, default `keygate:`):
 * - `ns key:{<id>}`: the record, one hash field per record field, plus its counters (`c:*`).
 *   Everything one consume touches is in this one hash, so each script is atomic on a Cluster too.
 * - `ns kp:<keyPrefix>`: the id of the record with that keyPrefix (lookup index).
 * - `ns list`, `ns list:owner:<ownerId>`, `ns list:tenant:<tenantId>`: sorted sets of
 *   `<createdAt>:<id>` members for keyset pagination.
 * - `ns invalidate`: the pub/sub channel that carries the id of every changed record.
 *
 * Atomic (one Lua script on one hash): every consume (deadline, lifecycle and limits checked and
 * counted in one step), every update (including the "a revoked key stays revoked" check), and the
 * claim that starts a rotation.
 *
 * Only ordered, not atomic (they span several hash slots, which no Redis Cluster script can):
 * - insert: the keyPrefix index (SET NX), then the list entries, then the record. A process dying
 *   half-way leaves an index or list entry whose record is missing, which lookups and list() skip.
 * - rotate: (1) the claim, atomic on the OLD record: it refuses a record already revoked or
 *   already rotated (`revokedAt` set), else sets its `revokedAt`, `updatedAt` (and `status`) and
 *   returns its `maxUses` and `useCount` as of that instant. Of concurrent rotations of one key
 *   exactly one passes this step, before anything else is written. (2) The replacement is inserted
 *   with the uses left at the claim. (3) If that insert fails (`already_exists`, a lost
 *   connection, …), or the claimed record cannot be read, the claim is undone: the old record's
 *   revokedAt, updatedAt and status are restored exactly as they were, unless a change made in
 *   between (a revocation) touched them, which then stands. Between (1) and (2) the old record
 *   already shows the rotation while the replacement does not exist yet; a process dying there
 *   leaves the old key retiring at `oldRevokedAt` (when the caller asked it to stop) with no
 *   replacement anyone holds: rotate it no more, create a new key. A replacement written but
 *   never returned is a record whose secret nobody has.
 */
import type { Cluster, Redis } from 'ioredis';
import { KeygateError } from '../../errors.js';
import { decodeStoredRecord } from '../../record/decode.js';
import type { ApiKeyRecord } from '../../types.js';
import type {
  ApiKeyPatch,
  ApiKeyStore,
  ConsumeOutcome,
  ConsumeRefusal,
  ConsumeRequest,
  StoreListQuery,
  StoreRotation,
} from '../store.js';
import { retiredKeyCannotRotate, revokedKeyCannotChangeStatus } from '../toolkit.js';
import { decodeRecord, encodePatch, encodeRecord, pairsToHash } from './codec.js';
import { CLAIM_ROTATION_SCRIPT, CONSUME_SCRIPT, INSERT_SCRIPT, UNDO_ROTATION_SCRIPT, UPDATE_SCRIPT } from './scripts.js';

/** An ioredis client: a `Redis` or a `Cluster`. */
export type RedisClient = Redis | Cluster;

/** Options of {@link RedisStore}. */
export interface RedisStoreOptions {
  /**
   * An ioredis `Redis` or `Cluster` client you own. The store never closes it. Create it with
   * `autoResendUnfulfilledCommands: false` if you can: otherwise a consume in flight when the
   * connection drops may be sent again after reconnecting and counted twice.
   */
  client: RedisClient;
  /**
   * Namespace of every Redis key the store writes, so several keygate deployments (or other data)
   * can share one Redis. @default 'keygate:'
   */
  keyPrefix?: string;
}

/** The custom commands the store defines on the client (names carry a version so upgrades never clash). */
interface ScriptCommands {
  keygateInsertV1(key: string, ...args: string[]): Promise<number>;
  /** The hash after the patch, null for an unknown id, 0 when the record is revoked and stays so. */
  keygateUpdateV2(key: string, ...args: string[]): Promise<string[] | 0 | null>;
  /** [previous revokedAt, updatedAt, status ('' = absent), hash after the claim], null, or 0 when refused. */
  keygateClaimRotationV1(key: string, ...args: string[]): Promise<[string, string, string, string[]] | 0 | null>;
  keygateUndoRotationV1(key: string, ...args: string[]): Promise<number>;
  /** [0, refusal, useCount] for a deadline or lifecycle refusal, else [admitted, refusal, useCount, dayCount, tokens]. */
  keygateConsumeV2(key: string, ...args: string[]): Promise<[number, string, number] | [number, string, number, number, string] | null>;
}

const OPTIONS = ['client', 'keyPrefix'];
/** Offsets createdAt so that list members sort as text, including dates before 1970. */
const TIME_OFFSET = 8_640_000_000_000_000;
const LIST_BATCH = 200;

function listMember(createdAt: Date, id: string): string {
  return `${String(createdAt.getTime() + TIME_OFFSET).padStart(17, '0')}:${id}`;
}

function numberArg(value: number | null | undefined): string {
  return value === null || value === undefined ? '' : String(value);
}

/** A deadline for the consume script: '' (none) unless a finite number. */
function deadlineArg(value: number | undefined): string {
  return typeof value === 'number' && Number.isFinite(value) ? String(value) : '';
}

function remainingUses(maxUses: number | null, useCount: number): number | null {
  return maxUses === null ? null : Math.max(0, maxUses - useCount);
}

/**
 * Strips the command arguments ioredis attaches to its errors (`err.command.args`, also on the
 * node errors a Cluster error carries): for an insert they hold the record, keyHash included, and
 * errors end up in logs. The command's name stays.
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
 * Keeps keys in Redis through ioredis.
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
  readonly #ns: string;
  readonly #channel: string;
  readonly #listeners = new Set<(id: string | null) => void>();
  #subscriber: RedisClient | undefined;

  constructor(options: RedisStoreOptions) {
    if (options === null || typeof options !== 'object') throw new TypeError('RedisStore needs options: { client }');
    for (const name of Object.keys(options)) {
      if (!OPTIONS.includes(name)) throw new TypeError(`RedisStore: unsupported option \`${name}\` (supported: ${OPTIONS.join(', ')})`);
    }
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
    redis.defineCommand('keygateUpdateV2', { numberOfKeys: 1, lua: UPDATE_SCRIPT });
    redis.defineCommand('keygateClaimRotationV1', { numberOfKeys: 1, lua: CLAIM_ROTATION_SCRIPT });
    redis.defineCommand('keygateUndoRotationV1', { numberOfKeys: 1, lua: UNDO_ROTATION_SCRIPT });
    redis.defineCommand('keygateConsumeV2', { numberOfKeys: 1, lua: CONSUME_SCRIPT });
    this.#client = redis as RedisClient & ScriptCommands;
  }

  /** A secret-free summary: the namespace. */
  toJSON(): { keyPrefix: string } {
    return { keyPrefix: this.#ns };
  }

  async insert(record: ApiKeyRecord): Promise<void> {
    await scrubbed(() => this.#insert(record));
  }

  async #insert(record: ApiKeyRecord): Promise<void> {
    const redis = await this.#connected();
    const indexKey = this.#indexKey(record.keyPrefix);
    if ((await redis.set(indexKey, record.id, 'NX')) !== 'OK') {
      throw new KeygateError('already_exists', `a key with keyPrefix ${record.keyPrefix} already exists`);
    }
    const member = listMember(record.createdAt, record.id);
    const lists = this.#listKeys(record);
    // Listed before written: a crash here leaves list entries without a record, which list() skips.
    const added = await Promise.all(lists.map((list) => redis.zadd(list, 0, member)));
    if ((await redis.keygateInsertV1(this.#recordKey(record.id), ...encodeRecord(record))) !== 1) {
      // Undo only what this call added: an entry that already existed belongs to the record that owns the id.
      const ours = lists.filter((_list, i) => added[i] === 1);
      await Promise.all([...ours.map((list) => redis.zrem(list, member)), this.#deleteIndexIf(indexKey, record.id)]);
      throw new KeygateError('already_exists', `a key with id ${record.id} already exists`);
    }
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

  async update(id: string, patch: ApiKeyPatch): Promise<ApiKeyRecord | null> {
    const reply = await scrubbed(async () => (await this.#connected()).keygateUpdateV2(this.#recordKey(id), ...encodePatch(patch)));
    if (reply === null) return null;
    if (typeof reply === 'number') {
      throw revokedKeyCannotChangeStatus();
    }
    await this.#publish(id);
    return decodeRecord(pairsToHash(reply));
  }

  /** See the class comment for what is atomic here (the claim) and what is only ordered. */
  async rotate(rotation: StoreRotation): Promise<{ old: ApiKeyRecord; replacement: ApiKeyRecord } | null> {
    const redis = await this.#connected();
    const oldKey = this.#recordKey(rotation.oldId);
    const claimed = [
      String(rotation.oldRevokedAt.getTime()),
      String(rotation.now.getTime()),
      rotation.oldStatus === undefined ? '' : JSON.stringify(rotation.oldStatus),
    ];
    const claim = await scrubbed(() => redis.keygateClaimRotationV1(oldKey, ...claimed));
    if (claim === null) return null;
    if (typeof claim === 'number') {
      throw retiredKeyCannotRotate();
    }
    const [previousRevokedAt, previousUpdatedAt, previousStatus, pairs] = claim;
    let old: ApiKeyRecord;
    let replacement: ApiKeyRecord;
    try {
      old = decodeRecord(pairsToHash(pairs)) as ApiKeyRecord;
      // The uses left at the instant of the claim: the old key's counter as the same script saw it.
      const snapshot = decodeStoredRecord(old);
      replacement = { ...rotation.replacement, maxUses: remainingUses(snapshot.maxUses, snapshot.useCount) };
      await this.insert(replacement);
    } catch (error) {
      await scrubbed(() => redis.keygateUndoRotationV1(oldKey, ...claimed, previousRevokedAt, previousUpdatedAt, previousStatus)).catch(() => undefined);
      // Caches that read the old record while it was claimed read it again.
      await this.#publish(rotation.oldId).catch(() => undefined);
      throw error;
    }
    await this.#publish(rotation.oldId);
    return { old, replacement: (await this.findById(replacement.id)) ?? replacement };
  }

  async list(query: StoreListQuery): Promise<ApiKeyRecord[]> {
    const redis = await this.#connected();
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
      const records = await Promise.all(members.map((member) => this.findById(member.slice(member.indexOf(':') + 1))));
      for (const record of records) {
        if (!record) continue;
        if (query.tenantId !== undefined && record.tenantId !== query.tenantId) continue;
        if (query.status !== undefined && record.status !== query.status) continue;
        found.push(record);
        if (found.length === query.limit) break;
      }
      if (members.length < LIST_BATCH) break;
      start = `(${members[members.length - 1] as string}`;
    }
    return found;
  }

  /**
   * One EVALSHA: deadline, lifecycle and limits, counted all or nothing (see CONSUME_SCRIPT).
   * `request.deadline` is compared with the Redis server's clock: keep the clocks of the app hosts
   * and of Redis in sync (NTP). A Redis clock running ahead by more than `storeTimeoutMs` would
   * refuse every consume with `deadline_exceeded`.
   */
  async consume(id: string, request: ConsumeRequest): Promise<ConsumeOutcome | null> {
    const limit = request.rateLimit;
    const reply = await this.#ready().keygateConsumeV2(
      this.#recordKey(id),
      String(request.now),
      numberArg(request.maxUses),
      numberArg(limit?.perSecond),
      numberArg(limit?.burst),
      numberArg(limit?.perDay),
      deadlineArg(request.deadline),
    );
    if (!reply) return null;
    const [admitted, refusal, useCount] = reply;
    const outcome: ConsumeOutcome = { admitted: admitted === 1, useCount: Number(useCount) };
    if (refusal !== '') outcome.refusal = refusal as ConsumeRefusal;
    // A deadline or lifecycle refusal is the 3-element reply: no counters were looked at.
    if (reply.length === 5) {
      if (limit?.perDay !== undefined) outcome.dayCount = Number(reply[3]);
      if (limit?.perSecond !== undefined) outcome.tokens = Number(reply[4]);
    }
    return outcome;
  }

  /**
   * Hears the changes every process publishes, over a connection of its own (a duplicate of the
   * client), opened for the first listener and closed after the last one leaves. After that
   * connection is lost and restored, listeners get `null`: what changed meanwhile is unknown.
   */
  subscribe(listener: (id: string | null) => void): () => void {
    this.#listeners.add(listener);
    if (!this.#subscriber) this.#openSubscriber();
    return () => {
      if (!this.#listeners.delete(listener) || this.#listeners.size > 0) return;
      const subscriber = this.#subscriber;
      this.#subscriber = undefined;
      subscriber?.disconnect();
    };
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
      if (channel === this.#channel) this.#notify(id);
    });
    subscriber.on('ready', () => {
      if (connectedBefore) this.#notify(null);
      connectedBefore = true;
    });
    subscriber.on('error', () => {
      // Reconnection is ioredis's job; 'ready' after it drops every cache. Without a listener,
      // ioredis would report the error as unhandled.
    });
    subscriber.subscribe(this.#channel).catch(() => undefined);
  }

  #notify(id: string | null): void {
    for (const listener of this.#listeners) listener(id);
  }

  async #publish(id: string): Promise<void> {
    // In-process listeners hear it at once; other processes through Redis.
    this.#notify(id);
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
    await new Promise<void>((resolve, reject) => {
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
    return client;
  }

  #recordKey(id: string): string {
    return `${this.#ns}key:{${id}}`;
  }

  #indexKey(keyPrefix: string): string {
    return `${this.#ns}kp:${keyPrefix}`;
  }

  #listKeys(record: ApiKeyRecord): string[] {
    const lists = [`${this.#ns}list`];
    if (record.ownerId !== undefined) lists.push(`${this.#ns}list:owner:${record.ownerId}`);
    if (record.tenantId !== undefined) lists.push(`${this.#ns}list:tenant:${record.tenantId}`);
    return lists;
  }

  async #deleteIndexIf(indexKey: string, id: string): Promise<void> {
    if ((await this.#client.get(indexKey)) === id) await this.#client.del(indexKey);
  }
}
