import type { Registry } from 'prom-client';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../logger.ts';
import type { Pool } from '../pool/pool.ts';
import type { Placer } from '../balance/placer.ts';
import type { SessionTable } from '../balance/sessions.ts';
import type { ListenerAddresses } from '../proxy/listen.ts';
import type { StateChange } from '../state/changes.ts';
import { formatListeners, packageVersion } from '../admin/status.ts';
import { registerClusterMetrics } from './metrics.ts';
import { RedisReplica } from './redis-replica.ts';
import { resolveStoreSettings } from './settings.ts';
import type { ClusterStatus } from './view.ts';

/**
 * This instance as a member of a cluster (`cluster:` in the config, docs/ha.md): the store
 * replica wired to the instance's state owners. The composition roots (App for one process, the
 * multi-core Supervisor) create one, hand `replica` to their StateSync like any replica, start
 * it before the listeners (so the cluster's operator state applies before the first client) and
 * close it after the last lease flush. It also serves the admin server's `cluster` view and metrics.
 */
export interface MemberOwners {
  pool: Pool;
  placer: Pick<Placer, 'affinity'>;
  sessions: Pick<SessionTable, 'records'>;
}

export interface MemberSource {
  readonly startedAt: number;
  readonly listenerAddresses: ListenerAddresses;
}

export class ClusterMember {
  readonly replica: RedisReplica;
  private readonly connectTimeoutMs: number;
  private readonly logger: Logger;

  /** Reads the password and CA files now: a missing one stops the start with PLB_E_CLUSTER_CONFIG. */
  constructor(config: Config, owners: MemberOwners, source: MemberSource, logger: Logger, env: NodeJS.ProcessEnv = process.env) {
    const settings = resolveStoreSettings(config.cluster!, env);
    this.connectTimeoutMs = settings.connectTimeoutMs;
    this.logger = logger;
    this.replica = new RedisReplica({
      settings,
      affinityTtlMs: config.affinity.ttl,
      knownConnector: (id) => owners.pool.get(id) !== undefined,
      localState: (now) => localState(owners, now),
      describeSelf: () => ({
        version: packageVersion(),
        startedAt: source.startedAt,
        listeners: formatListeners(source.listenerAddresses),
        connectors: owners.pool.all().map((c) => ({ id: c.id, health: c.health, state: c.state, reason: c.healthReason })),
      }),
      logger,
    });
  }

  /**
   * Connects and waits (at most the connect timeout) for the first reconcile, so a restarted
   * instance starts with the cluster's operator state. A store that is not there is not waited
   * for longer: this instance starts alone and joins when it can (logged by the replica).
   */
  async start(): Promise<void> {
    this.replica.start();
    if (!(await this.replica.whenUp(this.connectTimeoutMs))) {
      this.logger.info({ store: this.replica.storeUrl, waitedMs: this.connectTimeoutMs }, 'starting without the cluster store; it joins when reachable');
    }
  }

  status(): ClusterStatus {
    return this.replica.clusterStatus();
  }

  registerMetrics(registry: Registry): void {
    registerClusterMetrics(registry, this.replica.stats);
  }

  close(): Promise<void> {
    return this.replica.close();
  }
}

/** What reconciling re-publishes: every live pin (with when it was pinned) and learned session. */
function* localState(owners: MemberOwners, now: number): Iterable<StateChange> {
  owners.placer.affinity.sweep(now);
  for (const e of owners.placer.affinity.all()) {
    yield { kind: 'pin', key: e.clientKey, connectorId: e.connectorId, reason: e.reason, at: e.pinnedAt };
  }
  yield* owners.sessions.records(now);
}
