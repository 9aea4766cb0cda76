/**
 * The affinity table: one record per client key, naming the Connector that owns the client.
 * Every listener reads and updates the same table, which is what keeps a client's 443,
 * 4172/TCP and 4172/UDP flows together. Pure: time comes in as an argument.
 *
 * A record lives while its client has flows, and for `ttlMs` after the last one ends.
 * Only the Placer writes this table (pins through decide/learn/applyRemote, flow counts through
 * leases); everything else reads it through the Placer.
 */
export type PlacementReason = 'placed' | 'repinned' | 'learned';

export interface AffinityEntry {
  readonly clientKey: string;
  connectorId: string;
  /** Flows currently open for this client, across all listeners. */
  flows: number;
  /** When the entry was (re)pinned. */
  pinnedAt: number;
  /** When the client last opened or closed a flow; the TTL counts from here once flows is 0. */
  lastSeen: number;
  reason: PlacementReason;
}

export class AffinityTable {
  private readonly entries = new Map<string, AffinityEntry>();
  /**
   * Open flows per client key, kept apart from the entries: a flow can open before its client has
   * an entry (a flow placed by its own session, a kernel-forwarded one) or outlive the entry it
   * opened under (its Connector left the config). Counting on the key keeps every +1 paired with
   * its −1, and an entry created later starts with the flows already open.
   */
  private readonly openFlows = new Map<string, number>();
  private ttlMs: number;

  constructor(ttlMs: number) {
    this.ttlMs = ttlMs;
  }

  setTtl(ttlMs: number): void {
    this.ttlMs = ttlMs;
  }

  get size(): number {
    return this.entries.size;
  }

  /** The live entry for a client, or undefined when absent or expired (an expired one is dropped). */
  get(clientKey: string, now: number): AffinityEntry | undefined {
    const entry = this.entries.get(clientKey);
    if (entry && this.isExpired(entry, now)) {
      this.entries.delete(clientKey);
      return undefined;
    }
    return entry;
  }

  /** Pins a client to a Connector, keeping its flow count if it already had an entry. */
  pin(clientKey: string, connectorId: string, now: number, reason: PlacementReason): AffinityEntry {
    const existing = this.entries.get(clientKey);
    if (existing) {
      existing.connectorId = connectorId;
      existing.pinnedAt = now;
      existing.lastSeen = now;
      existing.reason = reason;
      return existing;
    }
    const entry: AffinityEntry = { clientKey, connectorId, flows: this.openFlows.get(clientKey) ?? 0, pinnedAt: now, lastSeen: now, reason };
    this.entries.set(clientKey, entry);
    return entry;
  }

  /** `n` more (or, negative, fewer) open flows for a client, entry or not; never below 0. Refreshes lastSeen. */
  addFlows(clientKey: string, n: number, now: number): void {
    const flows = Math.max(0, (this.openFlows.get(clientKey) ?? 0) + n);
    if (flows === 0) this.openFlows.delete(clientKey);
    else this.openFlows.set(clientKey, flows);
    const entry = this.entries.get(clientKey);
    if (!entry) return;
    entry.flows = flows;
    entry.lastSeen = now;
  }

  flowOpened(clientKey: string, now: number): void {
    this.addFlows(clientKey, 1, now);
  }

  flowClosed(clientKey: string, now: number): void {
    this.addFlows(clientKey, -1, now);
  }

  /** Removes a client's entry whatever its flows (used when its Connector leaves the config). */
  delete(clientKey: string): boolean {
    return this.entries.delete(clientKey);
  }

  /** Removes every entry pinned to a Connector (it left the config); returns their keys. */
  deleteConnector(connectorId: string): string[] {
    const removed: string[] = [];
    for (const [key, entry] of this.entries) {
      if (entry.connectorId === connectorId) {
        this.entries.delete(key);
        removed.push(key);
      }
    }
    return removed;
  }

  /** Drops entries whose TTL ran out; returns how many. */
  sweep(now: number): number {
    let removed = 0;
    for (const [key, entry] of this.entries) {
      if (this.isExpired(entry, now)) {
        this.entries.delete(key);
        removed++;
      }
    }
    return removed;
  }

  *all(): IterableIterator<AffinityEntry> {
    yield* this.entries.values();
  }

  private isExpired(entry: AffinityEntry, now: number): boolean {
    return entry.flows === 0 && now - entry.lastSeen > this.ttlMs;
  }
}
