import { hashAlgorithmOf, hashSecret, verifySecret, type HashingOptions } from '../../src/key/hash';
import { mintKey } from '../../src/key/generate';

const bcrypt: HashingOptions = { algorithm: 'bcrypt', bcryptCost: 4, pepper: undefined };
const sha256: HashingOptions = { algorithm: 'sha256', bcryptCost: 4, pepper: undefined };
const peppered: HashingOptions = { algorithm: 'sha256', bcryptCost: 4, pepper: 'server-side-pepper' };

const SECRET = 'abcdefghijklmnopqrstuvwxyzABCDEF';
const OTHER = 'abcdefghijklmnopqrstuvwxyzABCDEG';

describe('bcrypt hashing', () => {
  it('verifies the secret it hashed and nothing else', async () => {
    const stored = await hashSecret(SECRET, bcrypt);
    expect(await verifySecret(SECRET, stored, undefined)).toBe(true);
    expect(await verifySecret(OTHER, stored, undefined)).toBe(false);
    expect(await verifySecret('', stored, undefined)).toBe(false);
    expect(await verifySecret(SECRET.slice(0, -1), stored, undefined)).toBe(false);
  });

  it('writes a $2…$ string with the configured cost, tagged as bcrypt', async () => {
    const stored = await hashSecret(SECRET, bcrypt);
    expect(stored).toMatch(/^\$2[aby]\$04\$[./A-Za-z0-9]{53}$/);
    expect(hashAlgorithmOf(stored)).toBe('bcrypt');
  });

  it('salts: the same secret hashed twice gives two different strings that both verify', async () => {
    const a = await hashSecret(SECRET, bcrypt);
    const b = await hashSecret(SECRET, bcrypt);
    expect(a).not.toBe(b);
    expect(await verifySecret(SECRET, a, undefined)).toBe(true);
    expect(await verifySecret(SECRET, b, undefined)).toBe(true);
  });
});

describe('HMAC-SHA-256 hashing', () => {
  it('verifies the secret it hashed and nothing else', async () => {
    const stored = await hashSecret(SECRET, sha256);
    expect(await verifySecret(SECRET, stored, undefined)).toBe(true);
    expect(await verifySecret(OTHER, stored, undefined)).toBe(false);
    expect(await verifySecret('', stored, undefined)).toBe(false);
  });

  it('writes a $hmac-sha256$ string, tagged as sha256', async () => {
    const stored = await hashSecret(SECRET, sha256);
    expect(stored.startsWith('$hmac-sha256$')).toBe(true);
    expect(hashAlgorithmOf(stored)).toBe('sha256');
  });

  it('mixes in the pepper: a hash verifies only with the pepper it was written with', async () => {
    const withPepper = await hashSecret(SECRET, peppered);
    const without = await hashSecret(SECRET, sha256);
    expect(withPepper).not.toBe(without);
    expect(await verifySecret(SECRET, withPepper, 'server-side-pepper')).toBe(true);
    expect(await verifySecret(SECRET, withPepper, undefined)).toBe(false);
    expect(await verifySecret(SECRET, withPepper, 'another-pepper')).toBe(false);
    expect(await verifySecret(SECRET, without, 'server-side-pepper')).toBe(false);
    expect(await verifySecret(SECRET, without, undefined)).toBe(true);
  });

  it('refuses a hash whose digest was truncated or extended', async () => {
    const stored = await hashSecret(SECRET, peppered);
    expect(await verifySecret(SECRET, stored.slice(0, -2), 'server-side-pepper')).toBe(false);
    expect(await verifySecret(SECRET, `${stored}AA`, 'server-side-pepper')).toBe(false);
    expect(await verifySecret(SECRET, '$hmac-sha256$', 'server-side-pepper')).toBe(false);
  });
});

describe('dispatch on the stored string', () => {
  it('verifies bcrypt and sha256 hashes side by side, whatever algorithm new keys use', async () => {
    const a = await hashSecret(SECRET, bcrypt);
    const b = await hashSecret(OTHER, peppered);
    expect(await verifySecret(SECRET, a, 'server-side-pepper')).toBe(true);
    expect(await verifySecret(OTHER, b, 'server-side-pepper')).toBe(true);
    expect(await verifySecret(OTHER, a, 'server-side-pepper')).toBe(false);
    expect(await verifySecret(SECRET, b, 'server-side-pepper')).toBe(false);
  });

  it.each([
    ['empty', ''],
    ['the secret itself, as if stored in clear', SECRET],
    ['a truncated bcrypt hash', '$2b$04$abcdefghijklmnopqrstuv'],
    ['a bcrypt hash with a one-digit cost', `$2b$4$${'a'.repeat(53)}`],
    ['an unknown $2x$ variant', `$2x$04$${'a'.repeat(53)}`],
    ['an argon2 hash', '$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g'],
    ['a bare sha256 hex digest', 'a'.repeat(64)],
    ['an upper-case tag', '$HMAC-SHA256$abc'],
  ])('does not recognise %s and never verifies against it', async (_what, stored) => {
    expect(hashAlgorithmOf(stored)).toBeNull();
    expect(await verifySecret(SECRET, stored, undefined)).toBe(false);
    expect(await verifySecret(stored, stored, undefined)).toBe(false);
  });
});

describe('stored hashes', () => {
  it.each([
    ['bcrypt', bcrypt],
    ['sha256', sha256],
    ['sha256 with pepper', peppered],
  ])('never contain the secret (%s)', async (_name, options) => {
    for (let i = 0; i < 5; i++) {
      const { secret } = mintKey('kg');
      const stored = await hashSecret(secret, options);
      expect(stored.includes(secret)).toBe(false);
      expect(stored.includes(secret.slice(0, 16))).toBe(false);
      expect(stored.includes(Buffer.from(secret).toString('base64url').slice(0, 16))).toBe(false);
      expect(await verifySecret(secret, stored, options.pepper)).toBe(true);
    }
  });

  it('never contain the pepper', async () => {
    const stored = await hashSecret(SECRET, peppered);
    expect(stored.includes('server-side-pepper')).toBe(false);
  });
});

describe('keyDigest', () => {
  it('is the base64url SHA-256 of the presented key, whichever hashing API Node offers', () => {
    const { keyDigest } = jest.requireActual('../../src/cache/verification-cache') as typeof import('../../src/cache/verification-cache');
    const { createHash } = jest.requireActual('node:crypto') as typeof import('node:crypto');
    for (const key of ['pk_test_x', 'ünïcödé', '']) {
      expect(keyDigest(key)).toBe(createHash('sha256').update(key, 'utf8').digest('base64url'));
    }
  });
});
