/**
 * Records for store tests, built from the record schema so that a new field reaches every test
 * record at once: the contract suite's records and keygate's own test helpers are all made here.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { randomBase62 } from '../key/base62.js';
import { initialValues } from '../record/schema.js';
import type { ApiKeyRecord } from '../types.js';

/**
 * A valid record as `create()` would store it: a random id, keyPrefix (`kg_…`) and HMAC-format
 * hash, every field at its initial value, optional fields absent, created and updated at
 * `createdAt` (epoch ms; default 2025-01-02T03:04:05.678Z). `overrides` replace fields and must
 * not carry `undefined` (leave a field out to keep it absent).
 *
 * @example
 * ```ts
 * await store.insert(sampleRecord({ maxUses: 3, rateLimit: { perSecond: 1 } }));
 * ```
 */
export function sampleRecord(overrides: Partial<ApiKeyRecord> = {}, createdAt = Date.UTC(2025, 0, 2, 3, 4, 5, 678)): ApiKeyRecord {
  return {
    ...initialValues(),
    id: randomUUID(),
    keyPrefix: `kg_${randomBase62(16)}`,
    keyHash: `$hmac-sha256$${randomBytes(32).toString('base64url')}`,
    name: 'sample key',
    createdAt: new Date(createdAt),
    updatedAt: new Date(createdAt),
    ...overrides,
  } as ApiKeyRecord;
}
