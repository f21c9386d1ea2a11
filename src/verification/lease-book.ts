/**
 * Leased mode (`keygate({ consistency: 'leased' })`) on the process's side: for each key, the
 * units this process reserved from the store and has not spent yet. A request of a key with units
 * in hand is admitted at once, synchronously, with no store round trip; otherwise one reservation
 * per key is in flight at a time, and the requests that arrive meanwhile wait for it.
 *
 * What makes it safe is the store (`reserve` counts every unit at reservation, against every
 * limit, and holds bucket tokens): this book only decides how many units to ask for and for how
 * long to spend them.
 *
 * - **How long:** a lease is spent for at most half its hold (`ttlMs / 2`, counted from the request
 *   that asked for it: the other half covers the answer's way back and a store clock a little ahead),
 *   and never past the end of the shortest quota window the key has, since its units were counted in
 *   that window. `keygate()` requires `ttlMs` to be at least twice `storeTimeoutMs`, so a reservation
 *   answered in time always arrives with time left to spend it.
 * - **How many:** per key, adaptive: doubled when a lease ran out before its time, halved when more
 *   than half of it came back unspent; never more than `maxUnits`, nor more than `share` of any
 *   of the key's limits (so one process cannot sit on a whole quota), nor less than the requests
 *   already waiting for it.
 * - **Giving back:** a lease that ran out of time (on a timer, so an idle process gives its units
 *   back while the store still holds them), a key whose record changed (cache invalidation, also
 *   from the store's change notifications), and `close()` settle what was not spent. A
 *   settlement that fails loses those units for their window: an early refusal, never an
 *   over-admission.
 */
import { randomBytes } from 'node:crypto';
import { bucketCapacity } from '../policy/limits.js';
import type { ReserveOutcome, ReserveRequest, Settlement } from '../policy/reservation.js';
import { QUOTA_WINDOWS, windowIndex, windowStart } from '../policy/windows.js';
import { failureReason } from '../errors.js';
import { storeDeadline, storeUnavailable } from './timeout.js';

/** What `reserve` answers when the key's record changed while the request waited: decide it anew. */
export const RECORD_CHANGED = Symbol('keygate record changed');

/** How leases are sized and timed (`keygate({ lease })`), validated. */
export interface LeaseSettings {
  /** How long the store keeps a hold; this process spends a lease for half of it. */
  ttlMs: number;
  /** Most units one reservation asks for. */
  maxUnits: number;
  /** Largest fraction of any one limit of a key that one reservation asks for. */
  share: number;
}

/** The size a key's first lease asks for. */
const FIRST_LEASE_UNITS = 8;

/** A batch of units of one key in this process's hands. */
export interface LocalLease {
  /** The store's name of the reservation. */
  readonly lease: string;
  /** What the store answered: its counters after the reservation, the grant. */
  readonly outcome: ReserveOutcome;
  /** The reservation as sent (its limits describe the lease's RateLimit figures). */
  readonly request: ReserveRequest;
  /** Units not spent yet. */
  left: number;
  /** This process's clock: no unit is spent at or after it. */
  readonly until: number;
  /**
   * Ends the lease at `until` even if no request comes: an idle process must give its units back
   * while the store still holds them (a settlement after the hold lapsed finds nothing to return).
   */
  timer?: ReturnType<typeof setTimeout>;
}

/** A key's leasing state in this process. */
interface KeyLeases {
  current: LocalLease | null;
  /** The reservation in flight, if any: requests arriving meanwhile wait for it. */
  pending: Promise<ReserveOutcome | null> | null;
  /** Requests waiting for `pending`. */
  waiting: number;
  /** Units the next reservation asks for. */
  size: number;
  /** Bumped when the key's record changes: a reservation that began before is given back whole. */
  epoch: number;
}

/** What a reservation needs from a verified key. */
export interface LeasedKey {
  readonly id: string;
  readonly record: { readonly maxUses: number | null; readonly rateLimit: ReserveRequest['rateLimit'] };
}

/** Tells the verifier how a settlement failed (once per process is enough: units are only lost). */
let warnedAboutSettle = false;

/** The units each key of this process holds, and the reservations that get them. */
export class LeaseBook {
  readonly #keys = new Map<string, KeyLeases>();
  /** Names this process's reservations apart from every other process's (72 random bits). */
  readonly #space = randomBytes(9).toString('base64url');
  #count = 0;
  /** Set by close(): from then on a reservation asks for one unit, spent by the request that asked. */
  #closed = false;

  /**
   * @param reserveInStore - the store's `reserve`, bounded by the store timeout
   * @param settleInStore - the store's `settle`, bounded by the store timeout
   * @param now - keygate's clock (the one every consume and reservation is counted with)
   * @param onReserved - told of every admitted reservation (quota thresholds)
   */
  constructor(
    private readonly settings: LeaseSettings,
    private readonly reserveInStore: (id: string, request: ReserveRequest) => Promise<ReserveOutcome | null>,
    private readonly settleInStore: (id: string, settlement: Settlement) => Promise<void>,
    private readonly now: () => number,
    private readonly storeTimeoutMs: number,
    private readonly onReserved: (key: LeasedKey, request: ReserveRequest, outcome: ReserveOutcome) => void,
  ) {}

  /**
   * Spends one unit of the key's lease, if it has one valid at `now`: the lease (its `left`
   * already counts this request out), or `undefined` when a reservation is needed first.
   */
  take(id: string, now: number): LocalLease | undefined {
    const leases = this.#keys.get(id);
    const lease = leases?.current;
    if (!lease) return undefined;
    if (lease.left > 0 && now < lease.until) {
      lease.left--;
      return lease;
    }
    this.#end(id, leases as KeyLeases, lease);
    return undefined;
  }

  /**
   * Reserves units for a key (or joins the reservation in flight) and spends one: the lease, or
   * the store's outcome when it refused (or `null`: no such key). Several requests waiting for one
   * reservation each take a unit of it; those it does not cover reserve again.
   */
  async reserve(key: LeasedKey): Promise<LocalLease | ReserveOutcome | null | typeof RECORD_CHANGED> {
    const leases = this.#entry(key.id);
    // Requests that arrived before a change of the record must not reserve again under its old
    // limits (the store counts against the limits the caller sends): they are decided anew.
    const epoch = leases.epoch;
    for (;;) {
      if (leases.epoch !== epoch) return RECORD_CHANGED;
      const lease = this.take(key.id, this.now());
      if (lease) return lease;
      if (!leases.pending) {
        const started = this.now();
        leases.pending = this.#reserve(key, leases, started).finally(() => {
          leases.pending = null;
        });
      }
      leases.waiting++;
      let outcome: ReserveOutcome | null;
      try {
        outcome = await leases.pending;
      } finally {
        leases.waiting--;
      }
      if (outcome === null || !outcome.admitted) return outcome;
    }
  }

  /** Gives back the unspent units of a key's lease (its record changed), or of every key's (`null`). */
  drop(id: string | null): void {
    if (id === null) {
      for (const [keyId, leases] of this.#keys) if (leases.current) this.#end(keyId, leases, leases.current);
      return;
    }
    const leases = this.#keys.get(id);
    if (!leases) return;
    leases.epoch++;
    if (leases.current) this.#end(id, leases, leases.current);
  }

  /** Waits for reservations in flight, then gives back every unspent unit; resolves when the store has them. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled([...this.#keys.values()].map((leases) => leases.pending));
    const settled: Promise<void>[] = [];
    for (const [id, leases] of this.#keys) if (leases.current) settled.push(this.#end(id, leases, leases.current));
    await Promise.all(settled);
    // The entries stay: requests still waiting hold them, and take() must find what they reserve.
  }

  #entry(id: string): KeyLeases {
    let leases = this.#keys.get(id);
    if (!leases) this.#keys.set(id, (leases = { current: null, pending: null, waiting: 0, size: FIRST_LEASE_UNITS, epoch: 0 }));
    return leases;
  }

  async #reserve(key: LeasedKey, leases: KeyLeases, now: number): Promise<ReserveOutcome | null> {
    const { ttlMs } = this.settings;
    const units = this.#closed ? 1 : Math.max(1, Math.min(Math.max(leases.size, leases.waiting + 1), this.#cap(key)));
    const epoch = leases.epoch;
    const request: ReserveRequest = {
      now,
      maxUses: key.record.maxUses,
      rateLimit: key.record.rateLimit,
      units,
      lease: `${this.#space}.${(this.#count++).toString(36)}`,
      leaseMs: ttlMs,
      deadline: storeDeadline(this.storeTimeoutMs),
    };
    let outcome: ReserveOutcome | null;
    try {
      outcome = await this.reserveInStore(key.id, request);
    } catch (error) {
      // A reservation that timed out may still have been applied: give its units back, so that a
      // slow answer costs no uses (a settlement of a hold that does not exist changes nothing).
      void this.#settle(key.id, { lease: request.lease, outcome: { admitted: false, granted: 0, useCount: 0 }, request, left: units, until: 0 }, units);
      throw error;
    }
    if (outcome?.admitted && !(Number.isInteger(outcome.granted) && outcome.granted >= 1 && outcome.granted <= units)) {
      throw storeUnavailable('the key store granted a reservation no unit, or more than were asked for');
    }
    if (outcome?.admitted && leases.epoch !== epoch) {
      // The record changed while the reservation was on its way: its units go back whole, and the
      // requests waiting for it reserve again.
      void this.#settle(key.id, { lease: request.lease, outcome, request, left: outcome.granted, until: 0 }, outcome.granted);
      return outcome;
    }
    if (outcome?.admitted) {
      this.onReserved(key, request, outcome);
      if (leases.current) this.#end(key.id, leases, leases.current);
      const lease: LocalLease = { lease: request.lease, outcome, request, left: outcome.granted, until: spendUntil(request, outcome, ttlMs) };
      leases.current = lease;
      // In real milliseconds, at most half the hold: ending a lease early only gives units back.
      const delayMs = Math.min(Math.floor(ttlMs / 2), Math.max(1, lease.until - now));
      lease.timer = setTimeout(() => {
        if (leases.current !== lease) return;
        void this.#end(key.id, leases, lease);
        // An idle key is forgotten (its next lease starts small again), so the book holds only
        // the keys in use; one a request is waiting on stays, since that request holds it.
        if (leases.pending === null && leases.waiting === 0 && this.#keys.get(key.id) === leases) this.#keys.delete(key.id);
      }, delayMs);
      lease.timer.unref();
    }
    return outcome;
  }

  /**
   * Ends a lease: adapts the key's next size to how it went, and settles what was not spent
   * (nothing to settle for a lease spent whole: its hold lapses by itself in the store).
   */
  #end(id: string, leases: KeyLeases, lease: LocalLease): Promise<void> {
    if (leases.current === lease) leases.current = null;
    clearTimeout(lease.timer);
    const granted = lease.outcome.granted;
    const unspent = lease.left;
    lease.left = 0;
    if (unspent === 0) leases.size = Math.min(leases.size * 2, this.settings.maxUnits);
    else if (unspent * 2 > granted) leases.size = Math.max(1, Math.floor(leases.size / 2));
    if (unspent === 0 && lease.request.rateLimit?.perSecond === undefined) return Promise.resolve();
    return this.#settle(id, lease, unspent);
  }

  async #settle(id: string, lease: LocalLease, unspent: number): Promise<void> {
    try {
      await this.settleInStore(id, { lease: lease.lease, unspent, now: this.now(), rateLimit: lease.request.rateLimit });
    } catch (error) {
      if (warnedAboutSettle) return;
      warnedAboutSettle = true;
      process.emitWarning(`keygate: unspent leased units could not be given back (${failureReason(error)}); they stay counted until their window ends`, {
        code: 'KEYGATE_SETTLE_FAILED',
      });
    }
  }

  /** The most units one reservation of this key asks for: `maxUnits`, and `share` of each of its limits. */
  #cap(key: LeasedKey): number {
    const { maxUnits, share } = this.settings;
    let cap = maxUnits;
    const { maxUses, rateLimit } = key.record;
    if (maxUses !== null) cap = Math.min(cap, Math.floor(maxUses * share));
    if (rateLimit) {
      for (const window of QUOTA_WINDOWS) {
        const quota = rateLimit[window.limit];
        if (quota !== undefined) cap = Math.min(cap, Math.floor(quota * share));
      }
      if (rateLimit.perSecond !== undefined) cap = Math.min(cap, Math.floor(bucketCapacity(rateLimit) * share));
    }
    return Math.max(1, cap);
  }
}

/**
 * Until when (this process's clock) a lease may be spent: half its hold, and never past the end of
 * the shortest quota window the key has at the instant the store counted the reservation in.
 */
function spendUntil(request: ReserveRequest, outcome: ReserveOutcome, ttlMs: number): number {
  const countedAt = outcome.countedAt ?? request.now;
  let until = request.now + Math.floor(ttlMs / 2);
  const rateLimit = request.rateLimit;
  if (rateLimit) {
    for (const window of QUOTA_WINDOWS) {
      if (rateLimit[window.limit] === undefined) continue;
      const end = windowStart(window, windowIndex(window, countedAt) + 1);
      // The window's end on this process's clock, which may lag the counting instant.
      until = Math.min(until, end - (countedAt - request.now));
    }
  }
  return until;
}
