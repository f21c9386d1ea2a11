/**
 * A store whose calls are timed: put in front of the real store once `keys.metrics()` is on, so
 * that without metrics a store call costs exactly what it did.
 */
import { performance } from 'node:perf_hooks';
import type { ApiKeyStore } from '../stores/store.js';
import type { Telemetry } from './telemetry.js';

/** Every asynchronous method a store may have; `subscribe` is synchronous and passes through, `consumeNow` is timed as `consume`. */
const TIMED_METHODS = [
  'insert', 'findById', 'findByKeyPrefix', 'update', 'rotate', 'list', 'purge', 'consume', 'release',
  'appendAudit', 'listAudit', 'addUsage', 'readUsage', 'claimAlert', 'reserve', 'settle',
] as const satisfies readonly (keyof ApiKeyStore)[];

/** `store` with each call timed into `telemetry` (and failures counted), methods it lacks still absent. */
export function instrumentStore(store: ApiKeyStore, telemetry: Telemetry): ApiKeyStore {
  const timed: Record<string, unknown> = {};
  for (const operation of TIMED_METHODS) {
    const method = store[operation] as ((...args: unknown[]) => Promise<unknown>) | undefined;
    if (typeof method !== 'function') continue;
    timed[operation] = async (...args: unknown[]): Promise<unknown> => {
      const started = performance.now();
      try {
        return await method.apply(store, args);
      } catch (error) {
        telemetry.storeFailures.inc(operation);
        throw error;
      } finally {
        telemetry.storeCalls.observe(operation, (performance.now() - started) / 1_000);
      }
    };
  }
  const consumeNow = store.consumeNow;
  if (typeof consumeNow === 'function') {
    // Timed as `consume`: to the app it is the same call, answered without waiting.
    timed.consumeNow = (...args: Parameters<typeof consumeNow>): ReturnType<typeof consumeNow> => {
      const started = performance.now();
      try {
        return consumeNow.apply(store, args);
      } catch (error) {
        telemetry.storeFailures.inc('consume');
        throw error;
      } finally {
        telemetry.storeCalls.observe('consume', (performance.now() - started) / 1_000);
      }
    };
  }
  if (typeof store.subscribe === 'function') timed.subscribe = store.subscribe.bind(store);
  return timed as unknown as ApiKeyStore;
}
