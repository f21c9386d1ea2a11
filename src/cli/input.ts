/**
 * From command-line values to the manager's inputs. The parser only shapes values (splits lists,
 * reads digits as numbers, parses JSON); every rule is the manager's own validation, run here
 * before the store is opened so that wrong input neither connects nor writes, and run again by the
 * manager itself.
 */
import { InvalidArgumentError } from 'commander';
import { type KeygateError, invalidArgument, isKeygateError } from '../errors.js';
import { count, rateLimit, recordId, validateCreate, validateList, validatePurge, validateUpdate } from '../manager/validate.js';
import { RATE_LIMIT_FIELDS } from '../record/schema.js';
import type { CreateApiKeyInput, ListApiKeysInput, RateLimit, UpdateApiKeyInput } from '../types.js';
import { usageError } from './exit.js';

/** Parser of a list option: comma-separated, and repeatable (`--scopes a,b --scopes c`). `''` adds nothing. */
export function collectList(value: string, previous: unknown): string[] {
  const list = Array.isArray(previous) ? (previous as string[]) : [];
  return value.trim() === '' ? list : [...list, ...value.split(',').map((entry) => entry.trim())];
}

/** Parser of an integer option: digits become a number; anything else is left for the manager to refuse by name. */
export function integerValue(value: string): number | string {
  return /^\d+$/.test(value.trim()) ? Number(value.trim()) : value;
}

/** Parser of an instant: epoch milliseconds as digits, otherwise the ISO 8601 text. */
export function instantValue(value: string): number | string {
  return integerValue(value);
}

/** Parser of `--metadata`: a JSON object. */
export function jsonObject(value: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    throw new InvalidArgumentError('It must be a JSON object such as \'{"plan":"pro"}\'.');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new InvalidArgumentError('It must be a JSON object, not an array or a scalar.');
  return parsed as Record<string, unknown>;
}

/** The options `create` and `update` share, as commander hands them over (`false` for `--no-…`). */
export interface SettingsFlags {
  name?: string;
  description?: string | false;
  ownerId?: string;
  tenantId?: string;
  environment?: string;
  scopes?: string[] | false;
  allowedIps?: string[] | false;
  maxUses?: number | string | false;
  perSecond?: number | string;
  burst?: number | string;
  perMinute?: number | string;
  perHour?: number | string;
  perDay?: number | string;
  perMonth?: number | string;
  /** Only `--no-rate-limit` (update): `false`. */
  rateLimit?: boolean;
  expiresAt?: number | string | false;
  metadata?: Record<string, unknown>;
  tags?: string[] | false;
  status?: string;
  allowedOrigins?: string[] | false;
  requireHttps?: boolean;
  clientCertificateSha256?: string[] | false;
  maxConcurrent?: number | string | false;
}

const LIST_FIELDS = ['scopes', 'allowedIps', 'tags', 'allowedOrigins', 'clientCertificateSha256'] as const;
const NULLABLE_FIELDS = ['maxUses', 'expiresAt', 'maxConcurrent'] as const;

/** The rate limits given as flags, or `undefined` when none was. */
function givenLimits(flags: SettingsFlags): Record<string, unknown> | undefined {
  const limits: Record<string, unknown> = {};
  for (const field of RATE_LIMIT_FIELDS) if (flags[field] !== undefined) limits[field] = flags[field];
  return Object.keys(limits).length > 0 ? limits : undefined;
}

/** The fields `create` and `update` share, from their flags. */
function settings(flags: SettingsFlags): Record<string, unknown> {
  const input: Record<string, unknown> = {};
  if (flags.name !== undefined) input.name = flags.name;
  if (flags.description !== undefined) input.description = flags.description === false ? null : flags.description;
  for (const field of LIST_FIELDS) {
    const value = flags[field];
    if (value !== undefined) input[field] = value === false ? [] : value;
  }
  for (const field of NULLABLE_FIELDS) {
    const value = flags[field];
    if (value !== undefined) input[field] = value === false ? null : value;
  }
  if (flags.metadata !== undefined) input.metadata = flags.metadata;
  if (flags.status !== undefined) input.status = flags.status;
  if (flags.requireHttps !== undefined) input.requireHttps = flags.requireHttps;
  return input;
}

/** The input of `keys.create()`, validated as the manager validates it. */
export function createInput(flags: SettingsFlags, now: number): CreateApiKeyInput {
  const input = settings(flags);
  for (const field of ['ownerId', 'tenantId', 'environment'] as const) if (flags[field] !== undefined) input[field] = flags[field];
  const limits = givenLimits(flags);
  if (limits) input.rateLimit = limits;
  const valid = validateCreate(input);
  // The manager's one check beyond the fields' own rules, made here so nothing is opened for it.
  if (valid.expiresAt !== null && valid.expiresAt.getTime() <= now) throw invalidArgument('expiresAt', 'must be in the future');
  return input as unknown as CreateApiKeyInput;
}

/** What `update` asks for: the patch, and rate limits to merge into the key's own (or `undefined`). */
export interface UpdatePlan {
  patch: UpdateApiKeyInput;
  /** Limits to set in the key's current `rateLimit`, keeping its others; `undefined` when the patch says it all. */
  mergeLimits: RateLimit | undefined;
}

/**
 * The patch of `keys.update()`. Rate-limit flags change those limits and keep the key's others;
 * `--no-rate-limit` clears them all (and with limit flags, replaces them all).
 */
export function updatePlan(id: string, flags: SettingsFlags): UpdatePlan {
  recordId(id);
  const patch = settings(flags);
  const limits = givenLimits(flags);
  let mergeLimits: RateLimit | undefined;
  if (flags.rateLimit === false) patch.rateLimit = limits ?? null;
  else if (limits) {
    // Each limit's own rule now; the merged whole (burst needs perSecond) when the key is read.
    for (const [field, value] of Object.entries(limits)) rateLimit(field === 'burst' ? { perSecond: 1, burst: value } : { [field]: value });
    mergeLimits = limits as RateLimit;
  }
  if (Object.keys(patch).length === 0 && mergeLimits === undefined) {
    throw usageError('nothing to change; give at least one option (keygate update --help lists them)');
  }
  validateUpdate(patch);
  return { patch: patch as UpdateApiKeyInput, mergeLimits };
}

/** The options of `list`. */
export interface ListFlags {
  ownerId?: string;
  tenantId?: string;
  status?: string;
  limit?: number | string;
  cursor?: string;
  includeDeleted?: boolean;
}

export function listInput(flags: ListFlags): ListApiKeysInput {
  const query: Record<string, unknown> = {};
  for (const field of ['ownerId', 'tenantId', 'status', 'limit', 'cursor', 'includeDeleted'] as const) {
    if (flags[field] !== undefined) query[field] = flags[field];
  }
  validateList(query);
  return query as ListApiKeysInput;
}

export function gracePeriod(value: number | string | undefined): number {
  return value === undefined ? 0 : count(value, 'gracePeriodMs');
}

export function purgeBefore(value: number | string): Date {
  return validatePurge({ deletedBefore: value }).deletedBefore;
}

export { recordId };

/** The command-line option a manager field stands for: `maxUses` → `--max-uses`, `rateLimit.perDay` → `--per-day`. */
export function flagOf(field: string): string {
  const base = field.replace(/\[\d+\]$/, '');
  if (base === 'id') return '<id>';
  if (base === 'rateLimit') return 'the rate-limit options';
  const name = base.startsWith('rateLimit.') ? base.slice('rateLimit.'.length) : base.startsWith('metadata') ? 'metadata' : base;
  return `--${name.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`;
}

/**
 * An `invalid_argument` message in command-line terms: `--max-uses: must be a non-negative
 * integer`, `--scopes (entry 2): …`.
 */
export function describeInvalid(error: KeygateError): string {
  const field = error.field ?? '';
  let problem = field && error.message.startsWith(`${field}: `) ? error.message.slice(field.length + 2) : error.message;
  if (!field) return problem;
  // The manager's words for its callers' types, in command-line terms.
  problem = problem
    .replace(/^needs perSecond$/, 'needs --per-second')
    .replace(/^must be a Date, an ISO 8601 string with a time zone \((e\.g\. "[^"]+")\), epoch milliseconds or null$/, 'must be an ISO 8601 date or date-time with a time zone ($1) or epoch milliseconds');
  if (field === 'id') return problem.startsWith('must') ? `the id ${problem}` : problem;
  const entry = /\[(\d+)\]$/.exec(field);
  const where = field.startsWith('metadata.') || field.startsWith('metadata[') ? ` (at ${field})` : entry ? ` (entry ${Number(entry[1]) + 1})` : '';
  return `${flagOf(field)}${where}: ${problem}`;
}

export function isInvalidArgument(error: unknown): error is KeygateError {
  return isKeygateError(error) && error.code === 'invalid_argument';
}
