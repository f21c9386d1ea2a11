/**
 * What each SQL dialect implements: the store operations in its own SQL, plus `migrate`. The
 * dialect-neutral parts (option validation, refusing unstorable values, notifying listeners) live
 * in `SqlStore`, which delegates here.
 */
import type { ApiKeyStore } from '../store.js';

/** One dialect's implementation of the store operations, bound to a client and a table. */
export interface SqlEngine extends Omit<ApiKeyStore, 'subscribe' | 'release'> {
  /** `ApiKeyStore.release`, which every dialect implements (the leases live in the key's row). */
  release(id: string, lease: string): Promise<void>;
  /**
   * Creates the table and its indexes if they do not exist, and adds the columns of later record
   * schema versions to an older table (`migrate.ts`). Idempotent and safe to run concurrently.
   */
  migrate(): Promise<void>;
}
