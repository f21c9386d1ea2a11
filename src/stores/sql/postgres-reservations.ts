/**
 * The PostgreSQL statements of leased mode (`reserve`, `settle`): unlike every other operation,
 * not one statement but two, a locking read and a guarded write, with the decision made between
 * them in TypeScript (`reservations.ts`). Reservations are rare (one per lease, not per request),
 * so the extra round trips cost little, and the limit arithmetic stays in one place.
 *
 * `PostgresEngine` runs them in one transaction on a connection of its own when the client is a
 * Pool; the write's guard (the row version the read saw) makes them safe on a single connection
 * too, where no transaction can be held (see `PostgresEngine.reserve`).
 */
import { COUNTER_COLUMNS, HOLDS_COLUMN } from './columns.js';
import type { HoldsWrite } from './reservations.js';
import type { TableName } from './table-name.js';
import { timestamptzLiteral } from './values.js';

function quoted(name: string): string {
  return `"${name}"`;
}

/** The wall clock as epoch milliseconds (float8), as the consume statement reads it. */
const CLOCK = '(extract(epoch FROM clock_timestamp()) * 1000)::float8';

/**
 * A float8 column, exactly, whatever the session's `extra_float_digits`: its 8 IEEE bytes in hex
 * (`float8send`), which `doubleFromHex` turns back into the same double. Its text form would be
 * rounded to 15 digits in a session that lowered `extra_float_digits`, and a state read inexactly
 * would be written back inexactly.
 */
function exactFloat(column: string): string {
  return `encode(float8send(${quoted(column)}), 'hex') AS ${quoted(column)}`;
}

/**
 * Locks the key's row and reads what a reservation or a settlement decides on. Parameters: `$1`
 * id, `$2` the caller's now as a timestamptz (NULL for a settlement, which checks no lifecycle),
 * `$3` the wall-clock deadline in epoch ms (NULL: none).
 *
 * - `locked` takes the row `FOR UPDATE`: reservations and consumes of the key queue on the row
 *   lock, and this one reads the row as the previous one (or a revocation made meanwhile) left it.
 *   It reads the status, whether `revoked_at` and `expires_at` are at or before now (compared in
 *   SQL, on the stored timestamptz, so an `infinity` set by hand compares as it should), and the
 *   counters and holds, every value as text (float8 as its bytes: {@link exactFloat}), so that pg's
 *   type parsers, which an application may have changed, play no part. And the row version
 *   (`xmin`, `ctid`) that the write is guarded by.
 * - The outer SELECT reads `clock_timestamp()` once the lock is held (in `locked`'s own select
 *   list it would be the time before the wait: see the consume statement), and says whether the
 *   deadline had passed by then (`late`), comparing float8 with float8 as the consume does.
 *
 * No row: the id is unknown.
 */
export function lockStatement(table: TableName): string {
  const counters = COUNTER_COLUMNS.map((counter) => (counter.kind === 'tokens' || counter.kind === 'tokensAt' ? exactFloat(counter.name) : `${quoted(counter.name)}::text`));
  return `WITH "locked" AS MATERIALIZED (
  SELECT "status", (("revoked_at" <= $2::timestamptz) IS TRUE)::text AS "revoked", (("expires_at" <= $2::timestamptz) IS TRUE)::text AS "expired",
    "use_count"::text AS "use_count", ${counters.join(', ')}, ${quoted(HOLDS_COLUMN.name)}::text AS ${quoted(HOLDS_COLUMN.name)},
    "xmin"::text AS "xmin", "ctid"::text AS "ctid"
  FROM ${table.qualified} WHERE "id" = $1::text FOR UPDATE
)
SELECT "locked".*, ($3::float8 IS NOT NULL AND ${CLOCK} > $3::float8)::text AS "late" FROM "locked"`;
}

/** The number of the write statement's first counter parameter: after id, xmin, ctid, deadline and last_used_at. */
const FIRST_COUNTER = 6;

/**
 * Writes what a reservation or a settlement decided: `use_count`, every counter, the holds and,
 * for a reservation, `last_used_at`, in one UPDATE. Parameters ({@link writeParameters}): `$1` id,
 * `$2` and `$3` the row version the lock statement read (`xmin`, `ctid`), `$4` the deadline (epoch
 * ms, NULL: none), `$5` `last_used_at` (NULL: leave it), then `use_count` and each column of
 * `COUNTER_COLUMNS` in order, then the holds (JSON text).
 *
 * The guard: the row is written only while it is the version that was read, and only while the
 * deadline has not passed. Inside the transaction that locked the row both hold (nothing else can
 * write the row, and the deadline was just checked), unless the deadline passed between the two
 * round trips; on a single connection, without a held lock, a consume or another reservation may
 * have written the row meanwhile. Either way no row comes back, nothing is written, and the engine
 * reads the row again: the fresh read refuses `deadline_exceeded`, or decides on the new state.
 * Returns the id when written.
 */
export function writeStatement(table: TableName): string {
  const assignments = [`"use_count" = $${FIRST_COUNTER}::bigint`];
  COUNTER_COLUMNS.forEach((counter, i) => {
    const type = counter.kind === 'tokens' || counter.kind === 'tokensAt' ? 'float8' : 'bigint';
    assignments.push(`${quoted(counter.name)} = $${FIRST_COUNTER + 1 + i}::${type}`);
  });
  const holds = `$${FIRST_COUNTER + 1 + COUNTER_COLUMNS.length}::jsonb`;
  return `UPDATE ${table.qualified} SET ${assignments.join(', ')},
  "last_used_at" = coalesce($5::timestamptz, "last_used_at"), ${quoted(HOLDS_COLUMN.name)} = ${holds}
WHERE "id" = $1::text AND "xmin" = $2::xid AND "ctid" = $3::tid AND ($4::float8 IS NULL OR ${CLOCK} <= $4::float8)
RETURNING "id"`;
}

/** The row version the lock statement read, which guards the write. */
export interface RowVersion {
  readonly xmin: string;
  readonly ctid: string;
}

/**
 * The parameters of {@link writeStatement}: the id, the row version read, the deadline (NULL:
 * none), `last_used_at` (a reservation's `now`; NULL for a settlement, which leaves it), then the
 * counters and the holds of `write`.
 */
export function writeParameters(id: string, version: RowVersion, deadline: number | undefined, lastUsedAt: number | null, write: HoldsWrite): unknown[] {
  const { next, holds } = write;
  return [
    id,
    version.xmin,
    version.ctid,
    deadline ?? null,
    lastUsedAt === null ? null : timestamptzLiteral(new Date(lastUsedAt)),
    next.useCount,
    ...COUNTER_COLUMNS.map((counter) => next[counter.field]),
    holds,
  ];
}

/** A float8 from the hex of its 8 bytes (`float8send`), or `null` for NULL. */
export function doubleFromHex(hex: unknown): number | null {
  if (hex === null || hex === undefined) return null;
  if (typeof hex !== 'string' || !/^[0-9a-f]{16}$/.test(hex)) return Number.NaN;
  return Buffer.from(hex, 'hex').readDoubleBE(0);
}
