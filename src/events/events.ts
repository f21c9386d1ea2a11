/**
 * keygate's events: their names, their payloads and the `node:diagnostics_channel` channel each is
 * published on. A payload never carries a raw key, a secret or a hash: keys appear as their
 * `ApiKey` view, or as `keyId` and `keyPrefix`.
 */
import type { Actor } from '../audit/entry.js';
import type { RefusalCode } from '../errors.js';
import type { ApiKey } from '../types.js';

/** Every event keygate emits, in the order the README documents them. */
export const EVENT_NAMES = [
  'key.created',
  'key.updated',
  'key.revoked',
  'key.rotated',
  'key.deleted',
  'key.purged',
  'request.admitted',
  'request.refused',
  'quota.threshold',
  'error_rate.threshold',
  'key.expiring',
  'key.rotation_due',
] as const;

/** One of {@link EVENT_NAMES}. */
export type KeygateEventName = (typeof EVENT_NAMES)[number];

/** The `node:diagnostics_channel` channel of an event: `keygate:` and its name (`keygate:key.created`). */
export function channelNameOf(event: KeygateEventName): `keygate:${KeygateEventName}` {
  return `keygate:${event}`;
}

/** What every management event says: the key as it is after the change, who changed it, and when. */
export interface KeyChangeEvent {
  /** The key's view after the change (for `key.rotated`, the old key). */
  apiKey: ApiKey;
  /** Who made the change: the calling key of the admin API, or the `actor` given to the manager; `null` if none was given. */
  actor: Actor | null;
  /** When the change was made (keygate's clock). */
  at: Date;
}

/** `key.updated`: which fields the update set. */
export interface KeyUpdatedEvent extends KeyChangeEvent {
  /** Names of the fields the patch set (their new values are on `apiKey`). */
  changes: string[];
}

/** `key.rotated`: the old key (`apiKey`) and the key that replaces it. */
export interface KeyRotatedEvent extends KeyChangeEvent {
  replacement: ApiKey;
  /** How long the old key keeps working; 0 when it was revoked at once. */
  gracePeriodMs: number;
}

/** `key.purged`: keys removed for good by one `purge()`. */
export interface KeysPurgedEvent {
  /** How many keys were removed. */
  removed: number;
  /** The `deletedBefore` of the purge. */
  deletedBefore: Date;
  actor: Actor | null;
  at: Date;
}

/**
 * `request.admitted` and `request.refused`, emitted when the response has ended (or its connection
 * closed), so `route`, `statusCode` and `durationMs` are known; `keys.verify()` emits them when it
 * answers, without those.
 */
export interface RequestEvent {
  /** The key's id and keyPrefix once its secret verified; `null` for a request refused before (missing, malformed or wrong key). */
  keyId: string | null;
  keyPrefix: string | null;
  /** Express's route pattern (`/v1/leads/:id`), never the raw URL; `null` when no route matched. */
  route: string | null;
  /** The HTTP method; absent for `keys.verify()`. */
  method?: string;
  /** The client address as keygate saw it (`req.ip`, or `verify({ ip })`), when known. */
  ip?: string;
  /** The response's status; absent when the connection closed before a response, and for `keys.verify()`. */
  statusCode?: number;
  /** From authentication to the end of the response, in milliseconds; absent for `keys.verify()`. */
  durationMs?: number;
  /** When the decision was made (keygate's clock). */
  at: Date;
}

/** `request.refused`: a {@link RequestEvent} with the refusal. */
export interface RequestRefusedEvent extends RequestEvent {
  code: RefusalCode;
}

/** The windows whose use `quota.threshold` watches. */
export type QuotaWindow = 'lifetime' | 'day' | 'month';

/**
 * `quota.threshold`: an admitted request brought a key's use of a window to a threshold (a fraction
 * of `maxUses`, of the day quota or of the month quota). Emitted once per key, window and threshold:
 * the counts are taken in the store's atomic consume, so exactly one request in all processes
 * sharing the store reaches each mark.
 */
export interface QuotaThresholdEvent {
  keyId: string;
  keyPrefix: string;
  window: QuotaWindow;
  /** The fraction reached, such as 0.8 or 1. */
  threshold: number;
  /** Uses counted in the window, this request included. */
  used: number;
  /** The window's limit (`maxUses`, `perDay` or `perMonth`). */
  limit: number;
  /** Start of the window (UTC day or month); absent for `lifetime`. */
  windowStart?: Date;
  at: Date;
}

/**
 * `error_rate.threshold`: the share of a key's requests of one UTC day answered 4xx or 5xx reached
 * its `alerts.errorRateThreshold` (with at least `errorRateMinRequests` requests that day).
 * Emitted once per key and day across the processes sharing a store that can claim alerts.
 */
export interface ErrorRateThresholdEvent {
  keyId: string;
  keyPrefix: string;
  /** The UTC day, `YYYY-MM-DD`. */
  day: string;
  threshold: number;
  /** Errors over requests of that day, as counted when the threshold was seen. */
  errorRate: number;
  requests: number;
  errors: number;
  at: Date;
}

/** `key.expiring`: found by `keys.scanKeys()`, the key expires within the horizon asked for. */
export interface KeyExpiringEvent {
  apiKey: ApiKey;
  expiresAt: Date;
  /** Milliseconds from the scan to `expiresAt`. */
  expiresInMs: number;
  at: Date;
}

/** `key.rotation_due`: found by `keys.scanKeys()`, the key is older than its `rotationFrequencyDays`. */
export interface KeyRotationDueEvent {
  apiKey: ApiKey;
  /** `createdAt` plus `rotationFrequencyDays`. */
  dueAt: Date;
  at: Date;
}

/** Each event's payload. */
export interface KeygateEvents {
  'key.created': KeyChangeEvent;
  'key.updated': KeyUpdatedEvent;
  'key.revoked': KeyChangeEvent;
  'key.rotated': KeyRotatedEvent;
  'key.deleted': KeyChangeEvent;
  'key.purged': KeysPurgedEvent;
  'request.admitted': RequestEvent;
  'request.refused': RequestRefusedEvent;
  'quota.threshold': QuotaThresholdEvent;
  'error_rate.threshold': ErrorRateThresholdEvent;
  'key.expiring': KeyExpiringEvent;
  'key.rotation_due': KeyRotationDueEvent;
}

/** A listener of one event. What it returns is ignored; a promise it returns is never awaited. */
export type KeygateListener<E extends KeygateEventName> = (payload: KeygateEvents[E]) => unknown;
