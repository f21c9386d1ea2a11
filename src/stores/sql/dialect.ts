/**
 * What each SQL dialect implements: the store operations in its own SQL, plus `migrate`. The
 * dialect-neutral parts (option validation, refusing unstorable values, notifying listeners) live
 * in `SqlStore`, which delegates here.
 */
import type {
  AlertClaim,
  ApiKeyStore,
  AuditEntry,
  ReserveOutcome,
  ReserveRequest,
  Settlement,
  StoreAuditQuery,
  StorePurge,
  StoreUsageQuery,
  UsageBatch,
  UsageCell,
} from '../store.js';

/**
 * How many records one `purge` statement removes at most. A purge of more runs several statements,
 * each its own transaction, so that a purge of a million keys never holds a million row locks (or,
 * on SQLite, the database's write lock) for the whole time, nor runs one statement past a
 * `statement_timeout`.
 */
export const PURGE_BATCH_SIZE = 1000;

/** One dialect's implementation of the store operations, bound to a client and a table. */
export interface SqlEngine
  extends Omit<ApiKeyStore, 'subscribe' | 'release' | 'purge' | 'appendAudit' | 'listAudit' | 'addUsage' | 'readUsage' | 'claimAlert' | 'reserve' | 'settle' | 'consumeNow'> {
  /** `ApiKeyStore.release`, which every dialect implements (the leases live in the key's row). */
  release(id: string, lease: string): Promise<void>;
  /**
   * `ApiKeyStore.purge`, in batches of at most `batchSize` records (default
   * {@link PURGE_BATCH_SIZE}), each removed in one atomic step; `removed` hears the ids of each
   * batch once it committed, so listeners drop them even when a later batch fails.
   */
  purge(purge: StorePurge, removed: (ids: readonly string[]) => void, batchSize?: number): Promise<number>;
  /**
   * `ApiKeyStore.reserve`: the key's row locked, `reservationOnRow` (`reservations.ts`) decided on
   * it, and when admitted the counters and holds written, in one atomic step.
   */
  reserve(id: string, request: ReserveRequest): Promise<ReserveOutcome | null>;
  /** `ApiKeyStore.settle`: the key's row locked, `settlementOnRow` decided on it, and its result written, in one atomic step. */
  settle(id: string, settlement: Settlement): Promise<void>;
  /** `ApiKeyStore.appendAudit`: one insert into `<table>_audit`, `already_exists` for a taken id. */
  appendAudit(entry: AuditEntry): Promise<void>;
  /** `ApiKeyStore.listAudit`: one indexed read of `<table>_audit` from the keyset position. */
  listAudit(query: StoreAuditQuery): Promise<AuditEntry[]>;
  /**
   * `ApiKeyStore.addUsage`: the batch id and every cell of a key the table holds in one
   * transaction (the others dropped), exactly once per id.
   */
  addUsage(batch: UsageBatch): Promise<void>;
  /** `ApiKeyStore.readUsage`: one read of `<table>_usage` through its primary key. */
  readUsage(query: StoreUsageQuery): Promise<UsageCell[]>;
  /** `ApiKeyStore.claimAlert`: one atomic upsert into `<table>_alert_claims`. */
  claimAlert(claim: AlertClaim): Promise<boolean>;
  /**
   * Creates the table and its indexes if they do not exist, and adds the columns of later record
   * schema versions to an older table (`migrate.ts`). Idempotent and safe to run concurrently.
   */
  migrate(): Promise<void>;
}
