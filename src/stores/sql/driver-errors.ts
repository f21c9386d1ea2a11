/**
 * Driver errors without key hashes. A database error can quote the row it was about: PostgreSQL's
 * `detail` says "Failing row contains (…)" for a CHECK or NOT NULL violation, with every column of
 * the row, `key_hash` included; a SQLite trigger's `RAISE(ABORT, …)` message can be built from
 * `NEW.key_hash`. keygate reports a store failure as `store_unavailable` and keeps the failure for
 * logs, and logs are no place for a hash (an HMAC hash is an offline oracle for the secret once
 * the pepper leaks; a bcrypt hash can be attacked at leisure).
 *
 * So every error a SqlStore operation rejects with has each key hash in its text replaced, in
 * place: the error keeps its class, `code`, `constraint` and the rest, which applications match on.
 */
import { isKeygateError } from '../../errors.js';

/** What a hash is replaced with. */
export const REDACTED_HASH = '[key hash redacted]';

/**
 * The hash formats keygate writes (see `key/hash`), also when PostgreSQL has cut the value short
 * (it quotes at most 64 bytes of each column): HMAC-SHA-256 as `$hmac-sha256$` and base64url,
 * bcrypt as `$2a$` / `$2b$` / `$2y$`, the cost and the salt-and-digest alphabet.
 */
const HASH_PATTERN = /\$hmac-sha256\$[A-Za-z0-9_-]*|\$2[aby]\$\d{0,2}\$?[./A-Za-z0-9]*/g;

/** Object properties an error may nest another error in. */
const NESTED = ['cause', 'errors', 'originalError'];

function redact(text: string, hashes: readonly string[]): string {
  let result = text;
  for (const hash of hashes) if (hash.length > 0 && result.includes(hash)) result = result.split(hash).join(REDACTED_HASH);
  return result.replace(HASH_PATTERN, REDACTED_HASH);
}

function scrub(value: unknown, hashes: readonly string[], depth: number, seen: Set<object>): void {
  if (value === null || typeof value !== 'object' || depth > 4 || seen.has(value)) return;
  seen.add(value);
  const target = value as Record<string, unknown>;
  // `message` and `stack` are own properties of every Error; the others are what drivers add
  // (pg: detail, hint, where, internalQuery, …).
  const names = new Set([...Object.getOwnPropertyNames(target), 'message', 'stack']);
  for (const name of names) {
    let current: unknown;
    try {
      current = target[name];
    } catch {
      continue;
    }
    if (typeof current === 'string') {
      const cleaned = redact(current, hashes);
      if (cleaned !== current) {
        try {
          target[name] = cleaned;
        } catch {
          // a read-only property: leave it
        }
      }
    } else if (Array.isArray(current) && NESTED.includes(name)) {
      for (const item of current) scrub(item, hashes, depth + 1, seen);
    } else if (NESTED.includes(name)) {
      scrub(current, hashes, depth + 1, seen);
    }
  }
}

/**
 * Runs a store operation; when it rejects with anything but a KeygateError (which keygate words
 * itself), removes key hashes from the error (those of `hashes`, and anything shaped like a hash)
 * before passing it on.
 */
export async function withoutHashes<T>(operation: () => Promise<T>, hashes: readonly string[] = []): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    if (!isKeygateError(error)) scrub(error, hashes, 0, new Set());
    throw error;
  }
}
