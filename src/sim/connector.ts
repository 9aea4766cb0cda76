import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import { createSocket, type Socket as UdpSocket, type RemoteInfo } from 'node:dgram';
import { isIP, type AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../logger.ts';
import { createLogger } from '../logger.ts';
import { generateCertificate, type SimCertificate } from './certs.ts';
import { el, parseMessage, resultXml, wrapMessage, xmlText } from './broker-xml.ts';
import { readLine } from './line-reader.ts';
import {
  BROKER_PATH,
  CONNECTOR_ID_HEADER,
  COOKIE_NAME,
  HEALTH_PATH,
  MAX_LINE_BYTES,
  OFFSET_SEQ,
  OFFSET_SPI,
  PROBE_PRODUCT_NAME,
  UDP_HEADER_BYTES,
  XML_CONTENT_TYPE,
  formatAdmit,
  formatReject,
  parseTagRequest,
  spiHex,
  type TagRejectCode,
} from './wire.ts';

/**
 * A simulated HP Anyware Connector that behaves like a real one where it matters to a load
 * balancer: it remembers what it brokered and **rejects every flow it did not broker**, so a
 * misrouted flow fails visibly instead of being silently echoed.
 *
 * - Broker port (HTTPS, HTTP/1.1): `GET /health`; `POST /pcoip-broker/xml` hello →
 *   authenticate → get-resource-list → allocate-resource → bye, with a `JSESSIONID` cookie only
 *   this Connector knows. Responses are chunked, `text/xml; charset=UTF-8`, and carry the header
 *   `X-Sim-Connector: <id>` (a simulator addition) so a client can see who answered.
 * - PCoIP port, TCP (TLS): one line each way; admits a session whose connect tag this Connector
 *   allocated, once, within 60 s, and answers with the session's UDP SPI.
 * - PCoIP port, UDP (same port number): echoes packets whose SPI belongs to an admitted session
 *   (while its TCP connection is open); drops and counts the rest.
 * The line protocol and packet layout are in ./README.md and ./wire.ts.
 */

export interface SimConnectorOptions {
  id: string;
  /** Loopback address of its own, e.g. 127.0.1.1. */
  host: string;
  /** 0 (default) picks a free port. */
  brokerPort?: number;
  /** TCP and UDP use the same number; 0 (default) picks one free for both. */
  pcoipPort?: number;
  /** Clock for tag expiry and session idleness; tests inject one. */
  now?: () => number;
  /** How long a connect tag stays valid (PCoIP Client SDK: 60 s). */
  tagTtlMs?: number;
  /**
   * The PCoIP address allocate-resource-resp tells clients to use. Defaults to this Connector's
   * own host and pcoip port; behind a load balancer with one shared address (HP's deployment B,
   * `--external-pcoip-ip`) it is the balancer's address.
   */
  advertise?: { address: string; port: number };
  certificate?: SimCertificate;
  logger?: Logger;
  /**
   * Identifier shapes (docs/pcoip-protocol.md, PCoIP Client SDK examples). realistic (default): session-id a
   * 64-bit decimal, connect tag ~100 URL-encoded characters starting `SCS1`; short: 16 hex
   * digits and 24 base64url characters (what the simulator used before).
   */
  ids?: 'realistic' | 'short';
  /** How the cookie header is spelled: `Set-Cookie` (default) or `set-cookie` (which PCoIP clients ignore). */
  setCookieSpelling?: 'Set-Cookie' | 'set-cookie';
  /**
   * Also find a broker session by its CLIENT-LOG-ID when a request has no JSESSIONID (default
   * true), as broker authors do for clients that drop the cookie. A log id this Connector never
   * saw is NOT_AUTHENTICATED, so misrouting stays visible.
   */
  logIdSessions?: boolean;
  /**
   * Put this value in every allocation's `sni` instead of one per session (a Connector whose SNI
   * is a constant default): pcoip-lb must then not route 4172/TCP by it (docs/sessions.md).
   */
  constantSni?: string;
}

export interface SimConnectorCounters {
  brokerRequests: number;
  /** Probe hellos (`QueryBrokerClient`) answered; they open no session. */
  probeHellos: number;
  /** Requests without a cookie whose session was found by CLIENT-LOG-ID. */
  logIdSessionHits: number;
  notAuthenticated: number;
  allocations: number;
  tagsAdmitted: number;
  tagsRejected: Record<TagRejectCode, number>;
  tlsErrors: number;
  udpIn: number;
  udpOut: number;
  /** Datagrams whose SPI is no admitted session here (dropped). */
  udpUnknownSpi: number;
  /** Datagrams too short to hold the PCoIP header (dropped). */
  udpMalformed: number;
}

interface BrokerSession {
  authenticated: boolean;
  lastUsed: number;
  logId: string | undefined;
}

interface Allocation {
  sessionId: string;
  /** The client → Connector SA (what the client's datagrams carry). */
  spi: number;
  /** The Connector → client SA (what this Connector's echoes carry): each direction has its own SPI. */
  replySpi: number;
  sni: string;
  allocatedAt: number;
  used: boolean;
}

interface AdmittedSession {
  allocation: Allocation;
  socket: TLSSocket;
  /** The Connector's own sequence number for the echoes it sends. */
  seq: number;
  /** The TLS server name the client presented on 4172 (empty when none). */
  servername: string;
}

const DEFAULT_TAG_TTL_MS = 60_000;
/** A broker session (cookie) idle this long is forgotten. */
const SESSION_IDLE_MS = 10 * 60_000;
/** Used or expired tags are remembered this long past their TTL so a late retry says "reused"/"expired", not "unknown". */
const TAG_MEMORY_MS = 10 * 60_000;
const MAX_BODY_BYTES = 64 * 1024;
const LINE_TIMEOUT_MS = 10_000;
/** Unknown SPIs remembered for `sawUnknownSpi` (bounded so a flood cannot grow memory). */
const MAX_REMEMBERED_UNKNOWN_SPIS = 4096;
const RESOURCE_ID = '1';

export class SimConnector {
  readonly id: string;
  readonly host: string;
  readonly counters: SimConnectorCounters = {
    brokerRequests: 0,
    probeHellos: 0,
    logIdSessionHits: 0,
    notAuthenticated: 0,
    allocations: 0,
    tagsAdmitted: 0,
    tagsRejected: { 'unknown-tag': 0, 'expired-tag': 0, 'reused-tag': 0, 'bad-request': 0 },
    tlsErrors: 0,
    udpIn: 0,
    udpOut: 0,
    udpUnknownSpi: 0,
    udpMalformed: 0,
  };
  private readonly now: () => number;
  private readonly tagTtlMs: number;
  private readonly logger: Logger;
  private advertised: { address: string; port: number } | undefined;
  private healthy = true;
  private unhealthyReason = '';
  private readonly sessions = new Map<string, BrokerSession>();
  /** CLIENT-LOG-ID → cookie of its session (logIdSessions). */
  private readonly sessionsByLogId = new Map<string, string>();
  private readonly ids: 'realistic' | 'short';
  private readonly setCookieSpelling: string;
  private readonly logIdSessions: boolean;
  private readonly constantSni: string | undefined;
  private readonly allocations = new Map<string, Allocation>();
  private readonly admitted = new Map<number, AdmittedSession>();
  private readonly unknownSpis = new Set<number>();
  private readonly pcoipSockets = new Set<TLSSocket>();
  private broker!: HttpsServer;
  private pcoipTcp!: TlsServer;
  private udp!: UdpSocket;
  private sweepTimer: NodeJS.Timeout | undefined;

  private constructor(options: SimConnectorOptions) {
    this.id = options.id;
    this.host = options.host;
    this.now = options.now ?? Date.now;
    this.tagTtlMs = options.tagTtlMs ?? DEFAULT_TAG_TTL_MS;
    this.advertised = options.advertise;
    this.logger = (options.logger ?? createLogger('silent')).child({ sim: options.id });
    this.ids = options.ids ?? 'realistic';
    this.setCookieSpelling = options.setCookieSpelling ?? 'Set-Cookie';
    this.logIdSessions = options.logIdSessions ?? true;
    this.constantSni = options.constantSni;
  }

  /** Generates a certificate (unless given), binds all three sockets and resolves when they listen. */
  static async start(options: SimConnectorOptions): Promise<SimConnector> {
    const sim = new SimConnector(options);
    const certificate = options.certificate ?? (await generateCertificate(`${options.id}.sim.invalid`, [options.host]));
    await sim.listen(certificate, options.brokerPort ?? 0, options.pcoipPort ?? 0);
    return sim;
  }

  get brokerPort(): number {
    return (this.broker.address() as AddressInfo).port;
  }

  get pcoipPort(): number {
    return (this.pcoipTcp.address() as AddressInfo).port;
  }

  get health(): { healthy: boolean; reason: string } {
    return { healthy: this.healthy, reason: this.unhealthyReason };
  }

  /** Switches what `GET /health` answers, at run time. */
  setHealth(healthy: boolean, reason = 'Security Gateway is enabled but does not respond'): void {
    this.healthy = healthy;
    this.unhealthyReason = healthy ? '' : reason;
    this.logger.info({ healthy, reason: this.unhealthyReason }, healthy ? 'simulated Connector healthy' : 'simulated Connector unhealthy');
  }

  /** Changes the PCoIP address future allocate-resource-resp messages give out. */
  setAdvertisedPcoip(address: string, port: number): void {
    this.advertised = { address, port };
  }

  /** Sessions currently admitted on 4172 (TCP open, UDP answered). */
  get admittedSessions(): number {
    return this.admitted.size;
  }

  /** Whether a datagram with this SPI arrived here and was dropped as unknown (recent ones only). */
  sawUnknownSpi(spi: number): boolean {
    return this.unknownSpis.has(spi);
  }

  /** The Connector as pcoip-lb's config lists it. */
  connectorConfig(): { id: string; address: string; ports: { broker: number; pcoip: number } } {
    return { id: this.id, address: this.host, ports: { broker: this.brokerPort, pcoip: this.pcoipPort } };
  }

  async stop(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const socket of this.pcoipSockets) socket.destroy();
    this.broker.closeAllConnections();
    try {
      this.udp.close();
    } catch {
      // already closed
    }
    await Promise.all([this.broker, this.pcoipTcp].map((s) => new Promise<void>((r) => s.close(() => r()))));
  }

  // ---- sockets ----

  private async listen(certificate: SimCertificate, brokerPort: number, pcoipPort: number): Promise<void> {
    const tls = { key: certificate.key, cert: certificate.cert };
    this.broker = createHttpsServer({ ...tls, ALPNProtocols: ['http/1.1'] }, (req, res) => this.onBrokerRequest(req, res));
    this.broker.on('tlsClientError', () => this.counters.tlsErrors++);
    await listenOn(this.broker, this.host, brokerPort);
    // TCP and UDP share the pcoip port number, as on a real Connector. With port 0, take the
    // port the kernel gives TCP and try it for UDP; retry a few times if UDP has it taken.
    for (let attempt = 0; ; attempt++) {
      this.pcoipTcp = createTlsServer(tls, (socket) => this.onPcoipConnection(socket));
      this.pcoipTcp.on('tlsClientError', () => this.counters.tlsErrors++);
      await listenOn(this.pcoipTcp, this.host, pcoipPort);
      try {
        this.udp = await bindUdp(this.host, this.pcoipPort);
        break;
      } catch (err) {
        await new Promise<void>((r) => this.pcoipTcp.close(() => r()));
        if (pcoipPort !== 0 || attempt >= 9) {
          await new Promise<void>((r) => this.broker.close(() => r()));
          throw err;
        }
      }
    }
    this.udp.on('message', (msg, rinfo) => this.onDatagram(msg, rinfo));
    this.udp.on('error', (err) => this.logger.warn({ err: err.message }, 'UDP socket error'));
    this.sweepTimer = setInterval(() => this.sweep(), 30_000);
    this.sweepTimer.unref();
  }

  // ---- broker (HTTPS) ----

  private onBrokerRequest(req: IncomingMessage, res: ServerResponse): void {
    this.counters.brokerRequests++;
    const path = (req.url ?? '').split('?')[0];
    if (path === HEALTH_PATH && req.method === 'GET') return this.answerHealth(res);
    if (path !== BROKER_PATH) return this.answerText(res, 404, `no such path: ${path}`);
    if (req.method !== 'POST') return this.answerText(res, 405, `use POST for ${BROKER_PATH}`);
    readBody(req, MAX_BODY_BYTES).then(
      (body) => this.answerBroker(req, res, body),
      (err: Error) => {
        res.shouldKeepAlive = false;
        this.answerText(res, 413, err.message);
      },
    );
  }

  private answerHealth(res: ServerResponse): void {
    const body = this.healthy
      ? JSON.stringify({ code: 200, status: 'success' })
      : JSON.stringify({ code: 500, status: 'Error', reason: this.unhealthyReason });
    res.writeHead(this.healthy ? 200 : 500, ['Content-Type', 'application/json', 'Content-Length', String(Buffer.byteLength(body)), CONNECTOR_ID_HEADER, this.id]);
    res.end(body);
  }

  private answerBroker(req: IncomingMessage, res: ServerResponse, body: string): void {
    const msg = parseMessage(body, 'pcoip-client');
    if ('error' in msg) return this.answerText(res, 400, `malformed broker request: ${msg.error}`);
    const now = this.now();
    const logIdHeader = req.headers['client-log-id'];
    const logId = typeof logIdHeader === 'string' && logIdHeader !== '' ? logIdHeader : undefined;
    if (msg.name === 'hello') {
      // The probe asks what this broker is; it starts no session (*sim*: nothing public says otherwise).
      if (xmlText(msg.body, 'product-name') === PROBE_PRODUCT_NAME) {
        this.counters.probeHellos++;
        return this.answerXml(res, 200, wrapMessage('hello-resp', this.helloBody()));
      }
      const cookie = randomBytes(16).toString('hex').toUpperCase();
      this.sessions.set(cookie, { authenticated: false, lastUsed: now, logId });
      if (logId !== undefined && this.logIdSessions) this.sessionsByLogId.set(logId, cookie);
      return this.answerXml(res, 200, wrapMessage('hello-resp', this.helloBody()), cookie);
    }
    let cookie = cookieValue(req.headers.cookie, COOKIE_NAME);
    if (cookie === undefined && logId !== undefined && this.logIdSessions) {
      cookie = this.sessionsByLogId.get(logId);
      if (cookie !== undefined) this.counters.logIdSessionHits++;
      else return this.notAuthenticated(res, msg.name, 'no JSESSIONID cookie, and CLIENT-LOG-ID unknown to this Connector');
    }
    const session = cookie === undefined ? undefined : this.sessions.get(cookie);
    if (!session) return this.notAuthenticated(res, msg.name, cookie === undefined ? 'no JSESSIONID cookie' : 'JSESSIONID unknown to this Connector');
    session.lastUsed = now;
    switch (msg.name) {
      case 'authenticate': {
        const username = xmlText(msg.body, 'username') ?? '';
        if (username === '') {
          return this.answerXml(res, 200, wrapMessage('authenticate-resp', resultXml('AUTH_FAILED_UNKNOWN_USERNAME_OR_PASSWORD', 'username missing'), 'method="password"'));
        }
        session.authenticated = true;
        return this.answerXml(res, 200, wrapMessage('authenticate-resp', resultXml('AUTH_SUCCESSFUL_AND_COMPLETE', 'authenticated'), 'method="password"'));
      }
      case 'get-resource-list':
        if (!session.authenticated) return this.notAuthenticated(res, msg.name, 'session has not authenticated');
        return this.answerXml(res, 200, wrapMessage('get-resource-list-resp', resultXml('LIST_SUCCESSFUL', 'one desktop') + this.resourceXml()));
      case 'allocate-resource': {
        if (!session.authenticated) return this.notAuthenticated(res, msg.name, 'session has not authenticated');
        if (xmlText(msg.body, 'resource-id') !== RESOURCE_ID) {
          return this.answerXml(res, 200, wrapMessage('allocate-resource-resp', resultXml('ALLOC_FAILED_UNKNOWN_RESOURCE', 'no such resource-id')));
        }
        return this.answerXml(res, 200, wrapMessage('allocate-resource-resp', this.allocate(now)));
      }
      case 'bye':
        this.sessions.delete(cookie!);
        if (session.logId !== undefined) this.sessionsByLogId.delete(session.logId);
        return this.answerXml(res, 200, wrapMessage('bye-resp', ''));
      default:
        return this.answerText(res, 400, `unknown broker request <${msg.name}>`);
    }
  }

  private helloBody(): string {
    const brokerInfo =
      el('product-name', 'pcoip-lb Connector simulator') +
      el('product-version', '1.0') +
      el('platform', 'linux') +
      el('locale', 'en_US') +
      el('ip-address', this.host) +
      el('hostname', `${this.id}.sim.invalid`);
    const next = el('authentication-methods', el('method', 'AUTHENTICATE_VIA_PASSWORD'), true) + el('domains', el('domain', 'sim.invalid'), true);
    return el('brokers-info', el('broker-info', brokerInfo, true), true) + el('next-authentication', next, true);
  }

  private resourceXml(): string {
    return el(
      'resource',
      el('resource-name', `Simulated desktop on ${this.id}`) +
        el('resource-id', RESOURCE_ID) +
        el('resource-type', 'DESKTOP', false, 'session-type="VDI"') +
        el('resource-state', 'UNKNOWN') +
        el('protocols', el('protocol', 'PCOIP', false, 'is-default="true"'), true),
      true,
    );
  }

  /** Prepares a session for this client: a single-use connect tag and the UDP SPI it will get. */
  private allocate(now: number): string {
    // SPIs 0–255 are reserved (RFC 4303).
    let spi: number;
    do spi = randomBytes(4).readUInt32BE(0);
    while (spi < 256 || this.admitted.has(spi));
    let replySpi: number;
    do replySpi = randomBytes(4).readUInt32BE(0);
    while (replySpi < 256 || replySpi === spi);
    const { sessionId, tag } = this.ids === 'realistic' ? realisticIds() : { sessionId: randomBytes(8).toString('hex'), tag: randomBytes(18).toString('base64url') };
    const sni = this.constantSni ?? `${sessionId}.${this.id}.sim.invalid`;
    this.allocations.set(tag, { sessionId, spi, replySpi, sni, allocatedAt: now, used: false });
    this.counters.allocations++;
    const pcoip = this.advertised ?? { address: this.host, port: this.pcoipPort };
    const target =
      el('ip-address', pcoip.address) +
      el('hostname', `${this.id}.sim.invalid`) +
      el('sni', sni) +
      el('port', String(pcoip.port)) +
      el('session-id', sessionId) +
      el('connect-tag', tag);
    return resultXml('ALLOC_SUCCESSFUL', 'session allocated') + el('target', target, true) + el('resource-id', RESOURCE_ID) + el('protocol', 'PCOIP');
  }

  private notAuthenticated(res: ServerResponse, request: string, why: string): void {
    this.counters.notAuthenticated++;
    this.logger.debug({ request, why }, 'broker request not authenticated');
    this.answerXml(res, 401, wrapMessage(`${request}-resp`, resultXml('NOT_AUTHENTICATED', `not authenticated: ${why}`)));
  }

  /**
   * Writes the response as a Connector does: header names in exactly this case (a raw header
   * array keeps it; PCoIP clients want `Set-Cookie`, not `set-cookie`) and a chunked body.
   */
  private answerXml(res: ServerResponse, status: number, xml: string, setCookie?: string): void {
    const headers = ['Content-Type', XML_CONTENT_TYPE, 'Transfer-Encoding', 'chunked', CONNECTOR_ID_HEADER, this.id];
    if (setCookie !== undefined) headers.push(this.setCookieSpelling, `${COOKIE_NAME}=${setCookie}; Path=/; Secure; HttpOnly`);
    res.writeHead(status, headers);
    // Two writes: the body leaves as more than one chunk, as a streaming broker sends it.
    const split = xml.indexOf('?>') + 2;
    res.write(xml.slice(0, split));
    res.end(xml.slice(split));
  }

  private answerText(res: ServerResponse, status: number, text: string): void {
    const body = `${text}\n`;
    res.writeHead(status, ['Content-Type', 'text/plain; charset=UTF-8', 'Content-Length', String(Buffer.byteLength(body)), CONNECTOR_ID_HEADER, this.id]);
    res.end(body);
  }

  // ---- PCoIP TCP (TLS) ----

  private onPcoipConnection(socket: TLSSocket): void {
    this.pcoipSockets.add(socket);
    socket.on('close', () => this.pcoipSockets.delete(socket));
    socket.on('error', () => socket.destroy());
    readLine(socket, MAX_LINE_BYTES, LINE_TIMEOUT_MS).then(
      (line) => this.admit(socket, line),
      (err: Error) => this.reject(socket, 'bad-request', `expected "CONNECT-TAG <tag>": ${err.message}`),
    );
  }

  private admit(socket: TLSSocket, line: string): void {
    const tag = parseTagRequest(line);
    if (tag === undefined) return this.reject(socket, 'bad-request', 'expected "CONNECT-TAG <tag>"');
    const allocation = this.allocations.get(tag);
    if (!allocation) return this.reject(socket, 'unknown-tag', `${this.id} did not allocate this connect tag`);
    if (allocation.used) return this.reject(socket, 'reused-tag', 'connect tag already used; tags are single-use');
    const age = this.now() - allocation.allocatedAt;
    if (age > this.tagTtlMs) return this.reject(socket, 'expired-tag', `connect tag is ${age} ms old; valid for ${this.tagTtlMs} ms`);
    allocation.used = true;
    const servername = typeof socket.servername === 'string' ? socket.servername : '';
    const session: AdmittedSession = { allocation, socket, seq: 0, servername };
    this.admitted.set(allocation.spi, session);
    this.counters.tagsAdmitted++;
    socket.write(formatAdmit(this.id, allocation.sessionId, allocation.spi, allocation.replySpi));
    // The control channel stays open for the session; its bytes are not interpreted here.
    socket.on('data', () => undefined);
    socket.resume();
    socket.once('close', () => {
      if (this.admitted.get(allocation.spi) === session) this.admitted.delete(allocation.spi);
    });
    this.logger.debug({ session: allocation.sessionId, spi: spiHex(allocation.spi), servername }, 'session admitted on 4172');
  }

  private reject(socket: TLSSocket, code: TagRejectCode, text: string): void {
    this.counters.tagsRejected[code]++;
    this.logger.debug({ code, text }, 'pcoip connection rejected');
    if (socket.destroyed) return;
    socket.end(formatReject(this.id, code, text));
    // A client that never closes its side must not hold the socket forever.
    setTimeout(() => socket.destroy(), 5000).unref();
  }

  // ---- PCoIP UDP ----

  private onDatagram(msg: Buffer, rinfo: RemoteInfo): void {
    if (msg.length < UDP_HEADER_BYTES) {
      this.counters.udpMalformed++;
      return;
    }
    const spi = msg.readUInt32BE(OFFSET_SPI);
    const session = this.admitted.get(spi);
    if (!session) {
      this.counters.udpUnknownSpi++;
      if (!this.unknownSpis.has(spi)) {
        // Bounded memory: forget the oldest remembered SPI to make room.
        if (this.unknownSpis.size >= MAX_REMEMBERED_UNKNOWN_SPIS) this.unknownSpis.delete(this.unknownSpis.values().next().value!);
        this.unknownSpis.add(spi);
      }
      return;
    }
    this.counters.udpIn++;
    session.seq = (session.seq + 1) >>> 0;
    // Node hands each datagram its own buffer, so it can be rewritten and sent back as is: the
    // echo leaves on this Connector's own SA (its SPI, its sequence numbers).
    msg.writeUInt32BE(session.allocation.replySpi, OFFSET_SPI);
    msg.writeUInt32BE(session.seq, OFFSET_SEQ);
    this.udp.send(msg, rinfo.port, rinfo.address);
    this.counters.udpOut++;
  }

  // ---- housekeeping ----

  private sweep(): void {
    const now = this.now();
    for (const [cookie, s] of this.sessions) {
      if (now - s.lastUsed <= SESSION_IDLE_MS) continue;
      this.sessions.delete(cookie);
      if (s.logId !== undefined) this.sessionsByLogId.delete(s.logId);
    }
    for (const [tag, a] of this.allocations) if (now - a.allocatedAt > this.tagTtlMs + TAG_MEMORY_MS) this.allocations.delete(tag);
  }
}

/**
 * Identifiers shaped like the PCoIP Client SDK's examples (docs/pcoip-protocol.md): a 64-bit decimal session id
 * (19 digits, e.g. 2305843009213693961) and a connect tag of about 100 URL-encoded characters
 * starting `SCS1` (*sim*: the bytes inside are random; only the shape is public).
 */
function realisticIds(): { sessionId: string; tag: string } {
  const sessionId = (2n ** 62n + (randomBytes(8).readBigUInt64BE(0) % 2n ** 62n)).toString();
  const tag = `SCS1${encodeURIComponent(`:${randomBytes(63).toString('base64')}`)}`;
  return { sessionId, tag };
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function readBody(req: IncomingMessage, maxBytes: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      // Past the limit, keep reading (and discarding) so the 413 answer can still be delivered.
      if (size > maxBytes) reject(new Error(`request body over ${maxBytes} bytes`));
      else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function listenOn(server: HttpsServer | TlsServer, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/**
 * A Connector serves hundreds of sessions on one UDP socket; the kernel's default receive
 * buffer (~208 KB, ~90 datagrams of 1200 bytes) overflows on the first event-loop hiccup.
 * Ask for 4 MiB (Linux caps it at net.core.rmem_max) so the simulator is not the bottleneck.
 */
const UDP_BUFFER_BYTES = 4 * 1024 * 1024;

function bindUdp(host: string, port: number): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket({ type: isIP(host) === 6 ? 'udp6' : 'udp4', recvBufferSize: UDP_BUFFER_BYTES, sendBufferSize: UDP_BUFFER_BYTES });
    socket.once('error', (err) => {
      socket.close();
      reject(err);
    });
    socket.bind({ address: host, port }, () => {
      socket.removeAllListeners('error');
      resolve(socket);
    });
  });
}
