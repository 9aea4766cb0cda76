import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import type { SimConnector } from '../../src/sim/connector.ts';
import { postBroker, sessionCookie, type BrokerReply, type UserPlan } from '../../src/sim/client.ts';
import { requests, type AllocateTarget } from '../../src/sim/broker-xml.ts';
import { readLine } from '../../src/sim/line-reader.ts';
import { MIN_CLIENT_PACKET_BYTES, OFFSET_CLIENT_SEQ, OFFSET_SEQ, OFFSET_SPI, formatTagRequest } from '../../src/sim/wire.ts';

/** Low-level clients for testing the simulated Connector step by step. */

const plan: UserPlan = { name: 'test-user', localAddress: undefined, requestTimeoutMs: 5000 };

export function post(sim: SimConnector, xml: string, cookie?: string): Promise<BrokerReply> {
  return postBroker({ host: sim.host, port: sim.brokerPort }, plan, xml, 'test-log-id', cookie);
}

/** hello → authenticate → get-resource-list → allocate-resource on one simulated Connector. */
export async function allocate(sim: SimConnector): Promise<{ cookie: string; target: AllocateTarget }> {
  const hello = await post(sim, requests.hello('test-host'));
  const cookie = sessionCookie(hello.rawHeaders);
  if (!cookie) throw new Error('no cookie from hello');
  await post(sim, requests.authenticate('alice', 'secret', 'sim.invalid'), cookie);
  await post(sim, requests.getResourceList(), cookie);
  const alloc = await post(sim, requests.allocateResource('1'), cookie);
  if (!alloc.answer.target) throw new Error(`no target: ${alloc.answer.resultId}`);
  return { cookie, target: alloc.answer.target };
}

/** Opens 4172/TCP (TLS), sends `line` (a tag request by default) and returns the Connector's answer line. */
export async function tagAttempt(sim: SimConnector, tagOrLine: string, raw = false, servername = 'test.sim.invalid'): Promise<{ line: string; socket: TLSSocket }> {
  const socket = tlsConnect({ host: sim.host, port: sim.pcoipPort, servername, rejectUnauthorized: false });
  socket.on('error', () => undefined);
  await once(socket, 'secureConnect');
  socket.write(raw ? tagOrLine : formatTagRequest(tagOrLine));
  const line = await readLine(socket, 1024, 5000);
  return { line, socket };
}

/** Sends a raw HTTP request over TLS and returns every byte the server sent until it closed. */
export async function rawHttps(sim: SimConnector, request: string): Promise<string> {
  const socket = tlsConnect({ host: sim.host, port: sim.brokerPort, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
  await once(socket, 'secureConnect');
  socket.write(request);
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  await once(socket, 'end');
  socket.destroy();
  return Buffer.concat(chunks).toString('latin1');
}

export function pcoipPacket(spi: number, seq: number, size = MIN_CLIENT_PACKET_BYTES): Buffer {
  const packet = Buffer.alloc(size);
  packet.writeUInt32BE(spi, OFFSET_SPI);
  packet.writeUInt32BE(seq, OFFSET_SEQ);
  packet.writeUInt32BE(seq, OFFSET_CLIENT_SEQ);
  return packet;
}

export async function udpSocket(): Promise<UdpSocket> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind({ address: '127.0.0.1', port: 0 }, () => resolve()));
  return socket;
}

/** The next datagram on `socket`, or a rejection after `timeoutMs`. */
export async function nextDatagram(socket: UdpSocket, timeoutMs = 3000): Promise<Buffer> {
  const [msg] = (await once(socket, 'message', { signal: AbortSignal.timeout(timeoutMs) })) as [Buffer];
  return msg;
}

/** Polls `condition` every 10 ms until it holds; rejects after `timeoutMs`. */
export async function waitUntil(condition: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
