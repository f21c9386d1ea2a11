/**
 * Alerts: `quota.threshold` after an admitted consume, `error_rate.threshold` after a usage flush,
 * each emitted as an event and, for keys with `alerts.webhookUrl`, sent as a signed webhook. Nothing
 * here runs on a request's path beyond a few comparisons: webhooks are queued by the sender, and
 * the error-rate check runs after a flush, off every request.
 */
import { LRUCache } from 'lru-cache';
import type { AlertClaim } from './claim.js';
import { failureReason } from '../errors.js';
import type { WebhookSender } from './webhooks.js';
import { quotaCrossings } from './thresholds.js';
import type { EventHub } from '../events/hub.js';
import type { ErrorRateThresholdEvent, KeygateEvents, QuotaThresholdEvent } from '../events/events.js';
import type { ConsumeOutcome, ConsumeRequest } from '../policy/limits.js';
import type { ApiKeyAlerts } from '../types.js';
import type { StoreUsageQuery, UsageBatch, UsageCell } from '../usage/cells.js';
import { dayString } from '../usage/report.js';

const DAY_MS = 86_400_000;

/** What the alerts need to know of a key. */
export interface AlertedKey {
  readonly id: string;
  readonly record: { readonly keyPrefix: string; readonly alerts: ApiKeyAlerts | null };
}

/** Settings of {@link Alerts}. */
export interface AlertSettings {
  /** Fractions at which `quota.threshold` fires, ascending (a key's `alerts.quotaThreshold` replaces those below 1). */
  quotaThresholds: readonly number[];
  /** Fewest requests in a day before an error rate counts. */
  errorRateMinRequests: number;
  /** The webhook sender, when `keygate({ webhooks })` is set. */
  webhooks: WebhookSender | undefined;
  /** `webhooks.allowUrl`: checked again before each webhook is sent. */
  allowUrl: ((url: URL) => boolean) | undefined;
  /** The store's cross-process claim, when it has one; otherwise each process claims for itself. */
  claimAlert: ((claim: AlertClaim) => Promise<boolean>) | undefined;
  /** The store's usage reader, when usage analytics are on. */
  readUsage: ((query: StoreUsageQuery) => Promise<UsageCell[]>) | undefined;
  /** Runs a store call under keygate's store timeout. */
  call: <T>(operation: () => Promise<T>) => Promise<T>;
  now: () => number;
}

let warnedAboutWebhooks = false;
let warnedAboutRefusedUrl = false;
let warnedAboutErrorRate = false;

/** Watches quotas and error rates of one keygate instance. */
export class Alerts {
  /** Keys with an error-rate threshold seen recently: only their days are read after a flush. */
  readonly #watched = new LRUCache<string, { keyPrefix: string; threshold: number; webhookUrl: string | undefined }>({ max: 10_000 });
  /** Claims made in this process, for a store that cannot claim across processes. */
  readonly #localClaims = new LRUCache<string, true>({ max: 100_000 });
  /** Error-rate checks under way (see {@link Alerts.afterFlush}). */
  readonly #checks = new Set<Promise<void>>();

  constructor(
    private readonly hub: EventHub,
    private readonly settings: AlertSettings,
  ) {}

  /**
   * After an admitted consume: the quota thresholds the request reached. A key with no use limit
   * and no day or month quota costs one comparison.
   */
  afterAdmission(key: AlertedKey, request: ConsumeRequest, outcome: ConsumeOutcome): void {
    const limit = request.rateLimit;
    if (request.maxUses === null && (limit === null || (limit.perDay === undefined && limit.perMonth === undefined))) return;
    const alerts = key.record.alerts;
    const webhookUrl = alerts?.webhookUrl;
    if (webhookUrl === undefined && !this.hub.wants('quota.threshold')) return;
    const own = alerts?.quotaThreshold;
    const fractions = own === undefined ? this.settings.quotaThresholds : [own, 1];
    for (const crossing of quotaCrossings(request, outcome, fractions)) {
      const at = outcome.countedAt ?? request.now;
      const event: QuotaThresholdEvent = {
        keyId: key.id,
        keyPrefix: key.record.keyPrefix,
        window: crossing.window,
        threshold: crossing.threshold,
        used: crossing.used,
        limit: crossing.limit,
        ...(crossing.windowStart === undefined ? {} : { windowStart: new Date(crossing.windowStart) }),
        at: new Date(at),
      };
      // The limit is part of the alert: a limit changed within a window (maxUses raised) makes new
      // alerts, which must not share an id that receivers drop as a duplicate.
      this.#deliver('quota.threshold', event, webhookUrl, `quota.threshold.${key.id}.${crossing.window}.${crossing.windowStart ?? 0}.${crossing.limit}.${crossing.threshold}`);
    }
  }

  /** Notes a key whose requests are being recorded, so its error rate is checked after flushes. */
  watch(key: AlertedKey): void {
    const threshold = key.record.alerts?.errorRateThreshold;
    if (threshold === undefined) {
      // A key whose threshold was removed is no longer checked (a lookup only while any key is watched).
      if (this.#watched.size > 0) this.#watched.delete(key.id);
      return;
    }
    this.#watched.set(key.id, { keyPrefix: key.record.keyPrefix, threshold, webhookUrl: key.record.alerts?.webhookUrl });
  }

  /**
   * After a usage flush: checks the error rate of the watched keys on the days the batch touched.
   * Never rejects. {@link Alerts.close} waits for the checks under way, so an alert raised by the
   * last flush (the one `close()` makes) is still sent.
   */
  afterFlush(batch: UsageBatch): Promise<void> {
    const check = this.#afterFlush(batch).catch(() => undefined);
    this.#checks.add(check);
    void check.then(() => this.#checks.delete(check));
    return check;
  }

  async #afterFlush(batch: UsageBatch): Promise<void> {
    const readUsage = this.settings.readUsage;
    if (!readUsage || this.#watched.size === 0) return;
    const days = new Map<string, Set<number>>();
    for (const cell of batch.cells) {
      if (!this.#watched.has(cell.keyId)) continue;
      let set = days.get(cell.keyId);
      if (!set) days.set(cell.keyId, (set = new Set()));
      set.add(cell.day);
    }
    for (const [keyId, touched] of days) {
      const watched = this.#watched.get(keyId);
      if (!watched) continue;
      for (const day of touched) {
        try {
          await this.#checkErrorRate(keyId, day, watched, readUsage);
        } catch (error) {
          if (warnedAboutErrorRate) continue;
          warnedAboutErrorRate = true;
          const reason = failureReason(error);
          process.emitWarning(`keygate: an error-rate check failed (${reason}); it is tried again after the next flush. Later failures are not reported.`, { code: 'KEYGATE_ALERT_CHECK_FAILED' });
        }
      }
    }
  }

  /**
   * Resolves once the error-rate checks under way are done (each store call in them is bounded by
   * the store timeout), those they lead to included. Never rejects.
   */
  async settled(): Promise<void> {
    while (this.#checks.size > 0) await Promise.all([...this.#checks]);
  }

  /** Waits for the error-rate checks under way, then ends the webhook sender, giving deliveries in flight a moment. */
  async close(): Promise<void> {
    await this.settled();
    await this.settings.webhooks?.close();
  }

  async #checkErrorRate(keyId: string, day: number, watched: { keyPrefix: string; threshold: number; webhookUrl: string | undefined }, readUsage: (query: StoreUsageQuery) => Promise<UsageCell[]>): Promise<void> {
    const cells = await this.settings.call(() => readUsage({ keyId, fromDay: day, toDay: day }));
    let requests = 0;
    let errors = 0;
    for (const cell of cells) {
      requests += cell.requests;
      errors += cell.status4xx + cell.status5xx;
    }
    if (requests < this.settings.errorRateMinRequests || errors / requests < watched.threshold) return;
    // Once per key and day, whatever the threshold: changing it must not fire the day's alert again.
    const name = `error_rate:${keyId}:${day}`;
    if (!(await this.#claim(name, (day + 2) * DAY_MS))) return;
    const event: ErrorRateThresholdEvent = {
      keyId,
      keyPrefix: watched.keyPrefix,
      day: dayString(day),
      threshold: watched.threshold,
      errorRate: errors / requests,
      requests,
      errors,
      at: new Date(this.settings.now()),
    };
    this.#deliver('error_rate.threshold', event, watched.webhookUrl, `error_rate.threshold.${keyId}.${day}`);
  }

  /** Claims an alert once: across processes when the store can, else in this process. */
  async #claim(name: string, expiresAt: number): Promise<boolean> {
    const claimAlert = this.settings.claimAlert;
    if (claimAlert) return this.settings.call(() => claimAlert({ name, expiresAt: new Date(expiresAt), now: new Date(this.settings.now()) }));
    if (this.#localClaims.has(name)) return false;
    this.#localClaims.set(name, true, { ttl: Math.max(1, expiresAt - this.settings.now()) });
    return true;
  }

  /** The event, and the webhook when the key has a URL. The webhook id is the alert's, stable across retries and processes. */
  #deliver<E extends 'quota.threshold' | 'error_rate.threshold'>(name: E, event: KeygateEvents[E], webhookUrl: string | undefined, id: string): void {
    // The webhook's body is taken before listeners see the event: what a listener does to its
    // payload is never signed and sent.
    const data = webhookUrl === undefined ? undefined : (JSON.parse(JSON.stringify(event)) as Record<string, unknown>);
    if (this.hub.wants(name)) this.hub.emit(name, event);
    if (webhookUrl === undefined || data === undefined) return;
    const sender = this.settings.webhooks;
    if (!sender) {
      if (!warnedAboutWebhooks) {
        warnedAboutWebhooks = true;
        process.emitWarning('keygate: a key has alerts.webhookUrl but keygate() has no `webhooks: { secret }`, so its alerts are events only', { code: 'KEYGATE_WEBHOOKS_NOT_CONFIGURED' });
      }
      return;
    }
    // Checked again here, not only when the URL was written: a key written by another instance,
    // the CLI, an older version or by hand never went past this instance's allowUrl.
    const allowUrl = this.settings.allowUrl;
    if (allowUrl !== undefined && !this.#allowed(allowUrl, webhookUrl)) {
      if (!warnedAboutRefusedUrl) {
        warnedAboutRefusedUrl = true;
        process.emitWarning(`keygate: an alert of key ${event.keyId} was not sent: its webhookUrl is not allowed by webhooks.allowUrl. Later refusals are not reported.`, { code: 'KEYGATE_WEBHOOK_URL_REFUSED' });
      }
      return;
    }
    sender.send({ url: webhookUrl, type: name, id, data });
  }

  /** `allowUrl(url)`, where a URL that does not parse, or a check that throws, is not allowed. */
  #allowed(allowUrl: (url: URL) => boolean, webhookUrl: string): boolean {
    try {
      return allowUrl(new URL(webhookUrl)) === true;
    } catch {
      return false;
    }
  }
}
