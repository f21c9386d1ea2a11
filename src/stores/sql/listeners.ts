/**
 * In-process change notification for SQL stores. Listeners are shared by every `SqlStore` of this
 * process that uses the same client object and table, so a write through one instance reaches the
 * verification caches of all of them at once.
 *
 * Other processes are not told: PostgreSQL and SQLite offer no change feed that keygate uses (yet),
 * so a change made elsewhere reaches this process's cache when its entry expires (`cache.ttlMs`).
 */

/** A change listener: the id of a changed record. */
export type ChangeListener = (id: string | null) => void;

const registry = new WeakMap<object, Map<string, Set<ChangeListener>>>();

/** The listener set of one (client, table) pair, created on first use. */
export function listenersOf(client: object, table: string): Set<ChangeListener> {
  let byTable = registry.get(client);
  if (!byTable) {
    byTable = new Map();
    registry.set(client, byTable);
  }
  let listeners = byTable.get(table);
  if (!listeners) {
    listeners = new Set();
    byTable.set(table, listeners);
  }
  return listeners;
}
