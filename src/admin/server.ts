import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isIP } from 'node:net';
import type { Registry } from 'prom-client';
import type { AdminConfig, ConnectorState } from '../config/schema.ts';
import { ErrorCodes, type ErrorCode } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { mayTakeNewClients } from '../pool/pool.ts';
import { unmapIpv4 } from '../util/address.ts';
import type { AdminView } from './view.ts';
import { createMetrics } from './metrics.ts';
import { STATUS_PAGE_HTML } from './page.ts';
import { buildConnectorStatus, buildStatus, connectorsWithCounters } from './status.ts';
import { bearerMatches, isLoopbackHost } from './token.ts';
import { listenTcp } from '../proxy/listen.ts';
import { sessionsAnswer } from './sessions-api.ts';
import { RateLimitedLog } from '../logger.ts';
import { fdExhaustedMessage, ownExhaustion } from '../util/fd-exhaustion.ts';
import { ThroughputHistory } from './history.ts';

/**
 * The admin HTTP server: the operator's view (`/`, `/status`, `/history`, `/metrics`,
 * `/affinity/:client`), the operator's hands (`POST /connectors/:id/drain|enable|maint`,
 * `POST /reload`) and the probes: `/livez` (the process serves: restart it if not) and
 * `/readyz` (it can place new clients: route around it if not; `/healthz` is the same).
 * Errors are JSON `{ "error": { "code": "PLB_E_…", "message": "…" } }`.
 *
 * Protection: with a token, every request but the probes and the (data-free) page needs
 * `Authorization: Bearer <token>`. Without one (loopback only), requests must name a loopback
 * Host (no DNS rebinding from a web page). A browser POST must come from this server's own
 * origin — scheme, host and port — (no cross-site drain from a page the operator happens to
 * visit, not even one served by another port of the same host).
 *
 * Its own limits: at most ADMIN_MAX_CONNECTIONS connections (more are closed at once), each
 * closed after ADMIN_IDLE_TIMEOUT_MS without a byte, so idle sockets cannot eat the process's
 * file descriptors.
 */
export const ADMIN_MAX_CONNECTIONS = 64;
export const ADMIN_IDLE_TIMEOUT_MS = 5_000;
const ACTIONS: Record<string, ConnectorState> = { drain: 'drain', enable: 'active', maint: 'maint' };

type Handler = (req: IncomingMessage, res: ServerResponse, params: string[]) => void | Promise<void>;

interface Route {
  readonly pattern: RegExp;
  readonly methods: Readonly<Record<string, Handler>>;
  /** Served without a token (data-free or needed by probes). */
  readonly open?: boolean;
}

export class AdminServer {
  private readonly server: Server;
  private readonly app: AdminView;
  private readonly config: AdminConfig;
  private readonly token: string | undefined;
  private readonly logger: Logger;
  private readonly metrics: Registry;
  private readonly routes: readonly Route[];
  private readonly history: ThroughputHistory;
  private readonly fdExhaustedLog = new RateLimitedLog(10_000);
  private readonly droppedLog = new RateLimitedLog();
  /** Connections the admin server could not accept because the process was out of descriptors. */
  private fdExhausted = 0;

  constructor(app: AdminView, config: AdminConfig, token: string | undefined, logger: Logger) {
    this.app = app;
    this.config = config;
    this.token = token;
    this.logger = logger;
    this.metrics = createMetrics(app, { adminFdExhausted: () => this.fdExhausted });
    this.history = new ThroughputHistory({
      bytes: () => connectorsWithCounters(app).map((id) => [id, totalBytes(app, id)]),
      events: () => ({
        refused: [...app.stats.refusals.values()].reduce((a, b) => a + b, 0),
        connectFailures: [...app.stats.connectFailures.values()].reduce((a, b) => a + b, 0),
      }),
    });
    const readyz: Handler = (_q, res) => this.readyz(res);
    this.routes = [
      { pattern: /^\/$/, methods: { GET: (_q, res) => send(res, 200, STATUS_PAGE_HTML, 'text/html; charset=utf-8') }, open: true },
      { pattern: /^\/livez$/, methods: { GET: (_q, res) => this.livez(res) }, open: true },
      { pattern: /^\/readyz$/, methods: { GET: readyz }, open: true },
      // The name before /livez and /readyz existed; it always meant "can place new clients".
      { pattern: /^\/healthz$/, methods: { GET: readyz }, open: true },
      { pattern: /^\/status$/, methods: { GET: (_q, res) => sendJson(res, 200, buildStatus(this.app)) } },
      { pattern: /^\/history$/, methods: { GET: (_q, res) => sendJson(res, 200, this.history.toJSON()) } },
      { pattern: /^\/metrics$/, methods: { GET: (_q, res) => this.sendMetrics(res) } },
      { pattern: /^\/connectors\/([^/]+)$/, methods: { GET: (_q, res, [id]) => this.connector(res, id!) } },
      { pattern: /^\/connectors\/([^/]+)\/(drain|enable|maint)$/, methods: { POST: (req, res, [id, action]) => this.setState(req, res, id!, action!) } },
      { pattern: /^\/affinity\/([^/]+)$/, methods: { GET: (_q, res, [client]) => this.affinity(res, client!) } },
      { pattern: /^\/sessions$/, methods: { GET: (req, res) => sessionsAnswer(this.app.sessionViews, req.url).then((a) => sendJson(res, a.status, a.body)) } },
      { pattern: /^\/reload$/, methods: { POST: (req, res) => this.reload(req, res) } },
    ];
    this.server = createServer((req, res) => void this.handle(req, res));
    // Admin requests are tiny; do not let an idle or slow client hold a socket (or many of them
    // hold the process's descriptors): a capped number of connections, each closed after a
    // short silence — including one that never sends a byte.
    this.server.maxConnections = ADMIN_MAX_CONNECTIONS;
    this.server.timeout = ADMIN_IDLE_TIMEOUT_MS;
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 15_000;
    this.server.keepAliveTimeout = ADMIN_IDLE_TIMEOUT_MS;
    this.server.on('clientError', (_err, socket) => socket.destroy());
    this.server.on('drop', (data) =>
      this.droppedLog.maybe(Date.now(), (suppressed) =>
        this.logger.warn(
          { listener: 'admin', code: ErrorCodes.CONNECTION_LIMIT, maxConnections: ADMIN_MAX_CONNECTIONS, remote: data?.remoteAddress, suppressed },
          `admin connection refused: ${ADMIN_MAX_CONNECTIONS} admin connections are open`,
        ),
      ),
    );
  }

  async listen(): Promise<AddressInfo> {
    const address = await listenTcp(this.server, 'admin.bind', this.config.bind, { onLaterError: (err) => this.onServerError(err) });
    this.history.start();
    return address;
  }

  /** accept() at the fd limit (libuv accepts and closes the connection) is the process's problem: one line per 10 s. */
  private onServerError(err: Error): void {
    const errno = ownExhaustion(err);
    if (!errno) return void this.logger.error({ err }, 'admin server error');
    this.fdExhausted++;
    this.fdExhaustedLog.maybe(Date.now(), (suppressed) =>
      this.logger.error({ code: ErrorCodes.FD_EXHAUSTED, errno, source: 'admin', suppressed }, fdExhaustedMessage(errno, 'admin connections are closed until descriptors are free')),
    );
  }

  address(): AddressInfo | undefined {
    return (this.server.address() as AddressInfo | null) ?? undefined;
  }

  close(): Promise<void> {
    this.history.stop();
    return new Promise((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Request bodies are never needed; read and discard them so keep-alive works.
    req.resume();
    const path = (req.url ?? '/').split('?')[0]!;
    try {
      const route = this.routes.find((r) => r.pattern.test(path));
      if (!route) return sendError(res, 404, ErrorCodes.ADMIN_NOT_FOUND, `no such admin endpoint: ${path}`);
      if (!this.token && !isLoopbackHost(hostOf(req.headers.host))) {
        return sendError(res, 403, ErrorCodes.ADMIN_FORBIDDEN, 'the Host header must name a loopback address (this admin server has no token)');
      }
      if (this.token && !route.open && !bearerMatches(req.headers.authorization, this.token)) {
        res.setHeader('www-authenticate', 'Bearer realm="pcoip-lb"');
        return sendError(res, 401, ErrorCodes.ADMIN_UNAUTHORIZED, 'send the admin token as "Authorization: Bearer <token>"');
      }
      const handler = route.methods[req.method ?? ''] ?? (req.method === 'HEAD' ? route.methods.GET : undefined);
      if (!handler) {
        res.setHeader('allow', Object.keys(route.methods).join(', '));
        return sendError(res, 405, ErrorCodes.ADMIN_METHOD, `${req.method} is not allowed on ${path}; use ${Object.keys(route.methods).join(' or ')}`);
      }
      if (req.method === 'POST' && req.headers.origin !== undefined) {
        const origin = checkOrigin(req.headers.origin, req.headers.host);
        if (origin === 'malformed') return sendError(res, 400, ErrorCodes.ADMIN_REQUEST, 'malformed Origin header');
        if (origin === 'cross-origin') return sendError(res, 403, ErrorCodes.ADMIN_FORBIDDEN, 'cross-origin POST refused (Origin must be this server: same scheme, host and port)');
      }
      let params: string[];
      try {
        params = route.pattern.exec(path)!.slice(1).map((p) => decodeURIComponent(p));
      } catch {
        return sendError(res, 400, ErrorCodes.ADMIN_REQUEST, `malformed percent-encoding in ${path}`);
      }
      await handler(req, res, params);
    } catch (err) {
      this.logger.error({ err, path }, 'admin request failed');
      if (!res.headersSent) sendError(res, 500, ErrorCodes.ADMIN_REQUEST, 'internal error; see the proxy log');
      else res.destroy();
    }
  }

  /**
   * Liveness: the process runs and serves (this answer needs its event loop). Deliberately
   * blind to the Connectors: restarting the proxy because they are down would only cut every
   * live session.
   */
  private livez(res: ServerResponse): void {
    sendJson(res, 200, { status: 'ok', uptimeSeconds: Math.round((Date.now() - this.app.startedAt) / 1000) });
  }

  /** Readiness: 200 while at least one Connector takes new clients, else 503 (a front LB or DNS can route around this instance). */
  private readyz(res: ServerResponse): void {
    const taking = this.app.pool.all().filter(mayTakeNewClients).length;
    if (taking === 0) return sendError(res, 503, ErrorCodes.NO_CONNECTOR, 'no Connector may take new clients');
    sendJson(res, 200, { status: 'ok', connectorsTakingNewClients: taking });
  }

  private async sendMetrics(res: ServerResponse): Promise<void> {
    const text = await this.metrics.metrics();
    send(res, 200, text, this.metrics.contentType);
  }

  private connector(res: ServerResponse, id: string): void {
    const status = buildConnectorStatus(this.app, id);
    if (!status) return unknownConnector(res, id);
    sendJson(res, 200, status);
  }

  private setState(req: IncomingMessage, res: ServerResponse, id: string, action: string): void {
    const before = this.app.pool.get(id);
    if (!before) return unknownConnector(res, id);
    const to = ACTIONS[action]!;
    this.app.pool.setState(id, to);
    const remote = req.socket.remoteAddress ? unmapIpv4(req.socket.remoteAddress) : 'unknown';
    if (before.state !== to) {
      this.logger.info(
        { connector: id, from: before.state, to, source: 'admin', remote },
        `Connector ${id} state ${before.state} → ${to} (admin request from ${remote})`,
      );
    }
    sendJson(res, 200, { id, previous: before.state, state: to, changed: before.state !== to, connector: buildConnectorStatus(this.app, id) });
  }

  /** Re-reads the config file (as SIGHUP does); 200 with what was applied, 422 with every error when rejected. */
  private reload(req: IncomingMessage, res: ServerResponse): void {
    const remote = req.socket.remoteAddress ? unmapIpv4(req.socket.remoteAddress) : 'unknown';
    this.logger.info({ source: 'admin', remote }, `reloading config (admin request from ${remote})`);
    const outcome = this.app.requestReload();
    if (!outcome) return sendError(res, 409, ErrorCodes.RELOAD, 'this pcoip-lb was not started from a config file and cannot reload');
    if (outcome.ok) return sendJson(res, 200, outcome);
    // The errors go into the message too, so every client shows them.
    sendJson(res, 422, { ...outcome, error: { code: outcome.code, message: [`reload rejected: ${outcome.message}`, ...outcome.errors].join('\n  ') } });
  }

  /** Which Connector a client belongs to, and why (or where it would go). */
  private affinity(res: ServerResponse, client: string): void {
    if (isIP(client) === 0) return sendError(res, 400, ErrorCodes.ADMIN_REQUEST, `"${client}" is not an IPv4 or IPv6 address`);
    const now = Date.now();
    const clientKey = this.app.placer.keyFor(client);
    const entry = this.app.affinity.get(clientKey, now);
    if (entry) {
      const c = this.app.pool.get(entry.connectorId);
      const why =
        entry.reason === 'placed' ? 'placed by consistent hashing' : entry.reason === 'repinned' ? 'moved here when its previous Connector could not take it' : 'learned';
      return sendJson(res, 200, {
        client,
        clientKey,
        pinned: true,
        connector: entry.connectorId,
        reason: entry.reason,
        flows: entry.flows,
        pinnedAt: new Date(entry.pinnedAt).toISOString(),
        lastSeen: new Date(entry.lastSeen).toISOString(),
        connectorHealth: c?.health ?? null,
        connectorState: c?.state ?? null,
        explanation: `pinned to ${entry.connectorId} (${why}); ${entry.flows} open flow(s)` + (c && c.health === 'down' ? `; ${entry.connectorId} is down` : ''),
      });
    }
    const wouldGo = this.app.placer.pickNew(clientKey) ?? null;
    sendJson(res, 200, {
      client,
      clientKey,
      pinned: false,
      connector: wouldGo,
      explanation:
        wouldGo === null
          ? 'no affinity record, and no Connector may take new clients now'
          : `no affinity record; its next flow would be placed on ${wouldGo} by ${this.app.currentConfig.balance.algorithm} hashing`,
    });
  }
}

/**
 * A POST's Origin against the Host it was sent to. Same origin means the same scheme (this
 * server speaks plain http), host and port; `null` (sandboxed or privacy-stripped origins) is
 * another origin; an Origin that does not parse is malformed (a 400, not a 500).
 */
function checkOrigin(originHeader: string, hostHeader: string | undefined): 'same' | 'cross-origin' | 'malformed' {
  if (originHeader === 'null') return 'cross-origin';
  const origin = URL.parse(originHeader);
  if (!origin || origin.host === '') return 'malformed';
  const target = hostHeader ? URL.parse(`http://${hostHeader}`) : null;
  return target && origin.protocol === 'http:' && origin.host === target.host ? 'same' : 'cross-origin';
}

function totalBytes(app: AdminView, id: string): { bytesIn: number; bytesOut: number } {
  const c = app.stats.counters(id);
  return { bytesIn: c.broker.bytesIn + c.pcoipTcp.bytesIn + c.pcoipUdp.bytesIn, bytesOut: c.broker.bytesOut + c.pcoipTcp.bytesOut + c.pcoipUdp.bytesOut };
}

function hostOf(hostHeader: string | undefined): string {
  if (!hostHeader) return '';
  if (hostHeader.startsWith('[')) return hostHeader.slice(1, hostHeader.indexOf(']'));
  const colon = hostHeader.lastIndexOf(':');
  return colon >= 0 ? hostHeader.slice(0, colon) : hostHeader;
}

function unknownConnector(res: ServerResponse, id: string): void {
  sendError(res, 404, ErrorCodes.UNKNOWN_CONNECTOR, `no Connector with id "${id}"`);
}

function send(res: ServerResponse, status: number, body: string, contentType: string): void {
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, `${JSON.stringify(value, null, 2)}\n`, 'application/json; charset=utf-8');
}

function sendError(res: ServerResponse, status: number, code: ErrorCode, message: string): void {
  sendJson(res, status, { error: { code, message } });
}
