/**
 * Allowed origins of browser keys (publishable keys shipped to a web page). A pure check of the
 * request's `Origin` header (or, without one, its `Referer`) against the key's `allowedOrigins`.
 *
 * This limits honest browsers, not attackers: a browser sets `Origin` itself and a page cannot
 * forge it, so a key copied from one site's page is refused on another site; but any client that
 * is not a browser (curl, a server) sends whatever `Origin` it likes. It keeps a publishable key
 * from being reused by other websites, and it is no substitute for a secret key on a server.
 */
import { ADMIT, type PolicyResult } from './result.js';

const LABELS = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*';
const ORIGIN = new RegExp(`^(https?)://(\\*\\.)?(${LABELS})(?::(\\d{1,5}))?$`);
/** `https://` + a DNS name (at most 253 characters) + a port. */
const MAX_PATTERN_LENGTH = 8 + 253 + 6;
/** One or more whole DNS labels: what a wildcard may stand for. */
const WHOLE_LABELS = new RegExp(`^${LABELS}$`);

/**
 * The canonical form of an allowed-origin pattern (lower case, no default port, no trailing
 * slash), or `null` when it is not `scheme://host[:port]` with `http`/`https` and `*` only as a
 * whole left-most label.
 */
export function parseOriginPattern(pattern: string): string | null {
  if (pattern.length > MAX_PATTERN_LENGTH) return null;
  const match = ORIGIN.exec(pattern.toLowerCase().replace(/\/$/, ''));
  if (!match) return null;
  const [, scheme, wildcard, host, port] = match;
  // "https://*.com" would admit every site under a top-level domain: a wildcard needs a name under it.
  if (wildcard !== undefined && !(host as string).includes('.')) return null;
  // A port as a browser writes it: no leading zeros, none at all for the scheme's default.
  const portNumber = port === undefined ? undefined : Number(port);
  if (portNumber !== undefined && (portNumber < 1 || portNumber > 65_535)) return null;
  const defaultPort = scheme === 'https' ? 443 : 80;
  return `${scheme}://${wildcard ?? ''}${host}${portNumber === undefined || portNumber === defaultPort ? '' : `:${portNumber}`}`;
}

/**
 * The origin a request comes from: its `Origin` header, else (only when there is none) its
 * `Referer`'s origin; `null` when neither says. `Origin: null` is an opaque origin (a sandboxed
 * iframe, a `file:` page, a cross-origin redirect): it is no origin, and the Referer does not
 * stand in for it.
 */
export function requestOrigin(originHeader: string | undefined, refererHeader: string | undefined): string | null {
  if (originHeader === 'null') return null;
  const candidate = originHeader !== undefined ? originHeader : refererHeader;
  if (candidate === undefined) return null;
  try {
    const url = new URL(candidate);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
    return url.origin; // lower-cased host, default port dropped
  } catch {
    return null;
  }
}

function matches(pattern: string, origin: string): boolean {
  const star = pattern.indexOf('://*.');
  if (star < 0) return pattern === origin;
  const scheme = pattern.slice(0, star + 3);
  const suffix = pattern.slice(star + 4); // ".example.com[:port]"
  if (!origin.startsWith(scheme)) return false;
  const rest = origin.slice(scheme.length);
  // One or more whole labels before the suffix: "a.example.com", "a.b.example.com", never
  // "example.com" nor an empty label ("..example.com").
  return rest.endsWith(suffix) && WHOLE_LABELS.test(rest.slice(0, rest.length - suffix.length));
}

/** Refuses a request whose origin is not in `allowed` (an empty list admits any origin, and none). */
export function checkOrigin(allowed: readonly string[], origin: string | null): PolicyResult {
  if (allowed.length === 0) return ADMIT;
  if (origin !== null) for (const pattern of allowed) if (matches(pattern, origin)) return ADMIT;
  return { ok: false, code: 'origin_not_allowed' };
}
