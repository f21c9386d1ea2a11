/**
 * Hashing and verifying secrets. The stored string names its algorithm (`$2b$…` is bcrypt,
 * `$hmac-sha256$…` is HMAC-SHA-256), so verification dispatches on it and one store can hold both.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { compare as bcryptCompare, hash as bcryptHash } from 'bcryptjs';
import type { HashPool } from './hash-pool.js';

/** Hashing algorithms for new keys. */
export type HashingAlgorithm = 'bcrypt' | 'sha256';

/** How new secrets are hashed and stored hashes verified. */
export interface HashingOptions {
  algorithm: HashingAlgorithm;
  /** bcrypt cost factor. */
  bcryptCost: number;
  /** Server-side secret mixed into HMAC-SHA-256 hashes. */
  pepper: string | undefined;
  /** Worker threads for bcrypt; without one, bcrypt runs on the calling thread. */
  pool?: HashPool | undefined;
}

const HMAC_TAG = '$hmac-sha256$';
const BCRYPT_PATTERN = /^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$/;

function hmac(secret: string, pepper: string | undefined): Buffer {
  return createHmac('sha256', pepper ?? '').update(secret, 'utf8').digest();
}

/** Hashes a new secret with the configured algorithm. */
export async function hashSecret(secret: string, options: HashingOptions): Promise<string> {
  if (options.algorithm === 'sha256') return HMAC_TAG + hmac(secret, options.pepper).toString('base64url');
  return options.pool ? options.pool.hash(secret, options.bcryptCost) : bcryptHash(secret, options.bcryptCost);
}

/** Which algorithm produced a stored hash, or `null` if it is not one keygate wrote. */
export function hashAlgorithmOf(stored: string): HashingAlgorithm | null {
  if (stored.startsWith(HMAC_TAG)) return 'sha256';
  if (BCRYPT_PATTERN.test(stored)) return 'bcrypt';
  return null;
}

/**
 * A well-formed hash of no secret, for the compare keygate runs when a keyPrefix is unknown: it
 * costs what a compare against a real hash of `algorithm` costs, so an unknown keyPrefix answers
 * after the same work as a known one with a wrong secret. Nothing ever verifies against it (its
 * bcrypt digest is no output of bcrypt; its HMAC is the empty string's with no pepper).
 */
export function dummyHash(algorithm: HashingAlgorithm, bcryptCost: number): string {
  if (algorithm === 'sha256') return HMAC_TAG + 'A'.repeat(43);
  return `$2b$${String(bcryptCost).padStart(2, '0')}$${'N'.repeat(22)}${'.'.repeat(31)}`;
}

/**
 * Verifies a presented secret against a stored hash in constant time for the algorithm.
 * An unrecognised hash never verifies. `lane` orders bcrypt compares on the hashing threads.
 */
export async function verifySecret(
  secret: string,
  stored: string,
  pepper: string | undefined,
  pool?: HashPool,
  lane: 'clean' | 'suspect' = 'clean',
): Promise<boolean> {
  switch (hashAlgorithmOf(stored)) {
    case 'sha256': {
      const expected = Buffer.from(stored.slice(HMAC_TAG.length), 'base64url');
      const actual = hmac(secret, pepper);
      return expected.length === actual.length && timingSafeEqual(expected, actual);
    }
    case 'bcrypt':
      return pool ? pool.compare(secret, stored, lane) : bcryptCompare(secret, stored);
    default:
      return false;
  }
}
