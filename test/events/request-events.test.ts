/**
 * Request events come after the response was handed to the connection: a listener, even a slow
 * synchronous one, does not delay the answer it reports. Measured from another process (a client
 * in this one could not read while the listener holds the event loop), with a wide margin: the
 * listener holds the loop for a second, the answer must arrive well before that ends.
 */
import { spawn } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { MemoryStore, keygate } from '../../src/index';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();
const HOLD_MS = 1_000;

/** Milliseconds a separate process waits for the whole answer to one GET. */
function timedGetFromAnotherProcess(url: string, key: string): Promise<number> {
  const script = `
    const started = performance.now();
    fetch(${JSON.stringify(url)}, { headers: { 'x-api-key': ${JSON.stringify(key)} } })
      .then((res) => res.text().then(() => { console.log(JSON.stringify({ status: res.status, ms: performance.now() - started })); }))
      .catch((error) => { console.error(error); process.exit(1); });`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`client exited with ${code}`));
      const { status, ms } = JSON.parse(out) as { status: number; ms: number };
      if (status !== 200) return reject(new Error(`status ${status}`));
      resolve(ms);
    });
  });
}

describe('request.admitted listeners and the response they report', () => {
  it('a listener that holds the event loop for a second does not delay the answer it is told about', async () => {
    const keys = track(keygate({ store: new MemoryStore(), hashing: 'sha256' }));
    const { key } = await keys.create({ name: 'timed' });
    let held = 0;
    keys.on('request.admitted', () => {
      held++;
      const until = Date.now() + HOLD_MS;
      while (Date.now() < until) {
        // a listener doing slow synchronous work
      }
    });
    const app = express();
    app.use(keys.authenticate());
    app.get('/leads', (_req, res) => void res.json([]));
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/leads`;
      // Warm: the first request also verifies the key and starts the client process.
      await timedGetFromAnotherProcess(url, key);
      const ms = await timedGetFromAnotherProcess(url, key);
      expect(held).toBe(2);
      expect(ms).toBeLessThan(HOLD_MS / 2);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
