/**
 * In-process change notification for SQL stores. Listeners are shared by every `SqlStore` of this
 * process that uses the same client object and table, so a write through one instance reaches the
 * verification caches of all of them at once.
 *
 * Other processes are not told: PostgreSQL and SQLite offer no change feed that keygate uses (yet),
 * so a change made elsewhere reaches this process's cache when its entry expires (`cache.ttlMs`).
 */
import { ChangeListeners } from '../toolkit.js';

/** Keyed by the user's client object, so the listener sets go away with the client. */
const registry = new WeakMap<object, Map<string, ChangeListeners>>();

/** The listeners of one (client, table) pair, created on first use. */
export function listenersOf(client: object, table: string): ChangeListeners {
  const byTable = registry.get(client) ?? new Map<string, ChangeListeners>();
  registry.set(client, byTable);
  const listeners = byTable.get(table) ?? new ChangeListeners();
  byTable.set(table, listeners);
  return listeners;
}
