import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';

/**
 * UDP peers that speak PCoIP's clear ESP framing (docs/pcoip-protocol.md: [4-byte transport header] SPI,
 * sequence number, then ciphertext), for the media-quality tests: a Connector that answers every
 * datagram from its own SA (its own SPI and sequence), a client that sends a numbered stream, and
 * a relay that drops every Nth datagram of one direction — loss "before the proxy", on the wire.
 */
export interface EspFraming {
  /** With the 4-byte transport header (default) or without it. */
  header: boolean;
}

export function espDatagram(spi: number, seq: number, framing: EspFraming = { header: true }, size = 200): Buffer {
  const buf = Buffer.alloc(size);
  const at = framing.header ? 4 : 0;
  if (framing.header) buf.writeUInt32BE(0x00000000, 0);
  buf.writeUInt32BE(spi >>> 0, at);
  buf.writeUInt32BE(seq >>> 0, at + 4);
  for (let i = at + 8; i < size; i++) buf[i] = (seq * 31 + i * 7) & 0xff;
  return buf;
}

async function bound(host: string): Promise<UdpSocket> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ address: host, port: 0 }, () => (socket.off('error', reject), resolve()));
  });
  return socket;
}

/** A Connector's UDP side: answers each datagram with one of its own SA (per sender), same framing as the request. */
export interface EspConnector {
  host: string;
  port: number;
  /** Datagrams received. */
  received(): number;
  close(): void;
}

export async function startEspConnector(host: string, spi: number): Promise<EspConnector> {
  const socket = await bound(host);
  const seqBySender = new Map<string, number>();
  let received = 0;
  socket.on('message', (msg, rinfo) => {
    received++;
    // The request's own framing: header present if its bytes 0-3 are the (zero) transport header.
    const header = msg.readUInt32BE(0) === 0;
    const key = `${rinfo.address}:${rinfo.port}`;
    const seq = (seqBySender.get(key) ?? 0) + 1;
    seqBySender.set(key, seq);
    socket.send(espDatagram(spi, seq, { header }, msg.length), rinfo.port, rinfo.address);
  });
  return { host, port: socket.address().port, received: () => received, close: () => socket.close() };
}

/**
 * Forwards datagrams between one peer (the first sender) and `target`, dropping every `dropEvery`-th
 * datagram of the direction named in `drop` ('forward': from the first sender to target; 'back').
 */
export interface LossyRelay {
  host: string;
  port: number;
  dropped(): number;
  close(): void;
}

export async function startLossyRelay(host: string, target: { host: string; port: number }, drop: 'forward' | 'back', dropEvery: number): Promise<LossyRelay> {
  const front = await bound(host);
  const back = await bound(host);
  back.connect(target.port, target.host);
  let peer: RemoteInfo | undefined;
  let forward = 0;
  let backward = 0;
  let dropped = 0;
  front.on('message', (msg, rinfo) => {
    peer ??= rinfo;
    if (drop === 'forward' && ++forward % dropEvery === 0) return void dropped++;
    back.send(msg);
  });
  back.on('message', (msg) => {
    if (drop === 'back' && ++backward % dropEvery === 0) return void dropped++;
    if (peer) front.send(msg, peer.port, peer.address);
  });
  return {
    host,
    port: front.address().port,
    dropped: () => dropped,
    close: () => (front.close(), back.close()),
  };
}

/** A client sending `seqs` (SPI per datagram) to `to`, paced, counting the answers. */
export async function sendStream(
  from: string,
  to: { host: string; port: number },
  datagrams: Array<{ spi: number; seq: number }>,
  framing: EspFraming = { header: true },
): Promise<{ answers: number; close: () => void }> {
  const socket = await bound(from);
  let answers = 0;
  socket.on('message', () => answers++);
  // 20 datagrams per ms-tick: quick, and far below what loopback and the proxy absorb without drops.
  for (let i = 0; i < datagrams.length; i += 20) {
    for (const d of datagrams.slice(i, i + 20)) socket.send(espDatagram(d.spi, d.seq, framing), to.port, to.host);
    await new Promise((r) => setTimeout(r, 2));
  }
  const expected = datagrams.length;
  const deadline = Date.now() + 3000;
  while (answers < expected * 0.85 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  // Let any answers still in flight arrive.
  await new Promise((r) => setTimeout(r, 100));
  return { answers: answers, close: () => socket.close() };
}
