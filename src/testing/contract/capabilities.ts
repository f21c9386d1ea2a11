/**
 * The capabilities manifest: which optional {@link ApiKeyStore} method each declarable capability
 * stands for, and the always-run test that the store's declaration matches what it implements.
 * A capability added to `StoreCapabilities` must be added here (the mapped type makes the compiler
 * ask for it).
 */
import type { ApiKeyStore } from '../../stores/store.js';
import type { StoreCapabilities } from '../store-contract.js';
import type { ContractSuite } from './shared.js';

/** The optional store method behind each capability. */
export const CAPABILITIES: { readonly [C in keyof StoreCapabilities]-?: keyof ApiKeyStore } = {
  subscribe: 'subscribe',
  concurrency: 'release',
};

/**
 * Registers, for every capability, a test that always runs: it fails when the store implements the
 * method but did not declare the capability (its tests would be skipped unseen), and when it
 * declared the capability but has no such method.
 */
export function capabilitiesContract(suite: ContractSuite): void {
  suite.describe('capabilities', () => {
    for (const [capability, method] of Object.entries(CAPABILITIES) as [keyof StoreCapabilities, keyof ApiKeyStore][]) {
      suite.test(`declares capabilities.${capability} exactly when the store implements ${method}()`, async (store) => {
        const implemented = typeof store[method] === 'function';
        const declared = suite.capabilities[capability] === true;
        // Thrown rather than asserted: the message tells the store author what to change.
        if (implemented && !declared) {
          throw new Error(
            `the store implements ${method}() but its contract options do not declare it, so its ${capability} tests ` +
              `were skipped: declare capabilities: { ${capability}: true } in the options of describeStoreContract`,
          );
        }
        if (declared && !implemented) {
          throw new Error(
            `the contract options declare capabilities: { ${capability}: true } but the store has no ${method}() method: ` +
              `implement it, or remove the declaration`,
          );
        }
      });
    }
  });
}
