-- keygate SqlStore schema for PostgreSQL (12 or later), default table name.
-- Exactly the statements `await new SqlStore({ dialect: 'postgres', client }).migrate()` runs
-- (migrate() also takes an advisory lock first and runs them in one transaction).
-- For another table name: sqlSchema({ dialect: 'postgres', table: 'auth.api_keys' }) from keygate/sql.
-- Counters (use_count, day, day_count, tokens, tokens_at; minute, hour, month and their _count)
-- concurrency_leases (lease -> lapse instant) and lease_holds (leased mode: lease -> hold) are
-- written only by keygate.
-- Upgrades: columns added by later keygate versions (record fields, and keygate's own columns:
-- the minute, hour and month counters, concurrency_leases, lease_holds) are listed after the first version's counters,
-- and added to an existing table by ALTER TABLE … ADD COLUMN IF NOT EXISTS after the CREATE TABLE.
-- deleted_at (soft delete, since version 3) is set by keys.delete(); the partial index on it
-- (deleted keys only) is what keys.purge() reads. rotation_frequency_days and alerts: version 4.
-- lease_holds (version 5) holds the reservations of keygate({ consistency: 'leased' }); keys.purge()
-- removes them with the row.
-- Tables named from the key table (version 4), written only by keygate: _audit (the audit trail,
-- kept until you delete old entries), _usage (usage cells, one per key, UTC day, route and outcome;
-- route '' = no route matched; keys.purge() removes a purged key's cells), _usage_batches (usage
-- batch ids applied, forgotten a day after), _alert_claims (alerts sent once across processes).

CREATE TABLE IF NOT EXISTS "keygate_api_keys" (
  "id"               text COLLATE "C" NOT NULL,
  "key_prefix"       text COLLATE "C" NOT NULL,
  "key_hash"         text NOT NULL,
  "name"             text NOT NULL,
  "description"      text,
  "owner_id"         text,
  "tenant_id"        text,
  "environment"      text,
  "status"           text NOT NULL,
  "scopes"           text[] NOT NULL DEFAULT '{}',
  "allowed_ips"      text[] NOT NULL DEFAULT '{}',
  "max_uses"         bigint,
  "use_count"        bigint NOT NULL DEFAULT 0,
  "rate_limit"       jsonb,                               -- { perSecond?, burst?, perMinute?, perHour?, perDay?, perMonth? } or NULL
  "expires_at"       timestamptz(3),
  "created_at"       timestamptz(3) NOT NULL,
  "updated_at"       timestamptz(3) NOT NULL,
  "last_used_at"     timestamptz(3),
  "revoked_at"       timestamptz(3),
  "rotated_from_id"  text,
  "metadata"         jsonb NOT NULL DEFAULT '{}',
  "tags"             text[] NOT NULL DEFAULT '{}',
  "day"              bigint NOT NULL DEFAULT -1,          -- counters: UTC day index (epoch ms / 86400000) that day_count belongs to
  "day_count"        bigint NOT NULL DEFAULT 0,           -- counters: requests admitted in that UTC day
  "tokens"           double precision,                    -- counters: token bucket level at tokens_at (NULL = full)
  "tokens_at"        double precision NOT NULL DEFAULT 0, -- counters: latest admitted instant, epoch milliseconds
  "month"            bigint NOT NULL DEFAULT -1,          -- counters: UTC calendar month index (year * 12 + month 0-11) that month_count belongs to
  "month_count"      bigint NOT NULL DEFAULT 0,           -- counters: requests admitted in that UTC calendar month
  "hour"             bigint NOT NULL DEFAULT -1,          -- counters: UTC hour index (epoch ms / 3600000) that hour_count belongs to
  "hour_count"       bigint NOT NULL DEFAULT 0,           -- counters: requests admitted in that UTC hour
  "minute"           bigint NOT NULL DEFAULT -1,          -- counters: UTC minute index (epoch ms / 60000) that minute_count belongs to
  "minute_count"     bigint NOT NULL DEFAULT 0,           -- counters: requests admitted in that UTC minute
  "concurrency_leases" jsonb NOT NULL DEFAULT '{}',       -- concurrency leases: JSON object, lease -> lapse instant in epoch milliseconds
  "allowed_origins"  text[] NOT NULL DEFAULT '{}',
  "require_https"    boolean NOT NULL DEFAULT false,
  "client_certificate_sha256" text[] NOT NULL DEFAULT '{}',
  "max_concurrent"   bigint,
  "deleted_at"       timestamptz(3),
  "rotation_frequency_days" bigint,
  "alerts"           jsonb,                               -- { quotaThreshold?, errorRateThreshold?, webhookUrl? } or NULL
  "lease_holds"      jsonb NOT NULL DEFAULT '{}',         -- leased mode: JSON object, lease -> { until, units, tokens, at } (instants in epoch ms)
  CONSTRAINT "keygate_api_keys_pkey" PRIMARY KEY ("id"),
  CONSTRAINT "keygate_api_keys_status_check" CHECK ("status" IN ('active', 'suspended', 'revoked'))
);

ALTER TABLE "keygate_api_keys" ADD COLUMN IF NOT EXISTS "month" bigint NOT NULL DEFAULT -1;

ALTER TABLE "keygate_api_keys" ADD COLUMN IF NOT EXISTS "month_count" bigint NOT NULL DEFAULT 0;

ALTER TABLE "keygate_api_keys" ADD COLUMN IF NOT EXISTS "hour" bigint NOT NULL DEFAULT -1;

ALTER TABLE "keygate_api_keys" ADD COLUMN IF NOT EXISTS "hour_count" bigint NOT NULL DEFAULT 0;

ALTER TABLE "keygate_api_keys" ADD COLUMN IF NOT EXISTS "minute" bigint NOT NULL DEFAULT -1;

ALTER TABLE "keygate_api_keys" ADD COLUMN IF NOT EXISTS "minute_count" bigint NOT NULL DEFAULT 0;

ALTER TABLE "keygate_api_keys" ADD COLUMN IF NOT EXISTS "concurrency_leases" jsonb NOT NULL DEFAULT '{}';

ALTER TABLE "keygate_api_keys" ADD COLUMN IF NOT EXISTS "allowed_origins" text[] NOT NULL DEFAULT '{}';

ALTER TABLE "keygate_api_keys" ADD COLUMN IF NOT EXISTS "require_https" boolean NOT NULL DEFAULT false;

ALTER TABLE "keygate_api_keys" ADD COLUMN IF NOT EXISTS "client_certificate_sha256" text[] NOT NULL DEFAULT '{}';

ALTER TABLE "keygate_api_keys" ADD COLUMN IF NOT EXISTS "max_concurrent" bigint;

ALTER TABLE "keygate_api_keys" ADD COLUMN IF NOT EXISTS "deleted_at" timestamptz(3);

ALTER TABLE "keygate_api_keys" ADD COLUMN IF NOT EXISTS "rotation_frequency_days" bigint;

ALTER TABLE "keygate_api_keys" ADD COLUMN IF NOT EXISTS "alerts" jsonb;

ALTER TABLE "keygate_api_keys" ADD COLUMN IF NOT EXISTS "lease_holds" jsonb NOT NULL DEFAULT '{}';

CREATE UNIQUE INDEX IF NOT EXISTS "keygate_api_keys_key_prefix_key" ON "keygate_api_keys" ("key_prefix");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_created_at_id_idx" ON "keygate_api_keys" ("created_at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_owner_id_idx" ON "keygate_api_keys" ("owner_id", "created_at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_tenant_id_idx" ON "keygate_api_keys" ("tenant_id", "created_at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_status_idx" ON "keygate_api_keys" ("status", "created_at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_deleted_at_idx" ON "keygate_api_keys" ("deleted_at") WHERE "deleted_at" IS NOT NULL;

CREATE TABLE IF NOT EXISTS "keygate_api_keys_audit" (
  "id"                    text COLLATE "C" NOT NULL,
  "at"                    timestamptz(3) NOT NULL,
  "action"                text NOT NULL,    -- key.created, key.updated, …
  "key_id"                text COLLATE "C", -- NULL for key.purged
  "actor_id"              text,             -- NULL: no actor given
  "actor_key_prefix"      text,
  "tenant_id"             text,
  "environment"           text,
  "changes"               jsonb NOT NULL,
  CONSTRAINT "keygate_api_keys_audit_pkey" PRIMARY KEY ("id")
);

CREATE INDEX IF NOT EXISTS "keygate_api_keys_audit_at_idx" ON "keygate_api_keys_audit" ("at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_audit_key_idx" ON "keygate_api_keys_audit" ("key_id", "at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_audit_actor_idx" ON "keygate_api_keys_audit" ("actor_id", "at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_audit_tenant_idx" ON "keygate_api_keys_audit" ("tenant_id", "at", "id");

CREATE INDEX IF NOT EXISTS "keygate_api_keys_audit_env_idx" ON "keygate_api_keys_audit" ("environment", "at", "id");

CREATE TABLE IF NOT EXISTS "keygate_api_keys_usage" (
  "key_id"                text COLLATE "C" NOT NULL,
  "day"                   bigint NOT NULL,           -- UTC day index (epoch ms / 86400000)
  "route"                 text COLLATE "C" NOT NULL, -- '' = no route matched
  "outcome"               text COLLATE "C" NOT NULL, -- admitted, or the refusal code
  "requests"              bigint NOT NULL,
  "status_2xx"            bigint NOT NULL,
  "status_3xx"            bigint NOT NULL,
  "status_4xx"            bigint NOT NULL,
  "status_5xx"            bigint NOT NULL,
  "total_response_micros" bigint NOT NULL,           -- microseconds
  "max_response_micros"   bigint NOT NULL,           -- microseconds
  CONSTRAINT "keygate_api_keys_usage_pkey" PRIMARY KEY ("key_id", "day", "route", "outcome")
);

CREATE TABLE IF NOT EXISTS "keygate_api_keys_usage_batches" (
  "id"                    text COLLATE "C" NOT NULL,
  "applied_at"            timestamptz(3) NOT NULL, -- the batch's now
  CONSTRAINT "keygate_api_keys_usage_batch_pkey" PRIMARY KEY ("id")
);

CREATE INDEX IF NOT EXISTS "keygate_api_keys_usage_applied_idx" ON "keygate_api_keys_usage_batches" ("applied_at");

CREATE TABLE IF NOT EXISTS "keygate_api_keys_alert_claims" (
  "name"                  text COLLATE "C" NOT NULL,
  "expires_at"            timestamptz(3) NOT NULL,
  CONSTRAINT "keygate_api_keys_alert_claims_pkey" PRIMARY KEY ("name")
);

CREATE INDEX IF NOT EXISTS "keygate_api_keys_alert_expiry_idx" ON "keygate_api_keys_alert_claims" ("expires_at");
