/**
 * bcrypt off the main thread. One bcryptjs cost-10 compare is ~70 ms of CPU, and bcryptjs's async
 * form still holds the event loop for all of it: a handful of cold verifications a second would
 * stall every request of the process. A small pool of worker threads runs them instead, with a
 * bounded queue: when it is full, the caller is refused at once rather than queued without limit.
 */
import { performance } from 'node:perf_hooks';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { refusalError } from '../errors.js';

/** Size of the pool. */
export interface HashPoolOptions {
  /** Worker threads. @default one less than the CPU count, between 1 and 4 */
  threads?: number;
  /** Jobs allowed to wait for a thread; one more is refused with `verification_busy`. @default 64 */
  maxQueue?: number;
}

type Job = { kind: 'compare'; secret: string; hash: string } | { kind: 'hash'; secret: string; cost: number };

interface PendingJob {
  job: Job;
  resolve: (value: boolean | string) => void;
  reject: (error: Error) => void;
  /** When it was queued (`performance.now()`), when the wait is being measured. */
  queuedAt?: number;
}

interface Thread {
  worker: Worker;
  busy: PendingJob | undefined;
}

// Runs in each worker: the job's result, or the error's message.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const bcrypt = require(workerData.bcryptPath);
parentPort.on('message', (job) => {
  try {
    const result = job.kind === 'compare' ? bcrypt.compareSync(job.secret, job.hash) : bcrypt.hashSync(job.secret, job.cost);
    parentPort.postMessage({ ok: true, result });
  } catch (error) {
    parentPort.postMessage({ ok: false, message: String(error && error.message) });
  }
});
`;

/**
 * The file of this module, in the CommonJS build, the ES module build and under test runners alike
 * (neither `__filename` nor `import.meta.url` exists in all three): read from a V8 call site.
 */
function thisModuleFile(): string {
  const original = Error.prepareStackTrace;
  try {
    Error.prepareStackTrace = (_error, callSites) => callSites;
    const callSites = new Error().stack as unknown as NodeJS.CallSite[];
    const file = callSites[0]?.getFileName();
    if (!file) throw new Error('keygate could not locate its own module to start hashing threads');
    return file;
  } finally {
    Error.prepareStackTrace = original;
  }
}

/** The path of bcryptjs's CommonJS build, resolved from keygate's own location. */
function bcryptPath(): string {
  return createRequire(thisModuleFile()).resolve('bcryptjs');
}

/** Default thread count: leave one core to the event loop, use at most four. */
export function defaultThreads(): number {
  return Math.max(1, Math.min(4, availableParallelism() - 1));
}

/** A pool of bcrypt worker threads, started on first use and stopped by {@link close}. */
export class HashPool {
  readonly #threads: number;
  readonly #maxQueue: number;
  /** Waiting jobs: `clean` ones start before any `suspect` one (see FailureBudget). */
  readonly #queues: Record<'clean' | 'suspect', PendingJob[]> = { clean: [], suspect: [] };
  #workers: Thread[] = [];

  constructor(options: HashPoolOptions = {}) {
    this.#threads = options.threads ?? defaultThreads();
    this.#maxQueue = options.maxQueue ?? 64;
  }

  /**
   * bcrypt compare of a secret with a stored hash, on a worker thread. A `suspect` compare (its
   * client or keyPrefix failed recently) waits until no `clean` one is waiting.
   */
  compare(secret: string, hash: string, lane: 'clean' | 'suspect' = 'clean'): Promise<boolean> {
    return this.#run({ kind: 'compare', secret, hash }, lane) as Promise<boolean>;
  }

  /** bcrypt hash of a new secret, on a worker thread. */
  hash(secret: string, cost: number): Promise<string> {
    return this.#run({ kind: 'hash', secret, cost }, 'clean') as Promise<string>;
  }

  /** Told how long each job waited for a thread, in seconds (`keys.metrics()`); jobs that started at once waited 0. */
  onWait: ((seconds: number) => void) | undefined;

  /** Jobs waiting for a thread. */
  get queueDepth(): number {
    return this.#waiting();
  }

  /** Jobs running or waiting. */
  get pending(): number {
    return this.#waiting() + this.#workers.filter((thread) => thread.busy).length;
  }

  /** Stops every thread; waiting and running jobs are rejected. The pool can start again after. */
  async close(): Promise<void> {
    const workers = this.#workers;
    this.#workers = [];
    const waiting = [...this.#queues.clean.splice(0), ...this.#queues.suspect.splice(0)];
    for (const pending of waiting) pending.reject(refusalError('verification_busy'));
    await Promise.all(workers.map((thread) => thread.worker.terminate()));
  }

  #waiting(): number {
    return this.#queues.clean.length + this.#queues.suspect.length;
  }

  #dequeue(): PendingJob | undefined {
    return this.#queues.clean.shift() ?? this.#queues.suspect.shift();
  }

  #run(job: Job, lane: 'clean' | 'suspect'): Promise<boolean | string> {
    const idle = this.#idleThread();
    if (!idle && this.#waiting() >= this.#maxQueue) {
      return Promise.reject(refusalError('verification_busy', { retryAfter: 1 }));
    }
    return new Promise((resolve, reject) => {
      const pending: PendingJob = { job, resolve, reject };
      if (idle) {
        this.onWait?.(0);
        this.#start(idle, pending);
      } else {
        if (this.onWait) pending.queuedAt = performance.now();
        this.#queues[lane].push(pending);
      }
    });
  }

  #idleThread(): Thread | undefined {
    const idle = this.#workers.find((thread) => !thread.busy);
    if (idle) return idle;
    if (this.#workers.length >= this.#threads) return undefined;
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { bcryptPath: bcryptPath() } });
    // Idle threads must not keep the process alive; a running job holds it through its promise.
    worker.unref();
    const thread: Thread = { worker, busy: undefined };
    worker.on('message', (reply: { ok: boolean; result?: boolean | string; message?: string }) => {
      const done = thread.busy;
      thread.busy = undefined;
      worker.unref();
      if (done) {
        if (reply.ok) done.resolve(reply.result as boolean | string);
        else done.reject(new Error(`bcrypt failed: ${reply.message}`));
      }
      this.#next(thread);
    });
    worker.on('error', (error) => this.#lose(thread, error));
    worker.on('exit', (code) => {
      if (this.#workers.includes(thread)) this.#lose(thread, new Error(`hashing thread exited with code ${code}`));
    });
    this.#workers.push(thread);
    return thread;
  }

  #start(thread: Thread, pending: PendingJob): void {
    if (pending.queuedAt !== undefined) this.onWait?.((performance.now() - pending.queuedAt) / 1_000);
    thread.busy = pending;
    thread.worker.ref();
    try {
      thread.worker.postMessage(pending.job);
    } catch (error) {
      // A thread that cannot take a job is lost: its job fails with the real error, and the
      // thread is replaced rather than left marked busy (which would stall every later job).
      this.#lose(thread, error as Error);
      void thread.worker.terminate();
    }
  }

  #next(thread: Thread): void {
    const pending = this.#dequeue();
    if (pending) this.#start(thread, pending);
  }

  /** A thread died: fail its job, forget it, and let the next job start a fresh one. */
  #lose(thread: Thread, error: Error): void {
    this.#workers = this.#workers.filter((other) => other !== thread);
    thread.busy?.reject(error);
    thread.busy = undefined;
    const replacement = this.#waiting() > 0 ? this.#idleThread() : undefined;
    const pending = replacement ? this.#dequeue() : undefined;
    if (replacement && pending) this.#start(replacement, pending);
  }
}
