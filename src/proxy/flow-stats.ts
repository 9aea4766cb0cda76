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

/**
 * Histogram upper bounds, in seconds. Connect: a Connector on the LAN answers in well under a
 * millisecond; seconds mean trouble (connectTimeout is 5 s). Flow duration: 443 connections last
 * seconds, a PCoIP session minutes to a working day.
 */
export const CONNECT_SECONDS_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
export const FLOW_SECONDS_BUCKETS: readonly number[] = [0.1, 1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400];

/**
 * Observations of one histogram as plain numbers: `counts[i]` for values ≤ bounds[i] (not
 * cumulative; the last slot is +Inf), so the workers' histograms add up slot by slot.
 */
export interface HistogramCounts {
  counts: number[];
  sum: number;
  count: number;
}

function observe(map: Map<string, HistogramCounts>, key: string, bounds: readonly number[], value: number): void {
  let h = map.get(key);
  if (!h) {
    h = { counts: new Array<number>(bounds.length + 1).fill(0), sum: 0, count: 0 };
    map.set(key, h);
  }
  let i = 0;
  while (i < bounds.length && value > bounds[i]!) i++;
  h.counts[i]!++;
  h.sum += value;
  h.count++;
}

function addHistograms(into: Map<string, HistogramCounts>, from: ReadonlyArray<[string, HistogramCounts]>): void {
  for (const [key, h] of from) {
    const mine = into.get(key);
    if (!mine) into.set(key, { counts: [...h.counts], sum: h.sum, count: h.count });
    else {
      h.counts.forEach((n, i) => (mine.counts[i] = (mine.counts[i] ?? 0) + n));
      mine.sum += h.sum;
      mine.count += h.count;
    }
  }
}

const copyHistograms = (map: Map<string, HistogramCounts>): Array<[string, HistogramCounts]> =>
  [...map].map(([key, h]) => [key, { counts: [...h.counts], sum: h.sum, count: h.count }]);

/** FlowStats as plain data, for the workers to send to the primary (multi-core mode). */
export interface FlowStatsSnapshot {
  connectors: Array<[string, Record<ListenerName, ListenerCounters>]>;
  refusals: Array<[string, number]>;
  connectFailures: Array<[string, number]>;
  connectSeconds: Array<[string, HistogramCounts]>;
  flowSeconds: Array<[string, HistogramCounts]>;
  /** Flows closed because their client was re-pinned elsewhere, by `listener|connector`. */
  repinMoves: Array<[string, number]>;
  /** Terminating broker events (see `brokerEvent`). */
  brokerEvents: Array<[string, number]>;
}

/** Adds `from`'s counts into `into` (keyed count maps). */
function addCounts(into: Map<string, number>, from: Iterable<[string, number]>): void {
  for (const [k, n] of from) into.set(k, (into.get(k) ?? 0) + n);
}

export class FlowStats {
  private readonly byConnector = new Map<string, Record<ListenerName, ListenerCounters>>();
  readonly refusals = new Map<string, number>();
  /** Connects to a Connector that failed (refused or timed out), by Connector id. */
  readonly connectFailures = new Map<string, number>();
  /** Time to connect to a Connector, by `listener|connector` (seconds; observed once per connect). */
  readonly connectSeconds = new Map<string, HistogramCounts>();
  /** How long flows lasted, by `listener|connector` (seconds; observed once per closed flow). */
  readonly flowSeconds = new Map<string, HistogramCounts>();

  /** Every Connector id with counters, including Connectors removed by a reload whose flows are still open. */
  connectorIds(): IterableIterator<string> {
    return this.byConnector.keys();
  }
  /** Flows closed because their client was re-pinned to another Connector, by `listener|connector` (the old one). */
  readonly repinMoves = new Map<string, number>();
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

  /** Counts a flow's end; `durationMs` (when given) goes into the flow-duration histogram. */
  closed(listener: ListenerName, connectorId: string, durationMs?: number): void {
    const c = this.counters(connectorId)[listener];
    c.active = Math.max(0, c.active - 1);
    if (durationMs !== undefined) observe(this.flowSeconds, `${listener}|${connectorId}`, FLOW_SECONDS_BUCKETS, durationMs / 1000);
  }

  /** A connect to a Connector succeeded after `ms` (once per flow, never per packet). */
  connected(listener: ListenerName, connectorId: string, ms: number): void {
    observe(this.connectSeconds, `${listener}|${connectorId}`, CONNECT_SECONDS_BUCKETS, ms / 1000);
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

  movedByRepin(listener: ListenerName, connectorId: string): void {
    const key = `${listener}|${connectorId}`;
    this.repinMoves.set(key, (this.repinMoves.get(key) ?? 0) + 1);
  }

  snapshot(): FlowStatsSnapshot {
    return {
      connectors: [...this.byConnector].map(([id, c]) => [id, { broker: { ...c.broker }, pcoipTcp: { ...c.pcoipTcp }, pcoipUdp: { ...c.pcoipUdp } }]),
      refusals: [...this.refusals],
      connectFailures: [...this.connectFailures],
      connectSeconds: copyHistograms(this.connectSeconds),
      flowSeconds: copyHistograms(this.flowSeconds),
      repinMoves: [...this.repinMoves],
      brokerEvents: [...this.brokerEvents],
    };
  }

  /**
   * The counts a process that has ended leaves behind: its totals stay (counters never go down
   * when a worker is replaced), its open flows are gone.
   */
  static retired(snapshot: FlowStatsSnapshot): FlowStatsSnapshot {
    return {
      ...snapshot,
      connectors: snapshot.connectors.map(([id, c]) => [
        id,
        Object.fromEntries(LISTENER_NAMES.map((name) => [name, { ...c[name], active: 0 }])) as Record<ListenerName, ListenerCounters>,
      ]),
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
    this.connectSeconds.clear();
    this.flowSeconds.clear();
    this.repinMoves.clear();
    this.brokerEvents.clear();
    for (const snap of snapshots) {
      addHistograms(this.connectSeconds, snap.connectSeconds);
      addHistograms(this.flowSeconds, snap.flowSeconds);
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
      addCounts(this.refusals, snap.refusals);
      addCounts(this.connectFailures, snap.connectFailures);
      addCounts(this.repinMoves, snap.repinMoves);
      addCounts(this.brokerEvents, snap.brokerEvents ?? []);
    }
  }

  /** Sums several snapshots into one (the retired workers' totals, kept by the primary). */
  static sum(snapshots: readonly FlowStatsSnapshot[]): FlowStatsSnapshot {
    const total = new FlowStats();
    total.replaceWithSum(snapshots);
    return total.snapshot();
  }

  activeFlows(connectorId: string): number {
    const c = this.byConnector.get(connectorId);
    return c ? c.broker.active + c.pcoipTcp.active + c.pcoipUdp.active : 0;
  }
}
