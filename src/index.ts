/**
 * keygate: API-key authentication for Express.
 *
 * @packageDocumentation
 */
import './express-augment.js';

export { keygate, Keygate } from './manager/keygate.js';
export type { RotateOptions, VerifyOptions, VerifyResult } from './manager/keygate.js';
export type { KeygateOptions, LeaseOptions, UsageOptions, WebhookOptions } from './manager/options.js';
export type { AuditStore } from './manager/management-log.js';
export { EVENT_NAMES, channelNameOf } from './events/events.js';
export type {
  KeygateEventName,
  KeygateEvents,
  KeygateListener,
  KeyChangeEvent,
  KeyUpdatedEvent,
  KeyRotatedEvent,
  KeysPurgedEvent,
  RequestEvent,
  RequestRefusedEvent,
  QuotaWindow,
  QuotaThresholdEvent,
  ErrorRateThresholdEvent,
  KeyExpiringEvent,
  KeyRotationDueEvent,
} from './events/events.js';
export { AUDIT_ACTIONS } from './audit/entry.js';
export type { UsagePoint, UsageReport } from './usage/report.js';
export type { UsageStats } from './usage/recorder.js';
export type { MetricsRegistry } from './metrics/prometheus.js';
export type { AuthenticateOptions } from './middleware/authenticate-options.js';
export { requireScopes, requireAnyScope } from './middleware/scope-guards.js';
export { problemHandler } from './http/respond.js';
export type { AdminAuthorize, AdminRouterOptions } from './admin/router.js';
export type { AdminAction } from './admin/routes.js';
export type { OpenApiDocument } from './admin/openapi.js';
export { MemoryStore } from './stores/memory-store.js';
export type { MemoryStoreOptions } from './stores/memory-store.js';
export type {
  ApiKeyStore,
  ApiKeyPatch,
  StoreListQuery,
  StorePurge,
  StoreRotation,
  ConsumeRequest,
  ConsumeOutcome,
  ConsumeRefusal,
  Actor,
  AuditAction,
  AuditEntry,
  StoreAuditQuery,
  UsageBatch,
  UsageCell,
  StoreUsageQuery,
  AlertClaim,
} from './stores/store.js';
export { RETAIN_BATCH_IDS_MS, USAGE_COUNT_FIELDS, mergeCell } from './usage/cells.js';
export { KeygateError, ERROR_CODES, isKeygateError, invalidArgument } from './errors.js';
export type { KeygateErrorCode, RefusalCode, KeygateErrorDetails } from './errors.js';
export type { ErrorHandler } from './http/respond.js';
export type { ProblemDetails } from './http/problem.js';
export type { CacheOptions } from './cache/verification-cache.js';
export type { HashingAlgorithm } from './key/hash.js';
export type { LimitsSnapshot, LimitStatus, CounterState, ConcurrencyClaim, Leases } from './policy/limits.js';
export { countingInstant, decideConsume, initialCounters, leasesAfter, liveLeases } from './policy/limits.js';
export type { Hold, Holds, ReserveOutcome, ReserveRequest, Settlement } from './policy/reservation.js';
export { bucketLevel, decideReservation, decideSettlement, heldTokens, liveHolds } from './policy/reservation.js';
export { scopeGrants } from './policy/scopes.js';
export { lifecycleRefusal } from './policy/status.js';
export type { LifecycleRefusal } from './policy/status.js';
export { decodeStoredRecord, invalidRecord } from './record/decode.js';
export { RECORD_SCHEMA, RATE_LIMIT_FIELDS } from './record/schema.js';
export type { FieldKind, FieldSpec, FieldSource, RecordSchema } from './record/schema.js';
// The store toolkit: what a custom store shares with the built-in ones.
export {
  ChangeListeners,
  alreadyExists,
  deletedAtAfterUpdate,
  isLimitRefusal,
  isPurgeable,
  isRetired,
  rejectUnknownOptions,
  remainingUses,
  replacementFor,
  retiredKeyCannotRotate,
  revokedAtAfterUpdate,
  revokedKeyCannotChangeStatus,
} from './stores/toolkit.js';
export type { ChangeListener } from './stores/toolkit.js';
export type {
  ApiKey,
  ApiKeyAlerts,
  ApiKeyRecord,
  ApiKeyStatus,
  ApiKeyPage,
  CreateApiKeyInput,
  CreatedApiKey,
  ListApiKeysInput,
  PurgeApiKeysInput,
  RateLimit,
  UpdateApiKeyInput,
  WriteOptions,
  AuditLogQuery,
  AuditPage,
} from './types.js';
