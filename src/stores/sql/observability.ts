/**
 * The dialect-neutral half of the audit trail, usage cells and alert claims in SQL: the arguments
 * checked and turned into column values once (so both dialects store one thing one way), and rows
 * turned back into entries and cells. Like `row.ts`, every object handed back is built here, fresh
 * for each call, never one a driver made.
 */
import { KeygateError, invalidArgument } from '../../errors.js';
import { ownValue } from '../../record/decode.js';
import type { AuditEntry, StoreAuditQuery } from '../../audit/entry.js';
import type { AlertClaim } from '../../alerts/claim.js';
import { RETAIN_BATCH_IDS_MS, type StoreUsageQuery, type UsageBatch, type UsageCell, USAGE_COUNT_FIELDS, cellKeyOf, mergeCell } from '../../usage/cells.js';
import { NO_ROUTE } from './companions.js';
import { type SqlDialect, assertStorable } from './values.js';

/** A database row: column name to value. */
type Row = Readonly<Record<string, unknown>>;

function isDate(value: unknown): value is Date {
  return Object.prototype.toString.call(value) === '[object Date]' && !Number.isNaN((value as Date).getTime());
}

/** Epoch milliseconds of a Date argument, or `invalid_argument` naming `field`. */
function instantOf(value: unknown, field: string): number {
  if (!isDate(value)) throw invalidArgument(field, 'must be a valid Date');
  return value.getTime();
}

function textOf(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0) throw invalidArgument(field, 'must be a non-empty string');
  return value;
}

function optionalTextOf(value: unknown, field: string): string | null {
  return value === undefined || value === null ? null : textOf(value, field);
}

/** An audit entry as its row holds it: instants in epoch milliseconds, `changes` as JSON text. */
export interface AuditRowValues {
  readonly id: string;
  readonly at: number;
  readonly action: string;
  readonly keyId: string | null;
  readonly actorId: string | null;
  readonly actorKeyPrefix: string | null;
  readonly tenantId: string | null;
  readonly environment: string | null;
  readonly changes: string;
}

/**
 * The column values of `entry`, or `invalid_argument` for a value the table could not give back
 * exactly (see `assertStorable`: a lone surrogate anywhere; in PostgreSQL U+0000, or an instant
 * before 4714 BC). Own properties only, as every reader of records: a polluted
 * `Object.prototype` never fills in an absent `tenantId`.
 */
export function auditRowValues(entry: AuditEntry, dialect: SqlDialect): AuditRowValues {
  // An absent actor (outside the type) is no actor, as `null` is.
  const actor = ownValue(entry, 'actor') ?? null;
  if (actor !== null && typeof actor !== 'object') throw invalidArgument('actor', 'must be null or { id, keyPrefix? }');
  const changes = ownValue(entry, 'changes');
  if (changes === null || typeof changes !== 'object' || Array.isArray(changes)) throw invalidArgument('changes', 'must be a plain JSON object');
  const values: AuditRowValues = {
    id: textOf(ownValue(entry, 'id'), 'id'),
    at: instantOf(ownValue(entry, 'at'), 'at'),
    action: textOf(ownValue(entry, 'action'), 'action'),
    keyId: optionalTextOf(ownValue(entry, 'keyId'), 'keyId'),
    actorId: actor === null ? null : textOf(ownValue(actor, 'id'), 'actor.id'),
    actorKeyPrefix: actor === null ? null : optionalTextOf(ownValue(actor, 'keyPrefix'), 'actor.keyPrefix'),
    tenantId: optionalTextOf(ownValue(entry, 'tenantId'), 'tenantId'),
    environment: optionalTextOf(ownValue(entry, 'environment'), 'environment'),
    changes: JSON.stringify(changes),
  };
  // The strings, the nested changes (keys and values) and the instant, as the record writes check them.
  assertStorable({ ...values, at: ownValue(entry, 'at'), changes }, dialect);
  return values;
}

/** `listAudit`'s query, checked: each filter present or not, instants in epoch milliseconds. */
export interface AuditFilters {
  readonly keyId?: string;
  readonly actorId?: string;
  readonly tenantId?: string;
  readonly environment?: string;
  readonly from?: number;
  readonly to?: number;
  readonly after?: { readonly at: number; readonly id: string };
  readonly limit: number;
}

/** The text filters of `listAudit`, with their columns, in the order the statements bind them. */
export const AUDIT_TEXT_FILTERS = [
  ['keyId', 'key_id'],
  ['actorId', 'actor_id'],
  ['tenantId', 'tenant_id'],
  ['environment', 'environment'],
] as const;

/**
 * The filters of `query` (own properties only: an inherited `keyId` is no filter), or
 * `invalid_argument` for a filter of the wrong type or a string the table could not hold.
 */
export function auditFilters(query: StoreAuditQuery, dialect: SqlDialect): AuditFilters {
  const filters: { -readonly [K in keyof AuditFilters]: AuditFilters[K] } = { limit: 0 };
  for (const [field] of AUDIT_TEXT_FILTERS) {
    const value = ownValue(query, field);
    if (value === undefined) continue;
    if (typeof value !== 'string') throw invalidArgument(field, 'must be a string');
    assertStorable({ [field]: value }, dialect);
    filters[field] = value;
  }
  const from = ownValue(query, 'from');
  if (from !== undefined) filters.from = instantOf(from, 'from');
  const to = ownValue(query, 'to');
  if (to !== undefined) filters.to = instantOf(to, 'to');
  const after = ownValue(query, 'after');
  if (after !== undefined) {
    if (after === null || typeof after !== 'object') throw invalidArgument('after', 'must be { at, id }');
    const id = ownValue(after, 'id');
    if (typeof id !== 'string') throw invalidArgument('after.id', 'must be a string');
    assertStorable({ 'after.id': id }, dialect);
    filters.after = { at: instantOf(ownValue(after, 'at'), 'after.at'), id };
  }
  const limit = ownValue(query, 'limit');
  if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 0) throw invalidArgument('limit', 'must be a non-negative integer');
  filters.limit = limit;
  return filters;
}

/** `invalid_record` for a stored audit row that is not what keygate writes (edited by hand). */
function invalidAuditRow(id: unknown, column: string, problem: string): KeygateError {
  const which = typeof id === 'string' && id.length <= 128 ? `audit entry ${JSON.stringify(id)}` : 'an audit entry';
  return new KeygateError('invalid_record', `the key store returned ${which} whose ${column} ${problem}`, { field: column });
}

function storedText(row: Row, column: string): string | null {
  const value = ownValue(row, column);
  if (value === null || value === undefined) return null;
  if (typeof value !== 'string') throw invalidAuditRow(ownValue(row, 'id'), column, 'is not text');
  return value;
}

/**
 * The entry an audit row holds. The row's `at` is epoch milliseconds (a number from SQLite, decimal
 * text from PostgreSQL) and `changes` JSON text. Absent optional fields stay absent (never present
 * as `undefined`), and an actor without a key prefix has no `keyPrefix` property.
 */
export function auditEntryFromRow(row: Row): AuditEntry {
  const id = storedText(row, 'id');
  const action = storedText(row, 'action');
  if (id === null || action === null) throw invalidAuditRow(id, id === null ? 'id' : 'action', 'is NULL');
  const at = new Date(Number(ownValue(row, 'at')));
  if (Number.isNaN(at.getTime())) throw invalidAuditRow(id, 'at', 'is not an instant a Date can hold');
  let changes: unknown;
  try {
    changes = JSON.parse(String(ownValue(row, 'changes')));
  } catch {
    throw invalidAuditRow(id, 'changes', 'does not hold valid JSON');
  }
  if (changes === null || typeof changes !== 'object' || Array.isArray(changes)) throw invalidAuditRow(id, 'changes', 'does not hold a JSON object');
  const actorId = storedText(row, 'actor_id');
  const keyPrefix = storedText(row, 'actor_key_prefix');
  const entry: AuditEntry = {
    id,
    at,
    action: action as AuditEntry['action'],
    keyId: storedText(row, 'key_id'),
    actor: actorId === null ? null : keyPrefix === null ? { id: actorId } : { id: actorId, keyPrefix },
    changes: changes as Record<string, unknown>,
  };
  const tenantId = storedText(row, 'tenant_id');
  if (tenantId !== null) entry.tenantId = tenantId;
  const environment = storedText(row, 'environment');
  if (environment !== null) entry.environment = environment;
  return entry;
}

/** A usage cell as its row holds it: the route encoded ({@link NO_ROUTE} for `null`). */
export interface UsageRowValues {
  readonly keyId: string;
  readonly day: number;
  readonly route: string;
  readonly outcome: string;
  /** `USAGE_COUNT_FIELDS` in order, then `maxResponseMicros`. */
  readonly counts: readonly number[];
}

/** A batch checked: its id, instants in epoch milliseconds, and its cells as rows. */
export interface CheckedBatch {
  readonly id: string;
  readonly now: number;
  /** `now - RETAIN_BATCH_IDS_MS`: the batch ids applied before it may be forgotten. */
  readonly forgetBefore: number;
  /** One per cell identity (duplicates merged), in a fixed order (see {@link checkedBatch}). */
  readonly cells: readonly UsageRowValues[];
}

function countOf(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw invalidArgument(field, 'must be a non-negative safe integer');
  return value;
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The batch's values, or `invalid_argument` naming the first cell field that is not what a cell
 * holds. Two cells of one identity (outside the contract, but harmless to accept) are merged by
 * `mergeCell`: PostgreSQL refuses an `INSERT … ON CONFLICT DO UPDATE` that meets one row twice.
 *
 * The cells are sorted by (keyId, day, route, outcome), the same order in every process: the
 * upsert locks rows in the order it writes them, so two concurrent batches sharing cells wait for
 * each other in one order instead of deadlocking.
 */
export function checkedBatch(batch: UsageBatch, dialect: SqlDialect): CheckedBatch {
  const id = textOf(ownValue(batch, 'id'), 'id');
  assertStorable({ id }, dialect);
  const now = instantOf(ownValue(batch, 'now'), 'now');
  assertStorable({ now: ownValue(batch, 'now') }, dialect);
  const cells = ownValue(batch, 'cells');
  if (!Array.isArray(cells)) throw invalidArgument('cells', 'must be an array');
  const merged = new Map<string, UsageCell>();
  cells.forEach((cell: unknown, index) => {
    const field = (name: string) => `cells[${index}].${name}`;
    if (cell === null || typeof cell !== 'object') throw invalidArgument(`cells[${index}]`, 'must be a usage cell');
    const route = ownValue(cell, 'route');
    if (route !== null && (typeof route !== 'string' || route === NO_ROUTE)) throw invalidArgument(field('route'), 'must be null or a non-empty string');
    const copy: UsageCell = {
      keyId: textOf(ownValue(cell, 'keyId'), field('keyId')),
      day: 0,
      route,
      outcome: textOf(ownValue(cell, 'outcome'), field('outcome')),
      requests: 0,
      status2xx: 0,
      status3xx: 0,
      status4xx: 0,
      status5xx: 0,
      totalResponseMicros: 0,
      maxResponseMicros: countOf(ownValue(cell, 'maxResponseMicros'), field('maxResponseMicros')),
    };
    const day = ownValue(cell, 'day');
    if (typeof day !== 'number' || !Number.isSafeInteger(day)) throw invalidArgument(field('day'), 'must be a safe integer');
    copy.day = day;
    for (const count of USAGE_COUNT_FIELDS) copy[count] = countOf(ownValue(cell, count), field(count));
    assertStorable({ [field('keyId')]: copy.keyId, [field('route')]: copy.route, [field('outcome')]: copy.outcome }, dialect);
    const key = cellKeyOf(copy);
    const existing = merged.get(key);
    if (!existing) {
      merged.set(key, copy);
      return;
    }
    mergeCell(existing, copy);
    // A sum past 2^53 would be stored rounded: refuse it rather than store a count that reads back wrong.
    if (![...USAGE_COUNT_FIELDS].every((count) => Number.isSafeInteger(existing[count]))) throw invalidArgument(`cells[${index}]`, 'adds up with an earlier cell of its identity to more than Number.MAX_SAFE_INTEGER');
  });
  const rows = [...merged.values()].map((cell) => ({
    keyId: cell.keyId,
    day: cell.day,
    route: cell.route ?? NO_ROUTE,
    outcome: cell.outcome,
    counts: [...USAGE_COUNT_FIELDS.map((count) => cell[count]), cell.maxResponseMicros],
  }));
  rows.sort((a, b) => compareText(a.keyId, b.keyId) || a.day - b.day || compareText(a.route, b.route) || compareText(a.outcome, b.outcome));
  return { id, now, forgetBefore: now - RETAIN_BATCH_IDS_MS, cells: rows };
}

/**
 * The cells as one array per usage column (key ids, days, routes, outcomes, then each count and
 * the maximum): element i of each array is cell i. PostgreSQL takes them as typed arrays and
 * `unnest`s them back into rows.
 */
export function usageColumnArrays(cells: readonly UsageRowValues[]): unknown[][] {
  const arrays: unknown[][] = [[], [], [], [], ...[...USAGE_COUNT_FIELDS, 'maxResponseMicros'].map(() => [])];
  for (const cell of cells) {
    [cell.keyId, cell.day, cell.route, cell.outcome, ...cell.counts].forEach((value, i) => arrays[i]?.push(value));
  }
  return arrays;
}

/** `readUsage`'s key and day range, checked; `null` when the range holds no day (nothing to read). */
export function usageRange(query: StoreUsageQuery, dialect: SqlDialect): { keyId: string; fromDay: number; toDay: number } | null {
  const keyId = ownValue(query, 'keyId');
  if (typeof keyId !== 'string') throw invalidArgument('keyId', 'must be a string');
  assertStorable({ keyId }, dialect);
  const from = ownValue(query, 'fromDay');
  const to = ownValue(query, 'toDay');
  if (typeof from !== 'number' || Number.isNaN(from)) throw invalidArgument('fromDay', 'must be a number');
  if (typeof to !== 'number' || Number.isNaN(to)) throw invalidArgument('toDay', 'must be a number');
  // Days are safe integers: an open or fractional bound is the first or last whole day inside it,
  // so that the bounds bind as integers and the primary key's range read serves them.
  const fromDay = Math.max(Math.ceil(from), Number.MIN_SAFE_INTEGER);
  const toDay = Math.min(Math.floor(to), Number.MAX_SAFE_INTEGER);
  return fromDay > toDay ? null : { keyId, fromDay, toDay };
}

/** `invalid_record` for a stored usage row that is not what keygate writes. */
function invalidUsageRow(keyId: string, column: string, problem: string): KeygateError {
  const which = keyId.length <= 128 ? `a usage cell of key ${JSON.stringify(keyId)}` : 'a usage cell';
  return new KeygateError('invalid_record', `the key store returned ${which} whose ${column} ${problem}`, { field: column });
}

/** A stored whole number (an INTEGER from SQLite, bigint text from PostgreSQL), exact or refused. */
function storedInteger(keyId: string, row: Row, column: string, nonNegative: boolean): number {
  const value = ownValue(row, column);
  const number = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value) : Number.NaN;
  // Past 2^53 a count would read back rounded: say so instead of returning a wrong number.
  if (!Number.isSafeInteger(number) || (nonNegative && number < 0)) {
    throw invalidUsageRow(keyId, column, nonNegative ? 'is not a non-negative safe integer' : 'is not a safe integer');
  }
  return number;
}

/** The cell a usage row holds: numbers back from their columns, the route decoded ('' is `null`). */
export function usageCellFromRow(keyId: string, row: Row): UsageCell {
  const route = ownValue(row, 'route');
  const outcome = ownValue(row, 'outcome');
  if (typeof route !== 'string') throw invalidUsageRow(keyId, 'route', 'is not text');
  if (typeof outcome !== 'string') throw invalidUsageRow(keyId, 'outcome', 'is not text');
  return {
    keyId,
    day: storedInteger(keyId, row, 'day', false),
    route: route === NO_ROUTE ? null : route,
    outcome,
    requests: storedInteger(keyId, row, 'requests', true),
    status2xx: storedInteger(keyId, row, 'status_2xx', true),
    status3xx: storedInteger(keyId, row, 'status_3xx', true),
    status4xx: storedInteger(keyId, row, 'status_4xx', true),
    status5xx: storedInteger(keyId, row, 'status_5xx', true),
    totalResponseMicros: storedInteger(keyId, row, 'total_response_micros', true),
    maxResponseMicros: storedInteger(keyId, row, 'max_response_micros', true),
  };
}

/** A claim checked: the name, and its instants in epoch milliseconds. */
export interface CheckedClaim {
  readonly name: string;
  readonly expiresAt: number;
  readonly now: number;
}

/** The claim's values, or `invalid_argument` (a name the table could not hold exactly included). */
export function checkedClaim(claim: AlertClaim, dialect: SqlDialect): CheckedClaim {
  const name = textOf(ownValue(claim, 'name'), 'name');
  const expiresAt = ownValue(claim, 'expiresAt');
  const now = ownValue(claim, 'now');
  const checked = { name, expiresAt: instantOf(expiresAt, 'expiresAt'), now: instantOf(now, 'now') };
  assertStorable({ name, expiresAt, now }, dialect);
  return checked;
}
