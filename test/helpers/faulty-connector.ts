import { createServer, type Server, type Socket } from 'node:net';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import type { ConnectorConfig } from '../../src/config/schema.ts';

/**
 * A Connector stand-in that a fault test can break on purpose. It speaks like FakeConnector
 * (TCP: greets `<id>\n`, then echoes; UDP: answers `<id>|<datagram>`) on fixed ports it keeps
 * across a restart, and can:
 * - `resetAll()`   kill every TCP connection with an RST (a crashed process),
 * - `closeUdp()`   close its UDP socket (the kernel answers ICMP port-unreachable),
 * - `stop()`/`start()` go away and come back on the same ports (a restart),
 * - `blackhole`    keep accepting TCP and receiving UDP but never answer (a hung Connector).
 */
export interface FaultyConnector {
  id: string;
  host: string;
  brokerPort: number;
  pcoipPort: number;
  /** Open TCP connections right now (both ports). */
  readonly connections: number;
  /** UDP datagrams received (answered or not). */
  readonly datagrams: number;
  blackhole: boolean;
  /** Listening (false between stop() and start()). */
  readonly running: boolean;
  config(weight?: number): ConnectorConfig;
  resetAll(): void;
  closeUdp(): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
}

export async function startFaultyConnector(id: string, host: string): Promise<FaultyConnector> {
  const sockets = new Set<Socket>();
  let datagrams = 0;
  let brokerServer: Server | undefined;
  let pcoipServer: Server | undefined;
  let udp: UdpSocket | undefined;

  const onConnection = (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    if (connector.blackhole) {
      // Accept, read and drop everything, never answer; close when the proxy closes.
      socket.resume();
      socket.on('end', () => socket.destroy());
      return;
    }
    socket.write(`${id}\n`);
    socket.pipe(socket);
  };
  const listen = (port: number) =>
    new Promise<Server>((resolve, reject) => {
      const server = createServer({ allowHalfOpen: true }, onConnection);
      server.once('error', reject);
      server.listen({ host, port }, () => resolve(server));
    });
  const bindUdp = (port: number) =>
    new Promise<UdpSocket>((resolve, reject) => {
      const socket = createSocket('udp4');
      socket.once('error', reject);
      socket.on('message', (msg, rinfo) => {
        datagrams++;
        if (!connector.blackhole) socket.send(Buffer.concat([Buffer.from(`${id}|`), msg]), rinfo.port, rinfo.address);
      });
      socket.bind({ address: host, port }, () => resolve(socket));
    });
  const closeServer = (s: Server | undefined) => new Promise<void>((r) => (s ? s.close(() => r()) : r()));

  const connector: FaultyConnector = {
    id,
    host,
    brokerPort: 0,
    pcoipPort: 0,
    blackhole: false,
    get connections() {
      return sockets.size;
    },
    get datagrams() {
      return datagrams;
    },
    get running() {
      return brokerServer !== undefined;
    },
    config: (weight = 1) => ({ id, address: host, ports: { broker: connector.brokerPort, pcoip: connector.pcoipPort }, weight, state: 'active' }),
    resetAll: () => {
      for (const s of sockets) s.resetAndDestroy();
    },
    closeUdp: () => new Promise<void>((r) => (udp ? udp.close(() => ((udp = undefined), r())) : r())),
    stop: async () => {
      connector.resetAll();
      await Promise.all([closeServer(brokerServer), closeServer(pcoipServer), connector.closeUdp()]);
      brokerServer = pcoipServer = undefined;
    },
    start: async () => {
      brokerServer = await listen(connector.brokerPort);
      pcoipServer = await listen(connector.pcoipPort);
      udp = await bindUdp(connector.pcoipPort);
    },
  };

  brokerServer = await listen(0);
  connector.brokerPort = (brokerServer.address() as { port: number }).port;
  // The pcoip port serves TCP and UDP: find one free for both.
  for (let attempt = 0; attempt < 10 && !udp; attempt++) {
    pcoipServer = await listen(0);
    const port = (pcoipServer.address() as { port: number }).port;
    try {
      udp = await bindUdp(port);
      connector.pcoipPort = port;
    } catch {
      await closeServer(pcoipServer);
    }
  }
  if (!udp) throw new Error(`no port free for both TCP and UDP on ${host}`);
  return connector;
}
