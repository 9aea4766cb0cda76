import { createServer as createTcpServer, isIP, type AddressInfo, type Server as TcpServer, type Socket } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { Logger } from '../logger.ts';
import { RateLimitedLog } from '../logger.ts';
import type { Placer } from '../balance/placer.ts';
import type { SessionTable } from '../balance/sessions.ts';
import type { ConnectorView, Pool } from '../pool/pool.ts';
import type { BrokerTlsConfig } from '../config/schema.ts';
import { readCaFile } from '../config/referenced.ts';
import { ErrorCodes, type PlbError } from '../errors.ts';
import { formatHostPort, unmapIpv4, type HostPort } from '../util/address.ts';
import type { FlowStats } from './flow-stats.ts';
import type { FramerLimits } from './http1-framing.ts';
import { CertificateStore } from './tls-certificates.ts';
import { BrokerRouter } from './broker-routing.ts';
import type { SessionRegistry } from '../sessions/registry.ts';
import { BrokerConnection } from './broker-connection.ts';
import { TcpAdmission, type TcpAdmissionOptions } from './tcp-admission.ts';
import type { RewriteTo } from '../pcoip/rewrite-target.ts';
import { listenTcp } from './listen.ts';
import { LbCookie, readLbCookieKeys } from './lb-cookie.ts';
import { RefusalLog } from './limits.ts';
import { ownExhaustion } from '../util/fd-exhaustion.ts';

/**
 * The broker listener in `tls.mode: terminate`: a TLS server (HTTP/1.1 only: ALPN offers
 * `http/1.1` and nothing else, so no client negotiates h2) whose connections are relayed request
 * by request to the Connectors over new TLS connections (see broker-connection.ts). Certificates
 * are re-read when their files change; established connections are never touched by a reload.
 *
 * A plain TCP server accepts and applies the listener's limits (TcpAdmission, as TcpProxy does)
 * before any TLS work: maxConnections, maxConnectionsPerClient, and firstByteTimeout — the first
 * byte of the ClientHello must arrive in time. Only then is the socket handed to the TLS server,
 * whose handshake timeout (http.headerTimeout) runs from there.
 */
export interface BrokerTerminateOptions {
  bind: HostPort;
  /** Bind with SO_REUSEPORT (multi-core workers share the port). */
  reusePort?: boolean;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  headerTimeoutMs: number;
  /** A request body silent this long (while read) gets 408; 0: off. */
  bodyTimeoutMs?: number;
  /** A Connector silent this long after a fully sent request gets the client a 504; 0: off. */
  responseTimeoutMs?: number;
  limits: FramerLimits;
  tls: BrokerTlsConfig;
  /** listeners.broker.lbCookie when enabled: its own Set-Cookie naming the Connector, routed by first. */
  lbCookie?: { name: string; maxAgeMs: number; keyFile?: string | undefined; keyEnv?: string | undefined };
  /** Experimental rewriteTarget: where clients of a Connector should dial instead (see direct-listeners.ts). */
  rewriteTarget?: (connector: ConnectorView) => RewriteTo | undefined;
  /** maxConnections, maxConnectionsPerClient, firstByteTimeoutMs (applied again on reload: updateAdmission). */
  admission?: TcpAdmissionOptions;
}

export interface BrokerTerminateDeps {
  pool: Pool;
  placer: Placer;
  sessions: SessionTable;
  stats: FlowStats;
  logger: Logger;
  now?: () => number;
  /** Told of every failed connect to a Connector: feeds passive health detection. */
  onConnectFailure?: (connectorId: string) => void;
  /** Multi-core / cluster: look up a session key (cookie, log id: by digest) this process does not know before routing by it. */
  beforeSessionRoute?: (query: { kind: 'cookie' | 'log-id'; key: string } | { kind: 'allocation'; sni: string }) => Promise<void> | undefined;
  /** Multi-core / cluster: look up a client address with no local pin before placing it. */
  beforeDecide?: (clientAddress: string) => Promise<void> | undefined;
  /** The per-session view (docs/sessions.md). */
  registry?: SessionRegistry;
  /** affinity.perSession: new logins placed by their session (BrokerRouter.bySession). */
  perSession?: boolean;
}

export class BrokerTerminateListener {
  /** Listens and admits (limits); never handshakes. */
  private readonly tcp: TcpServer;
  /** Handshakes the sockets `tcp` admitted; never listens itself. */
  private readonly server: TlsServer;
  private readonly admission: TcpAdmission;
  /** Every accepted socket until it closes (handshaking ones included), for destroyAll. */
  private readonly sockets = new Set<Socket>();
  private readonly certificates: CertificateStore;
  private readonly connections = new Set<BrokerConnection>();
  private readonly router: BrokerRouter;
  private readonly handshakeLog = new RateLimitedLog();
  /** accept() at the fd limit (PLB_E_FD_EXHAUSTED, rate-limited). */
  private readonly fdRefusals: RefusalLog;
  private readonly upstreamCa: string | undefined;
  private readonly options: BrokerTerminateOptions;
  private readonly deps: BrokerTerminateDeps;
  private readonly now: () => number;
  private reloadTimer: NodeJS.Timeout | undefined;
  /** The LB cookie keys as last read (a changed key file is picked up with the certificates). */
  private lbCookieKeys: string | undefined;

  /** Reads the certificate (and CA) files and LB cookie keys now: a bad file fails start-up with the key path. */
  constructor(options: BrokerTerminateOptions, deps: BrokerTerminateDeps) {
    this.options = options;
    this.deps = deps;
    this.now = deps.now ?? Date.now;
    const tls = options.tls;
    this.certificates = new CertificateStore(tls.certificates ?? [], tls.minVersion);
    this.upstreamCa = tls.upstream?.ca === undefined ? undefined : readCaFile(tls.upstream.ca, 'listeners.broker.tls.upstream.ca', ErrorCodes.TLS_CERT);
    const lbCookie = this.readLbCookie();
    this.router = new BrokerRouter({
      pool: deps.pool,
      placer: deps.placer,
      sessions: deps.sessions,
      logger: deps.logger,
      now: this.now,
      stats: deps.stats,
      ...(lbCookie ? { lbCookie } : {}),
      ...(deps.beforeSessionRoute ? { beforeSessionRoute: deps.beforeSessionRoute } : {}),
      ...(deps.beforeDecide ? { beforeDecide: deps.beforeDecide } : {}),
      ...(deps.registry ? { registry: deps.registry } : {}),
      ...(deps.perSession ? { perSession: true } : {}),
    });
    this.server = createTlsServer(
      {
        SNICallback: (servername, cb) => cb(null, this.certificates.contextFor(servername)),
        ALPNProtocols: ['http/1.1'],
        minVersion: tls.minVersion,
        // The first pair also serves clients that send no SNI at all.
        ...this.defaultPemOptions(),
        handshakeTimeout: Math.max(1000, options.headerTimeoutMs),
        // A client may send its requests and half-close; its responses must still reach it.
        allowHalfOpen: true,
      },
      (socket) => this.onSecureConnection(socket),
    );
    this.server.on('tlsClientError', (err: NodeJS.ErrnoException, socket) => {
      // With a listener here Node leaves the socket open (a handshake timeout would only be
      // logged, and a slow-loris client would stay forever): close it.
      const client = socket.remoteAddress ? unmapIpv4(socket.remoteAddress) : undefined;
      socket.destroy();
      this.handshakeLog.maybe(this.now(), (suppressed) =>
        deps.logger.info({ listener: 'broker', client, err: err.code ?? err.message, suppressed }, 'TLS handshake with client failed'),
      );
    });
    this.fdRefusals = new RefusalLog('broker', deps.stats, deps.logger);
    this.tcp = createTcpServer({ allowHalfOpen: true }, (socket) => this.onTcpConnection(socket));
    this.admission = new TcpAdmission('broker', this.tcp, options.admission ?? {}, {
      stats: deps.stats,
      logger: deps.logger,
      now: this.now,
      clientKey: (address) => deps.placer.keyFor(address),
    });
  }

  get activeFlows(): number {
    return this.connections.size;
  }

  /** Every accepted connection not yet ended (waiting for its first byte, handshaking, relaying). */
  get openConnections(): number {
    return this.sockets.size;
  }

  /** Clients holding at least one connection in the per-client accounting (0 when idle). */
  get trackedClients(): number {
    return this.admission.trackedClients;
  }

  /** New limits (reload); they apply to connections accepted from then on. */
  updateAdmission(options: TcpAdmissionOptions): void {
    this.admission.update(options);
  }

  /** Certificate files, their names and expiry (for /status and logs). */
  describeCertificates(): ReturnType<CertificateStore['describe']> {
    return this.certificates.describe();
  }

  async listen(): Promise<AddressInfo> {
    const address = await listenTcp(this.tcp, 'listeners.broker', this.options.bind, {
      reusePort: this.options.reusePort,
      onLaterError: (err) => {
        const errno = ownExhaustion(err);
        if (errno) this.fdRefusals.fdExhausted(this.now(), errno, { during: 'accept' });
        else this.deps.logger.error({ listener: 'broker', err }, 'listener error');
      },
    });
    this.startReloadChecks();
    if (this.options.tls.upstream?.insecure) {
      this.deps.logger.warn(
        { listener: 'broker', key: 'listeners.broker.tls.upstream.insecure' },
        "Connectors' certificates are NOT verified (upstream.insecure: true): anyone on the path to a Connector can read broker traffic; set upstream.ca instead",
      );
    }
    this.deps.logger.info({ listener: 'broker', mode: 'terminate', certificates: this.certificates.describe() }, 'terminating TLS on the broker listener');
    return address;
  }

  address(): AddressInfo {
    return this.tcp.address() as AddressInfo;
  }

  stopAccepting(): Promise<void> {
    if (this.reloadTimer) clearInterval(this.reloadTimer);
    // server.close() stops listening at once, but its callback waits for every open connection
    // to end; App.stop() must get past this to run its grace period and destroyAll().
    if (this.tcp.listening) this.tcp.close();
    return Promise.resolve();
  }

  destroyAll(): void {
    for (const c of [...this.connections]) c.destroy();
    // Connections still waiting for their first byte or in the TLS handshake.
    for (const s of [...this.sockets]) s.destroy();
  }

  /**
   * Closes every connection's idle kept upstream to a Connector that stopped taking new clients
   * (drain, maint, down): an idle keep-alive holds a lease, so it would keep the Connector from
   * ever reading as drained. A connection whose current upstream it is keeps it (its client's call).
   */
  releaseIdleUpstreamsTo(connectorId: string): void {
    for (const c of this.connections) if (c.connectorId !== connectorId) c.releaseIdleUpstreamsTo(connectorId);
  }

  /** Ends every client connection currently relayed to one Connector (and idle upstreams to it); returns how many. */
  closeFlowsTo(connectorId: string): number {
    let closed = 0;
    this.releaseIdleUpstreamsTo(connectorId);
    for (const c of [...this.connections]) {
      if (c.connectorId !== connectorId) continue;
      c.destroy('connector-down');
      closed++;
    }
    return closed;
  }

  /** The LB cookie from the configured keys (undefined when lbCookie is off). Throws PlbError on bad keys. */
  private readLbCookie(): LbCookie | undefined {
    const cfg = this.options.lbCookie;
    if (!cfg) return undefined;
    const keys = readLbCookieKeys(cfg);
    this.lbCookieKeys = keys.join('\n');
    return new LbCookie({ name: cfg.name, maxAgeMs: cfg.maxAgeMs }, keys);
  }

  /** A rewritten key file (rotation: new key first, old key next) applies without a restart. */
  private reloadLbCookieKeysIfChanged(): void {
    const cfg = this.options.lbCookie;
    if (!cfg?.keyFile) return;
    let keys: string[];
    try {
      keys = readLbCookieKeys(cfg);
    } catch (err) {
      this.deps.logger.warn({ listener: 'broker', code: (err as PlbError).code, err: (err as Error).message }, 'LB cookie key reload failed; still using the previous keys');
      return;
    }
    if (keys.join('\n') === this.lbCookieKeys) return;
    this.lbCookieKeys = keys.join('\n');
    this.router.setLbCookie(new LbCookie({ name: cfg.name, maxAgeMs: cfg.maxAgeMs }, keys));
    this.deps.logger.info({ listener: 'broker', keys: keys.length }, 'LB cookie keys reloaded (the first signs, all verify)');
  }

  /** Checks the certificate (and LB cookie key) files now (the timer calls this; exposed for operators' reload signal). */
  reloadCertificatesIfChanged(): void {
    this.reloadLbCookieKeysIfChanged();
    const result = this.certificates.checkForChanges();
    if (result.status === 'unchanged') return;
    if (result.status === 'failed') {
      this.deps.logger.warn({ listener: 'broker', code: result.error.code, err: result.error.message }, 'certificate reload failed; still serving the previous certificates');
      return;
    }
    // The SNI callback reads the store on every handshake; the default context (no-SNI clients)
    // is swapped here. Established connections keep the context they negotiated with.
    this.server.setSecureContext({ ...this.defaultPemOptions(), minVersion: this.options.tls.minVersion });
    this.deps.logger.info({ listener: 'broker', certificates: this.certificates.describe() }, 'certificates reloaded');
  }

  private defaultPemOptions(): { cert: string; key: string } {
    return this.certificates.defaultPem;
  }

  private startReloadChecks(): void {
    this.reloadTimer = setInterval(() => this.reloadCertificatesIfChanged(), Math.max(50, this.options.tls.reloadInterval));
    this.reloadTimer.unref();
  }

  /**
   * A new TCP connection: admitted against the limits, then handed to the TLS server — at once
   * when firstByteTimeout is off, else once its first byte arrived in time (Node's TLSSocket
   * takes over bytes already read from the socket it wraps).
   */
  private onTcpConnection(socket: Socket): void {
    const clientAddress = socket.remoteAddress ? unmapIpv4(socket.remoteAddress) : undefined;
    if (!clientAddress) {
      socket.destroy();
      return;
    }
    if (!this.admission.admit(socket, clientAddress)) return;
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    if (this.admission.firstByteTimeoutMs <= 0) {
      this.server.emit('connection', socket);
      return;
    }
    const onFirstData = (chunk: Buffer) => {
      socket.off('end', onEarlyEnd);
      socket.off('error', onEarlyError);
      socket.pause();
      socket.unshift(chunk);
      this.server.emit('connection', socket);
    };
    // Gone (FIN or error) before a byte: nothing to answer, nothing to log.
    const onEarlyEnd = () => socket.destroy();
    const onEarlyError = () => socket.destroy();
    socket.once('data', onFirstData);
    socket.once('end', onEarlyEnd);
    socket.once('error', onEarlyError);
    this.admission.watchFirstByte(socket, { client: clientAddress }, () => socket.destroy());
  }

  private onSecureConnection(socket: TLSSocket): void {
    const clientAddress = socket.remoteAddress ? unmapIpv4(socket.remoteAddress) : undefined;
    if (!clientAddress) {
      socket.destroy();
      return;
    }
    socket.on('error', () => undefined); // the connection's own handler reports errors
    const conn = new BrokerConnection(socket, clientAddress, {
      router: this.router,
      stats: this.deps.stats,
      logger: this.deps.logger,
      connectUpstream: (c) => this.connectUpstream(c),
      now: this.now,
      limits: this.options.limits,
      headerTimeoutMs: this.options.headerTimeoutMs,
      bodyTimeoutMs: this.options.bodyTimeoutMs ?? 0,
      responseTimeoutMs: this.options.responseTimeoutMs ?? 0,
      idleTimeoutMs: this.options.idleTimeoutMs,
      ...(this.options.rewriteTarget ? { rewriteTarget: this.options.rewriteTarget } : {}),
      ...(this.deps.onConnectFailure ? { onConnectFailure: this.deps.onConnectFailure } : {}),
      onClosed: (c) => this.connections.delete(c),
    });
    this.connections.add(conn);
  }

  /** TLS to the Connector's broker port, verified by upstream.ca unless upstream.insecure. */
  private connectUpstream(connector: ConnectorView): Promise<TLSSocket> {
    const up = this.options.tls.upstream;
    const servername = up?.servername ?? (isIP(connector.address) === 0 ? connector.address : undefined);
    const target = formatHostPort(connector.address, connector.ports.broker);
    return new Promise((resolve, reject) => {
      const socket = tlsConnect({
        host: connector.address,
        port: connector.ports.broker,
        ...(servername ? { servername } : {}),
        ...(this.upstreamCa ? { ca: this.upstreamCa } : {}),
        rejectUnauthorized: !up?.insecure,
        ALPNProtocols: ['http/1.1'],
        minVersion: 'TLSv1.2',
      });
      socket.setNoDelay(true);
      const timer = setTimeout(() => fail(Object.assign(new Error(`no TLS connection to ${target} within ${this.options.connectTimeoutMs} ms`), { plbCode: ErrorCodes.UPSTREAM_TIMEOUT })), this.options.connectTimeoutMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      socket.once('error', (err: NodeJS.ErrnoException) => {
        const tlsProblem = err.code?.startsWith('ERR_TLS') || err.code?.includes('CERT') || err.code === 'DEPTH_ZERO_SELF_SIGNED_CERT' || err.code === 'SELF_SIGNED_CERT_IN_CHAIN';
        // Out of descriptors: pcoip-lb's own limit, which the connection must not blame on the Connector.
        const plbCode = ownExhaustion(err) ? ErrorCodes.FD_EXHAUSTED : tlsProblem ? ErrorCodes.UPSTREAM_TLS : ErrorCodes.UPSTREAM_CONNECT;
        fail(Object.assign(new Error(`${target}: ${err.code ?? ''} ${err.message}`.trim()), { plbCode }));
      });
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        socket.on('error', () => undefined); // the connection attaches its own handler next
        resolve(socket);
      });
    });
  }
}
