/**
 * bench:media-meter — CPU cost of the per-datagram media-quality meter alone (no sockets), in ns
 * per datagram, for the traffic shapes it meets: PCoIP-like in order, with 10 % loss, reordered,
 * and iperf3's payload (what bench:throughput forwards: its timestamp looks like an SPI and its
 * microseconds like a lossy sequence, the meter's most expensive path). Compared with a clock read
 * per datagram (Date.now(), what the meter's sampling avoids) and an empty loop, in the same run.
 *
 *   node bench/media-meter.ts [--datagrams N] [--rounds N]
 */
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { cpus } from 'node:os';
import { DirectionMeter } from '../src/pcoip/media-meter.ts';
import { UdpTap } from '../src/sessions/registry.ts';
import { loadAverage } from './lib/proc.ts';

const { values: args } = parseArgs({ options: { datagrams: { type: 'string', default: '262144' }, rounds: { type: 'string', default: '15' } } });
/** Every datagram of a round is a buffer of its own (64 bytes: the meter reads only the header), so no sequence is rewritten while timing. */
const N = Number(args.datagrams);
const ROUNDS = Number(args.rounds);
const POOL = N;

function pcoip(seqs: (i: number) => number): Buffer[] {
  return Array.from({ length: POOL }, (_, i) => {
    const b = Buffer.alloc(64);
    b.writeUInt32BE(0, 0);
    b.writeUInt32BE(0x1234abcd, 4);
    b.writeUInt32BE(seqs(i) >>> 0, 8);
    return b;
  });
}

function iperf3(): Buffer[] {
  // iperf3 UDP payload: tv_sec, tv_usec, packet count (32-bit counters), at ~80 k packets/s.
  return Array.from({ length: POOL }, (_, i) => {
    const b = Buffer.alloc(64);
    const usec = i * 12;
    b.writeUInt32BE(1_700_000_000 + Math.floor(usec / 1e6), 0);
    b.writeUInt32BE(usec % 1e6, 4);
    b.writeUInt32BE(i + 1, 8);
    return b;
  });
}

/** Sequence numbers continue across pool wraps, so the meter sees one long flow. */
const shapes: Record<string, () => Buffer[]> = {
  'PCoIP in order': () => pcoip((i) => i + 1),
  'PCoIP, every 10th lost': () => pcoip((i) => i + 1 + Math.floor(i / 9)),
  'PCoIP, pairs swapped': () => pcoip((i) => (i % 2 === 0 ? i + 2 : i)),
  'iperf3 payload': iperf3,
};

function timeLoop(packets: Buffer[], body: (msg: Buffer, i: number) => void): number {
  const t = performance.now();
  for (let i = 0; i < N; i++) body(packets[i]!, i);
  return ((performance.now() - t) * 1e6) / N;
}

const results: Array<[string, number[]]> = [];
let sink = 0;
for (const [name, make] of Object.entries(shapes)) {
  const samples: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const packets = make();
    const meter = new DirectionMeter();
    samples.push(timeLoop(packets, (msg) => meter.observe(msg)));
    sink += meter.received;
  }
  results.push([name, samples]);
}
{
  const packets = pcoip((i) => i + 1);
  const counters = { packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0 };
  const samples: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const tap = new UdpTap({ clientPort: 1, startedAt: 0, endedAt: undefined, bytesIn: 0, bytesOut: 0, packetsIn: 0, packetsOut: 0, probe: undefined, quality: undefined }, counters, true, () => undefined);
    samples.push(timeLoop(packets, (msg) => tap.fromClient(msg)));
    sink += tap.fromClientMeter!.received;
  }
  results.push(['UdpTap.fromClient (meter, sampled clock), in order', samples]);
}
{
  const packets = pcoip((i) => i + 1);
  const samples: number[] = [];
  for (let r = 0; r < ROUNDS; r++) samples.push(timeLoop(packets, (msg, i) => (sink += Date.now() + msg.length + i)));
  results.push(['reference: one Date.now() per datagram', samples]);
  const empty: number[] = [];
  for (let r = 0; r < ROUNDS; r++) empty.push(timeLoop(packets, (msg, i) => (sink += msg.length + i)));
  results.push(['reference: empty loop', empty]);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
process.stdout.write(`# bench:media-meter — ${new Date().toISOString()}\nnode ${process.version}, ${cpus().length} × ${cpus()[0]?.model.trim()}, load average ${loadAverage()}\n`);
// On a shared machine the minimum is the least disturbed round; the cost is the difference to the empty loop (same memory walk).
const emptyMin = Math.min(...results.find(([n]) => n === 'reference: empty loop')![1]);
process.stdout.write(`${N} datagrams × ${ROUNDS} rounds per shape; ns per datagram\n\n| shape | min | median | max | min − empty loop's min |\n| --- | --- | --- | --- | --- |\n`);
for (const [name, samples] of results) {
  const min = Math.min(...samples);
  process.stdout.write(`| ${name} | ${min.toFixed(1)} | ${median(samples).toFixed(1)} | ${Math.max(...samples).toFixed(1)} | ${(min - emptyMin).toFixed(1)} |\n`);
}
process.stdout.write(`\nload average after: ${loadAverage()}${sink === 0.5 ? ' ' : ''}\n`);
