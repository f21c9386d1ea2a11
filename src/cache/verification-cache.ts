/**
 * The verification cache: remembers keys whose secret already verified, so the warm path runs no
 * bcrypt and no store lookup. Entries are keyed by a SHA-256 digest of the presented key, never the
 * key itself, and can be dropped by record id when the record changes. Counters are never cached:
 * every admitted request still performs one atomic consume in the store.
 */
import * as crypto from 'node:crypto';
import { LRUCache } from 'lru-cache';

/** Size and lifetime of the cache. */
export interface CacheOptions {
  /** Maximum number of verified keys kept. @default 10_000 */
  max?: number;
  /**
   * How long a verified key is trusted without reading the store again, in milliseconds. Writes
   * through keygate invalidate at once; this bounds how long a change made behind keygate's back
   * (straight in the database) can go unnoticed. @default 30_000
   */
  ttlMs?: number;
}

type OneShotHash = (algorithm: string, data: string, encoding: 'base64url') => string;
/** `crypto.hash` (Node 20.12+) digests in one call, without a Hash object per request. */
const oneShotHash = (crypto as unknown as { hash?: OneShotHash }).hash;

/** Digest of a presented key: the cache key and in-flight coalescing key. */
export function keyDigest(key: string): string {
  if (oneShotHash) return oneShotHash('sha256', key, 'base64url');
  return crypto.createHash('sha256').update(key, 'utf8').digest('base64url');
}

/** An LRU of verified entries that can be invalidated by record id. */
export class VerificationCache<Entry extends { readonly id: string }> {
  private readonly entries: LRUCache<string, Entry> | null;
  /** Record id → digests cached for it, so a write can drop them without scanning. */
  private readonly digestsById = new Map<string, Set<string>>();
  /**
   * Bumped by every invalidation. A lookup that started before a write may carry the old record;
   * `set` refuses entries whose lookup began in an earlier epoch, so a stale record is never cached.
   */
  private currentEpoch = 0;

  constructor(options: CacheOptions | false, now: () => number) {
    if (options === false) {
      this.entries = null;
      return;
    }
    this.entries = new LRUCache<string, Entry>({
      max: options.max ?? 10_000,
      ttl: options.ttlMs ?? 30_000,
      perf: { now },
      dispose: (entry, digest) => this.forget(entry.id, digest),
    });
  }

  /** The entry for a digest, if still fresh. */
  get(digest: string): Entry | undefined {
    return this.entries?.get(digest);
  }

  /** The epoch to pass to {@link set} for a lookup starting now. */
  get epoch(): number {
    return this.currentEpoch;
  }

  /** Remembers a verified entry, unless a write happened since its lookup began at `epoch`. */
  set(digest: string, entry: Entry, epoch: number): void {
    if (!this.entries || epoch !== this.currentEpoch) return;
    this.entries.set(digest, entry);
    let digests = this.digestsById.get(entry.id);
    if (!digests) this.digestsById.set(entry.id, (digests = new Set()));
    digests.add(digest);
  }

  /** Drops every entry of a record. */
  invalidate(id: string): void {
    this.currentEpoch++;
    const digests = this.digestsById.get(id);
    if (!digests || !this.entries) return;
    for (const digest of [...digests]) this.entries.delete(digest);
    this.digestsById.delete(id);
  }

  /** Drops everything. */
  clear(): void {
    this.currentEpoch++;
    this.entries?.clear();
    this.digestsById.clear();
  }

  private forget(id: string, digest: string): void {
    const digests = this.digestsById.get(id);
    if (!digests) return;
    digests.delete(digest);
    if (digests.size === 0) this.digestsById.delete(id);
  }
}
