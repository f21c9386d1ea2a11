/**
 * The `keygate` command: manage the keys of a Redis, PostgreSQL or SQLite store from a shell.
 *
 * `run(argv, env, io)` is the whole program without the process around it: it takes the
 * arguments (without `node` and the script), the environment and two writers, and resolves to
 * the exit code. It never throws, never calls `process.exit` and closes every connection it
 * opened, so the process ends as soon as the output is written.
 *
 * Output: stdout carries the result (the raw key of `create` and `rotate`, alone on its line, so
 * `KEY=$(keygate create …)` works; a key's details; a table), stderr the commentary, which
 * `--quiet` silences. `--json` prints the result as JSON instead. Errors are one line on stderr.
 */
import { Command, CommanderError, Option } from 'commander';
import { type KeygateError, isKeygateError } from '../errors.js';
import { isValidPrefix } from '../key/format.js';
import { type Keygate, keygate } from '../manager/keygate.js';
import type { ApiKey, CreatedApiKey } from '../types.js';
import { type OpenStore, openStore } from './connect.js';
import { CliError, EXIT, failure, messageOf, oneLine, usageError } from './exit.js';
import { describeKey, json, keyTable, safeText } from './format.js';
import {
  type ListFlags,
  type SettingsFlags,
  collectList,
  createInput,
  describeInvalid,
  gracePeriod,
  instantValue,
  integerValue,
  isInvalidArgument,
  jsonObject,
  listInput,
  purgeBefore,
  recordId,
  updatePlan,
} from './input.js';
import { STORE_URL_VARIABLE, type StoreTarget, type TargetFlags, resolveTarget } from './target.js';

/** Where the command writes. */
export interface CliIO {
  stdout(text: string): void;
  stderr(text: string): void;
}

/** Extras of {@link run}. */
export interface RunOptions {
  /** What `keygate --version` prints. */
  version?: string;
}

/** How long one manager call may take: generous, as a command may run far from its database. */
export const STORE_TIMEOUT_MS = 10_000;

const DEFAULT_PREFIX = 'kg';
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

interface GlobalFlags extends TargetFlags {
  prefix?: string;
  hashing?: 'bcrypt' | 'sha256';
  pepperEnv?: string;
  json?: boolean;
  quiet?: boolean;
}

/** What every command knows once its global options are checked. */
interface Context {
  readonly target: StoreTarget;
  /** `--prefix` as given, or `undefined`. */
  readonly prefix: string | undefined;
  readonly hashing: 'bcrypt' | 'sha256';
  readonly pepper: string | undefined;
  readonly json: boolean;
  readonly quiet: boolean;
  readonly io: CliIO;
}

/** Checks the global options: the store, the prefix, the pepper. Nothing is opened yet. */
function contextOf(command: Command, env: Readonly<Record<string, string | undefined>>, io: CliIO): Context {
  const flags = command.optsWithGlobals<GlobalFlags>();
  const target = resolveTarget(flags, env);
  if (flags.prefix !== undefined && !isValidPrefix(flags.prefix)) {
    throw usageError('--prefix must match ^[a-z][a-z0-9]*(_[a-z0-9]+)*$ and be at most 32 characters, e.g. "pk_live"');
  }
  let pepper: string | undefined;
  if (flags.pepperEnv !== undefined) {
    // The value is never echoed: someone may have passed the pepper itself by mistake.
    if (!ENV_NAME.test(flags.pepperEnv)) throw usageError('--pepper-env takes the name of an environment variable (letters, digits and _), not the pepper itself');
    pepper = env[flags.pepperEnv];
    if (pepper === undefined || pepper === '') throw usageError('the environment variable named by --pepper-env is not set or empty');
  }
  return { target, prefix: flags.prefix, hashing: flags.hashing ?? 'bcrypt', pepper, json: flags.json === true, quiet: flags.quiet === true, io };
}

/** Commentary on stderr, unless `--quiet`. */
function note(context: Context, text: string): void {
  if (!context.quiet) context.io.stderr(`${text.trimEnd()}\n`);
}

/** A warning on stderr, even with `--quiet`: it is about a mistake that would cost the user a working key. */
function warn(context: Context, text: string): void {
  context.io.stderr(`${text.trimEnd()}\n`);
}

/** The manager's `not_found`, as this command says it. */
function notFound(id: string): CliError {
  return new CliError(EXIT.notFound, `no API key with id ${safeText(id)}`);
}

/** The reason a store failed, with a hint when its table is missing or older than this keygate. */
function storeFailure(error: KeygateError, label: string): CliError {
  // KeygateError → keygate's note (what it was doing) → a copy of the driver's error, when there was one.
  let cause: unknown = error;
  for (let depth = 0; depth < 4 && cause instanceof Error && cause.cause instanceof Error; depth++) cause = cause.cause;
  const reason = messageOf(cause);
  const code = (cause as { code?: unknown }).code;
  const schema = code === '42P01' || code === '42703' || /no such table|no such column|has no column named/i.test(reason);
  return failure(`${label} failed: ${reason}${schema ? '; run `keygate migrate` first (it creates or upgrades the table)' : ''}`);
}

/**
 * Opens the store, hands `work` a factory of keygate instances on it, and closes them all and the
 * store's connections whatever happens.
 */
async function withStore<T>(context: Context, createSqlite: boolean, work: (open: OpenStore, manager: (prefix?: string) => Keygate) => Promise<T>): Promise<T> {
  const open = await openStore(context.target, { createSqlite });
  const instances: Keygate[] = [];
  const manager = (prefix?: string): Keygate => {
    const instance = keygate({
      store: open.store,
      prefix: prefix ?? context.prefix ?? DEFAULT_PREFIX,
      hashing: context.hashing,
      ...(context.pepper === undefined ? {} : { pepper: context.pepper }),
      // One key per run: bcrypt on this thread (no worker to start and stop), no cache, no budgets.
      hashThreads: 0,
      cache: false,
      failedAttemptLimit: false,
      storeTimeoutMs: STORE_TIMEOUT_MS,
    });
    instances.push(instance);
    return instance;
  };
  try {
    return await work(open, manager);
  } catch (error) {
    if (isKeygateError(error) && error.code === 'store_unavailable') throw storeFailure(error, open.label);
    throw error;
  } finally {
    await Promise.all(instances.map((instance) => instance.close().catch(() => undefined)));
    await open.close();
  }
}

/** Runs a SQL store's migration, reporting a failure as the store's. */
async function migrate(open: OpenStore): Promise<void> {
  try {
    await open.migrate?.();
  } catch (error) {
    throw failure(`${open.label}: migration failed: ${messageOf(error)}`);
  }
}

/** The prefix part of a keyPrefix (`pk_live_8fKz…` → `pk_live`). */
function prefixOf(keyPrefix: string): string {
  return keyPrefix.slice(0, keyPrefix.lastIndexOf('_'));
}

/** Prints a new key: alone on stdout (or `{ key, apiKey }` with `--json`), its details on stderr. */
function printCreated(context: Context, created: CreatedApiKey, headline: string): void {
  if (context.json) {
    context.io.stdout(json(created));
    return;
  }
  context.io.stdout(`${created.key}\n`);
  note(context, `${headline} The key is printed once, on stdout: keygate keeps only its hash.\n${describeKey(created.apiKey)}`);
}

function printKey(context: Context, apiKey: ApiKey): void {
  context.io.stdout(context.json ? json(apiKey) : describeKey(apiKey));
}

function warnHashing(context: Context): void {
  if (context.hashing === 'sha256' && context.pepper === undefined) {
    warn(context, 'keygate: warning: --hashing sha256 without --pepper-env hashes with an empty HMAC key; give the pepper your app is configured with');
  }
}

/** The options `create` and `update` share; `update` also gets the `--no-…` forms that clear a field. */
function addSettingsOptions(command: Command, update: boolean): Command {
  const clear = (flag: string, description: string): void => {
    if (update) command.option(flag, description);
  };
  if (update) command.option('--name <name>', 'new name, 1-200 characters');
  command.option('--description <text>', 'description, at most 2000 characters');
  clear('--no-description', 'remove the description');
  if (!update) {
    command
      .option('--owner-id <id>', 'the owner the key belongs to')
      .option('--tenant-id <id>', 'the tenant the key belongs to')
      .option('--environment <name>', 'the key\'s environment (e.g. "test" for a test key)');
  }
  command.option('--scopes <list>', 'granted scopes, comma-separated or repeated (leads:read,reports:*)', collectList);
  clear('--no-scopes', 'grant no scope');
  command.option('--allowed-ips <list>', 'IP addresses or CIDR ranges the key may be used from, comma-separated or repeated', collectList);
  clear('--no-allowed-ips', 'allow any address');
  command.option('--max-uses <n>', 'lifetime uses (0 admits nothing)', integerValue);
  clear('--no-max-uses', 'unlimited uses');
  command
    .option('--per-second <n>', 'rate limit: requests per second (a token bucket)', integerValue)
    .option('--burst <n>', 'bucket size for --per-second (default: --per-second)', integerValue)
    .option('--per-minute <n>', 'quota per UTC minute', integerValue)
    .option('--per-hour <n>', 'quota per UTC hour', integerValue)
    .option('--per-day <n>', 'quota per UTC day', integerValue)
    .option('--per-month <n>', 'quota per UTC calendar month', integerValue);
  clear('--no-rate-limit', 'remove every rate limit (with limit options: replace them all)');
  command.option('--expires-at <when>', 'expiry: ISO 8601 with a time zone (2028-01-01, 2028-01-01T09:00:00Z) or epoch ms', instantValue);
  clear('--no-expires-at', 'never expire');
  command.option('--metadata <json>', update ? 'metadata, a JSON object (replaces the key\'s)' : 'metadata, a JSON object', jsonObject);
  command.option('--tags <list>', 'tags, comma-separated or repeated', collectList);
  clear('--no-tags', 'remove every tag');
  command.option('--status <status>', update ? 'active, suspended or revoked' : 'active (default) or suspended');
  command.option('--allowed-origins <list>', 'browser origins (https://app.example.com, https://*.example.com), comma-separated or repeated', collectList);
  clear('--no-allowed-origins', 'allow any origin');
  command.option('--require-https', 'refuse the key on requests without TLS');
  clear('--no-require-https', 'accept the key without TLS');
  command.option('--client-certificate-sha256 <list>', 'pinned client certificates (SHA-256, 64 hex digits), comma-separated or repeated', collectList);
  clear('--no-client-certificate-sha256', 'require no client certificate');
  command.option('--max-concurrent <n>', 'requests of the key in flight at once, 1-1000', integerValue);
  clear('--no-max-concurrent', 'no concurrency limit');
  return command;
}

const HELP_FOOTER = `
Store: --redis <url> (redis://, rediss://), --postgres <url> (postgres://, postgresql://) or
--sqlite <file>; without them, ${STORE_URL_VARIABLE} (one of those URLs, sqlite:<file>, or a file path).

Exit codes: 0 done; 1 the store is unreachable or failed; 2 wrong input (nothing was written);
3 no key with that id.

  KEY=$(keygate create --name ci --scopes leads:read --sqlite keys.db)
  keygate list --owner-id user_42 --postgres "$DATABASE_URL" --json
  keygate rotate <id> --grace-period-ms 86400000 --redis redis://localhost:6379`;

/** Builds the program; its actions report through `context` and `io`. */
function program(env: Readonly<Record<string, string | undefined>>, io: CliIO, options: RunOptions): Command {
  const root = new Command('keygate')
    .description('Create, list, change, rotate, revoke and delete keygate API keys in a Redis, PostgreSQL or SQLite store.')
    .exitOverride()
    // Errors are printed by run(), on one line; help and version go to the writers.
    .configureOutput({ writeOut: (text) => io.stdout(text), writeErr: (text) => io.stderr(text), outputError: () => undefined })
    .configureHelp({ showGlobalOptions: true, sortSubcommands: false })
    .showSuggestionAfterError(true)
    .addOption(new Option('--redis <url>', 'a Redis store: redis://[:password@]host:port[/db] or rediss://…').conflicts(['postgres', 'sqlite']))
    .addOption(new Option('--postgres <url>', 'a PostgreSQL store: postgres://user[:password]@host:port/database').conflicts(['redis', 'sqlite']))
    .addOption(new Option('--sqlite <file>', 'a SQLite store: the database file').conflicts(['redis', 'postgres']))
    .option('--table <name>', 'the SQL table (default: keygate_api_keys)')
    .option('--redis-key-prefix <prefix>', 'the RedisStore keyPrefix, the namespace of its keys (default: "keygate:")')
    .option('--prefix <prefix>', `the prefix of the keys to mint (default: "${DEFAULT_PREFIX}"; rotate: the key's own)`)
    .addOption(new Option('--hashing <algorithm>', 'how a new key\'s secret is hashed (default: bcrypt)').choices(['bcrypt', 'sha256']))
    .option('--pepper-env <name>', 'read the pepper (the HMAC key of sha256 hashes) from this environment variable')
    .option('--json', 'print the result as JSON')
    .option('-q, --quiet', 'print nothing on stderr but errors and warnings')
    .addHelpText('after', HELP_FOOTER);
  if (options.version !== undefined) root.version(options.version, '-V, --version', 'print the version');

  const context = (command: Command): Context => contextOf(command, env, io);

  addSettingsOptions(
    root
      .command('create')
      .description('mint a key: the key alone on stdout (shown once), its details on stderr')
      .requiredOption('--name <name>', 'the key\'s name, 1-200 characters'),
    false,
  ).action(async (flags: SettingsFlags, command: Command) => {
    const ctx = context(command);
    const input = createInput(flags, Date.now());
    warnHashing(ctx);
    await withStore(ctx, true, async (open, manager) => {
      // A SQLite file is local and may be new: create its table (or add newer columns) first.
      if (ctx.target.kind === 'sqlite') await migrate(open);
      const created = await manager().create(input);
      printCreated(ctx, created, `Created key ${created.apiKey.keyPrefix} (id ${created.apiKey.id}).`);
    });
  });

  root
    .command('list')
    .description('list keys, oldest first, one page at a time')
    .option('--owner-id <id>', 'only this owner\'s keys')
    .option('--tenant-id <id>', 'only this tenant\'s keys')
    .option('--status <status>', 'only keys with this stored status: active, suspended or revoked')
    .option('--limit <n>', 'page size, 1-1000 (default: 100)', integerValue)
    .option('--cursor <cursor>', 'the next page, from the previous page\'s nextCursor')
    .option('--include-deleted', 'include deleted keys')
    .action(async (flags: ListFlags, command: Command) => {
      const ctx = context(command);
      const query = listInput(flags);
      await withStore(ctx, false, async (_open, manager) => {
        const page = await manager().list(query);
        if (ctx.json) {
          ctx.io.stdout(json(page));
          return;
        }
        if (page.items.length > 0) ctx.io.stdout(keyTable(page.items));
        else note(ctx, 'No keys.');
        if (page.nextCursor !== undefined) note(ctx, `More keys: add --cursor ${page.nextCursor}`);
      });
    });

  root
    .command('get')
    .description('show a key')
    .argument('<id>', 'the key\'s id')
    .action(async (id: string, _flags: unknown, command: Command) => {
      const ctx = context(command);
      recordId(id);
      await withStore(ctx, false, async (_open, manager) => {
        const apiKey = await manager().get(id);
        if (!apiKey) throw notFound(id);
        printKey(ctx, apiKey);
      });
    });

  addSettingsOptions(
    root
      .command('update')
      .description('change a key\'s settings (rate-limit options change those limits and keep the others)')
      .argument('<id>', 'the key\'s id'),
    true,
  ).action(async (id: string, flags: SettingsFlags, command: Command) => {
    const ctx = context(command);
    const plan = updatePlan(id, flags);
    await withStore(ctx, false, async (_open, manager) => {
      const keys = manager();
      let patch = plan.patch;
      if (plan.mergeLimits) {
        const current = await keys.get(id);
        if (!current) throw notFound(id);
        patch = { ...patch, rateLimit: { ...(current.rateLimit ?? {}), ...plan.mergeLimits } };
      }
      const apiKey = await keys.update(id, patch);
      note(ctx, `Updated key ${apiKey.keyPrefix}.`);
      printKey(ctx, apiKey);
    });
  });

  root
    .command('revoke')
    .description('revoke a key at once (revoking twice keeps the first instant)')
    .argument('<id>', 'the key\'s id')
    .action(async (id: string, _flags: unknown, command: Command) => {
      const ctx = context(command);
      recordId(id);
      await withStore(ctx, false, async (_open, manager) => {
        const apiKey = await manager().revoke(id);
        note(ctx, `Revoked key ${apiKey.keyPrefix}.`);
        printKey(ctx, apiKey);
      });
    });

  root
    .command('rotate')
    .description('replace a key with a new one (same settings, the uses left): the new key alone on stdout')
    .argument('<id>', 'the key\'s id')
    .option('--grace-period-ms <ms>', 'how long the old key keeps working (default: 0, revoked at once)', integerValue)
    .action(async (id: string, flags: { gracePeriodMs?: number | string }, command: Command) => {
      const ctx = context(command);
      recordId(id);
      const gracePeriodMs = gracePeriod(flags.gracePeriodMs);
      warnHashing(ctx);
      await withStore(ctx, false, async (_open, manager) => {
        let prefix = ctx.prefix;
        if (prefix === undefined) {
          // The replacement keeps the key's own prefix, whatever --prefix would default to.
          const current = await manager().get(id);
          if (!current) throw notFound(id);
          prefix = prefixOf(current.keyPrefix);
        }
        const rotated = await manager(prefix).rotate(id, { gracePeriodMs });
        const old = gracePeriodMs === 0 ? 'revoked now' : `still working until about ${new Date(Date.now() + gracePeriodMs).toISOString()}`;
        printCreated(ctx, rotated, `Rotated key ${id}: the new key is ${rotated.apiKey.keyPrefix} (id ${rotated.apiKey.id}), the old one is ${old}.`);
      });
    });

  root
    .command('delete')
    .description('delete a key: revoke it and hide it from list (purge removes it for good)')
    .argument('<id>', 'the key\'s id')
    .action(async (id: string, _flags: unknown, command: Command) => {
      const ctx = context(command);
      recordId(id);
      await withStore(ctx, false, async (_open, manager) => {
        const apiKey = await manager().delete(id);
        note(ctx, `Deleted key ${apiKey.keyPrefix}.`);
        printKey(ctx, apiKey);
      });
    });

  root
    .command('purge')
    .description('remove for good every key deleted before an instant')
    .requiredOption('--deleted-before <when>', 'ISO 8601 with a time zone, or epoch ms', instantValue)
    .action(async (flags: { deletedBefore: number | string }, command: Command) => {
      const ctx = context(command);
      const deletedBefore = purgeBefore(flags.deletedBefore);
      await withStore(ctx, false, async (_open, manager) => {
        const purged = await manager().purge({ deletedBefore });
        ctx.io.stdout(ctx.json ? json({ purged }) : `Purged ${purged} key${purged === 1 ? '' : 's'} deleted before ${deletedBefore.toISOString()}.\n`);
      });
    });

  root
    .command('migrate')
    .description('create or upgrade the SQL table (PostgreSQL, SQLite); idempotent')
    .action(async (_flags: unknown, command: Command) => {
      const ctx = context(command);
      if (ctx.target.kind === 'redis') throw usageError('migrate is for SQL stores (--postgres, --sqlite): a Redis store has no schema to migrate');
      await withStore(ctx, true, async (open) => {
        await migrate(open);
        const result = { migrated: true, store: ctx.target.kind, table: open.table };
        ctx.io.stdout(ctx.json ? json(result) : `The table ${open.table} of ${open.label} is up to date.\n`);
      });
    });

  return root;
}

/** An error as an exit code and one line (without the `keygate:` in front). */
function outcome(error: unknown): { code: number; message: string } {
  if (error instanceof CliError) return { code: error.exitCode, message: oneLine(error.message) };
  if (error instanceof CommanderError) {
    // --help, --version, and `keygate` alone (help on stderr) are not errors to print.
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return { code: EXIT.ok, message: '' };
    if (error.code === 'commander.help') return { code: EXIT.usage, message: '' };
    return { code: EXIT.usage, message: oneLine(error.message.replace(/^error: /, '')) };
  }
  if (isInvalidArgument(error)) return { code: EXIT.usage, message: oneLine(describeInvalid(error)) };
  if (isKeygateError(error) && error.code === 'not_found') return { code: EXIT.notFound, message: oneLine(safeText(error.message)) };
  return { code: EXIT.failure, message: messageOf(error) };
}

/**
 * Runs `keygate` with `argv` (the arguments after the program name) and resolves to its exit
 * code: 0 done, 1 the store failed, 2 wrong input (nothing written), 3 no such key.
 *
 * @example
 * ```ts
 * const code = await run(['list', '--sqlite', 'keys.db', '--json'], process.env, {
 *   stdout: (text) => process.stdout.write(text),
 *   stderr: (text) => process.stderr.write(text),
 * });
 * ```
 */
export async function run(argv: readonly string[], env: Readonly<Record<string, string | undefined>>, io: CliIO, options: RunOptions = {}): Promise<number> {
  const command = program(env, io, options);
  try {
    await command.parseAsync([...argv], { from: 'user' });
    return EXIT.ok;
  } catch (error) {
    const { code, message } = outcome(error);
    if (message !== '') {
      const name = command.args[0];
      const where = name && command.commands.some((sub) => sub.name() === name) && !(error instanceof CommanderError) ? `keygate ${name}` : 'keygate';
      io.stderr(`${where}: ${message}\n`);
    }
    return code;
  }
}
