/**
 * The key format `<prefix>_<lookupId>_<secret><check>`: building keys and parsing presented ones.
 * Parsing is strict and cheap, so garbage, a wrong prefix, a typo or an over-long value is refused
 * before any store call or hash computation.
 */
import { isBase62 } from './base62.js';
import { CHECK_LENGTH, checkDigits } from './checksum.js';

/** Keys are at most this many characters. */
export const MAX_KEY_LENGTH = 255;
/** Prefixes are at most this many characters. */
export const MAX_PREFIX_LENGTH = 32;
/** Minimum lookupId length (base62 characters). */
export const MIN_LOOKUP_ID_LENGTH = 12;
/** Minimum secret length: 27 base62 characters carry 160.7 bits. */
export const MIN_SECRET_LENGTH = 27;

const PREFIX_PATTERN = /^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$/;

/** True when `prefix` follows `^[a-z][a-z0-9]*(_[a-z0-9]+)*$` and is at most 32 characters. */
export function isValidPrefix(prefix: unknown): prefix is string {
  return typeof prefix === 'string' && prefix.length <= MAX_PREFIX_LENGTH && PREFIX_PATTERN.test(prefix);
}

/** The parts of a well-formed key. */
export interface ParsedKey {
  prefix: string;
  lookupId: string;
  secret: string;
  /** `<prefix>_<lookupId>`: how the record is found. */
  keyPrefix: string;
}

/** Builds the full key, check digits included. */
export function formatKey(prefix: string, lookupId: string, secret: string): string {
  const body = `${prefix}_${lookupId}_${secret}`;
  return body + checkDigits(body);
}

/**
 * Parses a presented key for the expected prefix (or any prefix of a map of accepted prefixes).
 * Returns `null` for anything that is not a well-formed key of such a prefix with a valid check.
 * Never throws.
 */
export function parseKey(raw: string, expectedPrefix: string | ReadonlyMap<string, unknown>): ParsedKey | null {
  if (typeof raw !== 'string' || raw.length > MAX_KEY_LENGTH) return null;
  // The prefix itself may contain `_`; lookupId and secret never do, so split from the end.
  const lastSep = raw.lastIndexOf('_');
  if (lastSep <= 0) return null;
  const idSep = raw.lastIndexOf('_', lastSep - 1);
  if (idSep <= 0) return null;
  const prefix = raw.slice(0, idSep);
  if (typeof expectedPrefix === 'string' ? prefix !== expectedPrefix : !expectedPrefix.has(prefix)) return null;
  const lookupId = raw.slice(idSep + 1, lastSep);
  const tail = raw.slice(lastSep + 1);
  if (lookupId.length < MIN_LOOKUP_ID_LENGTH || tail.length < MIN_SECRET_LENGTH + CHECK_LENGTH) return null;
  if (!isBase62(lookupId) || !isBase62(tail)) return null;
  const secret = tail.slice(0, -CHECK_LENGTH);
  const body = raw.slice(0, raw.length - CHECK_LENGTH);
  if (checkDigits(body) !== tail.slice(-CHECK_LENGTH)) return null;
  return { prefix, lookupId, secret, keyPrefix: `${prefix}_${lookupId}` };
}
