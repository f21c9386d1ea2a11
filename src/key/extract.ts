/**
 * Finding the credential in a request: `Authorization: Bearer`, `X-API-Key`, and a query parameter
 * only when configured. Two different credentials are ambiguous; the same one twice is fine; an
 * empty one counts as absent.
 */

/** Where keys may be presented. */
export interface CredentialSources {
  /** Read `Authorization: Bearer <key>`. */
  bearer: boolean;
  /** Header name to read (lower-case), or `null` for none. */
  header: string | null;
  /** Query parameter to read, or `null` for none. */
  query: string | null;
}

/** The outcome of extraction. */
export type Extraction =
  | { kind: 'none' }
  | { kind: 'key'; key: string }
  | { kind: 'ambiguous' };

const NONE: Extraction = Object.freeze({ kind: 'none' });
const AMBIGUOUS: Extraction = Object.freeze({ kind: 'ambiguous' });
const BEARER = /^bearer(?:[ \t]+|$)/i;

/** The credential of an `Authorization` header value, `''` when it is not a Bearer credential. */
function bearerToken(value: string): string {
  const match = BEARER.exec(value);
  return match ? value.slice(match[0].length).trim() : '';
}

/** Adds the non-empty, comma-separated parts of a header value (keys never contain commas). */
function addHeaderValues(value: string, out: string[]): void {
  for (const part of value.split(',')) {
    const candidate = part.trim();
    if (candidate !== '') out.push(candidate);
  }
}

/** Adds a query value; a non-string (`?key[a]=b`) is not a key, but not "no key" either. */
function addQueryValue(value: unknown, out: string[]): void {
  if (Array.isArray(value)) {
    for (const item of value) addQueryValue(item, out);
  } else if (typeof value === 'string') {
    const candidate = value.trim();
    if (candidate !== '') out.push(candidate);
  } else if (value !== undefined && value !== null) {
    out.push('\u0000');
  }
}

/**
 * Extracts the one credential of a request. Reads the raw header list rather than Node's parsed
 * headers, because Node keeps only the first of repeated `Authorization` headers and a second,
 * different key must be refused as ambiguous, not silently ignored.
 *
 * @param rawHeaders - `req.rawHeaders`: names and values, alternating, as received
 * @param query - the parsed query object, only read when `sources.query` is set
 */
export function extractCredential(rawHeaders: readonly string[], query: unknown, sources: CredentialSources): Extraction {
  const found: string[] = [];
  const header = sources.header;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    if (sources.bearer && name.length === 13 && name.toLowerCase() === 'authorization') {
      const token = bearerToken(rawHeaders[i + 1] as string);
      if (token !== '') found.push(token);
    } else if (header !== null && name.length === header.length && name.toLowerCase() === header) {
      addHeaderValues(rawHeaders[i + 1] as string, found);
    }
  }
  if (sources.query && query && typeof query === 'object') {
    addQueryValue((query as Record<string, unknown>)[sources.query], found);
  }
  if (found.length === 0) return NONE;
  const first = found[0] as string;
  for (let i = 1; i < found.length; i++) if (found[i] !== first) return AMBIGUOUS;
  return { kind: 'key', key: first };
}
