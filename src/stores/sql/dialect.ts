/**
 * What each SQL dialect implements: the store operations in its own SQL, plus `migrate`. The
 * dialect-neutral parts (option validation, refusing unstorable values, notifying listeners) live
 * in `SqlStore`, which delegates here.
 */
import type { ApiKeyStore, StorePurge } from '../store.js';

/**
 * How many records one `purge` statement removes at most. A purge of more runs several statements,
 * each its own transaction, so that a purge of a million keys never holds a million row locks (or,
 * on SQLite, the database's write lock) for the whole time, nor runs one statement past a
 * `statement_timeout`.
 */
export const PURGE_BATCH_SIZE = 1000;

/** One dialect's implementation of the store operations, bound to a client and a table. */
export interface SqlEngine extends Omit<ApiKeyStore, 'subscribe' | 'release' | 'purge'> {
  /** `ApiKeyStore.release`, which every dialect implements (the leases live in the key's row). */
  release(id: string, lease: string): Promise<void>;
  /**
   * `ApiKeyStore.purge`, in batches of at most `batchSize` records (default
   * {@link PURGE_BATCH_SIZE}), each removed in one atomic step; `removed` hears the ids of each
   * batch once it committed, so listeners drop them even when a later batch fails.
   */
  purge(purge: StorePurge, removed: (ids: readonly string[]) => void, batchSize?: number): Promise<number>;
  /**
   * Creates the table and its indexes if they do not exist, and adds the columns of later record
   * schema versions to an older table (`migrate.ts`). Idempotent and safe to run concurrently.
   */
  migrate(): Promise<void>;
}
