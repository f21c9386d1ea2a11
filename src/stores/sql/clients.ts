/**
 * The parts of the database drivers the SQL store uses, described structurally. A `pg` `Pool`,
 * `Client` or `PoolClient` and a `better-sqlite3` `Database` all fit these shapes, so keygate's
 * published declarations name neither driver: a SQLite user needs no `@types/pg`, and `keygate/sql`
 * loads no driver code. The store receives the user's client and never closes it.
 */

/** A query result as `pg` returns it. */
export interface PostgresQueryResult {
  rows: unknown[];
}

/**
 * A `pg` `Pool` (recommended), `Client` or `PoolClient`: anything with pg's
 * `query(text, values)`. Every store operation but leased mode's is one SQL statement, so any of
 * them works; a `Pool` also reconnects by itself after the database was down. Leased mode's
 * `reserve` and `settle` run in a transaction on a connection the Pool lends them; on a `Client` or
 * `PoolClient`, which cannot lend one, as two statements whose write is guarded by the row version
 * it read (see `PostgresEngine.reserve`).
 */
export interface PostgresClient {
  /** Runs one statement with `$n` parameters, or (without values) a script of several. */
  query(text: string, values?: unknown[]): Promise<PostgresQueryResult | PostgresQueryResult[]>;
}

/** A connection a `pg` `Pool` lent (a `PoolClient`): queries on it run on that one session. */
export interface PostgresSession extends PostgresClient {
  /** Gives the connection back to its Pool; `true` closes it instead (its state is unknown). */
  release(destroy?: boolean): void;
}

/** A `pg` `Pool`, which lends a connection of its own for a transaction. */
export interface PostgresPool extends PostgresClient {
  /** A connection of the Pool's, for this caller alone until it is released. */
  connect(): Promise<PostgresSession>;
}

/**
 * The client as a `pg` `Pool`, or `undefined` for a single connection. Structural, and careful:
 * a `pg` `Client` has a `connect()` too (which connects it, and rejects once it is connected), so
 * a Pool is recognised by what only pg-pool has as well, its connection count (`totalCount`), and
 * a lent connection (`release()`) is never taken for one.
 */
export function poolOf(client: PostgresClient): PostgresPool | undefined {
  const candidate = client as PostgresClient & { connect?: unknown; release?: unknown; totalCount?: unknown };
  const pool = typeof candidate.connect === 'function' && typeof candidate.release !== 'function' && typeof candidate.totalCount === 'number';
  return pool ? (candidate as PostgresPool) : undefined;
}

/** A prepared `better-sqlite3` statement. */
export interface SqliteStatement {
  /** Executes a statement that returns no rows. */
  run(...params: unknown[]): unknown;
  /** The first row, or `undefined`. */
  get(...params: unknown[]): unknown;
  /** Every row. */
  all(...params: unknown[]): unknown[];
  /** Turns 64-bit integer results into BigInts (`true`) or numbers (`false`). */
  safeIntegers(toggle?: boolean): this;
}

/** A function wrapped by `better-sqlite3`'s `db.transaction()`. */
export interface SqliteTransaction<A extends unknown[], T> {
  /** Runs the function in `BEGIN IMMEDIATE … COMMIT` (rolled back if it throws). */
  immediate(...args: A): T;
}

/** A `better-sqlite3` `Database`, opened by the user on a file. */
export interface SqliteDatabase {
  /** Compiles one statement. */
  prepare(source: string): SqliteStatement;
  /** Runs SQL without parameters (the schema statements). */
  exec(source: string): unknown;
  /** Wraps `fn` so that each call runs in one transaction. */
  transaction<A extends unknown[], T>(fn: (...args: A) => T): SqliteTransaction<A, T>;
}
