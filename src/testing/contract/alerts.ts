/**
 * Contract feature: alert claims (`claimAlert`), an optional capability: "send this alert once"
 * across every process sharing the store.
 *
 * - `claimAlert({ name, expiresAt, now })` resolves `true` when no live claim of that name exists
 *   and records this one until `expiresAt`; `false` while one is live (its `expiresAt` later than
 *   the caller's `now`), and then changes nothing (the live claim keeps its own `expiresAt`).
 * - A claim lapses at its `expiresAt`, on the caller's clock: the name can be claimed again from
 *   that instant, not a millisecond before, and the new claim holds until its own `expiresAt`.
 * - Of concurrent claims of one name, exactly one is `true`.
 * - Names are exact strings of up to 512 characters of any printable unicode: names differing in
 *   case, normalization, a trailing space or one character are claimed independently, and a name
 *   is never a pattern.
 *
 * The tests run when the store declares `capabilities: { alerts: true }` and are reported as
 * skipped otherwise.
 */
import { randomUUID } from 'node:crypto';
import type { AlertClaim, ApiKeyStore } from '../../stores/store.js';
import { type ContractSuite, NOON, SECOND } from './shared.js';

/** The store's `claimAlert` (the capability check guards the declaration; this names what is missing). */
function claimOf(store: ApiKeyStore): (claim: AlertClaim) => Promise<boolean> {
  if (!store.claimAlert) throw new Error('capabilities.alerts is declared, but the store has no claimAlert() method');
  return store.claimAlert.bind(store);
}

/** One minute, in milliseconds. */
const MINUTE = 60 * SECOND;
/** One hour, in milliseconds. */
const HOUR = 60 * MINUTE;

/** A claim of `name` made at `now`, lasting `lastsMs`. */
function claimAt(name: string, now: number, lastsMs = HOUR): AlertClaim {
  return { name, now: new Date(now), expiresAt: new Date(now + lastsMs) };
}

/** A name as keygate makes them: what, for which key, which window, which threshold. */
function alertName(kind = 'quota'): string {
  return `${kind}:${randomUUID()}:20161:0.75`;
}

/**
 * Names that differ from one another in one way each (case, Unicode normalization, compatibility
 * forms, whitespace, a character more or less), and names a store might take for a pattern, a path
 * or a property. Each must be a claim of its own.
 */
function distinctNames(base: string): string[] {
  return [
    base,
    base.toUpperCase(),
    `${base} `,
    ` ${base}`,
    `${base}0`,
    base.slice(0, -1),
    `${base}:`,
    `${base}\u00a0`,
    // "café" composed (NFC) and decomposed (NFD): equal to a person, different strings.
    'café',
    'cafe\u0301',
    'ﬁle',
    'file',
    'Straße',
    'STRASSE',
    '%',
    '_',
    '*',
    '?',
    '[a]',
    '.*',
    'a.b',
    'a/b',
    '$',
    '$.a',
    '__proto__',
    'constructor',
    'hasOwnProperty',
    "'; DROP TABLE alerts; --",
    '{"name":1}',
    'ключ 🔑 鍵 مفتاح',
  ];
}

/** A name of exactly `length` UTF-16 code units (so at most that many code points) of multi-byte characters and emoji, ending in `last`. */
function longName(length: number, last: string): string {
  const chars = Array.from('Alerte ünïcödé 警报 🔔 مفتاح — ');
  const room = length - last.length;
  let name = '';
  // Whole code points only, then ASCII padding, so no surrogate pair is split at the end.
  for (let i = 0; ; i++) {
    const char = chars[i % chars.length] ?? 'x';
    if (name.length + char.length > room) break;
    name += char;
  }
  return name.padEnd(room, 'x') + last;
}

/** Whether `text` has no lone surrogate (a store may rightly refuse one: it is not printable unicode). */
function isWellFormed(text: string): boolean {
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);
}

/** Registers the alert claim tests, skipped unless the store declares the capability. */
export function alertsContract(suite: ContractSuite): void {
  const { describe, testWhen, expect } = suite;
  const test = (title: string, body: (store: ApiKeyStore) => Promise<void>) => testWhen('alerts', title, body);

  describe('alert claims (capability: alerts)', () => {
    test('the first claim of a name is true; every other while it is live is false', async (store) => {
      const claim = claimOf(store);
      const name = alertName();
      expect(await claim(claimAt(name, NOON))).toBe(true);
      expect(await claim(claimAt(name, NOON))).toBe(false);
      expect(await claim(claimAt(name, NOON + MINUTE, 30 * 24 * HOUR))).toBe(false);
      expect(await claim(claimAt(name, NOON + HOUR - 1, 1))).toBe(false);
    });

    test('a claim lapses at its expiresAt on the caller clock: free at that instant, not a millisecond before', async (store) => {
      const claim = claimOf(store);
      const name = alertName();
      expect(await claim(claimAt(name, NOON, MINUTE))).toBe(true);
      expect(await claim(claimAt(name, NOON + MINUTE - 1, MINUTE))).toBe(false);
      expect(await claim(claimAt(name, NOON + MINUTE, MINUTE))).toBe(true);
    });

    test('a refused claim changes nothing: the live claim keeps its own expiresAt', async (store) => {
      const claim = claimOf(store);
      const name = alertName();
      expect(await claim(claimAt(name, NOON, HOUR))).toBe(true);
      // A refused claim lasting longer does not extend the live one...
      expect(await claim(claimAt(name, NOON + SECOND, 10 * HOUR))).toBe(false);
      // ...and one lasting shorter does not cut it short.
      expect(await claim(claimAt(name, NOON + 2 * SECOND, SECOND))).toBe(false);
      expect(await claim(claimAt(name, NOON + 3 * SECOND + 1, MINUTE))).toBe(false);
      expect(await claim(claimAt(name, NOON + HOUR - 1, MINUTE))).toBe(false);
      expect(await claim(claimAt(name, NOON + HOUR, MINUTE))).toBe(true);
    });

    test('a lapsed claim, claimed again, holds until its new expiresAt, for callers whose clocks lag too', async (store) => {
      const claim = claimOf(store);
      const name = alertName();
      expect(await claim(claimAt(name, NOON, MINUTE))).toBe(true);
      expect(await claim(claimAt(name, NOON + 2 * MINUTE, 3 * MINUTE))).toBe(true);
      // A caller whose clock lags sees the new claim live (it expires at NOON + 5 min).
      expect(await claim(claimAt(name, NOON + 30 * SECOND, MINUTE))).toBe(false);
      expect(await claim(claimAt(name, NOON + 5 * MINUTE - 1, MINUTE))).toBe(false);
      expect(await claim(claimAt(name, NOON + 5 * MINUTE, MINUTE))).toBe(true);
      // Claimed again and again, window after window: one true per window.
      const windows = Array.from({ length: 5 }, (_, i) => NOON + 10 * MINUTE + i * HOUR);
      for (const start of windows) {
        expect({ start, first: await claim(claimAt(name, start, HOUR)), again: await claim(claimAt(name, start + HOUR - 1, HOUR)) }).toEqual({
          start,
          first: true,
          again: false,
        });
      }
    });

    test('of 50 concurrent claims of one name, exactly one is true, also when the name had lapsed', async (store) => {
      const claim = claimOf(store);
      for (let round = 0; round < 4; round++) {
        const name = alertName('error_rate');
        // Callers with slightly different clocks and expiries, as from different processes.
        const fresh = await Promise.all(Array.from({ length: 50 }, (_, i) => claim(claimAt(name, NOON + i, MINUTE + i))));
        expect({ round, wins: fresh.filter(Boolean).length }).toEqual({ round, wins: 1 });
        // Every one of those claims lapsed by NOON + 2 min: again exactly one wins.
        const lapsed = await Promise.all(Array.from({ length: 50 }, (_, i) => claim(claimAt(name, NOON + 2 * MINUTE + i, MINUTE))));
        expect({ round, wins: lapsed.filter(Boolean).length }).toEqual({ round, wins: 1 });
      }
    });

    test('names are exact strings: names that differ in any way are claimed independently, never as patterns', async (store) => {
      const claim = claimOf(store);
      const names = distinctNames(alertName());
      expect(new Set(names).size).toBe(names.length);
      // All at once: one true each, whatever the others do.
      expect(await Promise.all(names.map((name) => claim(claimAt(name, NOON, MINUTE))))).toEqual(names.map(() => true));
      for (const name of names) expect({ name, again: await claim(claimAt(name, NOON + 1, MINUTE)) }).toEqual({ name, again: false });

      // Each lapses on its own: the first lapses, the one it is a prefix of (claimed longer) does not.
      const short = alertName();
      const longer = `${short}:100%`;
      expect(await claim(claimAt(short, NOON, MINUTE))).toBe(true);
      expect(await claim(claimAt(longer, NOON, HOUR))).toBe(true);
      expect(await claim(claimAt(short, NOON + MINUTE, MINUTE))).toBe(true);
      expect(await claim(claimAt(longer, NOON + MINUTE, MINUTE))).toBe(false);
    });

    test('keeps long unicode names whole: 512 characters, differing only in the last', async (store) => {
      const claim = claimOf(store);
      const names = [longName(512, 'a'), longName(512, 'b'), longName(512, '🔔'), longName(512, '🔕'), longName(511, 'a'), '🔔'.repeat(256), '鍵'.repeat(512)];
      for (const name of names) expect({ length: name.length <= 512, wellFormed: isWellFormed(name) }).toEqual({ length: true, wellFormed: true });
      expect(new Set(names).size).toBe(names.length);
      for (const name of names) expect({ name, first: await claim(claimAt(name, NOON, HOUR)) }).toEqual({ name, first: true });
      for (const name of names) expect({ name, again: await claim(claimAt(name, NOON + MINUTE, HOUR)) }).toEqual({ name, again: false });
      for (const name of names) expect({ name, lapsed: await claim(claimAt(name, NOON + HOUR, HOUR)) }).toEqual({ name, lapsed: true });
    });
  });
}
