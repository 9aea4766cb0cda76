import type { Config } from '../config/schema.ts';
import type { Pool } from '../pool/pool.ts';
import type { AffinityView, Placer } from '../balance/placer.ts';
import type { SessionsDescription } from '../balance/sessions.ts';
import type { FlowStats } from '../proxy/flow-stats.ts';
import type { ListenerAddresses } from '../proxy/listen.ts';
import type { HealthMonitor } from '../health/monitor.ts';
import type { ReloadOutcome } from '../control/reload-outcome.ts';
import type { SessionFragment } from '../sessions/summary.ts';
import type { MediaTotalsSnapshot } from '../sessions/media-totals.ts';
import type { Registry } from 'prom-client';
import type { ClusterStatus } from '../cluster-store/view.ts';
import type { KernelDescription } from '../kernel/data-plane.ts';
import type { ReloadCounts } from '../control/reload-requests.ts';
import type { LoopSnapshot } from '../util/event-loop-monitor.ts';
import type { WorkerProcessSample } from '../cluster/protocol.ts';

/**
 * One worker process as the primary last heard of it (multi-core mode; /metrics `worker` label):
 * the figures of its last sample (zeros, and -1 for the descriptors, before its first) and what
 * the primary itself knows of it.
 */
export interface WorkerProcessView extends Omit<WorkerProcessSample, 'eventLoop'> {
  index: number;
  pid: number | undefined;
  /** Listening and reporting. */
  up: boolean;
  restarts: number;
  /** The worker's last event-loop delay report (undefined until its first stats message). */
  eventLoop?: LoopSnapshot | undefined;
}

/** The per-session view of an instance (docs/sessions.md): a single process's registry, or the primary's merge of its workers'. */
export interface SessionViews {
  /** Every session the instance knows, fragments of one session joined. */
  fragments(now: number): Promise<SessionFragment[]>;
  /** Media-quality and probe aggregates (monotonic counters, histograms). */
  mediaTotals(): MediaTotalsSnapshot;
}

/**
 * What the admin server (API, /status, /metrics, the live page) reads of the process it serves:
 * the single-process App or the multi-core primary. Read-only apart from the operator's state
 * changes (pool.setState) and reload, both of which go to their owners.
 */
export interface AdminView {
  readonly pool: Pool;
  readonly placer: Pick<Placer, 'keyFor' | 'pickNew' | 'decisionCounts'>;
  readonly affinity: AffinityView;
  readonly stats: FlowStats;
  readonly health: Pick<HealthMonitor, 'snapshot' | 'onRound' | 'fdExhaustedRounds'>;
  readonly startedAt: number;
  readonly listenerAddresses: ListenerAddresses;
  readonly currentConfig: Config;
  describeSessions(now?: number): SessionsDescription;
  readonly sessionViews: SessionViews;
  requestReload(): ReloadOutcome | undefined;
  /** What came of the reload requests so far (/metrics). */
  readonly reloadRequests: { readonly results: ReloadCounts };
  /** Multi-core: the worker processes; absent in a single process. */
  workerProcesses?(): WorkerProcessView[];
  /** `cluster:` configured: the cluster view (/status) and the store's metrics; absent otherwise. */
  readonly cluster?: { status(): ClusterStatus; registerMetrics(registry: Registry): void } | undefined;
  /** dataPlane kernel: the nftables table, its elements and the flows it forwards (docs/kernel.md); undefined in user space. */
  describeKernel?(): KernelDescription | undefined;
}
