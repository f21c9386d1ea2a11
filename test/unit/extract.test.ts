import { extractCredential, type CredentialSources, type Extraction } from '../../src/key/extract';

const DEFAULT: CredentialSources = { bearer: true, header: 'x-api-key', query: null };
const WITH_QUERY: CredentialSources = { bearer: true, header: 'x-api-key', query: 'api_key' };

const K1 = 'kg_0123456789AB_abcdefghijklmnopqrstuvwxyzA000000';
const K2 = 'kg_0123456789AC_abcdefghijklmnopqrstuvwxyzA000000';

const key = (k: string): Extraction => ({ kind: 'key', key: k });
const NONE: Extraction = { kind: 'none' };
const AMBIGUOUS: Extraction = { kind: 'ambiguous' };

/** rawHeaders from name/value pairs, as Node gives them. */
function raw(...pairs: [string, string][]): string[] {
  return pairs.flat();
}

describe('extractCredential: Authorization Bearer', () => {
  it.each([
    ['Bearer', `Bearer ${K1}`],
    ['bearer (lower case)', `bearer ${K1}`],
    ['BEARER (upper case)', `BEARER ${K1}`],
    ['bEaReR (mixed case)', `bEaReR ${K1}`],
    ['several spaces', `Bearer    ${K1}`],
    ['a tab', `Bearer\t${K1}`],
    ['trailing whitespace', `Bearer ${K1}  `],
  ])('reads the key after the scheme: %s', (_what, value) => {
    expect(extractCredential(raw(['Authorization', value]), undefined, DEFAULT)).toEqual(key(K1));
  });

  it('matches the header name case-insensitively', () => {
    expect(extractCredential(raw(['authorization', `Bearer ${K1}`]), undefined, DEFAULT)).toEqual(key(K1));
    expect(extractCredential(raw(['AUTHORIZATION', `Bearer ${K1}`]), undefined, DEFAULT)).toEqual(key(K1));
  });

  it.each([
    ['Basic credentials', 'Basic dXNlcjpwYXNz'],
    ['a Digest challenge response', 'Digest username="u", realm="r"'],
    ['a scheme that merely starts with Bearer', `BearerX ${K1}`],
    ['a key with no scheme', K1],
    ['a Token scheme', `Token ${K1}`],
  ])('ignores a non-Bearer Authorization header: %s', (_what, value) => {
    expect(extractCredential(raw(['Authorization', value]), undefined, DEFAULT)).toEqual(NONE);
  });

  it('ignores Basic Authorization and still reads X-API-Key', () => {
    expect(extractCredential(raw(['Authorization', 'Basic dXNlcjpwYXNz'], ['X-API-Key', K1]), undefined, DEFAULT)).toEqual(key(K1));
  });

  it.each(['Bearer', 'Bearer ', 'Bearer    ', 'bearer\t', ''])('counts an empty Bearer credential (%j) as absent', (value) => {
    expect(extractCredential(raw(['Authorization', value]), undefined, DEFAULT)).toEqual(NONE);
  });

  it('does not read Authorization when bearer is turned off', () => {
    const sources: CredentialSources = { bearer: false, header: 'x-api-key', query: null };
    expect(extractCredential(raw(['Authorization', `Bearer ${K1}`]), undefined, sources)).toEqual(NONE);
    expect(extractCredential(raw(['Authorization', `Bearer ${K2}`], ['X-API-Key', K1]), undefined, sources)).toEqual(key(K1));
  });

  it('does not silently pick the first key out of a comma-joined Authorization value', () => {
    const found = extractCredential(raw(['Authorization', `Bearer ${K1}, Bearer ${K2}`]), undefined, DEFAULT);
    expect(found).not.toEqual(key(K1));
    expect(found).not.toEqual(key(K2));
  });
});

describe('extractCredential: X-API-Key', () => {
  it.each(['X-API-Key', 'x-api-key', 'X-Api-Key', 'X-API-KEY'])('reads the %s header', (name) => {
    expect(extractCredential(raw([name, K1]), undefined, DEFAULT)).toEqual(key(K1));
  });

  it('trims surrounding whitespace', () => {
    expect(extractCredential(raw(['X-API-Key', `  ${K1}\t`]), undefined, DEFAULT)).toEqual(key(K1));
  });

  it.each(['', ' ', '\t', ',', ' , '])('counts an empty value (%j) as absent', (value) => {
    expect(extractCredential(raw(['X-API-Key', value]), undefined, DEFAULT)).toEqual(NONE);
  });

  it('reads a configured header name instead, and not X-API-Key then', () => {
    const sources: CredentialSources = { bearer: true, header: 'x-custom-key', query: null };
    expect(extractCredential(raw(['X-Custom-Key', K1]), undefined, sources)).toEqual(key(K1));
    expect(extractCredential(raw(['X-API-Key', K1]), undefined, sources)).toEqual(NONE);
  });

  it('reads no header at all when header is null', () => {
    const sources: CredentialSources = { bearer: true, header: null, query: null };
    expect(extractCredential(raw(['X-API-Key', K1]), undefined, sources)).toEqual(NONE);
  });

  it('ignores unrelated headers whose names have the same length', () => {
    expect(extractCredential(raw(['X-API-Kez', K1], ['Authorizatioo', `Bearer ${K2}`]), undefined, DEFAULT)).toEqual(NONE);
  });
});

describe('extractCredential: query parameter', () => {
  it('reads the query only when configured', () => {
    expect(extractCredential([], { api_key: K1 }, DEFAULT)).toEqual(NONE);
    expect(extractCredential([], { api_key: K1 }, WITH_QUERY)).toEqual(key(K1));
  });

  it('reads only the configured parameter name', () => {
    expect(extractCredential([], { key: K1, apikey: K1 }, WITH_QUERY)).toEqual(NONE);
  });

  it.each([undefined, null, 'api_key=x', 42])('treats a missing or non-object query (%p) as no credential', (query) => {
    expect(extractCredential([], query, WITH_QUERY)).toEqual(NONE);
  });

  it.each([[''], ['   '], [['', ' ']], [[]]])('counts an empty query value (%j) as absent', (value) => {
    expect(extractCredential([], { api_key: value }, WITH_QUERY)).toEqual(NONE);
  });

  it('accepts the same key repeated in a query array', () => {
    expect(extractCredential([], { api_key: [K1, K1] }, WITH_QUERY)).toEqual(key(K1));
  });

  it('refuses two different keys in a query array as ambiguous', () => {
    expect(extractCredential([], { api_key: [K1, K2] }, WITH_QUERY)).toEqual(AMBIGUOUS);
  });

  it('does not treat an object-valued parameter (?api_key[a]=b) as absent, nor as a usable key', () => {
    const found = extractCredential([], { api_key: { a: K1 } }, WITH_QUERY);
    expect(found.kind).not.toBe('none');
    expect(found).not.toEqual(key(K1));
  });

  it('makes an object-valued parameter next to a header key ambiguous', () => {
    expect(extractCredential(raw(['X-API-Key', K1]), { api_key: { a: K1 } }, WITH_QUERY)).toEqual(AMBIGUOUS);
  });
});

describe('extractCredential: several credentials', () => {
  it('returns none for a request with no credential at all', () => {
    expect(extractCredential(raw(['Host', 'example.com'], ['Accept', '*/*']), {}, WITH_QUERY)).toEqual(NONE);
  });

  it('accepts the same key given in every place', () => {
    expect(
      extractCredential(raw(['Authorization', `Bearer ${K1}`], ['X-API-Key', K1]), { api_key: K1 }, WITH_QUERY),
    ).toEqual(key(K1));
  });

  it.each([
    ['Bearer and X-API-Key', raw(['Authorization', `Bearer ${K1}`], ['X-API-Key', K2]), undefined],
    ['Bearer and query', raw(['Authorization', `Bearer ${K1}`]), { api_key: K2 }],
    ['X-API-Key and query', raw(['X-API-Key', K1]), { api_key: K2 }],
    ['two Authorization headers', raw(['Authorization', `Bearer ${K1}`], ['Authorization', `Bearer ${K2}`]), undefined],
    ['two X-API-Key headers', raw(['X-API-Key', K1], ['X-API-Key', K2]), undefined],
    ['a comma-joined X-API-Key', raw(['X-API-Key', `${K1}, ${K2}`]), undefined],
    ['two garbage values', raw(['Authorization', 'Bearer garbage'], ['X-API-Key', 'other-garbage']), undefined],
    ['a valid key and garbage', raw(['Authorization', `Bearer ${K1}`], ['X-API-Key', 'x']), undefined],
    ['keys differing only in case', raw(['Authorization', `Bearer ${K1}`], ['X-API-Key', K1.toUpperCase()]), undefined],
  ])('refuses two different credentials as ambiguous: %s', (_what, headers, query) => {
    expect(extractCredential(headers, query, WITH_QUERY)).toEqual(AMBIGUOUS);
  });

  it.each([
    ['two identical Authorization headers', raw(['Authorization', `Bearer ${K1}`], ['authorization', `bearer ${K1}`])],
    ['two identical X-API-Key headers', raw(['X-API-Key', K1], ['x-api-key', K1])],
    ['a comma-joined repeat of the same key', raw(['X-API-Key', `${K1}, ${K1}`])],
    ['the same key with different surrounding whitespace', raw(['X-API-Key', ` ${K1}`], ['Authorization', `Bearer ${K1} `])],
  ])('accepts the same key twice: %s', (_what, headers) => {
    expect(extractCredential(headers, undefined, DEFAULT)).toEqual(key(K1));
  });

  it('ignores an empty credential next to a real one', () => {
    expect(extractCredential(raw(['Authorization', 'Bearer '], ['X-API-Key', K1]), undefined, DEFAULT)).toEqual(key(K1));
    expect(extractCredential(raw(['Authorization', `Bearer ${K1}`], ['X-API-Key', '']), { api_key: '' }, WITH_QUERY)).toEqual(key(K1));
  });

  it('ignores a dangling header name with no value in a malformed rawHeaders list', () => {
    expect(extractCredential(['X-API-Key', K1, 'X-API-Key'], undefined, DEFAULT)).toEqual(key(K1));
  });
});
