/**
 * Allowed origins as pure checks: what a pattern may be and its canonical form, which origin a
 * request is taken to come from, and which origins a pattern admits. Every case here is one a
 * browser really sends, or a look-alike host an attacker registers to slip past a sloppy match.
 */
import { checkOrigin, parseOriginPattern, requestOrigin } from '../../src/policy/origin';
import { testKeys } from '../helpers/harness';
import { closeAfterEach } from '../helpers/managers';

const track = closeAfterEach();

describe('parseOriginPattern', () => {
  it.each([
    ['https://app.example.com', 'https://app.example.com'],
    ['HTTPS://App.Example.COM', 'https://app.example.com'],
    ['https://app.example.com/', 'https://app.example.com'],
    ['https://app.example.com:443', 'https://app.example.com'],
    ['http://app.example.com:80', 'http://app.example.com'],
    ['http://app.example.com:443', 'http://app.example.com:443'],
    ['https://app.example.com:80', 'https://app.example.com:80'],
    ['https://app.example.com:8443', 'https://app.example.com:8443'],
    ['https://*.example.com', 'https://*.example.com'],
    ['https://*.Example.com:443/', 'https://*.example.com'],
    ['https://*.example.com:8443', 'https://*.example.com:8443'],
    ['http://localhost:3000', 'http://localhost:3000'],
    ['http://127.0.0.1:8080', 'http://127.0.0.1:8080'],
    ['https://xn--bcher-kva.example', 'https://xn--bcher-kva.example'],
  ])('%s is canonically %s', (pattern, canonical) => {
    expect(parseOriginPattern(pattern)).toBe(canonical);
  });

  it.each([
    ['no scheme', 'app.example.com'],
    ['a scheme other than http(s)', 'ftp://app.example.com'],
    ['a script scheme', 'javascript://app.example.com'],
    ['a path', 'https://app.example.com/path'],
    ['a query', 'https://app.example.com?x=1'],
    ['a fragment', 'https://app.example.com#x'],
    ['two trailing slashes', 'https://app.example.com//'],
    ['user info', 'https://user@app.example.com'],
    ['a wildcard inside a label', 'https://*example.com'],
    ['a wildcard at the end of a label', 'https://app*.example.com'],
    ['a wildcard in a later label', 'https://app.*.example.com'],
    ['two wildcard labels', 'https://*.*.example.com'],
    ['a bare wildcard host', 'https://*'],
    ['a bare star', '*'],
    ['a wildcard scheme', '*://app.example.com'],
    ['port 0', 'https://app.example.com:0'],
    ['a port past 65535', 'https://app.example.com:65536'],
    ['a wildcard port', 'https://app.example.com:*'],
    ['an empty label', 'https://app..example.com'],
    ['a label starting with a hyphen', 'https://-app.example.com'],
    ['an underscore', 'https://a_b.example.com'],
    ['white space', 'https://app.example.com '],
    ['the empty string', ''],
    ['the literal null origin', 'null'],
    ['a wildcard over a whole top-level domain', 'https://*.com'],
    ['a host longer than DNS allows', `https://${'a.'.repeat(150)}com`],
  ])('refuses %s (%s)', (_what, pattern) => {
    expect(parseOriginPattern(pattern)).toBeNull();
  });

  it('a port written with leading zeros is either refused or canonical: never a form no request origin can equal', () => {
    // `new URL('https://a.example.com:08443').origin` is 'https://a.example.com:8443' and
    // ':00443' is the default port: a pattern kept as ':08443' would refuse its own origin forever.
    for (const [pattern, canonical] of [
      ['https://app.example.com:08443', 'https://app.example.com:8443'],
      ['https://app.example.com:00443', 'https://app.example.com'],
    ] as const) {
      const parsed = parseOriginPattern(pattern);
      if (parsed !== null) expect(parsed).toBe(canonical);
    }
  });

  it('a canonical pattern parses to itself', () => {
    for (const pattern of ['https://app.example.com', 'https://*.example.com:8443', 'http://localhost:3000']) {
      expect(parseOriginPattern(parseOriginPattern(pattern) as string)).toBe(pattern);
    }
  });
});

describe('requestOrigin', () => {
  it('takes the Origin header, lower-cased and without its default port', () => {
    expect(requestOrigin('https://app.example.com', undefined)).toBe('https://app.example.com');
    expect(requestOrigin('HTTPS://APP.Example.COM:443', undefined)).toBe('https://app.example.com');
    expect(requestOrigin('http://app.example.com:80', undefined)).toBe('http://app.example.com');
    expect(requestOrigin('https://app.example.com:8443', undefined)).toBe('https://app.example.com:8443');
  });

  it('uses the Referer only when there is no Origin', () => {
    expect(requestOrigin(undefined, 'https://app.example.com/page?q=1#top')).toBe('https://app.example.com');
    expect(requestOrigin('https://evil.com', 'https://app.example.com/page')).toBe('https://evil.com');
  });

  it('takes `Origin: null` (sandboxed iframes, file: pages, redirects) as an opaque origin: no origin, the Referer does not stand in', () => {
    expect(requestOrigin('null', 'https://app.example.com/embed')).toBeNull();
    expect(requestOrigin('null', undefined)).toBeNull();
  });

  it('never rescues a malformed Origin with the Referer', () => {
    expect(requestOrigin('garbage', 'https://app.example.com/')).toBeNull();
  });

  it('is null without either header, or for a scheme other than http(s)', () => {
    expect(requestOrigin(undefined, undefined)).toBeNull();
    expect(requestOrigin('file://', undefined)).toBeNull();
    expect(requestOrigin(undefined, 'file:///home/me/page.html')).toBeNull();
    expect(requestOrigin('chrome-extension://abcdef', undefined)).toBeNull();
    expect(requestOrigin(undefined, 'not a url')).toBeNull();
    expect(requestOrigin('', undefined)).toBeNull();
  });

  it('drops user info, path and query from a Referer: only its origin counts', () => {
    expect(requestOrigin(undefined, 'https://user:pw@app.example.com:443/a/b?c=d')).toBe('https://app.example.com');
  });
});

describe('checkOrigin', () => {
  const allow = (allowed: string[], origin: string | null): boolean => checkOrigin(allowed, origin).ok;

  it('an empty list admits any origin, and none', () => {
    expect(allow([], 'https://evil.com')).toBe(true);
    expect(allow([], null)).toBe(true);
  });

  it('a list refuses a request with no origin at all', () => {
    expect(checkOrigin(['https://app.example.com'], null)).toEqual({ ok: false, code: 'origin_not_allowed' });
  });

  it('an exact origin admits itself and nothing that merely looks like it', () => {
    const allowed = ['https://app.example.com'];
    expect(allow(allowed, 'https://app.example.com')).toBe(true);
    for (const origin of [
      'http://app.example.com',
      'https://app.example.com:8443',
      'https://app.example.com.evil.com',
      'https://evil-app.example.com',
      'https://xapp.example.com',
      'https://a.app.example.com',
      'https://example.com',
      'https://app.example.co',
    ]) {
      expect(allow(allowed, origin)).toBe(false);
    }
  });

  it('a wildcard admits one or more whole labels before the suffix, with the same scheme and port', () => {
    const allowed = ['https://*.example.com'];
    expect(allow(allowed, 'https://a.example.com')).toBe(true);
    expect(allow(allowed, 'https://a.b.example.com')).toBe(true);
    expect(allow(allowed, 'https://xn--bcher-kva.example.com')).toBe(true);
    for (const origin of [
      'https://example.com', // the wildcard stands for at least one label
      'https://evil-example.com', // not a label boundary
      'https://evilexample.com',
      'https://a.example.com.evil.com', // the suffix must end the host
      'https://a.example.comevil.com',
      'https://a.example.co',
      'http://a.example.com', // scheme
      'https://a.example.com:8443', // another port
      'https://a.example.com:443.evil.com',
    ]) {
      expect(allow(allowed, origin)).toBe(false);
    }
  });

  it('a wildcard with a port admits only that port', () => {
    const allowed = ['https://*.example.com:8443'];
    expect(allow(allowed, 'https://a.example.com:8443')).toBe(true);
    expect(allow(allowed, 'https://a.example.com')).toBe(false);
    expect(allow(allowed, 'https://a.example.com:9443')).toBe(false);
    expect(allow(allowed, 'https://example.com:8443')).toBe(false);
  });

  it('a wildcard does not match a host whose extra labels are empty', () => {
    // `new URL('https://..example.com').origin` is 'https://..example.com': an empty label is no label.
    expect(allow(['https://*.example.com'], 'https://..example.com')).toBe(false);
    expect(allow(['https://*.example.com'], 'https://.example.com')).toBe(false);
  });

  it('admits when any entry matches', () => {
    const allowed = ['https://app.example.com', 'https://*.example.org', 'http://localhost:3000'];
    expect(allow(allowed, 'https://app.example.com')).toBe(true);
    expect(allow(allowed, 'https://x.example.org')).toBe(true);
    expect(allow(allowed, 'http://localhost:3000')).toBe(true);
    expect(allow(allowed, 'http://localhost:3001')).toBe(false);
    expect(allow(allowed, 'https://example.org')).toBe(false);
  });

  it('composes with requestOrigin: case and default port of the header do not matter', () => {
    const allowed = [parseOriginPattern('https://App.Example.com:443') as string];
    expect(allow(allowed, requestOrigin('HTTPS://APP.EXAMPLE.COM:443', undefined))).toBe(true);
    expect(allow(allowed, requestOrigin(undefined, 'https://app.example.com:443/x'))).toBe(true);
  });
});

describe('keys.verify({ origin })', () => {
  it('checks the origin a non-HTTP caller passes, normalised, and refuses without one', async () => {
    const { keys } = testKeys();
    track(keys);
    const { key, apiKey } = await keys.create({ name: 'k', allowedOrigins: ['https://*.example.com'] });
    expect(apiKey.allowedOrigins).toEqual(['https://*.example.com']);
    expect((await keys.verify(key, { origin: 'https://a.example.com' })).ok).toBe(true);
    expect((await keys.verify(key, { origin: 'HTTPS://A.EXAMPLE.COM:443' })).ok).toBe(true);
    for (const options of [{}, { origin: 'https://example.com' }, { origin: 'null' }, { origin: 'garbage' }, { origin: 'https://a.example.com.evil.com' }]) {
      const result = await keys.verify(key, options);
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.error.code).toBe('origin_not_allowed');
    }
    expect((await keys.get(apiKey.id))?.useCount).toBe(2);
  });

  it('refuses an origin that is not a string as invalid_argument', async () => {
    const { keys } = testKeys();
    track(keys);
    const { key } = await keys.create({ name: 'k' });
    const result = await keys.verify(key, { origin: 7 as never });
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.error.code).toBe('invalid_argument');
  });
});
