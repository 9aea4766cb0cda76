import type { AddressInfo } from 'node:net';
import type { Config } from './config/schema.ts';
import type { Logger } from './logger.ts';
import type { Pool } from './pool/pool.ts';
import type { AffinityView, Placer } from './balance/placer.ts';
import type { SessionTable, SessionsDescription } from './balance/sessions.ts';
import type { FlowStats } from './proxy/flow-stats.ts';
import type { ListenerAddresses } from './proxy/listen.ts';
import type { HealthMonitor } from './health/monitor.ts';
import type { AdminView, SessionViews } from './admin/view.ts';
import type { ReloadOutcome } from './control/reload-outcome.ts';
import { ReloadRequests } from './control/reload-requests.ts';
import type { StateReplica } from './state/replica.ts';
import type { ConfigDiff } from './config/diff.ts';
import { applyReload } from './apply-reload.ts';
import { formatHostPort } from './util/address.ts';
import { formatDuration } from './util/duration.ts';
import { ProcessState } from './state/process-state.ts';
import { StateSync } from './state/sync.ts';
import { DataPlane } from './data-plane.ts';
import { ControlPlane } from './control-plane.ts';
import { ClusterMember } from './cluster-store/member.ts';
import type { KernelDataPlane, KernelDescription } from './kernel/data-plane.ts';
import { boundKernelListeners, startKernelDataPlane } from './kernel/from-config.ts';

export type { ListenerAddresses } from './proxy/listen.ts';

/** How often a clustered instance sends its lease deltas to the store. */
const STORE_LEASE_FLUSH_MS = 1000;

export interface AppOptions {
  /**
   * Other instances of the same pool (the cluster store): pins and learned sessions made here
   * are published there, an unknown client is looked up there (bounded) before it is placed.
   */
  replica?: StateReplica;
}

/**
 * The single-process composition root: state owners → data plane (listeners) + control plane
 * (health, admin). Owns the order they start and stop in. Knows nothing of the CLI or of process
 * signals. The multi-core primary and its workers compose the same parts differently
 * (src/cluster/primary.ts, worker.ts).
 */
export class App implements AdminView {
  readonly logger: Logger;
  readonly startedAt = Date.now();
  private readonly state: ProcessState;
  private readonly data: DataPlane;
  private readonly control: ControlPlane;
  private readonly sync: StateSync | undefined;
  /** `cluster:` configured: this instance's link to the cluster store. */
  private readonly member: ClusterMember | undefined;
  private config: Config;
  /** Where reloads come from and what came of them (/metrics). */
  readonly reloadRequests = new ReloadRequests();
  /** dataPlane kernel/auto: the nftables table that forwards placed clients' 4172 packets (docs/kernel.md). */
  private kernel: KernelDataPlane | undefined;

  constructor(config: Config, logger: Logger, options: AppOptions = {}) {
    this.config = config;
    this.logger = logger;
    this.state = new ProcessState(config);
    this.control = new ControlPlane(config, this.state.pool, logger);
    this.member = config.cluster && !options.replica ? new ClusterMember(config, this.state, this, logger) : undefined;
    const replica = options.replica ?? this.member?.replica;
    this.sync = replica ? new StateSync(this.state, replica, logger, { leaseFlushMs: STORE_LEASE_FLUSH_MS, operatorState: true }) : undefined;
    this.data = new DataPlane(config, this.state, logger, {
      onConnectFailure: (id) => this.control.health.reportConnectFailure(id),
      ...(this.sync ? { beforeDecide: this.sync.beforeDecide, beforeSessionRoute: (q) => this.sync!.beforeSessionRoute(q) } : {}),
    });
  }

  get pool(): Pool {
    return this.state.pool;
  }

  get placer(): Placer {
    return this.state.placer;
  }

  /** The affinity table, read-only (the placer writes it). */
  get affinity(): AffinityView {
    return this.state.placer.affinity;
  }

  /** What the terminating broker listener learned (empty in passthrough mode). */
  get sessions(): SessionTable {
    return this.state.sessions;
  }

  get stats(): FlowStats {
    return this.state.stats;
  }

  /** The cluster view and store metrics (admin), when `cluster:` is configured. */
  get cluster(): ClusterMember | undefined {
    return this.member;
  }

  get health(): HealthMonitor {
    return this.control.health;
  }

  get listenerAddresses(): ListenerAddresses {
    return this.data.listenerAddresses;
  }

  /** Where the admin server is bound (after start; undefined when admin.enabled is false). */
  get adminAddress(): AddressInfo | undefined {
    return this.control.adminAddress;
  }

  /** Experimental rewriteTarget: Connector id → port of its own 4172 TCP+UDP listeners. */
  get directPorts(): Record<string, number> {
    return this.data.directPorts;
  }

  get currentConfig(): Config {
    return this.config;
  }

  /** Learned broker sessions for /status and logs; no secrets (see SessionTable.describeSessions). */
  describeSessions(now = Date.now()): SessionsDescription {
    return this.state.sessions.describeSessions(now);
  }

  /** The per-session view (GET /sessions, the live page, media metrics). */
  get sessionViews(): SessionViews {
    const registry = this.state.registry;
    return { fragments: async (now) => registry.fragments(now), mediaTotals: () => registry.mediaTotals() };
  }

  /** Binds every configured listener, then starts health checks and the admin server; on any failure, closes what was opened and rethrows. */
  async start(): Promise<ListenerAddresses> {
    // Refuse an unprotected non-loopback admin bind before anything listens.
    this.control.checkAdmin();
    let addresses: ListenerAddresses;
    try {
      this.sync?.start();
      // The cluster's operator state (a drain set on another instance) applies before the first client.
      await this.member?.start();
      addresses = await this.data.start();
      // Once the 4172 listeners are bound (its rules need their ports). Single process only: workers: auto is 1 in kernel mode.
      this.kernel = await startKernelDataPlane(this.config, addresses, { logger: this.logger, state: this.state, data: this.data, config: () => this.config });
      await this.control.start(this);
    } catch (err) {
      await this.stop(0);
      throw err;
    }
    this.state.startSweeps();
    logStartup(this.logger, this.config, this.state.pool, addresses, this.adminAddress);
    return addresses;
  }

  /** Stops accepting at once, lets open flows finish for up to `graceMs`, then closes the rest. */
  async stop(graceMs: number): Promise<void> {
    // The kernel stops taking new flows with the listeners, and its flows get the same grace.
    const kernel = this.kernel;
    this.kernel = undefined;
    const kernelFlows = kernel?.drain(graceMs);
    const flows = this.data.stop(graceMs);
    this.state.stopSweeps();
    await Promise.all([flows, kernelFlows, this.control.stop()]);
    await kernel?.stop().catch((err: Error) => this.logger.error({ err: err.message, code: (err as { code?: string }).code }, 'kernel data plane: could not delete its table'));
    await this.sync?.stop();
    await this.member?.close();
  }

  /** The kernel data plane's state (undefined in user space). */
  describeKernel(): KernelDescription | undefined {
    return this.kernel?.describe();
  }

  activeFlows(): { broker: number; pcoipTcp: number; pcoipUdp: number } {
    return this.data.activeFlows();
  }

  /** Clients holding connections/flows in the per-client limit accounting (0 when idle: no leak). */
  trackedClients(): { broker: number; pcoipTcp: number; pcoipUdp: number } {
    return this.data.trackedClients();
  }

  /** Ends every established flow to one Connector on every listener. */
  closeFlowsTo(connectorId: string): number {
    return this.data.closeFlowsTo(connectorId);
  }

  /**
   * Applies a new (validated) config without dropping an established flow or moving a pinned
   * client: Connectors added/removed/changed, weights, states, balance, affinity TTL, listener
   * timeouts and limits, grace, log level. What needs a restart (listener binds, client-key
   * prefixes, …) keeps its running value and is logged. Clients pinned to a removed Connector
   * lose their pin; their established flows run on until they end (see README "Reload").
   */
  reload(next: Config): { diff: ConfigDiff; pinsDropped: number } {
    const { running, diff, pinsDropped } = applyReload(this.config, next, {
      logger: this.logger,
      state: this.state,
      control: this.control,
      data: this.data,
      flows: () => this.activeFlows(),
    });
    this.config = running;
    // Targets, SNAT and every element rewritten in one nft transaction (pool and pins were updated above).
    this.kernel
      ?.reconfigure({ snat: running.kernel.snat, listeners: boundKernelListeners(running, this.data.listenerAddresses) })
      .catch((err: Error) => this.logger.error({ err: err.message, code: (err as { code?: string }).code }, 'reload: the kernel data plane kept its previous table'));
    return { diff, pinsDropped };
  }

  /**
   * Where a reload request (SIGHUP, POST /reload) gets the new config from: the CLI sets it to
   * re-read the file the process was started with. Unset (tests, embedded use): no reload.
   */
  setReloadSource(source: () => ReloadOutcome): void {
    this.reloadRequests.setSource(source);
  }

  requestReload(): ReloadOutcome | undefined {
    return this.reloadRequests.request();
  }
}

/** The start-up line (listeners, Connectors, admin); `extra` adds fields (the worker count). */
export function logStartup(logger: Logger, config: Config, pool: Pool, addresses: ListenerAddresses, admin: AddressInfo | undefined, extra: Record<string, unknown> = {}): void {
  const listeners = Object.fromEntries(
    Object.entries(addresses).map(([name, a]) => [name, `${formatHostPort(a.address, a.port)}${name === 'pcoipUdp' ? '/udp' : '/tcp'}`]),
  );
  logger.info(
    {
      listeners,
      connectors: pool.all().map((c) => ({ id: c.id, broker: formatHostPort(c.address, c.ports.broker), pcoip: formatHostPort(c.address, c.ports.pcoip), weight: c.weight, state: c.state })),
      balance: config.balance.algorithm,
      health: { checks: config.health.checks, interval: formatDuration(config.health.interval), rise: config.health.rise, fall: config.health.fall },
      ...(admin ? { admin: `http://${formatHostPort(admin.address, admin.port)}/` } : {}),
      affinity: { ipv4Prefix: config.affinity.ipv4Prefix, ipv6Prefix: config.affinity.ipv6Prefix, ttl: formatDuration(config.affinity.ttl) },
      ...extra,
    },
    `pcoip-lb started: ${Object.keys(addresses).length} listener(s), ${pool.all().length} Connector(s)`,
  );
  const udpHost = config.listeners.pcoipUdp?.bind.host;
  if (udpHost === '0.0.0.0' || udpHost === '::') {
    // Node's dgram cannot read a datagram's destination address (no IP_PKTINFO), so replies
    // from a wildcard-bound socket leave from whatever address the routing table picks. On a
    // host with several addresses (a VIP), that may not be the address the client sent to,
    // and the client's NAT or firewall then drops the media.
    logger.warn(
      { listener: 'pcoipUdp', bind: formatHostPort(udpHost, config.listeners.pcoipUdp!.bind.port), code: 'PLB_W_UDP_WILDCARD' },
      'listeners.pcoipUdp.bind is a wildcard address: UDP replies leave from the address the routing table picks; on a host with several addresses, bind the public address clients connect to',
    );
  }
}
