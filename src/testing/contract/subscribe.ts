/**
 * Contract feature: `subscribe`, an optional capability. Every write that changes a record tells
 * each listener the record's id, so verification caches drop it (this is how a revocation reaches
 * every process at once); an unsubscribed listener hears nothing more. The tests run when the
 * store declares `capabilities: { subscribe: true }` and are reported as skipped otherwise.
 */
import type { ApiKeyStore } from '../../stores/store.js';
import type { ApiKeyRecord } from '../../types.js';
import { type ContractSuite, NOON, eventually, makeRecord } from './shared.js';

/** The store's `subscribe`, which a test of the capability can rely on (the capability check guards the declaration). */
function subscribeOf(store: ApiKeyStore): NonNullable<ApiKeyStore['subscribe']> {
  if (!store.subscribe) throw new Error('capabilities.subscribe is declared, but the store has no subscribe() method');
  return store.subscribe.bind(store);
}

/** A write that changes `record`, after which every listener must have heard `record.id`. */
interface NotifyingWrite {
  title: string;
  write: (store: ApiKeyStore, record: ApiKeyRecord) => Promise<unknown>;
}

/** The writes that must notify, one test each. */
const NOTIFYING_WRITES: NotifyingWrite[] = [
  {
    title: 'tells a listener the id of a record changed by update',
    write: (store, record) => store.update(record.id, { name: 'renamed', updatedAt: new Date(NOON) }),
  },
  {
    title: 'tells a listener the id of a record revoked by update',
    write: (store, record) => store.update(record.id, { status: 'revoked', updatedAt: new Date(NOON) }),
  },
  {
    title: 'tells a listener the id of a record retired by rotate',
    write: (store, record) =>
      store.rotate({
        oldId: record.id,
        replacement: makeRecord({ rotatedFromId: record.id }),
        oldRevokedAt: new Date(NOON),
        oldStatus: 'revoked',
        now: new Date(NOON),
      }),
  },
];

/** Registers the `subscribe` tests, skipped unless the store declares the capability. */
export function subscribeContract(suite: ContractSuite): void {
  const { describe, testWhen, expect } = suite;

  describe('subscribe (capability: subscribe)', () => {
    for (const { title, write } of NOTIFYING_WRITES) {
      testWhen('subscribe', title, async (store) => {
        const record = makeRecord();
        await store.insert(record);
        const heard: (string | null)[] = [];
        const unsubscribe = subscribeOf(store)((id) => heard.push(id));
        try {
          await write(store, record);
          // Stores sharing data across processes notify asynchronously: wait, within reason.
          expect(await eventually(() => heard.includes(record.id))).toBe(true);
          expect(heard).toContain(record.id);
        } finally {
          unsubscribe();
        }
      });
    }

    testWhen('subscribe', 'stops telling a listener once it unsubscribed', async (store) => {
      const record = makeRecord();
      await store.insert(record);
      const subscribe = subscribeOf(store);
      const gone: (string | null)[] = [];
      const staying: (string | null)[] = [];
      let goneSubscribed = true;
      const unsubscribeGone = subscribe((id) => gone.push(id));
      const unsubscribeStaying = subscribe((id) => staying.push(id));
      try {
        await store.update(record.id, { name: 'first', updatedAt: new Date(NOON) });
        expect(await eventually(() => gone.includes(record.id) && staying.includes(record.id))).toBe(true);

        unsubscribeGone();
        goneSubscribed = false;
        const heardBefore = gone.length;
        const staysBefore = staying.length;
        await store.update(record.id, { name: 'second', updatedAt: new Date(NOON + 1) });
        // Once the listener still subscribed heard the change, the other would have too.
        expect(await eventually(() => staying.length > staysBefore)).toBe(true);
        expect(gone).toHaveLength(heardBefore);
      } finally {
        if (goneSubscribed) unsubscribeGone();
        unsubscribeStaying();
      }
    });
  });
}
