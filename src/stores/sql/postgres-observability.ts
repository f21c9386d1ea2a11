/**
 * The PostgreSQL statements of the audit trail, usage cells and alert claims, as text with `$n`
 * placeholders. Like the key table's (`postgres-sql.ts`), each operation is ONE statement, hence
 * one transaction on any client (a `Pool`, a `Client` or a `PoolClient`: no connection is held
 * across round trips), and every value is a parameter with an explicit cast. Instants come from
 * the caller's clock (`batch.now`, `claim.now`), never the database's `now()`.
 */
import { USAGE_COUNT_COLUMNS, companionNames } from './companions.js';
import { AUDIT_TEXT_FILTERS } from './observability.js';
import { epochMilliseconds } from './postgres-sql.js';
import type { TableName } from './table-name.js';

/**
 * How many forgotten batch ids (or lapsed alert claims) one statement deletes at most: more than
 * any one call adds (one), so the tables shrink back to what the retention keeps, while no call
 * ever pays for a long backlog at once.
 */
export const CLEANUP_LIMIT = 100;

/** The audit row's columns, in the order the insert binds them (`$1` … `$9`). */
const AUDIT_COLUMNS = ['id', 'at', 'action', 'key_id', 'actor_id', 'actor_key_prefix', 'tenant_id', 'environment', 'changes'] as const;
const AUDIT_CASTS = ['text', 'timestamptz', 'text', 'text', 'text', 'text', 'text', 'text', 'jsonb'] as const;

/** The usage row's columns: the cell's identity, then the counts (`USAGE_COUNT_COLUMNS`), then the maximum. */
const USAGE_COLUMNS = ['key_id', 'day', 'route', 'outcome', ...USAGE_COUNT_COLUMNS, 'max_response_micros'] as const;
const USAGE_ARRAY_CASTS = ['text[]', 'bigint[]', 'text[]', 'text[]', ...USAGE_COUNT_COLUMNS.map(() => 'bigint[]'), 'bigint[]'] as const;

function quoted(name: string): string {
  return `"${name}"`;
}

/** The fixed statements of one key table's companions. */
export interface ObservabilityStatements {
  /** `$1…$9`: the audit row (`AUDIT_COLUMNS`). Returns a row when inserted, none when the id exists. */
  appendAudit: string;
  /** See {@link addUsageStatement}. */
  addUsage: string;
  /** `$1` keyId, `$2` fromDay, `$3` toDay (bigint). */
  readUsage: string;
  /** See {@link claimAlertStatement}. */
  claimAlert: string;
}

/** Builds the fixed statements of one table's companions. */
export function observabilityStatements(table: TableName): ObservabilityStatements {
  const names = companionNames(table);
  return {
    // ON CONFLICT DO NOTHING rather than catching the unique violation: the duplicate is an answer
    // (`already_exists`), not an error for the server's log.
    appendAudit:
      `INSERT INTO ${names.audit} (${AUDIT_COLUMNS.map(quoted).join(', ')}) ` +
      `VALUES (${AUDIT_CASTS.map((cast, i) => `$${i + 1}::${cast}`).join(', ')}) ON CONFLICT ("id") DO NOTHING RETURNING 1 AS "inserted"`,
    addUsage: addUsageStatement(table),
    readUsage:
      `SELECT "day"::text AS "day", "route", "outcome", ${[...USAGE_COUNT_COLUMNS, 'max_response_micros'].map((column) => `${quoted(column)}::text AS ${quoted(column)}`).join(', ')} ` +
      `FROM ${names.usage} WHERE "key_id" = $1::text AND "day" BETWEEN $2::bigint AND $3::bigint`,
    claimAlert: claimAlertStatement(table),
  };
}

/**
 * One `addUsage` batch, in one statement. Parameters: `$1` the batch id, `$2` `batch.now`, `$3`
 * `batch.now - RETAIN_BATCH_IDS_MS` (timestamptz), then one array per usage column
 * (`USAGE_COLUMNS`, `$4` …), element i of each being cell i. The cells travel as arrays so that
 * the statement's text and its parameter count are the same for any number of cells: no chunking
 * is needed to stay under the protocol's 65 535 parameters, and the whole batch stays in this one
 * statement's transaction (a batch split over several statements could be half applied).
 *
 * - `batch` records the id; when it is there already (a retry after a lost answer, or the same
 *   batch racing itself: the second insert waits for the first's transaction, then finds the id),
 *   it returns no row, and `held` and `added` lock and add nothing. It records the id also when
 *   no key of the batch exists: the batch is applied, its cells dropped.
 * - `held` is the batch's keys that exist in the key table, each row locked `FOR KEY SHARE` until
 *   the statement's transaction ends. `added` writes only their cells: the cells of a key the store
 *   does not hold (never inserted, or purged) are dropped. The lock is what makes this hold against
 *   a purge running at the same time: it conflicts with the purge's `FOR UPDATE` of the row (and
 *   with nothing else keygate runs: consumes, updates and rotations take `FOR NO KEY UPDATE`,
 *   other batches `FOR KEY SHARE`). A purge that locked the row first makes `held` wait for it, and a row deleted by the
 *   time the lock is granted is left out (READ COMMITTED re-checks a row it waited for), so its
 *   cells are dropped; a batch that locked the row first is committed before the purge's lock is
 *   granted, so the purge's next statement sees its cells and deletes them (see `purgeStatements`
 *   in postgres-sql.ts). The rows are locked in the purge's order, (`deleted_at`, `id`), so a batch
 *   and a purge that share several deleted keys never wait for each other in a cycle.
 * - `forgotten` deletes up to {@link CLEANUP_LIMIT} ids applied before `$3`, through the index on
 *   `applied_at`; `SKIP LOCKED` leaves ids another batch is deleting to it, so concurrent batches
 *   never wait for each other here (nor deadlock with their upserts).
 * - `added` is one multi-row upsert: a new cell is inserted, an existing one gets the counts added
 *   and the larger maximum, under the row lock `ON CONFLICT DO UPDATE` takes, so concurrent batches
 *   from any number of processes add up exactly. The caller sorts the cells (`checkedBatch`), so
 *   two batches lock shared cells in one order.
 *
 * Returns one row: `"applied"` (1, or 0 for a batch id seen before) and `"cells"` (rows written).
 */
function addUsageStatement(table: TableName): string {
  const names = companionNames(table);
  const columns = USAGE_COLUMNS.map(quoted).join(', ');
  const arrays = USAGE_ARRAY_CASTS.map((cast, i) => `$${i + 4}::${cast}`).join(', ');
  const sums = USAGE_COUNT_COLUMNS.map((column) => `${quoted(column)} = "u".${quoted(column)} + EXCLUDED.${quoted(column)}`);
  return `WITH "batch" AS (
  INSERT INTO ${names.usageBatches} ("id", "applied_at") VALUES ($1::text, $2::timestamptz)
  ON CONFLICT ("id") DO NOTHING
  RETURNING "id"
), "forgotten" AS (
  DELETE FROM ${names.usageBatches} WHERE "id" IN (
    SELECT "id" FROM ${names.usageBatches} WHERE "applied_at" < $3::timestamptz
    ORDER BY "applied_at" LIMIT ${CLEANUP_LIMIT} FOR UPDATE SKIP LOCKED)
), "held" AS MATERIALIZED (
  SELECT "k"."id" FROM ${table.qualified} AS "k"
  WHERE "k"."id" = ANY($4::text[]) AND EXISTS (SELECT FROM "batch")
  ORDER BY "k"."deleted_at", "k"."id"
  FOR KEY SHARE
), "added" AS (
  INSERT INTO ${names.usage} AS "u" (${columns})
  SELECT * FROM unnest(${arrays}) AS "c"(${columns})
  WHERE "c"."key_id" IN (SELECT "id" FROM "held")
  ON CONFLICT ("key_id", "day", "route", "outcome") DO UPDATE SET
    ${sums.join(',\n    ')},
    "max_response_micros" = greatest("u"."max_response_micros", EXCLUDED."max_response_micros")
  RETURNING 1
)
SELECT (SELECT count(*) FROM "batch")::int AS "applied", (SELECT count(*) FROM "added")::int AS "cells"`;
}

/**
 * `claimAlert`, in one statement. Parameters: `$1` the name, `$2` `expiresAt`, `$3` the caller's
 * `now` (timestamptz).
 *
 * The upsert inserts the claim, or takes over a lapsed one (`expires_at <= now`); a live claim
 * fails the `WHERE` and the statement returns no row. Claims of one name queue on its primary key:
 * a second insert of a new name waits for the first's transaction and then sees its row; a second
 * takeover of a lapsed claim waits for the first's row lock and then re-checks the `WHERE` on the
 * row the first wrote, which is live. So of any number of concurrent claims exactly one returns a
 * row.
 *
 * `lapsed` deletes up to {@link CLEANUP_LIMIT} other claims that have lapsed by the caller's clock,
 * through the index on `expires_at` (`SKIP LOCKED`: never waiting for a claim another statement
 * holds), so the table holds about the live claims only. It leaves `$1` alone: the upsert is
 * about that row, and one statement must not change a row twice.
 *
 * Returns one row (`"claimed"`) when this caller has the claim, none otherwise.
 */
function claimAlertStatement(table: TableName): string {
  const claims = companionNames(table).alertClaims;
  return `WITH "lapsed" AS (
  DELETE FROM ${claims} WHERE "name" IN (
    SELECT "name" FROM ${claims} WHERE "expires_at" <= $3::timestamptz AND "name" <> $1::text
    ORDER BY "expires_at" LIMIT ${CLEANUP_LIMIT} FOR UPDATE SKIP LOCKED)
)
INSERT INTO ${claims} AS "c" ("name", "expires_at") VALUES ($1::text, $2::timestamptz)
ON CONFLICT ("name") DO UPDATE SET "expires_at" = EXCLUDED."expires_at"
WHERE "c"."expires_at" <= $3::timestamptz
RETURNING 1 AS "claimed"`;
}

/** Which filters a `listAudit` call has: one statement text per shape. */
export interface AuditListShape {
  readonly keyId: boolean;
  readonly actorId: boolean;
  readonly tenantId: boolean;
  readonly environment: boolean;
  readonly from: boolean;
  readonly to: boolean;
  readonly after: boolean;
}

/**
 * `listAudit` for one shape. Parameters, in this order, only those of the shape: each text filter
 * (`AUDIT_TEXT_FILTERS` order), `from`, `to`, `after`'s (at, id), then the limit. Entries come in
 * (at, id) order, `at` as epoch milliseconds (text) and `changes` as JSON text, decoded by
 * `auditEntryFromRow`.
 *
 * Each filter column leads one of the audit table's indexes, followed by (at, id): the planner
 * reads one index range from the keyset position `("at", "id") > (…)` and stops after `limit`
 * entries. `id` is `COLLATE "C"`, and so is the keyset's id, so the order is byte order whatever
 * the database's collation.
 */
export function auditListStatement(table: TableName, shape: AuditListShape): string {
  const conditions: string[] = [];
  let index = 0;
  for (const [field, column] of AUDIT_TEXT_FILTERS) if (shape[field]) conditions.push(`${quoted(column)} = $${++index}::text`);
  if (shape.from) conditions.push(`"at" >= $${++index}::timestamptz`);
  if (shape.to) conditions.push(`"at" < $${++index}::timestamptz`);
  if (shape.after) {
    conditions.push(`("at", "id") > ($${index + 1}::timestamptz, $${index + 2}::text COLLATE "C")`);
    index += 2;
  }
  const where = conditions.length > 0 ? ` WHERE ${conditions.join(' AND ')}` : '';
  const select = `"id", ${epochMilliseconds('"at"')}::text AS "at", "action", "key_id", "actor_id", "actor_key_prefix", "tenant_id", "environment", "changes"::text AS "changes"`;
  // ORDER BY names the table's columns through the alias: a bare "at" would be the select list's
  // "at" (epoch milliseconds as text), which orders as text and matches no index.
  return `SELECT ${select} FROM ${companionNames(table).audit} AS "a"${where} ORDER BY "a"."at", "a"."id" LIMIT $${index + 1}::bigint`;
}
