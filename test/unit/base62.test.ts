import { BASE62_ALPHABET, encodeBase62, isBase62, randomBase62 } from '../../src/key/base62';

/** Decodes base62 with BigInt, independently of the module under test. */
function decode(text: string): bigint {
  let value = 0n;
  for (const char of text) {
    const digit = BASE62_ALPHABET.indexOf(char);
    if (digit < 0) throw new Error(`not base62: ${char}`);
    value = value * 62n + BigInt(digit);
  }
  return value;
}

describe('base62 alphabet', () => {
  it('is 0-9, then A-Z, then a-z, in that order, with no repeats', () => {
    expect(BASE62_ALPHABET).toBe('0123456789' + 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' + 'abcdefghijklmnopqrstuvwxyz');
    expect(new Set(BASE62_ALPHABET).size).toBe(62);
  });

  it('encodes each value below 62 as the single digit at that position', () => {
    for (let i = 0; i < 62; i++) expect(encodeBase62(i)).toBe(BASE62_ALPHABET[i]);
  });
});

describe('encodeBase62', () => {
  it.each([
    [0, 1, '0'],
    [9, 1, '9'],
    [10, 1, 'A'],
    [35, 1, 'Z'],
    [36, 1, 'a'],
    [61, 1, 'z'],
    [62, 1, '10'],
    [63, 1, '11'],
    [3843, 1, 'zz'],
    [3844, 1, '100'],
    [0, 6, '000000'],
    [61, 6, '00000z'],
    [62, 6, '000010'],
    [62 ** 6 - 1, 6, 'zzzzzz'],
    [62 ** 6, 6, '1000000'],
  ])('writes %d at width %d as %s (most significant digit first, left-padded with 0)', (value, width, expected) => {
    expect(encodeBase62(value, width)).toBe(expected);
  });

  it('never truncates a value that needs more digits than the width', () => {
    expect(encodeBase62(3844, 2)).toBe('100');
    expect(encodeBase62(0xffffffff, 1)).toHaveLength(6);
  });

  it('encodes 2^32 - 1, the largest CRC-32, in exactly six digits', () => {
    const text = encodeBase62(0xffffffff, 6);
    expect(text).toBe('4gfFC3');
    expect(decode(text)).toBe(0xffffffffn);
  });

  it.each([1, 61, 62, 1_000_000, 2 ** 32, 2 ** 40 + 12345, Number.MAX_SAFE_INTEGER])('round-trips the large value %d', (value) => {
    expect(decode(encodeBase62(value))).toBe(BigInt(value));
  });

  it.each([-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, Number.MAX_SAFE_INTEGER + 1])('refuses %d with a RangeError', (value) => {
    expect(() => encodeBase62(value)).toThrow(RangeError);
  });
});

describe('isBase62', () => {
  it('accepts every alphabet character, alone and together', () => {
    expect(isBase62(BASE62_ALPHABET)).toBe(true);
    for (const char of BASE62_ALPHABET) expect(isBase62(char)).toBe(true);
  });

  it.each(['', '_', '-', '+', '/', '=', ' ', 'abc ', ' abc', 'ab\ncd', 'abc\n', 'é', 'ａ', '٣', 'ab_cd', '\u0000'])(
    'refuses %j',
    (text) => {
      expect(isBase62(text)).toBe(false);
    },
  );
});

describe('randomBase62', () => {
  it.each([0, 1, 12, 27, 32, 100, 1000])('returns exactly %d characters', (length) => {
    expect(randomBase62(length)).toHaveLength(length);
  });

  it('uses only base62 characters', () => {
    const text = randomBase62(5000);
    expect(isBase62(text)).toBe(true);
  });

  it('does not repeat itself across calls', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) seen.add(randomBase62(16));
    expect(seen.size).toBe(1000);
  });

  it('draws every character about equally often (chi-square far below a never-flaking bound)', () => {
    const perChar = 2000;
    const text = randomBase62(62 * perChar);
    const counts = new Map<string, number>();
    for (const char of text) counts.set(char, (counts.get(char) ?? 0) + 1);
    expect(counts.size).toBe(62);
    let chiSquare = 0;
    for (const char of BASE62_ALPHABET) {
      const observed = counts.get(char) ?? 0;
      // Each count has sd ≈ 44; ±25% is ≈ 11 sd away.
      expect(observed).toBeGreaterThan(perChar * 0.75);
      expect(observed).toBeLessThan(perChar * 1.25);
      chiSquare += (observed - perChar) ** 2 / perChar;
    }
    // 61 degrees of freedom: mean 61, sd ≈ 11. 250 is > 17 sd out; a modulo bias (byte % 62 over
    // all 256 bytes) would put the first 8 characters ~20% high and push it into the thousands.
    expect(chiSquare).toBeLessThan(250);
  });
});
