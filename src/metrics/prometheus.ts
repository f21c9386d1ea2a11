/**
 * keygate's metrics on a prom-client registry. keygate does not load prom-client: it registers
 * metric objects of its own through the registry's public `registerMetric()`, each read at scrape
 * time from the process's {@link Telemetry}. So the hot path adds to plain counters, and an app
 * without metrics loads nothing.
 */
import type { Histogram, HistogramFamily, Telemetry } from './telemetry.js';
import type { UsageStats } from '../usage/recorder.js';

/** What keygate needs of a prom-client `Registry` (any version from 11 on). */
export interface MetricsRegistry {
  registerMetric(metric: never): void;
}

/** One sample of a metric, as prom-client's registry prints it. */
interface Sample {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

/** A metric as prom-client's registry reads it: a name, help, type, and samples at scrape time. */
interface CollectedMetric {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge' | 'histogram';
  readonly aggregator: 'sum' | 'max';
  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Sample[] }>;
  reset(): void;
}

/** Live numbers read at scrape time from parts that keep their own. */
export interface MetricsSources {
  /** bcrypt jobs waiting for a hashing thread now. */
  hashQueueDepth: () => number;
  /** The usage recorder's counters, when usage analytics are on. */
  usage: () => UsageStats | undefined;
  /** Webhook deliveries, when webhooks are on. */
  webhooks: () => { delivered: number; dropped: number; pending: number } | undefined;
  /** Audit entries that could not be written. */
  auditWriteFailures: () => number;
}

function metric(name: string, help: string, type: CollectedMetric['type'], samples: () => Sample[]): CollectedMetric {
  const aggregator = type === 'gauge' ? 'max' : 'sum';
  const collected: CollectedMetric & { name: string } = {
    name,
    help,
    type,
    aggregator,
    // The name as the registry left it: an OpenMetrics registry strips a counter's `_total` here
    // and adds it back when printing.
    get: async () => ({ name: collected.name, help, type, aggregator, values: samples() }),
    // The numbers are keygate's own and cumulative; a registry reset does not rewind them.
    reset: () => undefined,
  };
  return collected;
}

/** The samples of one histogram, cumulative buckets as Prometheus wants them. */
function histogramSamples(name: string, histogram: Histogram, labels: Record<string, string>): Sample[] {
  const samples: Sample[] = [];
  let cumulative = 0;
  histogram.bounds.forEach((bound, i) => {
    cumulative += histogram.counts[i] as number;
    samples.push({ metricName: `${name}_bucket`, labels: { ...labels, le: bound }, value: cumulative });
  });
  samples.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: histogram.count });
  samples.push({ metricName: `${name}_sum`, labels, value: histogram.sum });
  samples.push({ metricName: `${name}_count`, labels, value: histogram.count });
  return samples;
}

function familySamples(name: string, family: HistogramFamily, label: string): Sample[] {
  return [...family.members.entries()].flatMap(([value, histogram]) => histogramSamples(name, histogram, { [label]: value }));
}

function counterSamples(values: ReadonlyMap<string, number>, label: string): Sample[] {
  return [...values.entries()].map(([value, count]) => ({ labels: { [label]: value }, value: count }));
}

/** Registers every keygate metric, named `<prefix><name>`, on `registry`. */
export function registerMetrics(registry: MetricsRegistry, telemetry: Telemetry, sources: MetricsSources, prefix: string): void {
  const name = (suffix: string): string => `${prefix}${suffix}`;
  const metrics: CollectedMetric[] = [
    metric(name('requests_total'), 'Verification decisions, by outcome: admitted, or the refusal code.', 'counter', () => counterSamples(telemetry.decisions.values, 'outcome')),
    metric(name('verification_duration_seconds'), 'Time to verify a key and count its use, cold (store lookup and hash) or warm (cached).', 'histogram', () =>
      familySamples(name('verification_duration_seconds'), telemetry.verification, 'path'),
    ),
    metric(name('cache_lookups_total'), 'Verification cache lookups, by result: hit or miss.', 'counter', () => counterSamples(telemetry.cache.values, 'result')),
    metric(name('cache_hit_ratio'), 'Share of verification cache lookups that hit, since metrics started.', 'gauge', () => {
      const hits = telemetry.cache.values.get('hit') ?? 0;
      const total = hits + (telemetry.cache.values.get('miss') ?? 0);
      return [{ labels: {}, value: total === 0 ? 0 : hits / total }];
    }),
    metric(name('hash_queue_depth'), 'bcrypt jobs waiting for a hashing thread.', 'gauge', () => [{ labels: {}, value: sources.hashQueueDepth() }]),
    metric(name('hash_wait_seconds'), 'Time a bcrypt job waited for a hashing thread.', 'histogram', () => histogramSamples(name('hash_wait_seconds'), telemetry.hashWait, {})),
    metric(name('store_call_duration_seconds'), 'Key store calls, by operation.', 'histogram', () => familySamples(name('store_call_duration_seconds'), telemetry.storeCalls, 'operation')),
    metric(name('store_call_failures_total'), 'Key store calls that failed or timed out, by operation.', 'counter', () => counterSamples(telemetry.storeFailures.values, 'operation')),
    metric(name('usage_dropped_total'), 'Requests the usage analytics could not record (buffer full, or the store failing at close).', 'counter', () => [
      { labels: {}, value: sources.usage()?.dropped ?? 0 },
    ]),
    metric(name('usage_buffered_requests'), 'Requests recorded in this process and not yet written to the store.', 'gauge', () => [{ labels: {}, value: sources.usage()?.bufferedRequests ?? 0 }]),
    metric(name('webhooks_total'), 'Alert webhooks, by result: delivered or dropped.', 'counter', () => {
      const webhooks = sources.webhooks();
      return webhooks ? [{ labels: { result: 'delivered' }, value: webhooks.delivered }, { labels: { result: 'dropped' }, value: webhooks.dropped }] : [];
    }),
    metric(name('audit_write_failures_total'), 'Audit entries that could not be written (the change itself was made).', 'counter', () => [{ labels: {}, value: sources.auditWriteFailures() }]),
  ];
  for (const entry of metrics) registry.registerMetric(entry as never);
}
