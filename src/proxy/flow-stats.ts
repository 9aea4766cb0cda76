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

/** FlowStats as plain data, for the workers to send to the primary (multi-core mode). */
export interface FlowStatsSnapshot {
  connectors: Array<[string, Record<ListenerName, ListenerCounters>]>;
  refusals: Array<[string, number]>;
  connectFailures: Array<[string, number]>;
  /** Terminating broker events (see `brokerEvent`); absent from older workers. */
  brokerEvents?: Array<[string, number]>;
}

export class FlowStats {
  private readonly byConnector = new Map<string, Record<ListenerName, ListenerCounters>>();
  readonly refusals = new Map<string, number>();
  /** Connects to a Connector that failed (refused or timed out), by Connector id. */
  readonly connectFailures = new Map<string, number>();
  /**
   * Things the terminating broker noticed and handled without refusing a flow, by name:
   * lb-cookie-forged, lb-cookie-stale, lb-cookie-issued, id-too-long, log-id-limit,
   * body-timeout, response-timeout, upstream-limit, unsolicited-response.
   */
  readonly brokerEvents = new Map<string, number>();

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

  brokerEvent(name: string): void {
    this.brokerEvents.set(name, (this.brokerEvents.get(name) ?? 0) + 1);
  }

  connectFailed(connectorId: string): void {
    this.connectFailures.set(connectorId, (this.connectFailures.get(connectorId) ?? 0) + 1);
  }

  snapshot(): FlowStatsSnapshot {
    return {
      connectors: [...this.byConnector].map(([id, c]) => [id, { broker: { ...c.broker }, pcoipTcp: { ...c.pcoipTcp }, pcoipUdp: { ...c.pcoipUdp } }]),
      refusals: [...this.refusals],
      connectFailures: [...this.connectFailures],
      brokerEvents: [...this.brokerEvents],
    };
  }

  /**
   * Becomes the sum of the workers' snapshots (the primary's view in multi-core mode). Counter
   * objects are updated in place, so readers holding them (metrics collectors) see the new sums.
   */
  replaceWithSum(snapshots: readonly FlowStatsSnapshot[]): void {
    for (const entry of this.byConnector.values()) for (const name of LISTENER_NAMES) Object.assign(entry[name], emptyCounters());
    this.refusals.clear();
    this.connectFailures.clear();
    this.brokerEvents.clear();
    for (const snap of snapshots) {
      for (const [id, counters] of snap.connectors) {
        const mine = this.counters(id);
        for (const name of LISTENER_NAMES) {
          const from = counters[name];
          const to = mine[name];
          to.active += from.active;
          to.total += from.total;
          to.bytesIn += from.bytesIn;
          to.bytesOut += from.bytesOut;
          to.packetsIn += from.packetsIn;
          to.packetsOut += from.packetsOut;
        }
      }
      for (const [k, n] of snap.refusals) this.refusals.set(k, (this.refusals.get(k) ?? 0) + n);
      for (const [k, n] of snap.connectFailures) this.connectFailures.set(k, (this.connectFailures.get(k) ?? 0) + n);
      for (const [k, n] of snap.brokerEvents ?? []) this.brokerEvents.set(k, (this.brokerEvents.get(k) ?? 0) + n);
    }
  }

  activeFlows(connectorId: string): number {
    const c = this.byConnector.get(connectorId);
    return c ? c.broker.active + c.pcoipTcp.active + c.pcoipUdp.active : 0;
  }
}
