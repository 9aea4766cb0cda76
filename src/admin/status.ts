import type { App } from '../app.ts';
import type { ConnectorState } from '../config/schema.ts';
import type { HealthStatus } from '../pool/pool.ts';

/**
 * The pool as `GET /status` shows it. A pure read of the App's state: no I/O, no mutation,
 * so the admin server, the CLI and tests can all call it.
 */

export interface FlowCounts {
  broker: number;
  pcoipTcp: number;
  pcoipUdp: number;
  total: number;
}

export interface ConnectorStatus {
  id: string;
  address: string;
  ports: { broker: number; pcoip: number };
  weight: number;
  state: ConnectorState;
  health: HealthStatus;
  healthReason: string;
  /** Clients whose affinity record names this Connector (live flows or within the TTL). */
  pinnedClients: number;
  activeFlows: FlowCounts;
}

export interface StatusDocument {
  connectors: ConnectorStatus[];
  activeFlows: FlowCounts;
  pinnedClients: number;
}

export function buildStatus(app: App, now: number = Date.now()): StatusDocument {
  const pinned = new Map<string, number>();
  let pinnedTotal = 0;
  for (const entry of app.affinity.all()) {
    if (!app.affinity.isLive(entry, now)) continue;
    pinned.set(entry.connectorId, (pinned.get(entry.connectorId) ?? 0) + 1);
    pinnedTotal++;
  }
  const connectors = app.pool.all().map((c): ConnectorStatus => {
    const counters = app.stats.counters(c.id);
    return {
      id: c.id,
      address: c.address,
      ports: { ...c.ports },
      weight: c.weight,
      state: c.state,
      health: c.health,
      healthReason: c.healthReason,
      pinnedClients: pinned.get(c.id) ?? 0,
      activeFlows: flowCounts(counters.broker.active, counters.pcoipTcp.active, counters.pcoipUdp.active),
    };
  });
  const all = app.activeFlows();
  return { connectors, activeFlows: flowCounts(all.broker, all.pcoipTcp, all.pcoipUdp), pinnedClients: pinnedTotal };
}

function flowCounts(broker: number, pcoipTcp: number, pcoipUdp: number): FlowCounts {
  return { broker, pcoipTcp, pcoipUdp, total: broker + pcoipTcp + pcoipUdp };
}
