import { FlowStats, type FlowStatsSnapshot } from '../proxy/flow-stats.ts';
import type { Flows } from './protocol.ts';
import { emptyMediaTotals, sumMediaTotals, type MediaTotalsSnapshot } from '../sessions/media-totals.ts';

interface Report {
  stats: FlowStatsSnapshot;
  media: MediaTotalsSnapshot;
  flows: Flows;
  tracked: Flows;
  decisions: Array<[string, number]>;
}

const ZERO: Flows = { broker: 0, pcoipTcp: 0, pcoipUdp: 0 };

function addFlows(a: Flows, b: Flows): Flows {
  return { broker: a.broker + b.broker, pcoipTcp: a.pcoipTcp + b.pcoipTcp, pcoipUdp: a.pcoipUdp + b.pcoipUdp };
}

/**
 * The instance's counters from its workers' reports. Counters stay monotonic across worker
 * restarts: when a worker ends, its last report's totals move into `retired` (its open-flow
 * gauges drop to 0), and every sum is retired + the live workers' latest reports. A worker
 * killed without a last report loses at most the counts since its previous report (≤ 1 s).
 * Pure bookkeeping: the primary writes the sums into its FlowStats and decision counts.
 */
export class WorkerTotals {
  private readonly live = new Map<number, Report>();
  private retired: FlowStatsSnapshot = new FlowStats().snapshot();
  private readonly retiredDecisions = new Map<string, number>();
  private retiredMedia: MediaTotalsSnapshot = emptyMediaTotals();

  report(worker: number, report: Report): void {
    this.live.set(worker, report);
  }

  /** The worker ended: keep its totals, drop its open flows. */
  retire(worker: number): void {
    const last = this.live.get(worker);
    this.live.delete(worker);
    if (!last) return;
    this.retired = FlowStats.sum([this.retired, FlowStats.retired(last.stats)]);
    for (const [k, n] of last.decisions) this.retiredDecisions.set(k, (this.retiredDecisions.get(k) ?? 0) + n);
    this.retiredMedia = sumMediaTotals([this.retiredMedia, last.media]);
  }

  /** Media-quality aggregates: retired workers' plus the live workers' latest (monotonic, as the flow counters). */
  media(): MediaTotalsSnapshot {
    return sumMediaTotals([this.retiredMedia, ...[...this.live.values()].map((r) => r.media)]);
  }

  /** Writes the sums into the primary's counters (in place, for readers holding them). */
  writeInto(stats: FlowStats, decisions: Map<string, number>): { flows: Flows; tracked: Flows } {
    const reports = [...this.live.values()];
    stats.replaceWithSum([this.retired, ...reports.map((r) => r.stats)]);
    decisions.clear();
    for (const [k, n] of this.retiredDecisions) decisions.set(k, n);
    for (const r of reports) for (const [k, n] of r.decisions) decisions.set(k, (decisions.get(k) ?? 0) + n);
    return {
      flows: reports.reduce((acc, r) => addFlows(acc, r.flows), ZERO),
      tracked: reports.reduce((acc, r) => addFlows(acc, r.tracked), ZERO),
    };
  }
}
