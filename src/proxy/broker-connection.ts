import { performance } from 'node:perf_hooks';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../logger.ts';
import type { ConnectorView } from '../pool/pool.ts';
import type { Lease } from '../balance/placer.ts';
import { ALLOC_SUCCESSFUL, AllocateResponseParser } from '../pcoip/allocate-response.ts';
import { reframeResponse, rewriteAllocationBody, type RewriteTo } from '../pcoip/rewrite-target.ts';
import { ErrorCodes } from '../errors.ts';
import type { FlowStats, ListenerCounters } from './flow-stats.ts';
import { RateLimitedLog } from '../logger.ts';
import { Http1Framer, headerValues, isChunked, type FramerEvent, type FramerLimits, type MessageHead } from './http1-framing.ts';
import { BROKER_XML_PATH, type BrokerRouter, type ExchangeFacts, type Route } from './broker-routing.ts';

/**
 * One client connection on the terminating broker listener. Requests are framed as they arrive;
 * each is routed on its own (LB cookie → JSESSIONID → log id → address) and forwarded byte for
 * byte to that Connector over a re-encrypted connection. A request for another Connector waits
 * until the current Connector answered everything sent to it (responses must come back in
 * order), then the relay switches to an upstream for the new Connector: one it already holds
 * (idle upstreams are kept, up to MAX_KEPT_UPSTREAMS, so a client alternating cookies costs no
 * TLS handshakes), or a new one (at most MAX_SWITCH_OPENS times per client connection for a
 * Connector other than the last one used; past that the request gets 421 and the connection
 * closes. Re-opening to the same Connector after it closed an idle keep-alive is never limited). Responses are framed too, to learn the session
 * cookie, the log id and the allocation, and forwarded byte for byte (with lbCookie: plus one
 * Set-Cookie header). Bytes from an upstream that owes no response are never framed as an answer
 * to the live exchange: that upstream is closed.
 *
 * Timers: a request head must be complete within headerTimeoutMs of its first byte; a body must
 * make progress (a byte at least every bodyTimeoutMs while we read; 408 otherwise); a Connector
 * must send a byte of its answer within responseTimeoutMs of a fully sent request (504 otherwise).
 * An error answer goes out after earlier responses, the upstream holding a half-sent request is
 * destroyed, and the client connection is closed within LINGER_MS even if the client never
 * closes its side.
 */

/** Idle upstreams (to other Connectors) a client connection keeps, least recently used dropped first. */
export const MAX_KEPT_UPSTREAMS = 4;
/** New upstreams to another Connector than the last one that one client connection may open; a login needs one or two. */
export const MAX_SWITCH_OPENS = 16;
/** Distinct CLIENT-LOG-ID values one client connection may teach (one login uses one). */
export const MAX_LOG_IDS_PER_CONNECTION = 4;
/** After an error answer: how long the client may take to read it and close before we cut it. */
export const LINGER_MS = 2000;

export interface UpstreamConnector {
  /** Opens a TLS connection to the Connector's broker port; resolves once the handshake is done. */
  (connector: ConnectorView): Promise<TLSSocket>;
}

export interface BrokerConnectionDeps {
  router: BrokerRouter;
  stats: FlowStats;
  logger: Logger;
  connectUpstream: UpstreamConnector;
  now: () => number;
  limits: FramerLimits;
  headerTimeoutMs: number;
  /** A request body with no byte for this long (while we read) gets 408; 0: off. */
  bodyTimeoutMs: number;
  /** A fully sent request whose Connector sends no byte of its answer for this long gets 504; 0: off. */
  responseTimeoutMs: number;
  idleTimeoutMs: number;
  /** Experimental rewriteTarget: where clients of this Connector should dial instead (undefined: no rewrite). */
  rewriteTarget?: (connector: ConnectorView) => RewriteTo | undefined;
  /** Told of every failed connect to a Connector (passive health detection). */
  onConnectFailure?: (connectorId: string) => void;
  /** Called once when the connection is finished (for the listener's bookkeeping). */
  onClosed: (conn: BrokerConnection) => void;
}

interface PendingRequest {
  method: string;
  closeAfter: boolean;
  /** What routing and learning need to know when the answer comes (brokerXml: a POST to the XML endpoint). */
  exchange: ExchangeFacts;
  /** The whole request (its end) has been forwarded: from then on the Connector owes an answer. */
  sent: boolean;
}

interface HeldResponse {
  head: Buffer;
  chunked: boolean;
  /** Every byte received for this response, in order (forwarded as is when not rewritten). */
  raw: Buffer[];
  /** The decoded body, for the rewrite. */
  body: Buffer[];
  to: RewriteTo;
  /** The parser found a successful allocation: rewrite at the end of the body. */
  success: boolean;
}

interface Upstream {
  connector: ConnectorView;
  socket: TLSSocket | undefined;
  framer: Http1Framer;
  /** Requests sent and not fully answered, oldest first. */
  pending: PendingRequest[];
  /** Bytes of the response in progress already sent to the client (a 502 is only possible at 0). */
  responseBytesSent: number;
  allocation: AllocateResponseParser | undefined;
  /** A 1xx interim response is in progress: its end does not answer the request. */
  interim: boolean;
  /** rewriteTarget: a broker XML response held back whole until we know whether to rewrite it. */
  held: HeldResponse | undefined;
  counters: ListenerCounters | undefined;
  /** The client's hold on its affinity record while this upstream is open (address-routed only). */
  lease: Lease | undefined;
  /** When the upstream connected (flow-duration histogram). */
  openedAt: number;
  closed: boolean;
  /** When it last became the current upstream (least recently used idle one is dropped first). */
  lastUsed: number;
}

type CloseReason =
  | 'client-closed'
  | 'client-error'
  | 'connector-error'
  | 'idle-timeout'
  | 'bad-request'
  | 'bad-response'
  | 'no-connector'
  | 'connect-failed'
  | 'header-timeout'
  | 'connector-down'
  | 'body-timeout'
  | 'response-timeout'
  | 'upstream-limit'
  | 'shutdown';

/** One line per second at most for Connectors that send bytes nobody asked for. */
const unsolicitedLog = new RateLimitedLog();

export class BrokerConnection {
  readonly clientAddress: string;
  private readonly client: TLSSocket;
  private readonly deps: BrokerConnectionDeps;
  private readonly requests: Http1Framer;
  /** Request events not yet forwarded, in order (waiting for an upstream switch or connect). */
  private queue: FramerEvent[] = [];
  private queuedBytes = 0;
  /** The upstream requests go to now. */
  private upstream: Upstream | undefined;
  /** Every open (or connecting) upstream of this connection, by Connector id; the current one included. */
  private readonly upstreams = new Map<string, Upstream>();
  private upstreamOpens = 0;
  /** Upstreams opened to switch Connectors (what MAX_SWITCH_OPENS bounds). */
  private switchOpens = 0;
  /**
   * Why the queue is held: a replica look-up for the front request's session keys, the current
   * Connector still answering earlier requests, or a new Connector connection.
   */
  private waiting: 'lookup' | 'connect' | 'drain' | undefined;
  /** The head whose replica look-up is done (so it is not asked twice). */
  private preparedHead: MessageHead | undefined;
  /** The route chosen for the request at the front of the queue, kept across connect retries. */
  private frontRoute: Extract<Route, { ok: true }> | undefined;
  private failedConnectors = new Set<string>();
  /** The request whose head went upstream and whose end has not yet. */
  private openRequest: PendingRequest | undefined;
  private headerTimer: NodeJS.Timeout | undefined;
  private bodyTimer: NodeJS.Timeout | undefined;
  private responseTimer: NodeJS.Timeout | undefined;
  private lingerTimer: NodeJS.Timeout | undefined;
  private clientEnded = false;
  /** After a 'Connection: close' exchange or an error reply: end once responses are out. */
  private closing = false;
  private closed = false;
  private reason: CloseReason | undefined;
  private readonly startedAt: number;
  private requestCount = 0;
  private lastConnector: string | undefined;
  /** Log ids this connection taught the session table (capped: MAX_LOG_IDS_PER_CONNECTION). */
  private readonly learnedLogIds = new Set<string>();
  /** An error reply waiting until the current Connector owes at most `until` answers (the half-sent request). */
  private afterDrain: { send: () => void; until: number } | undefined;

  constructor(client: TLSSocket, clientAddress: string, deps: BrokerConnectionDeps) {
    this.client = client;
    this.clientAddress = clientAddress;
    this.deps = deps;
    this.startedAt = deps.now();
    this.requests = new Http1Framer('request', deps.limits);
    client.setNoDelay(true);
    client.on('data', (chunk: Buffer) => this.onClientData(chunk));
    client.on('end', () => this.onClientEnd());
    client.on('error', (err: NodeJS.ErrnoException) => this.close('client-error', err.code ?? err.message));
    client.on('close', () => this.close('client-closed'));
    client.on('drain', () => {
      const up = this.upstream;
      if (up?.socket && !up.closed && up.socket.isPaused()) up.socket.resume();
      if (up) this.armResponseTimer(up);
    });
    if (deps.idleTimeoutMs > 0) client.setTimeout(deps.idleTimeoutMs, () => this.close('idle-timeout'));
  }

  /** Ends the connection now (shutdown, or its Connector went down with health.closeFlowsOnDown). */
  destroy(reason: 'shutdown' | 'connector-down' = 'shutdown'): void {
    this.close(reason);
  }

  /** The Connector this connection currently talks to, if any. */
  get connectorId(): string | undefined {
    const up = this.upstream;
    return up && !up.closed ? up.connector.id : undefined;
  }

  /** Closes an idle kept upstream to a Connector (down, draining, in maint); the current one is the caller's to judge. */
  releaseIdleUpstreamsTo(connectorId: string): void {
    const up = this.upstreams.get(connectorId);
    if (up && up !== this.upstream && up.pending.length === 0) this.releaseUpstream(up, 'destroy');
  }

  private log(): Logger {
    return this.deps.logger;
  }

  // ---- client → Connector -------------------------------------------------------------------

  private onClientData(chunk: Buffer): void {
    if (this.closed || this.closing) return;
    const events = this.requests.push(chunk);
    for (const e of events) {
      this.queue.push(e);
      if ('bytes' in e) this.queuedBytes += e.bytes.length;
    }
    this.watchSlowSender(events.some((e) => e.type !== 'head'));
    this.pump();
    // Bound what a client can make us hold while we wait for a Connector.
    if (this.queuedBytes > this.deps.limits.maxHeaderBytes * 4) this.pauseClient();
  }

  private onClientEnd(): void {
    this.clientEnded = true;
    // Closing: once our last bytes are out the socket closes by itself (both sides ended).
    if (this.closing) return;
    for (const e of this.requests.finish()) this.queue.push(e);
    this.pump();
    this.maybeFinish();
  }

  private pauseClient(): void {
    // Time we do not read must not count against the client.
    this.clearTimer('headerTimer');
    this.clearTimer('bodyTimer');
    this.client.pause();
  }

  /**
   * Slow senders: a head must arrive whole within headerTimeoutMs of its first byte; a body must
   * bring a byte at least every bodyTimeoutMs. Both only run while we read from the client.
   * `progressed`: body bytes (or a message end) just arrived.
   */
  private watchSlowSender(progressed: boolean): void {
    if (this.closing || this.closed || this.client.isPaused()) return;
    if (!this.requests.awaitingHead) this.clearTimer('headerTimer');
    else if (!this.headerTimer) {
      this.startTimer('headerTimer', this.deps.headerTimeoutMs, () => {
        this.log().warn(
          { listener: 'broker', client: this.clientAddress, code: ErrorCodes.HTTP_TIMEOUT, timeoutMs: this.deps.headerTimeoutMs },
          'request headers not complete in time; closing (slow sender)',
        );
        this.replyAndClose(408, 'Request Timeout', 'request headers took too long', 'header-timeout');
      });
    }
    const inBody = this.requests.inMessage && !this.requests.awaitingHead && !this.requests.failed;
    if (!inBody || progressed) this.clearTimer('bodyTimer');
    if (inBody && !this.bodyTimer) {
      this.startTimer('bodyTimer', this.deps.bodyTimeoutMs, () => {
        this.deps.stats.brokerEvent('body-timeout');
        this.log().warn(
          { listener: 'broker', client: this.clientAddress, code: ErrorCodes.HTTP_TIMEOUT, timeoutMs: this.deps.bodyTimeoutMs },
          'request body made no progress in time; closing (slow sender)',
        );
        this.replyAndClose(408, 'Request Timeout', 'request body too slow', 'body-timeout');
      });
    }
  }

  /** Starts one of the connection's timers (none when `ms` is 0: that timeout is off). */
  private startTimer(name: 'headerTimer' | 'bodyTimer' | 'responseTimer' | 'lingerTimer', ms: number, fire: () => void): void {
    this.clearTimer(name);
    if (ms <= 0) return;
    const timer = setTimeout(() => {
      this[name] = undefined;
      fire();
    }, ms);
    timer.unref();
    this[name] = timer;
  }

  private clearTimer(name: 'headerTimer' | 'bodyTimer' | 'responseTimer' | 'lingerTimer'): void {
    const t = this[name];
    if (t) clearTimeout(t);
    this[name] = undefined;
  }

  /** Forwards queued request events while the right upstream is ready. */
  private pump(): void {
    while (this.queue.length > 0 && this.waiting === undefined && !this.closed && !this.closing) {
      const e = this.queue[0]!;
      if (e.type === 'head') {
        if (!this.prepareUpstreamFor(e.head)) return;
        this.sendHead(e.head, e.bytes);
      } else if (e.type === 'data' || e.type === 'framing') {
        this.write(e.bytes);
      } else if (e.type === 'end') {
        const req = this.openRequest;
        this.openRequest = undefined;
        if (req) req.sent = true;
        if (this.upstream) this.armResponseTimer(this.upstream);
      } else if (e.type === 'error') {
        this.queue.shift();
        this.badRequest(e.code, e.message);
        return;
      }
      this.queue.shift();
      if ('bytes' in e) this.queuedBytes -= e.bytes.length;
    }
    this.resumeClientIfClear();
  }

  /**
   * The client is paused while requests queue up (waiting for a Connector) or while the upstream
   * is not draining its writes; it resumes only when neither holds.
   */
  private resumeClientIfClear(): void {
    if (this.closed || this.closing || this.waiting !== undefined) return;
    if (this.queuedBytes > this.deps.limits.maxHeaderBytes * 4) return;
    if (this.upstream?.socket?.writableNeedDrain) return;
    if (this.client.isPaused()) {
      this.client.resume();
      this.watchSlowSender(false);
    }
  }

  /**
   * Makes sure the upstream for this request is open and ready. Returns false (and arranges to be
   * called again) when it must first wait: for the current Connector to finish answering, or for
   * a new connection.
   */
  private prepareUpstreamFor(head: MessageHead): boolean {
    if (this.frontRoute === undefined) {
      if (head.method === 'CONNECT' || headerValues(head, 'upgrade').length > 0) {
        this.queue.shift();
        this.log().warn({ listener: 'broker', client: this.clientAddress, code: ErrorCodes.HTTP_MALFORMED, method: head.method }, 'protocol upgrade / CONNECT refused on the terminating broker listener');
        this.replyAndClose(501, 'Not Implemented', 'protocol upgrades are not supported here', 'bad-request');
        return false;
      }
      if (this.preparedHead !== head) {
        const lookup = this.deps.router.prepare(head, this.clientAddress);
        if (lookup) {
          this.waiting = 'lookup';
          void lookup.then(() => {
            if (this.closed || this.waiting !== 'lookup') return;
            this.preparedHead = head;
            this.waiting = undefined;
            this.pump();
          });
          return false;
        }
      }
      this.preparedHead = undefined;
      const route = this.deps.router.route(head, this.clientAddress, this.failedConnectors);
      if (!route.ok) {
        this.queue.shift();
        this.log().warn({ listener: 'broker', client: this.clientAddress, code: ErrorCodes.NO_CONNECTOR }, 'request refused: no Connector may take this client');
        this.deps.stats.refused('broker', 'no-eligible-connector');
        this.replyAndClose(503, 'Service Unavailable', 'no Connector available', 'no-connector');
        return false;
      }
      this.frontRoute = route;
    }
    const route = this.frontRoute;
    const up = this.upstream;
    if (up && !up.closed && up.connector.id === route.connector.id) return true;
    if (up && !up.closed && up.pending.length > 0) {
      // Responses come back in request order: let the current Connector finish first.
      this.waiting = 'drain';
      return false;
    }
    if (up) this.clearTimer('responseTimer');
    const kept = this.upstreams.get(route.connector.id);
    if (kept && !kept.closed && kept.socket) {
      // Switching back to a Connector this connection already talks to: no new handshake.
      this.upstream = kept;
      kept.lastUsed = this.deps.now();
      this.lastConnector = kept.connector.id;
      return true;
    }
    const switching = this.lastConnector !== undefined && this.lastConnector !== route.connector.id;
    if (switching && ++this.switchOpens > MAX_SWITCH_OPENS) {
      this.dropFrontRoute();
      this.queue.shift();
      this.deps.stats.brokerEvent('upstream-limit');
      this.log().warn(
        { listener: 'broker', client: this.clientAddress, code: ErrorCodes.CONNECTION_LIMIT, opened: this.upstreamOpens, limit: MAX_SWITCH_OPENS },
        'client connection switched Connectors more often than a login does; answering 421 and closing',
      );
      this.replyAndClose(421, 'Misdirected Request', 'too many Connector switches on one connection; retry on a new connection', 'upstream-limit');
      return false;
    }
    this.dropLeastRecentlyUsedIdle();
    this.openUpstream(route);
    return false;
  }

  /** Makes room for one more upstream: the idle one used longest ago goes. */
  private dropLeastRecentlyUsedIdle(): void {
    if (this.upstreams.size < MAX_KEPT_UPSTREAMS) return;
    let oldest: Upstream | undefined;
    for (const u of this.upstreams.values()) if (u.pending.length === 0 && u.socket && (!oldest || u.lastUsed < oldest.lastUsed)) oldest = u;
    if (oldest) this.releaseUpstream(oldest, 'end');
  }

  /**
   * Forgets the front request's route. Its lease (address routing takes one per decision) goes
   * back unless the upstream carrying this request holds it.
   */
  private dropFrontRoute(): void {
    const lease = this.frontRoute?.placement?.lease;
    if (lease && lease !== this.upstream?.lease) lease.release(this.deps.now());
    this.frontRoute = undefined;
  }

  private sendHead(head: MessageHead, bytes: Buffer): void {
    const up = this.upstream!;
    const route = this.frontRoute!;
    this.dropFrontRoute();
    this.failedConnectors.clear();
    this.requestCount++;
    const req: PendingRequest = {
      method: head.method!,
      closeAfter: head.closeAfter,
      exchange: { brokerXml: head.method === 'POST' && head.target?.split('?')[0] === BROKER_XML_PATH, logId: route.logId, lbCookieCurrent: route.lbCookieCurrent === true },
      sent: false,
    };
    up.pending.push(req);
    this.openRequest = req;
    up.framer.expectResponseTo(head.method!);
    this.write(bytes);
  }

  private write(bytes: Buffer): void {
    const up = this.upstream!;
    if (up.counters) up.counters.bytesIn += bytes.length;
    if (!up.socket!.write(bytes)) this.pauseClient(); // resumed by the upstream's 'drain' handler
  }

  private openUpstream(route: Extract<Route, { ok: true }>): void {
    const connector = route.connector;
    const up: Upstream = {
      connector,
      socket: undefined,
      framer: new Http1Framer('response', this.deps.limits),
      pending: [],
      responseBytesSent: 0,
      allocation: undefined,
      interim: false,
      held: undefined,
      counters: undefined,
      lease: undefined,
      openedAt: 0,
      closed: false,
      lastUsed: this.deps.now(),
    };
    this.upstream = up;
    this.upstreams.set(connector.id, up);
    this.upstreamOpens++;
    this.waiting = 'connect';
    this.lastConnector = connector.id;
    const connectStarted = performance.now();
    this.deps.connectUpstream(connector).then(
      (socket) => {
        if (this.closed || up.closed) {
          socket.destroy();
          route.placement?.lease.release(this.deps.now());
          return;
        }
        up.socket = socket;
        // Terminate mode: TCP connect plus the TLS handshake with the Connector.
        this.deps.stats.connected('broker', connector.id, performance.now() - connectStarted);
        up.openedAt = this.deps.now();
        up.counters = this.deps.stats.opened('broker', connector.id);
        // The route's lease becomes the upstream's: held while this Connector connection is open.
        up.lease = route.placement?.lease;
        socket.on('data', (chunk: Buffer) => this.onUpstreamData(up, chunk));
        socket.on('drain', () => this.resumeClientIfClear());
        socket.on('end', () => this.onUpstreamEnd(up));
        socket.on('error', (err: NodeJS.ErrnoException) => this.onUpstreamGone(up, err.code ?? err.message));
        socket.on('close', () => this.onUpstreamGone(up, undefined));
        this.waiting = undefined;
        this.pump();
      },
      (err: Error) => {
        up.closed = true;
        if (this.upstreams.get(connector.id) === up) this.upstreams.delete(connector.id);
        route.placement?.lease.release(this.deps.now());
        if (this.closed) return;
        this.waiting = undefined;
        const code = (err as { plbCode?: string }).plbCode ?? ErrorCodes.UPSTREAM_CONNECT;
        if (code === ErrorCodes.FD_EXHAUSTED) {
          // pcoip-lb is out of descriptors: not the Connector's failure (no passive-health count); no other Connector would fare better.
          this.deps.stats.refused('broker', 'fd-exhausted');
          this.log().warn({ listener: 'broker', client: this.clientAddress, connector: connector.id, code, err: err.message }, 'connect to Connector failed: pcoip-lb is out of file descriptors');
          this.frontRoute = undefined; // its lease was released above
          this.queue.shift();
          this.replyAndClose(503, 'Service Unavailable', 'pcoip-lb is out of file descriptors', 'connect-failed');
          return;
        }
        this.deps.stats.connectFailed(connector.id);
        this.deps.onConnectFailure?.(connector.id);
        this.log().warn({ listener: 'broker', client: this.clientAddress, connector: connector.id, code, err: err.message }, 'connect to Connector failed');
        // A client placed just now has no session there yet: another Connector may serve it.
        // A session (cookie, log id, pinned address) lives on its Connector: moving it would only fail later.
        const movable = (route.via === 'address' || route.via === 'session') && route.placement?.reason !== 'pinned';
        this.frontRoute = undefined; // its lease was released above
        if (movable) {
          this.failedConnectors.add(connector.id);
          this.pump();
          return;
        }
        this.queue.shift();
        this.replyAndClose(502, 'Bad Gateway', 'the Connector for this session is not reachable', 'connect-failed');
      },
    );
  }

  /**
   * Closes an upstream we are done with. 'end' lets it finish cleanly (no answer owed); 'destroy'
   * is for one holding a half-sent request, whose Connector would otherwise wait for the rest.
   */
  private releaseUpstream(up: Upstream, how: 'end' | 'destroy'): void {
    if (up.closed) return;
    up.closed = true;
    if (this.upstreams.get(up.connector.id) === up) this.upstreams.delete(up.connector.id);
    if (up === this.upstream) this.clearTimer('responseTimer');
    if (how === 'destroy') up.socket?.destroy();
    else {
      up.socket?.end();
      up.socket?.destroySoon?.();
    }
    this.upstreamClosed(up);
  }

  private releaseAllUpstreams(how: 'end' | 'destroy'): void {
    for (const u of [...this.upstreams.values()]) this.releaseUpstream(u, how);
    if (this.upstream) this.releaseUpstream(this.upstream, how);
  }

  private upstreamClosed(up: Upstream): void {
    if (up.counters) this.deps.stats.closed('broker', up.connector.id, this.deps.now() - up.openedAt);
    up.lease?.release(this.deps.now());
    up.counters = undefined;
    up.lease = undefined;
  }

  /**
   * While the current Connector owes the answer to a fully sent request, it must send a byte at
   * least every responseTimeoutMs (not counted while the client is not reading our writes).
   */
  private armResponseTimer(up: Upstream): void {
    this.clearTimer('responseTimer');
    if (this.deps.responseTimeoutMs <= 0 || this.closed || up.closed || up !== this.upstream) return;
    if (!up.pending[0]?.sent || up.socket?.isPaused()) return;
    this.startTimer('responseTimer', this.deps.responseTimeoutMs, () => {
      this.deps.stats.brokerEvent('response-timeout');
      this.log().warn(
        { listener: 'broker', client: this.clientAddress, connector: up.connector.id, code: ErrorCodes.UPSTREAM_TIMEOUT, timeoutMs: this.deps.responseTimeoutMs },
        'Connector did not answer in time; answering 504',
      );
      up.pending = [];
      const started = up.responseBytesSent > 0;
      this.releaseUpstream(up, 'destroy');
      if (started) this.close('response-timeout', 'Connector stalled mid-response');
      else this.replyAndClose(504, 'Gateway Timeout', 'the Connector did not answer in time', 'response-timeout');
    });
  }

  // ---- Connector → client -------------------------------------------------------------------

  private onUpstreamData(up: Upstream, chunk: Buffer): void {
    // A released upstream's bytes are never read as an answer to anything.
    if (this.closed || up.closed) return;
    if (up.counters) up.counters.bytesOut += chunk.length;
    if (up.pending.length === 0) return this.unsolicited(up, 'bytes from a Connector connection that owes no response');
    if (up === this.upstream) this.armResponseTimer(up);
    this.handleResponseEvents(up, up.framer.push(chunk));
  }

  /**
   * An upstream sent bytes when no answer was owed (an idle keep-alive the Connector timed out
   * with a 408, or garbage after a response): they answer nothing the client asked, so they are
   * dropped with that upstream; the next request opens or picks another.
   */
  private unsolicited(up: Upstream, what: string): void {
    this.deps.stats.brokerEvent('unsolicited-response');
    unsolicitedLog.maybe(this.deps.now(), (suppressed) =>
      this.log().info({ listener: 'broker', client: this.clientAddress, connector: up.connector.id, code: ErrorCodes.UPSTREAM_PROTOCOL, suppressed }, `${what}; closed it, the client's exchange is not affected`),
    );
    this.releaseUpstream(up, 'destroy');
  }

  private onUpstreamEnd(up: Upstream): void {
    if (this.closed || up.closed) return;
    this.handleResponseEvents(up, up.framer.finish());
    this.onUpstreamGone(up, undefined);
  }

  private handleResponseEvents(up: Upstream, events: FramerEvent[]): void {
    for (const e of events) {
      if (this.closed || up.closed) return;
      switch (e.type) {
        case 'head': {
          up.interim = e.head.interim;
          const req = e.head.interim ? undefined : up.pending[0];
          const line = req ? this.deps.router.lbCookieLine(up.connector, req.exchange) : undefined;
          const bytes = line ? withHeaderLine(e.bytes, line) : e.bytes;
          up.allocation = req?.exchange.brokerXml && e.head.status === 200 && !isCompressed(e.head) ? new AllocateResponseParser() : undefined;
          const to = up.allocation ? this.deps.rewriteTarget?.(up.connector) : undefined;
          if (to) up.held = { head: bytes, chunked: isChunked(e.head), raw: [bytes], body: [], to, success: false };
          else this.toClient(up, bytes);
          if (!req) break;
          const logId = req.exchange.logId;
          const mayLearn = logId !== undefined && (this.learnedLogIds.has(logId) || this.learnedLogIds.size < MAX_LOG_IDS_PER_CONNECTION);
          if (this.deps.router.learnFromResponse(e.head, up.connector, req.exchange, mayLearn) && logId !== undefined) this.learnedLogIds.add(logId);
          if (e.head.closeAfter) req.closeAfter = true;
          break;
        }
        case 'data':
          if (up.held) (up.held.raw.push(e.bytes), up.held.body.push(e.bytes));
          else this.toClient(up, e.bytes);
          this.feedAllocation(up, e.bytes);
          break;
        case 'framing':
          if (up.held) up.held.raw.push(e.bytes);
          else this.toClient(up, e.bytes);
          break;
        case 'end':
          if (up.interim) up.interim = false;
          else {
            if (up.allocation) this.onAllocationResult(up, up.allocation.end());
            if (up.held) this.releaseHeld(up, true);
            this.responseComplete(up);
          }
          break;
        case 'error':
          // Garbage after the last owed response answers nothing: only that upstream goes.
          if (up.pending.length === 0) return this.unsolicited(up, `malformed bytes after the last response (${e.code})`);
          this.log().warn(
            { listener: 'broker', client: this.clientAddress, connector: up.connector.id, code: ErrorCodes.UPSTREAM_PROTOCOL, reason: e.code, err: e.message },
            'malformed HTTP response from Connector',
          );
          // The request it failed to answer is answered by us (or the connection is cut mid-response).
          up.pending = [];
          this.releaseUpstream(up, 'destroy');
          if (up.responseBytesSent === 0) this.replyAndClose(502, 'Bad Gateway', 'the Connector sent a malformed response', 'bad-response');
          else this.close('bad-response', e.message);
          return;
      }
    }
  }

  private toClient(up: Upstream, bytes: Buffer): void {
    up.responseBytesSent += bytes.length;
    // Paused until the client drains (one 'drain' listener for the connection, set in the constructor).
    if (!this.client.write(bytes) && up.socket) {
      up.socket.pause();
      if (up === this.upstream) this.clearTimer('responseTimer');
    }
  }

  private feedAllocation(up: Upstream, bytes: Buffer): void {
    if (!up.allocation || up.allocation.done) return;
    this.onAllocationResult(up, up.allocation.push(bytes));
  }

  private onAllocationResult(up: Upstream, result: ReturnType<AllocateResponseParser['push']>): void {
    if (up.held && result.status !== 'need-more') {
      // Only a successful allocation is worth holding the response for; anything else streams on.
      if (result.status === 'allocation' && result.target.resultId === ALLOC_SUCCESSFUL) up.held.success = true;
      else this.releaseHeld(up, false);
    }
    if (result.status === 'allocation') this.deps.router.learnAllocation(result.target, up.connector, this.clientAddress, up.pending[0]?.exchange.logId);
    else if (result.status === 'error')
      this.log().info({ listener: 'broker', client: this.clientAddress, connector: up.connector.id, reason: result.reason, err: result.message }, 'broker XML response not understood; forwarded as is, nothing learned');
    if (result.status !== 'need-more') up.allocation = undefined;
  }

  /** Sends a held response: rewritten when complete and a successful allocation, else as received. */
  private releaseHeld(up: Upstream, complete: boolean): void {
    const held = up.held!;
    up.held = undefined;
    const body = held.success && complete ? rewriteAllocationBody(Buffer.concat(held.body).toString('utf8'), held.to) : undefined;
    if (body === undefined) {
      for (const part of held.raw) this.toClient(up, part);
      return;
    }
    this.toClient(up, reframeResponse(held.head, held.chunked, Buffer.from(body, 'utf8')));
    this.log().info(
      { listener: 'broker', client: this.clientAddress, connector: up.connector.id, target: `${held.to.address}:${held.to.port}` },
      'allocation target rewritten (experimental rewriteTarget)',
    );
  }

  private responseComplete(up: Upstream): void {
    if (up.allocation) this.onAllocationResult(up, up.allocation.end());
    up.allocation = undefined;
    up.responseBytesSent = 0;
    const req = up.pending.shift();
    if (this.afterDrain && up.pending.length <= this.afterDrain.until) {
      const reply = this.afterDrain.send;
      this.afterDrain = undefined;
      reply();
      return;
    }
    if (req?.closeAfter) {
      // HTTP/1.0 or Connection: close: this exchange ends the connection, as the peers asked.
      this.closing = true;
      this.endClient();
      this.releaseAllUpstreams('end');
      return;
    }
    this.armResponseTimer(up);
    if (up.pending.length === 0 && this.waiting === 'drain') {
      this.waiting = undefined;
      this.pump();
    }
    this.maybeFinish();
  }

  private onUpstreamGone(up: Upstream, error: string | undefined): void {
    if (up.closed) return;
    up.closed = true;
    if (this.upstreams.get(up.connector.id) === up) this.upstreams.delete(up.connector.id);
    if (up === this.upstream) this.clearTimer('responseTimer');
    this.upstreamClosed(up);
    if (this.closed || up !== this.upstream) return; // an idle kept upstream closed by its Connector: nothing owed
    if (this.afterDrain) {
      const reply = this.afterDrain.send;
      this.afterDrain = undefined;
      if (up.responseBytesSent === 0) return reply();
      return this.close('connector-error', error);
    }
    if (up.pending.length > 0) {
      // The Connector went away owing answers: the client cannot be answered correctly any more.
      this.log().warn({ listener: 'broker', client: this.clientAddress, connector: up.connector.id, code: ErrorCodes.UPSTREAM_PROTOCOL, err: error ?? 'closed' }, 'Connector closed the connection before answering');
      if (up.responseBytesSent === 0) this.replyAndClose(502, 'Bad Gateway', 'the Connector closed the connection', 'connector-error');
      else this.close('connector-error', error);
      return;
    }
    // An idle keep-alive closed by the Connector: the next request opens a new connection.
    if (this.waiting === 'drain') {
      this.waiting = undefined;
      this.pump();
    }
  }

  // ---- endings ---------------------------------------------------------------------------------

  private badRequest(code: string, message: string): void {
    this.log().warn({ listener: 'broker', client: this.clientAddress, code: ErrorCodes.HTTP_MALFORMED, reason: code, err: message }, 'malformed HTTP request; answering 400');
    this.replyAndClose(400, 'Bad Request', `malformed request: ${code}`, 'bad-request');
  }

  /**
   * Answers the client ourselves and closes. Earlier requests still owed a response are answered
   * first: the error reply waits for them so the client sees responses in order. A request whose
   * head already went upstream but whose body did not (a malformed or too slow body) is never
   * answered by the Connector: the reply does not wait for it, and its upstream is destroyed.
   */
  private replyAndClose(status: number, text: string, body: string, reason: CloseReason): void {
    if (this.closed || this.closing) return;
    this.closing = true;
    this.reason ??= reason;
    this.queue = [];
    this.queuedBytes = 0;
    this.pauseClient();
    const up = this.upstream;
    const halfSent = this.openRequest !== undefined && up !== undefined && !up.closed && up.pending.includes(this.openRequest);
    const send = () => {
      if (this.closed) return;
      const payload = `${body}\n`;
      this.releaseAllUpstreams(halfSent ? 'destroy' : 'end');
      this.endClient(`HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(payload)}\r\nConnection: close\r\n\r\n${payload}`);
    };
    const until = halfSent ? 1 : 0;
    if (up && !up.closed && up.pending.length > until) this.afterDrain = { send, until };
    else send();
  }

  /**
   * Ends our side, then reads and discards until the client closes its side — for at most
   * LINGER_MS, so a client that never closes does not hold the connection (nor the answer, which
   * an immediate reset could destroy before the client read it).
   */
  private endClient(last?: string): void {
    this.clearTimer('headerTimer');
    this.clearTimer('bodyTimer');
    if (last === undefined) this.client.end();
    else this.client.end(last);
    this.startTimer('lingerTimer', LINGER_MS, () => this.close(this.reason ?? 'client-closed'));
    this.client.resume();
  }

  /** Ends the connection once the client is done sending and every response is out. */
  private maybeFinish(): void {
    if (!this.clientEnded || this.closed || this.closing) return;
    const owed = this.upstream && !this.upstream.closed ? this.upstream.pending.length : 0;
    if (owed === 0 && this.queue.length === 0) {
      this.client.end();
      this.releaseAllUpstreams('end');
    }
  }

  private close(reason: CloseReason, error?: string): void {
    if (this.closed) return;
    this.closed = true;
    this.reason ??= reason;
    for (const t of ['headerTimer', 'bodyTimer', 'responseTimer', 'lingerTimer'] as const) this.clearTimer(t);
    // A route chosen for a request that never went out (waiting for a connect or a drain).
    if (this.waiting !== 'connect') this.dropFrontRoute();
    this.client.destroy();
    for (const up of new Set([...this.upstreams.values(), ...(this.upstream ? [this.upstream] : [])])) {
      if (up.closed) continue;
      up.closed = true;
      up.socket?.destroy();
      this.upstreamClosed(up);
    }
    this.upstreams.clear();
    this.log().info(
      {
        listener: 'broker',
        client: this.clientAddress,
        connector: this.lastConnector,
        requests: this.requestCount,
        bytesIn: this.client.bytesRead,
        bytesOut: this.client.bytesWritten,
        durationMs: this.deps.now() - this.startedAt,
        reason: this.reason,
        ...(this.upstreamOpens > 1 ? { upstreams: this.upstreamOpens } : {}),
        ...(error ? { err: error } : {}),
      },
      'flow closed',
    );
    this.deps.onClosed(this);
  }
}

/** A response head with one more header line (CRLF included) before its blank line; nothing else changes. */
function withHeaderLine(head: Buffer, line: string): Buffer {
  return Buffer.concat([head.subarray(0, head.length - 2), Buffer.from(line, 'latin1'), head.subarray(head.length - 2)]);
}

/** A compressed body cannot be read as XML; it is forwarded all the same. */
function isCompressed(head: MessageHead): boolean {
  return headerValues(head, 'content-encoding').some((v) => v.toLowerCase() !== 'identity');
}
