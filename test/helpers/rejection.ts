/** Resolves with what `action` rejected with; fails the test if it resolved (the contract suite's helper). */
export { rejectionOf as rejection } from '../../src/testing/contract/shared';
