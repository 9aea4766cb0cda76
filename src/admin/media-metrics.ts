import { Gauge, type Registry } from 'prom-client';
import {
  FLOW_LAYOUTS,
  JITTER_SECONDS_BUCKETS,
  LOSS_RATIO_BUCKETS,
  MEDIA_DIRECTIONS,
  PROBE_OUTCOMES,
  type DirectionTotals,
  type MediaDirection,
  type MediaTotalsSnapshot,
} from '../sessions/media-totals.ts';
import { SESSION_STATES, sessionState } from '../sessions/summary.ts';
import type { SessionViews } from './view.ts';
import { CountedHistogram, collected } from './collected-metrics.ts';

/**
 * Session and media-quality metrics (docs/sessions.md), aggregates only: no label per session or
 * per client, so the number of series stays fixed whatever the number of users. Read from the
 * instance's MediaTotals when scraped (the data path never touches a metric object).
 * `direction`: in = client → Connector (measured between the client and the proxy), out =
 * Connector → client (measured between the Connector and the proxy), as in pcoip_lb_bytes_total.
 */
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
  // One snapshot per scrape: every collect below reads the same numbers.
  let cached: { at: number; totals: MediaTotalsSnapshot } | undefined;
  const totals = () => {
    const now = Date.now();
    if (!cached || now - cached.at > 500) cached = { at: now, totals: views.mediaTotals() };
    return cached.totals;
  };
  for (const [key, name, help] of COUNTERS) {
    collected(registry, 'counter', name, help, ['direction'], function* () {
      for (const d of MEDIA_DIRECTIONS) yield [{ direction: DIRECTION_LABEL[d] }, totals().directions[d][key]];
    });
  }
  new CountedHistogram(registry, 'pcoip_lb_udp_flow_loss_ratio', 'Loss ratio of each UDP flow when it closed (lost / (received + lost)), by direction', ['direction'], LOSS_RATIO_BUCKETS, function* () {
    for (const d of MEDIA_DIRECTIONS) yield [{ direction: DIRECTION_LABEL[d] }, totals().lossRatio[d]];
  });
  new CountedHistogram(registry, 'pcoip_lb_udp_flow_jitter_seconds', 'Inter-arrival jitter (RFC 3550 estimator over sampled arrival times) of each UDP flow when it closed, by direction', ['direction'], JITTER_SECONDS_BUCKETS, function* () {
    for (const d of MEDIA_DIRECTIONS) yield [{ direction: DIRECTION_LABEL[d] }, totals().jitterSeconds[d]];
  });
  collected(
    registry,
    'counter',
    'pcoip_lb_udp_flows_closed_by_layout_total',
    'UDP flows closed, by the PCoIP layout found in their client → Connector datagrams (transport-header, no-transport-header, unknown, detecting: too few datagrams)',
    ['layout'],
    function* () {
      for (const layout of FLOW_LAYOUTS) yield [{ layout }, totals().flowsByLayout[layout]];
    },
  );
  collected(
    registry,
    'counter',
    'pcoip_lb_udp_probes_total',
    'UDP probe fan-outs (listeners.pcoipUdp.probe), by outcome: answered, none-answered (placed by address), single-candidate (no probe needed), skipped (no candidate)',
    ['outcome'],
    function* () {
      for (const outcome of PROBE_OUTCOMES) yield [{ outcome }, totals().probes[outcome]];
    },
  );
  collected(registry, 'counter', 'pcoip_lb_udp_probe_datagrams_total', 'Datagrams the probe fan-out sent to candidate Connectors that did not win', [], function* () {
    yield [{}, totals().probeDatagrams];
  });
  collected(registry, 'counter', 'pcoip_lb_sni_ambiguous_total', '4172/TCP connections whose SNI was seen in more than one live session: routed by address affinity instead', [], function* () {
    yield [{}, totals().ambiguousSni];
  });
  // Asynchronous (the multi-core primary asks its workers), so not one of the synchronous collected() metrics.
  new Gauge({
    name: 'pcoip_lb_sessions',
    help: 'Sessions in the per-session view, by state (logging-in, allocated, connected, streaming, ended: still listed)',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      const counts = new Map<string, number>(SESSION_STATES.map((s) => [s, 0]));
      for (const f of await views.fragments(Date.now())) counts.set(sessionState(f), (counts.get(sessionState(f)) ?? 0) + 1);
      this.reset();
      for (const [state, n] of counts) this.set({ state }, n);
    },
  });
}
