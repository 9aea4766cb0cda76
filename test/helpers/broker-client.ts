import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { RawReader, rawRequest, type RawMessage } from './raw-http.ts';
import { clientRequest } from './broker-xml.ts';

/** A TLS client of the proxy's broker listener, from a chosen loopback source address. */
export interface BrokerClient {
  socket: TLSSocket;
  reader: RawReader;
  /** Sends raw bytes and reads one response. */
  exchange(bytes: Buffer): Promise<RawMessage>;
  close(): void;
}

export async function openBrokerClient(port: number, localAddress: string, options: { servername?: string; ca?: string; alpn?: string[] } = {}): Promise<BrokerClient> {
  // tls.connect has no localAddress: bind the TCP socket ourselves, then start TLS on it.
  const tcp = netConnect({ host: '127.0.0.1', port, localAddress });
  tcp.on('error', () => undefined);
  const socket = tlsConnect({
    socket: tcp,
    servername: options.servername ?? 'broker.example',
    ...(options.ca ? { ca: options.ca } : { rejectUnauthorized: false }),
    ALPNProtocols: options.alpn ?? ['http/1.1'],
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('error', reject);
  });
  socket.on('error', () => undefined);
  const reader = new RawReader(socket);
  return {
    socket,
    reader,
    exchange: async (bytes) => {
      socket.write(bytes);
      const msg = await reader.next();
      if (!msg) throw new Error('connection closed before a response');
      return msg;
    },
    close: () => socket.destroy(),
  };
}

/** One broker XML request on a fresh connection from `localAddress`; returns the response. */
export async function brokerCall(
  port: number,
  localAddress: string,
  message: Parameters<typeof clientRequest>[0],
  headers: Record<string, string> = {},
): Promise<RawMessage> {
  const client = await openBrokerClient(port, localAddress);
  try {
    return await client.exchange(rawRequest('/pcoip-broker/xml', clientRequest(message), headers));
  } finally {
    client.close();
  }
}

export function resultId(msg: RawMessage): string | undefined {
  return /<result-id>([^<]*)<\/result-id>/.exec(msg.body.toString('utf8'))?.[1];
}

export function setCookieValue(msg: RawMessage): string | undefined {
  const header = msg.headers.get('set-cookie')?.[0];
  return header ? /^JSESSIONID=([^;]+)/.exec(header)?.[1] : undefined;
}
