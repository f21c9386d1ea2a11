/**
 * Which store a `keygate` command works on: `--redis <url>`, `--postgres <url>` or
 * `--sqlite <file>`, or else the `KEYGATE_STORE_URL` environment variable. Parsed and checked
 * before anything is opened, so a typo never connects anywhere nor creates a file.
 */
import { parseTableName } from '../stores/sql/table-name.js';
import { usageError } from './exit.js';

/** Where the keys live. */
export type StoreTarget =
  | { kind: 'redis'; url: string; keyPrefix: string | undefined }
  | { kind: 'postgres'; url: string; table: string | undefined }
  | { kind: 'sqlite'; file: string; table: string | undefined };

/** The store options of the command line. */
export interface TargetFlags {
  redis?: string;
  postgres?: string;
  sqlite?: string;
  table?: string;
  redisKeyPrefix?: string;
}

type ParsedTarget = { kind: 'redis'; url: string } | { kind: 'postgres'; url: string } | { kind: 'sqlite'; file: string };

export const STORE_URL_VARIABLE = 'KEYGATE_STORE_URL';

const FORMS = 'redis://…, rediss://…, postgres://…, postgresql://…, sqlite:<file> or a file path';

/** Resolves the store from the flags (at most one, enforced by the parser) or the environment. */
export function resolveTarget(flags: TargetFlags, env: Readonly<Record<string, string | undefined>>): StoreTarget {
  let target: ParsedTarget;
  if (flags.redis !== undefined) target = { kind: 'redis', url: serverUrl(flags.redis, 'redis', '--redis') };
  else if (flags.postgres !== undefined) target = { kind: 'postgres', url: serverUrl(flags.postgres, 'postgres', '--postgres') };
  else if (flags.sqlite !== undefined) target = { kind: 'sqlite', file: sqliteFile(flags.sqlite, '--sqlite') };
  else {
    const fromEnv = env[STORE_URL_VARIABLE]?.trim();
    if (!fromEnv) {
      throw usageError(`no store: pass --redis <url>, --postgres <url> or --sqlite <file>, or set ${STORE_URL_VARIABLE} (${FORMS})`);
    }
    target = parseStoreUrl(fromEnv);
  }

  if (target.kind === 'redis') {
    if (flags.table !== undefined) throw usageError('--table is for SQL stores (--postgres, --sqlite); Redis has --redis-key-prefix');
    if (flags.redisKeyPrefix !== undefined && (flags.redisKeyPrefix === '' || /[\s{}]/.test(flags.redisKeyPrefix))) {
      throw usageError('--redis-key-prefix must be a non-empty string without spaces or braces, e.g. "keygate:"');
    }
    return { kind: 'redis', url: target.url, keyPrefix: flags.redisKeyPrefix };
  }
  if (flags.redisKeyPrefix !== undefined) throw usageError('--redis-key-prefix is for Redis stores only; SQL stores have --table');
  if (flags.table !== undefined) {
    try {
      parseTableName(flags.table, target.kind === 'postgres', '--table');
    } catch (error) {
      throw usageError((error as Error).message.replace('--table: `table`', '--table'));
    }
  }
  return target.kind === 'postgres' ? { kind: 'postgres', url: target.url, table: flags.table } : { kind: 'sqlite', file: target.file, table: flags.table };
}

/** `KEYGATE_STORE_URL`: a Redis or PostgreSQL URL, `sqlite:<file>`, or a plain file path (SQLite). */
export function parseStoreUrl(value: string): ParsedTarget {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(value)?.[1]?.toLowerCase();
  const where = STORE_URL_VARIABLE;
  // One letter before a colon is a Windows drive (C:\keys.db), not a scheme.
  if (scheme === undefined || scheme.length === 1) return { kind: 'sqlite', file: sqliteFile(value, where) };
  if (scheme === 'redis' || scheme === 'rediss') return { kind: 'redis', url: serverUrl(value, 'redis', where) };
  if (scheme === 'postgres' || scheme === 'postgresql') return { kind: 'postgres', url: serverUrl(value, 'postgres', where) };
  if (scheme === 'sqlite') {
    // sqlite:keys.db, sqlite:/var/lib/keys.db, and the URL-like sqlite://keys.db, sqlite:///var/lib/keys.db
    const rest = value.slice('sqlite:'.length);
    return { kind: 'sqlite', file: sqliteFile(rest.startsWith('//') ? rest.slice(2) : rest, where) };
  }
  throw usageError(`${where}: unsupported scheme "${scheme}:"; use ${FORMS} (a file path with a colon: sqlite:<file>)`);
}

function serverUrl(value: string, kind: 'redis' | 'postgres', where: string): string {
  const protocols = kind === 'redis' ? ['redis:', 'rediss:'] : ['postgres:', 'postgresql:'];
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  // The value is never echoed: it may hold a password.
  if (!url || !protocols.includes(url.protocol) || (kind === 'redis' && url.hostname === '')) {
    throw usageError(`${where} needs a ${kind === 'redis' ? 'redis://host:port or rediss://host:port' : 'postgres://user@host:port/database'} URL`);
  }
  return value;
}

function sqliteFile(value: string, where: string): string {
  if (value.trim() === '') throw usageError(`${where} needs the path of a SQLite database file`);
  if (value === ':memory:' || value.startsWith('file::memory:')) {
    throw usageError(`${where}: an in-memory SQLite database would vanish when keygate exits; give a file path`);
  }
  return value;
}

/** A description of the store for messages, without credentials. */
export function describeTarget(target: StoreTarget): string {
  if (target.kind === 'sqlite') return `SQLite database ${target.file}`;
  const url = new URL(target.url);
  const host = url.host || 'localhost';
  if (target.kind === 'redis') return `Redis at ${host}${url.pathname.length > 1 ? url.pathname : ''}`;
  const database = decodeURIComponent(url.pathname.slice(1));
  return `PostgreSQL at ${host}${database ? `/${database}` : ''}`;
}
