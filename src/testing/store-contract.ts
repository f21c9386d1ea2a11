/**
 * The store contract suite: the behaviour every {@link ApiKeyStore} must have, as jest tests.
 * Every built-in store runs it, and so should every custom store.
 *
 * The tests live in one file per feature under `contract/` (records, list, update, consume,
 * windows, agreement, rotate, delete, subscribe, concurrency, audit, usage, alerts), the way abstract-level publishes its
 * suite; this module is the entry point that registers them all. The suite uses the test runner's ambient globals (`describe`, `it`,
 * `expect`), so it needs no import of jest and adds no jest types to keygate's public
 * declarations. Time is always passed in (the suite uses fixed instants), so nothing in it sleeps.
 */
import type { ApiKeyStore } from '../stores/store.js';
import { integerOption, rejectUnknownOptions } from '../options/checks.js';
import { agreementContract } from './contract/agreement.js';
import { alertsContract } from './contract/alerts.js';
import { auditContract } from './contract/audit.js';
import { CAPABILITIES, capabilitiesContract } from './contract/capabilities.js';
import { concurrencyContract } from './contract/concurrency.js';
import { consumeContract } from './contract/consume.js';
import { deleteContract } from './contract/delete.js';
import { listContract } from './contract/list.js';
import { recordsContract } from './contract/records.js';
import { rotateContract } from './contract/rotate.js';
import { type AgreementSettings, contractSuite, testGlobals } from './contract/shared.js';
import { windowsContract } from './contract/windows.js';
import { subscribeContract } from './contract/subscribe.js';
import { updateContract } from './contract/update.js';
import { usageContract } from './contract/usage.js';
import { leasesContract } from './contract/leases.js';
import { synchronousContract } from './contract/synchronous.js';

/**
 * The optional parts of {@link ApiKeyStore} a store implements. The tests of a capability run only
 * when it is declared here, and are reported as skipped otherwise; one test that always runs checks
 * that the declaration matches the store, so a capability can be neither forgotten (its tests
 * silently skipped) nor claimed without its methods, and a capability of two methods (`audit`,
 * `usage`) is implemented whole or not at all.
 */
export interface StoreCapabilities {
  /**
   * The store implements `subscribe` (change notifications for verification caches).
   * @default false
   */
  subscribe?: boolean;
  /**
   * The store implements `release` and holds concurrency leases in `consume`, so keys with
   * `maxConcurrent` can use it. Declared, the suite checks the leases (a claim admitted only while
   * fewer than its `limit` are live, `inFlight`, `concurrency_limited` as the least lasting refusal,
   * release, lapse at `leaseMs` after the counting instant, atomicity, lease ids kept as data), and
   * its agreement test adds claims and releases to the sequences it tries.
   * @default false
   */
  concurrency?: boolean;
  /**
   * The store implements `appendAudit` and `listAudit` (the audit trail behind `keys.auditLog()`).
   * Declared, the suite checks exact round trips (`at` to the millisecond, `actor`, absent
   * `tenantId` / `environment`, `changes` up to 64 KiB, fresh copies), a taken id refused with
   * `already_exists` and nothing changed, every filter alone and combined (`keyId`, `actorId`,
   * `tenantId`, `environment`, `from` inclusive, `to` exclusive) as exact strings, (at, id) order,
   * `limit`, keyset paging with `after` with no duplicate and no gap, and that `purge` leaves the
   * trail alone.
   * @default false
   */
  audit?: boolean;
  /**
   * The store implements `addUsage` and `readUsage` (the usage cells behind `keys.usage()`).
   * Declared, the suite checks that counts add up exactly (to `Number.MAX_SAFE_INTEGER`) and
   * `maxResponseMicros` keeps the larger, cells stay apart by key, day, route (`null` included) and
   * outcome, `readUsage` day ranges (both ends included), a batch id applied once (retried, also
   * concurrently), concurrent batches summing with no update lost, a key's cells of one batch never
   * seen half added, cells of unknown keys stored, and `purge` removing the purged keys' cells
   * (every day, no other key's) while `delete` leaves them.
   * @default false
   */
  usage?: boolean;
  /**
   * The store implements `claimAlert` (alerts sent once across processes). Declared, the suite
   * checks that the first claim of a name wins and the others lose while it is live (a losing
   * claim changing nothing), the lapse at `expiresAt` on the caller's clock, re-claiming, exactly
   * one winner among concurrent claims, and names as exact strings up to 512 characters.
   * @default false
   */
  alerts?: boolean;
  /**
   * The store implements `reserve` and `settle` (reservations for `keygate({ consistency: 'leased' })`).
   * Declared, the suite checks grants bounded by units, uses left, each quota's window and the
   * bucket's whole tokens; refusals that change nothing, reported as a consume's; held tokens
   * capping the bucket's refill until settled or lapsed; settlements that give back unspent units
   * once (to useCount and the windows still current) and never more than the hold; lifecycle and
   * deadline refusals; counters shared with consume; no over-grant under concurrent reservations;
   * holds purged with their record; and agreement with `decideReservation`, `decideSettlement`
   * and `decideConsume` on random sequences (fast-check).
   * @default false
   */
  leases?: boolean;
  /**
   * The store implements `consumeNow`, a consume answered before it returns (a store counting in
   * the caller's process). Declared, the suite checks it returns no promise and decides exactly as
   * `consume` and `decideConsume` do, interleaved with `consume`.
   * @default false
   */
  synchronous?: boolean;
}

/**
 * How the suite's property-based agreement test runs. That test drives random sequences of
 * consumes (clocks stepping across second, minute, hour, UTC-day and UTC-month boundaries, leap
 * years, dates before 1970, lagging clocks; limits that change between calls) through the store
 * and through keygate's own limit model, and requires the same outcomes and counters. It needs the
 * `fast-check` package (an optional peer dependency of `keygate/testing`): install it as a dev
 * dependency next to your store's tests.
 *
 * On failure the error names the step where the store and the model parted, and fast-check's
 * `seed` and `path`; pass them here (or set the environment variables `KEYGATE_AGREEMENT_SEED`
 * and `KEYGATE_AGREEMENT_PATH`, which take precedence) to replay exactly that sequence.
 */
export interface AgreementOptions {
  /**
   * Random sequences tried (each of up to 25 calls, on a fresh record: consumes, and releases when
   * the store declares `concurrency`).
   * @default 50 (or the environment variable `KEYGATE_AGREEMENT_RUNS`)
   */
  numRuns?: number;
  /** fast-check seed, for a reproducible run. @default a random seed, reported on failure */
  seed?: number;
  /** fast-check replay path reported with a failure (goes with its `seed`). */
  path?: string;
}

/**
 * How {@link describeStoreContract} gets, and gets rid of, the stores it tests, and what they can do.
 *
 * @typeParam S - the store class under test, so `destroy` receives it with its own type.
 */
export interface StoreContractOptions<S extends ApiKeyStore = ApiKeyStore> {
  /**
   * Makes the store one test runs against. Called once for every test, and each call must return
   * an empty store: the suite counts and lists records and expects to see only its own (flush the
   * database, or use a fresh key prefix / schema, here).
   */
  create: () => S | Promise<S>;
  /**
   * Called after every test with the store `create` made for it, whether the test passed or not:
   * close connections, drop tables. Never called for a store `create` failed to make.
   */
  destroy?: (store: S) => void | Promise<void>;
  /**
   * The optional capabilities the store implements. Undeclared capabilities have their tests
   * reported as skipped; a store that implements a capability's methods (`subscribe`, `release`,
   * `appendAudit` and `listAudit`, `addUsage` and `readUsage`, `claimAlert`) without declaring it,
   * or only one method of a pair, fails the suite's capability check, so nothing it does is left
   * untested by accident.
   * @default {} (no optional capability)
   * @example
   * ```ts
   * describeStoreContract('MyStore', { create: () => new MyStore(), capabilities: { subscribe: true, concurrency: true } });
   * ```
   */
  capabilities?: StoreCapabilities;
  /** How the property-based agreement test with keygate's limit model runs. */
  agreement?: AgreementOptions;
}

/** Default number of random sequences the agreement test tries. */
const AGREEMENT_RUNS = 50;

/** The agreement options, checked, with the environment's overrides applied. */
function agreementSettings(options: AgreementOptions | undefined): AgreementSettings {
  const where = 'describeStoreContract() agreement';
  if (options !== undefined && (options === null || typeof options !== 'object')) throw new TypeError(`${where} must be an object`);
  const given: AgreementOptions = { ...options };
  rejectUnknownOptions(given, ['numRuns', 'seed', 'path'], where);
  const env = typeof process === 'undefined' ? {} : process.env;
  const runs = env.KEYGATE_AGREEMENT_RUNS ? Number(env.KEYGATE_AGREEMENT_RUNS) : given.numRuns;
  const seed = env.KEYGATE_AGREEMENT_SEED ? Number(env.KEYGATE_AGREEMENT_SEED) : given.seed;
  const path = env.KEYGATE_AGREEMENT_PATH || given.path;
  const settings: AgreementSettings = { numRuns: runs === undefined ? AGREEMENT_RUNS : integerOption(runs, `${where}.numRuns`, 1, 100_000) };
  if (seed !== undefined) settings.seed = integerOption(seed, `${where}.seed`, -(2 ** 31), 2 ** 31 - 1);
  if (path !== undefined) {
    if (typeof path !== 'string' || !/^\d+(:\d+)*$/.test(path)) throw new TypeError(`${where}.path must be a fast-check path such as "3:1:0"`);
    settings.path = path;
  }
  return settings;
}

/**
 * Declares the store contract suite: a jest `describe` block named `name` whose tests check that a
 * store round-trips records exactly, rejects duplicates, applies patches (a revoked key stays
 * revoked, and a revocation is stamped by the store), lists in keyset order, consumes atomically
 * and all-or-nothing (max uses, minute/hour/day/month quotas, token bucket, lifecycle refusals),
 * agrees with keygate's own limit model on random sequences of clocks and limits, rotates in one
 * step carrying the remaining uses, deletes a key once (`deletedAt`), leaves deleted keys out of
 * `list` unless `includeDeleted` (pages still full), purges exactly the keys deleted before
 * `deletedBefore` with everything kept for them, one atomic step each, and, when declared,
 * notifies subscribers (of purged keys too), holds concurrency leases (`release`,
 * `maxConcurrent`), keeps an audit trail (`appendAudit`, `listAudit`), adds up usage cells once per
 * batch (`addUsage`, `readUsage`) and grants alert claims once (`claimAlert`).
 *
 * Call it at the top level of a jest test file. `create` runs before each test and must return an
 * empty store; `destroy`, when given, receives every store `create` made, after its test.
 * Throws a `TypeError` for an unknown or non-boolean entry of `capabilities` (a typo would
 * otherwise skip tests).
 *
 * @example
 * ```ts
 * // my-store.contract.test.ts
 * import { describeStoreContract } from 'keygate/testing';
 * import { MyStore } from '../src/my-store';
 *
 * describeStoreContract('MyStore', {
 *   create: async () => {
 *     const store = new MyStore({ url: process.env.DATABASE_URL });
 *     await store.reset();
 *     return store;
 *   },
 *   destroy: async (store) => store.close(),
 *   capabilities: { subscribe: true },
 * });
 * ```
 */
export function describeStoreContract<S extends ApiKeyStore>(name: string, options: StoreContractOptions<S>): void {
  if (options.capabilities !== undefined) {
    rejectUnknownOptions(options.capabilities, Object.keys(CAPABILITIES), 'describeStoreContract() capabilities');
    for (const [capability, declared] of Object.entries(options.capabilities)) {
      if (declared !== undefined && typeof declared !== 'boolean') {
        throw new TypeError(`describeStoreContract(): capabilities.${capability} must be a boolean`);
      }
    }
  }
  const agreement = agreementSettings(options.agreement);
  const globals = testGlobals();
  const suite = contractSuite(globals, options, agreement);

  globals.describe(name, () => {
    capabilitiesContract(suite);
    recordsContract(suite);
    updateContract(suite);
    listContract(suite);
    consumeContract(suite);
    windowsContract(suite);
    agreementContract(suite);
    rotateContract(suite);
    deleteContract(suite);
    subscribeContract(suite);
    concurrencyContract(suite);
    auditContract(suite);
    usageContract(suite);
    alertsContract(suite);
    leasesContract(suite);
    synchronousContract(suite);
  });
}
