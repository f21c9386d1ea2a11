/** Store-level test records: valid, with every optional field absent unless overridden. */
import { randomUUID } from 'node:crypto';
import type { ApiKeyRecord } from '../../src/index';

/** A record created (and last updated) at `createdAt`, with a random id and keyPrefix. */
export function testRecord(createdAt: number, overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return {
    id: randomUUID(),
    keyPrefix: `kg_${randomUUID().replace(/-/g, '').slice(0, 16)}`,
    keyHash: '$hmac-sha256$x',
    name: 'test record',
    status: 'active',
    scopes: [],
    allowedIps: [],
    maxUses: null,
    useCount: 0,
    rateLimit: null,
    expiresAt: null,
    createdAt: new Date(createdAt),
    updatedAt: new Date(createdAt),
    lastUsedAt: null,
    revokedAt: null,
    metadata: {},
    tags: [],
    ...overrides,
  };
}
