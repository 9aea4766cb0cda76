/**
 * Picks ports for peers that need a number in their config file (HAProxy, NGINX, iperf3):
 * bind port 0, note the port, close. The same number must be free for both TCP and UDP
 * because a PCoIP-style listener (and iperf3's UDP mode) uses one port number for both.
 */
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';

function tcpPortZero(host: string): Promise<{ port: number; close: () => Promise<void> }> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen({ host, port: 0 }, () => {
      const { port } = server.address() as { port: number };
      resolve({ port, close: () => new Promise((r) => server.close(() => r())) });
    });
  });
}

function udpFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    socket.once('error', () => {
      socket.close();
      resolve(false);
    });
    socket.bind({ address: host, port }, () => socket.close(() => resolve(true)));
  });
}

/** A port number free on `host` for both TCP and UDP right now (there is a small race until the peer binds it). */
export async function freeTcpUdpPort(host: string): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const tcp = await tcpPortZero(host);
    const ok = await udpFree(host, tcp.port);
    await tcp.close();
    if (ok) return tcp.port;
  }
  throw new Error(`no port free for both TCP and UDP on ${host} after 20 attempts`);
}
