import type { AddressInfo } from 'node:net';
import type { Config, ConnectorState } from '../config/schema.ts';
import type { PlacementReason } from '../balance/affinity.ts';
import type { HealthStatus } from '../pool/pool.ts';
import type { FlowStatsSnapshot } from '../proxy/flow-stats.ts';
import type { ListenerAddresses } from '../app.ts';
import type { LoopSnapshot } from '../util/event-loop-monitor.ts';

/**
 * Messages between the primary and its workers (child_process IPC, one ordered channel per
 * worker). See docs/multicore.md for who owns what.
 */
export interface PinMessage {
  key: string;
  connectorId: string;
  reason: PlacementReason;
}

export interface ConnectorHealthState {
  id: string;
  health: HealthStatus;
  healthReason: string;
  state: ConnectorState;
}

export type Flows = { broker: number; pcoipTcp: number; pcoipUdp: number };

/** Primary → worker. */
export type ToWorker =
  | { type: 'init'; index: number; config: Config; bindPorts: Partial<Record<keyof ListenerAddresses, number>> | undefined }
  | { type: 'lookup-result'; id: number; pin: PinMessage | undefined }
  | { type: 'pin'; pin: PinMessage }
  | { type: 'pool'; connectors: ConnectorHealthState[] }
  | { type: 'reload'; config: Config }
  | { type: 'stop'; graceMs: number };

/** Worker → primary. */
export type FromWorker =
  | { type: 'listening'; addresses: Record<string, AddressInfo> }
  | { type: 'failed'; message: string; code: string | undefined }
  | { type: 'lookup'; id: number; key: string }
  | { type: 'pin'; pin: PinMessage }
  /** Net flow opens (+) and closes (−) per client key since the last batch. */
  | { type: 'flows'; deltas: Array<[string, number]> }
  | { type: 'connect-failure'; connectorId: string }
  /** `loop`: this worker's event-loop delay (optional: an older worker may not send it). */
  | { type: 'stats'; stats: FlowStatsSnapshot; flows: Flows; tracked: Flows; loop?: LoopSnapshot };
