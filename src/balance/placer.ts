import { admitsPinnedClients, mayTakeNewClients, type ConnectorView, type Pool } from '../pool/pool.ts';
import type { BalanceAlgorithm } from '../config/schema.ts';
import { AffinityTable, type AffinityEntry, type PlacementReason } from './affinity.ts';
import { clientKey, type PrefixOptions } from './client-key.ts';
import { MaglevSelector, RendezvousSelector, type Selector } from './selector.ts';

export interface PlacerOptions extends PrefixOptions {
  algorithm: BalanceAlgorithm;
  tableSize: number;
  /**
   * A pinned client whose Connector is down (health): `repin` (default) places its new flows
   * elsewhere; `keep` refuses them, for sessions that cannot survive a move anyway and should
   * come back to their Connector when it recovers. A Connector in `maint` always repins.
   */
  onDown?: 'repin' | 'keep';
}

export type RefusalReason = 'no-eligible-connector' | 'pinned-connector-down';

/**
 * A flow's hold on its client's affinity record: while any lease of a client is held, its pin
 * does not expire; the TTL counts from the release of the last one. Each flow releases its lease
 * exactly once (a second release is a no-op), whatever path ends the flow.
 */
export interface Lease {
  readonly clientKey: string;
  readonly connectorId: string;
  release(now: number): void;
}

export type Decision =
  | { ok: true; connector: ConnectorView; clientKey: string; reason: 'pinned' | 'session' | PlacementReason; lease: Lease }
  | { ok: false; clientKey: string; reason: RefusalReason };

/**
 * A change of the Connector a client key is pinned to: `from` undefined is a new pin, `to`
 * undefined a pin that went away (its Connector left the config). `origin` says whether this
 * process decided it or applied what a replica (primary, other instance) decided.
 */
export interface PinChange {
  key: string;
  from: string | undefined;
  to: string | undefined;
  reason: PlacementReason | 'removed';
  origin: 'local' | 'remote';
  at: number;
}

/** What readers (admin, status, metrics) may see of the affinity table. */
export interface AffinityView {
  readonly size: number;
  get(clientKey: string, now: number): Readonly<AffinityEntry> | undefined;
  all(): IterableIterator<Readonly<AffinityEntry>>;
  sweep(now: number): number;
}

/**
 * Decides which Connector a flow goes to, and is the one owner of the affinity table. The rule,
 * for every listener alike:
 * 1. a client with a live affinity entry goes to its Connector while that Connector admits pinned
 *    clients (up and active or draining);
 * 2. otherwise the client is placed by weighted consistent hashing over the Connectors that may
 *    take new clients (up and active), and pinned there.
 * Every write to the table goes through here: pins made by `decide`, pins learned from the broker
 * exchange (`learn`), pins decided elsewhere (`applyRemote`), flow counts through leases. Every
 * pin write is announced to `onPinChange` listeners (the UDP listener moves flows that follow a
 * re-pin; a replica publishes local pins; the kernel data plane updates its map).
 * Pure: the clock is an argument, and nothing here touches a socket.
 */
export class Placer {
  private selector: Selector | undefined;
  private selectorSignature = '';
  private builtForVersion = -1;

  private readonly pool: Pool;
  private readonly table: AffinityTable;
  private options: PlacerOptions;
  private readonly pinListeners: Array<(change: PinChange) => void> = [];
  /** Net lease changes per key since the last takeLeaseDeltas(); only kept once a replica asked for them. */
  private leaseDeltas: Map<string, number> | undefined;
  /** Successful decisions by `reason|connectorId`, read by /metrics (a Map update per flow, no I/O). */
  readonly decisionCounts = new Map<string, number>();

  constructor(pool: Pool, ttlMs: number, options: PlacerOptions) {
    this.pool = pool;
    this.table = new AffinityTable(ttlMs);
    this.options = options;
  }

  /** Read access to the affinity table (admin, status, metrics). */
  get affinity(): AffinityView {
    return this.table;
  }

  setOptions(options: PlacerOptions): void {
    this.options = options;
    this.builtForVersion = -1;
    this.selectorSignature = '';
  }

  setTtl(ttlMs: number): void {
    this.table.setTtl(ttlMs);
  }

  keyFor(address: string): string {
    return clientKey(address, this.options);
  }

  /** Calls `listener` on every pin write (see PinChange). */
  onPinChange(listener: (change: PinChange) => void): void {
    this.pinListeners.push(listener);
  }

  /**
   * Places one flow and hands it a lease on its client's record.
   * @param avoid Connectors that just failed this client (a refused connect): the client is
   *   placed among the others instead, and re-pinned there.
   */
  decide(address: string, now: number, avoid?: ReadonlySet<string>): Decision {
    const key = this.keyFor(address);
    const entry = this.table.get(key, now);
    if (entry) {
      const pinned = this.pool.get(entry.connectorId);
      if (pinned && admitsPinnedClients(pinned) && !avoid?.has(pinned.id)) {
        this.count('pinned', pinned.id);
        return { ok: true, connector: pinned, clientKey: key, reason: 'pinned', lease: this.lease(key, pinned.id, now) };
      }
      if (pinned && this.options.onDown === 'keep' && pinned.health === 'down' && pinned.state !== 'maint') {
        return { ok: false, clientKey: key, reason: 'pinned-connector-down' };
      }
    }
    const chosenId = this.pickNew(key, avoid);
    const chosen = chosenId === undefined ? undefined : this.pool.get(chosenId);
    if (!chosen) return { ok: false, clientKey: key, reason: 'no-eligible-connector' };
    const reason: PlacementReason = entry ? 'repinned' : 'placed';
    this.write(key, chosen.id, reason, 'local', now);
    this.count(reason, chosen.id);
    return { ok: true, connector: chosen, clientKey: key, reason, lease: this.lease(key, chosen.id, now) };
  }

  /**
   * One flow placed by evidence of its own session (the UDP probe fan-out: the Connector that
   * answered its datagrams), not by the client's address: the flow goes to `connectorId` and holds
   * a lease on the client's record, but the client's pin is not touched — other sessions of the
   * same address stay where they are. Refused when that Connector no longer admits pinned clients.
   */
  decideOn(address: string, connectorId: string, now: number): Decision {
    const key = this.keyFor(address);
    const connector = this.pool.get(connectorId);
    if (!connector || !admitsPinnedClients(connector)) return { ok: false, clientKey: key, reason: 'no-eligible-connector' };
    this.count('session', connector.id);
    return { ok: true, connector, clientKey: key, reason: 'session', lease: this.lease(key, connector.id, now) };
  }

  /**
   * A lease for a flow the kernel forwarded on its own (dataPlane: kernel, docs/kernel.md): the
   * kernel followed the client's pin without asking, so there is no decision to make — only the
   * pin to keep alive while the flow lives, exactly as a decided flow's lease does. The caller
   * releases it when conntrack reports the flow's end.
   */
  holdLease(key: string, connectorId: string, now: number): Lease {
    return this.lease(key, connectorId, now);
  }

  /**
   * A pin learned from the broker exchange (an allocation, a 4172 SNI): the client belongs to
   * `connectorId` from now on, whatever address affinity said. Returns the Connector it was
   * pinned to before, if any.
   */
  learn(address: string, connectorId: string, now: number): string | undefined {
    const key = this.keyFor(address);
    const before = this.table.get(key, now)?.connectorId;
    this.write(key, connectorId, 'learned', 'local', now);
    this.count('learned', connectorId);
    return before;
  }

  /**
   * A pin decided in another process. `origin` is 'remote' when it comes from a replica (a
   * worker's primary, another instance: announced, not published again) and 'local' when this
   * process owns the decision for its instance (the primary applying its workers' pins, which
   * its own replica — the cluster store — must then hear about). `at` is when the pin was last
   * known live, so a copy never outlives the original.
   */
  applyPin(key: string, connectorId: string, reason: PlacementReason, at: number, origin: PinChange['origin']): void {
    this.write(key, connectorId, reason, origin, at);
  }

  /** Flow counts from other processes (the primary's view of its workers' leases); passed on like local ones. */
  applyLeases(deltas: Iterable<[string, number]>, now: number): void {
    for (const [key, n] of deltas) {
      this.table.addFlows(key, n, now);
      this.trackDelta(key, n);
    }
  }

  /**
   * The current entry for a client key (read-only). `now` expires it first, as a decision would.
   */
  entry(key: string, now: number): Readonly<AffinityEntry> | undefined {
    return this.table.get(key, now);
  }

  /** Drops the pins of a Connector that left the config; returns how many. */
  forgetConnector(connectorId: string, now: number): number {
    const keys = this.table.deleteConnector(connectorId);
    for (const key of keys) this.emit({ key, from: connectorId, to: undefined, reason: 'removed', origin: 'local', at: now });
    return keys.length;
  }

  sweep(now: number): number {
    return this.table.sweep(now);
  }

  /** Starts keeping lease deltas for a replica (multi-core worker, cluster store). */
  trackLeaseDeltas(): void {
    this.leaseDeltas ??= new Map();
  }

  /** The lease deltas since the last call, zeros dropped (for one batched message). */
  takeLeaseDeltas(): Map<string, number> {
    const out = new Map<string, number>();
    if (!this.leaseDeltas) return out;
    for (const [k, d] of this.leaseDeltas) if (d !== 0) out.set(k, d);
    this.leaseDeltas.clear();
    return out;
  }

  /** The Connector consistent hashing would give this client key now (no pinning). */
  pickNew(key: string, avoid?: ReadonlySet<string>): string | undefined {
    if (avoid && avoid.size > 0) {
      // Rare path (a failed connect): a throwaway rendezvous over the rest avoids rebuilding a table.
      const rest = this.pool.all().filter((c) => mayTakeNewClients(c) && !avoid.has(c.id));
      return new RendezvousSelector(rest).pick(key);
    }
    return this.currentSelector().pick(key);
  }

  private lease(key: string, connectorId: string, now: number): Lease {
    this.table.addFlows(key, 1, now);
    this.trackDelta(key, 1);
    let held = true;
    return {
      clientKey: key,
      connectorId,
      release: (at: number) => {
        if (!held) return;
        held = false;
        this.table.addFlows(key, -1, at);
        this.trackDelta(key, -1);
      },
    };
  }

  private trackDelta(key: string, n: number): void {
    if (this.leaseDeltas) this.leaseDeltas.set(key, (this.leaseDeltas.get(key) ?? 0) + n);
  }

  private write(key: string, connectorId: string, reason: PlacementReason, origin: PinChange['origin'], now: number): void {
    const from = this.table.get(key, now)?.connectorId;
    this.table.pin(key, connectorId, now, reason);
    this.emit({ key, from, to: connectorId, reason, origin, at: now });
  }

  private emit(change: PinChange): void {
    for (const l of this.pinListeners) l(change);
  }

  private count(reason: 'pinned' | 'session' | PlacementReason, connectorId: string): void {
    const key = `${reason}|${connectorId}`;
    this.decisionCounts.set(key, (this.decisionCounts.get(key) ?? 0) + 1);
  }

  private currentSelector(): Selector {
    if (this.selector && this.builtForVersion === this.pool.version) return this.selector;
    const eligible = this.pool.all().filter(mayTakeNewClients);
    const signature = eligible
      .map((c) => `${c.id}:${c.weight}`)
      .sort()
      .join(',');
    if (!this.selector || signature !== this.selectorSignature) {
      this.selector =
        this.options.algorithm === 'maglev' ? new MaglevSelector(eligible, this.options.tableSize) : new RendezvousSelector(eligible);
      this.selectorSignature = signature;
    }
    this.builtForVersion = this.pool.version;
    return this.selector;
  }
}
