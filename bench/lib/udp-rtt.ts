/**
 * A UDP round-trip probe for bench:kernel, run inside a network namespace:
 *   node bench/lib/udp-rtt.ts echo HOST PORT            echoes every datagram to its sender (until killed)
 *   node bench/lib/udp-rtt.ts probe SRC HOST PORT N MS  sends N 1200-byte probes MS ms apart from SRC,
 *                                                       prints {"sent","received","p50Ms","p99Ms","maxMs"}
 * Each probe carries its sequence number; the send time stays here (no clocks compared across processes).
 */
import { createSocket } from 'node:dgram';

const [mode, ...rest] = process.argv.slice(2);

if (mode === 'echo') {
  const [host, port] = rest;
  const s = createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
  s.on('message', (msg, r) => s.send(msg, r.port, r.address));
  s.bind(Number(port), host, () => process.stdout.write('echo ready\n'));
} else if (mode === 'probe') {
  const [src, host, port, countText, everyText] = rest;
  const count = Number(countText);
  const every = Number(everyText);
  const sentAt = new Float64Array(count);
  const rtts: number[] = [];
  const s = createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
  s.on('message', (msg) => {
    const seq = msg.readUInt32BE(0);
    if (seq < count && sentAt[seq]! > 0) {
      rtts.push(performance.now() - sentAt[seq]!);
      sentAt[seq] = 0;
    }
  });
  s.bind(0, src, () => {
    let seq = 0;
    const payload = Buffer.alloc(1200);
    const timer = setInterval(() => {
      payload.writeUInt32BE(seq, 0);
      sentAt[seq] = performance.now();
      s.send(payload, Number(port), host);
      if (++seq >= count) {
        clearInterval(timer);
        // Late answers past 1 s count as lost.
        setTimeout(() => {
          rtts.sort((a, b) => a - b);
          const at = (q: number) => (rtts.length === 0 ? NaN : rtts[Math.min(rtts.length - 1, Math.floor(q * rtts.length))]!);
          process.stdout.write(`${JSON.stringify({ sent: count, received: rtts.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: rtts[rtts.length - 1] ?? NaN })}\n`);
          s.close();
        }, 1000);
      }
    }, every);
  });
} else {
  process.stderr.write('usage: udp-rtt.ts echo HOST PORT | probe SRC HOST PORT COUNT EVERY_MS\n');
  process.exitCode = 2;
}
