/**
 * Real TLS for the transport tests: certificates made by the `openssl` CLI in a temporary
 * directory (a self-signed server certificate for 127.0.0.1/localhost, which the clients trust as
 * their CA, and self-signed client certificates: pinning a fingerprint needs no CA), an HTTPS
 * server that asks for a client certificate without requiring a trusted one, and a client.
 * Without `openssl` the suites say so loudly and skip; under CI=true that is a failure.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Whether the `openssl` CLI runs here. */
export function hasOpenssl(): boolean {
  const result = spawnSync('openssl', ['version'], { encoding: 'utf8' });
  return result.status === 0;
}

/** `describe` when `openssl` exists; otherwise a loud skip, or a failure under CI=true. */
export function describeWithOpenssl(name: string, body: () => void): void {
  if (hasOpenssl()) {
    describe(name, body);
    return;
  }
  const message = `openssl not found: the TLS suite "${name}" cannot run. Install it (apt-get install -y openssl).`;
  if (process.env.CI === 'true') {
    describe(name, () => {
      it('needs openssl', () => {
        throw new Error(message);
      });
    });
    return;
  }
  console.warn(`\n*** SKIPPED: ${message}\n`);
  describe.skip(name, body);
}

/** A certificate and its private key, PEM, with its SHA-256 fingerprint as `openssl` prints it (`AB:CD:…`). */
export interface Identity {
  cert: string;
  key: string;
  /** `openssl x509 -fingerprint -sha256`: upper case, colon-separated. */
  opensslFingerprint: string;
  /** 64 lower-case hex digits: keygate's stored form. */
  sha256: string;
}

export interface Certificates {
  server: Identity;
  clients: [Identity, Identity];
  remove: () => void;
}

function selfSigned(dir: string, name: string, subject: string, extensions: string[]): Identity {
  const keyFile = join(dir, `${name}.key`);
  const certFile = join(dir, `${name}.crt`);
  execFileSync(
    'openssl',
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', subject,
      ...extensions.flatMap((extension) => ['-addext', extension]),
    ],
    { stdio: 'pipe' },
  );
  const printed = execFileSync('openssl', ['x509', '-noout', '-fingerprint', '-sha256', '-in', certFile], { encoding: 'utf8' });
  const opensslFingerprint = printed.trim().split('=')[1] ?? '';
  const cert = readFileSync(certFile, 'utf8');
  const sha256 = new X509Certificate(cert).fingerprint256.replace(/:/g, '').toLowerCase();
  if (opensslFingerprint.replace(/:/g, '').toLowerCase() !== sha256) throw new Error(`openssl and node disagree on the fingerprint of ${name}`);
  return { cert, key: readFileSync(keyFile, 'utf8'), opensslFingerprint, sha256 };
}

/** Generates a server identity for 127.0.0.1/localhost and two unrelated client identities. */
export function makeCertificates(): Certificates {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-tls-'));
  try {
    const server = selfSigned(dir, 'server', '/CN=localhost', ['subjectAltName=DNS:localhost,IP:127.0.0.1', 'basicConstraints=critical,CA:TRUE']);
    const clients: [Identity, Identity] = [
      selfSigned(dir, 'client-a', '/CN=client-a', ['extendedKeyUsage=clientAuth']),
      selfSigned(dir, 'client-b', '/CN=client-b', ['extendedKeyUsage=clientAuth']),
    ];
    return { server, clients, remove: () => rmSync(dir, { recursive: true, force: true }) };
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

/** An app listening on both plain HTTP and HTTPS (client certificate requested, not required) on loopback. */
export interface DualServer {
  httpPort: number;
  httpsPort: number;
  close: () => Promise<void>;
}

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

export async function serveBoth(app: http.RequestListener, server: Identity): Promise<DualServer> {
  const plain = http.createServer(app);
  const secure = https.createServer({ key: server.key, cert: server.cert, requestCert: true, rejectUnauthorized: false }, app);
  const [httpPort, httpsPort] = await Promise.all([listen(plain), listen(secure)]);
  const close = (s: http.Server): Promise<void> =>
    new Promise((resolve) => {
      s.closeAllConnections();
      s.close(() => resolve());
    });
  return { httpPort, httpsPort, close: async () => void (await Promise.all([close(plain), close(secure)])) };
}

export interface Answer {
  status: number;
  body: { code?: string; [field: string]: unknown };
}

export interface CallOptions {
  headers?: Record<string, string>;
  /** Over TLS, trusting `ca`; presenting `client` when given. */
  tls?: { ca: string; client?: Identity };
}

/** One request on a fresh connection (no agent, no reused TLS session), answered as parsed JSON. */
export function call(port: number, path: string, options: CallOptions = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const common = { host: '127.0.0.1', port, path, method: 'GET', headers: options.headers ?? {}, agent: false as const };
    const onResponse = (res: http.IncomingMessage): void => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: text === '' ? {} : (JSON.parse(text) as Answer['body']) });
        } catch (error) {
          reject(error instanceof Error ? error : new Error(String(error)));
        }
      });
    };
    const req = options.tls
      ? https.request(
          {
            ...common,
            servername: 'localhost',
            ca: options.tls.ca,
            rejectUnauthorized: true,
            ...(options.tls.client ? { cert: options.tls.client.cert, key: options.tls.client.key } : {}),
          },
          onResponse,
        )
      : http.request(common, onResponse);
    req.on('error', reject);
    req.end();
  });
}
