import type { Logger } from '../logger.ts';
import { RateLimitedLog } from '../logger.ts';
import type { Placer } from '../balance/placer.ts';
import type { SessionTable } from '../balance/sessions.ts';
import type { Pool } from '../pool/pool.ts';
import type { LookupQuery, StateChange } from './changes.ts';
import type { StateReplica } from './replica.ts';

/**
 * Ties this process's state owners to one replica (docs/state.md):
 *  - what the owners decide here (pins, learned sessions) is published;
 *  - what the replica reports is applied to the owners, which announce it as `remote` (so the UDP
 *    listener still moves flows that follow a re-pin) and never publish it back;
 *  - flow leases are sent in batches, so the replica's TTL sees every process's flows;
 *  - a client (or a session key) this process has no live record of is looked up once, bounded,
 *    before its first flow is placed; concurrent flows of the same client share the look-up.
 * The owners stay pure; this is the only place that knows a replica exists.
 */
export interface StateSyncOptions {
  /** How often lease deltas are sent (the replica's TTL accounting is at most this late). */
  leaseFlushMs: number;
  /**
   * Apply the operator state (drain/maint/enable) the replica reports: between instances, yes;
   * a worker gets its whole pool mirrored by its primary instead.
   */
  operatorState: boolean;
}

export interface StateSyncOwners {
  placer: Placer;
  sessions: SessionTable;
  /** Checked against: a replicated record naming a Connector this process does not have is dropped. */
  pool: Pool;
}

export class StateSync {
  private readonly owners: StateSyncOwners;
  private readonly replica: StateReplica;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly options: StateSyncOptions;
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly applyLog = new RateLimitedLog();
  private flushTimer: NodeJS.Timeout | undefined;
  private started = false;

  constructor(owners: StateSyncOwners, replica: StateReplica, logger: Logger, options: StateSyncOptions, now: () => number = Date.now) {
    this.owners = owners;
    this.replica = replica;
    this.logger = logger;
    this.options = options;
    this.now = now;
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    const { placer, sessions } = this.owners;
    placer.trackLeaseDeltas();
    placer.onPinChange((c) => {
      if (c.origin !== 'local' || c.to === undefined || c.reason === 'removed') return;
      this.replica.publish({ kind: 'pin', key: c.key, connectorId: c.to, reason: c.reason, at: c.at });
    });
    sessions.onLearn((record, origin) => {
      if (origin === 'local') this.replica.publish(record);
    });
    if (this.options.operatorState) {
      // An operator's drain/maint/enable here reaches the other instances; one applied from them is not sent back.
      this.owners.pool.onChange((c) => {
        if (c.kind === 'state' && c.origin === 'local') this.replica.publish({ kind: 'operator-state', connectorId: c.id, state: c.to, at: this.now() });
      });
    }
    this.replica.onRemote((change) => this.apply(change));
    this.flushTimer = setInterval(() => this.flush(), this.options.leaseFlushMs);
    this.flushTimer.unref();
  }

  /** Sends the lease deltas now (also called on stop, so a leaving process gives back its leases). */
  flush(): void {
    const deltas = this.owners.placer.takeLeaseDeltas();
    if (deltas.size > 0) this.replica.publishLeases(deltas);
  }

  async stop(): Promise<void> {
    if (this.flushTimer) clearInterval(this.flushTimer);
    this.flushTimer = undefined;
    this.flush();
  }

  /**
   * The data plane's hook before placing a flow (ProxyDeps.beforeDecide): undefined when the
   * client has a live local pin (decide now), else a promise settled once the replica answered
   * (or gave up) and its answer was applied.
   */
  beforeDecide = (clientAddress: string): Promise<void> | undefined => {
    const key = this.owners.placer.keyFor(clientAddress);
    if (this.owners.placer.entry(key, this.now())) return undefined;
    return this.ask({ kind: 'pin', key });
  };

  /**
   * Before routing a broker request by a session key (cookie, log id) or a 4172 SNI this process
   * does not know: ask the replica once. undefined when known locally.
   */
  beforeSessionRoute(query: Exclude<LookupQuery, { kind: 'pin' }>): Promise<void> | undefined {
    if (this.owners.sessions.lookup(query, this.now())) return undefined;
    return this.ask(query);
  }

  private ask(query: LookupQuery): Promise<void> {
    const id = `${query.kind}|${'key' in query ? query.key : query.sni}`;
    const pending = this.inflight.get(id);
    if (pending) return pending;
    const answer = this.replica.lookup(query).then(
      (change) => {
        if (change) this.apply(change);
      },
      () => undefined,
    );
    const settled = answer.finally(() => this.inflight.delete(id));
    this.inflight.set(id, settled);
    return settled;
  }

  /**
   * What this process knows for a query, after asking the replica when it knows nothing (the
   * multi-core primary answering a worker: its own state, else the cluster store's).
   */
  async resolve(query: LookupQuery): Promise<StateChange | undefined> {
    const local = localRecord(this.owners, query, this.now());
    if (local) return local;
    await this.ask(query);
    return localRecord(this.owners, query, this.now());
  }

  /** Applies a change from the replica to its owner. A change naming an unknown Connector is dropped and logged. */
  apply(change: StateChange): void {
    const now = this.now();
    const { placer, sessions, pool } = this.owners;
    const connectorId = 'connectorId' in change ? change.connectorId : undefined;
    if (connectorId !== undefined && !pool.get(connectorId)) {
      this.applyLog.maybe(now, (suppressed) =>
        this.logger.warn({ kind: change.kind, connector: connectorId, suppressed }, 'replicated state names a Connector this instance does not have; ignored'),
      );
      return;
    }
    switch (change.kind) {
      case 'pin':
        placer.applyPin(change.key, change.connectorId, change.reason, Math.min(change.at, now), 'remote');
        return;
      case 'unpin':
        return;
      case 'cookie':
      case 'log-id':
      case 'allocation':
      case 'allocation-claimed':
        sessions.apply(change, now, 'remote');
        return;
      case 'operator-state': {
        const before = pool.get(change.connectorId)!.state;
        if (!this.options.operatorState || before === change.state) return;
        pool.setState(change.connectorId, change.state, 'remote');
        this.logger.info(
          { connector: change.connectorId, from: before, to: change.state, source: 'cluster' },
          `Connector ${change.connectorId} state ${before} → ${change.state} (set on another instance)`,
        );
        return;
      }
    }
  }
}

/**
 * This process's live record for a query, or undefined. A pin with open flows is reported as
 * live now (its copy elsewhere must not expire while the flows last); an idle one with the time
 * it was last seen (a copy never outlives the original).
 */
export function localRecord(owners: Pick<StateSyncOwners, 'placer' | 'sessions'>, query: LookupQuery, now: number): StateChange | undefined {
  if (query.kind !== 'pin') return owners.sessions.lookup(query, now);
  const entry = owners.placer.entry(query.key, now);
  if (!entry) return undefined;
  return { kind: 'pin', key: query.key, connectorId: entry.connectorId, reason: entry.reason, at: entry.flows > 0 ? now : entry.lastSeen };
}
