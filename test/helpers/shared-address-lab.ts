import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { once } from 'node:events';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { SimConnector } from '../../src/sim/connector.ts';
import { postBroker, sessionCookie, type UserPlan } from '../../src/sim/client.ts';
import { requests } from '../../src/sim/broker-xml.ts';
import { readLine } from '../../src/sim/line-reader.ts';
import { formatTagRequest, parseTagAnswer } from '../../src/sim/wire.ts';
import { configSchema } from '../../src/config/schema.ts';
import { certDir, makeCert } from './tls-fixtures.ts';
import { startTestProxy, type TestProxy } from './proxy.ts';
import { pcoipPacket } from './sim-clients.ts';

/**
 * Users behind one shared address (a NAT), in front of simulated Connectors that answer only the
 * UDP SPIs they issued (src/sim/connector.ts): pcoip-lb (one process) with a terminating broker,
 * sniRouting and the default health checks on (as operators run it), so what it learns from each
 * login names the session's Connector. A user's
 * login may start from another address (a NAT pool spreads connections over its addresses; the
 * broker exchange follows the session cookie), which is how one shared address ends up with live
 * sessions on several Connectors.
 */
export interface SharedLab {
  sims: SimConnector[];
  proxy: TestProxy;
  /** An address in 127.15.<net>.1–250 that consistent hashing alone places on `connectorId`. */
  addressPlacedOn(connectorId: string, net: number): string;
  close(): Promise<void>;
}

export interface SharedLabOptions {
  hostBase: string;
  ids: string[];
  /** listeners.pcoipUdp settings (probe, idleTimeout …). */
  udp?: Record<string, unknown>;
  /** Other top-level config (affinity.perSession, health …). */
  extra?: Record<string, unknown>;
  /** Options for every simulated Connector (constantSni …). */
  sim?: { constantSni?: string };
}

export async function startSharedLab(options: SharedLabOptions): Promise<SharedLab> {
  const sims = await Promise.all(options.ids.map((id, i) => SimConnector.start({ id, host: `${options.hostBase}${i + 1}`, ...options.sim })));
  const { dir, cleanup } = await certDir();
  const cert = await makeCert(dir, 'proxy', ['broker.example'], ['127.0.0.1']);
  const config = configSchema.parse({
    listeners: {
      broker: { bind: '127.0.0.1:0', tls: { mode: 'terminate', certificates: [{ cert: cert.certPath, key: cert.keyPath }], upstream: { insecure: true } } },
      pcoipTcp: { bind: '127.0.0.1:0', sniRouting: true },
      pcoipUdp: { bind: '127.0.0.1:0', ...options.udp },
    },
    connectors: sims.map((s) => s.connectorConfig()),
    admin: { bind: '127.0.0.1:0' },
    logging: { level: 'debug' },
    ...options.extra,
  });
  const proxy = await startTestProxy(config);
  return {
    sims,
    proxy,
    addressPlacedOn(connectorId, net) {
      const placer = proxy.app.placer;
      for (let k = 1; k <= 250; k++) if (placer.pickNew(placer.keyFor(`127.15.${net}.${k}`)) === connectorId) return `127.15.${net}.${k}`;
      throw new Error(`no address in 127.15.${net}.x hashes to ${connectorId}`);
    },
    close: async () => {
      await proxy.stop();
      await Promise.all(sims.map((s) => s.stop()));
      await cleanup();
    },
  };
}

/** What a test opened (sockets, the lab), closed after each test: `afterEach(() => held.release())`. */
export class Held {
  lab: SharedLab | undefined;
  private readonly open: Array<{ close(): void } | { destroy(): void }> = [];

  keep<T extends { close(): void } | { destroy(): void }>(...items: T[]): T {
    this.open.push(...items);
    return items[0]!;
  }

  async release(): Promise<void> {
    for (const o of this.open.splice(0)) 'close' in o ? o.close() : o.destroy();
    await this.lab?.close();
    this.lab = undefined;
  }
}

export interface UserSession {
  name: string;
  /** The Connector that answered the login (and allocated the session). */
  home: string;
  sni: string;
  spi: number;
  /** The Connector that answered on 4172/TCP. */
  tcpConnector: string;
  control: TLSSocket;
}

/**
 * One user's login and 4172/TCP admission: `helloFrom` sends the (first) hello, `from` every later
 * request and the 4172/TCP connection (so the learned allocation names `from`).
 */
export async function login(lab: SharedLab, name: string, from: string, helloFrom = from): Promise<UserSession> {
  const plan = (localAddress: string): UserPlan => ({ name, localAddress, requestTimeoutMs: 5000 });
  const broker = { host: '127.0.0.1', port: lab.proxy.addresses.broker.port };
  const logId = `0000${name.padStart(4, '0')}-0000-4000-8000-000000000015`;
  const hello = await postBroker(broker, plan(helloFrom), requests.hello(name), logId, undefined);
  const cookie = sessionCookie(hello.rawHeaders);
  if (!cookie) throw new Error(`${name}: no cookie from hello`);
  let target;
  for (const xml of [requests.authenticate(name, 'secret', 'sim.invalid'), requests.getResourceList(), requests.allocateResource('1')]) {
    const reply = await postBroker(broker, plan(from), xml, logId, cookie);
    if (reply.connectorId !== hello.connectorId) throw new Error(`${name}: a broker request reached ${reply.connectorId}, hello was answered by ${hello.connectorId}`);
    target = reply.answer.target;
  }
  if (!target?.sni) throw new Error(`${name}: no allocation`);
  const tcp = netConnect({ host: '127.0.0.1', port: lab.proxy.addresses.pcoipTcp.port, localAddress: from });
  const control = tlsConnect({ socket: tcp, servername: target.sni, rejectUnauthorized: false });
  control.on('error', () => undefined);
  await once(control, 'secureConnect');
  control.write(formatTagRequest(target.connectTag));
  const answer = parseTagAnswer(await readLine(control, 512, 5000));
  if (!answer) throw new Error(`${name}: no answer on 4172/TCP`);
  control.resume();
  return { name, home: hello.connectorId, sni: target.sni, spi: answer.ok ? answer.spi : 0, tcpConnector: answer.connectorId, control };
}

/** A UDP media flow from (address, any port): datagrams with the session's SPI, counting echoes. */
export class Media {
  readonly socket: UdpSocket;
  echoes = 0;
  private seq = 0;

  private constructor(socket: UdpSocket) {
    this.socket = socket;
    socket.on('message', () => this.echoes++);
  }

  static async open(address: string): Promise<Media> {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind({ address, port: 0 }, () => resolve()));
    return new Media(socket);
  }

  get port(): number {
    return this.socket.address().port;
  }

  /** Sends `count` datagrams of `spi` (1 ms apart) and waits up to `waitMs` for the echoes. */
  async send(proxyPort: number, spi: number, count: number, waitMs = 1500): Promise<number> {
    const before = this.echoes;
    for (let i = 0; i < count; i++) {
      this.socket.send(pcoipPacket(spi, ++this.seq), proxyPort, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 1));
    }
    const deadline = Date.now() + waitMs;
    while (this.echoes - before < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    return this.echoes - before;
  }

  close(): void {
    this.socket.close();
  }
}
