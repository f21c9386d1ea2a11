/**
 * Page cursors: the keyset position of the last item of a page, `(instant, id)`, as base64url JSON.
 * Opaque to callers; decoded only into what `list()` and `auditLog()` themselves write.
 */
import { invalidArgument } from '../errors.js';

/** The cursor after an item at `instant` with `id`. */
export function encodeCursor(instant: Date, id: string): string {
  return Buffer.from(JSON.stringify([instant.getTime(), id]), 'utf8').toString('base64url');
}

/** The position a cursor names; `invalid_argument` (field `cursor`) for anything else. */
export function decodeCursor(cursor: string, issuer: string): { at: Date; id: string } {
  try {
    const decoded: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(decoded) && decoded.length === 2 && Number.isSafeInteger(decoded[0]) && typeof decoded[1] === 'string') {
      const at = new Date(decoded[0] as number);
      // Only what a page itself writes: an instant a Date holds, and an id a record could have.
      if (!Number.isNaN(at.getTime()) && decoded[1].length > 0 && decoded[1].length <= 128 && !decoded[1].includes('\u0000') && !/\p{Cs}/u.test(decoded[1])) {
        return { at, id: decoded[1] };
      }
    }
  } catch {
    // fall through to the argument error
  }
  throw invalidArgument('cursor', `is not a cursor returned by ${issuer}`);
}
