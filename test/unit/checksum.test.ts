import * as zlib from 'node:zlib';
import fc from 'fast-check';
import { BASE62_ALPHABET, encodeBase62, isBase62 } from '../../src/key/base62';
import { CHECK_LENGTH, checkDigits, crc32 } from '../../src/key/checksum';

/**
 * A textbook bitwise CRC-32 (reflected IEEE polynomial 0xEDB88320, init and final XOR 0xFFFFFFFF),
 * deliberately written without a table so it shares no code with the module under test.
 */
function referenceCrc32(input: string | Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of typeof input === 'string' ? Buffer.from(input, 'utf8') : input) {
    crc ^= byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** zlib's CRC-32 straight from Node, when this Node has it (20.15+). */
const zlibCrc32 = (zlib as unknown as { crc32?: (data: Uint8Array | string) => number }).crc32;

/** Value of base62 digits given as alphabet positions, most significant first. */
function fromDigits(digits: number[]): number {
  return digits.reduce((value, digit) => value * 62 + digit, 0);
}

describe('CRC-32 known answers', () => {
  it('gives the standard check value 0xCBF43926 for "123456789", natively and in the fallback', () => {
    expect(referenceCrc32('123456789')).toBe(0xcbf43926);
    expect(crc32('123456789')).toBe(0xcbf43926);
    expect(crc32('123456789', false)).toBe(0xcbf43926);
    if (zlibCrc32) expect(zlibCrc32(Buffer.from('123456789'))).toBe(0xcbf43926);
  });

  it('gives 0 for the empty string', () => {
    expect(crc32('')).toBe(0);
    expect(crc32('', false)).toBe(0);
  });

  it('writes 0xCBF43926 in base62 as "3jZRME" (derived by hand below)', () => {
    // 0xCBF43926 = 3421780262
    //   = 3·62^5 + 45·62^4 + 35·62^3 + 27·62^2 + 22·62 + 14
    // digits 3 → '3', 45 → 'j' (36 + 9), 35 → 'Z' (10 + 25), 27 → 'R' (10 + 17), 22 → 'M' (10 + 12), 14 → 'E' (10 + 4)
    expect(fromDigits([3, 45, 35, 27, 22, 14])).toBe(0xcbf43926);
    expect([3, 45, 35, 27, 22, 14].map((d) => BASE62_ALPHABET[d]).join('')).toBe('3jZRME');
    expect(encodeBase62(0xcbf43926, CHECK_LENGTH)).toBe('3jZRME');
    expect(checkDigits('123456789')).toBe('3jZRME');
  });

  it('checks the fixed key body pk_live_0123456789AB_abcdefghijklmnopqrstuvwxyzA as "3KSsGe"', () => {
    const body = 'pk_live_0123456789AB_abcdefghijklmnopqrstuvwxyzA';
    // CRC-32 computed independently of the module: 0xB5D79EE0 = 3050807008
    //   = 3·62^5 + 20·62^4 + 28·62^3 + 54·62^2 + 16·62 + 40
    // digits 3 → '3', 20 → 'K', 28 → 'S', 54 → 's' (36 + 18), 16 → 'G', 40 → 'e' (36 + 4)
    expect(referenceCrc32(body)).toBe(0xb5d79ee0);
    expect(fromDigits([3, 20, 28, 54, 16, 40])).toBe(0xb5d79ee0);
    expect(crc32(body)).toBe(0xb5d79ee0);
    expect(crc32(body, false)).toBe(0xb5d79ee0);
    expect(checkDigits(body)).toBe('3KSsGe');
  });

  it('left-pads a small CRC with zeros to six characters (CRC of "" is 0)', () => {
    expect(checkDigits('')).toBe('000000');
  });
});

describe('CRC-32 implementations agree', () => {
  it('has the fallback equal to the reference (and to zlib) for arbitrary text, non-ASCII included', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme' })), (text) => {
        const expected = referenceCrc32(text);
        expect(crc32(text, false)).toBe(expected);
        expect(crc32(text)).toBe(expected);
        if (zlibCrc32) expect(zlibCrc32(Buffer.from(text, 'utf8'))).toBe(expected);
      }),
      { numRuns: 500 },
    );
  });

  it.each(['é', 'naïve café', '日本語のキー', '🔑🗝️', 'pk_live_ÄÖÜ_ß', '\u0000\u00ff\u0100\uffff', '\ud83d'])(
    'hashes the UTF-8 bytes of %j the same natively and in the fallback',
    (text) => {
      expect(crc32(text, false)).toBe(referenceCrc32(text));
      expect(crc32(text, true)).toBe(referenceCrc32(text));
    },
  );

  it('hashes the UTF-8 bytes of the text, not Latin-1 or UTF-16 code units', () => {
    expect(crc32('é')).toBe(referenceCrc32(Uint8Array.of(0xc3, 0xa9)));
    expect(crc32('é', false)).toBe(referenceCrc32(Uint8Array.of(0xc3, 0xa9)));
    expect(crc32('é')).not.toBe(referenceCrc32(Uint8Array.of(0xe9)));
    expect(crc32('é')).not.toBe(referenceCrc32(Uint8Array.of(0xe9, 0x00)));
  });
});

describe('checkDigits', () => {
  it('is always six base62 characters', () => {
    fc.assert(
      fc.property(fc.string(), (text) => {
        const check = checkDigits(text);
        expect(check).toHaveLength(CHECK_LENGTH);
        expect(isBase62(check)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('has room for every 32-bit CRC in six digits (62^6 > 2^32)', () => {
    expect(62 ** CHECK_LENGTH).toBeGreaterThan(2 ** 32);
    expect(checkDigits('x')).toBe(encodeBase62(referenceCrc32('x'), 6));
  });
});
