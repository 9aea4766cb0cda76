import { performance } from 'node:perf_hooks';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../logger.ts';
import type { ConnectorView } from '../pool/pool.ts';
import type { Lease } from '../balance/placer.ts';
import { ALLOC_SUCCESSFUL, AllocateResponseParser } from '../pcoip/allocate-response.ts';
import { reframeResponse, rewriteAllocationBody, type RewriteTo } from '../pcoip/rewrite-target.ts';
import { ErrorCodes } from '../errors.ts';
import type { FlowStats, ListenerCounters } from './flow-stats.ts';
import { Http1Framer, headerValues, type FramerEvent, type FramerLimits, type MessageHead } from './http1-framing.ts';
import { BROKER_XML_PATH, type BrokerRouter, type Route } from './broker-routing.ts';

/**
 * One client connection on the terminating broker listener. Requests are framed as they arrive;
 * each is routed on its own (cookie → log id → address) and forwarded byte for byte to that
 * Connector over one re-encrypted connection. A request for another Connector waits until the
 * current Connector answered everything sent to it (responses must come back in order), then the
 * old upstream is closed and a new one opened. Responses are framed too, to learn the session
 * cookie and the allocation, and forwarded byte for byte.
 */

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
  /** A POST to the broker's XML endpoint: its response body may be an allocate-resource-resp. */
  brokerXml: boolean;
  closeAfter: boolean;
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
  | 'shutdown';

export class BrokerConnection {
  readonly clientAddress: string;
  private readonly client: TLSSocket;
  private readonly deps: BrokerConnectionDeps;
  private readonly requests: Http1Framer;
  /** Request events not yet forwarded, in order (waiting for an upstream switch or connect). */
  private queue: FramerEvent[] = [];
  private queuedBytes = 0;
  private upstream: Upstream | undefined;
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
  private headerTimer: NodeJS.Timeout | undefined;
  private clientEnded = false;
  /** After a 'Connection: close' exchange or an error reply: end once responses are out. */
  private closing = false;
  private closed = false;
  private reason: CloseReason | undefined;
  private readonly startedAt: number;
  private requestCount = 0;
  private lastConnector: string | undefined;
  /** An error reply waiting for the current Connector to finish answering earlier requests. */
  private afterDrain: (() => void) | undefined;

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
      const socket = this.upstream?.socket;
      if (socket && !this.upstream!.closed && socket.isPaused()) socket.resume();
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

  private log(): Logger {
    return this.deps.logger;
  }

  // ---- client → Connector -------------------------------------------------------------------

  private onClientData(chunk: Buffer): void {
    if (this.closed || this.closing) return;
    const events = this.requests.push(chunk);
    this.watchSlowSender();
    for (const e of events) {
      this.queue.push(e);
      if ('bytes' in e) this.queuedBytes += e.bytes.length;
    }
    this.pump();
    // Bound what a client can make us hold while we wait for a Connector.
    if (this.queuedBytes > this.deps.limits.maxHeaderBytes * 4) this.client.pause();
  }

  private onClientEnd(): void {
    this.clientEnded = true;
    for (const e of this.requests.finish()) this.queue.push(e);
    this.pump();
    this.maybeFinish();
  }

  /** A head must arrive whole within headerTimeoutMs of its first byte. */
  private watchSlowSender(): void {
    if (!this.requests.awaitingHead) {
      if (this.headerTimer) clearTimeout(this.headerTimer);
      this.headerTimer = undefined;
      return;
    }
    if (this.headerTimer || this.deps.headerTimeoutMs <= 0) return;
    this.headerTimer = setTimeout(() => {
      this.headerTimer = undefined;
      this.log().warn(
        { listener: 'broker', client: this.clientAddress, code: ErrorCodes.HTTP_TIMEOUT, timeoutMs: this.deps.headerTimeoutMs },
        'request headers not complete in time; closing (slow sender)',
      );
      this.replyAndClose(408, 'Request Timeout', 'request headers took too long', 'header-timeout');
    }, this.deps.headerTimeoutMs);
    this.headerTimer.unref();
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
    if (this.client.isPaused()) this.client.resume();
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
    if (up) this.releaseUpstream(up);
    this.openUpstream(route);
    return false;
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
    this.dropFrontRoute();
    this.failedConnectors.clear();
    this.requestCount++;
    up.pending.push({ method: head.method!, brokerXml: head.method === 'POST' && head.target?.split('?')[0] === BROKER_XML_PATH, closeAfter: head.closeAfter });
    up.framer.expectResponseTo(head.method!);
    this.write(bytes);
  }

  private write(bytes: Buffer): void {
    const up = this.upstream!;
    if (up.counters) up.counters.bytesIn += bytes.length;
    if (!up.socket!.write(bytes)) this.client.pause(); // resumed by the upstream's 'drain' handler
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
    };
    this.upstream = up;
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
        const movable = route.via === 'address' && route.placement?.reason !== 'pinned';
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

  /** Closes an upstream we are done with (no responses owed). */
  private releaseUpstream(up: Upstream): void {
    if (up.closed) return;
    up.closed = true;
    up.socket?.end();
    up.socket?.destroySoon?.();
    this.upstreamClosed(up);
  }

  private upstreamClosed(up: Upstream): void {
    if (up.counters) this.deps.stats.closed('broker', up.connector.id, this.deps.now() - up.openedAt);
    up.lease?.release(this.deps.now());
    up.counters = undefined;
    up.lease = undefined;
  }

  // ---- Connector → client -------------------------------------------------------------------

  private onUpstreamData(up: Upstream, chunk: Buffer): void {
    if (this.closed) return;
    if (up.counters) up.counters.bytesOut += chunk.length;
    this.handleResponseEvents(up, up.framer.push(chunk));
  }

  private onUpstreamEnd(up: Upstream): void {
    if (this.closed) return;
    this.handleResponseEvents(up, up.framer.finish());
    this.onUpstreamGone(up, undefined);
  }

  private handleResponseEvents(up: Upstream, events: FramerEvent[]): void {
    for (const e of events) {
      if (this.closed) return;
      switch (e.type) {
        case 'head': {
          up.interim = e.head.interim;
          const req = e.head.interim ? undefined : up.pending[0];
          up.allocation = req?.brokerXml && e.head.status === 200 && !isCompressed(e.head) ? new AllocateResponseParser() : undefined;
          const to = up.allocation ? this.deps.rewriteTarget?.(up.connector) : undefined;
          if (to) up.held = { head: e.bytes, chunked: isChunked(e.head), raw: [e.bytes], body: [], to, success: false };
          else this.toClient(up, e.bytes);
          if (e.head.interim) break;
          this.deps.router.learnFromResponse(e.head, up.connector);
          if (e.head.closeAfter && req) req.closeAfter = true;
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
          this.log().warn(
            { listener: 'broker', client: this.clientAddress, connector: up.connector.id, code: ErrorCodes.UPSTREAM_PROTOCOL, reason: e.code, err: e.message },
            'malformed HTTP response from Connector',
          );
          // The request it failed to answer is answered by us (or the connection is cut mid-response).
          up.pending = [];
          this.releaseUpstream(up);
          if (up.responseBytesSent === 0) this.replyAndClose(502, 'Bad Gateway', 'the Connector sent a malformed response', 'bad-response');
          else this.close('bad-response', e.message);
          return;
      }
    }
  }

  private toClient(up: Upstream, bytes: Buffer): void {
    up.responseBytesSent += bytes.length;
    // Paused until the client drains (one 'drain' listener for the connection, set in the constructor).
    if (!this.client.write(bytes) && up.socket) up.socket.pause();
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
    if (result.status === 'allocation') this.deps.router.learnAllocation(result.target, up.connector, this.clientAddress);
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
    if (up.pending.length === 0 && this.afterDrain) {
      const reply = this.afterDrain;
      this.afterDrain = undefined;
      reply();
      return;
    }
    if (req?.closeAfter) {
      // HTTP/1.0 or Connection: close: this exchange ends the connection, as the peers asked.
      this.closing = true;
      this.client.end();
      this.releaseUpstream(up);
      return;
    }
    if (up.pending.length === 0 && this.waiting === 'drain') {
      this.waiting = undefined;
      this.pump();
    }
    this.maybeFinish();
  }

  private onUpstreamGone(up: Upstream, error: string | undefined): void {
    if (up.closed) return;
    up.closed = true;
    this.upstreamClosed(up);
    if (this.closed) return;
    if (this.afterDrain) {
      const reply = this.afterDrain;
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
   * first: the error reply waits for them so the client sees responses in order.
   */
  private replyAndClose(status: number, text: string, body: string, reason: CloseReason): void {
    if (this.closed || this.closing) return;
    this.closing = true;
    this.reason ??= reason;
    this.queue = [];
    this.queuedBytes = 0;
    this.client.pause();
    const send = () => {
      if (this.closed) return;
      const payload = `${body}\n`;
      this.client.end(`HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(payload)}\r\nConnection: close\r\n\r\n${payload}`);
      if (this.upstream) this.releaseUpstream(this.upstream);
    };
    const up = this.upstream;
    if (up && !up.closed && up.pending.length > 0) this.afterDrain = send;
    else send();
  }

  /** Ends the connection once the client is done sending and every response is out. */
  private maybeFinish(): void {
    if (!this.clientEnded || this.closed) return;
    const owed = this.upstream && !this.upstream.closed ? this.upstream.pending.length : 0;
    if (owed === 0 && this.queue.length === 0) {
      this.client.end();
      if (this.upstream) this.releaseUpstream(this.upstream);
    }
  }

  private close(reason: CloseReason, error?: string): void {
    if (this.closed) return;
    this.closed = true;
    this.reason ??= reason;
    if (this.headerTimer) clearTimeout(this.headerTimer);
    // A route chosen for a request that never went out (waiting for a connect or a drain).
    if (this.waiting !== 'connect') this.dropFrontRoute();
    this.client.destroy();
    const up = this.upstream;
    if (up && !up.closed) {
      up.closed = true;
      up.socket?.destroy();
      this.upstreamClosed(up);
    }
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
        ...(error ? { err: error } : {}),
      },
      'flow closed',
    );
    this.deps.onClosed(this);
  }
}

function isChunked(head: MessageHead): boolean {
  return headerValues(head, 'transfer-encoding').some((v) => v.toLowerCase().includes('chunked'));
}

/** A compressed body cannot be read as XML; it is forwarded all the same. */
function isCompressed(head: MessageHead): boolean {
  return headerValues(head, 'content-encoding').some((v) => v.toLowerCase() !== 'identity');
}
