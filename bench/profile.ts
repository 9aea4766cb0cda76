/**
 * bench:profile — CPU profiles of pcoip-lb's two data paths under iperf3 load:
 *   udp:         1200-byte datagrams at a fixed rate through pcoipUdp, client → Connector;
 *   udp-reverse: the same, Connector → client (iperf3 -R: the reply path, PCoIP's display direction);
 *   tcp:         one iperf3 stream through pcoipTcp (the pipe).
 * Each path runs in its own pcoip-lb child started with `node --cpu-prof`; the profile is
 * written when the child exits, then summarised as self time per function over the load window
 * only (start-up and shutdown samples are left out).
 *
 *   node bench/profile.ts [--udp-rate 100] [--seconds 6] [--top 15] [--only udp|udp-reverse|tcp]
 *
 * The .cpuprofile files are kept in bench/results/ (open them in Chrome DevTools → Performance).
 */
import { mkdtempSync, mkdirSync, readdirSync, copyFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { startPcoipLb, CONNECTOR_HOST } from './lib/peers.ts';
import { iperfTcp, iperfUdp } from './lib/iperf.ts';
import { freeTcpUdpPort } from './lib/ports.ts';
import { loadAverage } from './lib/proc.ts';
import { summariseProfileFile, type ProfileSummary } from './lib/cpuprofile.ts';
import { markdownTable, fmt } from './lib/table.ts';

const { values: args } = parseArgs({
  options: {
    'udp-rate': { type: 'string', default: '100' },
    seconds: { type: 'string', default: '6' },
    top: { type: 'string', default: '15' },
    only: { type: 'string' },
  },
});
const udpMbps = Number(args['udp-rate']);
const seconds = Number(args.seconds);
const topN = Number(args.top);
const log = (line: string) => process.stdout.write(`${line}\n`);

type ProfiledPath = 'udp' | 'udp-reverse' | 'tcp';

interface PathProfile {
  path: ProfiledPath;
  load: string;
  cpuSeconds: number;
  perUnit: string;
  summary: ProfileSummary;
  file: string;
}

async function profilePath(path: ProfiledPath, serverPort: number, resultsDir: string, stamp: string): Promise<PathProfile> {
  const dir = mkdtempSync(join(tmpdir(), `plb-prof-${path}-`));
  try {
    const peer = await startPcoipLb(dir, serverPort, { execArgv: ['--cpu-prof', `--cpu-prof-dir=${dir}`] });
    let load: string;
    let perUnit: string;
    const mark = async () => (await peer.request<{ monotonicUs: number }>('mark')).monotonicUs;
    let window: { fromUs: number; toUs: number } | undefined;
    const before = peer.cpuSeconds();
    try {
      const fromUs = await mark();
      if (path !== 'tcp') {
        const r = await iperfUdp(peer.host, peer.port, serverPort, seconds, udpMbps * 1e6, path === 'udp-reverse');
        const packets = r.packetsSent - r.packetsLost;
        const cpu = peer.cpuSeconds() - before;
        load = `${path === 'udp' ? 'UDP client → Connector' : 'UDP Connector → client'} ${udpMbps} Mbit/s offered, ${fmt(r.deliveredBitsPerSecond / 1e6, 0)} delivered, loss ${fmt(r.lostPercent, 3)} %`;
        perUnit = `${fmt(cpu / (packets / 1e6))} CPU s per million packets (${fmt((cpu * 1e6) / packets, 1)} µs/packet)`;
        window = { fromUs, toUs: await mark() };
      } else {
        const r = await iperfTcp(peer.host, peer.port, serverPort, seconds, 1);
        const cpu = peer.cpuSeconds() - before;
        load = `TCP 1 stream, ${fmt(r.bitsPerSecond / 1e9)} Gbit/s`;
        perUnit = `${fmt(cpu / (r.bytes / 1e9))} CPU s per GB`;
        window = { fromUs, toUs: await mark() };
      }
    } finally {
      await peer.stop();
    }
    const cpuSeconds = peer.cpuSeconds();
    const profile = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
    if (!profile) throw new Error(`node --cpu-prof wrote no profile into ${dir}`);
    const kept = join(resultsDir, `profile-${path}-${stamp}.cpuprofile`);
    copyFileSync(join(dir, profile), kept);
    return { path, load, cpuSeconds, perUnit, summary: summariseProfileFile(kept, topN, window), file: kept };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const started = new Date();
  const stamp = started.toISOString().replace(/[:.]/g, '-');
  log(`# bench:profile — ${started.toISOString()}, load average ${loadAverage()}`);
  const resultsDir = fileURLToPath(new URL('./results/', import.meta.url));
  mkdirSync(resultsDir, { recursive: true });
  const serverPort = await freeTcpUdpPort(CONNECTOR_HOST);
  const paths = (['udp', 'udp-reverse', 'tcp'] as const).filter((p) => !args.only || args.only === p);
  const out: PathProfile[] = [];
  for (const path of paths) {
    const p = await profilePath(path, serverPort, resultsDir, stamp);
    out.push(p);
    log(`\n## ${path.toUpperCase()} path — ${p.load}; ${p.perUnit}`);
    log(`profile: ${p.file}; main thread busy ${fmt(p.summary.busyMs, 0)} ms of the ${fmt(p.summary.totalMs, 0)} ms under load`);
    log(
      markdownTable(
        ['self ms', '% busy', 'function', 'where'],
        p.summary.top.map((t) => [fmt(t.ms, 0), fmt(t.percent, 1), t.name, t.where]),
      ),
    );
  }
  writeFileSync(join(resultsDir, `profile-${stamp}.json`), JSON.stringify({ startedAt: started.toISOString(), udpMbps, seconds, paths: out }, null, 2));
  log(`\nload average now ${loadAverage()}`);
}

await main();
