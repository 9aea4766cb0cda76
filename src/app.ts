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
import { HealthMonitor } from './health/monitor.ts';
import { AdminServer } from './admin/server.ts';
import { resolveAdminToken } from './admin/token.ts';

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

  constructor(config: Config, logger: Logger) {
    this.config = config;
    this.logger = logger;
    this.pool = new Pool(config.connectors);
    this.affinity = new AffinityTable(config.affinity.ttl);
    this.placer = new Placer(this.pool, this.affinity, { ...config.balance, ...config.affinity, onDown: config.health.onDown });
    this.sessions = new SessionTable({ ttlMs: config.affinity.ttl, maxEntries: MAX_LEARNED_SESSIONS });
    this.health = new HealthMonitor(this.pool, config.health, logger);
    this.pool.onChange((change) => {
      if (change.kind === 'health' && change.to === 'down' && this.config.health.closeFlowsOnDown) this.closeFlowsTo(change.id);
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
    const { listeners } = this.config;
    const deps = { placer: this.placer, stats: this.stats, logger: this.logger, onConnectFailure: (id: string) => this.health.reportConnectFailure(id) };
    const addresses: ListenerAddresses = {};
    // Refuse an unprotected non-loopback admin bind before anything listens.
    const adminToken = resolveAdminToken(this.config.admin);
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
            ...(direct ? { rewriteTarget: (c: ConnectorView) => direct.targetFor(c) } : {}),
          },
          { ...deps, pool: this.pool, sessions: this.sessions },
        );
        addresses.broker = await this.broker.listen();
      } else if (listeners.broker) {
        this.broker = new TcpProxy({ name: 'broker', ...listeners.broker, idleTimeoutMs: listeners.broker.idleTimeout, connectTimeoutMs: listeners.broker.connectTimeout, upstreamPort: (c) => c.ports.broker }, deps);
        addresses.broker = await this.broker.listen();
      }
      if (listeners.pcoipTcp) {
        const sniRouter = listeners.pcoipTcp.sniRouting
          ? new SniRouter({ placer: this.placer, sessions: this.sessions, logger: this.logger, now: Date.now }, SNI_PEEK_TIMEOUT_MS)
          : undefined;
        this.pcoipTcp = new TcpProxy(
          {
            name: 'pcoipTcp',
            ...listeners.pcoipTcp,
            idleTimeoutMs: listeners.pcoipTcp.idleTimeout,
            connectTimeoutMs: listeners.pcoipTcp.connectTimeout,
            upstreamPort: (c) => c.ports.pcoip,
            ...(sniRouter ? { earlyRouting: sniRouter.route } : {}),
          },
          deps,
        );
        addresses.pcoipTcp = await this.pcoipTcp.listen();
      }
      if (listeners.pcoipUdp) {
        this.pcoipUdp = new UdpProxy({ bind: listeners.pcoipUdp.bind, idleTimeoutMs: listeners.pcoipUdp.idleTimeout, maxFlows: listeners.pcoipUdp.maxFlows }, deps);
        addresses.pcoipUdp = await this.pcoipUdp.listen();
      }
      this.addresses = addresses;
      this.health.start();
      if (this.config.admin.enabled) {
        this.admin = new AdminServer(this, this.config.admin, adminToken, this.logger);
        await this.admin.listen();
      }
    } catch (err) {
      await this.stop(0);
      throw err;
    }
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
    this.logStartup(addresses);
    return addresses;
  }

  /** Stops accepting, lets TCP flows finish for up to `graceMs`, then closes whatever is left. */
  async stop(graceMs: number): Promise<void> {
    if (this.affinitySweep) clearInterval(this.affinitySweep);
    this.health.stop();
    await this.admin?.close();
    const tcp: TcpListener[] = [this.broker, this.pcoipTcp, this.direct].filter((l) => l !== undefined);
    await Promise.all(tcp.map((l) => l.stopAccepting()));
    const deadline = Date.now() + graceMs;
    while (graceMs > 0 && Date.now() < deadline && tcp.some((l) => l.activeFlows > 0)) {
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const l of tcp) l.destroyAll();
    this.pcoipUdp?.close();
  }

  activeFlows(): { broker: number; pcoipTcp: number; pcoipUdp: number } {
    return { broker: this.broker?.activeFlows ?? 0, pcoipTcp: this.pcoipTcp?.activeFlows ?? 0, pcoipUdp: this.pcoipUdp?.activeFlows ?? 0 };
  }

  /** Ends every established flow to one Connector on every listener (health.closeFlowsOnDown). */
  closeFlowsTo(connectorId: string): number {
    const closed = (this.broker?.closeFlowsTo(connectorId) ?? 0) + (this.pcoipTcp?.closeFlowsTo(connectorId) ?? 0) + (this.pcoipUdp?.closeFlowsTo(connectorId) ?? 0);
    this.logger.warn({ connector: connectorId, flows: closed }, `closed ${closed} flow(s) of ${connectorId}: it is down and health.closeFlowsOnDown is on`);
    return closed;
  }

  private logStartup(addresses: ListenerAddresses): void {
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
      },
      `pcoip-lb started: ${Object.keys(addresses).length} listener(s), ${this.pool.all().length} Connector(s)`,
    );
  }
}
