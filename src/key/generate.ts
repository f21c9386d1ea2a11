/** Minting new keys: random lookupId and secret from `crypto.randomBytes`. */
import { randomBase62 } from './base62.js';
import { formatKey } from './format.js';

/** Generated lookupIds: 16 base62 characters (95 bits), enough that collisions are retried, not feared. */
export const LOOKUP_ID_LENGTH = 16;
/** Generated secrets: 32 base62 characters (190 bits). */
export const SECRET_LENGTH = 32;

/** A freshly minted key and its parts. */
export interface MintedKey {
  key: string;
  keyPrefix: string;
  secret: string;
}

/** Mints a new key for `prefix`. */
export function mintKey(prefix: string): MintedKey {
  const lookupId = randomBase62(LOOKUP_ID_LENGTH);
  const secret = randomBase62(SECRET_LENGTH);
  return { key: formatKey(prefix, lookupId, secret), keyPrefix: `${prefix}_${lookupId}`, secret };
}
