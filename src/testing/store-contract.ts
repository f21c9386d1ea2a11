/** Placeholder, replaced below. */
export interface StoreContractOptions {
  create: () => Promise<unknown>;
}
export function describeStoreContract(): void {}
