/** Child processes driven over IPC, for tests that need several real processes sharing a store. */
import { type ChildProcess, fork } from 'node:child_process';
import { join } from 'node:path';

/** One message a worker sends back. */
export type WorkerMessage = { type: string; [field: string]: unknown };

/** A forked fixture script under test/fixtures, with a promise-based request/reply. */
export class Worker {
  private readonly inbox: WorkerMessage[] = [];
  /** The worker's `ready` message (some workers report what they opened in it, such as a port). */
  ready: WorkerMessage = { type: 'ready' };
  private readonly waiting: { type: string; resolve: (m: WorkerMessage) => void; reject: (e: Error) => void }[] = [];

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (message: WorkerMessage) => {
      if (message.type === 'error') {
        for (const waiter of this.waiting.splice(0)) waiter.reject(new Error(String(message.message)));
        return;
      }
      const index = this.waiting.findIndex((w) => w.type === message.type);
      if (index >= 0) this.waiting.splice(index, 1)[0]!.resolve(message);
      else this.inbox.push(message);
    });
    child.on('exit', (code) => {
      for (const waiter of this.waiting.splice(0)) waiter.reject(new Error(`worker exited with ${code}`));
    });
  }

  /** Forks `test/fixtures/<script>` with one JSON argument and waits for its `ready`. */
  static async start(script: string, argument: unknown): Promise<Worker> {
    const child = fork(join(__dirname, '..', 'fixtures', script), [JSON.stringify(argument)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const worker = new Worker(child);
    worker.ready = await worker.next('ready', 15_000);
    return worker;
  }

  /** The next message of `type` (already received, or arriving within `timeoutMs`). */
  next(type: string, timeoutMs = 30_000): Promise<WorkerMessage> {
    const index = this.inbox.findIndex((m) => m.type === type);
    if (index >= 0) return Promise.resolve(this.inbox.splice(index, 1)[0]!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${type} from worker within ${timeoutMs} ms`)), timeoutMs);
      this.waiting.push({
        type,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  /** Sends a message and waits for the reply of type `replyType`. */
  async ask(message: WorkerMessage, replyType: string, timeoutMs?: number): Promise<WorkerMessage> {
    const reply = this.next(replyType, timeoutMs);
    this.child.send(message);
    return reply;
  }

  /** Kills the worker at once (SIGKILL: no cleanup, as a crash would) and waits for it to be gone. */
  async kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGKILL');
    await exited;
  }

  /** Asks the worker to close what it opened and exit; kills it if it does not. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.send({ type: 'exit' });
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}
