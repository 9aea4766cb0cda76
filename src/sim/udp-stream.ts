import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Histogram } from './histogram.ts';
import { MIN_CLIENT_PACKET_BYTES, OFFSET_CLIENT_SEQ, OFFSET_SENT_AT, OFFSET_SEQ, OFFSET_SPI, OFFSET_TRANSPORT } from './wire.ts';

const PACER_TICK_MS = 2;

export interface UdpStreamOptions {
  spi: number;
  /** The SPI the Connector's echoes carry (its own SA); default: `spi`. */
  replySpi?: number;
  /** Bytes of UDP payload per datagram (PCoIP's default MTU is 1200). */
  packetBytes: number;
  bitrateBps: number;
  durationMs: number;
  /** Source address to bind (e.g. 127.0.2.7), or undefined for any. */
  localAddress: string | undefined;
  /** Source port (real clients send media from a fixed one: 4172 or 50002); default: any free port. */
  localPort?: number;
  remote: { host: string; port: number };
  /** Every echo's round-trip time (ms) is recorded here. */
  rtt: Histogram;
  /** After the last send, wait at most this long for outstanding echoes (default 2 s). */
  drainMs?: number;
}

export interface UdpStreamResult {
  sent: number;
  received: number;
  /** Highest sequence number the Connector put on an echo = how many echoes it sent. */
  connectorSent: number;
  /** Echoes that did not carry our SPI or were too short (counted, ignored). */
  foreign: number;
  error: string | undefined;
}

/**
 * One client's PCoIP media flow: datagrams with PCoIP's header (transport header, SPI,
 * sequence number) at a steady bitrate, each carrying its own send time; the Connector's
 * echoes give loss in each direction and the round trip. Sending is driven by a UdpPacer
 * shared by all streams, so a thousand streams cost one timer, not a thousand.
 */
export class UdpStream {
  private readonly options: UdpStreamOptions;
  private readonly socket: UdpSocket;
  private readonly packetsPerMs: number;
  /** Most datagrams one tick may send: a late tick is caught up over several ticks, not in one burst. */
  private readonly maxBurst: number;
  private readonly template: Buffer;
  private startedAt = 0;
  private sending = false;
  private finished = false;
  private drainTimer: NodeJS.Timeout | undefined;
  private resolveDone: ((r: UdpStreamResult) => void) | undefined;
  readonly result: UdpStreamResult = { sent: 0, received: 0, connectorSent: 0, foreign: 0, error: undefined };

  private constructor(options: UdpStreamOptions, socket: UdpSocket) {
    this.options = options;
    this.socket = socket;
    this.packetsPerMs = options.bitrateBps / 8 / options.packetBytes / 1000;
    this.maxBurst = Math.max(2, Math.ceil(this.packetsPerMs * PACER_TICK_MS * 4));
    this.template = Buffer.alloc(Math.max(MIN_CLIENT_PACKET_BYTES, options.packetBytes));
    this.template.writeUInt32BE(0, OFFSET_TRANSPORT);
    this.template.writeUInt32BE(options.spi, OFFSET_SPI);
    socket.on('message', (msg) => this.onEcho(msg));
    // A connected UDP socket reports ICMP port-unreachable as ECONNREFUSED; keep the first error.
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.result.error ??= err.code ?? err.message;
    });
  }

  /** Binds and connects the socket; sending starts when the pacer is given the stream. */
  static async open(options: UdpStreamOptions): Promise<UdpStream> {
    const socket = createSocket(isIP(options.remote.host) === 6 ? 'udp6' : 'udp4');
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind({ address: options.localAddress, port: options.localPort ?? 0 }, () => {
          socket.connect(options.remote.port, options.remote.host, () => {
            socket.off('error', reject);
            resolve();
          });
        });
      });
    } catch (err) {
      socket.close();
      throw err;
    }
    return new UdpStream(options, socket);
  }

  /** Runs the stream on the pacer; resolves when sending is over and the echoes drained. */
  run(pacer: UdpPacer): Promise<UdpStreamResult> {
    this.startedAt = performance.now();
    this.sending = true;
    const done = new Promise<UdpStreamResult>((resolve) => (this.resolveDone = resolve));
    pacer.add(this);
    return done;
  }

  /** Called by the pacer: sends what is due by now, at most `maxBurst` at once. Returns false once done sending. */
  tick(now: number): boolean {
    if (!this.sending) return false;
    const elapsed = now - this.startedAt;
    const end = elapsed >= this.options.durationMs;
    const due = Math.floor(Math.min(elapsed, this.options.durationMs) * this.packetsPerMs) + 1 - this.result.sent;
    for (let i = 0; i < Math.min(due, this.maxBurst); i++) this.sendOne(now);
    if (end) {
      this.sending = false;
      this.startDrain();
    }
    return !end;
  }

  /** Stops at once (used when the run is aborted). */
  close(): void {
    this.sending = false;
    this.finish();
  }

  private sendOne(now: number): void {
    const seq = this.result.sent + 1;
    const packet = Buffer.allocUnsafe(this.template.length);
    this.template.copy(packet);
    packet.writeUInt32BE(seq, OFFSET_SEQ);
    packet.writeUInt32BE(seq, OFFSET_CLIENT_SEQ);
    packet.writeDoubleBE(now, OFFSET_SENT_AT);
    this.result.sent = seq;
    this.socket.send(packet);
  }

  private onEcho(msg: Buffer): void {
    if (msg.length < MIN_CLIENT_PACKET_BYTES || msg.readUInt32BE(OFFSET_SPI) !== (this.options.replySpi ?? this.options.spi)) {
      this.result.foreign++;
      return;
    }
    this.result.received++;
    const connectorSeq = msg.readUInt32BE(OFFSET_SEQ);
    if (connectorSeq > this.result.connectorSent) this.result.connectorSent = connectorSeq;
    this.options.rtt.record(performance.now() - msg.readDoubleBE(OFFSET_SENT_AT));
    if (!this.sending && this.result.received >= this.result.sent) this.finish();
  }

  private startDrain(): void {
    if (this.result.received >= this.result.sent) return this.finish();
    this.drainTimer = setTimeout(() => this.finish(), this.options.drainMs ?? 2000);
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.drainTimer) clearTimeout(this.drainTimer);
    try {
      this.socket.close();
    } catch {
      // already closed
    }
    this.resolveDone?.(this.result);
  }
}

/**
 * One timer that drives every UdpStream. Each tick sends what each stream owes by now, so a
 * late tick (a busy event loop) is caught up over the next ticks rather than lost; each
 * stream caps its burst so 200 streams catching up at once do not flood a receive buffer
 * with an artificial, synchronised burst that independent clients would not produce.
 */
export class UdpPacer {
  private readonly streams = new Set<UdpStream>();
  private timer: NodeJS.Timeout | undefined;

  add(stream: UdpStream): void {
    this.streams.add(stream);
    this.timer ??= setInterval(() => this.tick(), PACER_TICK_MS);
    stream.tick(performance.now());
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const s of this.streams) s.close();
    this.streams.clear();
  }

  private tick(): void {
    const now = performance.now();
    for (const stream of this.streams) if (!stream.tick(now)) this.streams.delete(stream);
    if (this.streams.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}
