/**
 * The numbers behind `keys.metrics()`, kept as plain counters and fixed-bucket histograms in the
 * process. Nothing is measured until `keys.metrics()` is called: until then the verifier, the
 * hashing pool and the store see no telemetry at all (each checks for it once per call).
 */

/** A cumulative histogram with fixed upper bounds, in seconds. */
export class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length).fill(0);
  }

  observe(seconds: number): void {
    this.sum += seconds;
    this.count++;
    const bounds = this.bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (seconds <= (bounds[i] as number)) {
        this.counts[i] = (this.counts[i] as number) + 1;
        return;
      }
    }
  }
}

/** Buckets for verification and store calls: a warm verification takes microseconds, a cold bcrypt one tens of milliseconds. */
export const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** A family of histograms, one per label value, created on first use. */
export class HistogramFamily {
  readonly members = new Map<string, Histogram>();

  constructor(private readonly bounds: readonly number[]) {}

  observe(label: string, seconds: number): void {
    let histogram = this.members.get(label);
    if (!histogram) this.members.set(label, (histogram = new Histogram(this.bounds)));
    histogram.observe(seconds);
  }
}

/** A family of counters, one per label value. */
export class CounterFamily {
  readonly values = new Map<string, number>();

  inc(label: string, by = 1): void {
    this.values.set(label, (this.values.get(label) ?? 0) + by);
  }
}

/** What keygate measures of itself once metrics are on. */
export class Telemetry {
  /** Decisions of the verifier: `admitted` or the refusal code. */
  readonly decisions = new CounterFamily();
  /** Verification time, by `cold` (store lookup and hash) and `warm` (from the cache). */
  readonly verification = new HistogramFamily(LATENCY_BUCKETS);
  /** Verification cache lookups: `hit` or `miss`. */
  readonly cache = new CounterFamily();
  /** Time a bcrypt job waited for a hashing thread. */
  readonly hashWait = new Histogram(LATENCY_BUCKETS);
  /** Store calls by operation (`consume`, `findByKeyPrefix`, …): time, and failures. */
  readonly storeCalls = new HistogramFamily(LATENCY_BUCKETS);
  readonly storeFailures = new CounterFamily();
}
