/**
 * Store-level test records: valid, with every optional field absent unless overridden. Made by the
 * contract suite's own factory (`sampleRecord`, built from the record schema), so a new record
 * field reaches these tests and the contract suite at once.
 */
import type { ApiKeyRecord } from '../../src/index';
import { sampleRecord } from '../../src/testing/sample-record';

/** A record created (and last updated) at `createdAt`, with a random id and keyPrefix. */
export function testRecord(createdAt: number, overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return sampleRecord({ name: 'test record', ...overrides }, createdAt);
}
