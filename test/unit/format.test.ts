import fc from 'fast-check';
import { BASE62_ALPHABET } from '../../src/key/base62';
import { CHECK_LENGTH, checkDigits } from '../../src/key/checksum';
import {
  MAX_KEY_LENGTH,
  MAX_PREFIX_LENGTH,
  MIN_LOOKUP_ID_LENGTH,
  MIN_SECRET_LENGTH,
  formatKey,
  isValidPrefix,
  parseKey,
} from '../../src/key/format';
import { LOOKUP_ID_LENGTH, SECRET_LENGTH, mintKey } from '../../src/key/generate';

/** The fixed key of the checksum known-answer test. */
const FIXED_KEY = 'pk_live_0123456789AB_abcdefghijklmnopqrstuvwxyzA3KSsGe';
const LOOKUP_12 = '0123456789AB';
const SECRET_27 = 'abcdefghijklmnopqrstuvwxyzA';

describe('isValidPrefix', () => {
  it.each(['kg', 'pk_live', 'sk_test', 'a1_b2', 'a', 'a1', 'x_1_2_3', 'a'.repeat(MAX_PREFIX_LENGTH)])('accepts %j', (prefix) => {
    expect(isValidPrefix(prefix)).toBe(true);
  });

  it.each([
    ['', 'empty'],
    ['Kg', 'upper case'],
    ['1kg', 'starts with a digit'],
    ['pk__live', 'empty part between underscores'],
    ['pk_', 'trailing underscore'],
    ['_pk', 'leading underscore'],
    ['a'.repeat(MAX_PREFIX_LENGTH + 1), '33 characters'],
    ['pk-live', 'hyphen'],
    ['pk live', 'space'],
    [' pk', 'leading space'],
    ['pk\n', 'trailing newline'],
    ['pké', 'non-ASCII letter'],
  ])('refuses %j (%s)', (prefix) => {
    expect(isValidPrefix(prefix)).toBe(false);
  });

  it.each([undefined, null, 42, ['kg'], { prefix: 'kg' }])('refuses the non-string %p', (value) => {
    expect(isValidPrefix(value)).toBe(false);
  });
});

describe('formatKey', () => {
  it('joins prefix, lookupId and secret with underscores and appends the six check characters', () => {
    expect(formatKey('pk_live', LOOKUP_12, SECRET_27)).toBe(FIXED_KEY);
    const key = formatKey('kg', 'ABCDEFGHIJKL', 'z'.repeat(32));
    expect(key.slice(0, -CHECK_LENGTH)).toBe(`kg_ABCDEFGHIJKL_${'z'.repeat(32)}`);
    expect(key.slice(-CHECK_LENGTH)).toBe(checkDigits(key.slice(0, -CHECK_LENGTH)));
  });
});

describe('parseKey', () => {
  it('parses the fixed known-answer key into its parts', () => {
    expect(parseKey(FIXED_KEY, 'pk_live')).toEqual({
      prefix: 'pk_live',
      lookupId: LOOKUP_12,
      secret: SECRET_27,
      keyPrefix: 'pk_live_0123456789AB',
    });
  });

  it.each(['kg', 'pk_live', 'sk_test', 'a1_b2', 'a'.repeat(32)])('round-trips keys minted for prefix %j', (prefix) => {
    for (let i = 0; i < 50; i++) {
      const minted = mintKey(prefix);
      const parsed = parseKey(minted.key, prefix);
      expect(parsed).not.toBeNull();
      expect(parsed!.prefix).toBe(prefix);
      expect(parsed!.secret).toBe(minted.secret);
      expect(parsed!.keyPrefix).toBe(minted.keyPrefix);
      expect(`${prefix}_${parsed!.lookupId}`).toBe(minted.keyPrefix);
      expect(formatKey(prefix, parsed!.lookupId, parsed!.secret)).toBe(minted.key);
    }
  });

  it('refuses a key of another prefix', () => {
    const key = mintKey('sk_test').key;
    expect(parseKey(key, 'sk_test')).not.toBeNull();
    expect(parseKey(key, 'sk_live')).toBeNull();
    expect(parseKey(key, 'kg')).toBeNull();
  });

  it('refuses a key whose prefix is a prefix of, or extends, the expected one (pk vs pk_live)', () => {
    const live = mintKey('pk_live').key;
    const pk = mintKey('pk').key;
    expect(parseKey(live, 'pk')).toBeNull();
    expect(parseKey(live, 'live')).toBeNull();
    expect(parseKey(pk, 'pk_live')).toBeNull();
    expect(parseKey(pk, 'p')).toBeNull();
  });

  it('refuses a key with an extra underscore-separated part between prefix and lookupId', () => {
    const key = formatKey('pk_live_extra', LOOKUP_12, SECRET_27);
    expect(parseKey(key, 'pk_live')).toBeNull();
    expect(parseKey(key, 'pk_live_extra')).not.toBeNull();
  });

  it('refuses a key whose checksum has one changed character', () => {
    const check = FIXED_KEY.slice(-CHECK_LENGTH);
    const changed = check.slice(0, -1) + (check.endsWith('e') ? 'f' : 'e');
    expect(parseKey(FIXED_KEY.slice(0, -CHECK_LENGTH) + changed, 'pk_live')).toBeNull();
  });

  it('refuses every single-character change anywhere in a valid key', () => {
    const replacements = `${BASE62_ALPHABET}_-. `;
    for (const key of [FIXED_KEY, mintKey('pk_live').key, mintKey('kg').key]) {
      const prefix = key.startsWith('kg_') ? 'kg' : 'pk_live';
      expect(parseKey(key, prefix)).not.toBeNull();
      for (let i = 0; i < key.length; i++) {
        for (const replacement of replacements) {
          if (replacement === key[i]) continue;
          const changed = key.slice(0, i) + replacement + key.slice(i + 1);
          if (parseKey(changed, prefix) !== null) throw new Error(`accepted ${changed} (position ${i})`);
        }
      }
    }
  });

  it('refuses a key with two adjacent characters swapped, or one character dropped or doubled', () => {
    const key = FIXED_KEY;
    for (let i = 0; i + 1 < key.length; i++) {
      if (key[i] !== key[i + 1]) {
        const swapped = key.slice(0, i) + key[i + 1] + key[i] + key.slice(i + 2);
        expect(parseKey(swapped, 'pk_live')).toBeNull();
      }
    }
    for (let i = 0; i < key.length; i++) {
      expect(parseKey(key.slice(0, i) + key.slice(i + 1), 'pk_live')).toBeNull();
      expect(parseKey(key.slice(0, i) + key[i] + key.slice(i), 'pk_live')).toBeNull();
    }
  });

  it('refuses a lookupId shorter than 12 characters even with a valid check, and accepts exactly 12', () => {
    expect(MIN_LOOKUP_ID_LENGTH).toBe(12);
    expect(parseKey(formatKey('kg', LOOKUP_12.slice(0, 11), SECRET_27), 'kg')).toBeNull();
    expect(parseKey(formatKey('kg', '', SECRET_27), 'kg')).toBeNull();
    expect(parseKey(formatKey('kg', LOOKUP_12, SECRET_27), 'kg')).not.toBeNull();
  });

  it('refuses a secret shorter than 27 characters even with a valid check, and accepts exactly 27', () => {
    expect(MIN_SECRET_LENGTH).toBe(27);
    expect(parseKey(formatKey('kg', LOOKUP_12, SECRET_27.slice(0, 26)), 'kg')).toBeNull();
    expect(parseKey(formatKey('kg', LOOKUP_12, ''), 'kg')).toBeNull();
    expect(parseKey(formatKey('kg', LOOKUP_12, SECRET_27), 'kg')).not.toBeNull();
  });

  it.each([
    ['a hyphen in the lookupId', formatKey('kg', '0123456789A-', SECRET_27)],
    ['a dot in the secret', formatKey('kg', LOOKUP_12, `${SECRET_27.slice(0, 26)}.`)],
    ['a plus in the secret', formatKey('kg', LOOKUP_12, `+${SECRET_27}`)],
    ['a fullwidth letter in the lookupId', formatKey('kg', '０123456789AB', SECRET_27)],
    ['an accented letter in the secret', formatKey('kg', LOOKUP_12, `é${SECRET_27}`)],
    ['an emoji in the secret', formatKey('kg', LOOKUP_12, `${SECRET_27}🔑`)],
    ['a space in the secret', formatKey('kg', LOOKUP_12, `${SECRET_27} x`)],
  ])('refuses non-base62 characters (%s) even when the check matches', (_what, key) => {
    expect(parseKey(key, 'kg')).toBeNull();
  });

  it('accepts a 255-character key and refuses a 256-character one', () => {
    expect(MAX_KEY_LENGTH).toBe(255);
    // 'kg_' (3) + lookupId (12) + '_' (1) + secret + check (6)
    const at255 = formatKey('kg', LOOKUP_12, 'a'.repeat(255 - 22));
    const at256 = formatKey('kg', LOOKUP_12, 'a'.repeat(256 - 22));
    expect(at255).toHaveLength(255);
    expect(at256).toHaveLength(256);
    expect(parseKey(at255, 'kg')).not.toBeNull();
    expect(parseKey(at256, 'kg')).toBeNull();
    expect(parseKey(FIXED_KEY + 'x'.repeat(10_000), 'pk_live')).toBeNull();
  });

  it.each([
    ['empty', ''],
    ['only underscores', '___'],
    ['the prefix alone', 'pk_live'],
    ['prefix and lookupId only', 'pk_live_0123456789AB'],
    ['a leading space', ` ${FIXED_KEY}`],
    ['a trailing space', `${FIXED_KEY} `],
    ['a trailing newline', `${FIXED_KEY}\n`],
    ['a trailing CRLF', `${FIXED_KEY}\r\n`],
    ['a tab inside', FIXED_KEY.replace('_abc', '_\tabc')],
    ['a Bearer scheme still attached', `Bearer ${FIXED_KEY}`],
    ['upper-cased prefix', FIXED_KEY.replace('pk_live', 'PK_LIVE')],
    ['a Cyrillic lookalike in the prefix', FIXED_KEY.replace('pk_', 'рk_')],
    ['a NUL byte', `${FIXED_KEY}\u0000`],
    ['a zero-width space', FIXED_KEY.replace('_0', '_\u200b0')],
  ])('refuses %s', (_what, raw) => {
    expect(parseKey(raw, 'pk_live')).toBeNull();
  });

  it.each([undefined, null, 42, {}, ['x'], Buffer.from(FIXED_KEY)])('refuses the non-string %p without throwing', (value) => {
    expect(parseKey(value as unknown as string, 'pk_live')).toBeNull();
  });

  it('never throws on arbitrary strings, and accepts only what formatKey could produce', () => {
    const base62Char = fc.constantFrom(...BASE62_ALPHABET);
    const base62 = (min: number, max: number) => fc.string({ unit: base62Char, minLength: min, maxLength: max });
    const noisyChar = fc.constantFrom(...`${BASE62_ALPHABET}_-. é🔑\n`);
    // Key-shaped strings, half with a correct check, sometimes with noise, so acceptance is exercised.
    const keyShaped = fc
      .tuple(
        fc.constantFrom('pk_live', 'pk', 'live', 'kg', 'pk_live_x'),
        fc.oneof(base62(10, 14), fc.string({ unit: noisyChar, maxLength: 14 })),
        fc.oneof(base62(25, 40), fc.string({ unit: noisyChar, maxLength: 40 })),
        fc.boolean(),
        fc.string({ maxLength: 6 }),
      )
      .map(([prefix, lookupId, secret, validCheck, noise]) => {
        const body = `${prefix}_${lookupId}_${secret}`;
        return body + (validCheck ? checkDigits(body) : noise);
      });
    let accepted = 0;
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary', maxLength: 300 }), keyShaped), (raw) => {
        const parsed = parseKey(raw, 'pk_live');
        if (parsed === null) return;
        accepted++;
        expect(parsed.prefix).toBe('pk_live');
        expect(raw.length).toBeLessThanOrEqual(MAX_KEY_LENGTH);
        expect(parsed.lookupId).toMatch(/^[0-9A-Za-z]{12,}$/);
        expect(parsed.secret).toMatch(/^[0-9A-Za-z]{27,}$/);
        expect(parsed.keyPrefix).toBe(`pk_live_${parsed.lookupId}`);
        expect(formatKey('pk_live', parsed.lookupId, parsed.secret)).toBe(raw);
      }),
      { numRuns: 3000 },
    );
    expect(accepted).toBeGreaterThan(0);
  });
});

describe('mintKey', () => {
  it('mints a lookupId of at least 12 and a secret of at least 27 base62 characters (≥ 160 bits)', () => {
    expect(LOOKUP_ID_LENGTH).toBeGreaterThanOrEqual(12);
    expect(SECRET_LENGTH).toBeGreaterThanOrEqual(27);
    for (let i = 0; i < 100; i++) {
      const minted = mintKey('pk_live');
      const parsed = parseKey(minted.key, 'pk_live')!;
      expect(parsed.lookupId.length).toBeGreaterThanOrEqual(12);
      expect(minted.secret).toMatch(/^[0-9A-Za-z]{27,}$/);
      expect(minted.secret.length * Math.log2(62)).toBeGreaterThanOrEqual(160);
      expect(minted.key.startsWith(`${minted.keyPrefix}_${minted.secret}`)).toBe(true);
    }
  });

  it('mints keys within 255 characters even for a 32-character prefix', () => {
    const prefix = 'a'.repeat(32);
    const minted = mintKey(prefix);
    expect(minted.key.length).toBeLessThanOrEqual(MAX_KEY_LENGTH);
    expect(parseKey(minted.key, prefix)).not.toBeNull();
  });

  it('never repeats a key, keyPrefix or secret across many mints', () => {
    const keys = new Set<string>();
    const keyPrefixes = new Set<string>();
    const secrets = new Set<string>();
    const n = 5000;
    for (let i = 0; i < n; i++) {
      const minted = mintKey('kg');
      keys.add(minted.key);
      keyPrefixes.add(minted.keyPrefix);
      secrets.add(minted.secret);
    }
    expect(keys.size).toBe(n);
    expect(keyPrefixes.size).toBe(n);
    expect(secrets.size).toBe(n);
  });

  it('does not use the secret as, or inside, the keyPrefix', () => {
    const minted = mintKey('kg');
    expect(minted.keyPrefix.includes(minted.secret)).toBe(false);
  });
});
