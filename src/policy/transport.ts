/**
 * Transport requirements of a key, as pure checks: HTTPS only (`requireHttps`), and a pinned
 * client certificate (`clientCertificateSha256`, mutual TLS). Both are checked before the consume,
 * so a request refused here counts nothing.
 */
import { ADMIT, type PolicyResult } from './result.js';

const FINGERPRINT = /^[0-9a-f]{64}$/;

/**
 * A SHA-256 certificate fingerprint in keygate's stored form (64 lower-case hex digits, no
 * colons), or `null`. Accepts upper case and colon-separated pairs (`AB:CD:…`, as `openssl x509
 * -fingerprint -sha256` and Node's `fingerprint256` print it).
 */
export function normalizeFingerprint(value: string): string | null {
  const compact = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){31}$/.test(value) ? value.replace(/:/g, '') : value;
  const lower = compact.toLowerCase();
  return FINGERPRINT.test(lower) ? lower : null;
}

/** Refuses a request that did not arrive over TLS when the key or the route requires HTTPS. */
export function checkHttps(required: boolean, secure: boolean): PolicyResult {
  return !required || secure ? ADMIT : { ok: false, code: 'https_required' };
}

/**
 * Refuses a request without a client certificate whose SHA-256 fingerprint is pinned (an empty
 * list pins nothing). `presented` is the fingerprint in stored form, or `null` without one.
 */
export function checkClientCertificate(pinned: readonly string[], presented: string | null): PolicyResult {
  if (pinned.length === 0) return ADMIT;
  return presented !== null && pinned.includes(presented) ? ADMIT : { ok: false, code: 'client_certificate_required' };
}
