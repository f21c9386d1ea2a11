/**
 * The shapes of the public contract: the stored record, its public view, and the inputs of the
 * manager. Stores persist {@link ApiKeyRecord}; everything returned to users is an {@link ApiKey}.
 * How each record field is stored, validated and initialised is described once, in
 * `record/schema.ts`; the compiler keeps that table and {@link ApiKeyRecord} in step.
 */

import type { Actor, AuditEntry } from './audit/entry.js';

/** Lifecycle state of a key. Only `active` keys are admitted. */
export type ApiKeyStatus = 'active' | 'suspended' | 'revoked';

export { API_KEY_STATUSES } from './record/schema.js';

/**
 * Per-key rate limits. Omit a field for no limit of that kind.
 *
 * - `perSecond`: token bucket refilled at this many requests per second.
 * - `burst`: bucket capacity (defaults to `perSecond`); lets a quiet client spend a short burst.
 * - `perMinute`, `perHour`, `perDay`: quotas per fixed UTC window (a day resets at 00:00:00Z).
 * - `perMonth`: quota per UTC calendar month, reset at 00:00:00Z on the 1st.
 *
 * Every admitted request counts against every window at once; a request refused by one counts in none.
 */
export interface RateLimit {
  perSecond?: number;
  burst?: number;
  perMinute?: number;
  perHour?: number;
  perDay?: number;
  perMonth?: number;
}

/**
 * When keygate warns about a key (events `quota.threshold` and `error_rate.threshold`, and a signed
 * webhook when `webhookUrl` is set). Omit a field for keygate's default; `null` on the record for none.
 */
export interface ApiKeyAlerts {
  /**
   * Fraction of `maxUses`, the day quota or the month quota (0 < f < 1) at which to alert, once
   * per key, window and threshold; keygate alerts at 100 % too.
   */
  quotaThreshold?: number;
  /**
   * Fraction (0 < f ≤ 1) of a UTC day's requests answered with an error (4xx or 5xx) at which to
   * alert, once per key and day, counted from the usage analytics (`usage: true`).
   */
  errorRateThreshold?: number;
  /** An `http:` or `https:` URL that receives these alerts as Standard Webhooks (`keygate({ webhooks })`). */
  webhookUrl?: string;
}

/** The record a store keeps. `keyHash` never leaves the library. */
export interface ApiKeyRecord {
  /** UUID. */
  id: string;
  /** `<prefix>_<lookupId>`: unique, indexed, safe to log. */
  keyPrefix: string;
  /** Algorithm-tagged hash of the secret (bcrypt `$2b$…` or `$hmac-sha256$…`). */
  keyHash: string;
  name: string;
  description?: string;
  ownerId?: string;
  tenantId?: string;
  environment?: string;
  status: ApiKeyStatus;
  scopes: string[];
  /** IPs or CIDRs (v4 and v6); empty admits any address. */
  allowedIps: string[];
  maxUses: number | null;
  useCount: number;
  rateLimit: RateLimit | null;
  expiresAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
  lastUsedAt: Date | null;
  /**
   * When the key stops working. Set to now by `revoke`; set to the end of the grace period by
   * `rotate`, while `status` stays `active` until then.
   */
  revokedAt: Date | null;
  rotatedFromId?: string;
  metadata: Record<string, unknown>;
  tags: string[];
  /**
   * Browser origins allowed to use the key (`https://app.example.com`, `https://*.example.com`);
   * empty admits any. Checked against `Origin` (or `Referer`): it stops other websites reusing a
   * publishable key in honest browsers, not a client that forges the header.
   */
  allowedOrigins: string[];
  /** Refuse requests that did not arrive over TLS (`req.secure`). */
  requireHttps: boolean;
  /** SHA-256 fingerprints (64 lower-case hex digits) of the client certificates allowed (mTLS); empty pins none. */
  clientCertificateSha256: string[];
  /**
   * At most this many requests of the key in flight at once, across every process sharing the
   * store; `null` for no limit. A slot is taken by the consume and given back when the response
   * ends (or, for a process that died, after `concurrencyLeaseMs`).
   */
  maxConcurrent: number | null;
  /**
   * When the key was deleted (`keys.delete()`): it is revoked, left out of `list()` unless
   * `includeDeleted`, and removed for good by `keys.purge()`. `null` for a key not deleted.
   */
  deletedAt: Date | null;
  /**
   * The key should be rotated once it is this many days old (`keys.scanKeys()` emits
   * `key.rotation_due`); `null` for no schedule. keygate never rotates a key by itself.
   */
  rotationFrequencyDays: number | null;
  /** When to warn about this key's quotas and error rate, and where to send the warnings; `null` for keygate's defaults without a webhook. */
  alerts: ApiKeyAlerts | null;
}

/**
 * The public view of a key: the record without `keyHash`, plus `isActive`.
 * It is what the manager returns and what `req.apiKey` holds.
 */
export interface ApiKey extends Omit<ApiKeyRecord, 'keyHash'> {
  /** Status active, not expired, and not revoked (nor past a rotation grace period). */
  isActive: boolean;
  /** The key's `environment` is `test` (with `prefix: { live, test }`: a key minted with the test prefix). */
  isTestKey: boolean;
}

/** Input of `keys.create()`. Only `name` is required. */
export interface CreateApiKeyInput {
  name: string;
  description?: string;
  ownerId?: string;
  tenantId?: string;
  environment?: string;
  /** @default [] */
  scopes?: string[];
  /** @default [] (any address) */
  allowedIps?: string[];
  /** @default null (unlimited) */
  maxUses?: number | null;
  /** @default null (unlimited) */
  rateLimit?: RateLimit | null;
  /** A Date, an ISO string or epoch milliseconds. @default null (never) */
  expiresAt?: Date | string | number | null;
  /** @default {} */
  metadata?: Record<string, unknown>;
  /** @default [] */
  tags?: string[];
  /** @default 'active' */
  status?: ApiKeyStatus;
  /** @default [] (any origin) */
  allowedOrigins?: string[];
  /** @default false */
  requireHttps?: boolean;
  /** Colons and upper case accepted. @default [] (no certificate required) */
  clientCertificateSha256?: string[];
  /** A positive integer. @default null (no limit) */
  maxConcurrent?: number | null;
  /** Days after creation when the key is due for rotation, 1–36500. @default null (no schedule) */
  rotationFrequencyDays?: number | null;
  /** @default null (keygate's default thresholds, no webhook) */
  alerts?: ApiKeyAlerts | null;
}

/** Fields `keys.update()` may change: the settings of `create`, not the owner. `null` clears a nullable field. */
export interface UpdateApiKeyInput
  extends Partial<
    Pick<
      CreateApiKeyInput,
      'name' | 'scopes' | 'allowedIps' | 'maxUses' | 'rateLimit' | 'expiresAt' | 'metadata' | 'tags' | 'status' | 'allowedOrigins' | 'requireHttps' | 'clientCertificateSha256' | 'maxConcurrent' | 'rotationFrequencyDays' | 'alerts'
    >
  > {
  /** `null` removes the description. */
  description?: string | null;
}

/** Filters and page of `keys.list()`. */
export interface ListApiKeysInput {
  ownerId?: string;
  tenantId?: string;
  status?: ApiKeyStatus;
  /** Page size, 1–1000. @default 100 */
  limit?: number;
  /** Opaque cursor from a previous page's `nextCursor`. */
  cursor?: string;
  /** Also list deleted keys (`keys.delete()`), which are left out otherwise. @default false */
  includeDeleted?: boolean;
}

/** What `keys.purge()` removes. */
export interface PurgeApiKeysInput {
  /** Remove every key deleted before this instant (a Date, an ISO string or epoch milliseconds). */
  deletedBefore: Date | string | number;
  /** Who is purging, for the `key.purged` event and the audit trail. */
  actor?: string | Actor;
}

/** Filters and page of `keys.auditLog()`. Entries come oldest first. */
export interface AuditLogQuery {
  /** Only entries about this key. */
  keyId?: string;
  /** Only entries made by this actor id (for changes made through the admin API: the calling key's id). */
  actor?: string;
  /** Only entries at or after this instant (a Date, an ISO string or epoch milliseconds). */
  from?: Date | string | number;
  /** Only entries before this instant. */
  to?: Date | string | number;
  /** Only entries about keys of this tenant (the admin API sets it for a tenant's caller). */
  tenantId?: string;
  /** Only entries about keys of this environment. */
  environment?: string;
  /** Page size, 1–1000. @default 100 */
  limit?: number;
  /** Opaque cursor from a previous page's `nextCursor`. */
  cursor?: string;
}

/** One page of the audit trail. `nextCursor` is present while more pages follow. */
export interface AuditPage {
  items: AuditEntry[];
  nextCursor?: string;
}

/** Options of the manager's writes (`create`, `update`, `revoke`, `delete`). */
export interface WriteOptions {
  /**
   * Who makes the change, for the `key.*` event and the audit trail: an id (a user, a service) or
   * `{ id, keyPrefix? }`. The admin API passes the calling key. @default none (`actor: null`)
   */
  actor?: string | Actor;
}

/** One page of keys. `nextCursor` is present while more pages follow. */
export interface ApiKeyPage {
  items: ApiKey[];
  nextCursor?: string;
}

/** A newly minted key: the raw `key`, shown exactly once, and its view. */
export interface CreatedApiKey {
  key: string;
  apiKey: ApiKey;
}
