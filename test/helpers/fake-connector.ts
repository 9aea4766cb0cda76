import { createServer, type Server, type Socket } from 'node:net';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import type { ConnectorConfig } from '../../src/config/schema.ts';

/**
 * A stand-in Connector for proxy tests: TCP servers on its "broker" and "pcoip" ports and a UDP
 * socket on the pcoip port, on its own loopback address (127.0.1.x), so a test can tell which
 * Connector a flow reached. Each TCP connection is greeted with `<id>\n` and then echoed; each
 * UDP datagram is answered with `<id>|` followed by the datagram.
 */
export interface FakeConnector {
  id: string;
  host: string;
  brokerPort: number;
  pcoipPort: number;
  /** Client addresses seen per flow kind, in arrival order. */
  seen: { broker: string[]; pcoipTcp: string[]; pcoipUdp: string[] };
  config(weight?: number): ConnectorConfig;
  close(): Promise<void>;
}

/** `record: false` keeps `seen` empty, for long benches where a per-datagram log would only grow. */
export async function startFakeConnector(id: string, host: string, options: { record?: boolean } = {}): Promise<FakeConnector> {
  const record = options.record ?? true;
  const seen = { broker: [] as string[], pcoipTcp: [] as string[], pcoipUdp: [] as string[] };
  const sockets = new Set<Socket>();
  const greetAndEcho = (kind: 'broker' | 'pcoipTcp') => (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    if (record) seen[kind].push(socket.remoteAddress ?? '?');
    socket.write(`${id}\n`);
    socket.pipe(socket);
  };
  const broker = await listenTcp(createServer({ allowHalfOpen: true }, greetAndEcho('broker')), host, 0);
  // The pcoip port is shared by TCP and UDP, as on a real Connector: find a port free for both.
  let pcoipTcp: Server | undefined;
  let udp: UdpSocket | undefined;
  for (let attempt = 0; attempt < 10 && !udp; attempt++) {
    pcoipTcp = await listenTcp(createServer({ allowHalfOpen: true }, greetAndEcho('pcoipTcp')), host, 0);
    const port = (pcoipTcp.address() as { port: number }).port;
    try {
      udp = await bindUdp(host, port);
    } catch {
      await new Promise<void>((r) => pcoipTcp!.close(() => r()));
    }
  }
  if (!udp || !pcoipTcp) throw new Error(`no port free for both TCP and UDP on ${host}`);
  const udpSocket = udp;
  udpSocket.on('message', (msg, rinfo) => {
    if (record) seen.pcoipUdp.push(rinfo.address);
    udpSocket.send(Buffer.concat([Buffer.from(`${id}|`), msg]), rinfo.port, rinfo.address);
  });
  const brokerPort = (broker.address() as { port: number }).port;
  const pcoipPort = (pcoipTcp.address() as { port: number }).port;
  const tcpServer = pcoipTcp;
  return {
    id,
    host,
    brokerPort,
    pcoipPort,
    seen,
    config: (weight = 1) => ({ id, address: host, ports: { broker: brokerPort, pcoip: pcoipPort }, weight, state: 'active' }),
    close: async () => {
      for (const s of sockets) s.destroy();
      udpSocket.close();
      await Promise.all([broker, tcpServer].map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}

function listenTcp(server: Server, host: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

function bindUdp(host: string, port: number): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket('udp4');
    socket.once('error', (err) => {
      socket.close();
      reject(err);
    });
    socket.bind({ address: host, port }, () => resolve(socket));
  });
}
