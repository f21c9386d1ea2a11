/**
 * The rule of the record's `alerts` field, in one place: the manager validates callers' values
 * with it (`invalid_argument`) and the decoder checks stored ones with it (`invalid_record`).
 */
import type { ApiKeyAlerts } from '../types.js';
import { ALERT_FIELDS } from './schema.js';

/** The longest webhook URL accepted. */
export const MAX_WEBHOOK_URL = 2_048;

/** What is wrong with a value, naming the sub-field (`alerts.webhookUrl`) when one is to blame. */
export interface AlertsProblem {
  field: string;
  problem: string;
}

function isObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/** A fraction in (0, 1], or in (0, 1) when `below1`; the problem otherwise. */
function fractionProblem(value: unknown, below1: boolean): string | undefined {
  if (typeof value === 'number' && Number.isFinite(value) && value > 0 && (below1 ? value < 1 : value <= 1)) return undefined;
  return below1 ? 'must be a number between 0 and 1, both excluded (keygate alerts at 100 % anyway)' : 'must be a number greater than 0 and at most 1';
}

/**
 * An `http:` / `https:` URL without credentials, normalised (`URL.href`), or the problem. A webhook
 * URL is shown in the key's view and the audit trail, so it must not carry a password.
 */
export function parseWebhookUrl(value: unknown): { url: string } | { problem: string } {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_WEBHOOK_URL) {
    return { problem: `must be an http: or https: URL of at most ${MAX_WEBHOOK_URL} characters` };
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return { problem: 'must be an absolute http: or https: URL' };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return { problem: 'must be an http: or https: URL' };
  if (url.username !== '' || url.password !== '') return { problem: 'must not carry a user name or password: webhooks are signed instead' };
  return { url: url.href };
}

/**
 * `null`, or `{ quotaThreshold?, errorRateThreshold?, webhookUrl? }` checked field by field;
 * `{}` is `null` (keygate's defaults). `field` names the value in problems (`alerts`).
 */
export function parseAlerts(value: unknown, field: string): { value: ApiKeyAlerts | null } | AlertsProblem {
  if (value === null) return { value: null };
  if (!isObject(value)) return { field, problem: 'must be an object or null' };
  const out: ApiKeyAlerts = {};
  for (const name of Object.keys(value)) {
    if (!(ALERT_FIELDS as readonly string[]).includes(name)) return { field: `${field}.${name}`, problem: `is not one of ${ALERT_FIELDS.join(', ')}` };
    const entry = value[name];
    if (entry === undefined) continue;
    if (name === 'webhookUrl') {
      const parsed = parseWebhookUrl(entry);
      if ('problem' in parsed) return { field: `${field}.${name}`, problem: parsed.problem };
      out.webhookUrl = parsed.url;
    } else {
      const problem = fractionProblem(entry, name === 'quotaThreshold');
      if (problem) return { field: `${field}.${name}`, problem };
      out[name as 'quotaThreshold' | 'errorRateThreshold'] = entry as number;
    }
  }
  return { value: Object.keys(out).length === 0 ? null : out };
}
