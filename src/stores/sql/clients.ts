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
 * `query(text, values)`. Every store operation is one SQL statement, so any of them works; a
 * `Pool` also reconnects by itself after the database was down.
 */
export interface PostgresClient {
  /** Runs one statement with `$n` parameters, or (without values) a script of several. */
  query(text: string, values?: unknown[]): Promise<PostgresQueryResult | PostgresQueryResult[]>;
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
