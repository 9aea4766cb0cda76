import type { Config } from './config/schema.ts';
import type { Logger } from './logger.ts';
import type { ConnectorView, Pool } from './pool/pool.ts';
import type { Placer } from './balance/placer.ts';
import type { SessionTable } from './balance/sessions.ts';
import type { SessionRegistry } from './sessions/registry.ts';
import type { FlowStats } from './proxy/flow-stats.ts';
import type { LookupQuery } from './state/changes.ts';
import type { ListenerAddresses } from './proxy/listen.ts';
import { TcpProxy } from './proxy/tcp-proxy.ts';
import { UdpProxy } from './proxy/udp-proxy.ts';
import { BrokerTerminateListener } from './proxy/broker-terminate.ts';
import { SniRouter } from './proxy/sni-routing.ts';
import { DirectConnectorListeners } from './proxy/direct-listeners.ts';
import { brokerAdmissionOptions, brokerOptions, pcoipTcpOptions, pcoipUdpOptions } from './proxy/listener-options.ts';

/** How long the 4172/TCP SNI peek waits for a ClientHello before routing by address. */
const SNI_PEEK_TIMEOUT_MS = 5000;

type FlowCounts = { broker: number; pcoipTcp: number; pcoipUdp: number };

/** What a TCP listener offers for stopping (the passthrough and the terminating broker differ). */
interface TcpListener {
  /** Accepted connections not yet ended, in any phase (routing, look-up, connecting, relaying). */
  readonly openConnections: number;
  stopAccepting(): Promise<void>;
  destroyAll(): void;
}

/** The state owners a data plane reads and writes (through their methods only). */
export interface DataPlaneState {
  pool: Pool;
  placer: Placer;
  sessions: SessionTable;
  stats: FlowStats;
  /** The per-session view the listeners report their flows to (observability only). */
  registry: SessionRegistry;
}

export interface DataPlaneOptions {
  /** Multi-core workers: bind with SO_REUSEPORT on these ports (resolved by the first worker) instead of the config's. */
  shared?: { ports: Partial<Record<keyof ListenerAddresses, number>> | undefined };
  /** Before a client with no local pin is placed (ProxyDeps.beforeDecide): the replica's bounded look-up. */
  beforeDecide?: (clientAddress: string) => Promise<void> | undefined;
  /** Before a broker request or 4172 SNI is routed by a session key this process does not know. */
  beforeSessionRoute?: (query: Exclude<LookupQuery, { kind: 'pin' }>) => Promise<void> | undefined;
  /** Failed connects go to passive health detection (this process's monitor, or the primary's). */
  onConnectFailure: (connectorId: string) => void;
}

/**
 * The data plane: the listeners of one process (443, 4172/TCP, 4172/UDP and the experimental
 * per-Connector ones), built from the config over the process's state owners. It asks the
 * placer for every flow and holds a lease per flow; it never writes state otherwise. It also
 * follows the owners' changes that concern flows already open:
 *  - a client re-pinned elsewhere: its UDP flows to the old Connector close (the next datagram
 *    opens a flow to the new one); TCP connections stay (a TLS session cannot move);
 *  - a Connector down with health.closeFlowsOnDown: every flow to it closes.
 */
export class DataPlane {
  private readonly state: DataPlaneState;
  private readonly logger: Logger;
  private readonly options: DataPlaneOptions;
  private config: Config;
  private broker: TcpProxy | BrokerTerminateListener | undefined;
  private pcoipTcp: TcpProxy | undefined;
  private pcoipUdp: UdpProxy | undefined;
  private direct: DirectConnectorListeners | undefined;
  private addresses: ListenerAddresses = {};
  /** Experimental rewriteTarget: Connector id → port of its own 4172 TCP+UDP listeners (bound). */
  directPorts: Record<string, number> = {};

  constructor(config: Config, state: DataPlaneState, logger: Logger, options: DataPlaneOptions) {
    this.config = config;
    this.state = state;
    this.logger = logger;
    this.options = options;
    state.placer.onPinChange((change) => {
      const moved = this.pcoipUdp?.followPin(change) ?? 0;
      if (moved > 0) {
        this.logger.info(
          { listener: 'pcoipUdp', clientKey: change.key, from: change.from, to: change.to ?? null, flows: moved, origin: change.origin },
          `client ${change.key} re-pinned ${change.from} → ${change.to ?? '(none)'}: closed ${moved} UDP flow(s) so its next datagrams reach the new Connector`,
        );
      }
    });
    state.pool.onChange((change) => {
      if (change.kind === 'health' && change.to === 'down' && this.config.health.closeFlowsOnDown) this.closeFlowsTo(change.id);
      else if ((change.kind === 'state' && change.to !== 'active') || (change.kind === 'health' && change.to === 'down')) {
        if (this.broker instanceof BrokerTerminateListener) this.broker.releaseIdleUpstreamsTo(change.id);
      }
    });
  }

  get listenerAddresses(): ListenerAddresses {
    return this.addresses;
  }

  /** Binds every configured listener; on failure closes what was opened and rethrows. */
  async start(): Promise<ListenerAddresses> {
    const listeners = this.options.shared ? sharedListeners(this.config.listeners, this.options.shared.ports) : this.config.listeners;
    const reusePort = this.options.shared !== undefined;
    const { placer, stats, sessions, pool, registry } = this.state;
    const deps = {
      placer,
      stats,
      registry,
      pool,
      logger: this.logger,
      onConnectFailure: this.options.onConnectFailure,
      ...(this.options.beforeDecide ? { beforeDecide: this.options.beforeDecide } : {}),
    };
    const addresses: ListenerAddresses = {};
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
              reusePort,
            },
            deps,
          );
          this.directPorts = await this.direct.listen();
        }
        const direct = this.direct;
        this.broker = new BrokerTerminateListener(
          {
            bind: b.bind,
            reusePort,
            connectTimeoutMs: b.connectTimeout,
            idleTimeoutMs: b.idleTimeout,
            headerTimeoutMs: b.http.headerTimeout,
            bodyTimeoutMs: b.http.bodyTimeout,
            responseTimeoutMs: b.http.responseTimeout,
            ...(b.lbCookie.enabled ? { lbCookie: { name: b.lbCookie.name, maxAgeMs: b.lbCookie.maxAge, keyFile: b.lbCookie.keyFile, keyEnv: b.lbCookie.keyEnv } } : {}),
            limits: { maxHeaderBytes: b.http.maxHeaderBytes, maxHeaderCount: b.http.maxHeaderCount },
            tls: b.tls,
            admission: brokerAdmissionOptions(b),
            ...(direct ? { rewriteTarget: (c: ConnectorView) => direct.targetFor(c) } : {}),
          },
          { ...deps, pool, sessions, perSession: this.config.affinity.perSession, ...(this.options.beforeSessionRoute ? { beforeSessionRoute: this.options.beforeSessionRoute } : {}) },
        );
        addresses.broker = await this.broker.listen();
      } else if (listeners.broker) {
        this.broker = new TcpProxy(brokerOptions(listeners.broker), deps);
        addresses.broker = await this.broker.listen();
      }
      if (listeners.pcoipTcp) {
        const lookupAllocation = this.options.beforeSessionRoute;
        const sniRouter = listeners.pcoipTcp.sniRouting
          ? new SniRouter(
              { placer, sessions, registry, logger: this.logger, now: Date.now, ...(lookupAllocation ? { lookupAllocation: (sni: string) => lookupAllocation({ kind: 'allocation', sni }) } : {}) },
              SNI_PEEK_TIMEOUT_MS,
            )
          : undefined;
        this.pcoipTcp = new TcpProxy({ ...pcoipTcpOptions(listeners.pcoipTcp), ...(sniRouter ? { earlyRouting: sniRouter.route } : {}) }, deps);
        addresses.pcoipTcp = await this.pcoipTcp.listen();
      }
      if (listeners.pcoipUdp) {
        this.pcoipUdp = new UdpProxy({ ...pcoipUdpOptions(listeners.pcoipUdp), perSession: this.config.affinity.perSession }, deps);
        addresses.pcoipUdp = await this.pcoipUdp.listen();
      }
    } catch (err) {
      await this.stop(0);
      throw err;
    }
    this.addresses = addresses;
    return addresses;
  }

  /**
   * Stops accepting (TCP listeners close; the UDP listener opens no new flows but keeps
   * forwarding established ones), lets open flows finish for up to `graceMs`, then closes
   * whatever is left — connections still being routed or connected included.
   */
  async stop(graceMs: number): Promise<void> {
    // Stop accepting first, in this tick: a client told "shutting down" must not get in after it.
    const tcp: TcpListener[] = [this.broker, this.pcoipTcp, this.direct].filter((l) => l !== undefined);
    this.pcoipUdp?.stopAccepting();
    await Promise.all(tcp.map((l) => l.stopAccepting()));
    const deadline = Date.now() + graceMs;
    const open = () => tcp.some((l) => l.openConnections > 0) || (this.pcoipUdp?.activeFlows ?? 0) > 0;
    while (graceMs > 0 && Date.now() < deadline && open()) {
      await new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, deadline - Date.now()))));
    }
    if (open()) this.logger.info({ flows: this.activeFlows() }, 'shutdown grace period over: closing the remaining flows');
    for (const l of tcp) l.destroyAll();
    this.pcoipUdp?.close();
  }

  /** Applies a reloaded config to the listeners (timeouts, limits, certificates); binds stay. */
  reload(running: Config): void {
    const { listeners } = running;
    if (this.broker instanceof TcpProxy && listeners.broker) this.broker.updateOptions(brokerOptions(listeners.broker));
    // Terminating broker: its limits apply now, rotated certificate files too; its other settings need a restart (see diff.ts).
    if (this.broker instanceof BrokerTerminateListener) {
      if (listeners.broker) this.broker.updateAdmission(brokerAdmissionOptions(listeners.broker));
      this.broker.reloadCertificatesIfChanged();
    }
    if (this.pcoipTcp && listeners.pcoipTcp) this.pcoipTcp.updateOptions(pcoipTcpOptions(listeners.pcoipTcp));
    if (this.pcoipUdp && listeners.pcoipUdp) this.pcoipUdp.updateOptions(pcoipUdpOptions(listeners.pcoipUdp));
    this.config = running;
  }

  activeFlows(): FlowCounts {
    return { broker: this.broker?.activeFlows ?? 0, pcoipTcp: this.pcoipTcp?.activeFlows ?? 0, pcoipUdp: this.pcoipUdp?.activeFlows ?? 0 };
  }

  /** Clients holding connections/flows in the per-client limit accounting (0 when idle: no leak). */
  trackedClients(): FlowCounts {
    return { broker: this.broker?.trackedClients ?? 0, pcoipTcp: this.pcoipTcp?.trackedClients ?? 0, pcoipUdp: this.pcoipUdp?.trackedClients ?? 0 };
  }

  /** Kernel data plane: these clients' UDP packets take the kernel path now (see UdpProxy.handOver). */
  handOverUdp(clientKeys: readonly string[], quietMs: number): number {
    let flows = 0;
    for (const key of clientKeys) flows += this.pcoipUdp?.handOver(key, quietMs) ?? 0;
    return flows;
  }

  /** Ends every established flow to one Connector on every listener (health.closeFlowsOnDown). */
  closeFlowsTo(connectorId: string): number {
    const closed = (this.broker?.closeFlowsTo(connectorId) ?? 0) + (this.pcoipTcp?.closeFlowsTo(connectorId) ?? 0) + (this.pcoipUdp?.closeFlowsTo(connectorId) ?? 0);
    this.logger.warn({ connector: connectorId, flows: closed }, `closed ${closed} flow(s) of ${connectorId}: it is down and health.closeFlowsOnDown is on`);
    return closed;
  }
}

/** A worker's listeners: the configured ones, bound where the first worker bound them, with SO_REUSEPORT. */
function sharedListeners(listeners: Config['listeners'], ports: Partial<Record<keyof ListenerAddresses, number>> | undefined): Config['listeners'] {
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
