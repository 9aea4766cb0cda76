import { Counter, Gauge, Histogram, type MetricObjectWithValues, type MetricType, type MetricValueWithName, type Registry } from 'prom-client';
import type { HistogramCounts } from '../proxy/flow-stats.ts';

/**
 * Metrics whose values live elsewhere (plain numbers the data path adds to, summed over the
 * workers) and are only read when scraped: shared by metrics.ts and media-metrics.ts.
 */
export type Labels = Record<string, string>;
export type Samples = () => Iterable<[Labels, number]>;

/**
 * A metric whose samples are computed when scraped. Counters are rebuilt from FlowStats' running
 * totals (reset, then inc by the total), which keeps them monotonic as long as the totals are.
 */
export function collected(registry: Registry, type: 'counter' | 'gauge', name: string, help: string, labelNames: string[], samples: Samples): void {
  const registers = [registry];
  if (type === 'gauge') {
    new Gauge({ name, help, labelNames, registers, collect() { this.reset(); for (const [labels, v] of samples()) this.set(labels, v); } });
  } else {
    new Counter({ name, help, labelNames, registers, collect() { this.reset(); for (const [labels, v] of samples()) this.inc(labels, v); } });
  }
}

/**
 * A histogram whose buckets are kept elsewhere (FlowStats' plain counts, summed over the
 * workers) and only exported here: prom-client's Histogram cannot be set, only observed into.
 */
export class CountedHistogram extends Histogram<string> {
  private readonly read: () => Iterable<[Labels, HistogramCounts]>;
  private readonly bounds: readonly number[];
  private readonly metricName: string;
  private readonly metricHelp: string;

  constructor(registry: Registry, name: string, help: string, labelNames: string[], bounds: readonly number[], read: () => Iterable<[Labels, HistogramCounts]>) {
    super({ name, help, labelNames, buckets: [...bounds], registers: [registry] });
    this.read = read;
    this.bounds = bounds;
    this.metricName = name;
    this.metricHelp = help;
  }

  override async get(): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    const values: Array<MetricValueWithName<string>> = [];
    for (const [labels, h] of this.read()) {
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += h.counts[i] ?? 0;
        values.push({ metricName: `${this.metricName}_bucket`, labels: { ...labels, le }, value: cumulative });
      });
      values.push({ metricName: `${this.metricName}_bucket`, labels: { ...labels, le: '+Inf' }, value: h.count });
      values.push({ metricName: `${this.metricName}_sum`, labels, value: h.sum });
      values.push({ metricName: `${this.metricName}_count`, labels, value: h.count });
    }
    // prom-client's typings call the type an enum; at run time it is the string the text format prints.
    const type = 'histogram' as unknown as MetricType;
    return { name: this.metricName, help: this.metricHelp, type, values, aggregator: 'sum', collect: () => undefined };
  }

  /** The registry prefers this one for the text format. */
  getForPromString(): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    return this.get();
  }
}
