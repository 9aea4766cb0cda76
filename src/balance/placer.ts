import { admitsPinnedClients, mayTakeNewClients, type ConnectorView, type Pool } from '../pool/pool.ts';
import type { BalanceAlgorithm } from '../config/schema.ts';
import { AffinityTable, type PlacementReason } from './affinity.ts';
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

export type Decision =
  | { ok: true; connector: ConnectorView; clientKey: string; reason: 'pinned' | PlacementReason }
  | { ok: false; clientKey: string; reason: RefusalReason };

/**
 * Decides which Connector a flow goes to. The rule, for every listener alike:
 * 1. a client with a live affinity entry goes to its Connector while that Connector admits pinned
 *    clients (up and active or draining);
 * 2. otherwise the client is placed by weighted consistent hashing over the Connectors that may
 *    take new clients (up and active), and pinned there.
 * Pure: the clock is an argument, and nothing here touches a socket.
 */
export class Placer {
  private selector: Selector | undefined;
  private selectorSignature = '';
  private builtForVersion = -1;

  private readonly pool: Pool;
  readonly affinity: AffinityTable;
  private options: PlacerOptions;
  /** Successful decisions by `reason|connectorId`, read by /metrics (a Map update per flow, no I/O). */
  readonly decisionCounts = new Map<string, number>();

  constructor(pool: Pool, affinity: AffinityTable, options: PlacerOptions) {
    this.pool = pool;
    this.affinity = affinity;
    this.options = options;
  }

  setOptions(options: PlacerOptions): void {
    this.options = options;
    this.builtForVersion = -1;
    this.selectorSignature = '';
  }

  keyFor(address: string): string {
    return clientKey(address, this.options);
  }

  /**
   * @param avoid Connectors that just failed this client (a refused connect): the client is
   *   placed among the others instead, and re-pinned there.
   */
  decide(address: string, now: number, avoid?: ReadonlySet<string>): Decision {
    const key = this.keyFor(address);
    const entry = this.affinity.get(key, now);
    if (entry) {
      const pinned = this.pool.get(entry.connectorId);
      if (pinned && admitsPinnedClients(pinned) && !avoid?.has(pinned.id)) {
        this.count('pinned', pinned.id);
        return { ok: true, connector: pinned, clientKey: key, reason: 'pinned' };
      }
      if (pinned && this.options.onDown === 'keep' && pinned.health === 'down' && pinned.state !== 'maint') {
        return { ok: false, clientKey: key, reason: 'pinned-connector-down' };
      }
    }
    const chosenId = this.pickNew(key, avoid);
    const chosen = chosenId === undefined ? undefined : this.pool.get(chosenId);
    if (!chosen) return { ok: false, clientKey: key, reason: 'no-eligible-connector' };
    const reason: PlacementReason = entry ? 'repinned' : 'placed';
    this.affinity.pin(key, chosen.id, now, reason);
    this.count(reason, chosen.id);
    return { ok: true, connector: chosen, clientKey: key, reason };
  }

  private count(reason: 'pinned' | PlacementReason, connectorId: string): void {
    const key = `${reason}|${connectorId}`;
    this.decisionCounts.set(key, (this.decisionCounts.get(key) ?? 0) + 1);
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
