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

let sink = 0;
const counters = { packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0 };
const part = () => ({ clientPort: 1, startedAt: 0, endedAt: undefined, bytesIn: 0, bytesOut: 0, packetsIn: 0, packetsOut: 0, probe: undefined, quality: undefined });
/** What each case does per datagram; every case walks the same kind of buffers. */
const cases: Array<{ name: string; packets: () => Buffer[]; run: (packets: Buffer[]) => number }> = [
  // The reference touches the header words the meter reads, so memory traffic is the same.
  { name: 'reference: read the two header words', packets: shapes['PCoIP in order']!, run: (p) => timeLoop(p, (msg) => (sink += msg.readUInt32BE(4) ^ msg.readUInt32BE(8))) },
  { name: 'reference: that + one Date.now()', packets: shapes['PCoIP in order']!, run: (p) => timeLoop(p, (msg) => (sink += (msg.readUInt32BE(4) ^ msg.readUInt32BE(8)) + Date.now())) },
  ...Object.entries(shapes).map(([name, make]) => ({
    name: `meter: ${name}`,
    packets: make,
    run: (p: Buffer[]) => {
      const meter = new DirectionMeter();
      const ns = timeLoop(p, (msg) => meter.observe(msg));
      sink += meter.received;
      return ns;
    },
  })),
  {
    name: 'UdpTap.fromClient (meter, sampled clock), in order',
    packets: shapes['PCoIP in order']!,
    run: (p) => {
      const tap = new UdpTap(part(), counters, true, () => undefined);
      const ns = timeLoop(p, (msg) => tap.fromClient(msg));
      sink += tap.fromClientMeter!.received;
      return ns;
    },
  },
];
// Rounds interleave the cases, so a neighbour's burst of load hits them all alike.
const samples = new Map<string, number[]>(cases.map((c) => [c.name, []]));
const pools = new Map(cases.map((c) => [c.name, c.packets()]));
for (let r = 0; r < ROUNDS; r++) for (const c of cases) samples.get(c.name)!.push(c.run(pools.get(c.name)!));
const results: Array<[string, number[]]> = [...samples];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
process.stdout.write(`# bench:media-meter — ${new Date().toISOString()}\nnode ${process.version}, ${cpus().length} × ${cpus()[0]?.model.trim()}, load average ${loadAverage()}\n`);
// On a shared machine the minimum is the least disturbed round; a case's own cost is its
// difference to the reference that reads the same header words (same memory walk).
const refMin = Math.min(...samples.get(cases[0]!.name)!);
const refMedian = median(samples.get(cases[0]!.name)!);
process.stdout.write(`${N} datagrams per round, ${ROUNDS} rounds interleaved; ns per datagram\n\n| case | min | median | max | min − reference min | median − reference median |\n| --- | --- | --- | --- | --- | --- |\n`);
for (const [name, xs] of results) {
  const min = Math.min(...xs);
  process.stdout.write(`| ${name} | ${min.toFixed(1)} | ${median(xs).toFixed(1)} | ${Math.max(...xs).toFixed(1)} | ${(min - refMin).toFixed(1)} | ${(median(xs) - refMedian).toFixed(1)} |\n`);
}
process.stdout.write(`\nload average after: ${loadAverage()}${sink === 0.5 ? ' ' : ''}\n`);
