/**
 * Bounding store calls: a store that is slow or down must refuse, never hang a request.
 *
 * One shared sweep enforces every deadline instead of a timer per call: creating and clearing a
 * timer on each of thousands of requests a second is measurable, while a sweep every few
 * milliseconds (only while calls are pending) costs next to nothing. A deadline fires at most
 * {@link SWEEP_MS} late.
 */
import { KeygateError, isKeygateError } from '../errors.js';

/** How often pending calls are checked against their deadlines. */
export const SWEEP_MS = 10;

interface Pending {
  deadline: number;
  expire: () => void;
}

const pending = new Set<Pending>();
let sweeper: ReturnType<typeof setTimeout> | undefined;

function sweep(): void {
  sweeper = undefined;
  const now = performance.now();
  for (const call of pending) {
    if (call.deadline <= now) {
      pending.delete(call);
      call.expire();
    }
  }
  arm();
}

function arm(): void {
  if (sweeper === undefined && pending.size > 0) sweeper = setTimeout(sweep, SWEEP_MS);
}

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
    const entry: Pending = {
      deadline: performance.now() + timeoutMs,
      expire: () => reject(new KeygateError('store_unavailable', `the key store did not answer ${what} within ${timeoutMs} ms`)),
    };
    pending.add(entry);
    arm();
    promise.then(
      (value) => {
        pending.delete(entry);
        resolve(value);
      },
      (error: unknown) => {
        pending.delete(entry);
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
