/** Bounding store calls: a store that is slow or down must refuse, never hang a request. */
import { KeygateError, isKeygateError } from '../errors.js';

/**
 * Runs a store call with a deadline. A rejection or a missed deadline becomes
 * `store_unavailable`; a `KeygateError` the store threw on purpose (such as `already_exists`)
 * passes through.
 */
export function withDeadline<T>(call: () => Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let promise: Promise<T>;
  try {
    promise = call();
  } catch (error) {
    return Promise.reject(unavailable(error, what));
  }
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new KeygateError('store_unavailable', `the key store did not answer ${what} within ${timeoutMs} ms`));
    }, timeoutMs);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(unavailable(error, what));
      },
    );
  });
}

function unavailable(error: unknown, what: string): KeygateError {
  if (isKeygateError(error)) return error;
  // The store's own message stays in `cause`: drivers may quote row values, and a refusal's
  // message goes to clients.
  return new KeygateError('store_unavailable', `the key store failed ${what}`, { cause: error });
}
