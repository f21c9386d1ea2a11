/** Managers a test file creates, closed after each test (their hashing threads and subscriptions). */
import type { Keygate } from '../../src/index';

/** Registers an `afterEach` that closes every manager passed to the returned `track`. */
export function closeAfterEach(): (keys: Keygate) => Keygate {
  const managers: Keygate[] = [];
  afterEach(async () => {
    await Promise.all(managers.splice(0).map((keys) => keys.close()));
  });
  return (keys) => {
    managers.push(keys);
    return keys;
  };
}
