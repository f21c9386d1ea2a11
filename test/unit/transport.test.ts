/**
 * Transport requirements as pure checks (HTTPS only, pinned client certificates), and through
 * `keys.verify()` for callers that are not Express: what they pass is checked exactly as the
 * middleware's request would be, and a refusal counts nothing.
 */
import { checkClientCertificate, checkHttps, normalizeFingerprint } from '../../src/policy/transport';
import { testKeys } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();
const HEX = '0123456789abcdef'.repeat(4);
const COLONS = (HEX.toUpperCase().match(/../g) as string[]).join(':');
const OTHER = 'f'.repeat(64);

describe('normalizeFingerprint', () => {
  it('keeps 64 lower-case hex digits, lower-cases upper case and drops the colons of AB:CD:… pairs', () => {
    expect(normalizeFingerprint(HEX)).toBe(HEX);
    expect(normalizeFingerprint(HEX.toUpperCase())).toBe(HEX);
    expect(normalizeFingerprint(COLONS)).toBe(HEX);
    expect(normalizeFingerprint(COLONS.toLowerCase())).toBe(HEX);
  });

  it.each([
    ['too short', HEX.slice(2)],
    ['too long', `${HEX}00`],
    ['not hex', 'g'.repeat(64)],
    ['a SHA-1 fingerprint', 'ab'.repeat(20)],
    ['colons in the wrong places', `${HEX.slice(0, 3)}:${HEX.slice(3)}`],
    ['a trailing colon', `${COLONS}:`],
    ['mixed colons and pairs', COLONS.replace(':', '')],
    ['white space', ` ${HEX}`],
    ['a prefix', `sha256:${HEX}`],
    ['the empty string', ''],
  ])('refuses %s', (_what, value) => {
    expect(normalizeFingerprint(value)).toBeNull();
  });
});

describe('checkHttps', () => {
  it('refuses only a required request that is not secure', () => {
    expect(checkHttps(false, false).ok).toBe(true);
    expect(checkHttps(false, true).ok).toBe(true);
    expect(checkHttps(true, true).ok).toBe(true);
    expect(checkHttps(true, false)).toEqual({ ok: false, code: 'https_required' });
  });
});

describe('checkClientCertificate', () => {
  it('an empty pin list requires nothing', () => {
    expect(checkClientCertificate([], null).ok).toBe(true);
    expect(checkClientCertificate([], HEX).ok).toBe(true);
  });

  it('a pin list requires one of its fingerprints, exactly', () => {
    expect(checkClientCertificate([OTHER, HEX], HEX).ok).toBe(true);
    expect(checkClientCertificate([HEX], null)).toEqual({ ok: false, code: 'client_certificate_required' });
    expect(checkClientCertificate([HEX], OTHER)).toEqual({ ok: false, code: 'client_certificate_required' });
    expect(checkClientCertificate([HEX], HEX.slice(0, 63)).ok).toBe(false);
    expect(checkClientCertificate([HEX], '').ok).toBe(false);
  });
});

describe('keys.verify({ secure, clientCertificateSha256 })', () => {
  it('refuses a requireHttps key unless the caller says the request was secure; a refusal counts nothing', async () => {
    const { keys, store } = testKeys();
    track(keys);
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const { key, apiKey } = await keys.create({ name: 'k', requireHttps: true });
      expect(apiKey.requireHttps).toBe(true);
      store.resetCounts();
      const clearWarnings = () => warn.mock.calls.filter(([, options]) => (options as { code?: string } | undefined)?.code === 'KEYGATE_KEY_SENT_IN_CLEAR');
      // verify() without `secure` is refused but proves nothing was sent in clear: no warning.
      expect((await keys.verify(key)).ok).toBe(false);
      expect(clearWarnings()).toHaveLength(0);
      for (const options of [{}, { secure: false }]) {
        const result = await keys.verify(key, options);
        expect(result.ok).toBe(false);
        if (!result.ok) expect(result.error.code).toBe('https_required');
      }
      expect(store.calls.consume).toBe(0);
      expect((await keys.verify(key, { secure: true })).ok).toBe(true);
      expect((await keys.get(apiKey.id))?.useCount).toBe(1);
      const clear = warn.mock.calls.filter(([, options]) => (options as { code?: string } | undefined)?.code === 'KEYGATE_KEY_SENT_IN_CLEAR');
      expect(clear).toHaveLength(1);
      expect(String(clear[0]?.[0])).toContain(apiKey.id);
      expect(String(clear[0]?.[0])).not.toContain(key);
    } finally {
      warn.mockRestore();
    }
  });

  it('checks the fingerprint a caller passes, in any accepted form, against the pins', async () => {
    const { keys, store } = testKeys();
    track(keys);
    const { key, apiKey } = await keys.create({ name: 'k', clientCertificateSha256: [COLONS] });
    expect(apiKey.clientCertificateSha256).toEqual([HEX]);
    store.resetCounts();
    for (const options of [{}, { clientCertificateSha256: OTHER }]) {
      const result = await keys.verify(key, options);
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.error.code).toBe('client_certificate_required');
    }
    expect(store.calls.consume).toBe(0);
    expect((await keys.verify(key, { clientCertificateSha256: HEX })).ok).toBe(true);
    expect((await keys.verify(key, { clientCertificateSha256: COLONS })).ok).toBe(true);
    expect((await keys.verify(key, { clientCertificateSha256: HEX.toUpperCase() })).ok).toBe(true);
    expect((await keys.get(apiKey.id))?.useCount).toBe(3);
  });

  it('refuses a malformed fingerprint or secure flag as invalid_argument, before looking at the key', async () => {
    const { keys } = testKeys();
    track(keys);
    const { key } = await keys.create({ name: 'k' });
    for (const options of [{ clientCertificateSha256: 'abc' }, { clientCertificateSha256: 7 as never }, { secure: 'yes' as never }]) {
      const result = await keys.verify(key, options);
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.error.code).toBe('invalid_argument');
    }
  });

  it('a key with none of the fields is admitted whatever the transport', async () => {
    const { keys } = testKeys();
    track(keys);
    const { key } = await keys.create({ name: 'k' });
    expect((await keys.verify(key, {})).ok).toBe(true);
    expect((await keys.verify(key, { secure: false })).ok).toBe(true);
    expect((await keys.verify(key, { clientCertificateSha256: HEX })).ok).toBe(true);
  });
});
