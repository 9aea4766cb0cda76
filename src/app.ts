import type { AddressInfo } from 'node:net';
import type { Config } from './config/schema.ts';
import type { Logger } from './logger.ts';
import { Pool, type ConnectorView } from './pool/pool.ts';
import { AffinityTable } from './balance/affinity.ts';
import { Placer } from './balance/placer.ts';
import { FlowStats } from './proxy/flow-stats.ts';
import { TcpProxy } from './proxy/tcp-proxy.ts';
import { UdpProxy } from './proxy/udp-proxy.ts';
import { SessionTable, type SessionsDescription } from './balance/sessions.ts';
import { BrokerTerminateListener } from './proxy/broker-terminate.ts';
import { SniRouter } from './proxy/sni-routing.ts';
import { DirectConnectorListeners } from './proxy/direct-listeners.ts';
import { formatHostPort } from './util/address.ts';
import { formatDuration } from './util/duration.ts';
import { brokerAdmissionOptions, brokerOptions, pcoipTcpOptions, pcoipUdpOptions } from './proxy/listener-options.ts';
import { connectorsWithRuntimeState, diffConfig, effectiveConfig, type ConfigDiff } from './config/diff.ts';
import type { ReloadOutcome } from './control/reload.ts';
import { HealthMonitor } from './health/monitor.ts';
import { AdminServer } from './admin/server.ts';
import { resolveAdminToken } from './admin/token.ts';
import type { KernelDataPlane } from './kernel/data-plane.ts';
import { startKernelDataPlane } from './kernel/from-config.ts';

export interface ListenerAddresses {
  broker?: AddressInfo;
  pcoipTcp?: AddressInfo;
  pcoipUdp?: AddressInfo;
}

/** What App needs of a TCP listener to stop it (the passthrough and terminating broker differ). */
interface TcpListener {
  readonly activeFlows: number;
  stopAccepting(): Promise<void>;
  destroyAll(): void;
}

/**
 * How this App runs (see docs/multicore.md). 'single' (default): everything in this process.
 * 'control': the multi-core primary: health checks, admin server and the authoritative
 * affinity table, no data listeners; flows and counters are the workers' (setWorkerView).
 * 'worker': the data listeners only, bound with SO_REUSEPORT; no health checks, no admin.
 */
export interface AppOptions {
  role?: 'single' | 'control' | 'worker';
  /** worker: the affinity table kept in sync with the primary's. */
  affinity?: AffinityTable;
  /** worker: ports to bind instead of the config's (a port 0 resolved by the first worker). */
  bindPorts?: Partial<Record<keyof ListenerAddresses, number>>;
  /** worker: see ProxyDeps.beforeDecide. */
  beforeDecide?: (clientAddress: string) => Promise<void> | undefined;
  /** worker: failed connects go to the primary's passive health detection. */
  onConnectFailure?: (connectorId: string) => void;
}

type FlowCounts = { broker: number; pcoipTcp: number; pcoipUdp: number };

/** Learned sessions (cookies, log ids, allocations) kept per kind at most; the oldest go first. */
const MAX_LEARNED_SESSIONS = 100_000;
/** How long the 4172/TCP SNI peek waits for a ClientHello before routing by address. */
const SNI_PEEK_TIMEOUT_MS = 5000;

/**
 * The composition root: config → pool → placer → listeners. Owns every long-lived object and
 * the order they start and stop in. Knows nothing of the CLI or of process signals.
 */
export class App {
  readonly pool: Pool;
  readonly affinity: AffinityTable;
  readonly placer: Placer;
  readonly stats = new FlowStats();
  /** What the terminating broker listener learned (empty in passthrough mode). */
  readonly sessions: SessionTable;
  readonly logger: Logger;
  readonly health: HealthMonitor;
  readonly startedAt = Date.now();
  private config: Config;
  private addresses: ListenerAddresses = {};
  private admin: AdminServer | undefined;
  private broker: TcpProxy | BrokerTerminateListener | undefined;
  private pcoipTcp: TcpProxy | undefined;
  private pcoipUdp: UdpProxy | undefined;
  /** Experimental rewriteTarget: per-Connector 4172 listeners. */
  private direct: DirectConnectorListeners | undefined;
  /** Experimental rewriteTarget: Connector id → port of its own 4172 TCP+UDP listeners (bound). */
  directPorts: Record<string, number> = {};
  private affinitySweep: NodeJS.Timeout | undefined;
  /** dataPlane kernel/auto: the nftables table that forwards placed clients' 4172 packets (docs/kernel.md). */
  private kernel: KernelDataPlane | undefined;
  private reloadSource: (() => ReloadOutcome) | undefined;

  private readonly options: AppOptions;
  /** control: the workers' flow counts (activeFlows, trackedClients), refreshed by the supervisor. */
  private workerView: { flows: FlowCounts; tracked: FlowCounts } | undefined;

  constructor(config: Config, logger: Logger, options: AppOptions = {}) {
    this.config = config;
    this.logger = logger;
    this.options = options;
    this.pool = new Pool(config.connectors);
    this.affinity = options.affinity ?? new AffinityTable(config.affinity.ttl);
    this.placer = new Placer(this.pool, this.affinity, { ...config.balance, ...config.affinity, onDown: config.health.onDown });
    this.sessions = new SessionTable({ ttlMs: config.affinity.ttl, maxEntries: MAX_LEARNED_SESSIONS });
    this.health = new HealthMonitor(this.pool, config.health, logger);
    this.pool.onChange((change) => {
      // (The multi-core primary has no flows: each worker closes its own, from its mirrored pool.)
      if (change.kind === 'health' && change.to === 'down' && this.config.health.closeFlowsOnDown && options.role !== 'control') this.closeFlowsTo(change.id);
    });
  }

  /** Learned broker sessions for /status and logs; no secrets (see SessionTable.describeSessions). */
  describeSessions(now = Date.now()): SessionsDescription {
    return this.sessions.describeSessions(now);
  }

  /** Where each listener is bound (after start). */
  get listenerAddresses(): ListenerAddresses {
    return this.addresses;
  }

  /** Where the admin server is bound (after start; undefined when admin.enabled is false). */
  get adminAddress(): AddressInfo | undefined {
    return this.admin?.address();
  }

  get currentConfig(): Config {
    return this.config;
  }

  /** Binds every configured listener; on any failure, closes what was opened and rethrows. */
  async start(): Promise<ListenerAddresses> {
    const role = this.options.role ?? 'single';
    // control: no data listeners; worker: the config's listeners on the ports worker 0 bound, shared.
    const listeners = role === 'control' ? {} : role === 'worker' ? sharedListeners(this.config.listeners, this.options.bindPorts) : this.config.listeners;
    const deps = {
      placer: this.placer,
      stats: this.stats,
      logger: this.logger,
      onConnectFailure: this.options.onConnectFailure ?? ((id: string) => this.health.reportConnectFailure(id)),
      ...(this.options.beforeDecide ? { beforeDecide: this.options.beforeDecide } : {}),
    };
    const addresses: ListenerAddresses = {};
    // Refuse an unprotected non-loopback admin bind before anything listens.
    const adminToken = role === 'worker' ? undefined : resolveAdminToken(this.config.admin);
    try {
      if (listeners.broker?.tls.mode === 'terminate') {
        const b = listeners.broker;
        if (b.rewriteTarget.enabled) {
          this.direct = new DirectConnectorListeners(
            this.config.connectors,
            {
              publicAddress: b.rewriteTarget.publicAddress!,
              bindAddress: b.rewriteTarget.bindAddress,
              ports: b.rewriteTarget.ports,
              tcpIdleTimeoutMs: listeners.pcoipTcp?.idleTimeout ?? 3_600_000,
              udpIdleTimeoutMs: listeners.pcoipUdp?.idleTimeout ?? 120_000,
              connectTimeoutMs: listeners.pcoipTcp?.connectTimeout ?? b.connectTimeout,
              maxFlows: listeners.pcoipUdp?.maxFlows ?? 100_000,
            },
            deps,
          );
          this.directPorts = await this.direct.listen();
        }
        const direct = this.direct;
        this.broker = new BrokerTerminateListener(
          {
            bind: b.bind,
            connectTimeoutMs: b.connectTimeout,
            idleTimeoutMs: b.idleTimeout,
            headerTimeoutMs: b.http.headerTimeout,
            limits: { maxHeaderBytes: b.http.maxHeaderBytes, maxHeaderCount: b.http.maxHeaderCount },
            tls: b.tls,
            admission: brokerAdmissionOptions(b),
            ...(direct ? { rewriteTarget: (c: ConnectorView) => direct.targetFor(c) } : {}),
          },
          { ...deps, pool: this.pool, sessions: this.sessions },
        );
        addresses.broker = await this.broker.listen();
      } else if (listeners.broker) {
        this.broker = new TcpProxy(brokerOptions(listeners.broker), deps);
        addresses.broker = await this.broker.listen();
      }
      if (listeners.pcoipTcp) {
        const sniRouter = listeners.pcoipTcp.sniRouting
          ? new SniRouter({ placer: this.placer, sessions: this.sessions, logger: this.logger, now: Date.now }, SNI_PEEK_TIMEOUT_MS)
          : undefined;
        this.pcoipTcp = new TcpProxy({ ...pcoipTcpOptions(listeners.pcoipTcp), ...(sniRouter ? { earlyRouting: sniRouter.route } : {}) }, deps);
        addresses.pcoipTcp = await this.pcoipTcp.listen();
      }
      if (listeners.pcoipUdp) {
        this.pcoipUdp = new UdpProxy(pcoipUdpOptions(listeners.pcoipUdp), deps);
        addresses.pcoipUdp = await this.pcoipUdp.listen();
      }
      this.addresses = addresses;
      // Once the 4172 listeners are bound (the rules need their ports); never in a worker (config: workers 1).
      if (role === 'single') {
        this.kernel = await startKernelDataPlane(this.config, addresses, {
          logger: this.logger,
          stats: this.stats,
          connectors: () => this.pool.all(),
          connector: (id) => this.pool.get(id),
          pins: () => this.affinity.all(),
        });
        // Health and drain/maint change which pins may be forwarded: update the maps at once.
        if (this.kernel) this.pool.onChange(() => void this.kernel?.syncElements());
      }
      if (role !== 'worker') this.health.start();
      if (role !== 'worker' && this.config.admin.enabled) {
        this.admin = new AdminServer(this, this.config.admin, adminToken, this.logger);
        await this.admin.listen();
      }
    } catch (err) {
      await this.stop(0);
      throw err;
    }
    this.scheduleAffinitySweep();
    // The multi-core supervisor announces the start once every worker listens.
    if (role === 'single') this.logStartup(addresses);
    return addresses;
  }

  private scheduleAffinitySweep(): void {
    if (this.affinitySweep) clearInterval(this.affinitySweep);
    // Expired affinity entries only cost memory; sweeping once a minute (or per TTL/4) is plenty.
    this.affinitySweep = setInterval(
      () => {
        const now = Date.now();
        this.affinity.sweep(now);
        this.sessions.sweep(now);
      },
      Math.max(1000, Math.min(60_000, this.config.affinity.ttl / 4)),
    );
    this.affinitySweep.unref();
  }

  /**
   * Stops accepting (TCP listeners close; the UDP listener opens no new flows but keeps
   * forwarding established ones), lets open flows finish for up to `graceMs`, then closes
   * whatever is left.
   */
  async stop(graceMs: number): Promise<void> {
    // Stop accepting first, in this tick: a client told "shutting down" must not get in after it.
    const tcp: TcpListener[] = [this.broker, this.pcoipTcp, this.direct].filter((l) => l !== undefined);
    this.pcoipUdp?.stopAccepting();
    const closing = Promise.all(tcp.map((l) => l.stopAccepting()));
    if (this.affinitySweep) clearInterval(this.affinitySweep);
    this.health.stop();
    await Promise.all([closing, this.admin?.close()]);
    const deadline = Date.now() + graceMs;
    const open = () => tcp.some((l) => l.activeFlows > 0) || (this.pcoipUdp?.activeFlows ?? 0) > 0;
    while (graceMs > 0 && Date.now() < deadline && open()) {
      await new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, deadline - Date.now()))));
    }
    if (open()) this.logger.info({ flows: this.activeFlows() }, 'shutdown grace period over: closing the remaining flows');
    for (const l of tcp) l.destroyAll();
    this.pcoipUdp?.close();
    await this.stopKernel();
  }

  /** Deletes the kernel data plane's table and forwarded flows; a failure is logged (stop must finish). */
  private async stopKernel(): Promise<void> {
    const kernel = this.kernel;
    this.kernel = undefined;
    await kernel?.stop().catch((err: Error) => this.logger.error({ err: err.message, code: (err as { code?: string }).code }, 'kernel data plane: could not delete its table'));
  }

  /** The kernel data plane's state for /status (undefined in user space). */
  describeKernel(): ReturnType<KernelDataPlane['describe']> | undefined {
    return this.kernel?.describe();
  }

  activeFlows(): { broker: number; pcoipTcp: number; pcoipUdp: number } {
    if (this.workerView) return { ...this.workerView.flows };
    return { broker: this.broker?.activeFlows ?? 0, pcoipTcp: this.pcoipTcp?.activeFlows ?? 0, pcoipUdp: this.pcoipUdp?.activeFlows ?? 0 };
  }

  /**
   * Applies a new (validated) config without dropping an established flow or moving a pinned
   * client: Connectors added/removed/changed, weights, states, balance, affinity TTL, listener
   * timeouts and limits, grace, log level. What needs a restart (listener binds, client-key
   * prefixes, …) keeps its running value and is logged. Clients pinned to a removed Connector
   * lose their pin; their established flows run on until they end (see README "Reload").
   */
  reload(next: Config): { diff: ConfigDiff; pinsDropped: number } {
    const from = this.config;
    const diff = diffConfig(from, next);
    const running = effectiveConfig(from, next, diff);
    // The one step that can fail (reading a new CA file) goes first, so a failure changes nothing.
    if (diff.applied.some((p) => p.startsWith('health.'))) this.health.reconfigure(running.health);
    for (const r of diff.restartRequired) {
      this.logger.warn({ key: r.path, reason: r.reason }, `reload: ${r.path} changed but needs a restart; keeping the running value`);
    }
    this.pool.replaceConfig(connectorsWithRuntimeState(from.connectors, running.connectors, (id) => this.pool.get(id)?.state));
    this.health.sync();
    let pinsDropped = 0;
    for (const id of diff.connectors.removed) pinsDropped += this.affinity.deleteConnector(id);
    this.placer.setOptions({ ...running.balance, ...running.affinity, onDown: running.health.onDown });
    this.affinity.setTtl(running.affinity.ttl);
    const { listeners } = running;
    if (this.broker instanceof TcpProxy && listeners.broker) this.broker.updateOptions(brokerOptions(listeners.broker));
    // Terminating broker: its limits apply now, rotated certificate files too; its other settings need a restart (see diff.ts).
    if (this.broker instanceof BrokerTerminateListener) {
      if (listeners.broker) this.broker.updateAdmission(brokerAdmissionOptions(listeners.broker));
      this.broker.reloadCertificatesIfChanged();
    }
    if (this.pcoipTcp && listeners.pcoipTcp) this.pcoipTcp.updateOptions(pcoipTcpOptions(listeners.pcoipTcp));
    if (this.pcoipUdp && listeners.pcoipUdp) this.pcoipUdp.updateOptions(pcoipUdpOptions(listeners.pcoipUdp));
    // Targets, SNAT and every element rewritten in one nft transaction (pool and pins are updated above).
    this.kernel
      ?.reconfigure({ snat: running.kernel.snat })
      .catch((err: Error) => this.logger.error({ err: err.message, code: (err as { code?: string }).code }, 'reload: the kernel data plane kept its previous table'));
    this.logger.level = running.logging.level;
    this.config = running;
    if (this.affinitySweep && running.affinity.ttl !== from.affinity.ttl) this.scheduleAffinitySweep();
    this.logger.info(
      {
        connectors: diff.connectors,
        listeners: diff.listeners,
        applied: diff.applied,
        restartRequired: diff.restartRequired.map((r) => r.path),
        pinsDropped,
        flows: this.activeFlows(),
      },
      'config reloaded',
    );
    return { diff, pinsDropped };
  }

  /**
   * Where a reload request (SIGHUP, POST /reload) gets the new config from: the CLI sets it to
   * re-read the file the process was started with. Unset (tests, embedded use): no reload.
   */
  setReloadSource(source: () => ReloadOutcome): void {
    this.reloadSource = source;
  }

  requestReload(): ReloadOutcome | undefined {
    return this.reloadSource?.();
  }

  /** Clients holding connections/flows in the per-client limit accounting (0 when idle: no leak). */
  trackedClients(): { broker: number; pcoipTcp: number; pcoipUdp: number } {
    if (this.workerView) return { ...this.workerView.tracked };
    return { broker: this.broker?.trackedClients ?? 0, pcoipTcp: this.pcoipTcp?.trackedClients ?? 0, pcoipUdp: this.pcoipUdp?.trackedClients ?? 0 };
  }

  /** control: the summed flow counts of the workers (their counters go to `stats`). */
  setWorkerView(flows: FlowCounts, tracked: FlowCounts): void {
    this.workerView = { flows, tracked };
  }

  /** Ends every established flow to one Connector on every listener (health.closeFlowsOnDown). */
  closeFlowsTo(connectorId: string): number {
    const closed = (this.broker?.closeFlowsTo(connectorId) ?? 0) + (this.pcoipTcp?.closeFlowsTo(connectorId) ?? 0) + (this.pcoipUdp?.closeFlowsTo(connectorId) ?? 0);
    this.logger.warn({ connector: connectorId, flows: closed }, `closed ${closed} flow(s) of ${connectorId}: it is down and health.closeFlowsOnDown is on`);
    return closed;
  }

  /** The start-up line (listeners, Connectors, admin); `extra` adds fields (the worker count). */
  logStartup(addresses: ListenerAddresses, extra: Record<string, unknown> = {}): void {
    const listeners = Object.fromEntries(
      Object.entries(addresses).map(([name, a]) => [name, `${formatHostPort(a.address, a.port)}${name === 'pcoipUdp' ? '/udp' : '/tcp'}`]),
    );
    this.logger.info(
      {
        listeners,
        connectors: this.pool.all().map((c) => ({ id: c.id, broker: formatHostPort(c.address, c.ports.broker), pcoip: formatHostPort(c.address, c.ports.pcoip), weight: c.weight, state: c.state })),
        balance: this.config.balance.algorithm,
        health: { checks: this.config.health.checks, interval: formatDuration(this.config.health.interval), rise: this.config.health.rise, fall: this.config.health.fall },
        ...(this.adminAddress ? { admin: `http://${formatHostPort(this.adminAddress.address, this.adminAddress.port)}/` } : {}),
        affinity: { ipv4Prefix: this.config.affinity.ipv4Prefix, ipv6Prefix: this.config.affinity.ipv6Prefix, ttl: formatDuration(this.config.affinity.ttl) },
        ...extra,
      },
      `pcoip-lb started: ${Object.keys(addresses).length} listener(s), ${this.pool.all().length} Connector(s)`,
    );
    const udpHost = this.config.listeners.pcoipUdp?.bind.host;
    if (udpHost === '0.0.0.0' || udpHost === '::') {
      // Node's dgram cannot read a datagram's destination address (no IP_PKTINFO), so replies
      // from a wildcard-bound socket leave from whatever address the routing table picks. On a
      // host with several addresses (a VIP), that may not be the address the client sent to,
      // and the client's NAT or firewall then drops the media.
      this.logger.warn(
        { listener: 'pcoipUdp', bind: formatHostPort(udpHost, this.config.listeners.pcoipUdp!.bind.port), code: 'PLB_W_UDP_WILDCARD' },
        'listeners.pcoipUdp.bind is a wildcard address: UDP replies leave from the address the routing table picks; on a host with several addresses, bind the public address clients connect to',
      );
    }
  }
}

/** A worker's listeners: the configured ones, bound where worker 0 bound them, with SO_REUSEPORT. */
function sharedListeners(listeners: Config['listeners'], ports: AppOptions['bindPorts']): Config['listeners'] {
  const out = structuredClone(listeners);
  for (const name of ['broker', 'pcoipTcp', 'pcoipUdp'] as const) {
    const l = out[name];
    if (!l) continue;
    const port = ports?.[name];
    if (port !== undefined) l.bind = { ...l.bind, port };
    (l as { reusePort?: boolean }).reusePort = true;
  }
  return out;
}
