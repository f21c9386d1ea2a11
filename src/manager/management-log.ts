/**
 * What a management write leaves behind: its event (`key.created`, …) for listeners and tracers,
 * and, with `audit` on, its entry in the audit trail. The manager calls it after the store has
 * made the change, so neither can report a change that did not happen.
 */
import type { Actor, AuditAction, AuditEntry, StoreAuditQuery } from '../audit/entry.js';
import { auditEntryId } from '../audit/entry-id.js';
import type { EventHub } from '../events/hub.js';
import type { KeygateEvents } from '../events/events.js';
import { failureReason, invalidArgument } from '../errors.js';
import type { ApiKey } from '../types.js';
import { withDeadline } from '../verification/timeout.js';

/** Where the audit trail lives: the key store (`audit: true`) or another store with the two methods. */
export interface AuditStore {
  appendAudit(entry: AuditEntry): Promise<void>;
  listAudit(query: StoreAuditQuery): Promise<AuditEntry[]>;
}

/** The longest actor id accepted. */
const MAX_ACTOR_ID = 256;

/**
 * The `actor` a caller gave a manager write: a string (its id) or `{ id, keyPrefix? }`; `null`
 * when none was given. Anything else is `invalid_argument` (field `actor`), before any write.
 */
export function parseActor(value: unknown): Actor | null {
  if (value === undefined || value === null) return null;
  const valid = (id: unknown): id is string => typeof id === 'string' && id.length > 0 && id.length <= MAX_ACTOR_ID && !/\p{Cc}|\p{Cs}/u.test(id);
  if (typeof value === 'string') {
    if (!valid(value)) throw invalidArgument('actor', `must be a non-empty string of at most ${MAX_ACTOR_ID} characters without control characters`);
    return { id: value };
  }
  if (typeof value !== 'object' || Array.isArray(value)) throw invalidArgument('actor', 'must be a string or { id, keyPrefix? }');
  const { id, keyPrefix, ...rest } = value as Record<string, unknown>;
  const extra = Object.keys(rest)[0];
  if (extra !== undefined) throw invalidArgument(`actor.${extra}`, 'is not a field of an actor: { id, keyPrefix? }');
  if (!valid(id)) throw invalidArgument('actor.id', `must be a non-empty string of at most ${MAX_ACTOR_ID} characters without control characters`);
  if (keyPrefix === undefined) return { id };
  if (!valid(keyPrefix)) throw invalidArgument('actor.keyPrefix', 'must be a keyPrefix (a non-empty string)');
  return { id, keyPrefix };
}

/** A value as plain JSON: Dates become ISO strings, `undefined` fields go. */
function plainJson(value: Record<string, unknown>): Record<string, unknown> {
  return JSON.parse(JSON.stringify(value)) as Record<string, unknown>;
}

let warnedAboutAudit = false;


/** Emits management events and writes the audit trail of one keygate instance. */
export class ManagementLog {
  /** Entries that could not be written (the change itself was made), for metrics. */
  failedWrites = 0;

  constructor(
    private readonly hub: EventHub,
    private readonly audit: AuditStore | undefined,
    private readonly storeTimeoutMs: number,
  ) {}

  /** Whether `auditLog()` has a trail to read. */
  get auditing(): boolean {
    return this.audit !== undefined;
  }

  /**
   * Records a change of one key: `view` is built only if someone listens (each listener gets its
   * own copy, never the object returned to the caller), and the audit entry is written with the
   * key's tenant and environment so a tenant's admin reads only its own.
   */
  async keyChanged<A extends Exclude<AuditAction, 'key.purged'>>(
    action: A,
    key: ApiKey,
    view: () => ApiKey,
    actor: Actor | null,
    at: Date,
    changes: Record<string, unknown>,
    event: Omit<KeygateEvents[A], 'apiKey' | 'actor' | 'at'>,
  ): Promise<void> {
    // Listeners get copies: what they do to the actor or the time never reaches the audit entry.
    if (this.hub.wants(action)) this.hub.emit(action, { ...event, apiKey: view(), actor: actor && { ...actor }, at: new Date(at.getTime()) } as KeygateEvents[A]);
    await this.append({
      id: auditEntryId(),
      at,
      action,
      keyId: key.id,
      actor,
      ...(key.tenantId === undefined ? {} : { tenantId: key.tenantId }),
      ...(key.environment === undefined ? {} : { environment: key.environment }),
      changes: plainJson(changes),
    });
  }

  /** Records a purge. */
  async purged(removed: number, deletedBefore: Date, actor: Actor | null, at: Date): Promise<void> {
    if (this.hub.wants('key.purged')) this.hub.emit('key.purged', { removed, deletedBefore: new Date(deletedBefore.getTime()), actor: actor && { ...actor }, at: new Date(at.getTime()) });
    await this.append({ id: auditEntryId(), at, action: 'key.purged', keyId: null, actor, changes: { removed, deletedBefore: deletedBefore.toISOString() } });
  }

  /**
   * Writes an entry. The change it records has already happened, so a failure to write it does
   * not undo or fail the change (a caller retrying would change the key twice): it is reported as
   * a warning naming the entry, once per process, and the write resolves.
   */
  private async append(entry: AuditEntry): Promise<void> {
    const audit = this.audit;
    if (!audit) return;
    try {
      await withDeadline(() => audit.appendAudit(entry), this.storeTimeoutMs, 'to write the audit trail');
    } catch (error) {
      this.failedWrites++;
      if (warnedAboutAudit) return;
      warnedAboutAudit = true;
      const reason = failureReason(error);
      process.emitWarning(
        `keygate: the audit entry of ${entry.action}${entry.keyId === null ? '' : ` of key ${entry.keyId}`} at ${entry.at.toISOString()} could not be written (${reason}); the change itself was made. Later failures are not reported.`,
        { code: 'KEYGATE_AUDIT_WRITE_FAILED' },
      );
    }
  }
}
