-- keygate SqlStore schema for SQLite (3.37 or later, for STRICT tables), default table name.
-- Exactly the statements `await new SqlStore({ dialect: 'sqlite', client: db }).migrate()` runs,
-- in one BEGIN IMMEDIATE transaction. Instants are epoch milliseconds; lists and objects are JSON text.
-- For another table name: sqlSchema({ dialect: 'sqlite', table: 'api_keys' }) from keygate/sql.
-- Counters (use_count, day, day_count, tokens, tokens_at; minute, hour, month and their _count)
-- concurrency_leases (lease -> lapse instant) and lease_holds (leased mode: lease -> hold) are
-- written only by keygate.
-- Upgrades: columns added by later keygate versions (record fields, and keygate's own columns:
-- the minute, hour and month counters, concurrency_leases, lease_holds) are listed after the first version's counters;
-- their ALTER TABLE … ADD COLUMN follow, commented out, to run once on a table created before them.
-- deleted_at (soft delete, since version 3) is set by keys.delete(); the partial index on it
-- (deleted keys only) is what keys.purge() reads. rotation_frequency_days and alerts: version 4.
-- lease_holds (version 5) holds the reservations of keygate({ consistency: 'leased' }); keys.purge()
-- removes them with the row.
-- Tables named from the key table (version 4), written only by keygate: _audit (the audit trail,
-- kept until you delete old entries), _usage (usage cells, one per key, UTC day, route and outcome;
-- route '' = no route matched; keys.purge() removes a purged key's cells), _usage_batches (usage
-- batch ids applied, forgotten a day after), _alert_claims (alerts sent once across processes).

CREATE TABLE IF NOT EXISTS "keygate_api_keys" (
  "id"               TEXT NOT NULL,
  "key_prefix"       TEXT NOT NULL,
  "key_hash"         TEXT NOT NULL,
  "name"             TEXT NOT NULL,
  "description"      TEXT,
  "owner_id"         TEXT,
  "tenant_id"        TEXT,
  "environment"      TEXT,
  "status"           TEXT NOT NULL,
  "scopes"           TEXT NOT NULL DEFAULT '[]',          -- JSON array of strings
  "allowed_ips"      TEXT NOT NULL DEFAULT '[]',          -- JSON array of strings
  "max_uses"         INTEGER,
  "use_count"        INTEGER NOT NULL DEFAULT 0,
  "rate_limit"       TEXT,                                -- JSON { perSecond?, burst?, perMinute?, perHour?, perDay?, perMonth? } or NULL
  "expires_at"       INTEGER,                             -- epoch milliseconds
  "created_at"       INTEGER NOT NULL,                    -- epoch milliseconds
  "updated_at"       INTEGER NOT NULL,                    -- epoch milliseconds
  "last_used_at"     INTEGER,                             -- epoch milliseconds
  "revoked_at"       INTEGER,                             -- epoch milliseconds
  "rotated_from_id"  TEXT,
  "metadata"         TEXT NOT NULL DEFAULT '{}',          -- JSON object
  "tags"             TEXT NOT NULL DEFAULT '[]',          -- JSON array of strings
  "day"              INTEGER NOT NULL DEFAULT -1,         -- counters: UTC day index (epoch ms / 86400000) that day_count belongs to
  "day_count"        INTEGER NOT NULL DEFAULT 0,          -- counters: requests admitted in that UTC day
  "tokens"           REAL,                                -- counters: token bucket level at tokens_at (NULL = full)
  "tokens_at"        REAL NOT NULL DEFAULT 0,             -- counters: latest admitted instant, epoch milliseconds
  "month"            INTEGER NOT NULL DEFAULT -1,         -- counters: UTC calendar month index (year * 12 + month 0-11) that month_count belongs to
  "month_count"      INTEGER NOT NULL DEFAULT 0,          -- counters: requests admitted in that UTC calendar month
  "hour"             INTEGER NOT NULL DEFAULT -1,         -- counters: UTC hour index (epoch ms / 3600000) that hour_count belongs to
  "hour_count"       INTEGER NOT NULL DEFAULT 0,          -- counters: requests admitted in that UTC hour
  "minute"           INTEGER NOT NULL DEFAULT -1,         -- counters: UTC minute index (epoch ms / 60000) that minute_count belongs to
  "minute_count"     INTEGER NOT NULL DEFAULT 0,          -- counters: requests admitted in that UTC minute
  "concurrency_leases" TEXT NOT NULL DEFAULT '{}',        -- concurrency leases: JSON object, lease -> lapse instant in epoch milliseconds
  "allowed_origins"  TEXT NOT NULL DEFAULT '[]',          -- JSON array of strings
  "require_https"    INTEGER NOT NULL DEFAULT 0,          -- 0 or 1
  "client_certificate_sha256" TEXT NOT NULL DEFAULT '[]', -- JSON array of strings
  "max_concurrent"   INTEGER,
  "deleted_at"       INTEGER,                             -- epoch milliseconds
  "rotation_frequency_days" INTEGER,
  "alerts"           TEXT,                                -- JSON { quotaThreshold?, errorRateThreshold?, webhookUrl? } or NULL
  "lease_holds"      TEXT NOT NULL DEFAULT '{}',          -- leased mode: JSON object, lease -> { until, units, tokens, at } (instants in epoch ms)
  CONSTRAINT "keygate_api_keys_pkey" PRIMARY KEY ("id"),
  CONSTRAINT "keygate_api_keys_status_check" CHECK ("status" IN ('active', 'suspended', 'revoked'))
) STRICT;

-- Columns of later versions (CREATE TABLE above already has them). SQLite has no ADD COLUMN
-- IF NOT EXISTS: on a table created before them, run each of these once, before the indexes
-- below (an index may cover a later column).
-- ALTER TABLE "keygate_api_keys" ADD COLUMN "month" INTEGER NOT NULL DEFAULT -1;
-- ALTER TABLE "keygate_api_keys" ADD COLUMN "month_count" INTEGER NOT NULL DEFAULT 0;
-- ALTER TABLE "keygate_api_keys" ADD COLUMN "hour" INTEGER NOT NULL DEFAULT -1;
-- ALTER TABLE "keygate_api_keys" ADD COLUMN "hour_count" INTEGER NOT NULL DEFAULT 0;
-- ALTER TABLE "keygate_api_keys" ADD COLUMN "minute" INTEGER NOT NULL DEFAULT -1;
-- ALTER TABLE "keygate_api_keys" ADD COLUMN "minute_count" INTEGER NOT NULL DEFAULT 0;
-- ALTER TABLE "keygate_api_keys" ADD COLUMN "concurrency_leases" TEXT NOT NULL DEFAULT '{}';
-- ALTER TABLE "keygate_api_keys" ADD COLUMN "allowed_origins" TEXT NOT NULL DEFAULT '[]';
-- ALTER TABLE "keygate_api_keys" ADD COLUMN "require_https" INTEGER NOT NULL DEFAULT 0;
-- ALTER TABLE "keygate_api_keys" ADD COLUMN "client_certificate_sha256" TEXT NOT NULL DEFAULT '[]';
-- ALTER TABLE "keygate_api_keys" ADD COLUMN "max_concurrent" INTEGER;
-- ALTER TABLE "keygate_api_keys" ADD COLUMN "deleted_at" INTEGER;
-- ALTER TABLE "keygate_api_keys" ADD COLUMN "rotation_frequency_days" INTEGER;
-- ALTER TABLE "keygate_api_keys" ADD COLUMN "alerts" TEXT;
-- ALTER TABLE "keygate_api_keys" ADD COLUMN "lease_holds" TEXT NOT NULL DEFAULT '{}';

CREATE UNIQUE INDEX IF NOT EXISTS "keygate_api_keys_key_prefix_key" ON "keygate_api_keys" ("key_prefix");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_created_at_id_idx" ON "keygate_api_keys" ("created_at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_owner_id_idx" ON "keygate_api_keys" ("owner_id", "created_at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_tenant_id_idx" ON "keygate_api_keys" ("tenant_id", "created_at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_status_idx" ON "keygate_api_keys" ("status", "created_at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_deleted_at_idx" ON "keygate_api_keys" ("deleted_at") WHERE "deleted_at" IS NOT NULL;

CREATE TABLE IF NOT EXISTS "keygate_api_keys_audit" (
  "id"                    TEXT NOT NULL,
  "at"                    INTEGER NOT NULL, -- epoch milliseconds
  "action"                TEXT NOT NULL,    -- key.created, key.updated, …
  "key_id"                TEXT,             -- NULL for key.purged
  "actor_id"              TEXT,             -- NULL: no actor given
  "actor_key_prefix"      TEXT,
  "tenant_id"             TEXT,
  "environment"           TEXT,
  "changes"               TEXT NOT NULL,    -- JSON object
  CONSTRAINT "keygate_api_keys_audit_pkey" PRIMARY KEY ("id")
) STRICT;

CREATE INDEX IF NOT EXISTS "keygate_api_keys_audit_at_idx" ON "keygate_api_keys_audit" ("at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_audit_key_idx" ON "keygate_api_keys_audit" ("key_id", "at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_audit_actor_idx" ON "keygate_api_keys_audit" ("actor_id", "at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_audit_tenant_idx" ON "keygate_api_keys_audit" ("tenant_id", "at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_audit_env_idx" ON "keygate_api_keys_audit" ("environment", "at", "id");

CREATE TABLE IF NOT EXISTS "keygate_api_keys_usage" (
  "key_id"                TEXT NOT NULL,
  "day"                   INTEGER NOT NULL, -- UTC day index (epoch ms / 86400000)
  "route"                 TEXT NOT NULL,    -- '' = no route matched
  "outcome"               TEXT NOT NULL,    -- admitted, or the refusal code
  "requests"              INTEGER NOT NULL,
  "status_2xx"            INTEGER NOT NULL,
  "status_3xx"            INTEGER NOT NULL,
  "status_4xx"            INTEGER NOT NULL,
  "status_5xx"            INTEGER NOT NULL,
  "total_response_micros" INTEGER NOT NULL, -- microseconds
  "max_response_micros"   INTEGER NOT NULL, -- microseconds
  CONSTRAINT "keygate_api_keys_usage_pkey" PRIMARY KEY ("key_id", "day", "route", "outcome")
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS "keygate_api_keys_usage_batches" (
  "id"                    TEXT NOT NULL,
  "applied_at"            INTEGER NOT NULL, -- the batch's now, epoch milliseconds
  CONSTRAINT "keygate_api_keys_usage_batch_pkey" PRIMARY KEY ("id")
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS "keygate_api_keys_usage_applied_idx" ON "keygate_api_keys_usage_batches" ("applied_at");

CREATE TABLE IF NOT EXISTS "keygate_api_keys_alert_claims" (
  "name"                  TEXT NOT NULL,
  "expires_at"            INTEGER NOT NULL, -- epoch milliseconds
  CONSTRAINT "keygate_api_keys_alert_claims_pkey" PRIMARY KEY ("name")
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS "keygate_api_keys_alert_expiry_idx" ON "keygate_api_keys_alert_claims" ("expires_at");
