/**
 * Contract feature: the store counts exactly as keygate's own limit model does. A property test
 * (fast-check) drives random sequences of consumes through the store and through `decideConsume`
 * (`policy/limits.ts`) on a model counter state, and requires, at every step, the same outcome:
 * admitted or not, the refusal, `useCount`, every window count reported, the bucket's `tokens`,
 * `countedAt`, and `inFlight`; and at the end the same counters as the store shows them
 * (`useCount`, `lastUsedAt`, `updatedAt`, and every window count, the bucket level and the live
 * leases, read with a probe consume that is refused and counts nothing).
 *
 * `tokens` is compared exactly, not within a tolerance: every implementation computes the bucket in
 * IEEE-754 doubles in the same order (`min(capacity, tokens + (at - tokensAt) × perSecond / 1000)`),
 * and stores it without loss (JavaScript numbers, `%.17g` text in Redis, float8 / REAL in SQL), so
 * any difference, even of one unit in the last place, is a difference in the arithmetic, and one
 * that could flip an admission at the edge of a token.
 *
 * The clocks step by milliseconds, to just before and just after the next second, minute, hour,
 * UTC day and UTC month, to around the instant the bucket holds a whole token again or the next
 * lease lapses, by days, and back (a process whose clock lags); they start near February's
 * end in leap years (2000, 2024) and in a non-leap century (2100), at 31- and 30-day months' ends,
 * at New Year, before and at the epoch, or anywhere from 1960 to 2110. (Before 1970 a key's counters
 * are at the epoch, the model's `tokensAt` of a key never used, so earlier clocks count there.) The limits are random
 * subsets of `perSecond`/`burst`/`perMinute`/`perHour`/`perDay`/`perMonth` with small quotas, and
 * `maxUses`; each sequence switches between up to three of them, as an update would.
 *
 * When the store declares the `concurrency` capability, most of those limits also carry a
 * concurrency claim (`limit` 1–3, `leaseMs` from 1 ms to 5 s, a fresh lease per consume), and some
 * steps release a lease taken earlier (maybe already released or lapsed) instead of consuming. The
 * model keeps the key's leases with `liveLeases` / `leasesAfter` at `countingInstant`; a refused
 * claim changes no lease (not even a lapsed one, which a later caller with a lagging clock may
 * still count).
 *
 * `fast-check` is loaded when the test runs, never when `keygate/testing` is imported, so it stays
 * an optional peer dependency of `keygate/testing` and is never one of `keygate` itself.
 */
import type { Arbitrary } from 'fast-check';
import { type CounterState, type Leases, countingInstant, decideConsume, initialCounters, leasesAfter, liveLeases } from '../../policy/limits.js';
import { QUOTA_WINDOWS, windowIndex, windowStart } from '../../policy/windows.js';
import type { ApiKeyStore, ConcurrencyClaim, ConsumeOutcome, ConsumeRequest } from '../../stores/store.js';
import type { RateLimit } from '../../types.js';
import { type AgreementSettings, type ContractSuite, makeRecord, probeRequest, releaseOf } from './shared.js';

/** A unit the clock can step across. */
type Boundary = 'second' | 'minute' | 'hour' | 'day' | 'month';

/** How the clock moves before one step. */
type Move =
  /** A few milliseconds to a few seconds forward (0 included: the same instant again). */
  | { kind: 'tick'; ms: number }
  /** To `offset` ms around the start of the next second, minute, hour, UTC day or UTC month. */
  | { kind: 'boundary'; unit: Boundary; offset: number }
  /** Minutes to weeks forward. */
  | { kind: 'leap'; ms: number }
  /** Back in time, for good: this and the following calls come from a lagging clock. */
  | { kind: 'back'; ms: number }
  /**
   * To `offset` ms around the instant the bucket (at this step's `perSecond`) holds a whole token
   * again: where `tokens < 1` and `tokens ≥ 1` part, and where a rounding would show.
   */
  | { kind: 'refill'; offset: number }
  /** To `offset` ms around the instant the next of the key's leases lapses (where it stops counting). */
  | { kind: 'lapse'; offset: number };

/** The limits one consume carries (as the caller read them from the record). */
interface Limits {
  maxUses: number | null;
  rateLimit: RateLimit | null;
  /** The key's `maxConcurrent` and the lease duration, when the consume carries a claim. */
  concurrency: Omit<ConcurrencyClaim, 'lease'> | null;
}

/**
 * One call: how the clock moved, a one-off skew of this caller, which limits it carries; or, with
 * `release`, a release instead of a consume.
 */
interface Step {
  move: Move;
  /** Added to the clock for this call only (≤ 0: another process whose clock lags). */
  skew: number;
  /** Index into the scenario's limits (taken modulo their number). */
  limits: number;
  /**
   * When set, the step releases a lease instead: the admitted one at this index (modulo their
   * number; it may be released or lapsed already), or one never taken when none was admitted.
   */
  release: number | null;
}

/** One random sequence against one fresh record. */
interface Scenario {
  /** The clock before the first step. */
  start: number;
  /** The record's `useCount` when inserted. */
  useCount: number;
  /** The limits the steps switch between (one to three: an update changes them). */
  limits: Limits[];
  steps: Step[];
}

/** The part of fast-check the test uses (loaded with a dynamic import). */
type FastCheck = typeof import('fast-check');

const SECOND_MS = 1_000;
const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;

/**
 * Instants the sequences start shortly before: the ends of February in leap and non-leap years,
 * of 31- and 30-day months, of a year, and of the time before the epoch.
 */
const ANCHORS: readonly number[] = [
  Date.UTC(2024, 1, 29), // 2024-02-28 → 29 (leap year)
  Date.UTC(2024, 2, 1), // 2024-02-29 → 03-01
  Date.UTC(2000, 2, 1), // 2000-02-29 → 03-01 (leap: divisible by 400)
  Date.UTC(2100, 2, 1), // 2100-02-28 → 03-01 (not leap: divisible by 100)
  Date.UTC(2025, 1, 1), // 31-day January → February
  Date.UTC(2025, 4, 1), // 30-day April → May
  Date.UTC(2026, 0, 1), // New Year
  0, // 1969-12-31 → the epoch
  Date.UTC(1969, 2, 1), // before the epoch
  Date.UTC(2101, 0, 1), // the end of 2100, a year of 365 days though divisible by 4
];

/** The instant `offset` ms around the start of the `unit` after the one holding `at`. */
function nextBoundary(at: number, unit: Boundary, offset: number): number {
  const lengths: Record<Exclude<Boundary, 'month'>, number> = { second: SECOND_MS, minute: MINUTE_MS, hour: HOUR_MS, day: DAY_MS };
  if (unit === 'month') {
    const month = QUOTA_WINDOWS.find((window) => window.name === 'month');
    if (!month) throw new Error('no month window');
    return windowStart(month, windowIndex(month, at) + 1) + offset;
  }
  const length = lengths[unit];
  return (Math.floor(at / length) + 1) * length + offset;
}

/** The clock after `move`, given the model's counters and leases and the limits of the coming call. */
function advance(clock: number, move: Move, state: CounterState, limits: Limits, leases: Leases): number {
  switch (move.kind) {
    case 'lapse': {
      const at = countingInstant(state, clock);
      const lapses = Object.values(leases).filter((until) => until > at);
      return lapses.length === 0 ? clock : Math.min(...lapses) + move.offset;
    }
    case 'refill': {
      const perSecond = limits.rateLimit?.perSecond;
      if (perSecond === undefined || state.tokens === null || state.tokens >= 1) return clock;
      return state.tokensAt + Math.ceil(((1 - state.tokens) * SECOND_MS) / perSecond) + move.offset;
    }
    case 'tick':
    case 'leap':
      return clock + move.ms;
    case 'back':
      return clock - move.ms;
    case 'boundary':
      return nextBoundary(clock, move.unit, move.offset);
  }
}

/** The generator of scenarios; concurrency claims and releases only `withLeases`. */
function scenarios(fc: FastCheck, withLeases: boolean): Arbitrary<Scenario> {
  const move: Arbitrary<Move> = fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('tick' as const), ms: fc.oneof(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 1_500 })) }) },
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant('boundary' as const),
        unit: fc.constantFrom<Boundary>('second', 'minute', 'hour', 'day', 'month'),
        // Right at the boundary, a millisecond either side, or a little way off.
        offset: fc.oneof(fc.integer({ min: -2, max: 2 }), fc.integer({ min: -1_500, max: 1_500 })),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('leap' as const), ms: fc.integer({ min: MINUTE_MS, max: 40 * DAY_MS }) }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('refill' as const), offset: fc.integer({ min: -2, max: 2 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('back' as const), ms: fc.oneof(fc.integer({ min: 1, max: 2_000 }), fc.integer({ min: 1, max: 2 * DAY_MS })) }) },
    ...(withLeases ? [{ weight: 2, arbitrary: fc.record({ kind: fc.constant('lapse' as const), offset: fc.integer({ min: -2, max: 2 }) }) }] : []),
  );
  const skew = fc.oneof(
    { weight: 5, arbitrary: fc.constant(0) },
    { weight: 1, arbitrary: fc.integer({ min: -1_500, max: 0 }) },
    { weight: 1, arbitrary: fc.integer({ min: -2 * HOUR_MS, max: 0 }) },
  );
  // A bucket (two times in three), never a burst without perSecond (validation refuses it).
  const bucket = fc.option(
    fc.record({ perSecond: fc.oneof(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 10 })), burst: fc.integer({ min: 1, max: 4 }) }, { requiredKeys: ['perSecond'] }),
    { nil: null, freq: 3 },
  );
  const quotas = fc.record(
    {
      perMinute: fc.integer({ min: 1, max: 4 }),
      perHour: fc.integer({ min: 1, max: 6 }),
      perDay: fc.integer({ min: 1, max: 8 }),
      perMonth: fc.integer({ min: 1, max: 12 }),
    },
    { requiredKeys: [] },
  );
  const rateLimit: Arbitrary<RateLimit | null> = fc.option(
    fc.tuple(bucket, quotas).map(([inBucket, inQuotas]): RateLimit => ({ ...inBucket, ...inQuotas })),
    { nil: null, freq: 6 },
  );
  // A claim on two limits in three, leases lasting a few milliseconds (lapsing between calls) to seconds.
  const leaseMs = fc.oneof({ weight: 1, arbitrary: fc.integer({ min: 1, max: 50 }) }, { weight: 3, arbitrary: fc.integer({ min: 1, max: 5_000 }) });
  const concurrency: Arbitrary<Limits['concurrency']> = withLeases
    ? fc.option(fc.record({ limit: fc.integer({ min: 1, max: 3 }), leaseMs }), { nil: null, freq: 3 })
    : fc.constant(null);
  const limits: Arbitrary<Limits> = fc.record({
    maxUses: fc.option(fc.integer({ min: 0, max: 25 }), { nil: null, freq: 2 }),
    rateLimit,
    concurrency,
  });
  // One step in five releases a lease, when there are leases.
  const release: Arbitrary<number | null> = withLeases
    ? fc.oneof({ weight: 4, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.nat({ max: 24 }) })
    : fc.constant(null);
  const start = fc.oneof(
    { weight: 3, arbitrary: fc.tuple(fc.constantFrom(...ANCHORS), fc.oneof(fc.integer({ min: 1, max: 3_000 }), fc.integer({ min: 1, max: 2 * HOUR_MS }))).map(([anchor, before]) => anchor - before) },
    { weight: 1, arbitrary: fc.integer({ min: Date.UTC(1960, 0, 1), max: Date.UTC(2110, 0, 1) }) },
  );
  return fc.record({
    start,
    useCount: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 5 }) }),
    limits: fc.array(limits, { minLength: 1, maxLength: 3 }),
    steps: fc.array(fc.record({ move, skew, limits: fc.nat({ max: 2 }), release }), { minLength: 1, maxLength: 25 }),
  });
}

/** The outcome without fields set to `undefined` (which `toEqual` would ignore too). */
function defined(outcome: ConsumeOutcome | null): Record<string, unknown> | null {
  if (outcome === null) return null;
  return Object.fromEntries(Object.entries(outcome).filter(([, value]) => value !== undefined));
}

/** Whether the store's outcome is exactly the model's: the same fields, each with the same value. */
function sameOutcome(actual: ConsumeOutcome | null, expected: ConsumeOutcome): boolean {
  const a = defined(actual);
  const e = defined(expected) as Record<string, unknown>;
  if (a === null) return false;
  const keys = Object.keys(e).sort();
  const actualKeys = Object.keys(a).sort();
  return keys.length === actualKeys.length && keys.every((key, i) => actualKeys[i] === key && a[key] === e[key]);
}

/** The model's leases without `lease` (no prototype: a lease id is data). */
function released(leases: Leases, lease: string): Leases {
  const kept = Object.create(null) as Record<string, number>;
  for (const [other, until] of Object.entries(leases)) if (other !== lease) kept[other] = until;
  return kept;
}

/** The model's decision of a consume: the outcome the store must return, and what it leaves. */
interface ModelStep {
  outcome: ConsumeOutcome;
  next: CounterState | null;
  leases: Leases;
}

/**
 * The model's decision of a consume that carries `claim`: `decideConsume` with the leases live at
 * `countingInstant`; admitted, the leases become `leasesAfter` (the lapsed ones can never count
 * again: the key's latest instant is now `at`); refused, they stay exactly as they were, lapsed
 * ones included, since a later caller whose clock lags may count at an earlier instant.
 */
function decideClaimed(state: CounterState, request: ConsumeRequest, claim: ConcurrencyClaim, leases: Leases): ModelStep {
  const at = countingInstant(state, request.now);
  const { outcome, next } = decideConsume(state, request, Object.keys(liveLeases(leases, at)).length);
  return { outcome, next, leases: next ? leasesAfter(leases, claim, at) : leases };
}

/** A copy of a request, so that a store changing what it was given cannot change the model's. */
function copyOf(request: ConsumeRequest): ConsumeRequest {
  const copy: ConsumeRequest = { ...request, rateLimit: request.rateLimit && { ...request.rateLimit } };
  if (request.concurrency) copy.concurrency = { ...request.concurrency };
  return copy;
}

/** An instant as ISO text and epoch ms (`Date` cannot show years beyond ±275 760, so guard it). */
function instant(at: number): string {
  const date = new Date(at);
  return `${Number.isNaN(date.getTime()) ? 'invalid' : date.toISOString()} (${at})`;
}

/** One line of the trace: a consume and what the store said, or a release. */
type TraceLine = { step: number; clock: number } & ({ request: ConsumeRequest; outcome: ConsumeOutcome | null } | { release: string });

function describeRequest(request: ConsumeRequest, clock: number): string {
  const skew = request.now - clock;
  const claim = request.concurrency ? ` concurrency=${JSON.stringify(request.concurrency)}` : '';
  return `now=${instant(request.now)}${skew === 0 ? '' : ` (skewed ${skew} ms)`} maxUses=${String(request.maxUses)} rateLimit=${JSON.stringify(request.rateLimit)}${claim}`;
}

function describeLine(line: TraceLine): string {
  if ('release' in line) return `  #${line.step} release(id, ${JSON.stringify(line.release)}) at clock ${instant(line.clock)}`;
  return `  #${line.step} ${describeRequest(line.request, line.clock)} → ${JSON.stringify(line.outcome)}`;
}

/** The error that says where the store and the model parted (`leases`: the model's, before the last call). */
function divergence(what: string, scenario: Scenario, trace: readonly TraceLine[], store: unknown, model: unknown, leases?: Leases): Error {
  const last = trace[trace.length - 1];
  const lines = [
    `the store and keygate's limit model (decideConsume) disagree ${what}:`,
    ...(last && 'request' in last ? [`  request  ${describeRequest(last.request, last.clock)}`] : []),
    `  store    ${JSON.stringify(store)}`,
    `  model    ${JSON.stringify(model)}`,
    ...(leases ? [`  model's leases before it (lease: lapse instant): ${JSON.stringify(leases)}`] : []),
    `record inserted with useCount ${scenario.useCount}; every call so far (step: request → store outcome):`,
    ...trace.map(describeLine),
  ];
  return new Error(lines.join('\n'));
}

/** Runs one scenario against the store and the model; throws at the first difference. */
async function runScenario(store: ApiKeyStore, scenario: Scenario, withLeases: boolean): Promise<void> {
  const record = makeRecord({ useCount: scenario.useCount });
  await store.insert(record);
  let state: CounterState = initialCounters(scenario.useCount);
  let lastUsedAt: number | null = record.lastUsedAt === null ? null : record.lastUsedAt.getTime();
  let leases: Leases = {};
  const admittedLeases: string[] = [];
  let clock = scenario.start;
  const trace: TraceLine[] = [];

  for (const [i, step] of scenario.steps.entries()) {
    const limits = scenario.limits[step.limits % scenario.limits.length] as Limits;
    clock = advance(clock, step.move, state, limits, leases);
    const at = `at step ${i + 1} of ${scenario.steps.length}`;

    if (step.release !== null) {
      const lease = admittedLeases[step.release % Math.max(1, admittedLeases.length)] ?? `lease-${i + 1}`;
      trace.push({ step: i + 1, clock, release: lease });
      try {
        await releaseOf(store)(record.id, lease);
      } catch (error) {
        throw divergence(`${at}: release() rejected, where it must resolve for any lease`, scenario, trace, String(error), 'resolves', leases);
      }
      leases = released(leases, lease);
      continue;
    }

    const request: ConsumeRequest = { now: clock + step.skew, maxUses: limits.maxUses, rateLimit: limits.rateLimit && { ...limits.rateLimit } };
    const claim: ConcurrencyClaim | undefined = limits.concurrency ? { ...limits.concurrency, lease: `lease-${i + 1}` } : undefined;
    if (claim) request.concurrency = claim;
    const actual = await store.consume(record.id, copyOf(request));
    trace.push({ step: i + 1, request, clock, outcome: actual });
    const model: ModelStep = claim ? decideClaimed(state, request, claim, leases) : { ...decideConsume(state, request), leases };
    if (!sameOutcome(actual, model.outcome)) throw divergence(at, scenario, trace, actual, model.outcome, withLeases ? leases : undefined);
    if (model.next) {
      state = model.next;
      lastUsedAt = request.now;
      if (claim) admittedLeases.push(claim.lease);
    }
    leases = model.leases;
  }

  // The counters the store holds now, every window, the bucket and the live leases: a refused probe shows them all.
  const probe = probeRequest(clock, withLeases);
  const actual = await store.consume(record.id, copyOf(probe));
  trace.push({ step: scenario.steps.length + 1, request: probe, clock, outcome: actual });
  const model: ModelStep = probe.concurrency ? decideClaimed(state, probe, probe.concurrency, leases) : { ...decideConsume(state, probe), leases };
  if (!sameOutcome(actual, model.outcome)) {
    const what = `on the counters left after the sequence (a probe consume with maxUses 0 and every quota set${withLeases ? ', and a claim' : ''})`;
    throw divergence(what, scenario, trace, actual, model.outcome, withLeases ? leases : undefined);
  }
  const found = await store.findById(record.id);
  const stored = {
    useCount: found?.useCount,
    lastUsedAt: found?.lastUsedAt ? found.lastUsedAt.getTime() : found?.lastUsedAt,
    updatedAt: found?.updatedAt.getTime(),
  };
  const modelled = { useCount: state.useCount, lastUsedAt, updatedAt: record.updatedAt.getTime() };
  if (stored.useCount !== modelled.useCount || stored.lastUsedAt !== modelled.lastUsedAt || stored.updatedAt !== modelled.updatedAt) {
    const what = 'on the record after the sequence (useCount; lastUsedAt, the `now` of the last admitted call; updatedAt, which neither consume nor release changes; as epoch ms)';
    throw divergence(what, scenario, trace, stored, modelled);
  }
}

/** Loads fast-check, or explains how to get it (the agreement and reservation tests use it). */
export async function loadFastCheck(): Promise<FastCheck> {
  try {
    return await import('fast-check');
  } catch (error) {
    throw new Error(
      "the store contract's agreement test needs the package fast-check (an optional peer dependency of keygate/testing): npm install --save-dev fast-check",
      { cause: error },
    );
  }
}

/** Runs the property; a failure carries the diverging step, and how to replay it. */
async function checkAgreement(store: ApiKeyStore, settings: Readonly<AgreementSettings>, withLeases: boolean): Promise<void> {
  const fc = await loadFastCheck();
  const parameters: Parameters<FastCheck['assert']>[1] = { numRuns: settings.numRuns };
  if (settings.seed !== undefined) parameters.seed = settings.seed;
  if (settings.path !== undefined) parameters.path = settings.path;
  try {
    await fc.assert(fc.asyncProperty(scenarios(fc, withLeases), (scenario) => runScenario(store, scenario, withLeases)), parameters);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    // fast-check reports the property's own error as the cause: it says which step diverged.
    const cause = error instanceof Error && error.cause instanceof Error ? `\n\n${error.cause.message}` : '';
    const replay =
      'Replay this sequence with describeStoreContract(name, { agreement: { seed, path } }) or the environment ' +
      'variables KEYGATE_AGREEMENT_SEED and KEYGATE_AGREEMENT_PATH, taking seed and path from the line below.';
    throw new Error(`${replay}\n${message}${cause}`, { cause: error });
  }
}

/** Registers the agreement test; with concurrency claims and releases when the store declares the capability. */
export function agreementContract(suite: ContractSuite): void {
  const { describe, test, agreement } = suite;
  const withLeases = suite.capabilities.concurrency === true;
  const what = withLeases ? 'clocks, limits, concurrency claims and releases' : 'clocks and limits';

  describe('consume agrees with the limit model', () => {
    test(`on ${agreement.numRuns} random sequences of ${what} (fast-check${agreement.seed === undefined ? '' : `, seed ${agreement.seed}`})`, async (store) => {
      await checkAgreement(store, agreement, withLeases);
    });
  });
}
