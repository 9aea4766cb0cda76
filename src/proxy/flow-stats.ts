/**
 * Counters per Connector and listener, fed by the listeners and read by /status and /metrics.
 * Plain numbers on an object the flow holds a reference to: counting a packet or a chunk is two
 * additions, and the totals are live (a UDP flow lasting hours shows its bytes as they pass).
 */
export const LISTENER_NAMES = ['broker', 'pcoipTcp', 'pcoipUdp'] as const;
export type ListenerName = (typeof LISTENER_NAMES)[number];

export interface ListenerCounters {
  active: number;
  total: number;
  /** Bytes from clients to the Connector. */
  bytesIn: number;
  /** Bytes from the Connector to clients. */
  bytesOut: number;
  packetsIn: number;
  packetsOut: number;
}

function emptyCounters(): ListenerCounters {
  return { active: 0, total: 0, bytesIn: 0, bytesOut: 0, packetsIn: 0, packetsOut: 0 };
}

export class FlowStats {
  private readonly byConnector = new Map<string, Record<ListenerName, ListenerCounters>>();
  readonly refusals = new Map<string, number>();
  /** Connects to a Connector that failed (refused or timed out), by Connector id. */
  readonly connectFailures = new Map<string, number>();

  counters(connectorId: string): Record<ListenerName, ListenerCounters> {
    let entry = this.byConnector.get(connectorId);
    if (!entry) {
      entry = { broker: emptyCounters(), pcoipTcp: emptyCounters(), pcoipUdp: emptyCounters() };
      this.byConnector.set(connectorId, entry);
    }
    return entry;
  }

  /** Counts a new flow; the returned counters are the ones the flow adds its bytes to. */
  opened(listener: ListenerName, connectorId: string): ListenerCounters {
    const c = this.counters(connectorId)[listener];
    c.active++;
    c.total++;
    return c;
  }

  closed(listener: ListenerName, connectorId: string): void {
    const c = this.counters(connectorId)[listener];
    c.active = Math.max(0, c.active - 1);
  }

  refused(listener: ListenerName, reason: string): void {
    const key = `${listener}:${reason}`;
    this.refusals.set(key, (this.refusals.get(key) ?? 0) + 1);
  }

  connectFailed(connectorId: string): void {
    this.connectFailures.set(connectorId, (this.connectFailures.get(connectorId) ?? 0) + 1);
  }

  activeFlows(connectorId: string): number {
    const c = this.byConnector.get(connectorId);
    return c ? c.broker.active + c.pcoipTcp.active + c.pcoipUdp.active : 0;
  }
}
