/**
 * The PostgreSQL statements, as text with `$n` placeholders. The table name (validated and quoted)
 * is the only thing spliced in; every value travels as a parameter with an explicit cast.
 *
 * Every operation is ONE statement, so each is atomic on its own (an implicit transaction) and the
 * store works the same on a `Pool`, a `Client` or a `PoolClient`: no connection is ever held across
 * round trips, and nothing can interleave with a half-done operation.
 */
import { bucketCapacity } from '../../policy/limits.js';
import { QUOTA_WINDOWS, type QuotaWindow } from '../../policy/windows.js';
import { ownValue } from '../../record/decode.js';
import { CREATE_FIELDS } from '../../record/schema.js';
import type { ConsumeRequest, StoreRotation } from '../store.js';
import {
  COLUMN_LIST,
  COUNTER_COLUMNS,
  COUNTER_LIST,
  type Column,
  type CounterColumn,
  DELETED_AT_COLUMN,
  LEASES_COLUMN,
  RECORD_COLUMNS,
  columnOf,
} from './columns.js';
import { companionName } from './companions.js';
import { parameterOf } from './parameters.js';
import type { TableName } from './table-name.js';
import { timestamptzLiteral } from './values.js';

/** The SQL type each column kind is bound as. */
const PARAMETER_CASTS: Record<Column['kind'], string> = {
  text: 'text',
  optionalText: 'text',
  status: 'text',
  list: 'text[]',
  json: 'jsonb',
  rateLimit: 'jsonb',
  alerts: 'jsonb',
  count: 'bigint',
  nullableCount: 'bigint',
  instant: 'timestamptz',
  nullableInstant: 'timestamptz',
  boolean: 'boolean',
};

function quoted(name: string): string {
  return `"${name}"`;
}

/**
 * The status half of `lifecycleRefusal`'s `api_key_revoked`: any status but `active` and
 * `suspended`, including NULL and whatever was written by hand (the allow-list).
 */
const UNUSABLE_STATUS = `NOT coalesce("status" IN ('active', 'suspended'), false)`;

/** `lifecycleRefusal(…) === 'api_key_revoked'` at the instant `at` (SQL): the row can no longer come back. */
function revokedBy(at: string): string {
  return `("revoked_at" <= ${at} OR ${UNUSABLE_STATUS}) IS TRUE`;
}

/** The toolkit's `isRetired` (SQL): revoked by status, or `revoked_at` set at all (rotated already). */
const RETIRED = `("revoked_at" IS NOT NULL OR ${UNUSABLE_STATUS})`;

/** The toolkit's `remainingUses` of the row `qualifier` (SQL): NULL for unlimited, never below 0. */
function remainingUses(qualifier: string): string {
  return `CASE WHEN ${qualifier}"max_uses" IS NULL THEN NULL ELSE greatest(0, ${qualifier}"max_uses" - ${qualifier}"use_count") END`;
}

/**
 * Epoch milliseconds of a timestamptz, exact on every PostgreSQL version: whole seconds (exact even
 * where `extract` returns double precision, before PostgreSQL 14) plus the millisecond field.
 */
export function epochMilliseconds(reference: string): string {
  const utc = `${reference} AT TIME ZONE 'UTC'`;
  return `(extract(epoch FROM date_trunc('second', ${utc}))::bigint * 1000 + round(extract(milliseconds FROM ${utc}))::bigint % 1000)`;
}

/** How a column is selected: everything as text or JSON text, decoded by `row.ts`. */
function selectExpression(column: Column, qualifier: string): string {
  const reference = `${qualifier}${quoted(column.name)}`;
  switch (column.kind) {
    case 'text':
    case 'optionalText':
    case 'status':
      return `${reference} AS ${quoted(column.name)}`;
    case 'list':
      return `array_to_json(${reference})::text AS ${quoted(column.name)}`;
    case 'instant':
    case 'nullableInstant':
      // `infinity` (set by hand) has no epoch milliseconds: it comes back as its text, which the
      // row decoder refuses as invalid_record, instead of failing the whole query.
      return (
        `CASE WHEN isfinite(${reference}) THEN ${epochMilliseconds(reference)}::text ELSE ${reference}::text END ` +
        `AS ${quoted(column.name)}`
      );
    default:
      return `${reference}::text AS ${quoted(column.name)}`;
  }
}

/** The select list of a whole record; `qualifier` is a table alias with its dot, or ''. */
export function recordSelectList(qualifier = ''): string {
  return RECORD_COLUMNS.map((column) => selectExpression(column, qualifier)).join(', ');
}

/** `$n::type`: a placeholder with its cast. */
export function placeholder(index: number, column: Column): string {
  return `$${index}::${PARAMETER_CASTS[column.kind]}`;
}

/** The statements that never change shape, built once per table. */
export interface PostgresStatements {
  /** `$1…$n`: the record's columns in `RECORD_COLUMNS` order (`recordParameters`). */
  insert: string;
  /** `$1`: id. */
  findById: string;
  /** `$1`: keyPrefix. */
  findByKeyPrefix: string;
  /** See {@link consumeStatement}: a consume without a concurrency claim, which never reads or writes the leases. */
  consume: string;
  /** See {@link consumeStatement}: a consume with a concurrency claim. */
  consumeClaim: string;
  /** See {@link releaseStatement}. */
  release: string;
  /** See {@link rotateStatement}. */
  rotate: string;
}

/** Builds the fixed statements of one table. */
export function postgresStatements(table: TableName): PostgresStatements {
  const select = recordSelectList();
  return {
    insert: `INSERT INTO ${table.qualified} (${COLUMN_LIST}) VALUES (${RECORD_COLUMNS.map((column, i) => placeholder(i + 1, column)).join(', ')})`,
    findById: `SELECT ${select} FROM ${table.qualified} WHERE "id" = $1::text`,
    findByKeyPrefix: `SELECT ${select} FROM ${table.qualified} WHERE "key_prefix" = $1::text`,
    consume: consumeStatement(table, false),
    consumeClaim: consumeStatement(table, true),
    release: releaseStatement(table),
    rotate: rotateStatement(table),
  };
}

/** The fixed parameters of the consume statement; the quota of each window follows, in `QUOTA_WINDOWS` order. */
const CONSUME_FIXED_PARAMETERS = 7;

/** The consume statement's parameter holding `window`'s quota (NULL when the key has none). */
function quotaParameter(window: QuotaWindow): string {
  return `$${CONSUME_FIXED_PARAMETERS + 1 + QUOTA_WINDOWS.indexOf(window)}::float8`;
}

/** The claim's parameters of the claim variant, after the quotas: `maxConcurrent`, the lease, its duration. */
const CLAIM_LIMIT = `$${CONSUME_FIXED_PARAMETERS + QUOTA_WINDOWS.length + 1}::float8`;
const CLAIM_LEASE = `$${CONSUME_FIXED_PARAMETERS + QUOTA_WINDOWS.length + 2}::text`;
const CLAIM_LEASE_MS = `$${CONSUME_FIXED_PARAMETERS + QUOTA_WINDOWS.length + 3}::float8`;

/**
 * The parameters of the consume statement: `$1` id, `$2` now (epoch ms), `$3` maxUses, `$4`
 * perSecond, `$5` bucket capacity (`burst ?? perSecond`), `$6` now as a timestamptz (for
 * `last_used_at` and the lifecycle checks), `$7` the wall-clock deadline (epoch ms), then each
 * window's quota (`perMonth`, `perDay`, …) in `QUOTA_WINDOWS` order. An absent limit or deadline
 * is NULL. With a concurrency claim (the statement's claim variant) the claim's `limit`, `lease`
 * and `leaseMs` follow.
 */
export function consumeParameters(id: string, request: ConsumeRequest): unknown[] {
  const { rateLimit, maxUses, concurrency } = request;
  const perSecond = rateLimit?.perSecond;
  const parameters = [
    id,
    request.now,
    maxUses,
    perSecond ?? null,
    rateLimit && perSecond !== undefined ? bucketCapacity(rateLimit) : null,
    timestamptzLiteral(new Date(request.now)),
    request.deadline ?? null,
    ...QUOTA_WINDOWS.map((window) => rateLimit?.[window.limit] ?? null),
  ];
  if (concurrency !== undefined) parameters.push(concurrency.limit, concurrency.lease, concurrency.leaseMs);
  return parameters;
}

/** The consume statement's output column holding the count of `window` before this request. */
export function usedColumn(window: QuotaWindow): string {
  return `${window.name}_used`;
}

/** `floor(a / b)` of a bigint expression by a positive integer constant, exactly (PostgreSQL's `/` truncates). */
function floorDivision(a: string, b: number): string {
  return `(${a} - ((${a} % ${b}) + ${b}) % ${b}) / ${b}`;
}

/**
 * The UTC calendar month index (`year × 12 + month`, month 0–11) of the epoch-ms float8 `at`, as
 * `windowIndex` computes it in JavaScript, for every instant a Date can hold, before 1970 and
 * before year 1 included: integer arithmetic only, Howard Hinnant's `civil_from_days` on the UTC
 * day `floor(floor(at) / 86400000)`, whose eras of 400 years start on 1 March, so that
 * `4800 × era + 12 × year of era + (month since March) + 2` is the month index itself. No timestamp
 * is involved: no time zone, no rounding to microseconds, no range narrower than a Date's
 * (PostgreSQL's timestamps stop at 4713 BC and number BC years without a year 0).
 *
 * A fraction of a millisecond is floored, like every other window's index (so the instant -0.5 is
 * in December 1969, as it is in the day -1); `new Date(-0.5)` would truncate it to 1970.
 */
function calendarMonthIndex(at: string): string {
  const days = floorDivision(`floor(${at})::bigint`, 86_400_000);
  return `(SELECT 4800 * "era" + 12 * "yoe" + (5 * ("doe" - (365 * "yoe" + "yoe" / 4 - "yoe" / 100)) + 2) / 153 + 2
      FROM (SELECT "era", "doe", ("doe" - "doe" / 1460 + "doe" / 36524 - "doe" / 146096) / 365 AS "yoe"
        FROM (SELECT "era", "z" - 146097 * "era" AS "doe"
          FROM (SELECT "z", ${floorDivision('"z"', 146_097)} AS "era"
            FROM (SELECT ${days} + 719468 AS "z") AS "days") AS "eras") AS "years") AS "months")`;
}

/** `windowIndex(window, at)` in SQL, `at` being a float8 expression of epoch milliseconds. */
export function windowIndexSql(window: QuotaWindow, at: string): string {
  return window.lengthMs === null ? calendarMonthIndex(at) : `floor(${at} / ${window.lengthMs}::float8)::bigint`;
}

/**
 * One consume, in one statement: the deadline, the lifecycle checks of `policy/status`
 * (`lifecycleRefusal`) and `decideConsume` of `policy/limits`, written in SQL, in that order. The
 * quota windows' parts (their lengths, order, counter columns and quotas) are generated from
 * `QUOTA_WINDOWS` (`policy/windows`), so a window added there needs no edit here.
 *
 * Parameters: {@link consumeParameters}.
 *
 * - `locked` reads the row `FOR UPDATE`: concurrent consumes of the key queue on the row lock, and
 *   each one sees the row as the previous one (or a revocation, made meanwhile) left it.
 * - `clocked` reads `clock_timestamp()` once the row lock is held. It must be here, in a CTE that
 *   reads `locked`, and not in `locked`'s own select list: that list is computed by the scan
 *   below the row lock, so a clock read there is the time BEFORE the wait for the lock (checked by
 *   test/sql/postgres-deadline.test.ts). Read here, it also covers the time the query waited in the
 *   pool's queue and on the network before the statement started.
 * - `state` is, first, the `lifecycle` refusal: `deadline_exceeded` when the clock is past `$7`,
 *   then exactly `lifecycleRefusal(status, revoked_at, expires_at, now)`: a status other than
 *   `active` / `suspended` (whatever was written by hand) and a `revoked_at` at or before now are
 *   `api_key_revoked`, `suspended` is `api_key_disabled`, an `expires_at` at or before now is
 *   `api_key_expired`. Then the limit arithmetic, in double precision like JavaScript's numbers so
 *   that every result matches `decideConsume` bit for bit: the request counts at
 *   `at = greatest(now, tokens_at)` (counters never move back in time), in each window's index of
 *   `at` (`<window>_index`: `floor(at / length)`, or the calendar month); the bucket is refilled by
 *   `(at - tokens_at) * perSecond / 1000`, capped at capacity.
 * - `counted` is each window's count before this request (`<window>_used`): the stored count when
 *   the stored index is the current one, else 0 (a new window).
 * - `verdict` names the refusal, if any: the lifecycle one, else the most lasting limit: uses, then
 *   each window's quota, most lasting first, then the bucket, then (claim variant) the key's
 *   concurrency slots.
 * - `applied` writes the admitted state, and only when nothing refused: every window counts the
 *   use, whether or not the key has a quota for it. A refusal changes no counter and writes no row
 *   version.
 * - The final SELECT returns the verdict, so a refused consume reports the state that refused it
 *   in the same round trip. No row (unknown id) means `null`.
 *
 * With `claim` (a request with a concurrency claim; {@link consumeParameters} adds its three
 * parameters), `locked` also reads the leases' column, under the same row lock as the counters, and:
 * - `counted` counts the leases live at `at` (`in_flight`: lapse instant > `at`, compared as
 *   float8 like `liveLeases` compares JavaScript numbers), unless the lifecycle refused (which
 *   reports no `inFlight`). A column that is not a JSON object of numbers (written by hand) gives
 *   NULL, which `verdict` refuses as `invalid_leases` right after the lifecycle, so the store fails
 *   closed instead of reading it as no lease (a number beyond float8 fails the statement);
 * - `verdict` refuses `concurrency_limited` when `in_flight` reaches the limit and nothing else refused;
 * - `applied` writes `leasesAfter`: the live leases (their stored values untouched) plus
 *   `lease → at + leaseMs`, a float8 sum as in JavaScript. jsonb keeps a float8 as the shortest
 *   decimal that reads back as the same double (float8 output at the default `extra_float_digits`),
 *   so the instant read back is the one written.
 * Without `claim` the statement names neither the column nor the claim: keys without
 * `maxConcurrent` pay nothing for it, and their consumes never touch the leases.
 */
function consumeStatement(table: TableName, claim: boolean): string {
  const windows = QUOTA_WINDOWS.map((window) => ({
    window,
    index: quoted(`${window.name}_index`),
    used: quoted(usedColumn(window)),
    indexColumn: quoted(counterColumn(window.indexField)),
    countColumn: quoted(counterColumn(window.countField)),
    quota: quotaParameter(window),
  }));
  const list = (lines: readonly string[]) => lines.map((line) => `,\n    ${line}`).join('');
  const leases = quoted(LEASES_COLUMN.name);
  // Each lease of the locked row, as ("lease", "until"); "until" is cast only once it is known to be a number.
  const eachLease = (row: string) => `jsonb_each(${row}${leases}) AS "l"("lease", "until")`;
  const inFlight = `CASE WHEN "lifecycle" IS NULL AND jsonb_typeof(${leases}) = 'object' THEN (
      SELECT CASE WHEN count(*) FILTER (WHERE jsonb_typeof("until") <> 'number') = 0
        THEN count(*) FILTER (WHERE CASE WHEN jsonb_typeof("until") = 'number' THEN "until"::float8 > "at" END) END
      FROM ${eachLease('')}) END AS "in_flight"`;
  const leasesAfter =
    `(SELECT coalesce(jsonb_object_agg("lease", "until"), '{}'::jsonb) FROM ${eachLease('"v".')} WHERE "until"::float8 > "v"."at")` +
    ` || jsonb_build_object(${CLAIM_LEASE}, "v"."at" + ${CLAIM_LEASE_MS})`;
  return `WITH "locked" AS MATERIALIZED (
  SELECT "id", "status", "revoked_at", "expires_at", "use_count", ${COUNTER_LIST}${claim ? `, ${leases}` : ''}
  FROM ${table.qualified} WHERE "id" = $1::text FOR UPDATE
), "clocked" AS MATERIALIZED (
  SELECT "locked".*, greatest($2::float8, "tokens_at") AS "at",
    (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS "clock"
  FROM "locked"
), "state" AS MATERIALIZED (
  SELECT "clocked".*,
    CASE
      WHEN $7::float8 IS NOT NULL AND "clock" > $7::float8 THEN 'deadline_exceeded'
      WHEN ${UNUSABLE_STATUS} THEN 'api_key_revoked'
      WHEN "revoked_at" <= $6::timestamptz THEN 'api_key_revoked'
      WHEN "status" = 'suspended' THEN 'api_key_disabled'
      WHEN "expires_at" <= $6::timestamptz THEN 'api_key_expired'
    END AS "lifecycle"${list(windows.map((w) => `${windowIndexSql(w.window, '"at"')} AS ${w.index}`))},
    CASE
      WHEN $4::float8 IS NULL THEN NULL
      WHEN "tokens" IS NULL THEN $5::float8
      ELSE least($5::float8, "tokens" + (("at" - "tokens_at") * $4::float8) / 1000::float8)
    END AS "level"
  FROM "clocked"
), "counted" AS MATERIALIZED (
  SELECT "state".*${list([...windows.map((w) => `CASE WHEN ${w.indexColumn} = ${w.index} THEN ${w.countColumn} ELSE 0 END AS ${w.used}`), ...(claim ? [inFlight] : [])])}
  FROM "state"
), "verdict" AS MATERIALIZED (
  SELECT "counted".*,
    CASE
      WHEN "lifecycle" IS NOT NULL THEN "lifecycle"
      WHEN "use_count" < 0 THEN 'invalid_counters'
${claim ? `      WHEN "in_flight" IS NULL THEN 'invalid_leases'\n` : ''}      WHEN $3::float8 IS NOT NULL AND "use_count" >= $3::float8 THEN 'usage_exhausted'
${windows.map((w) => `      WHEN ${w.quota} IS NOT NULL AND ${w.used} >= ${w.quota} THEN 'quota_exceeded'\n`).join('')}      WHEN $4::float8 IS NOT NULL AND "level" < 1 THEN 'rate_limited'
${claim ? `      WHEN "in_flight" >= ${CLAIM_LIMIT} THEN 'concurrency_limited'\n` : ''}    END AS "refusal"
  FROM "counted"
), "applied" AS (
  UPDATE ${table.qualified} AS "k" SET
    "use_count" = "v"."use_count" + 1,
${windows.map((w) => `    ${w.indexColumn} = "v".${w.index},\n    ${w.countColumn} = "v".${w.used} + 1,\n`).join('')}    "tokens" = "v"."level" - 1,
    "tokens_at" = "v"."at",
    "last_used_at" = $6::timestamptz${claim ? `,\n    ${leases} = ${leasesAfter}` : ''}
  FROM "verdict" AS "v"
  WHERE "k"."id" = "v"."id" AND "v"."refusal" IS NULL
  RETURNING "k"."id"
)
SELECT "refusal", "use_count"::text AS "use_count"${windows.map((w) => `, ${w.used}::text AS ${w.used}`).join('')}, "level"::text AS "level", "at"::text AS "at",
  ${claim ? '"in_flight"::text AS "in_flight", ' : ''}(SELECT count(*) FROM "applied")::int AS "applied"
FROM "verdict"`;
}

/**
 * `release(id, lease)`: removes the lease from the key's leases, and nothing else (no counter, no
 * `updated_at`). Parameters: `$1` id, `$2` the lease. The row is written only when it holds the
 * lease (`jsonb_exists`, the function behind the `?` operator, which a driver could take for a
 * placeholder), so releasing an unknown lease, or the lease of an unknown key, writes no row
 * version. A column that is not a JSON object (written by hand) is left as it is.
 */
function releaseStatement(table: TableName): string {
  const leases = quoted(LEASES_COLUMN.name);
  return `UPDATE ${table.qualified} SET ${leases} = ${leases} - $2::text
WHERE "id" = $1::text AND jsonb_typeof(${leases}) = 'object' AND jsonb_exists(${leases}, $2::text)`;
}

/** The column of a counter field. */
function counterColumn(field: CounterColumn['field']): string {
  const column = COUNTER_COLUMNS.find((counter) => counter.field === field);
  if (!column) throw new Error(`keygate: no counter column for ${field}`);
  return column.name;
}

/** The replacement's maxUses is the old row's remaining uses (the toolkit's `remainingUses`). */
const CARRIED = columnOf('maxUses');

/**
 * The columns of every field a caller sets (`CREATE_FIELDS` of the record schema): the rotate
 * statement takes them from the locked old row, never from the parameters, so a field added to the
 * schema is carried with no edit here.
 */
const CALLER_SET_COLUMNS: readonly Column[] = CREATE_FIELDS.map(columnOf);

const CALLER_SET = new Set<Column>(CALLER_SET_COLUMNS);

/** The columns the rotation's parameters supply: the replacement's identity and keygate's own fields. */
const REPLACEMENT_PARAMETER_COLUMNS: readonly Column[] = RECORD_COLUMNS.filter((column) => !CALLER_SET.has(column));

/**
 * One rotation, in one statement: lock the old row, insert the replacement, and retire the old row.
 * The replacement is the toolkit's `replacementFor` written in SQL: its identity and keygate's own
 * fields (id, key_prefix, key_hash, timestamps, rotated_from_id, use_count; the counters start at
 * their defaults) are parameters, and every caller-set column ({@link CALLER_SET_COLUMNS}) is
 * INSERT … SELECTed from the locked old row, as it stands once the lock is held: an update that
 * committed while the caller was building the replacement (a suspension, narrowed scopes or IPs)
 * reaches the new key, and a NULL optional column stays NULL (absent). `max_uses` is the old key's
 * remaining uses, `remainingUses(max_uses, use_count)`, so an unlimited key's replacement is
 * unlimited. A unique violation on the replacement aborts the whole statement, so nothing changes.
 * No rows back means the old id is unknown.
 *
 * The old row is read by a `FOR UPDATE` CTE: in READ COMMITTED, a row lock that had to wait for
 * another transaction returns the row version that transaction committed (not the statement's
 * snapshot), and the INSERT reads the columns from that CTE, so it sees every update committed
 * before the rotation took the lock (test/sql/rotate-settings-race.test.ts).
 *
 * An old row that is already retired or retiring (the toolkit's `isRetired`: `revoked_at` set, or
 * a status other than `active` / `suspended`) is `refused`: nothing is inserted or updated, and the
 * statement returns one row with role `refused`. The check reads the row under its lock, so of
 * concurrent rotations of one key the first retires it and every other one, having waited for the
 * lock, sees the `revoked_at` it wrote and is refused.
 *
 * Parameters: {@link rotationParameters}. Returns the two records, each tagged `old` or
 * `replacement` in `"role"`, or one `refused` row.
 */
function rotateStatement(table: TableName): string {
  let index = 1;
  const values = RECORD_COLUMNS.map((column) => {
    if (column === CARRIED) return remainingUses('"old".');
    if (CALLER_SET.has(column)) return `"old".${quoted(column.name)}`;
    return placeholder(++index, column);
  });
  const revokedAt = `$${++index}::timestamptz`;
  const updatedAt = `$${++index}::timestamptz`;
  const status = `$${++index}::text`;
  const read = [...new Set(['id', 'use_count', ...CALLER_SET_COLUMNS.map((column) => column.name)])].map(quoted).join(', ');
  const nothing = RECORD_COLUMNS.map((column) => `NULL::text AS ${quoted(column.name)}`).join(', ');
  return `WITH "old" AS MATERIALIZED (
  SELECT ${read}, ${RETIRED} AS "refused"
  FROM ${table.qualified} WHERE "id" = $1::text FOR UPDATE
), "inserted" AS (
  INSERT INTO ${table.qualified} (${COLUMN_LIST})
  SELECT ${values.join(', ')}
  FROM "old" WHERE NOT "old"."refused"
  RETURNING ${recordSelectList()}
), "retired" AS (
  UPDATE ${table.qualified} AS "k" SET
    "revoked_at" = ${revokedAt},
    "updated_at" = ${updatedAt},
    "status" = coalesce(${status}, "k"."status")
  FROM "old"
  WHERE "k"."id" = "old"."id" AND NOT "old"."refused"
  RETURNING ${recordSelectList('"k".')}
)
SELECT 'old' AS "role", * FROM "retired"
UNION ALL
SELECT 'replacement' AS "role", * FROM "inserted"
UNION ALL
SELECT 'refused' AS "role", ${nothing} FROM "old" WHERE "old"."refused"`;
}

/**
 * The parameters of the rotate statement: `$1` the old id; then the replacement's
 * {@link REPLACEMENT_PARAMETER_COLUMNS} in `RECORD_COLUMNS` order (its caller-set fields are not
 * sent: the old row's take their place); then the old key's `revoked_at`, `updated_at`, and its new
 * status (NULL to keep it). Own properties only: nothing inherited from a polluted
 * `Object.prototype` (an `oldStatus`, a `rotatedFromId`) is read.
 */
export function rotationParameters(rotation: StoreRotation): unknown[] {
  const replacement = REPLACEMENT_PARAMETER_COLUMNS.map((column) => parameterOf('postgres', column, ownValue(rotation.replacement, column.field)));
  const oldStatus = ownValue(rotation, 'oldStatus');
  return [rotation.oldId, ...replacement, timestamptzLiteral(rotation.oldRevokedAt), timestamptzLiteral(rotation.now), oldStatus ?? null];
}

/**
 * One update, in one statement. Parameters: `$1` id, then `columns` in order (the patch's fields
 * in `PATCHABLE_COLUMNS` order; `updated_at` is always among them).
 *
 * Without `status` among the columns it is a plain `UPDATE … RETURNING` the record. With it, the
 * statement applies the two rules of `ApiKeyStore.update` atomically with the write:
 * - `current` locks the row and decides whether the patch is `refused`: it sets a status other than
 *   `revoked` while the stored key is revoked (`revoked_at` at or before the patch's `updated_at`,
 *   or a status other than `active` / `suspended`); `updated` then changes nothing;
 * - a patch setting `revoked` stamps `revoked_at` with the earlier of its stored value and the
 *   patch's `updated_at` (the toolkit's `revokedAtAfterUpdate`); otherwise the patch's own
 *   `revoked_at`, if any, applies.
 * The status is a parameter, so one statement text serves every status value. It returns no row
 * for an unknown id, else one row: `"refused"` (`'true'` or `'false'`, as text like every value the
 * store reads) and, when applied, the record.
 *
 * With or without `status`, a key is deleted once: `deleted_at` is assigned
 * `coalesce("deleted_at", $n)` (the toolkit's `deletedAtAfterUpdate`), evaluated on the row version
 * the UPDATE writes over. In READ COMMITTED an UPDATE that waited for another transaction's row
 * lock re-evaluates its assignments on the version that transaction committed, so of two deletes
 * racing the second keeps the first one's instant.
 */
export function updateStatement(table: TableName, columns: readonly Column[]): string {
  const placeholderOf = (field: Column['field']): string | undefined => {
    const index = columns.findIndex((column) => column.field === field);
    return index < 0 ? undefined : placeholder(index + 2, columns[index] as Column);
  };
  const status = placeholderOf('status');
  const updatedAt = placeholderOf('updatedAt');
  if (updatedAt === undefined) throw new Error('keygate: a patch always sets updatedAt');
  const assignments = columns.map((column, i) => {
    const value = placeholder(i + 2, column);
    const name = quoted(column.name);
    return `${name} = ${column === DELETED_AT_COLUMN ? `coalesce("k".${name}, ${value})` : value}`;
  });
  if (status === undefined) {
    return `UPDATE ${table.qualified} AS "k" SET ${assignments.join(', ')} WHERE "k"."id" = $1::text RETURNING ${recordSelectList('"k".')}`;
  }
  const revokedAt = placeholderOf('revokedAt') ?? '"k"."revoked_at"';
  const stamped = columns
    .map((column, i) => (column.field === 'revokedAt' ? undefined : assignments[i]))
    .filter((assignment) => assignment !== undefined);
  stamped.push(`"revoked_at" = CASE WHEN ${status} = 'revoked' THEN least(coalesce("k"."revoked_at", ${updatedAt}), ${updatedAt}) ELSE ${revokedAt} END`);
  return `WITH "current" AS MATERIALIZED (
  SELECT "id", (${status} <> 'revoked' AND ${revokedBy(updatedAt)}) IS TRUE AS "refused"
  FROM ${table.qualified} WHERE "id" = $1::text FOR UPDATE
), "updated" AS (
  UPDATE ${table.qualified} AS "k" SET ${stamped.join(', ')}
  FROM "current"
  WHERE "k"."id" = "current"."id" AND NOT "current"."refused"
  RETURNING ${recordSelectList('"k".')}
)
SELECT "current"."refused"::text AS "refused", "updated".* FROM "current" LEFT JOIN "updated" ON true`;
}

/** Which filters a list call has; the statement takes their values in this order, then the limit. */
export interface ListShape {
  ownerId: boolean;
  tenantId: boolean;
  status: boolean;
  after: boolean;
  /** Deleted keys too (no parameter): without it, `"deleted_at" IS NULL`. */
  includeDeleted: boolean;
}

/**
 * `SELECT … WHERE <filters> AND ("created_at", "id") > ($a, $b) ORDER BY "created_at", "id" LIMIT $n`:
 * keyset pagination on the (created_at, id) index, so a page neither skips nor repeats a record
 * whatever is inserted between pages. `id` is `COLLATE "C"`, so ties order byte-wise, as keygate's cursors expect.
 * Deleted keys are left out by a filter, after the position: a page still holds `limit` records
 * unless it is the last.
 */
export function listStatement(table: TableName, shape: ListShape): string {
  const conditions: string[] = [];
  let index = 0;
  if (shape.ownerId) conditions.push(`"owner_id" = $${++index}::text`);
  if (shape.tenantId) conditions.push(`"tenant_id" = $${++index}::text`);
  if (shape.status) conditions.push(`"status" = $${++index}::text`);
  if (!shape.includeDeleted) conditions.push('"deleted_at" IS NULL');
  if (shape.after) {
    conditions.push(`("created_at", "id") > ($${index + 1}::timestamptz, $${index + 2}::text COLLATE "C")`);
    index += 2;
  }
  const where = conditions.length > 0 ? ` WHERE ${conditions.join(' AND ')}` : '';
  // ORDER BY names the table's columns through the alias: a bare "created_at" would be the select
  // list's "created_at" (epoch milliseconds as text), which orders as text (1999 after 2025, a
  // negative instant anywhere) and matches no index, so every list would sort the whole table.
  return `SELECT ${recordSelectList()} FROM ${table.qualified} AS "k"${where} ORDER BY "k"."created_at", "k"."id" LIMIT $${index + 1}::bigint`;
}

/** The name of the transaction-local setting that carries a purge batch's ids from its lock to its removal. */
const PURGE_BATCH_SETTING = 'keygate.purge_batch';

/** The two statements of one batch of `purge` (see {@link purgeStatements}). */
export interface PurgeStatements {
  /** Locks the batch's rows and keeps their ids for `remove`. */
  lock: string;
  /** Removes the locked rows and their usage cells; returns the batch's result row. */
  remove: string;
}

/**
 * One batch of `purge`: two statements, sent as ONE simple-protocol query (`lock;remove`), which
 * PostgreSQL runs as one transaction (or inside the caller's, on a client in one). The simple
 * protocol takes no parameters, so `deletedBefore` and the batch size are written in as literals:
 * an instant literal (`timestamptzLiteral`: digits and separators only) and a safe integer.
 *
 * - `lock` locks, in (`deleted_at`, `id`) order (the partial index on deleted keys), up to
 *   `batchSize` rows whose `deleted_at` is set and before `deletedBefore`, and keeps their ids in a
 *   transaction-local setting (`set_config(…, true)`) for `remove`. Locking in one order means two
 *   purges running at once take turns on a row instead of deadlocking, and so does a usage batch
 *   (which locks the keys it adds to `FOR KEY SHARE`, in the same order); a consume or update of a
 *   deleted key holds its one row, so it waits for the batch or the batch waits for it. `FOR
 *   UPDATE` re-checks a row it waited for on the version committed meanwhile, and skips a row
 *   another purge removed, going on down the index.
 * - `remove` deletes those rows (checking the condition again on the row it deletes: it cannot have
 *   changed under our lock, a key is deleted once), and every usage cell of the removed keys (every
 *   day; through the usage table's primary key, which leads with `key_id`). A row's deletion
 *   removes its index entries, counters and leases with it (they live in the row), in the same
 *   transaction: no reader ever sees half of it, nor a purged key with some of its cells.
 *
 * Why two statements: a statement reads with the snapshot taken when it started, and a usage batch
 * that added cells to a key under its `FOR KEY SHARE` lock may commit after that instant, while
 * the purge waits for (or is about to take) the row's lock: one statement would lock the row, then
 * miss those cells, left behind for good. `remove` starts once `lock` holds every row, so every
 * batch that added to them has committed and is seen; a batch that comes after waits for the purge
 * and finds the row gone, so it adds nothing.
 *
 * `remove` returns one row: `"selected"`, how many rows the batch locked (fewer than `batchSize`:
 * nothing more to purge), and `"removed"`, the removed ids as a JSON array.
 */
export function purgeStatements(table: TableName, deletedBefore: Date, batchSize: number): PurgeStatements {
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError(`purge: the batch size must be a positive integer, got ${batchSize}`);
  const before = `'${timestamptzLiteral(deletedBefore)}'::timestamptz`;
  const purgeable = (qualifier: string) => `${qualifier}"deleted_at" IS NOT NULL AND ${qualifier}"deleted_at" < ${before}`;
  const lock = `SELECT set_config('${PURGE_BATCH_SETTING}', coalesce(json_agg("id"), '[]'::json)::text, true) IS NOT NULL AS "locked" FROM (
  SELECT "id" FROM ${table.qualified}
  WHERE ${purgeable('')}
  ORDER BY "deleted_at", "id" LIMIT ${batchSize} FOR UPDATE
) AS "locked"`;
  const remove = `WITH "batch" AS MATERIALIZED (
  SELECT "id" FROM json_array_elements_text(current_setting('${PURGE_BATCH_SETTING}')::json) AS "locked"("id")
), "removed" AS (
  DELETE FROM ${table.qualified} AS "k" USING "batch"
  WHERE "k"."id" = "batch"."id" AND ${purgeable('"k".')}
  RETURNING "k"."id"
), "cells" AS (
  DELETE FROM ${companionName(table, 'usage')} AS "u" USING "removed"
  WHERE "u"."key_id" = "removed"."id"
)
SELECT (SELECT count(*) FROM "batch")::text AS "selected",
  (SELECT coalesce(json_agg("id"), '[]'::json) FROM "removed")::text AS "removed"`;
  return { lock, remove };
}
