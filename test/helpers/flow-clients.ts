import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import type { Socket } from 'node:net';
import { once } from 'node:events';
import { tcpGreeting } from './clients.ts';

/**
 * Long-lived client flows for tests that act on a flow while it is open (shutdown, reload,
 * faults): a UDP client that keeps its source port, and an echo exchange on an open TCP socket.
 */
export interface UdpClient {
  socket: UdpSocket;
  port: number;
  /** Sends `payload` and resolves with the next datagram received; rejects after `timeoutMs`. */
  roundTrip(payload: string | Buffer, timeoutMs?: number): Promise<Buffer>;
  send(payload: string | Buffer): void;
  close(): void;
}

export async function openUdpClient(proxyPort: number, localAddress: string, host = '127.0.0.1'): Promise<UdpClient> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind({ address: localAddress, port: 0 }, () => resolve()));
  const port = socket.address().port;
  let closed = false;
  return {
    socket,
    port,
    send: (payload) => socket.send(payload, proxyPort, host),
    roundTrip: async (payload, timeoutMs = 2000) => {
      const reply = once(socket, 'message', { signal: AbortSignal.timeout(timeoutMs) }) as Promise<[Buffer]>;
      socket.send(payload, proxyPort, host);
      const [msg] = await reply;
      return msg;
    },
    close: () => {
      if (closed) return;
      closed = true;
      socket.close();
    },
  };
}

/** Writes `text` on an open echo connection and resolves once it came back; rejects on close or timeout. */
export function echo(socket: Socket, text: string, timeoutMs = 2000): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = '';
    const done = (err?: Error) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onData = (chunk: Buffer) => {
      got += chunk.toString('utf8');
      if (got.includes(text)) done();
    };
    const onClose = () => done(new Error(`connection closed before "${text}" came back (got "${got}")`));
    const timer = setTimeout(() => done(new Error(`"${text}" did not come back within ${timeoutMs} ms (got "${got}")`)), timeoutMs);
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.write(text);
  });
}

/** Resolves when the socket is closed (by the peer or locally). */
export function closed(socket: Socket): Promise<void> {
  if (socket.destroyed) return Promise.resolve();
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

/** Polls a cheap in-process condition (a counter) until it holds; throws after `timeoutMs`. */
export async function waitUntil(condition: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The connections and UDP clients a test opens, closed in afterEach whatever the test's outcome. */
export class TestFlows {
  private readonly sockets: Socket[] = [];
  private readonly udp: UdpClient[] = [];

  /** A TCP connection from `from` that read the Connector's greeting (see tcpGreeting). */
  async greet(port: number, from: string): Promise<{ id: string; socket: Socket }> {
    const g = await tcpGreeting(port, from);
    this.sockets.push(g.socket);
    return g;
  }

  track(socket: Socket): Socket {
    this.sockets.push(socket);
    return socket;
  }

  async udpClient(port: number, from: string): Promise<UdpClient> {
    const u = await openUdpClient(port, from);
    this.udp.push(u);
    return u;
  }

  closeAll(): void {
    for (const s of this.sockets.splice(0)) s.destroy();
    for (const u of this.udp.splice(0)) u.close();
  }
}
