import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { parseBrokerAnswer, requests, type AllocateTarget, type BrokerAnswer, type BrokerRequestName } from './broker-xml.ts';
import { readLine } from './line-reader.ts';
import { UdpStream, type UdpPacer, type UdpStreamResult } from './udp-stream.ts';
import type { Histogram } from './histogram.ts';
import { BROKER_PATH, CONNECTOR_ID_HEADER, COOKIE_NAME, MAX_LINE_BYTES, PROBE_PRODUCT_NAME, XML_CONTENT_TYPE, formatTagRequest, parseTagAnswer, spiHex } from './wire.ts';

/**
 * The PCoIP client simulator: one user logging in and running a session the way a real client
 * does — the broker exchange over 443, then 4172/TCP (TLS, with the allocated `sni` as server
 * name) presenting the connect tag, then the UDP media flow.
 *
 * How it speaks the broker exchange is a ClientBehaviour, after what real clients do (docs/pcoip-protocol.md):
 * a probe hello (`QueryBrokerClient`) first or not; every request on one keep-alive TLS
 * connection (the open-source client's `Connection: Keep-Alive` and headers) or each on its own
 * connection; a cookie jar fed only by headers spelled exactly `Set-Cookie`, or no cookies at all
 * (a client that relies on CLIENT-LOG-ID, as broker authors fall back to); the log id header's
 * spelling.
 *
 * It is strict where real clients are strict (chunked XML, a `Set-Cookie` header spelled so) and
 * it checks which Connector answered every step (simulated Connectors name themselves), so a
 * flow that reached the wrong Connector is reported as "misrouted: X reached B, session on A".
 */

export interface ClientBehaviour {
  /** A probe hello (product-name `QueryBrokerClient`) before the real hello. */
  probe: boolean;
  /**
   * keep-alive: every broker request on one TLS connection (`Connection: Keep-Alive`, the
   * open-source client's User-Agent/Accept/Cache-Control); per-request: a new TLS connection for
   * each (`Connection: close`).
   */
  connection: 'keep-alive' | 'per-request';
  /**
   * jar: keeps every cookie set by a header spelled exactly `Set-Cookie` (JSESSIONID, a load
   * balancer's cookie) and returns them all; JSESSIONID is required. none: returns no cookie and
   * relies on the log id (the Connector must identify sessions by it).
   */
  cookies: 'jar' | 'none';
  /** The log id header as spelled on the wire (names are case-insensitive; a proxy must not care). */
  logIdHeader: string;
}

/** What the simulator did before issue 14: no probe, a connection per request, JSESSIONID. */
export const LEGACY_BEHAVIOUR: ClientBehaviour = { probe: false, connection: 'per-request', cookies: 'jar', logIdHeader: 'CLIENT-LOG-ID' };

/** The open-source PCoIP client's request headers (docs/pcoip-protocol.md, wunderwuzzi23/puppy). */
const KEEP_ALIVE_HEADERS = { 'User-Agent': 'Mozilla/4.0 (compatible; MSIE 6.0)', Accept: 'text/*, application/octet-stream', 'Cache-Control': 'no-cache', Connection: 'Keep-Alive' };


export interface Endpoint {
  host: string;
  port: number;
}

/** An Endpoint from a listening socket's address (AddressInfo names the host `address`). */
export function endpointOf(address: { address: string; port: number }): Endpoint {
  return { host: address.address, port: address.port };
}

export interface SessionTarget {
  /**
   * Where the 443 (broker) requests go: a Connector or a load balancer. A function is asked
   * before each request (several instances, each request to a different one, as ECMP may do).
   */
  broker: Endpoint | (() => Endpoint);
  /** Where to open 4172/TCP; default: the ip-address and port allocate-resource-resp names. */
  pcoipTcp?: Endpoint;
  /** Where to send 4172/UDP; default: same as 4172/TCP. */
  pcoipUdp?: Endpoint;
}

export interface UserPlan {
  name: string;
  /** Source address for every flow of this user (e.g. 127.0.2.7), or undefined for the default. */
  localAddress: string | undefined;
  requestTimeoutMs: number;
  /** How this user speaks the broker exchange; default LEGACY_BEHAVIOUR. */
  behaviour?: ClientBehaviour;
}

export type Stage = BrokerRequestName | 'pcoip-tcp' | 'pcoip-udp';
export type FailureKind = 'misrouted' | 'rejected' | 'broker-error' | 'network' | 'no-echo' | 'udp-loss';

export class SessionFailure extends Error {
  readonly stage: Stage;
  readonly kind: FailureKind;
  /** What the media flow achieved, when it got that far. */
  readonly udp: UdpStreamResult | undefined;
  /** The Connector that answered hello, when the failure came after it. */
  connectorId: string | undefined;

  constructor(stage: Stage, kind: FailureKind, message: string, udp?: UdpStreamResult) {
    super(message);
    this.stage = stage;
    this.kind = kind;
    this.udp = udp;
    this.connectorId = undefined;
  }
}

/** A user whose broker exchange and 4172/TCP admission succeeded. */
export interface EstablishedSession {
  plan: UserPlan;
  /** The Connector that answered hello (and so every later step). */
  connectorId: string;
  allocation: AllocateTarget;
  /** The SPI of this user's datagrams, and the one the Connector's answers carry (each direction has its own). */
  spi: number;
  replySpi: number;
  control: TLSSocket;
  setupMs: number;
  /** Broker requests sent and TLS connections opened for them. */
  broker: { requests: number; connections: number };
}

export interface BrokerReply {
  status: number;
  connectorId: string;
  rawHeaders: string[];
  chunked: boolean;
  answer: BrokerAnswer;
}

const EXPECTED_RESULT: Partial<Record<BrokerRequestName, string>> = {
  authenticate: 'AUTH_SUCCESSFUL_AND_COMPLETE',
  'get-resource-list': 'LIST_SUCCESSFUL',
  'allocate-resource': 'ALLOC_SUCCESSFUL',
};

/** Broker exchange + 4172/TCP admission. Throws SessionFailure naming the stage and the cause. */
export async function establishSession(plan: UserPlan, target: SessionTarget): Promise<EstablishedSession> {
  // `home` is the Connector that answered hello; a failure after it is attributed to it.
  const state: { home: string | undefined } = { home: undefined };
  try {
    return await exchange(plan, target, state);
  } catch (err) {
    if (err instanceof SessionFailure) err.connectorId ??= state.home;
    throw err;
  }
}

async function exchange(plan: UserPlan, target: SessionTarget, state: { home: string | undefined }): Promise<EstablishedSession> {
  const started = performance.now();
  const behaviour = plan.behaviour ?? LEGACY_BEHAVIOUR;
  const broker = new BrokerExchange(target.broker, plan, behaviour);
  try {
    const step = async (name: BrokerRequestName, xml: string, probe = false): Promise<BrokerReply> => {
      let reply: BrokerReply;
      try {
        reply = await broker.post(xml);
      } catch (err) {
        throw new SessionFailure(name, 'network', `${probe ? 'probe ' : ''}${name}: ${(err as Error).message}`);
      }
      const { answer } = reply;
      const said = answer.resultId ? ` (${reply.connectorId} said ${answer.resultId}${answer.resultStr ? `: ${answer.resultStr}` : ''})` : '';
      // The probe only asks what the broker is: any Connector may answer it.
      const home = probe ? reply.connectorId : (state.home ??= reply.connectorId);
      if (reply.connectorId !== home) {
        throw new SessionFailure(name, 'misrouted', `${name} reached ${reply.connectorId}, but hello was answered by ${home}${said}`);
      }
      if (reply.status !== 200 || answer.name !== `${name}-resp`) {
        throw new SessionFailure(name, 'broker-error', `${probe ? 'probe ' : ''}${name}: HTTP ${reply.status}, <${answer.name}>${said}`);
      }
      const expected = EXPECTED_RESULT[name];
      if (expected && answer.resultId !== expected) throw new SessionFailure(name, 'broker-error', `${name}: expected ${expected}${said}`);
      // Real PCoIP clients reject an unchunked broker response.
      if (!reply.chunked) throw new SessionFailure(name, 'broker-error', `${name}: response not chunked (PCoIP clients need Transfer-Encoding: chunked)`);
      return reply;
    };

    if (behaviour.probe) await step('hello', requests.hello(plan.name, PROBE_PRODUCT_NAME), true);
    const hello = await step('hello', requests.hello(plan.name));
    if (behaviour.cookies === 'jar' && !broker.hasCookie(COOKIE_NAME)) {
      const lower = hello.rawHeaders.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'set-cookie');
      throw new SessionFailure(
        'hello',
        'broker-error',
        lower ? 'hello: cookie header not spelled "Set-Cookie" (PCoIP clients ignore any other spelling)' : `hello: no ${COOKIE_NAME} cookie`,
      );
    }
    await step('authenticate', requests.authenticate(plan.name, 'secret', 'sim.invalid'));
    const list = await step('get-resource-list', requests.getResourceList());
    const allocated = await step('allocate-resource', requests.allocateResource(list.answer.resourceId ?? '1'));
    const allocation = allocated.answer.target;
    if (!allocation || !allocation.connectTag || !(allocation.port > 0)) {
      throw new SessionFailure('allocate-resource', 'broker-error', 'allocate-resource-resp has no usable <target>');
    }
    await step('bye', requests.bye());

    const connectorId = state.home!;
    const tcpEndpoint = target.pcoipTcp ?? { host: allocation.ipAddress, port: allocation.port };
    const { control, spi, replySpi } = await presentTag(tcpEndpoint, plan, allocation, connectorId);
    return { plan, connectorId, allocation, spi, replySpi, control, setupMs: performance.now() - started, broker: { requests: broker.requests, connections: broker.connections } };
  } finally {
    broker.close();
  }
}

/**
 * One user's broker exchange: its log id, its cookie jar, and — keep-alive — the one TLS
 * connection every request travels on (an agent with a single socket; should the server close
 * it, the next request opens another, as a client would).
 */
class BrokerExchange {
  requests = 0;
  connections = 0;
  private readonly jar = new Map<string, string>();
  private readonly logId = randomUUID();
  private readonly agent: HttpsAgent | undefined;
  /** A fixed broker, or one chosen per request (a user whose requests an ECMP router spreads over instances). */
  private readonly endpoint: Endpoint | (() => Endpoint);
  private readonly plan: UserPlan;
  private readonly behaviour: ClientBehaviour;

  constructor(endpoint: Endpoint | (() => Endpoint), plan: UserPlan, behaviour: ClientBehaviour) {
    this.endpoint = endpoint;
    this.plan = plan;
    this.behaviour = behaviour;
    if (behaviour.connection === 'keep-alive') this.agent = new HttpsAgent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false });
  }

  hasCookie(name: string): boolean {
    return this.jar.has(name);
  }

  async post(xml: string): Promise<BrokerReply> {
    const cookie = this.behaviour.cookies === 'jar' && this.jar.size > 0 ? [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ') : undefined;
    this.requests++;
    const reply = await sendBroker(typeof this.endpoint === 'function' ? this.endpoint() : this.endpoint, this.plan, xml, {
      logIdHeader: this.behaviour.logIdHeader,
      logId: this.logId,
      cookieHeader: cookie,
      agent: this.agent,
      onNewConnection: () => this.connections++,
    });
    if (this.behaviour.cookies === 'jar') for (const [k, v] of setCookies(reply.rawHeaders)) this.jar.set(k, v);
    return reply;
  }

  close(): void {
    this.agent?.destroy();
  }
}

interface SendOptions {
  logIdHeader: string;
  logId: string;
  cookieHeader: string | undefined;
  /** keep-alive: the user's agent; undefined: a connection of its own, closed after the answer. */
  agent: HttpsAgent | undefined;
  onNewConnection?: () => void;
}

/** One broker request on its own TLS connection (agent: false), as PCoIP clients make them. */
export function postBroker(endpoint: Endpoint, plan: UserPlan, xml: string, clientLogId: string, cookie: string | undefined): Promise<BrokerReply> {
  return sendBroker(endpoint, plan, xml, { logIdHeader: 'CLIENT-LOG-ID', logId: clientLogId, cookieHeader: cookie === undefined ? undefined : `${COOKIE_NAME}=${cookie}`, agent: undefined });
}

function sendBroker(endpoint: Endpoint, plan: UserPlan, xml: string, options: SendOptions): Promise<BrokerReply> {
  const body = Buffer.from(xml, 'utf8');
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: endpoint.host,
        port: endpoint.port,
        method: 'POST',
        path: BROKER_PATH,
        localAddress: plan.localAddress,
        agent: options.agent ?? false,
        rejectUnauthorized: false, // Connectors present self-signed certificates
        timeout: plan.requestTimeoutMs,
        headers: {
          ...(options.agent ? KEEP_ALIVE_HEADERS : { Connection: 'close' }),
          'Content-Type': XML_CONTENT_TYPE,
          'Content-Length': body.length,
          [options.logIdHeader]: options.logId,
          ...(options.cookieHeader === undefined ? {} : { Cookie: options.cookieHeader }),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const parsed = parseBrokerAnswer(text);
          if ('error' in parsed) {
            reject(new Error(`HTTP ${res.statusCode}: not a broker answer (${parsed.error}): ${JSON.stringify(text.slice(0, 120))}`));
            return;
          }
          const id = res.headers[CONNECTOR_ID_HEADER.toLowerCase()];
          resolve({
            status: res.statusCode ?? 0,
            connectorId: typeof id === 'string' ? id : '(unnamed)',
            rawHeaders: res.rawHeaders,
            chunked: (res.headers['transfer-encoding'] ?? '').toLowerCase() === 'chunked',
            answer: parsed,
          });
        });
      },
    );
    req.on('socket', () => {
      if (!req.reusedSocket) options.onNewConnection?.();
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${plan.requestTimeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => reject(new Error(err.code ? `${err.code} ${err.message}` : err.message)));
    req.end(body);
  });
}

/** JSESSIONID from headers spelled exactly `Set-Cookie` (rawHeaders keep the case as sent). */
export function sessionCookie(rawHeaders: string[]): string | undefined {
  return setCookies(rawHeaders).get(COOKIE_NAME);
}

/** Every cookie (name → value) set by headers spelled exactly `Set-Cookie`; other spellings are ignored, as PCoIP clients do. */
export function setCookies(rawHeaders: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i] !== 'Set-Cookie') continue;
    const m = /^([^=;\s]+)=([^;]*)/.exec(rawHeaders[i + 1]!);
    if (m) out.set(m[1]!, m[2]!);
  }
  return out;
}

export async function presentTag(
  endpoint: Endpoint,
  plan: UserPlan,
  allocation: AllocateTarget,
  connectorId: string,
): Promise<{ control: TLSSocket; spi: number; replySpi: number }> {
  // The TCP socket is made first so it can be bound to the user's source address.
  const tcp = netConnect({ host: endpoint.host, port: endpoint.port, localAddress: plan.localAddress, noDelay: true });
  const socket = tlsConnect({ socket: tcp, servername: allocation.sni, rejectUnauthorized: false });
  let line: string;
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`TLS handshake not done within ${plan.requestTimeoutMs} ms`)), plan.requestTimeoutMs);
      socket.once('secureConnect', () => (clearTimeout(timer), resolve()));
      socket.once('error', (err) => (clearTimeout(timer), reject(err)));
    });
    socket.write(formatTagRequest(allocation.connectTag));
    line = await readLine(socket, MAX_LINE_BYTES, plan.requestTimeoutMs);
  } catch (err) {
    socket.destroy();
    throw new SessionFailure('pcoip-tcp', 'network', `pcoip-tcp: ${(err as Error).message}`);
  }
  socket.on('error', () => undefined);
  const answer = parseTagAnswer(line);
  if (!answer) {
    socket.destroy();
    throw new SessionFailure('pcoip-tcp', 'network', `pcoip-tcp: unexpected answer ${JSON.stringify(line.slice(0, 120))}`);
  }
  if (answer.connectorId !== connectorId) {
    socket.destroy();
    const what = answer.ok ? 'admitted' : `${answer.code}: ${answer.text}`;
    throw new SessionFailure('pcoip-tcp', 'misrouted', `pcoip-tcp reached ${answer.connectorId}, but the session was allocated by ${connectorId} (${answer.connectorId}: ${what})`);
  }
  if (!answer.ok) {
    socket.destroy();
    throw new SessionFailure('pcoip-tcp', 'rejected', `pcoip-tcp: ${connectorId} rejected the tag: ${answer.code}: ${answer.text}`);
  }
  socket.resume();
  return { control: socket, spi: answer.spi, replySpi: answer.replySpi };
}

export interface MediaOptions {
  bitrateBps: number;
  durationMs: number;
  packetBytes: number;
  /** A user fails when more than this share of its datagrams got no echo. */
  maxLossPct: number;
  /** Where the UDP flow goes; default the 4172/TCP endpoint or the allocated target. */
  endpoint: Endpoint;
  pacer: UdpPacer;
  rtt: Histogram;
  /** Which Connector saw (and dropped) datagrams with this SPI, when the caller can tell. */
  locateSpi?: (spi: number) => string | undefined;
  /** The UDP source port (fixed, as real clients have it); default any. */
  localPort?: number;
}

/** Runs the UDP media flow, then ends the 4172/TCP control connection. Throws SessionFailure. */
export async function runMedia(session: EstablishedSession, options: MediaOptions): Promise<UdpStreamResult> {
  let stream: UdpStream;
  try {
    stream = await UdpStream.open({
      spi: session.spi,
      replySpi: session.replySpi,
      packetBytes: options.packetBytes,
      bitrateBps: options.bitrateBps,
      durationMs: options.durationMs,
      localAddress: session.plan.localAddress,
      ...(options.localPort !== undefined ? { localPort: options.localPort } : {}),
      remote: options.endpoint,
      rtt: options.rtt,
    });
  } catch (err) {
    session.control.destroy();
    throw new SessionFailure('pcoip-udp', 'network', `pcoip-udp: ${(err as Error).message}`);
  }
  const result = await stream.run(options.pacer);
  session.control.end();
  const lossPct = result.sent === 0 ? 0 : (100 * (result.sent - result.received)) / result.sent;
  if (lossPct > options.maxLossPct || (result.sent > 0 && result.received === 0)) {
    const spi = spiHex(session.spi);
    const seenBy = options.locateSpi?.(session.spi);
    if (seenBy !== undefined && seenBy !== session.connectorId) {
      const message = `pcoip-udp (SPI ${spi}) reached ${seenBy}, but the session is on ${session.connectorId}; ${seenBy} dropped it`;
      throw new SessionFailure('pcoip-udp', 'misrouted', message, result);
    }
    const detail = `${result.received}/${result.sent} echoes (SPI ${spi}, session on ${session.connectorId}${result.error ? `, ${result.error}` : ''})`;
    throw result.received === 0
      ? new SessionFailure('pcoip-udp', 'no-echo', `pcoip-udp: no echo, ${detail}`, result)
      : new SessionFailure('pcoip-udp', 'udp-loss', `pcoip-udp: ${lossPct.toFixed(1)} % loss > ${options.maxLossPct} %, ${detail}`, result);
  }
  return result;
}
