/** base62 in the alphabet `0-9A-Za-z`, most significant digit first. */
import { randomBytes } from 'node:crypto';

/** The base62 alphabet, in digit order. */
export const BASE62_ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** Encodes a non-negative safe integer, left-padded with `0` to `width` characters. */
export function encodeBase62(value: number, width = 1): string {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError('encodeBase62 takes a non-negative safe integer');
  let out = '';
  let rest = value;
  do {
    out = BASE62_ALPHABET[rest % 62] + out;
    rest = Math.floor(rest / 62);
  } while (rest > 0);
  return out.padStart(width, '0');
}

/** True when every character is in the base62 alphabet. */
export function isBase62(text: string): boolean {
  return /^[0-9A-Za-z]+$/.test(text);
}

/**
 * `length` uniformly random base62 characters from `crypto.randomBytes`. Bytes of 248 and above
 * are discarded so every character is equally likely (248 = 4 × 62).
 */
export function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    const bytes = randomBytes(Math.ceil((length - out.length) * 1.1) + 4);
    for (const byte of bytes) {
      if (byte >= 248) continue;
      out += BASE62_ALPHABET[byte % 62];
      if (out.length === length) break;
    }
  }
  return out;
}
