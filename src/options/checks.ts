/**
 * Checks for constructor and factory options, shared by `keygate()`, `authenticate()` and every
 * store. A wrong option is the developer's mistake, found once at start-up: each check throws a
 * `TypeError` that names the function, the option and what it accepts.
 */

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j] as number;
      const cost = a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1;
      row[j] = Math.min(above + 1, (row[j - 1] as number) + 1, diagonal + cost);
      diagonal = above;
    }
  }
  return row[b.length] as number;
}

/**
 * Throws a TypeError naming the first option not in `known`, with the closest known one when it is
 * likely a typo.
 *
 * @example
 * ```ts
 * rejectUnknownOptions(options, ['client', 'keyPrefix'], 'new MyStore()');
 * // TypeError: new MyStore(): unsupported option `clinet`, did you mean `client`?
 * ```
 */
export function rejectUnknownOptions(options: object, known: readonly string[], where: string): void {
  for (const name of Object.keys(options)) {
    if (known.includes(name)) continue;
    const closest = known
      .map((candidate) => ({ candidate, d: distance(name, candidate) }))
      .sort((a, b) => a.d - b.d)[0];
    const hint = closest && closest.d <= Math.max(2, Math.floor(name.length / 3)) ? `, did you mean \`${closest.candidate}\`?` : '';
    throw new TypeError(`${where}: unsupported option \`${name}\`${hint}`);
  }
}

/** An integer from `min` to `max`, or a TypeError naming the option (e.g. "keygate(): `bcryptCost`"). */
export function integerOption(value: unknown, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new TypeError(`${name} must be an integer from ${min} to ${max}`);
  }
  return value;
}

/** The result of {@link checkStringList}: the cleaned list, or the first problem and where it is. */
export type StringListCheck = { ok: true; list: string[] } | { ok: false; index?: number; problem: string };

/** Entries a list option or field may hold. */
export const MAX_LIST_ENTRIES = 1_000;

/**
 * Checks a list of strings without throwing, so that a construction option (a `TypeError`) and a
 * manager argument (`invalid_argument`) share one check and each throws its own kind of error.
 * Duplicates are dropped, order kept.
 */
export function checkStringList(value: unknown, accepts: (entry: string) => boolean, what: string): StringListCheck {
  if (!Array.isArray(value)) return { ok: false, problem: 'must be an array of strings' };
  if (value.length > MAX_LIST_ENTRIES) return { ok: false, problem: `must have at most ${MAX_LIST_ENTRIES} entries` };
  const list: string[] = [];
  for (let index = 0; index < value.length; index++) {
    const entry: unknown = value[index];
    if (typeof entry !== 'string' || !accepts(entry)) return { ok: false, index, problem: `must be ${what}` };
    if (!list.includes(entry)) list.push(entry);
  }
  return { ok: true, list };
}

/** A list option of a constructor or factory: the cleaned list, or a TypeError naming the entry (`authenticate(): scopes[1] must be …`). */
export function stringListOption(value: unknown, name: string, accepts: (entry: string) => boolean, what: string): string[] {
  const checked = checkStringList(value, accepts, what);
  if (checked.ok) return checked.list;
  throw new TypeError(`${name}${checked.index === undefined ? '' : `[${checked.index}]`} ${checked.problem}`);
}
