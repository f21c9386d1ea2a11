/**
 * Turning the database's unique-constraint errors into `already_exists`. Only these codes are
 * translated; every other driver error passes through untouched (keygate reports it as
 * `store_unavailable`, keeping the original as `cause`).
 */
import { ownValue } from '../../record/decode.js';
import type { ApiKeyRecord } from '../../types.js';
import { alreadyExists } from '../toolkit.js';

/** PostgreSQL's `unique_violation` SQLSTATE. */
const POSTGRES_UNIQUE_VIOLATION = '23505';
/** better-sqlite3's extended result codes for a primary-key and a unique-index collision. */
const SQLITE_PRIMARY_KEY = 'SQLITE_CONSTRAINT_PRIMARYKEY';
const SQLITE_UNIQUE = 'SQLITE_CONSTRAINT_UNIQUE';

function property(error: unknown, name: string): unknown {
  return error !== null && typeof error === 'object' ? (error as Record<string, unknown>)[name] : undefined;
}

/** True when `error` is a unique-constraint violation from either driver. */
function isUniqueViolation(error: unknown): boolean {
  const code = property(error, 'code');
  return code === POSTGRES_UNIQUE_VIOLATION || code === SQLITE_PRIMARY_KEY || code === SQLITE_UNIQUE;
}

/**
 * Which unique constraint a violation hit: the primary key (`id`) or, the only other one, the
 * `key_prefix` index. pg names the constraint (`<table>_pkey`); better-sqlite3 says it in the code.
 */
function violatedField(error: unknown): 'id' | 'keyPrefix' {
  const constraint = property(error, 'constraint');
  const onId = property(error, 'code') === SQLITE_PRIMARY_KEY || (typeof constraint === 'string' && constraint.endsWith('_pkey'));
  return onId ? 'id' : 'keyPrefix';
}

/** Runs `write`, turning a unique violation into the toolkit's `already_exists` for `record`. */
export async function insertingOnce<T>(record: ApiKeyRecord, write: () => Promise<T> | T): Promise<T> {
  try {
    return await write();
  } catch (error) {
    if (isUniqueViolation(error)) {
      const field = violatedField(error);
      throw alreadyExists(field, String(ownValue(record, field)));
    }
    throw error;
  }
}
