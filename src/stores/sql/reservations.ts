/**
 * Leased mode in SqlStore (`reserve`, `settle`), the part both dialects share: what to make of the
 * key's row once the atomic step has locked it, and what to write back. The decision itself is
 * `decideReservation` / `decideSettlement` of `policy/reservation`, called as they are: the SQL
 * side only reads the row and writes the result, so no second copy of the arithmetic exists to
 * drift from the one the contract checks.
 *
 * What the row holds is decoded here and refused when wrong (`invalid_record`), never guessed: a
 * counter or a hold edited by hand into a negative, a fraction or text would let a grant pass that
 * no limit allows, so the step fails closed and writes nothing.
 */
import { invalidArgument } from '../../errors.js';
import type { CounterState } from '../../policy/limits.js';
import { type Hold, type ReserveOutcome, type ReserveRequest, type Settlement, decideReservation, decideSettlement } from '../../policy/reservation.js';
import type { LifecycleRefusal } from '../../policy/status.js';
import { invalidRecord } from '../../record/decode.js';
import { COUNTER_COLUMNS, HOLDS_COLUMN } from './columns.js';

/**
 * The key's row as the atomic step read it, under its lock: `use_count`, every counter column and
 * the holds' column, by column name, numbers as JavaScript numbers (NULL as `null`), the holds as
 * the column's JSON text.
 */
export type LockedRow = Readonly<Record<string, unknown>>;

/** What a reservation found before any limit: the deadline, then the key's lifecycle at `request.now`. */
export interface ReservationChecks {
  /** The wall-clock deadline had passed once the row was locked (`deadline_exceeded`). */
  readonly late: boolean;
  /** `lifecycleRefusal` of the row at `request.now`, or `undefined` for a usable key. */
  readonly lifecycle: LifecycleRefusal | undefined;
}

/** What an admitted reservation or a settlement writes to the key's row, all in the same step. */
export interface HoldsWrite {
  /** The counters after it: `use_count` and every column of `COUNTER_COLUMNS`. */
  readonly next: CounterState;
  /** The holds' column after it (lapsed holds dropped), as JSON text. */
  readonly holds: string;
}

/** The fields of a stored hold, in the order they are written. */
const HOLD_FIELDS = ['until', 'units', 'tokens', 'at'] as const satisfies readonly (keyof Hold)[];

/**
 * Throws `invalid_argument` for a request whose numbers would be stored as something else than
 * themselves (`NaN` and infinities have no JSON, a bigint column takes no `NaN`): checked before
 * the step, so a caller's slip never reaches the row.
 */
export function assertReservable(request: ReserveRequest): void {
  for (const field of ['now', 'units', 'leaseMs'] as const) {
    if (!Number.isFinite(request[field])) throw invalidArgument(field, 'must be a finite number');
  }
}

/**
 * Decides a reservation on the locked row: `deadline_exceeded`, then the lifecycle refusal, each
 * with the stored use count and nothing to write, as a consume reports them; then
 * `decideReservation` on the counters and holds the row holds. `write` is what to store when
 * admitted, `null` when refused (a refusal writes nothing, lapsed holds included).
 */
export function reservationOnRow(id: string, row: LockedRow, checks: ReservationChecks, request: ReserveRequest): { outcome: ReserveOutcome; write: HoldsWrite | null } {
  const refusal = checks.late ? 'deadline_exceeded' : checks.lifecycle;
  if (refusal !== undefined) return { outcome: { admitted: false, refusal, granted: 0, useCount: Number(row.use_count) }, write: null };
  const { outcome, next, holds } = decideReservation(storedCounters(id, row), storedHolds(id, row[HOLDS_COLUMN.name]), request);
  return { outcome, write: next !== null && holds !== null ? { next, holds: holdsText(holds) } : null };
}

/**
 * Decides a settlement on the locked row with `decideSettlement`: what to write, or `null` when the
 * row holds no hold of that lease (settled already, or lapsed and dropped), which changes nothing.
 * A settlement checks no lifecycle: giving units back to a key revoked meanwhile admits nothing.
 */
export function settlementOnRow(id: string, row: LockedRow, settlement: Settlement): HoldsWrite | null {
  const holds = storedHolds(id, row[HOLDS_COLUMN.name]);
  if (!Object.hasOwn(holds, settlement.lease)) return null;
  const decided = decideSettlement(storedCounters(id, row), holds, settlement);
  return decided === null ? null : { next: decided.next, holds: holdsText(decided.holds) };
}

/**
 * The row's counters, as `decideReservation` takes them. Counts and window indexes must be safe
 * integers (counts and `use_count` not negative), `tokens` a finite number or NULL (a full
 * bucket), `tokens_at` a finite number; anything else is `invalid_record`.
 */
function storedCounters(id: string, row: LockedRow): CounterState {
  const useCount = row.use_count;
  if (typeof useCount !== 'number' || !Number.isSafeInteger(useCount) || useCount < 0) throw invalidRecord(id, 'useCount', 'is not a non-negative integer');
  const state = { useCount } as Record<keyof CounterState, number | null>;
  for (const counter of COUNTER_COLUMNS) {
    const value = row[counter.name];
    const refuse = (problem: string) => invalidRecord(id, 'counters', `(column ${counter.name}) ${problem}`);
    if (counter.kind === 'tokens' && value === null) {
      state[counter.field] = null;
      continue;
    }
    if (typeof value !== 'number' || !Number.isFinite(value)) throw refuse('is not a finite number');
    if (counter.kind === 'windowIndex' && !Number.isSafeInteger(value)) throw refuse('is not an integer');
    if (counter.kind === 'windowCount' && !(Number.isSafeInteger(value) && value >= 0)) throw refuse('is not a non-negative integer');
    state[counter.field] = value;
  }
  return state as unknown as CounterState;
}

/**
 * The holds a row holds: its column's JSON text, an object of lease → `{ until, units, tokens,
 * at }` with finite numbers (units and tokens not negative: a negative hold would raise the
 * bucket's cap). Anything else is `invalid_record`, never read as no hold. The result has no
 * prototype, so a lease named `__proto__` stays a lease like any other.
 */
function storedHolds(id: string, text: unknown): Record<string, Hold> {
  const refuse = (problem: string) => invalidRecord(id, 'leaseHolds', `(column ${HOLDS_COLUMN.name}) ${problem}`);
  if (typeof text !== 'string') throw refuse('does not hold JSON text');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw refuse('does not hold valid JSON');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw refuse('does not hold a JSON object');
  const holds = Object.create(null) as Record<string, Hold>;
  for (const [lease, stored] of Object.entries(parsed)) {
    if (stored === null || typeof stored !== 'object' || Array.isArray(stored)) throw refuse('holds a hold that is not an object');
    const hold = {} as Record<keyof Hold, number>;
    for (const field of HOLD_FIELDS) {
      const value: unknown = Object.hasOwn(stored, field) ? (stored as Record<string, unknown>)[field] : undefined;
      if (typeof value !== 'number' || !Number.isFinite(value)) throw refuse(`holds a hold whose ${field} is not a finite number`);
      if ((field === 'units' || field === 'tokens') && value < 0) throw refuse(`holds a hold whose ${field} is negative`);
      hold[field] = value;
    }
    holds[lease] = hold;
  }
  return holds;
}

/**
 * Holds as the column's JSON text: each hold's four numbers, in a fixed order. `JSON.stringify`
 * writes each number as the shortest decimal that reads back as the same double, so the holds
 * read back exactly (see `HOLDS_COLUMN`).
 */
function holdsText(holds: Readonly<Record<string, Hold>>): string {
  const stored: Record<string, Record<string, number>> = Object.create(null) as Record<string, Record<string, number>>;
  for (const lease of Object.keys(holds)) {
    const hold = holds[lease] as Hold;
    stored[lease] = { until: hold.until, units: hold.units, tokens: hold.tokens, at: hold.at };
  }
  return JSON.stringify(stored);
}
