/**
 * A record written before a field existed keeps working after the upgrade: a custom store's JSON
 * or a Redis hash without `allowedOrigins`, `requireHttps` or `clientCertificateSha256` reads as
 * their initial values (SQL stores get the same through migrate()), while a field that is present
 * and wrong is still refused.
 */
import { keygate, MemoryStore, type ApiKeyRecord } from '../../src/index';
import { decodeStoredRecord } from '../../src/record/decode';
import { testRecord } from '../helpers/records';

const T = Date.UTC(2026, 0, 15, 12);

/** A record as the previous version wrote it: without the fields of schema version 2. */
function versionOneRecord(overrides: Partial<ApiKeyRecord> = {}): Record<string, unknown> {
  const { allowedOrigins: _o, requireHttps: _h, clientCertificateSha256: _c, ...older } = testRecord(T, overrides);
  return older;
}

describe('records written before a field existed', () => {
  it('decode with the later fields at their initial values', () => {
    const decoded = decodeStoredRecord(versionOneRecord());
    expect(decoded).toMatchObject({ allowedOrigins: [], requireHttps: false, clientCertificateSha256: [] });
  });

  it('a later field that is present but wrong is still refused', () => {
    expect(() => decodeStoredRecord({ ...versionOneRecord(), requireHttps: 'yes' })).toThrow(
      expect.objectContaining({ code: 'invalid_record', field: 'requireHttps' }),
    );
    expect(() => decodeStoredRecord({ ...versionOneRecord(), allowedOrigins: null })).toThrow(
      expect.objectContaining({ code: 'invalid_record', field: 'allowedOrigins' }),
    );
  });

  it('a field of the first version that is missing is still refused, never filled in', () => {
    const { scopes: _scopes, ...withoutScopes } = versionOneRecord();
    expect(() => decodeStoredRecord(withoutScopes)).toThrow(expect.objectContaining({ code: 'invalid_record', field: 'scopes' }));
  });

  it('a key whose stored record predates the fields still verifies, and can be given them', async () => {
    /** A store whose records are as an older keygate wrote them. */
    class OlderStore extends MemoryStore {
      override async findByKeyPrefix(keyPrefix: string): Promise<ApiKeyRecord | null> {
        const record = await super.findByKeyPrefix(keyPrefix);
        if (!record) return null;
        const { allowedOrigins: _o, requireHttps: _h, clientCertificateSha256: _c, ...older } = record;
        return older as ApiKeyRecord;
      }
    }
    const keys = keygate({ store: new OlderStore(), hashing: 'sha256', now: () => T });
    const { key, apiKey } = await keys.create({ name: 'old' });
    const verified = await keys.verify(key);
    expect(verified.ok && verified.apiKey).toMatchObject({ allowedOrigins: [], requireHttps: false, clientCertificateSha256: [] });
    await keys.close();
    expect(apiKey.requireHttps).toBe(false);
  });
});
