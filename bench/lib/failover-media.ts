import { createSocket } from 'node:dgram';
import { performance } from 'node:perf_hooks';
import type { Endpoint } from '../../src/sim/client.ts';
import { MIN_CLIENT_PACKET_BYTES, OFFSET_CLIENT_SEQ, OFFSET_SEQ, OFFSET_SPI } from '../../src/sim/wire.ts';

/**
 * A PCoIP media stream from a fixed source address:port (as real clients send it) to one of
 * several pcoip-lb instances, that moves to the next instance when its echoes stop — what an
 * ECMP router or a front load balancer does once it takes a dead member out (here the client
 * side notices after `deadAfterMs` without an echo). Records the interruption: from the last
 * echo before the move to the first echo after it.
 */
export interface FailoverOptions {
  spi: number;
  /** The SPI the Connector's echoes carry (its own SA); default: `spi`. */
  replySpi?: number;
  localAddress: string;
  /** The instance to start on first; the rest are tried in order when it stops answering. */
  endpoints: Endpoint[];
  intervalMs: number;
  durationMs: number;
  packetBytes: number;
  deadAfterMs: number;
  /** Stop early (the session ended). */
  stopped?: () => boolean;
}

export interface FailoverResult {
  sent: number;
  received: number;
  /** Moved to another instance. */
  moved: boolean;
  /** Echoes came back after the move. */
  resumed: boolean;
  /** Last echo before the move → first echo after it (ms); undefined when it did not resume. */
  gapMs: number | undefined;
  /** The move (first datagram to the new instance) → first echo after it (ms): the proxy's part of the gap. */
  resumeMs: number | undefined;
}

export function failoverMedia(options: FailoverOptions): Promise<FailoverResult> {
  const socket = createSocket('udp4');
  const result: FailoverResult = { sent: 0, received: 0, moved: false, resumed: false, gapMs: undefined, resumeMs: undefined };
  let movedAt = 0;
  let current = 0;
  let lastEcho = performance.now();
  let lastEchoBeforeMove: number | undefined;
  const packet = Buffer.alloc(Math.max(MIN_CLIENT_PACKET_BYTES, options.packetBytes));
  packet.writeUInt32BE(options.spi, OFFSET_SPI);
  socket.on('message', (msg) => {
    if (msg.length < MIN_CLIENT_PACKET_BYTES || msg.readUInt32BE(OFFSET_SPI) !== (options.replySpi ?? options.spi)) return;
    result.received++;
    lastEcho = performance.now();
    if (result.moved && !result.resumed) {
      result.resumed = true;
      result.gapMs = lastEcho - lastEchoBeforeMove!;
      result.resumeMs = lastEcho - movedAt;
    }
  });
  socket.on('error', () => undefined);
  return new Promise((resolve) => {
    socket.bind({ address: options.localAddress, port: 0 }, () => {
      const started = performance.now();
      const timer = setInterval(() => {
        const now = performance.now();
        if (now - started >= options.durationMs || options.stopped?.()) {
          clearInterval(timer);
          setTimeout(() => (socket.close(), resolve(result)), 200);
          return;
        }
        if (now - lastEcho > options.deadAfterMs && current + 1 < options.endpoints.length && !result.moved) {
          result.moved = true;
          lastEchoBeforeMove = lastEcho;
          movedAt = now;
          current++;
        }
        const seq = ++result.sent;
        packet.writeUInt32BE(seq, OFFSET_SEQ);
        packet.writeUInt32BE(seq, OFFSET_CLIENT_SEQ);
        const to = options.endpoints[current]!;
        socket.send(packet, to.port, to.host);
      }, options.intervalMs);
    });
  });
}
