/**
 * WebhookSender against real HTTP receivers on 127.0.0.1 (no mocked HTTP): Standard Webhooks
 * signatures verified with the `standardwebhooks` package, retries and back-off, Retry-After,
 * final failures, timeouts, the bounded queue and concurrency, close(), and that the secret never
 * leaks into an error or a drop reason.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { inspect } from 'node:util';
import { Webhook } from 'standardwebhooks';
import { WebhookSender, backoffDelayMs, type WebhookMessage, type WebhookSenderOptions } from '../../src/alerts/webhooks';

const SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const SECRET_KEY = SECRET.slice('whsec_'.length);

interface Received {
  headers: Record<string, string>;
  body: string;
  at: number;
}

interface Receiver {
  url: string;
  received: Received[];
  /** Most requests open at once (arrived, not yet answered). */
  maxActive: () => number;
  close: () => Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;

const cleanups: Array<() => Promise<void>> = [];
const dropReasons: string[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => {
  unhandled.push(reason);
};

beforeAll(() => {
  process.on('unhandledRejection', onUnhandled);
});

afterAll(() => {
  process.off('unhandledRejection', onUnhandled);
});

afterEach(async () => {
  jest.restoreAllMocks();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  // Let any stray rejection surface before checking.
  await new Promise((r) => setImmediate(r));
  expect(unhandled).toEqual([]);
});

/** An HTTP receiver on 127.0.0.1, port 0; `handler` answers request number `n` (from 1). */
async function receiver(handler: Handler): Promise<Receiver> {
  const received: Received[] = [];
  let active = 0;
  let maxActive = 0;
  const server = createServer((req, res) => {
    active++;
    maxActive = Math.max(maxActive, active);
    res.on('close', () => active--);
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(req.headers)) headers[name] = Array.isArray(value) ? value.join(', ') : (value ?? '');
      received.push({ headers, body: Buffer.concat(chunks).toString('utf8'), at: performance.now() });
      handler(req, res, received.length);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  const close = (): Promise<void> =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  cleanups.push(close);
  return { url: `http://127.0.0.1:${port}/hooks/keygate`, received, maxActive: () => maxActive, close };
}

/** A URL on which nothing listens: a port that was opened, then closed. */
async function refusedUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return `http://127.0.0.1:${port}/hooks`;
}

function answer(status: number, headers: Record<string, string> = {}): Handler {
  return (_req, res) => {
    res.writeHead(status, headers);
    res.end(status >= 400 ? 'nope' : 'ok');
  };
}

interface Drop {
  message: WebhookMessage;
  reason: string;
}

/** A sender whose drops are recorded (and checked for the secret after each test); closed after the test. */
function sender(options: Partial<WebhookSenderOptions> = {}): { sender: WebhookSender; drops: Drop[] } {
  const drops: Drop[] = [];
  const created = new WebhookSender({
    secret: SECRET,
    ...options,
    onDropped: (message, reason) => {
      drops.push({ message, reason });
      dropReasons.push(reason);
      options.onDropped?.(message, reason);
    },
  });
  cleanups.push(() => created.close({ timeoutMs: 0 }));
  return { sender: created, drops };
}

let counter = 0;
function message(url: string, data: Record<string, unknown> = { keyId: 'key_1', used: 900, limit: 1000 }): WebhookMessage {
  counter++;
  return { url, type: 'quota.threshold', id: `msg_test_${counter}`, data };
}

async function waitFor(condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Verifies a received request as a Standard Webhooks receiver would; returns the parsed envelope. */
function verify(request: Received, secret = SECRET): { type: string; timestamp: string; data: unknown } {
  return new Webhook(secret).verify(request.body, request.headers) as { type: string; timestamp: string; data: unknown };
}

describe('WebhookSender: signing and envelope', () => {
  it('delivers Standard Webhooks–signed POSTs that standardwebhooks verifies, with the recommended envelope', async () => {
    const hook = await receiver(answer(204));
    const { sender: s, drops } = sender();
    const messages = [message(hook.url), message(hook.url, { nested: { a: [1, 2] }, note: 'ünïcode ✓' }), message(hook.url)];
    const before = Date.now();
    for (const m of messages) s.send(m);
    expect(s.pending).toBe(3);
    await waitFor(() => s.delivered === 3);
    expect(s.pending).toBe(0);
    expect(s.dropped).toBe(0);
    expect(drops).toEqual([]);
    expect(hook.received).toHaveLength(3);

    for (const request of hook.received) {
      const sent = messages.find((m) => m.id === request.headers['webhook-id']);
      expect(sent).toBeDefined();
      const envelope = verify(request);
      expect(envelope).toEqual({ type: 'quota.threshold', timestamp: expect.any(String), data: sent?.data });
      expect(Object.keys(JSON.parse(request.body))).toEqual(['type', 'timestamp', 'data']);
      expect(new Date(envelope.timestamp).toISOString()).toBe(envelope.timestamp);
      expect(Date.parse(envelope.timestamp)).toBeGreaterThanOrEqual(before - 5);
      expect(Date.parse(envelope.timestamp)).toBeLessThanOrEqual(Date.now());
      // webhook-timestamp: Unix seconds of the real clock.
      expect(request.headers['webhook-timestamp']).toMatch(/^\d+$/);
      expect(Math.abs(Number(request.headers['webhook-timestamp']) - Date.now() / 1000)).toBeLessThan(5);
      expect(request.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+={0,2}$/);
      expect(request.headers['content-type']).toBe('application/json');
      // A receiver with another secret, or a tampered body, rejects it.
      expect(() => verify(request, `whsec_${randomBytes(32).toString('base64')}`)).toThrow('No matching signature found');
      expect(() => verify({ ...request, body: request.body.replace('quota', 'quotA') })).toThrow('No matching signature found');
    }
  });

  it('serialises the body at send(): changing data afterwards changes nothing', async () => {
    const hook = await receiver(answer(200));
    const { sender: s } = sender();
    const data: Record<string, unknown> = { used: 1 };
    s.send(message(hook.url, data));
    data.used = 2;
    await waitFor(() => s.delivered === 1);
    expect(verify(hook.received[0] as Received).data).toEqual({ used: 1 });
  });
});

describe('WebhookSender: retries', () => {
  it('500, 500, then 200: delivered once, same webhook-id and body on every attempt, each signed afresh, back-off respected', async () => {
    const hook = await receiver((_req, res, n) => answer(n <= 2 ? 500 : 200)(_req, res, n));
    // Jitter at its top: the waits are then the back-off bounds, 39 ms and 79 ms.
    jest.spyOn(Math, 'random').mockReturnValue(0.999);
    const { sender: s, drops } = sender({ initialDelayMs: 40, maxDelayMs: 1000 });
    const m = message(hook.url);
    s.send(m);
    await waitFor(() => s.delivered === 1);
    expect(hook.received).toHaveLength(3);
    expect(s.dropped).toBe(0);
    expect(s.pending).toBe(0);
    expect(drops).toEqual([]);
    const [first, second, third] = hook.received as [Received, Received, Received];
    for (const request of hook.received) {
      expect(request.headers['webhook-id']).toBe(m.id);
      expect(request.body).toBe(first.body);
      verify(request);
    }
    expect(second.at - first.at).toBeGreaterThanOrEqual(37);
    expect(second.at - first.at).toBeLessThan(40 + 400);
    expect(third.at - second.at).toBeGreaterThanOrEqual(77);
    expect(third.at - second.at).toBeLessThan(80 + 400);
    await sleep(100);
    expect(hook.received).toHaveLength(3);
  });

  it('retries 408 and 503 as well', async () => {
    const hook = await receiver((req, res, n) => answer(n === 1 ? 408 : n === 2 ? 503 : 202)(req, res, n));
    const { sender: s } = sender({ initialDelayMs: 5, maxDelayMs: 10 });
    s.send(message(hook.url));
    await waitFor(() => s.delivered === 1);
    expect(hook.received).toHaveLength(3);
  });

  it('honours Retry-After on 429 and 503, capped by maxDelayMs', async () => {
    const then = (status: number, retryAfter: string): Handler => (req, res, n) => answer(n === 1 ? status : 200, n === 1 ? { 'retry-after': retryAfter } : {})(req, res, n);
    const asksOneSecond = await receiver(then(429, '1'));
    const asksAnHour = await receiver(then(503, '3600'));
    const { sender: s } = sender({ initialDelayMs: 5, maxDelayMs: 5000 });
    const { sender: capped } = sender({ initialDelayMs: 5, maxDelayMs: 300 });
    s.send(message(asksOneSecond.url));
    capped.send(message(asksAnHour.url));
    await waitFor(() => s.delivered === 1 && capped.delivered === 1, 5000);
    const gap = (hook: Receiver): number => (hook.received[1] as Received).at - (hook.received[0] as Received).at;
    // Retry-After: 1 → a second, not the 5 ms back-off.
    expect(gap(asksOneSecond)).toBeGreaterThanOrEqual(990);
    expect(gap(asksOneSecond)).toBeLessThan(3000);
    // Retry-After: 3600 → the 300 ms cap.
    expect(gap(asksAnHour)).toBeGreaterThanOrEqual(290);
    expect(gap(asksAnHour)).toBeLessThan(990);
  });

  it('a 400 is final: dropped, counted, reported with its status, not retried', async () => {
    const hook = await receiver(answer(400));
    const { sender: s, drops } = sender({ initialDelayMs: 5, maxDelayMs: 10 });
    const m = message(hook.url);
    s.send(m);
    await waitFor(() => s.dropped === 1);
    await sleep(100);
    expect(hook.received).toHaveLength(1);
    expect(s.delivered).toBe(0);
    expect(s.pending).toBe(0);
    expect(drops).toEqual([{ message: m, reason: expect.stringContaining('400') }]);
  });

  it('a receiver that is down: retried maxAttempts times, then dropped; close() resolves at once', async () => {
    const url = await refusedUrl();
    const { sender: s, drops } = sender({ maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 20 });
    const m = message(url);
    s.send(m);
    await waitFor(() => s.dropped === 1);
    expect(drops).toHaveLength(1);
    expect(drops[0]?.message).toBe(m);
    expect(drops[0]?.reason).toMatch(/gave up after 3 attempts.*ECONNREFUSED/);
    expect(s.pending).toBe(0);
    const start = performance.now();
    await s.close();
    expect(performance.now() - start).toBeLessThan(100);
  });

  it('a receiver that never answers: each attempt times out after timeoutMs', async () => {
    const hook = await receiver(() => {
      // never answers
    });
    const { sender: s, drops } = sender({ maxAttempts: 2, timeoutMs: 150, initialDelayMs: 5, maxDelayMs: 10 });
    const start = performance.now();
    s.send(message(hook.url));
    await waitFor(() => s.dropped === 1);
    expect(performance.now() - start).toBeGreaterThanOrEqual(290);
    expect(hook.received).toHaveLength(2);
    expect(drops[0]?.reason).toMatch(/gave up after 2 attempts.*timed out after 150 ms/);
  });

  it('a redirect is not followed: final failure, the signed body never reaches the target', async () => {
    const elsewhere = await receiver(answer(200));
    const hook = await receiver(answer(302, { location: elsewhere.url }));
    const { sender: s, drops } = sender({ initialDelayMs: 5, maxDelayMs: 10 });
    s.send(message(hook.url));
    await waitFor(() => s.dropped === 1);
    await sleep(100);
    expect(hook.received).toHaveLength(1);
    expect(elsewhere.received).toHaveLength(0);
    expect(s.delivered).toBe(0);
    expect(drops[0]?.reason).toContain('302');
  });

  it('full-jitter back-off: below initialDelayMs × 2^(retry−1), capped by maxDelayMs', () => {
    expect(backoffDelayMs(1, 1000, 60_000, () => 0)).toBe(0);
    expect(backoffDelayMs(1, 1000, 60_000, () => 0.999999)).toBe(999);
    expect(backoffDelayMs(2, 1000, 60_000, () => 0.5)).toBe(1000);
    expect(backoffDelayMs(5, 1000, 60_000, () => 0.5)).toBe(8000);
    expect(backoffDelayMs(10, 1000, 60_000, () => 0.999999)).toBe(59_999);
    for (let retry = 1; retry <= 40; retry++) {
      const delay = backoffDelayMs(retry, 1000, 60_000);
      expect(delay).toBeGreaterThanOrEqual(0);
      expect(delay).toBeLessThan(Math.min(60_000, 1000 * 2 ** (retry - 1)));
    }
  });
});

describe('WebhookSender: queue, concurrency, close', () => {
  it('at most 4 deliveries in flight; the rest queue and are all delivered', async () => {
    const hook = await receiver((req, res, n) => {
      setTimeout(() => answer(200)(req, res, n), 40);
    });
    const { sender: s } = sender();
    for (let i = 0; i < 12; i++) s.send(message(hook.url));
    await waitFor(() => s.delivered === 12);
    expect(hook.maxActive()).toBeLessThanOrEqual(4);
    expect(hook.maxActive()).toBeGreaterThan(1);
    expect(new Set(hook.received.map((r) => r.headers['webhook-id'])).size).toBe(12);
  });

  it('beyond maxQueue waiting messages, send() drops and counts', async () => {
    const hook = await receiver(() => {
      // holds every request
    });
    const { sender: s, drops } = sender({ maxQueue: 2 });
    const sent = Array.from({ length: 10 }, () => message(hook.url));
    for (const m of sent) s.send(m);
    // 4 in flight, 2 waiting, 4 dropped, at once.
    expect(s.dropped).toBe(4);
    expect(s.pending).toBe(6);
    expect(drops.map((d) => d.message)).toEqual(sent.slice(6));
    expect(drops.every((d) => d.reason === 'queue full (maxQueue 2)')).toBe(true);
    await waitFor(() => hook.received.length === 4);
    await sleep(50);
    expect(hook.received).toHaveLength(4);
    // close() cuts off the 4 in flight and the 2 waiting at its deadline.
    const start = performance.now();
    await s.close({ timeoutMs: 100 });
    expect(performance.now() - start).toBeLessThan(1000);
    expect(s.dropped).toBe(10);
    expect(s.pending).toBe(0);
    expect(s.delivered).toBe(0);
    expect(drops.slice(4).map((d) => d.reason)).toEqual([
      ...Array(2).fill('sender closed before this message was attempted'),
      ...Array(4).fill('sender closed while the delivery was in flight (aborted; the receiver may have it)'),
    ]);
  });

  it('close() drops a message waiting for its retry at once, and waits for attempts in flight', async () => {
    const flaky = await receiver(answer(500));
    const slow = await receiver((req, res, n) => {
      setTimeout(() => answer(200)(req, res, n), 150);
    });
    const { sender: s, drops } = sender({ initialDelayMs: 60_000, maxDelayMs: 60_000 });
    jest.spyOn(Math, 'random').mockReturnValue(0.5);
    s.send(message(flaky.url));
    await waitFor(() => flaky.received.length === 1);
    await sleep(30); // the answer is in; the retry waits 30 s
    s.send(message(slow.url));
    await waitFor(() => slow.received.length === 1);
    const start = performance.now();
    await s.close();
    const took = performance.now() - start;
    expect(took).toBeLessThan(1000);
    expect(s.delivered).toBe(1); // the slow one, waited for
    expect(s.dropped).toBe(1);
    expect(s.pending).toBe(0);
    expect(drops[0]?.reason).toBe('sender closed while waiting to retry (last failure: HTTP 500)');
    expect(flaky.received).toHaveLength(1);
  });

  it('send() after close() drops (counted, reported) and sends nothing; close() twice is the same promise', async () => {
    const hook = await receiver(answer(200));
    const { sender: s, drops } = sender();
    const closing = s.close();
    expect(s.close()).toBe(closing);
    await closing;
    const m = message(hook.url);
    expect(() => s.send(m)).not.toThrow();
    expect(s.dropped).toBe(1);
    expect(drops).toEqual([{ message: m, reason: 'sender closed' }]);
    await sleep(50);
    expect(hook.received).toHaveLength(0);
  });

  it('invalid messages are dropped, never thrown', async () => {
    const { sender: s, drops } = sender();
    const bad: unknown[] = [
      null,
      { url: 'ftp://127.0.0.1/x', type: 't', id: 'a', data: {} },
      { url: 'not a url', type: 't', id: 'a', data: {} },
      { url: 'http://user:pw@127.0.0.1/x', type: 't', id: 'a', data: {} },
      { url: 'http://127.0.0.1/x', type: 't', id: 'has space', data: {} },
      { url: 'http://127.0.0.1/x', type: '', id: 'a', data: {} },
      { url: 'http://127.0.0.1/x', type: 't', id: 'a', data: [] },
      { url: 'http://127.0.0.1/x', type: 't', id: 'a', data: { big: 1n } },
      {
        get url(): string {
          throw new Error('hostile getter');
        },
      },
    ];
    for (const m of bad) expect(() => s.send(m as WebhookMessage)).not.toThrow();
    expect(s.dropped).toBe(bad.length);
    expect(s.pending).toBe(0);
    expect(drops.every((d) => d.reason.startsWith('invalid message: '))).toBe(true);
    expect(drops.some((d) => d.reason.includes('pw'))).toBe(false);
  });

  it('an onDropped that throws, or returns a rejected promise, is ignored', async () => {
    const hook = await receiver(answer(404));
    const throwing = new WebhookSender({
      secret: SECRET,
      onDropped: () => {
        throw new Error('listener bug');
      },
    });
    const rejecting = new WebhookSender({ secret: SECRET, onDropped: async () => Promise.reject(new Error('async listener bug')) });
    cleanups.push(() => throwing.close({ timeoutMs: 0 }), () => rejecting.close({ timeoutMs: 0 }));
    for (const s of [throwing, rejecting]) {
      s.send(message(hook.url));
      await waitFor(() => s.dropped === 1);
      await s.close();
      expect(() => s.send(message(hook.url))).not.toThrow();
      expect(s.dropped).toBe(2);
    }
  });

  it('a retry timer does not keep the process alive', async () => {
    const hook = await receiver(answer(500));
    const dir = mkdtempSync(join(tmpdir(), 'keygate-webhooks-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const script = join(dir, 'child.mts');
    const source = resolve(__dirname, '../../src/alerts/webhooks.ts');
    writeFileSync(
      script,
      `import { WebhookSender } from ${JSON.stringify(source)};\n` +
        `const s = new WebhookSender({ secret: process.env.SECRET, initialDelayMs: 60000, maxDelayMs: 60000 });\n` +
        `s.send({ url: process.env.HOOK_URL, type: 'quota.threshold', id: 'msg_child', data: {} });\n`,
    );
    const start = performance.now();
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      cwd: resolve(__dirname, '../..'),
      env: { ...process.env, SECRET, HOOK_URL: hook.url },
      stdio: 'ignore',
    });
    const code = await new Promise<number | null>((r) => {
      const killer = setTimeout(() => child.kill('SIGKILL'), 8000);
      child.on('exit', (exitCode) => {
        clearTimeout(killer);
        r(exitCode);
      });
    });
    expect(code).toBe(0);
    expect(hook.received.length).toBeGreaterThanOrEqual(1);
    expect(performance.now() - start).toBeLessThan(8000);
  });
});

describe('WebhookSender: options and the secret', () => {
  it('rejects invalid options with a TypeError naming the option', () => {
    const make = (options: Record<string, unknown>) => () => new WebhookSender({ secret: SECRET, ...options } as WebhookSenderOptions);
    expect(make({ maxAttempts: 0 })).toThrow(new TypeError('WebhookSenderOptions.maxAttempts must be an integer of at least 1'));
    expect(make({ maxAttempts: 1.5 })).toThrow(/maxAttempts/);
    expect(make({ initialDelayMs: -1 })).toThrow(/initialDelayMs/);
    expect(make({ maxDelayMs: Number.NaN })).toThrow(/maxDelayMs/);
    expect(make({ timeoutMs: 0 })).toThrow(/timeoutMs/);
    expect(make({ maxQueue: -1 })).toThrow(/maxQueue/);
    expect(make({ fetch: 'fetch' })).toThrow(/fetch/);
    expect(make({ onDropped: 1 })).toThrow(/onDropped/);
  });

  it('an invalid secret: a TypeError naming the option that never echoes the value', () => {
    const secrets: unknown[] = [
      SECRET_KEY, // no prefix
      `whsec_${randomBytes(16).toString('base64')}`, // too short
      `whsec_${SECRET_KEY.slice(0, -2)}!!`, // not base64
      `whsec_${SECRET_KEY}x`, // bad length
      `WHSEC_${SECRET_KEY}`,
      '',
      undefined,
      42,
    ];
    for (const secret of secrets) {
      let thrown: unknown;
      try {
        new WebhookSender({ secret } as WebhookSenderOptions);
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(TypeError);
      const text = `${(thrown as Error).message}\n${(thrown as Error).stack ?? ''}`;
      expect(text).toContain('WebhookSenderOptions.secret');
      if (typeof secret === 'string' && secret.length > 0) {
        expect(text).not.toContain(secret);
        expect(text).not.toContain(SECRET_KEY.slice(0, 16));
      }
    }
  });

  it('the secret appears in no drop reason, no thrown error and no inspection of the sender', async () => {
    const hook = await receiver((req, res, n) => answer(n === 1 ? 401 : 302, { location: 'http://127.0.0.1:1/' })(req, res, n));
    const { sender: s, drops } = sender({ maxAttempts: 2, initialDelayMs: 5, maxDelayMs: 10, timeoutMs: 100 });
    s.send(message(hook.url));
    s.send(message(hook.url));
    s.send(message(await refusedUrl()));
    s.send({ ...message(hook.url), id: SECRET }); // the id is never echoed either
    s.send({ ...message(hook.url), url: `${hook.url}/${SECRET}` }); // nor the URL
    await waitFor(() => s.dropped === 5);
    await s.close();
    s.send(message(hook.url));
    expect(drops).toHaveLength(6);
    const inspected = inspect(s, { depth: 10, showHidden: true });
    for (const text of [...drops.map((d) => d.reason), inspected, JSON.stringify(s)]) {
      expect(text).not.toContain(SECRET_KEY);
    }
    // and across every test of this file
    expect(dropReasons.length).toBeGreaterThan(20);
    for (const reason of dropReasons) expect(reason).not.toContain(SECRET_KEY);
  });
});
