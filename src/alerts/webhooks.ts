/**
 * Webhook delivery for keygate's alerts, signed per the Standard Webhooks specification
 * (https://www.standardwebhooks.com): each POST carries `webhook-id`, `webhook-timestamp` (Unix
 * seconds of the real clock at that attempt) and `webhook-signature` (`v1,<base64 HMAC-SHA256>` of
 * `<id>.<timestamp>.<body>`), so a receiver verifies it with any Standard Webhooks library, such as
 * `new Webhook(secret).verify(body, headers)` from the `standardwebhooks` package.
 *
 * Delivery runs in the background: {@link WebhookSender.send} queues and returns at once, a few
 * deliveries run at a time, failures that may pass (network errors, timeouts, 408, 429, 5xx) are
 * retried with exponential back-off and full jitter, and a message that cannot be delivered is
 * dropped, counted and reported to `onDropped`. Nothing here throws into the caller, rejects
 * unhandled, or keeps the process alive while it waits to retry.
 */
import { Webhook } from 'standardwebhooks';

/** One webhook to deliver. */
export interface WebhookMessage {
  /** Where to POST it: an `http:` or `https:` URL without credentials. */
  url: string;
  /** The event type, such as `quota.threshold`: the envelope's `type`. */
  type: string;
  /**
   * The message id, sent as `webhook-id`: the same on every attempt of this message, so the
   * receiver can use it as its idempotency key. 1 to 256 visible ASCII characters (no spaces).
   */
  id: string;
  /** The event's payload: the envelope's `data`. Must be serialisable with `JSON.stringify`. */
  data: Record<string, unknown>;
}

/** How a {@link WebhookSender} signs, retries and bounds its deliveries. */
export interface WebhookSenderOptions {
  /**
   * The signing secret: `whsec_` followed by the base64 of at least 24 random bytes, as the
   * Standard Webhooks specification describes. Never echoed in an error, a drop reason or a log.
   */
  secret: string;
  /** Attempts per message, the first included. @default 6 */
  maxAttempts?: number;
  /**
   * The first retry waits a random time below this; each later one doubles the bound (exponential
   * back-off with full jitter), up to `maxDelayMs`. @default 1000
   */
  initialDelayMs?: number;
  /**
   * The longest wait before a retry, and the cap on a `Retry-After` (delta-seconds or HTTP date)
   * that a 429 or 503 answer asks for. @default 60000
   */
  maxDelayMs?: number;
  /** Time allowed for one attempt until the response's status arrives; then it is aborted. @default 10000 */
  timeoutMs?: number;
  /**
   * Messages allowed to wait, for a free delivery slot or for their next retry; a message sent
   * beyond that is dropped and counted. Deliveries in flight do not count. @default 1000
   */
  maxQueue?: number;
  /** The fetch implementation. @default globalThis.fetch (undici in Node 20) */
  fetch?: typeof fetch;
  /**
   * Told of each message dropped: final failure, retries exhausted, queue full, invalid message or
   * sent after close. `reason` is a short text (with the HTTP status where there was one) that
   * never includes the secret. Whatever it throws, or a promise it returns rejects with, is ignored.
   */
  onDropped?: (message: WebhookMessage, reason: string) => void;
}

/** Deliveries in flight at once; the rest wait in the queue. */
const CONCURRENCY = 4;
const MAX_ID_LENGTH = 256;
const MIN_SECRET_BYTES = 24;
const SECRET_PREFIX = 'whsec_';
const DEFAULT_CLOSE_TIMEOUT_MS = 5000;

/**
 * The wait before retry number `retry` (1 for the first retry): a random time in
 * `[0, min(maxDelayMs, initialDelayMs × 2^(retry−1)))` ("full jitter"), in whole milliseconds.
 */
export function backoffDelayMs(retry: number, initialDelayMs: number, maxDelayMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.max(0, retry - 1));
  return Math.floor(random() * ceiling);
}

type Outcome =
  | { kind: 'delivered' }
  | { kind: 'final'; reason: string }
  | { kind: 'retry'; reason: string; retryAfterMs: number | undefined };

interface Job {
  readonly message: WebhookMessage;
  readonly body: string;
  /** Attempts started so far. */
  attempts: number;
  /** Delivered or dropped: nothing more is done or counted for it. */
  settled: boolean;
  /** Set while waiting for a retry. */
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Set while an attempt is in flight. */
  abort: ((why: 'closed') => void) | undefined;
  lastFailure: string | undefined;
}

/**
 * Sends Standard Webhooks–signed alert messages in the background, with bounded concurrency,
 * queue and retries.
 *
 * ```ts
 * const webhooks = new WebhookSender({ secret: process.env.WEBHOOK_SECRET!, onDropped: (m, why) => log(m.id, why) });
 * webhooks.send({ url: 'https://example.com/hooks', type: 'quota.threshold', id: 'msg_123', data: { keyId, used } });
 * await webhooks.close(); // on shutdown
 * ```
 *
 * Each attempt is a `POST` of `{"type", "timestamp", "data"}` (`timestamp`: ISO 8601 of when the
 * message was sent; the body is the same on every attempt) with `content-type: application/json`.
 * Any 2xx answer is success. Redirects are not followed: a 3xx is a final failure, since following
 * it would send the signed body elsewhere. Network errors, timeouts, 408, 429 and 5xx are retried
 * up to `maxAttempts`; any other answer is a final failure.
 */
export class WebhookSender {
  readonly #signer: Webhook;
  readonly #redact: (text: string) => string;
  readonly #fetch: typeof fetch;
  readonly #maxAttempts: number;
  readonly #initialDelayMs: number;
  readonly #maxDelayMs: number;
  readonly #timeoutMs: number;
  readonly #maxQueue: number;
  readonly #onDropped: ((message: WebhookMessage, reason: string) => void) | undefined;

  /** Waiting for a delivery slot, in order. */
  readonly #ready: Job[] = [];
  /** Waiting for their retry timer. */
  readonly #retrying = new Set<Job>();
  readonly #inFlight = new Set<Job>();
  #pending = 0;
  #delivered = 0;
  #dropped = 0;
  #closed = false;
  #closing: Promise<void> | undefined;
  #onIdle: (() => void) | undefined;

  /** @throws TypeError naming the option, when an option is invalid (the secret is never echoed). */
  constructor(options: WebhookSenderOptions) {
    if (options === null || typeof options !== 'object') throw new TypeError('WebhookSender: options must be an object');
    const secret: unknown = options.secret;
    this.#signer = makeSigner(secret);
    const secretText = secret as string;
    const secretKey = secretText.slice(SECRET_PREFIX.length);
    this.#redact = (text) => text.split(secretText).join('[secret]').split(secretKey).join('[secret]');

    this.#maxAttempts = integerOption(options.maxAttempts, 'maxAttempts', 6, 1);
    this.#initialDelayMs = numberOption(options.initialDelayMs, 'initialDelayMs', 1000, 0);
    this.#maxDelayMs = numberOption(options.maxDelayMs, 'maxDelayMs', 60_000, 0);
    this.#timeoutMs = numberOption(options.timeoutMs, 'timeoutMs', 10_000, 1);
    this.#maxQueue = integerOption(options.maxQueue, 'maxQueue', 1000, 0);

    const fetchImpl: unknown = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== 'function') {
      throw new TypeError('WebhookSenderOptions.fetch must be a function (and no global fetch exists to default to)');
    }
    this.#fetch = fetchImpl as typeof fetch;
    if (options.onDropped !== undefined && typeof options.onDropped !== 'function') {
      throw new TypeError('WebhookSenderOptions.onDropped must be a function');
    }
    this.#onDropped = options.onDropped;
  }

  /** Messages accepted and not yet delivered or dropped: waiting, in flight or waiting to retry. */
  get pending(): number {
    return this.#pending;
  }

  /** Messages delivered (answered with a 2xx). */
  get delivered(): number {
    return this.#delivered;
  }

  /** Messages dropped: final failures, retries exhausted, queue full, invalid, sent after close or cut off by close. */
  get dropped(): number {
    return this.#dropped;
  }

  /**
   * Queues `message` for delivery and returns at once; never throws. A message that is invalid,
   * sent after {@link close}, or sent while `maxQueue` messages already wait, is dropped (counted,
   * `onDropped`). The body is serialised now: changing `message.data` afterwards changes nothing.
   */
  send(message: WebhookMessage): void {
    let queued = false;
    try {
      if (this.#closed) {
        this.#drop(message, 'sender closed');
        return;
      }
      const invalid = invalidMessage(message);
      if (invalid !== undefined) {
        this.#drop(message, `invalid message: ${invalid}`);
        return;
      }
      let body: string;
      try {
        body = JSON.stringify({ type: message.type, timestamp: new Date().toISOString(), data: message.data });
      } catch {
        this.#drop(message, 'invalid message: data is not serialisable as JSON');
        return;
      }
      const slotFree = this.#inFlight.size < CONCURRENCY && this.#ready.length === 0;
      if (!slotFree && this.#ready.length + this.#retrying.size >= this.#maxQueue) {
        this.#drop(message, `queue full (maxQueue ${this.#maxQueue})`);
        return;
      }
      const job: Job = { message, body, attempts: 0, settled: false, retryTimer: undefined, abort: undefined, lastFailure: undefined };
      this.#pending++;
      this.#ready.push(job);
      queued = true;
      this.#pump();
    } catch {
      // send() never throws: a hostile message object (a throwing getter) is dropped.
      if (!queued) this.#drop(message, 'invalid message: it could not be read');
    }
  }

  /**
   * Stops accepting messages (later sends are dropped) and waits, up to `timeoutMs` (default
   * 5000), for the deliveries under way: attempts in flight finish, and messages still queued get
   * one attempt each as slots free up. Nothing is retried any more: messages waiting for a retry
   * are dropped at once, and a failing attempt is final. At the deadline, attempts still in flight
   * are aborted and they and the queue are dropped. Resolves when nothing is left; never rejects,
   * never waits past the deadline. Calling it again returns the same promise.
   */
  close(options?: { timeoutMs?: number }): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    let timeoutMs = DEFAULT_CLOSE_TIMEOUT_MS;
    try {
      const asked = options?.timeoutMs;
      if (typeof asked === 'number' && Number.isFinite(asked) && asked >= 0) timeoutMs = Math.min(asked, 2_147_483_647);
    } catch {
      // an options object with a throwing getter: keep the default
    }
    for (const job of [...this.#retrying]) {
      this.#retrying.delete(job);
      clearTimeout(job.retryTimer);
      job.retryTimer = undefined;
      this.#settleDropped(job, `sender closed while waiting to retry (last failure: ${job.lastFailure ?? 'unknown'})`);
    }
    this.#closing = new Promise<void>((resolve) => {
      if (this.#isIdle()) {
        resolve();
        return;
      }
      const deadline = setTimeout(() => {
        this.#onIdle = undefined;
        try {
          for (const job of this.#ready.splice(0)) this.#settleDropped(job, 'sender closed before this message was attempted');
          for (const job of [...this.#inFlight]) {
            if (job.settled) continue;
            this.#settleDropped(job, 'sender closed while the delivery was in flight (aborted; the receiver may have it)');
            try {
              job.abort?.('closed');
            } catch {
              // the fetch's abort listeners are not ours to fail close()
            }
          }
        } finally {
          resolve();
        }
      }, timeoutMs);
      this.#onIdle = () => {
        clearTimeout(deadline);
        this.#onIdle = undefined;
        resolve();
      };
    });
    return this.#closing;
  }

  #isIdle(): boolean {
    return this.#ready.length === 0 && this.#retrying.size === 0 && this.#inFlight.size === 0;
  }

  /** Starts queued jobs while slots are free. */
  #pump(): void {
    while (this.#inFlight.size < CONCURRENCY && this.#ready.length > 0) {
      const job = this.#ready.shift() as Job;
      if (job.settled) continue;
      this.#inFlight.add(job);
      this.#attempt(job).catch(() => {
        // #attempt handles its own failures; this only guarantees no unhandled rejection.
      });
    }
    if (this.#onIdle && this.#isIdle()) this.#onIdle();
  }

  async #attempt(job: Job): Promise<void> {
    job.attempts++;
    const controller = new AbortController();
    let aborted: 'timeout' | 'closed' | undefined;
    job.abort = (why) => {
      aborted ??= why;
      controller.abort();
    };
    const timer = setTimeout(() => {
      aborted ??= 'timeout';
      controller.abort();
    }, this.#timeoutMs);
    timer.unref();
    let outcome: Outcome | undefined;
    try {
      // Leave the caller's synchronous send() before any network work starts.
      await null;
      if (job.settled) return; // cut off by close() meanwhile
      const { message } = job;
      const nowMs = Date.now(); // the real clock: receivers reject timestamps far from theirs
      const seconds = Math.floor(nowMs / 1000);
      const signature = this.#signer.sign(message.id, new Date(seconds * 1000), job.body);
      const response = await this.#fetch(message.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'keygate-webhooks',
          'webhook-id': message.id,
          'webhook-timestamp': String(seconds),
          'webhook-signature': signature,
        },
        body: job.body,
        redirect: 'manual',
        signal: controller.signal,
      });
      discardBody(response);
      outcome = classifyResponse(response);
    } catch (error) {
      outcome = {
        kind: 'retry',
        reason: aborted === 'timeout' ? `timed out after ${this.#timeoutMs} ms` : aborted === 'closed' ? 'aborted by close' : networkReason(error),
        retryAfterMs: undefined,
      };
    } finally {
      clearTimeout(timer);
      job.abort = undefined;
      this.#inFlight.delete(job);
      try {
        if (!job.settled && outcome) this.#conclude(job, outcome);
      } finally {
        this.#pump();
      }
    }
  }

  #conclude(job: Job, outcome: Outcome): void {
    if (outcome.kind === 'delivered') {
      job.settled = true;
      this.#pending--;
      this.#delivered++;
      return;
    }
    if (outcome.kind === 'final') {
      this.#settleDropped(job, outcome.reason);
      return;
    }
    job.lastFailure = outcome.reason;
    if (job.attempts >= this.#maxAttempts) {
      this.#settleDropped(job, `gave up after ${job.attempts} attempt${job.attempts === 1 ? '' : 's'} (last failure: ${outcome.reason})`);
      return;
    }
    if (this.#closed) {
      this.#settleDropped(job, `sender closed; not retried (last failure: ${outcome.reason})`);
      return;
    }
    const delay = Math.min(this.#maxDelayMs, outcome.retryAfterMs ?? backoffDelayMs(job.attempts, this.#initialDelayMs, this.#maxDelayMs));
    this.#retrying.add(job);
    job.retryTimer = setTimeout(() => {
      job.retryTimer = undefined;
      if (!this.#retrying.delete(job) || job.settled) return;
      // A retry goes before messages not yet tried: it was accepted earlier.
      this.#ready.unshift(job);
      this.#pump();
    }, delay);
    job.retryTimer.unref();
  }

  #settleDropped(job: Job, reason: string): void {
    if (job.settled) return;
    job.settled = true;
    this.#pending--;
    this.#drop(job.message, reason);
  }

  /** Counts a drop and tells onDropped; swallows whatever onDropped throws or rejects with. */
  #drop(message: WebhookMessage, reason: string): void {
    this.#dropped++;
    const onDropped = this.#onDropped;
    if (!onDropped) return;
    try {
      const returned: unknown = onDropped(message, this.#redact(reason));
      if (returned !== null && typeof returned === 'object' && typeof (returned as PromiseLike<unknown>).then === 'function') {
        Promise.resolve(returned).catch(() => {});
      }
    } catch {
      // The listener's failure is its own; delivery goes on.
    }
  }
}

/** The signer for `secret`, or a TypeError that describes the problem without echoing the value. */
function makeSigner(secret: unknown): Webhook {
  const expected = `WebhookSenderOptions.secret must be '${SECRET_PREFIX}' followed by the base64 of at least ${MIN_SECRET_BYTES} bytes`;
  if (typeof secret !== 'string') throw new TypeError(`${expected} (got ${secret === null ? 'null' : typeof secret})`);
  if (!secret.startsWith(SECRET_PREFIX)) throw new TypeError(`${expected} (it does not start with '${SECRET_PREFIX}')`);
  const key = secret.slice(SECRET_PREFIX.length);
  if (key.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(key)) throw new TypeError(`${expected} (the part after the prefix is not base64)`);
  if (Buffer.from(key, 'base64').length < MIN_SECRET_BYTES) throw new TypeError(`${expected} (it is shorter)`);
  try {
    return new Webhook(secret);
  } catch {
    throw new TypeError(`${expected} (it could not be decoded)`);
  }
}

function integerOption(value: unknown, name: string, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new TypeError(`WebhookSenderOptions.${name} must be an integer of at least ${min}`);
  }
  return value;
}

function numberOption(value: unknown, name: string, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  // setTimeout treats anything above 2^31−1 ms as 1 ms.
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > 2_147_483_647) {
    throw new TypeError(`WebhookSenderOptions.${name} must be a number of milliseconds from ${min} to 2147483647`);
  }
  return value;
}

/** Why `message` cannot be sent, or undefined. Never quotes the URL (it may carry a token). */
function invalidMessage(message: WebhookMessage): string | undefined {
  if (message === null || typeof message !== 'object') return 'not an object';
  const { url, type, id, data } = message;
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_ID_LENGTH || !/^[\x21-\x7e]+$/.test(id)) {
    return `id must be 1 to ${MAX_ID_LENGTH} visible ASCII characters`;
  }
  if (typeof type !== 'string' || type.length === 0) return 'type must be a non-empty string';
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return 'data must be an object';
  if (typeof url !== 'string') return 'url must be a string';
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'url is not a valid URL';
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return 'url must be http: or https:';
  if (parsed.username !== '' || parsed.password !== '') return 'url must not include credentials';
  return undefined;
}

function classifyResponse(response: Response): Outcome {
  const { status } = response;
  if (status >= 200 && status < 300) return { kind: 'delivered' };
  if (response.type === 'opaqueredirect' || (status >= 300 && status < 400)) {
    return { kind: 'final', reason: `redirect not followed (HTTP ${status})` };
  }
  if (status === 408 || status === 429 || status >= 500) {
    const retryAfterMs = status === 429 || status === 503 ? parseRetryAfter(response.headers.get('retry-after')) : undefined;
    return { kind: 'retry', reason: `HTTP ${status}`, retryAfterMs };
  }
  return { kind: 'final', reason: `rejected with HTTP ${status}` };
}

/** A Retry-After header (delta-seconds or HTTP date, per RFC 9110) in milliseconds from now. */
function parseRetryAfter(value: string | null): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

function networkReason(error: unknown): string {
  const cause = (error as { cause?: unknown } | null)?.cause;
  const code = (cause as { code?: unknown } | null)?.code ?? (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return `network error (${code})`;
  const detail = cause instanceof Error ? cause.message : error instanceof Error ? error.message : '';
  return detail ? `network error (${detail})` : 'network error';
}

/** Releases the connection: the response's body is not needed. */
function discardBody(response: Response): void {
  try {
    const cancelled = response.body?.cancel();
    if (cancelled) cancelled.catch(() => {});
  } catch {
    // already consumed or locked: nothing to release
  }
}
