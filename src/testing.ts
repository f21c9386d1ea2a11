/**
 * `keygate/testing`: the store contract suite that every built-in store passes and that authors
 * of custom stores run against theirs.
 */
export { describeStoreContract } from './testing/store-contract.js';
export type { AgreementOptions, StoreCapabilities, StoreContractOptions } from './testing/store-contract.js';
