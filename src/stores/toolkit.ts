/**
 * What every store needs and should not write again: change listeners, the errors every store
 * answers in the same words, and the rules of `rotate` and `update` that do not depend on where
 * records live. The built-in stores use it, and so can a custom store: everything here is exported
 * from `keygate`.
 */
import { KeygateError, invalidArgument } from '../errors.js';
import { lifecycleRefusal } from '../policy/status.js';
import { CREATE_FIELDS } from '../record/schema.js';
import type { ApiKeyRecord } from '../types.js';
import type { ConsumeRefusal, StoreRotation } from './store.js';

export { rejectUnknownOptions } from '../options/checks.js';

/** A listener of `ApiKeyStore.subscribe`: the id of a changed record, or `null` for "anything may have changed". */
export type ChangeListener = (id: string | null) => void;

/**
 * The listeners of one store (or of several stores sharing data in one process). `onFirst` runs
 * when the first listener arrives and `onLast` when the last one leaves, so a store can open a
 * subscription connection only while someone listens.
 */
export class ChangeListeners {
  readonly #listeners = new Set<ChangeListener>();

  constructor(private readonly hooks: { onFirst?: () => void; onLast?: () => void } = {}) {}

  /** Number of listeners. */
  get size(): number {
    return this.#listeners.size;
  }

  /** Adds a listener; returns the function that removes it (calling it twice is harmless). */
  add(listener: ChangeListener): () => void {
    const first = this.#listeners.size === 0;
    this.#listeners.add(listener);
    if (first) this.hooks.onFirst?.();
    return () => {
      if (this.#listeners.delete(listener) && this.#listeners.size === 0) this.hooks.onLast?.();
    };
  }

  /** Tells every listener. A listener that throws is reported as a warning and never stops the others, nor the write that caused it. */
  notify(id: string | null): void {
    for (const listener of this.#listeners) {
      try {
        listener(id);
      } catch (error) {
        process.emitWarning(`keygate: a store change listener threw: ${(error as Error)?.message ?? String(error)}`, { code: 'KEYGATE_LISTENER_ERROR' });
      }
    }
  }
}

/** `insert` (or `rotate`) of a record whose id or keyPrefix is taken. */
export function alreadyExists(field: 'id' | 'keyPrefix', value: string): KeygateError {
  return new KeygateError('already_exists', `a key with ${field} ${value} already exists`);
}

/** `update` of a revoked key's status to anything but `revoked`: `invalid_argument` (field `status`). */
export function revokedKeyCannotChangeStatus(): KeygateError {
  return invalidArgument('status', 'a revoked key cannot be reactivated or suspended; create a new key');
}

/** `rotate` of a key already revoked or rotated: `invalid_argument` (field `id`). */
export function retiredKeyCannotRotate(): KeygateError {
  return invalidArgument('id', 'this key was already rotated or revoked; rotate its replacement instead');
}

/** True for the limit refusals, which carry the counters that caused them. */
export function isLimitRefusal(
  refusal: ConsumeRefusal | undefined,
): refusal is 'usage_exhausted' | 'quota_exceeded' | 'rate_limited' | 'concurrency_limited' {
  return refusal === 'usage_exhausted' || refusal === 'quota_exceeded' || refusal === 'rate_limited' || refusal === 'concurrency_limited';
}

/** Uses a key has left: `null` for unlimited, never below 0. */
export function remainingUses(maxUses: number | null, useCount: number): number | null {
  return maxUses === null ? null : Math.max(0, maxUses - useCount);
}

/**
 * The replacement a store inserts for `rotate`, from `old` as the store holds it inside its atomic
 * step: `rotation.replacement`'s identity and keygate's own fields, with every field a caller sets
 * (`CREATE_FIELDS` of the record schema: name, scopes, status, limits, …) taken from `old`, and
 * `maxUses` the uses `old` has left. The manager built the replacement from an earlier read; an
 * update that landed between that read and the rotation must not be lost (a suspension, narrowed
 * scopes or IPs would otherwise not reach the new key).
 */
export function replacementFor(rotation: StoreRotation, old: ApiKeyRecord): ApiKeyRecord {
  const replacement: Record<string, unknown> = { ...rotation.replacement };
  const stored = old as unknown as Record<string, unknown>;
  for (const field of CREATE_FIELDS) {
    if (Object.hasOwn(stored, field) && stored[field] !== undefined) replacement[field] = stored[field];
    else delete replacement[field];
  }
  replacement.maxUses = remainingUses(old.maxUses, old.useCount);
  return replacement as unknown as ApiKeyRecord;
}

/**
 * Whether `rotate` must refuse (with {@link retiredKeyCannotRotate}): the old key is revoked by its
 * status, or its `revokedAt` is set at all (it was rotated already and is in, or past, its grace).
 */
export function isRetired(status: string, revokedAt: number | null, at: number): boolean {
  return revokedAt !== null || lifecycleRefusal(status, revokedAt, null, at) === 'api_key_revoked';
}

/**
 * The `revokedAt` an update leaves. A patch that revokes (`status: 'revoked'`) sets it to the
 * earlier of the stored value and the patch's `updatedAt`: a key already revoked keeps the instant
 * it was revoked, and a key in a rotation grace period stops now. Otherwise the patch's own
 * `revokedAt` (if any) applies.
 */
export function revokedAtAfterUpdate(
  storedRevokedAt: number | null,
  patch: { status?: string | undefined; revokedAt?: Date | null | undefined; updatedAt: Date },
): number | null | undefined {
  // Own properties only: a polluted Object.prototype must not turn every update into a revocation.
  if (Object.hasOwn(patch, 'status') && patch.status === 'revoked') {
    const now = patch.updatedAt.getTime();
    return storedRevokedAt === null ? now : Math.min(storedRevokedAt, now);
  }
  if (!Object.hasOwn(patch, 'revokedAt') || patch.revokedAt === undefined) return undefined;
  return patch.revokedAt === null ? null : patch.revokedAt.getTime();
}

/**
 * The `deletedAt` an update leaves: the stored one when the record was deleted already (a key is
 * deleted once, so a second `delete` does not postpone its purge), else the patch's own, if any.
 * `undefined`: leave the stored value as it is.
 */
export function deletedAtAfterUpdate(storedDeletedAt: number | null, patch: { deletedAt?: Date | undefined }): number | undefined {
  if (storedDeletedAt !== null || !Object.hasOwn(patch, 'deletedAt') || patch.deletedAt === undefined) return undefined;
  return patch.deletedAt.getTime();
}

/** Whether `purge` removes a record deleted at `deletedAt` (epoch ms, `null` when not deleted). */
export function isPurgeable(deletedAt: number | null, purge: { deletedBefore: Date }): boolean {
  return deletedAt !== null && deletedAt < purge.deletedBefore.getTime();
}
