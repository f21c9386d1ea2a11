/**
 * The hash scrubbing of SqlStore's driver errors (audit issue 9: no keyHash in store errors), on
 * error objects shaped like the drivers' own. The end-to-end proof against real databases is
 * test/sql/store-error-secrets.test.ts.
 */
import { inspect } from 'node:util';
import { KeygateError } from 'keygate';
import { REDACTED_HASH, withoutHashes } from '../../src/stores/sql/driver-errors';
import { rejection } from '../helpers/rejection';

const HMAC = `$hmac-sha256$${'A1_-'.repeat(10)}xyz`;
const BCRYPT = `$2b$10$${'N'.repeat(22)}${'./Az09'.repeat(5)}x`;

function failing(error: unknown): () => Promise<never> {
  return () => Promise.reject(error);
}

describe('withoutHashes', () => {
  it('removes every hash from message, stack, detail and nested causes, keeping code and constraint', async () => {
    const cause = new Error(`inner ${BCRYPT}`);
    const error = Object.assign(new Error(`outer ${HMAC}`), {
      code: '23514',
      constraint: 'short_names',
      detail: `Failing row contains (id, pk_test_abc, ${HMAC}, name, ${BCRYPT.slice(0, 40)}...)`,
      cause,
    });
    const thrown = await rejection(() => withoutHashes(failing(error)));
    expect(thrown).toBe(error);
    expect(error.code).toBe('23514');
    expect(error.constraint).toBe('short_names');
    expect(error.detail).toBe(`Failing row contains (id, pk_test_abc, ${REDACTED_HASH}, name, ${REDACTED_HASH})`); // "." is in the bcrypt alphabet
    const everything = [inspect(error, { depth: 10, showHidden: true }), JSON.stringify(error), String(error.stack), String(cause.stack)].join('\n');
    expect(everything).not.toContain('$hmac-sha256$');
    expect(everything).not.toContain('$2b$');
  });

  it('removes a hash it was given, whatever its format', async () => {
    const error = new Error('custom failure quoting s3cr3t-hash-value');
    await rejection(() => withoutHashes(failing(error), ['s3cr3t-hash-value']));
    expect(error.message).toBe(`custom failure quoting ${REDACTED_HASH}`);
  });

  it("leaves keygate's own errors and non-objects alone, and survives read-only properties", async () => {
    const own = new KeygateError('already_exists', 'a key with keyPrefix pk_test_abc already exists');
    expect(await rejection(() => withoutHashes(failing(own)))).toBe(own);
    expect(own.message).toBe('a key with keyPrefix pk_test_abc already exists');
    expect(await rejection(() => withoutHashes(failing(`plain ${HMAC}`)))).toBe(`plain ${HMAC}`);
    const frozen = Object.freeze(Object.assign(new Error('frozen'), { detail: HMAC }));
    expect(await rejection(() => withoutHashes(failing(frozen)))).toBe(frozen);
  });

  it('passes results through untouched', async () => {
    await expect(withoutHashes(async () => 42)).resolves.toBe(42);
  });
});
