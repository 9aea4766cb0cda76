import { Counter, Gauge, Histogram, type MetricObjectWithValues, type MetricType, type MetricValueWithName, type Registry } from 'prom-client';
import {
  FLOW_LAYOUTS,
  JITTER_SECONDS_BUCKETS,
  LOSS_RATIO_BUCKETS,
  MEDIA_DIRECTIONS,
  PROBE_OUTCOMES,
  type DirectionTotals,
  type HistogramCounts,
  type MediaDirection,
  type MediaTotalsSnapshot,
} from '../sessions/media-totals.ts';
import { SESSION_STATES, sessionState } from '../sessions/summary.ts';
import type { SessionViews } from './view.ts';

/**
 * Session and media-quality metrics (docs/sessions.md), aggregates only: no label per session or
 * per client, so the number of series stays fixed whatever the number of users. Read from the
 * instance's MediaTotals when scraped (the data path never touches a metric object).
 * `direction`: in = client → Connector (measured between the client and the proxy), out =
 * Connector → client (measured between the Connector and the proxy), as in pcoip_lb_bytes_total.
 */
type Labels = Record<string, string>;

const DIRECTION_LABEL: Record<MediaDirection, string> = { fromClient: 'in', fromConnector: 'out' };

const COUNTERS: ReadonlyArray<[keyof DirectionTotals, string, string]> = [
  ['datagrams', 'pcoip_lb_udp_media_datagrams_total', 'UDP datagrams seen by the media-quality meters, by direction'],
  ['received', 'pcoip_lb_udp_media_received_total', 'Datagrams counted in the ESP sequence accounting (layout known, not duplicates), by direction'],
  ['lost', 'pcoip_lb_udp_media_lost_total', 'ESP sequence numbers never seen before reaching the proxy (final: out of the reordering window or flow closed), by direction'],
  ['reordered', 'pcoip_lb_udp_media_reordered_total', 'Datagrams that arrived after a higher sequence number, within the window, by direction'],
  ['late', 'pcoip_lb_udp_media_late_total', 'Datagrams that arrived more than the window behind (already counted lost), by direction'],
  ['duplicates', 'pcoip_lb_udp_media_duplicates_total', 'Datagrams with a sequence number seen before, by direction'],
  ['rekeys', 'pcoip_lb_udp_media_rekeys_total', 'ESP SPI changes within a flow (rekeys, or a new session on the same source port), by direction'],
  ['resyncs', 'pcoip_lb_udp_media_resyncs_total', 'Sequence jumps too large to be loss (tracking restarted), by direction'],
];

export function registerMediaMetrics(registry: Registry, views: SessionViews): void {
  const registers = [registry];
  // One snapshot per scrape: every collect below reads the same numbers.
  let cached: { at: number; totals: MediaTotalsSnapshot } | undefined;
  const totals = () => {
    const now = Date.now();
    if (!cached || now - cached.at > 500) cached = { at: now, totals: views.mediaTotals() };
    return cached.totals;
  };
  for (const [key, name, help] of COUNTERS) {
    new Counter({
      name,
      help,
      labelNames: ['direction'],
      registers,
      collect() {
        this.reset();
        for (const d of MEDIA_DIRECTIONS) this.inc({ direction: DIRECTION_LABEL[d] }, totals().directions[d][key]);
      },
    });
  }
  new CountedHistogram(registry, 'pcoip_lb_udp_flow_loss_ratio', 'Loss ratio of each UDP flow when it closed (lost / (received + lost)), by direction', LOSS_RATIO_BUCKETS, function* () {
    for (const d of MEDIA_DIRECTIONS) yield [{ direction: DIRECTION_LABEL[d] }, totals().lossRatio[d]];
  });
  new CountedHistogram(registry, 'pcoip_lb_udp_flow_jitter_seconds', 'Inter-arrival jitter (RFC 3550 estimator, ~1 ms resolution) of each UDP flow when it closed, by direction', JITTER_SECONDS_BUCKETS, function* () {
    for (const d of MEDIA_DIRECTIONS) yield [{ direction: DIRECTION_LABEL[d] }, totals().jitterSeconds[d]];
  });
  new Counter({
    name: 'pcoip_lb_udp_flows_closed_by_layout_total',
    help: 'UDP flows closed, by the PCoIP layout found in their client → Connector datagrams (transport-header, no-transport-header, unknown, detecting: too few datagrams)',
    labelNames: ['layout'],
    registers,
    collect() {
      this.reset();
      for (const layout of FLOW_LAYOUTS) this.inc({ layout }, totals().flowsByLayout[layout]);
    },
  });
  new Counter({
    name: 'pcoip_lb_udp_probes_total',
    help: 'UDP probe fan-outs (listeners.pcoipUdp.probe), by outcome: answered, none-answered (placed by address), single-candidate (no probe needed), skipped (no candidate)',
    labelNames: ['outcome'],
    registers,
    collect() {
      this.reset();
      for (const outcome of PROBE_OUTCOMES) this.inc({ outcome }, totals().probes[outcome]);
    },
  });
  new Counter({
    name: 'pcoip_lb_udp_probe_datagrams_total',
    help: 'Datagrams the probe fan-out sent to candidate Connectors that did not win',
    registers,
    collect() {
      this.reset();
      this.inc(totals().probeDatagrams);
    },
  });
  new Counter({
    name: 'pcoip_lb_sni_ambiguous_total',
    help: '4172/TCP connections whose SNI was seen in more than one live session: routed by address affinity instead',
    registers,
    collect() {
      this.reset();
      this.inc(totals().ambiguousSni);
    },
  });
  new Gauge({
    name: 'pcoip_lb_sessions',
    help: 'Sessions in the per-session view, by state (logging-in, allocated, connected, streaming, ended: still listed)',
    labelNames: ['state'],
    registers,
    async collect() {
      const counts = new Map<string, number>(SESSION_STATES.map((s) => [s, 0]));
      for (const f of await views.fragments(Date.now())) counts.set(sessionState(f), (counts.get(sessionState(f)) ?? 0) + 1);
      this.reset();
      for (const [state, n] of counts) this.set({ state }, n);
    },
  });
}

/**
 * A histogram whose buckets are counted elsewhere (plain numbers summed over the workers) and only
 * exported here: prom-client's Histogram can be observed into, not set.
 */
class CountedHistogram extends Histogram<string> {
  private readonly read: () => Iterable<[Labels, HistogramCounts]>;
  private readonly bounds: readonly number[];
  private readonly metricName: string;
  private readonly metricHelp: string;

  constructor(registry: Registry, name: string, help: string, bounds: readonly number[], read: () => Iterable<[Labels, HistogramCounts]>) {
    super({ name, help, labelNames: ['direction'], buckets: [...bounds], registers: [registry] });
    this.read = read;
    this.bounds = bounds;
    this.metricName = name;
    this.metricHelp = help;
  }

  override async get(): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    const name = this.metricName;
    const values: Array<MetricValueWithName<string>> = [];
    for (const [labels, h] of this.read()) {
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += h.counts[i] ?? 0;
        values.push({ metricName: `${name}_bucket`, labels: { ...labels, le }, value: cumulative });
      });
      values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: h.count });
      values.push({ metricName: `${name}_sum`, labels, value: h.sum });
      values.push({ metricName: `${name}_count`, labels, value: h.count });
    }
    // prom-client's typings call the type an enum; at run time it is the string the text format prints.
    return { name, help: this.metricHelp, type: 'histogram' as unknown as MetricType, values, aggregator: 'sum', collect: () => undefined };
  }

  /** The registry prefers this one for the text format (prom-client's Histogram defines it). */
  getForPromString(): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    return this.get();
  }
}
