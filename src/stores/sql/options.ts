/**
 * The options of `SqlStore`, validated once at construction: an unknown option is a typo (named,
 * with a "did you mean"), a client of the wrong driver is named as such, and the table name must be
 * a safe identifier.
 */
import { rejectUnknownOptions } from '../../options/checks.js';
import type { PostgresClient, SqliteDatabase } from './clients.js';
import { type TableName, parseTableName } from './table-name.js';
import type { SqlDialect } from './values.js';

/** Options of a `SqlStore` on PostgreSQL. */
export interface PostgresStoreOptions {
  dialect: 'postgres';
  /**
   * A `pg` `Pool` (recommended), `Client` or `PoolClient`, which you create, configure and close.
   * The store never closes it. Give the pool a `statement_timeout`, a `connectionTimeoutMillis` and
   * an `'error'` listener (see the README's SqlStore section).
   */
  client: PostgresClient;
  /**
   * The table keys live in: `name` or `schema.name` (the schema must exist). Letters, digits and
   * `_`, at most 45 characters per part; always used double-quoted, so case is kept.
   * @default 'keygate_api_keys'
   */
  table?: string;
}

/** Options of a `SqlStore` on SQLite. */
export interface SqliteStoreOptions {
  dialect: 'sqlite';
  /**
   * A `better-sqlite3` `Database`, which you open and close; the store never closes it. Use a file
   * (several processes may share it) and WAL mode: `db.pragma('journal_mode = WAL')`.
   */
  client: SqliteDatabase;
  /**
   * The table keys live in: letters, digits and `_`, at most 45 characters, no schema.
   * @default 'keygate_api_keys'
   */
  table?: string;
}

/** Options of `new SqlStore(options)`: the dialect, your client, and optionally the table name. */
export type SqlStoreOptions = PostgresStoreOptions | SqliteStoreOptions;

/** Validated options. */
export type ResolvedSqlStoreOptions =
  | { dialect: 'postgres'; client: PostgresClient; table: TableName }
  | { dialect: 'sqlite'; client: SqliteDatabase; table: TableName };

const OPTIONS = ['dialect', 'client', 'table'];
const DIALECTS: readonly SqlDialect[] = ['postgres', 'sqlite'];
const DIALECT_ALIASES: Readonly<Record<string, SqlDialect>> = {
  pg: 'postgres',
  postgresql: 'postgres',
  psql: 'postgres',
  sqlite3: 'sqlite',
  'better-sqlite3': 'sqlite',
};

function hasMethods(value: object, names: readonly string[]): boolean {
  return names.every((name) => typeof (value as Record<string, unknown>)[name] === 'function');
}

/** Validates `new SqlStore()` options. Throws a TypeError naming the problem. */
export function resolveSqlStoreOptions(options: unknown): ResolvedSqlStoreOptions {
  const usage = "new SqlStore() needs options: { dialect: 'postgres' | 'sqlite', client, table? }";
  if (options === null || typeof options !== 'object') throw new TypeError(usage);
  rejectUnknownOptions(options, OPTIONS, 'new SqlStore()');
  const { dialect, client, table } = options as Record<string, unknown>;

  if (typeof dialect !== 'string' || !DIALECTS.includes(dialect as SqlDialect)) {
    const alias = typeof dialect === 'string' ? DIALECT_ALIASES[dialect.toLowerCase()] : undefined;
    const hint = alias ? `, did you mean '${alias}'?` : '';
    throw new TypeError(`new SqlStore(): \`dialect\` must be 'postgres' or 'sqlite', got ${JSON.stringify(dialect)}${hint}`);
  }
  if (typeof client === 'string') {
    throw new TypeError(
      dialect === 'postgres'
        ? 'new SqlStore(): `client` must be a pg Pool or Client, not a connection string: new Pool({ connectionString })'
        : "new SqlStore(): `client` must be a better-sqlite3 Database, not a file name: new Database('keys.db')",
    );
  }
  if (client === null || typeof client !== 'object') {
    throw new TypeError(`new SqlStore(): \`client\` is required: ${dialect === 'postgres' ? 'a pg Pool or Client' : 'a better-sqlite3 Database'}`);
  }
  const tableName = parseTableName(table, dialect === 'postgres');

  if (dialect === 'postgres') {
    if (!hasMethods(client, ['query'])) {
      const looksSqlite = hasMethods(client, ['prepare']);
      throw new TypeError(
        `new SqlStore(): dialect 'postgres' needs a pg Pool or Client (with query())${looksSqlite ? "; this looks like a better-sqlite3 Database: use dialect 'sqlite'" : ''}`,
      );
    }
    return { dialect: 'postgres', client: client as PostgresClient, table: tableName };
  }
  if (!hasMethods(client, ['prepare', 'exec', 'transaction'])) {
    const looksPostgres = hasMethods(client, ['query']);
    throw new TypeError(
      `new SqlStore(): dialect 'sqlite' needs a better-sqlite3 Database (with prepare(), exec() and transaction())${looksPostgres ? "; this looks like a pg client: use dialect 'postgres'" : ''}`,
    );
  }
  return { dialect: 'sqlite', client: client as SqliteDatabase, table: tableName };
}
