/**
 * Audit entry ids: UUID version 7 (RFC 9562), whose text order is creation order in this process
 * (the millisecond, then a counter within it, "method 1" of RFC 9562 §6.2). Entries are listed
 * by (at, id), and `at` comes from keygate's clock, which may stand still (a test clock, or two
 * writes in one millisecond): the id keeps them in the order they were made. Across processes,
 * ids of one millisecond are ordered by their random part.
 */
import { randomBytes } from 'node:crypto';

let lastMs = -1;
let counter = 0;

/** A new UUIDv7, later in text order than every id this process made before. */
export function auditEntryId(): string {
  let ms = Date.now();
  if (ms <= lastMs) {
    ms = lastMs;
    counter++;
    // 12 bits of counter per millisecond; past them, borrow the next millisecond.
    if (counter > 0xfff) {
      ms = ++lastMs;
      counter = 0;
    }
  } else {
    counter = 0;
  }
  lastMs = ms;
  const bytes = randomBytes(16);
  bytes.writeUIntBE(ms, 0, 6);
  bytes[6] = 0x70 | (counter >> 8);
  bytes[7] = counter & 0xff;
  bytes[8] = 0x80 | ((bytes[8] as number) & 0x3f);
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
