/**
 * What `keygate` prints for people (without `--json`). Text from the store (a key's name, its
 * metadata) is printed with control characters escaped, so a record cannot drive the terminal.
 */
import type { ApiKey } from '../types.js';

/** Escapes control characters (ANSI escape sequences, carriage returns) in text from the store. */
export function safeText(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function show(value: unknown): string {
  if (value === null || value === undefined) return '-';
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.length === 0 ? '-' : safeText(value.map(String).join(', '));
  if (typeof value === 'object') return Object.keys(value).length === 0 ? '-' : safeText(JSON.stringify(value));
  return safeText(String(value));
}

/** Every field of a key's view, one per line: `name          CI`. */
export function describeKey(apiKey: ApiKey): string {
  const entries = Object.entries(apiKey);
  const width = Math.max(...entries.map(([field]) => field.length)) + 2;
  return entries.map(([field, value]) => `${field.padEnd(width)}${show(value)}`).join('\n') + '\n';
}

/** A key's state in a word or two: `active`, `revoked`, `active (inactive)` for an expired or retired one, `…, deleted`. */
function state(apiKey: ApiKey): string {
  let text: string = apiKey.status;
  if (apiKey.status === 'active' && !apiKey.isActive) text += ' (inactive)';
  if (apiKey.deletedAt) text += ', deleted';
  return text;
}

/** Keys as a table, one line each. */
export function keyTable(items: readonly ApiKey[]): string {
  const header = ['ID', 'KEY PREFIX', 'NAME', 'STATUS', 'OWNER', 'TENANT', 'EXPIRES', 'LAST USED'];
  const rows = items.map((apiKey) => [
    apiKey.id,
    apiKey.keyPrefix,
    show(apiKey.name),
    state(apiKey),
    show(apiKey.ownerId),
    show(apiKey.tenantId),
    show(apiKey.expiresAt),
    show(apiKey.lastUsedAt),
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] as string).length)));
  return [header, ...rows].map((row) => row.map((cell, column) => cell.padEnd(widths[column] as number)).join('  ').trimEnd()).join('\n') + '\n';
}

/** Machine output: the value as JSON (dates as ISO 8601), indented, one trailing newline. */
export function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}
