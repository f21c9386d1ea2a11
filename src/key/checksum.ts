/**
 * The key's check digits: CRC-32 (IEEE, as zlib computes it) of the UTF-8 bytes of
 * `<prefix>_<lookupId>_<secret>`, in base62, six characters wide. It lets the middleware reject
 * typos and garbage without a store call; it is not a security measure.
 */
import * as zlib from 'node:zlib';
import { encodeBase62 } from './base62.js';

/** Width of the check in characters (62^6 > 2^32). */
export const CHECK_LENGTH = 6;

let table: Uint32Array | undefined;

/** The reflected IEEE polynomial, for Node versions before zlib.crc32 (20.15). */
function crc32Fallback(bytes: Uint8Array): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const byte of bytes) crc = (table[(crc ^ byte) & 0xff] as number) ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

type Crc32 = (data: string | Uint8Array) => number;
const nativeCrc32 = (zlib as unknown as { crc32?: Crc32 }).crc32;

/** CRC-32 of the UTF-8 bytes of `text` (zlib's when available). */
export function crc32(text: string, useNative = nativeCrc32 !== undefined): number {
  if (useNative && nativeCrc32) return nativeCrc32(Buffer.from(text, 'utf8'));
  return crc32Fallback(Buffer.from(text, 'utf8'));
}

/** The six base62 check characters of a key body. */
export function checkDigits(body: string): string {
  return encodeBase62(crc32(body), CHECK_LENGTH);
}
