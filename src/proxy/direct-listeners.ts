import type { AddressInfo } from 'node:net';
import type { Logger } from '../logger.ts';
import type { ConnectorConfig } from '../config/schema.ts';
import { Pool, type ConnectorView } from '../pool/pool.ts';
import { Placer } from '../balance/placer.ts';
import type { RewriteTo } from '../pcoip/rewrite-target.ts';
import { ErrorCodes, PlbError } from '../errors.ts';
import type { FlowStats } from './flow-stats.ts';
import { TcpProxy } from './tcp-proxy.ts';
import { UdpProxy } from './udp-proxy.ts';

/**
 * Experimental rewriteTarget: one 4172 TCP+UDP listener pair per Connector, each forwarding only
 * to its Connector. The broker answers are rewritten to point clients at these ports, so 4172
 * routing needs no affinity at all. Built from the ordinary TCP/UDP proxies, each over a pool of
 * exactly one Connector (which never moves: the session lives there).
 */
export interface DirectListenerOptions {
  publicAddress: string;
  bindAddress: string;
  ports: Record<string, number>;
  tcpIdleTimeoutMs: number;
  udpIdleTimeoutMs: number;
  connectTimeoutMs: number;
  maxFlows: number;
  /** Multi-core workers share each per-Connector port (SO_REUSEPORT; the ports must then be fixed). */
  reusePort?: boolean;
}

interface Pair {
  tcp: TcpProxy;
  udp: UdpProxy;
  port: number;
}

/** Tries this many free ports when asked for port 0 (a port free for TCP may be taken for UDP). */
const PORT_ATTEMPTS = 10;

export class DirectConnectorListeners {
  private readonly pairs = new Map<string, Pair>();
  private readonly options: DirectListenerOptions;
  private readonly connectors: readonly ConnectorConfig[];
  private readonly stats: FlowStats;
  private readonly logger: Logger;

  constructor(connectors: readonly ConnectorConfig[], options: DirectListenerOptions, deps: { stats: FlowStats; logger: Logger }) {
    this.connectors = connectors;
    this.options = options;
    this.stats = deps.stats;
    this.logger = deps.logger;
  }

  /** Binds every pair; returns Connector id → bound port. */
  async listen(): Promise<Record<string, number>> {
    for (const c of this.connectors) {
      const pair = await this.bindPair(c, this.options.ports[c.id] ?? 0);
      this.pairs.set(c.id, pair);
    }
    const bound = Object.fromEntries([...this.pairs].map(([id, p]) => [id, p.port]));
    this.logger.warn(
      { listener: 'broker', rewriteTarget: { publicAddress: this.options.publicAddress, ports: bound } },
      'EXPERIMENTAL rewriteTarget is on: allocate-resource-resp targets are rewritten to per-Connector ports (unverified with real clients)',
    );
    return bound;
  }

  /** Where a client of this Connector is told to dial, or undefined for an unknown Connector. */
  targetFor(connector: ConnectorView): RewriteTo | undefined {
    const pair = this.pairs.get(connector.id);
    return pair ? { address: this.options.publicAddress, port: pair.port } : undefined;
  }

  get activeFlows(): number {
    let n = 0;
    for (const p of this.pairs.values()) n += p.tcp.activeFlows + p.udp.activeFlows;
    return n;
  }

  /** Accepted TCP connections in any phase plus UDP flows (what shutdown waits for). */
  get openConnections(): number {
    let n = 0;
    for (const p of this.pairs.values()) n += p.tcp.openConnections + p.udp.activeFlows;
    return n;
  }

  async stopAccepting(): Promise<void> {
    await Promise.all([...this.pairs.values()].map((p) => p.tcp.stopAccepting()));
  }

  destroyAll(): void {
    for (const p of this.pairs.values()) {
      p.tcp.destroyAll();
      p.udp.close();
    }
  }

  private async bindPair(connector: ConnectorConfig, wanted: number): Promise<Pair> {
    const pool = new Pool([{ ...connector, state: 'active' }]);
    const placer = new Placer(pool, this.options.udpIdleTimeoutMs, { algorithm: 'rendezvous', tableSize: 101, ipv4Prefix: 32, ipv6Prefix: 128 });
    const deps = { placer, stats: this.stats, logger: this.logger.child({ direct: connector.id }) };
    const host = this.options.bindAddress;
    let lastError: unknown;
    for (let attempt = 0; attempt < (wanted === 0 ? PORT_ATTEMPTS : 1); attempt++) {
      const tcp = new TcpProxy(
        { name: 'pcoipTcp', bind: { host, port: wanted }, reusePort: this.options.reusePort, connectTimeoutMs: this.options.connectTimeoutMs, idleTimeoutMs: this.options.tcpIdleTimeoutMs, upstreamPort: (c) => c.ports.pcoip },
        deps,
      );
      let tcpAddress: AddressInfo;
      try {
        tcpAddress = await tcp.listen();
      } catch (err) {
        throw rename(err, connector.id, wanted);
      }
      const udp = new UdpProxy({ bind: { host, port: tcpAddress.port }, reusePort: this.options.reusePort, idleTimeoutMs: this.options.udpIdleTimeoutMs, maxFlows: this.options.maxFlows }, deps);
      try {
        await udp.listen();
        return { tcp, udp, port: tcpAddress.port };
      } catch (err) {
        lastError = err;
        await tcp.stopAccepting();
        udp.close();
      }
    }
    throw rename(lastError, connector.id, wanted);
  }
}

function rename(err: unknown, id: string, port: number): PlbError {
  const detail = err instanceof Error ? err.message : String(err);
  return new PlbError(ErrorCodes.LISTEN, `listeners.broker.rewriteTarget.ports.${id}: cannot listen on port ${port} (TCP and UDP): ${detail}`, [], { cause: err });
}
