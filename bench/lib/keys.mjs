/**
 * Keys for the load generator, built with keygate's own format code from the build the benchmark
 * just made (`npm run bench` builds dist/ first): `<prefix>_<lookupId>_<secret><check>`.
 */
import { createHmac } from 'node:crypto';
import { randomBase62 } from '../../dist/esm/key/base62.js';
import { formatKey } from '../../dist/esm/key/format.js';

export { formatKey, randomBase62 };

export const PREFIX = 'pk_live';

/** A random well-formed key of keygate's minted shape (16-character lookupId, 32-character secret). */
export function mintLikeKeygate(prefix = PREFIX) {
  const lookupId = randomBase62(16);
  const secret = randomBase62(32);
  return { key: formatKey(prefix, lookupId, secret), keyPrefix: `${prefix}_${lookupId}`, lookupId, secret };
}

/** The keyPrefix (`<prefix>_<lookupId>`) of a key. */
export function keyPrefixOf(key) {
  const last = key.lastIndexOf('_');
  return key.slice(0, last);
}

/**
 * `count` well-formed keys that share `keyPrefix` but carry random (wrong) secrets: what an attacker
 * who knows a key's public prefix sends. Each passes the format and checksum checks, so it reaches
 * the store lookup and the secret comparison.
 */
export function wrongSecretsFor(keyPrefix, count) {
  const last = keyPrefix.lastIndexOf('_');
  const prefix = keyPrefix.slice(0, last);
  const lookupId = keyPrefix.slice(last + 1);
  return Array.from({ length: count }, () => formatKey(prefix, lookupId, randomBase62(32)));
}

/** keygate's stored form of an HMAC-SHA-256 hash (`$hmac-sha256$` + base64url digest). */
export function hmacHash(secret, pepper = '') {
  return '$hmac-sha256$' + createHmac('sha256', pepper).update(secret, 'utf8').digest('base64url');
}
