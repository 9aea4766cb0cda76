import { createServer, connect, type Server, type Socket, type AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../logger.ts';
import { RefusalLog } from './limits.ts';
import type { Placer, Decision, Lease } from '../balance/placer.ts';
import type { ConnectorView, Pool } from '../pool/pool.ts';
import { formatHostPort, unmapIpv4, type HostPort } from '../util/address.ts';
import { ErrorCodes, PlbError } from '../errors.ts';
import type { FlowStats, ListenerCounters, ListenerName } from './flow-stats.ts';
import { TcpAdmission, type TcpAdmissionOptions } from './tcp-admission.ts';
import { listenTcp } from './listen.ts';
import type { FlowTap, SessionRegistry } from '../sessions/registry.ts';
import { ownExhaustion } from '../util/fd-exhaustion.ts';

export interface TcpProxyOptions extends TcpAdmissionOptions {
  name: Extract<ListenerName, 'broker' | 'pcoipTcp'>;
  bind: HostPort;
  connectTimeoutMs: number;
  /** 0 disables the idle timeout. */
  idleTimeoutMs: number;
  /** Which of the Connector's ports this listener forwards to. */
  upstreamPort: (connector: ConnectorView) => number;
  // maxConnections, maxConnectionsPerClient, firstByteTimeoutMs: see TcpAdmissionOptions. Here
  // the first-byte clock starts once the Connector accepted (TLS clients speak first, so
  // silence means a scanner or a slow-loris).
  /** Bind with SO_REUSEPORT (multi-core workers share the port; the kernel spreads connections). */
  reusePort?: boolean;
  /**
   * Optional step before the Connector is chosen (4172 SNI routing): reads the first bytes of
   * the still-paused client connection and may pin the client in the affinity table. The bytes it
   * read are written to the Connector first, unchanged, before piping starts.
   */
  earlyRouting?: (client: Socket, clientAddress: string) => Promise<EarlyRouting>;
}

export interface EarlyRouting {
  /** Bytes read from the client while deciding. */
  consumed: Buffer;
  /** Called when the flow is connected, with the Connector it reached. */
  opened?: (connector: ConnectorView) => void;
  /** Called once when a connected flow ends. */
  closed?: () => void;
  /** The SNI of the client's ClientHello, when one was read (links the flow to its session). */
  sni?: string;
  /**
   * The Connector this connection's own session names (a learned SNI): it goes there — not
   * wherever its address is pinned, which another session of the same address may have moved
   * meanwhile — unless that Connector can no longer take it.
   */
  connectorId?: string;
}

export interface ProxyDeps {
  placer: Placer;
  stats: FlowStats;
  logger: Logger;
  now?: () => number;
  /** Told of every failed connect (refused or timed out) to a Connector: feeds passive health detection. */
  onConnectFailure?: (connectorId: string) => void;
  /**
   * Multi-core workers: called before placing a client; a promise means "wait, the affinity
   * entry is being fetched from the primary" (the TCP socket stays paused, UDP packets queue).
   * undefined (always, in a single process) means decide now.
   */
  beforeDecide?: (clientAddress: string) => Promise<void> | undefined;
  /** The per-session view (observability): each flow reports its start and end to it (docs/sessions.md). */
  registry?: SessionRegistry;
  /** The pool, for the UDP probe fan-out (which Connectors may still take a flow). */
  pool?: Pool;
}

type CloseReason =
  | 'client-closed'
  | 'connector-closed'
  | 'client-error'
  | 'connector-error'
  | 'idle-timeout'
  | 'connect-failed'
  | 'connect-timeout'
  | 'first-byte-timeout'
  | 'connector-down'
  | 'shutdown';

/** One client connection (from accept) and, once connected, its Connector connection. */
interface TcpFlow {
  client: Socket;
  upstream: Socket | undefined;
  clientAddress: string;
  /** The client's hold on its affinity record, from the decision until the flow ends (released once). */
  lease: Lease | undefined;
  /** Set once the Connector accepted: the flow is counted (stats) and logged when it ends. */
  connector: ConnectorView | undefined;
  /** The Connector connection while its connect is in progress. */
  connecting: Socket | undefined;
  startedAt: number;
  reason: CloseReason | undefined;
  error: string | undefined;
  closed: boolean;
  early: EarlyRouting | undefined;
  /** Its session's view of it (docs/sessions.md). */
  tap: FlowTap | undefined;
}

/**
 * A TCP listener that pipes each client connection to the Connector the placer chooses.
 * Bytes pass unchanged (TLS stays end to end). Backpressure comes from stream piping; a
 * half-close on one side is passed to the other (allowHalfOpen); an error on one connection
 * ends that connection only.
 */
export class TcpProxy {
  private readonly server: Server;
  /** Every accepted connection until it ends, in whatever phase (early routing, look-up, connecting, piping). */
  private readonly flows = new Set<TcpFlow>();
  /** Of those, the ones connected to a Connector (what activeFlows counts). */
  private connected = 0;
  private readonly refusals: RefusalLog;
  private readonly admission: TcpAdmission;
  private readonly now: () => number;
  private options: TcpProxyOptions;
  private readonly deps: ProxyDeps;

  constructor(options: TcpProxyOptions, deps: ProxyDeps) {
    this.options = options;
    this.deps = deps;
    this.now = deps.now ?? Date.now;
    this.server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => this.onConnection(socket));
    this.refusals = new RefusalLog(options.name, deps.stats, deps.logger);
    this.admission = new TcpAdmission(options.name, this.server, options, {
      stats: deps.stats,
      logger: deps.logger,
      now: this.now,
      clientKey: (address) => deps.placer.keyFor(address),
    });
  }

  /** Clients holding at least one connection (per-client accounting; 0 when idle — leak checks use it). */
  get trackedClients(): number {
    return this.admission.trackedClients;
  }

  get name(): ListenerName {
    return this.options.name;
  }

  /** Connections piped to a Connector. */
  get activeFlows(): number {
    return this.connected;
  }

  /** Every accepted connection not yet ended, including those still being routed or connected. */
  get openConnections(): number {
    return this.flows.size;
  }

  /** Timeouts can change on reload; they apply to connections accepted from then on. */
  updateOptions(options: Omit<TcpProxyOptions, 'bind' | 'name'>): void {
    this.options = { ...this.options, ...options };
    this.admission.update(this.options);
  }

  listen(): Promise<AddressInfo> {
    return listenTcp(this.server, `listeners.${this.options.name}`, this.options.bind, {
      reusePort: this.options.reusePort,
      onLaterError: (err) => {
        // accept() at the fd limit (libuv accepts and closes the connection): the proxy's limit, logged rate-limited.
        const errno = ownExhaustion(err);
        if (errno) this.refusals.fdExhausted(this.now(), errno, { during: 'accept' });
        else this.deps.logger.error({ listener: this.options.name, err }, 'listener error');
      },
    });
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  /** Stops accepting; established connections go on. */
  stopAccepting(): Promise<void> {
    // close() stops listening at once; its callback would wait for every open connection to end,
    // which is what the grace period in App.stop decides, so do not wait for it here.
    if (this.server.listening) this.server.close();
    return Promise.resolve();
  }

  /** Ends every connection now, in whatever phase it is (shutdown after the grace period). */
  destroyAll(): void {
    for (const flow of this.flows) this.finish(flow, 'shutdown');
  }

  /** Ends every established flow to one Connector (health.closeFlowsOnDown); returns how many. */
  closeFlowsTo(connectorId: string): number {
    let closed = 0;
    for (const flow of this.flows) {
      if (flow.connector?.id !== connectorId) continue;
      this.finish(flow, 'connector-down');
      closed++;
    }
    return closed;
  }

  private onConnection(client: Socket): void {
    const clientAddress = client.remoteAddress ? unmapIpv4(client.remoteAddress) : undefined;
    if (!clientAddress) {
      // The peer vanished between accept and this callback.
      client.destroy();
      return;
    }
    const now = this.now();
    if (!this.admission.admit(client, clientAddress)) return;
    const flow: TcpFlow = {
      client,
      upstream: undefined,
      clientAddress,
      lease: undefined,
      connector: undefined,
      connecting: undefined,
      startedAt: now,
      reason: undefined,
      error: undefined,
      closed: false,
      early: undefined,
      tap: undefined,
    };
    this.flows.add(flow);
    client.on('error', (err: NodeJS.ErrnoException) => this.finish(flow, 'client-error', err.code ?? err.message));
    client.on('close', () => this.finish(flow, 'client-closed'));
    client.setNoDelay(true);
    const ready = this.deps.beforeDecide?.(clientAddress);
    if (!ready) return this.route(flow);
    ready.then(
      () => {
        if (!flow.closed && !client.destroyed) this.route(flow);
      },
      (err: unknown) => this.finish(flow, 'client-error', err instanceof Error ? err.message : String(err)),
    );
  }

  /** Places the flow (after an optional early look at the client's first bytes) and connects it. */
  private route(flow: TcpFlow): void {
    const { client, clientAddress } = flow;
    const early = this.options.earlyRouting;
    if (!early) {
      this.connectUpstream(flow, this.deps.placer.decide(clientAddress, flow.startedAt), new Set());
      return;
    }
    early(client, clientAddress).then(
      (routing) => {
        flow.early = routing;
        // The client may have gone while we read its first bytes.
        if (flow.closed || client.destroyed) return;
        const { placer } = this.deps;
        const own = routing.connectorId === undefined ? undefined : placer.decideOn(clientAddress, routing.connectorId, this.now());
        this.connectUpstream(flow, own?.ok ? own : placer.decide(clientAddress, this.now()), new Set());
      },
      (err: unknown) => this.finish(flow, 'client-error', err instanceof Error ? err.message : String(err)),
    );
  }

  private connectUpstream(flow: TcpFlow, decision: Decision, failed: Set<string>): void {
    const { logger, stats, placer } = this.deps;
    if (!decision.ok) {
      this.refusals.refuse(this.now(), decision.reason, ErrorCodes.NO_CONNECTOR, { client: flow.clientAddress }, 'flow refused: no Connector may take this client');
      this.finish(flow, 'connect-failed');
      return;
    }
    const connector = decision.connector;
    flow.lease = decision.lease;
    const port = this.options.upstreamPort(connector);
    const connectStarted = performance.now();
    const upstream = connect({ host: connector.address, port, allowHalfOpen: true, noDelay: true });
    flow.connecting = upstream;
    const timer = setTimeout(() => upstream.destroy(new PlbError(ErrorCodes.UPSTREAM_TIMEOUT, 'connect timeout')), this.options.connectTimeoutMs);
    // A client that leaves mid-connect destroys this socket with no error: the timer goes with it.
    upstream.once('close', () => clearTimeout(timer));
    const onConnectError = (err: NodeJS.ErrnoException | PlbError) => {
      clearTimeout(timer);
      upstream.destroy();
      flow.connecting = undefined;
      const errno = ownExhaustion(err);
      if (errno) {
        // pcoip-lb could not open a socket: not the Connector's failure (no passive-health count), and no other Connector would fare better.
        this.refusals.fdExhausted(this.now(), errno, { client: flow.clientAddress, connector: connector.id });
        return this.finish(flow, 'connect-failed', errno);
      }
      const timedOut = err instanceof PlbError;
      const detail = timedOut ? `no answer within ${this.options.connectTimeoutMs} ms` : ((err as NodeJS.ErrnoException).code ?? err.message);
      stats.connectFailed(connector.id);
      this.deps.onConnectFailure?.(connector.id);
      logger.warn(
        {
          listener: this.options.name,
          client: flow.clientAddress,
          connector: connector.id,
          target: formatHostPort(connector.address, port),
          code: timedOut ? ErrorCodes.UPSTREAM_TIMEOUT : ErrorCodes.UPSTREAM_CONNECT,
          err: detail,
        },
        'connect to Connector failed',
      );
      // This attempt's hold on the client's record ends here; a retry takes a new one.
      decision.lease.release(this.now());
      flow.lease = undefined;
      if (flow.closed) return;
      // A client placed just now has no session on that Connector yet: try another one.
      // A pinned client's session lives on its Connector, so moving it would only fail later.
      failed.add(connector.id);
      if (decision.reason !== 'pinned' && decision.reason !== 'session') {
        const retry = placer.decide(flow.clientAddress, this.now(), failed);
        if (retry.ok) return this.connectUpstream(flow, retry, failed);
      }
      this.finish(flow, timedOut ? 'connect-timeout' : 'connect-failed', detail);
    };
    upstream.once('error', onConnectError);
    upstream.once('connect', () => {
      clearTimeout(timer);
      upstream.off('error', onConnectError);
      flow.connecting = undefined;
      stats.connected(this.options.name, connector.id, performance.now() - connectStarted);
      if (flow.closed) {
        upstream.destroy();
        return;
      }
      this.startPiping(flow, upstream, connector);
    });
  }

  private startPiping(flow: TcpFlow, upstream: Socket, connector: ConnectorView): void {
    const { client } = flow;
    flow.upstream = upstream;
    flow.connector = connector;
    this.connected++;
    const counters: ListenerCounters = this.deps.stats.opened(this.options.name, connector.id);
    flow.tap = this.deps.registry?.tcpOpened(this.options.name, { clientAddress: flow.clientAddress, clientPort: client.remotePort ?? 0, connectorId: connector.id, sni: flow.early?.sni, now: this.now(), bytes: () => ({ bytesIn: client.bytesRead, bytesOut: client.bytesWritten }) });
    if (flow.early) {
      // Bytes read by the early-routing step go first, exactly as the client sent them.
      if (flow.early.consumed.length > 0) upstream.write(flow.early.consumed);
      counters.bytesIn += flow.early.consumed.length;
      flow.early.opened?.(connector);
    }

    upstream.on('error', (err: NodeJS.ErrnoException) => this.finish(flow, 'connector-error', err.code ?? err.message));
    upstream.on('close', () => this.finish(flow, 'connector-closed'));
    // Live byte counters; pipe() below does the forwarding and the backpressure.
    client.on('data', (chunk: Buffer) => {
      counters.bytesIn += chunk.length;
    });
    upstream.on('data', (chunk: Buffer) => {
      counters.bytesOut += chunk.length;
    });
    this.admission.watchFirstByte(client, { client: flow.clientAddress, connector: connector.id }, () => this.finish(flow, 'first-byte-timeout'));
    if (this.options.idleTimeoutMs > 0) {
      // The client socket sees activity in both directions (reads from the client, writes of the
      // Connector's bytes to it), so one timer covers the connection.
      client.setTimeout(this.options.idleTimeoutMs, () => this.finish(flow, 'idle-timeout'));
    }
    // end: true passes a FIN from one side to the other (half-close); the other direction stays open.
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Ends a flow once, logs one line, and releases its affinity reference. */
  private finish(flow: TcpFlow, reason: CloseReason, error?: string): void {
    if (reason === 'client-closed' || reason === 'connector-closed') {
      // A clean close of one side: wait until both sides are closed before calling the flow done.
      const clientDone = flow.client.destroyed;
      const upstreamDone = !flow.upstream || flow.upstream.destroyed;
      if (flow.reason === undefined) flow.reason = reason;
      // A socket closes cleanly only after FINs went both ways, so the other side is closing too:
      // wait for it rather than cut data it may still be delivering.
      if (!(clientDone && upstreamDone)) return;
    } else {
      if (flow.reason === undefined || flow.reason === 'client-closed' || flow.reason === 'connector-closed') flow.reason = reason;
      if (error && flow.error === undefined) flow.error = error;
      flow.client.destroy();
      flow.upstream?.destroy();
    }
    if (flow.closed) return;
    flow.closed = true;
    flow.connecting?.destroy();
    this.flows.delete(flow);
    const now = this.now();
    flow.lease?.release(now);
    if (!flow.connector) return;
    this.connected--;
    flow.early?.closed?.();
    flow.tap?.closed(now);
    this.deps.stats.closed(this.options.name, flow.connector.id, now - flow.startedAt);
    this.deps.logger.info(
      {
        listener: this.options.name,
        client: flow.clientAddress,
        connector: flow.connector.id,
        bytesIn: flow.client.bytesRead,
        bytesOut: flow.client.bytesWritten,
        durationMs: now - flow.startedAt,
        reason: flow.reason,
        ...(flow.error ? { err: flow.error } : {}),
      },
      'flow closed',
    );
  }
}
