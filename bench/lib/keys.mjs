/**
 * keygate's key format, re-implemented here from the spec (SPEC.md §2) so the load generator can
 * build well-formed keys without importing keygate: `<prefix>_<lookupId>_<secret><check>`, check =
 * CRC-32 (IEEE) of the body in base62, six characters.
 */
import { createHmac, randomBytes } from 'node:crypto';
import * as zlib from 'node:zlib';

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

export const PREFIX = 'pk_live';

export function randomBase62(length) {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte >= 248) continue;
      out += ALPHABET[byte % 62];
      if (out.length === length) break;
    }
  }
  return out;
}

function base62(value, width) {
  let out = '';
  let rest = value;
  do {
    out = ALPHABET[rest % 62] + out;
    rest = Math.floor(rest / 62);
  } while (rest > 0);
  return out.padStart(width, '0');
}

function crc32(text) {
  if (typeof zlib.crc32 === 'function') return zlib.crc32(Buffer.from(text, 'utf8'));
  let crc = 0xffffffff;
  for (const byte of Buffer.from(text, 'utf8')) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** A well-formed key (valid check digits) from its parts. */
export function formatKey(prefix, lookupId, secret) {
  const body = `${prefix}_${lookupId}_${secret}`;
  return body + base62(crc32(body), 6);
}

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
