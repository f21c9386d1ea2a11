/**
 * Real HTTP for the usage and alert tests: an app listening on 127.0.0.1, requests sent with
 * Node's fetch or http.request (a client that hangs up), and a wait for the observer to have seen
 * every response end.
 */
import { request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express5 from 'express';
import express4 from 'express4';
import type { Express, Router } from 'express';
import type { Keygate } from '../../src/index';
import { EXPRESS_VERSIONS } from '../helpers/harness';

/** Each Express major with its Router factory, for `describe.each`. */
export const EXPRESS_WITH_ROUTER: ReadonlyArray<[string, () => Express, (options?: { mergeParams?: boolean }) => Router]> = EXPRESS_VERSIONS.map(([label, make]) => [
  label,
  make,
  label === 'express 4' ? (options) => express4.Router(options) as unknown as Router : (options) => express5.Router(options),
]);

/** An app listening on 127.0.0.1 on a free port. */
export interface Served {
  url: string;
  port: number;
  close: () => Promise<void>;
}

export async function serve(app: Express): Promise<Served> {
  const server: Server = await new Promise((resolve) => {
    const listening = app.listen(0, '127.0.0.1', () => resolve(listening));
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Sends one request and returns its status (redirects are not followed; the body is read). */
export async function send(url: string, options: { key?: string; method?: string; headers?: Record<string, string> } = {}): Promise<number> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.key !== undefined) headers['x-api-key'] = options.key;
  const response = await fetch(url, { method: options.method ?? 'GET', headers, redirect: 'manual' });
  await response.arrayBuffer();
  return response.status;
}

/**
 * Sends a request and hangs up once `entered` resolves (the handler has it), before any response:
 * resolves when the client socket is gone.
 */
export async function sendAndHangUp(url: string, key: string, entered: Promise<void>): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const req = httpRequest(url, { headers: { 'x-api-key': key } });
    req.on('response', () => reject(new Error('a response arrived before the client hung up')));
    req.on('error', () => undefined);
    req.on('close', () => resolve());
    req.end();
    void entered.then(() => req.destroy());
  });
}

/** Requests the keys' observer has recorded so far (buffered, written or dropped). */
export function recordedRequests(keys: Keygate): number {
  const stats = keys.usageStats();
  if (!stats) throw new Error('this keygate instance records no usage');
  return stats.bufferedRequests + stats.flushedRequests + stats.dropped;
}

/** Waits until the observer has seen `count` requests end (responses' `close` comes a moment after the client has them). */
export async function untilRecorded(keys: Keygate, count: number, timeoutMs = 5_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (recordedRequests(keys) < count) {
    if (Date.now() > until) throw new Error(`only ${recordedRequests(keys)} of ${count} requests recorded within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Waits until `condition` holds, polling. */
export async function eventually(condition: () => boolean | Promise<boolean>, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > until) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
