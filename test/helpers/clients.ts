import { connect, type Socket } from 'node:net';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';

/** Opens a TCP connection from a chosen loopback source address and reads the Connector's greeting line. */
export async function tcpGreeting(port: number, localAddress: string, host = '127.0.0.1'): Promise<{ id: string; socket: Socket }> {
  const socket = connect({ host, port, localAddress });
  socket.on('error', () => undefined);
  let buffer = '';
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      buffer += chunk.toString('utf8');
      const nl = buffer.indexOf('\n');
      if (nl >= 0) {
        socket.off('data', onData);
        resolve({ id: buffer.slice(0, nl), socket });
      }
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error(`connection from ${localAddress} closed before a greeting (got "${buffer}")`)));
  });
}

/** Sends one datagram from a chosen source and returns the reply, or throws after `timeoutMs`. */
export async function udpRoundTrip(port: number, localAddress: string, payload: Buffer, timeoutMs = 2000, host = '127.0.0.1'): Promise<Buffer> {
  const socket = createSocket('udp4');
  try {
    await new Promise<void>((resolve) => socket.bind({ address: localAddress, port: 0 }, () => resolve()));
    const reply = once(socket, 'message', { signal: AbortSignal.timeout(timeoutMs) }) as Promise<[Buffer]>;
    socket.send(payload, port, host);
    const [msg] = await reply;
    return msg;
  } finally {
    socket.close();
  }
}
