import { createServer, connect, type Server, type Socket, type AddressInfo } from 'node:net';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import type { SimConnector } from '../../src/sim/connector.ts';

/**
 * A deliberately naive router for negative tests: no affinity, just a rule per listener that
 * picks a Connector for each new flow. With `alternate` it sends flows to two Connectors in
 * turn, the way a plain round-robin balancer would break a PCoIP login.
 */
export type Listener = 'broker' | 'pcoipTcp' | 'pcoipUdp';
export type RouteRule = (listener: Listener, clientAddress: string, flowNumber: number) => SimConnector;

export interface TestRouter {
  broker: AddressInfo;
  pcoipTcp: AddressInfo;
  pcoipUdp: AddressInfo;
  close(): Promise<void>;
}

export function alternate(connectors: readonly SimConnector[]): RouteRule {
  return (_listener, _client, n) => connectors[n % connectors.length]!;
}

export async function startTestRouter(rule: RouteRule): Promise<TestRouter> {
  const sockets = new Set<Socket>();
  const counts: Record<Listener, number> = { broker: 0, pcoipTcp: 0, pcoipUdp: 0 };
  const tcp = (listener: 'broker' | 'pcoipTcp') =>
    createServer((client) => {
      const target = rule(listener, client.remoteAddress ?? '', counts[listener]++);
      const upstream = connect({ host: target.host, port: listener === 'broker' ? target.brokerPort : target.pcoipPort });
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
        s.on('error', () => (client.destroy(), upstream.destroy()));
      }
      client.pipe(upstream).pipe(client);
    });
  const broker = await listen(tcp('broker'));
  const pcoipTcp = await listen(tcp('pcoipTcp'));

  const udp = createSocket('udp4');
  const flows = new Map<string, UdpSocket>();
  udp.on('message', (msg, rinfo) => {
    const key = `${rinfo.address}|${rinfo.port}`;
    let upstream = flows.get(key);
    if (!upstream) {
      const target = rule('pcoipUdp', rinfo.address, counts.pcoipUdp++);
      const socket = createSocket('udp4');
      socket.on('message', (reply) => udp.send(reply, rinfo.port, rinfo.address));
      socket.on('error', () => undefined);
      socket.connect(target.pcoipPort, target.host);
      flows.set(key, socket);
      upstream = socket;
      // Hold the first datagram until the connect completes.
      socket.once('connect', () => socket.send(msg));
      return;
    }
    try {
      upstream.send(msg);
    } catch {
      // not connected yet: a simulator test tolerates the loss of an early packet
    }
  });
  await new Promise<void>((r) => udp.bind({ address: '127.0.0.1', port: 0 }, () => r()));

  return {
    broker: broker.address() as AddressInfo,
    pcoipTcp: pcoipTcp.address() as AddressInfo,
    pcoipUdp: udp.address(),
    close: async () => {
      for (const s of sockets) s.destroy();
      for (const f of flows.values()) f.close();
      udp.close();
      await Promise.all([broker, pcoipTcp].map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}

function listen(server: Server): Promise<Server> {
  return new Promise((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, () => resolve(server)));
}
