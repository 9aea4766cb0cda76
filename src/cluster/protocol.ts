import type { AddressInfo } from 'node:net';
import type { Config, ConnectorState } from '../config/schema.ts';
import type { HealthStatus } from '../pool/pool.ts';
import type { FlowStatsSnapshot } from '../proxy/flow-stats.ts';
import type { ListenerAddresses } from '../proxy/listen.ts';
import type { LookupQuery, StateChange } from '../state/changes.ts';
import type { SessionFragment } from '../sessions/summary.ts';
import type { MediaTotalsSnapshot } from '../sessions/media-totals.ts';
import type { LoopSnapshot } from '../util/event-loop-monitor.ts';

/**
 * Messages between the primary and its workers (child_process IPC, one ordered channel per
 * worker, structured-clone serialization). See docs/multicore.md and docs/state.md for who
 * owns what: the primary owns the instance's state; a worker mirrors it and tells it what it
 * decided (pins, learned sessions, leases).
 */
export interface ConnectorHealthState {
  id: string;
  health: HealthStatus;
  healthReason: string;
  state: ConnectorState;
}

export type Flows = { broker: number; pcoipTcp: number; pcoipUdp: number };

/** A worker's own process figures, sent with its counters (the primary labels them `worker`). */
export interface WorkerProcessSample {
  cpuUserSeconds: number;
  cpuSystemSeconds: number;
  residentBytes: number;
  heapUsedBytes: number;
  eventLoopUtilization: number;
  /** Open file descriptors (sampled every 10 s; -1: not known yet) and the soft limit (-1: unknown). */
  openFds: number;
  maxFds: number;
  /** Event-loop delay (src/util/event-loop-monitor.ts; /metrics pcoip_lb_event_loop_delay_*). */
  eventLoop?: LoopSnapshot;
}

/** Primary → worker. */
export type ToWorker =
  /**
   * The full snapshot a worker starts from, whenever it is forked: the config (logging.level
   * already the effective one), the ports to share, the pool as the primary sees it now (health
   * and operator state), and every live pin and learned session.
   */
  | {
      type: 'init';
      index: number;
      config: Config;
      bindPorts: Partial<Record<keyof ListenerAddresses, number>> | undefined;
      pool: ConnectorHealthState[];
      state: StateChange[];
    }
  | { type: 'lookup-result'; id: number; change: StateChange | undefined }
  /** A change decided by another worker, or reported by the cluster store. */
  | { type: 'remote'; change: StateChange }
  | { type: 'pool'; connectors: ConnectorHealthState[] }
  | { type: 'reload'; config: Config }
  /** GET /sessions on the primary: this worker's session fragments, please (answered with 'sessions'). */
  | { type: 'sessions'; id: number }
  | { type: 'stop'; graceMs: number };

/** Worker → primary. */
export type FromWorker =
  | { type: 'listening'; addresses: Record<string, AddressInfo> }
  | { type: 'failed'; message: string; code: string | undefined }
  | { type: 'lookup'; id: number; query: LookupQuery }
  | { type: 'publish'; change: StateChange }
  /** Net flow opens (+) and closes (−) per client key since the last batch. */
  | { type: 'leases'; deltas: Array<[string, number]> }
  | { type: 'connect-failure'; connectorId: string }
  | { type: 'sessions'; id: number; fragments: SessionFragment[] }
  | {
      type: 'stats';
      stats: FlowStatsSnapshot;
      flows: Flows;
      tracked: Flows;
      /** Placement decisions by `reason|connector` since the worker started. */
      decisions: Array<[string, number]>;
      process: WorkerProcessSample;
      /** Media-quality and probe aggregates since the worker started (monotonic). */
      media: MediaTotalsSnapshot;
    };
