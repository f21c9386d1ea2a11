/**
 * The PostgreSQL statements, as text with `$n` placeholders. The table name (validated and quoted)
 * is the only thing spliced in; every value travels as a parameter with an explicit cast.
 *
 * Every operation is ONE statement, so each is atomic on its own (an implicit transaction) and the
 * store works the same on a `Pool`, a `Client` or a `PoolClient`: no connection is ever held across
 * round trips, and nothing can interleave with a half-done operation.
 */
import { type Column, RECORD_COLUMNS, columnOf } from './columns.js';
import type { TableName } from './table-name.js';

/** Milliseconds in a UTC day, as in `policy/limits`. */
const DAY_MS = 86_400_000;

/** The SQL type each column kind is bound as. */
const PARAMETER_CASTS: Record<Column['kind'], string> = {
  text: 'text',
  optionalText: 'text',
  list: 'text[]',
  json: 'jsonb',
  rateLimit: 'jsonb',
  count: 'bigint',
  nullableCount: 'bigint',
  instant: 'timestamptz',
  nullableInstant: 'timestamptz',
};

function quoted(name: string): string {
  return `"${name}"`;
}

/**
 * Epoch milliseconds of a timestamptz, exact on every PostgreSQL version: whole seconds (exact even
 * where `extract` returns double precision, before PostgreSQL 14) plus the millisecond field.
 */
function epochMilliseconds(reference: string): string {
  const utc = `${reference} AT TIME ZONE 'UTC'`;
  return `(extract(epoch FROM date_trunc('second', ${utc}))::bigint * 1000 + round(extract(milliseconds FROM ${utc}))::bigint % 1000)`;
}

/** How a column is selected: everything as text or JSON text, decoded by `row.ts`. */
function selectExpression(column: Column, qualifier: string): string {
  const reference = `${qualifier}${quoted(column.name)}`;
  switch (column.kind) {
    case 'text':
    case 'optionalText':
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

const COLUMN_LIST = RECORD_COLUMNS.map((column) => quoted(column.name)).join(', ');

/** The statements that never change shape, built once per table. */
export interface PostgresStatements {
  /** `$1..$22`: the record's columns in `RECORD_COLUMNS` order. */
  insert: string;
  /** `$1`: id. */
  findById: string;
  /** `$1`: keyPrefix. */
  findByKeyPrefix: string;
  /** See {@link consumeStatement}. */
  consume: string;
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
    consume: consumeStatement(table),
    rotate: rotateStatement(table),
  };
}

/**
 * One consume, in one statement: the deadline, the lifecycle checks of `policy/status`
 * (`lifecycleRefusal`) and `decideConsume` of `policy/limits`, written in SQL, in that order.
 *
 * Parameters: `$1` id, `$2` now (epoch ms), `$3` maxUses, `$4` perDay, `$5` perSecond,
 * `$6` bucket capacity (`burst ?? perSecond`), `$7` now as a timestamptz (for `last_used_at` and the
 * lifecycle checks), `$8` the wall-clock deadline (epoch ms); an absent limit or deadline is NULL.
 *
 * - `locked` reads the row `FOR UPDATE`: concurrent consumes of the key queue on the row lock, and
 *   each one sees the row as the previous one (or a revocation, made meanwhile) left it.
 * - `clocked` reads `clock_timestamp()` once the row lock is held. It must be here, in a CTE that
 *   reads `locked`, and not in `locked`'s own select list: that list is computed by the scan
 *   below the row lock, so a clock read there is the time BEFORE the wait for the lock (checked by
 *   test/sql/postgres-deadline.test.ts). Read here, it also covers the time the query waited in the
 *   pool's queue and on the network before the statement started.
 * - `state` is, first, the `lifecycle` refusal: `deadline_exceeded` when the clock is past `$8`,
 *   then exactly `lifecycleRefusal(status, revoked_at, expires_at, now)`: a status other than
 *   `active` / `suspended` (whatever was written by hand) and a `revoked_at` at or before now are
 *   `api_key_revoked`, `suspended` is `api_key_disabled`, an `expires_at` at or before now is
 *   `api_key_expired`. Then the limit arithmetic, in double precision like JavaScript's numbers so
 *   that every result matches `decideConsume` bit for bit: the request counts at
 *   `at = greatest(now, tokens_at)` (counters never move back in time), on UTC day
 *   `floor(at / 86400000)`; the day's count restarts on a new day; the bucket is refilled by
 *   `(at - tokens_at) * perSecond / 1000`, capped at capacity.
 * - `verdict` names the refusal, if any: the lifecycle one, else the most lasting limit: uses, then
 *   the day's quota, then the bucket.
 * - `applied` writes the admitted state, and only when nothing refused: a refusal changes no
 *   counter and writes no row version.
 * - The final SELECT returns the verdict, so a refused consume reports the state that refused it
 *   in the same round trip. No row (unknown id) means `null`.
 */
function consumeStatement(table: TableName): string {
  return `WITH "locked" AS MATERIALIZED (
  SELECT "id", "status", "revoked_at", "expires_at", "use_count", "day", "day_count", "tokens", "tokens_at"
  FROM ${table.qualified} WHERE "id" = $1::text FOR UPDATE
), "clocked" AS MATERIALIZED (
  SELECT "locked".*, greatest($2::float8, "tokens_at") AS "at",
    (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS "clock"
  FROM "locked"
), "state" AS MATERIALIZED (
  SELECT "id", "use_count", "at",
    CASE
      WHEN $8::float8 IS NOT NULL AND "clock" > $8::float8 THEN 'deadline_exceeded'
      WHEN NOT coalesce("status" IN ('active', 'suspended'), false) THEN 'api_key_revoked'
      WHEN "revoked_at" <= $7::timestamptz THEN 'api_key_revoked'
      WHEN "status" = 'suspended' THEN 'api_key_disabled'
      WHEN "expires_at" <= $7::timestamptz THEN 'api_key_expired'
    END AS "lifecycle",
    floor("at" / ${DAY_MS}::float8)::bigint AS "today",
    CASE WHEN "day" = floor("at" / ${DAY_MS}::float8)::bigint THEN "day_count" ELSE 0 END AS "day_used",
    CASE
      WHEN $5::float8 IS NULL THEN NULL
      WHEN "tokens" IS NULL THEN $6::float8
      ELSE least($6::float8, "tokens" + (("at" - "tokens_at") * $5::float8) / 1000::float8)
    END AS "level"
  FROM "clocked"
), "verdict" AS MATERIALIZED (
  SELECT "state".*,
    CASE
      WHEN "lifecycle" IS NOT NULL THEN "lifecycle"
      WHEN "use_count" < 0 THEN 'invalid_counters'
      WHEN $3::float8 IS NOT NULL AND "use_count" >= $3::float8 THEN 'usage_exhausted'
      WHEN $4::float8 IS NOT NULL AND "day_used" >= $4::float8 THEN 'quota_exceeded'
      WHEN $5::float8 IS NOT NULL AND "level" < 1 THEN 'rate_limited'
    END AS "refusal"
  FROM "state"
), "applied" AS (
  UPDATE ${table.qualified} AS "k" SET
    "use_count" = "v"."use_count" + 1,
    "day" = "v"."today",
    "day_count" = "v"."day_used" + 1,
    "tokens" = "v"."level" - 1,
    "tokens_at" = "v"."at",
    "last_used_at" = $7::timestamptz
  FROM "verdict" AS "v"
  WHERE "k"."id" = "v"."id" AND "v"."refusal" IS NULL
  RETURNING "k"."id"
)
SELECT "refusal", "use_count"::text AS "use_count", "day_used"::text AS "day_used", "level"::text AS "level",
  (SELECT count(*) FROM "applied")::int AS "applied"
FROM "verdict"`;
}

/**
 * One rotation, in one statement: lock the old row, insert the replacement carrying the old key's
 * remaining uses (`greatest(0, max_uses - use_count)`; no limit stays the replacement's own), and
 * retire the old row. A unique violation on the replacement aborts the whole statement, so nothing
 * changes. No rows back means the old id is unknown.
 *
 * An old row that is already retired or retiring (`revoked_at` set, or a status other than
 * `active` / `suspended`) is `refused`: nothing is inserted or updated, and the statement returns
 * one row with role `refused`. The check reads the row under its lock, so of concurrent rotations
 * of one key the first retires it and every other one, having waited for the lock, sees the
 * `revoked_at` it wrote and is refused.
 *
 * Parameters: `$1` old id; `$2..$23` the replacement's columns in `RECORD_COLUMNS` order; `$24` the
 * old key's `revoked_at`; `$25` `updated_at`; `$26` its new status, or NULL to keep it.
 * Returns the two records, each tagged `old` or `replacement` in `"role"`, or one `refused` row.
 */
function rotateStatement(table: TableName): string {
  const count = RECORD_COLUMNS.length;
  const maxUses = columnOf('maxUses');
  const values = RECORD_COLUMNS.map((column, i) => {
    const parameter = placeholder(i + 2, column);
    if (column !== maxUses) return parameter;
    return `CASE WHEN "old"."max_uses" IS NULL THEN ${parameter} ELSE greatest(0, "old"."max_uses" - "old"."use_count") END`;
  });
  const nothing = RECORD_COLUMNS.map((column) => `NULL::text AS ${quoted(column.name)}`).join(', ');
  return `WITH "old" AS MATERIALIZED (
  SELECT "id", "max_uses", "use_count",
    ("revoked_at" IS NOT NULL OR NOT coalesce("status" IN ('active', 'suspended'), false)) AS "refused"
  FROM ${table.qualified} WHERE "id" = $1::text FOR UPDATE
), "inserted" AS (
  INSERT INTO ${table.qualified} (${COLUMN_LIST})
  SELECT ${values.join(', ')}
  FROM "old" WHERE NOT "old"."refused"
  RETURNING ${recordSelectList()}
), "retired" AS (
  UPDATE ${table.qualified} AS "k" SET
    "revoked_at" = $${count + 2}::timestamptz,
    "updated_at" = $${count + 3}::timestamptz,
    "status" = coalesce($${count + 4}::text, "k"."status")
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
 * A guarded update, in one statement: `current` locks the row and decides whether the store
 * record is revoked (`revoked_at` at or before the patch's `updated_at`, or a status other than
 * `active` / `suspended`); `updated` applies the patch only when it is not. Used for a patch that
 * sets `status` to something other than `revoked`: a revoked key stays revoked.
 *
 * Parameters: `$1` id, then `columns` in order (the last is `updated_at`, always present).
 * Returns no row for an unknown id, else one row: `"refused"` (`'true'` or `'false'`, as text like
 * every value the store reads) and, when applied, the record.
 */
export function guardedUpdateStatement(table: TableName, columns: readonly Column[]): string {
  const assignments = columns.map((column, i) => `${quoted(column.name)} = ${placeholder(i + 2, column)}`);
  const updatedAt = columns.findIndex((column) => column.field === 'updatedAt');
  if (updatedAt < 0) throw new Error('keygate: a patch always sets updatedAt');
  return `WITH "current" AS MATERIALIZED (
  SELECT "id",
    ("revoked_at" <= $${updatedAt + 2}::timestamptz OR NOT coalesce("status" IN ('active', 'suspended'), false)) IS TRUE AS "refused"
  FROM ${table.qualified} WHERE "id" = $1::text FOR UPDATE
), "updated" AS (
  UPDATE ${table.qualified} AS "k" SET ${assignments.join(', ')}
  FROM "current"
  WHERE "k"."id" = "current"."id" AND NOT "current"."refused"
  RETURNING ${recordSelectList('"k".')}
)
SELECT "current"."refused"::text AS "refused", "updated".* FROM "current" LEFT JOIN "updated" ON true`;
}

/** `UPDATE … SET <given columns> WHERE id = $1 RETURNING <record>`; `columns` follow `$1`. */
export function updateStatement(table: TableName, columns: readonly Column[]): string {
  const assignments = columns.map((column, i) => `${quoted(column.name)} = ${placeholder(i + 2, column)}`);
  return `UPDATE ${table.qualified} SET ${assignments.join(', ')} WHERE "id" = $1::text RETURNING ${recordSelectList()}`;
}

/** Which filters a list call has; the statement takes their values in this order, then the limit. */
export interface ListShape {
  ownerId: boolean;
  tenantId: boolean;
  status: boolean;
  after: boolean;
}

/**
 * `SELECT … WHERE <filters> AND ("created_at", "id") > ($a, $b) ORDER BY "created_at", "id" LIMIT $n`:
 * keyset pagination on the (created_at, id) index, so a page neither skips nor repeats a record
 * whatever is inserted between pages. `id` is `COLLATE "C"`, so ties order byte-wise, as keygate's cursors expect.
 */
export function listStatement(table: TableName, shape: ListShape): string {
  const conditions: string[] = [];
  let index = 0;
  if (shape.ownerId) conditions.push(`"owner_id" = $${++index}::text`);
  if (shape.tenantId) conditions.push(`"tenant_id" = $${++index}::text`);
  if (shape.status) conditions.push(`"status" = $${++index}::text`);
  if (shape.after) {
    conditions.push(`("created_at", "id") > ($${index + 1}::timestamptz, $${index + 2}::text COLLATE "C")`);
    index += 2;
  }
  const where = conditions.length > 0 ? ` WHERE ${conditions.join(' AND ')}` : '';
  return `SELECT ${recordSelectList()} FROM ${table.qualified}${where} ORDER BY "created_at", "id" LIMIT $${index + 1}::bigint`;
}
