/**
 * The "Connector" of bench:latency, in its own process: a UDP socket that echoes probes (with
 * its own receive time stamped in), counts and discards client → Connector background, and
 * streams Connector → client background on request (bench/lib/latency-wire.ts). It also answers
 * pcoip-lb's default health checks — HTTPS `GET /health` on the broker port and a TCP connect on
 * the pcoip port — so the proxy runs as operators run it, checks on. It does all of that on
 * every address it is given (the same ports on each): a pool of Connectors in one process.
 *
 *   fork('bench/lib/latency-connector.ts', ['127.0.1.1,127.0.1.2', udpAndTcpPort, brokerPort])
 * IPC: { type: 'counts', ids } → { type: 'counts', up: [id, n][], down: [id, n][] } (and forgets those ids)
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { createServer as createTcpServer } from 'node:net';
import { createServer as createHttpsServer } from 'node:https';
import { generateCertificate } from '../../src/sim/certs.ts';
import { pace, type Pacer } from './pacer.ts';
import {
  CONNECTOR_AT_OFFSET,
  DURATION_OFFSET,
  KIND_DOWN,
  KIND_DOWN_START,
  KIND_DOWN_STOP,
  KIND_OFFSET,
  KIND_PROBE,
  KIND_UP,
  RATE_OFFSET,
  SEQ_OFFSET,
  STREAM_OFFSET,
  datagram,
} from './latency-wire.ts';

const [hostList, portText, brokerPortText] = process.argv.slice(2);
if (!hostList || !portText || !brokerPortText || !process.send) throw new Error('usage: fork(latency-connector.ts, [hosts, port, brokerPort])');
const hosts = hostList.split(',');
const port = Number(portText);
const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;

const upReceived = new Map<number, number>();
const downSent = new Map<number, number>();
const downStreams = new Map<number, Pacer>();

function onDatagram(socket: Socket, msg: Buffer, rinfo: RemoteInfo): void {
  const kind = msg[KIND_OFFSET];
  if (kind === KIND_PROBE) {
    msg.writeBigInt64BE(process.hrtime.bigint(), CONNECTOR_AT_OFFSET);
    socket.send(msg, rinfo.port, rinfo.address);
  } else if (kind === KIND_UP) {
    const id = msg.readUInt32BE(STREAM_OFFSET);
    upReceived.set(id, (upReceived.get(id) ?? 0) + 1);
  } else if (kind === KIND_DOWN_START) {
    const id = msg.readUInt32BE(STREAM_OFFSET);
    if (downStreams.has(id)) return; // a repeated start request
    const rate = msg.readUInt32BE(RATE_OFFSET);
    const durationMs = Math.min(120_000, msg.readUInt32BE(DURATION_OFFSET));
    const out = datagram(KIND_DOWN, id);
    let seq = 0;
    const pacer = pace(
      rate,
      () => {
        out.writeUInt32BE(seq++, SEQ_OFFSET);
        socket.send(out, rinfo.port, rinfo.address);
      },
      { durationMs },
    );
    downStreams.set(id, pacer);
    downSent.set(id, 0);
    setTimeout(() => stopStream(id), durationMs + 100).unref();
  } else if (kind === KIND_DOWN_STOP) {
    stopStream(msg.readUInt32BE(STREAM_OFFSET));
  }
}

function stopStream(id: number): void {
  const pacer = downStreams.get(id);
  if (!pacer) return;
  pacer.stop();
  downStreams.delete(id);
  downSent.set(id, pacer.sent);
}

const certificate = await generateCertificate('latency-connector', hosts);
await Promise.all(
  hosts.map((host) => {
    const socket = createSocket({ type: 'udp4', recvBufferSize: SOCKET_BUFFER_BYTES, sendBufferSize: SOCKET_BUFFER_BYTES });
    socket.on('message', (msg, rinfo) => onDatagram(socket, msg, rinfo));
    // A client that went away answers with ICMP; the stream stops by its stop datagram or duration.
    socket.on('error', () => undefined);
    const https = createHttpsServer({ key: certificate.key, cert: certificate.cert }, (req, res) => {
      if (req.url === '/health') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"code":200,"status":"success"}');
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    const tcp = createTcpServer((s) => s.destroy());
    return Promise.all([
      new Promise<void>((resolve) => socket.bind(port, host, resolve)),
      new Promise<void>((resolve) => https.listen(Number(brokerPortText), host, resolve)),
      new Promise<void>((resolve) => tcp.listen(port, host, resolve)),
    ]);
  }),
);
process.send({ type: 'ready' });

process.on('message', (raw) => {
  const msg = raw as { type: string; ids?: number[] };
  if (msg.type === 'counts') {
    const ids = msg.ids ?? [];
    for (const id of ids) stopStream(id);
    const up = ids.map((id) => [id, upReceived.get(id) ?? 0]);
    const down = ids.map((id) => [id, downSent.get(id) ?? 0]);
    for (const id of ids) upReceived.delete(id), downSent.delete(id);
    process.send!({ type: 'counts', up, down });
  }
});
process.on('disconnect', () => process.exit(0));
