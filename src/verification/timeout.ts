/**
 * Bounding store calls: a store that is slow or down must refuse, never hang a request.
 *
 * One shared sweep enforces every deadline instead of a timer per call: creating and clearing a
 * timer on each of thousands of requests a second is measurable, while a sweep every few
 * milliseconds (only while calls are pending) costs next to nothing. A deadline fires at most
 * {@link SWEEP_MS} late.
 */
import { type KeygateError, isKeygateError, refusalError } from '../errors.js';

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
      expire: () => reject(storeUnavailable(`the key store did not answer ${what} within ${timeoutMs} ms`)),
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

/**
 * The `deadline` to send with a consume or a reservation (wall clock, `Date.now()` scale): a
 * little before `storeTimeoutMs` ends, because the answer still has to travel back before keygate
 * gives up on it.
 */
export function storeDeadline(storeTimeoutMs: number): number {
  return Date.now() + storeTimeoutMs - Math.min(100, Math.max(1, Math.floor(storeTimeoutMs / 10)));
}

function unavailable(error: unknown, what: string): KeygateError {
  if (isKeygateError(error)) return error;
  // The store's own message stays in `cause`, for logs: a refusal's message goes to clients.
  return storeUnavailable(`the key store failed ${what}`, error);
}

/**
 * A `store_unavailable` error: the public message for clients (nothing about keygate's internals), `Retry-After: 1`, and the failure
 * as `cause` for logs, as a copy that keeps only the driver error's name, message, code and stack.
 * Drivers attach what they sent to their errors (ioredis a reply error's command arguments,
 * PostgreSQL a failing row in `detail`), and those can hold a record's keyHash.
 */
export function storeUnavailable(internal: string, failure?: unknown): KeygateError {
  const cause = new Error(internal);
  cause.name = 'KeygateStoreFailure';
  if (failure !== undefined) (cause as Error & { cause?: unknown }).cause = safeCopy(failure);
  return refusalError('store_unavailable', { cause, retryAfter: 1 });
}

/** A copy of a thrown value with only its name, message, code and stack: no attached data. */
export function safeCopy(failure: unknown): Error {
  if (!(failure instanceof Error) && (failure === null || typeof failure !== 'object')) return new Error(String(failure));
  const source = failure as { name?: unknown; message?: unknown; code?: unknown; stack?: unknown };
  const copy = new Error(typeof source.message === 'string' ? source.message : 'store failure');
  copy.name = typeof source.name === 'string' ? source.name : 'Error';
  if (typeof source.code === 'string' || typeof source.code === 'number') (copy as Error & { code?: unknown }).code = source.code;
  copy.stack = typeof source.stack === 'string' ? source.stack : `${copy.name}: ${copy.message}`;
  return copy;
}
