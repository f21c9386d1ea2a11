/**
 * The capabilities manifest: which optional {@link ApiKeyStore} methods each declarable capability
 * stands for, and the always-run test that the store's declaration matches what it implements.
 * A capability added to `StoreCapabilities` must be added here (the mapped type makes the compiler
 * ask for it).
 */
import type { ApiKeyStore } from '../../stores/store.js';
import type { StoreCapabilities } from '../store-contract.js';
import type { ContractSuite } from './shared.js';

/** The names of the optional methods of {@link ApiKeyStore}: only those can stand for a capability. */
export type OptionalStoreMethod = { [M in keyof ApiKeyStore]-?: undefined extends ApiKeyStore[M] ? M : never }[keyof ApiKeyStore];

/**
 * The optional store methods behind each capability. A capability with several methods is one
 * feature: a store implements all of them or none (an audit trail that can be written but not
 * read is no audit trail).
 */
export const CAPABILITIES: { readonly [C in keyof StoreCapabilities]-?: readonly [OptionalStoreMethod, ...OptionalStoreMethod[]] } = {
  subscribe: ['subscribe'],
  concurrency: ['release'],
  audit: ['appendAudit', 'listAudit'],
  usage: ['addUsage', 'readUsage'],
  alerts: ['claimAlert'],
  leases: ['reserve', 'settle'],
  synchronous: ['consumeNow'],
};

/** `a()`, `a() and b()`, `a(), b() and c()`. */
function methodList(methods: readonly string[]): string {
  const calls = methods.map((method) => `${method}()`);
  return calls.length <= 1 ? calls.join('') : `${calls.slice(0, -1).join(', ')} and ${calls[calls.length - 1]}`;
}

/**
 * Registers, for every capability, a test that always runs: it fails when the store implements
 * some of the capability's methods but not all (whatever it declared), when it implements them
 * but did not declare the capability (their tests would be skipped unseen), and when it declared
 * the capability but has none of them.
 */
export function capabilitiesContract(suite: ContractSuite): void {
  suite.describe('capabilities', () => {
    for (const [capability, methods] of Object.entries(CAPABILITIES) as [keyof StoreCapabilities, readonly OptionalStoreMethod[]][]) {
      suite.test(`declares capabilities.${capability} exactly when the store implements ${methodList(methods)}`, async (store) => {
        const implemented = methods.filter((method) => typeof store[method] === 'function');
        const missing = methods.filter((method) => typeof store[method] !== 'function');
        const declared = suite.capabilities[capability] === true;
        // Thrown rather than asserted: the message tells the store author what to change.
        if (implemented.length > 0 && missing.length > 0) {
          const declaration = `capabilities: { ${capability}: true }`;
          throw new Error(
            `the store implements ${methodList(implemented)} but not ${methodList(missing)}: the ${capability} capability is ` +
              `${methodList(methods)} together. ` +
              (declared
                ? `Add ${methodList(missing)}, or remove ${methodList(implemented)} and the declaration ${declaration}`
                : `Add ${methodList(missing)} and declare ${declaration} in the options of describeStoreContract, or remove ${methodList(implemented)}`),
          );
        }
        if (implemented.length > 0 && !declared) {
          throw new Error(
            `the store implements ${methodList(methods)} but its contract options do not declare it, so its ${capability} tests ` +
              `were skipped: declare capabilities: { ${capability}: true } in the options of describeStoreContract`,
          );
        }
        if (declared && implemented.length === 0) {
          throw new Error(
            `the contract options declare capabilities: { ${capability}: true } but the store has no ${methodList(methods)} ` +
              `${methods.length === 1 ? 'method' : 'methods'}: implement ${methods.length === 1 ? 'it' : 'them'}, or remove the declaration`,
          );
        }
      });
    }
  });
}
