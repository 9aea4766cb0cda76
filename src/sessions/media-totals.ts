import type { DirectionMeter } from '../pcoip/media-meter.ts';
import type { HistogramCounts } from '../proxy/flow-stats.ts';

/**
 * The instance-wide aggregates of media quality and session routing, for Prometheus: counters
 * and histograms only, no per-session labels (a label per session would grow the series without
 * bound). Plain numbers, so a worker's snapshot travels over IPC and the primary adds them up;
 * counters never go down (live meters contribute their *final* losses only; pending ones count
 * once they are final).
 */
export const MEDIA_DIRECTIONS = ['fromClient', 'fromConnector'] as const;
export type MediaDirection = (typeof MEDIA_DIRECTIONS)[number];

export interface DirectionTotals {
  datagrams: number;
  received: number;
  lost: number;
  reordered: number;
  late: number;
  duplicates: number;
  rekeys: number;
  resyncs: number;
}

/** Histograms as FlowStats keeps them (non-cumulative bucket counts that add slot by slot across workers). */
export type { HistogramCounts };

/** Per-flow loss ratio, observed when a flow closes. */
export const LOSS_RATIO_BUCKETS: readonly number[] = [0, 0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5];
/** Per-flow jitter (seconds) when it closes; the coarse clock resolves ~1 ms. */
export const JITTER_SECONDS_BUCKETS: readonly number[] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25];

export const FLOW_LAYOUTS = ['transport-header', 'no-transport-header', 'unknown', 'detecting'] as const;
export const PROBE_OUTCOMES = ['answered', 'none-answered', 'single-candidate', 'skipped'] as const;
export type ProbeOutcome = (typeof PROBE_OUTCOMES)[number];

export interface MediaTotalsSnapshot {
  directions: Record<MediaDirection, DirectionTotals>;
  lossRatio: Record<MediaDirection, HistogramCounts>;
  jitterSeconds: Record<MediaDirection, HistogramCounts>;
  /** UDP flows closed, by the layout found in their client → Connector direction. */
  flowsByLayout: Record<(typeof FLOW_LAYOUTS)[number], number>;
  /** UDP probe fan-outs by outcome, and datagrams sent to candidates that did not win. */
  probes: Record<ProbeOutcome, number>;
  probeDatagrams: number;
  /** 4172/TCP SNIs seen in more than one live session: routed by address instead. */
  ambiguousSni: number;
}

const zeroDirection = (): DirectionTotals => ({ datagrams: 0, received: 0, lost: 0, reordered: 0, late: 0, duplicates: 0, rekeys: 0, resyncs: 0 });
const zeroHistogram = (bounds: readonly number[]): HistogramCounts => ({ counts: new Array<number>(bounds.length + 1).fill(0), sum: 0, count: 0 });
const perDirection = <T>(make: () => T): Record<MediaDirection, T> => ({ fromClient: make(), fromConnector: make() });

export function emptyMediaTotals(): MediaTotalsSnapshot {
  return {
    directions: perDirection(zeroDirection),
    lossRatio: perDirection(() => zeroHistogram(LOSS_RATIO_BUCKETS)),
    jitterSeconds: perDirection(() => zeroHistogram(JITTER_SECONDS_BUCKETS)),
    flowsByLayout: { 'transport-header': 0, 'no-transport-header': 0, unknown: 0, detecting: 0 },
    probes: { answered: 0, 'none-answered': 0, 'single-candidate': 0, skipped: 0 },
    probeDatagrams: 0,
    ambiguousSni: 0,
  };
}

export function observe(h: HistogramCounts, bounds: readonly number[], value: number): void {
  let i = 0;
  while (i < bounds.length && value > bounds[i]!) i++;
  h.counts[i]!++;
  h.sum += value;
  h.count++;
}

/** Adds a meter's monotonic counts into `into` (final losses only). */
export function addMeter(into: DirectionTotals, m: DirectionMeter): void {
  into.datagrams += m.datagrams;
  into.received += m.received;
  into.lost += m.lostFinal;
  into.reordered += m.reordered;
  into.late += m.late;
  into.duplicates += m.duplicates;
  into.rekeys += m.rekeys;
  into.resyncs += m.resyncs;
}

/** The sum of several snapshots (the workers' and the retired ones), as a new snapshot. */
export function sumMediaTotals(snapshots: readonly MediaTotalsSnapshot[]): MediaTotalsSnapshot {
  const out = emptyMediaTotals();
  for (const s of snapshots) {
    for (const d of MEDIA_DIRECTIONS) {
      const to = out.directions[d] as unknown as Record<string, number>;
      for (const [k, v] of Object.entries(s.directions[d])) to[k] = (to[k] ?? 0) + v;
      addHistogram(out.lossRatio[d], s.lossRatio[d]);
      addHistogram(out.jitterSeconds[d], s.jitterSeconds[d]);
    }
    for (const k of FLOW_LAYOUTS) out.flowsByLayout[k] += s.flowsByLayout[k];
    for (const k of PROBE_OUTCOMES) out.probes[k] += s.probes[k];
    out.probeDatagrams += s.probeDatagrams;
    out.ambiguousSni += s.ambiguousSni;
  }
  return out;
}

function addHistogram(into: HistogramCounts, from: HistogramCounts): void {
  from.counts.forEach((n, i) => (into.counts[i] = (into.counts[i] ?? 0) + n));
  into.sum += from.sum;
  into.count += from.count;
}
