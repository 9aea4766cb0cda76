/**
 * bench:throughput — pcoip-lb side by side with HAProxy and NGINX stream on this machine, with
 * iperf3 as the traffic source and an iperf3 server as the "Connector" on 127.0.1.1.
 *
 *   node bench/throughput.ts [--quick] [--peer-workers 1|auto] [--tcp-seconds N] [--udp-seconds N]
 *
 * Measures, for direct (no proxy), pcoip-lb, HAProxy (TCP only) and NGINX stream:
 *   - TCP throughput with 1 and 8 streams, and the proxy's CPU seconds per GB forwarded;
 *   - UDP, 1200-byte datagrams: the highest offered rate delivered with ≤ 0.1 % loss (doubling,
 *     then bisection), and the proxy's CPU seconds per million packets forwarded.
 * Prints Markdown tables and writes bench/results/throughput-<time>.json.
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { ensurePeerPackages, directPeer, startPcoipLb, startHaproxy, startNginx, CONNECTOR_HOST, type Peer } from './lib/peers.ts';
import { iperfTcp, iperfUdp, type UdpResult } from './lib/iperf.ts';
import { freeTcpUdpPort } from './lib/ports.ts';
import { loadAverage } from './lib/proc.ts';
import { markdownTable, fmt } from './lib/table.ts';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    'peer-workers': { type: 'string', default: '1' },
    'tcp-seconds': { type: 'string' },
    'udp-seconds': { type: 'string' },
    only: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  process.stdout.write(
    'usage: npm run bench:throughput -- [--quick] [--peer-workers 1|auto] [--tcp-seconds N] [--udp-seconds N] [--only pcoip-lb,haproxy,nginx,direct,pcoip-lb-mq-off]\n',
  );
  process.exit(0);
}

const quick = args.quick;
const tcpSeconds = Number(args['tcp-seconds'] ?? (quick ? 2 : 5));
const udpSeconds = Number(args['udp-seconds'] ?? (quick ? 1 : 3));
const peerWorkers = args['peer-workers'] === 'auto' ? 'auto' : Number(args['peer-workers']);
const only = args.only ? new Set(args.only.split(',')) : undefined;
/** Doubling starts here for every peer, so the lower steps are common rates to compare CPU at. */
const UDP_BASE_BPS = (quick ? 200 : 100) * 1e6;
const UDP_MAX_DOUBLINGS = quick ? 3 : 6; // 100 M → 3.2 G (quick: 200 M → 800 M)
const UDP_BISECT_STEPS = quick ? 0 : 2;
const MAX_LOSS_PERCENT = 0.1;
/** A step is re-run once before it counts as failed: one burst from a neighbour's tests is not the proxy's limit. */
const RETRIES_ON_LOSS = quick ? 0 : 1;
const TCP_STREAMS = [1, 8];
/** Seconds iperf3 spends around a test (server start, control exchange, result exchange). */
const OVERHEAD_S = 1.2;

const log = (line: string) => process.stdout.write(`${line}\n`);

interface Measured<T> {
  result: T;
  cpuSeconds: number;
}

async function withCpu<T>(peer: Peer, run: () => Promise<T>): Promise<Measured<T>> {
  const before = peer.cpuSeconds();
  const result = await run();
  return { result, cpuSeconds: peer.cpuSeconds() - before };
}

interface TcpRow {
  peer: string;
  streams: number;
  gbps: number;
  bytes: number;
  cpuSeconds: number;
  cpuSecondsPerGB: number | undefined;
  error?: string;
}

interface UdpStep extends UdpResult {
  cpuSeconds: number;
  pass: boolean;
  attempt: number;
  /** iperf3 failed at this rate (the step counts as failed). */
  error?: string;
}

type Direction = 'forward' | 'reverse';
const DIRECTIONS: Direction[] = ['forward', 'reverse'];
const DIRECTION_TITLE: Record<Direction, string> = {
  forward: 'client → Connector',
  reverse: 'Connector → client (iperf3 -R; the direction of PCoIP\'s display stream)',
};

interface UdpRow {
  peer: string;
  direction: Direction;
  steps: UdpStep[];
  best: UdpStep | undefined;
  generatorLimited: boolean;
  note?: string;
}

async function tcpTest(peer: Peer, serverPort: number, streams: number): Promise<TcpRow> {
  try {
    const { result, cpuSeconds } = await withCpu(peer, () => iperfTcp(peer.host, peer.port, serverPort, tcpSeconds, streams));
    const gb = result.bytes / 1e9;
    return { peer: peer.name, streams, gbps: result.bitsPerSecond / 1e9, bytes: result.bytes, cpuSeconds, cpuSecondsPerGB: peer.pid ? cpuSeconds / gb : undefined };
  } catch (err) {
    return { peer: peer.name, streams, gbps: 0, bytes: 0, cpuSeconds: 0, cpuSecondsPerGB: undefined, error: (err as Error).message };
  }
}

async function udpStep(peer: Peer, serverPort: number, bps: number, direction: Direction): Promise<UdpStep> {
  let step: UdpStep | undefined;
  for (let attempt = 1; attempt <= 1 + RETRIES_ON_LOSS; attempt++) {
    let measured: Measured<UdpResult>;
    try {
      measured = await withCpu(peer, () => iperfUdp(peer.host, peer.port, serverPort, udpSeconds, bps, direction === 'reverse'));
    } catch (err) {
      // iperf3 gave up (e.g. its control exchange timed out under overload): a failed step, not the end of the run.
      const error = (err as Error).message.split('\n')[0]!.slice(0, 160);
      log(`  ${peer.name.padEnd(8)} offered ${fmt(bps / 1e6, 0).padStart(5)} Mbit/s → iperf3 failed: ${error}`);
      step = { offeredBitsPerSecond: bps, sentBitsPerSecond: 0, deliveredBitsPerSecond: 0, packetsSent: 0, packetsLost: 0, lostPercent: 100, seconds: udpSeconds, cpuSeconds: 0, pass: false, attempt, error };
      continue;
    }
    const { result, cpuSeconds } = measured;
    step = { ...result, cpuSeconds, pass: result.lostPercent <= MAX_LOSS_PERCENT, attempt };
    log(
      `  ${peer.name.padEnd(8)} offered ${fmt(bps / 1e6, 0).padStart(5)} Mbit/s → delivered ${fmt(step.deliveredBitsPerSecond / 1e6, 0).padStart(5)}, loss ${fmt(step.lostPercent, 3)} %${step.pass ? '' : ' ✗'}${attempt > 1 ? ' (retry)' : ''}`,
    );
    if (step.pass) break;
  }
  return step!;
}

/** Doubling from the base rate until loss exceeds 0.1 % (or iperf3 itself cannot send faster), then bisection. */
async function udpSearch(peer: Peer, serverPort: number, direction: Direction): Promise<UdpRow> {
  const steps: UdpStep[] = [];
  let good: UdpStep | undefined;
  let badRate: number | undefined;
  let generatorLimited = false;
  let rate = UDP_BASE_BPS;
  try {
    for (let i = 0; i < UDP_MAX_DOUBLINGS; i++) {
      const step = await udpStep(peer, serverPort, rate, direction);
      steps.push(step);
      if (!step.pass) {
        badRate = rate;
        break;
      }
      good = step;
      if (step.sentBitsPerSecond < 0.9 * rate) {
        generatorLimited = true; // the iperf3 client is the limit here, not the peer
        break;
      }
      rate *= 2;
    }
    if (good === undefined && badRate !== undefined) {
      // Even the base rate lost packets: halve (bounded) to find a rate that passes.
      for (let r = badRate / 2, i = 0; i < 3 && good === undefined; r /= 2, i++) {
        const step = await udpStep(peer, serverPort, r, direction);
        steps.push(step);
        if (step.pass) good = step;
        else badRate = r;
      }
    }
    if (good !== undefined && badRate !== undefined) {
      let lo = good.offeredBitsPerSecond;
      let hi = badRate;
      for (let i = 0; i < UDP_BISECT_STEPS; i++) {
        const mid = (lo + hi) / 2;
        const step = await udpStep(peer, serverPort, mid, direction);
        steps.push(step);
        if (step.pass) {
          good = step;
          lo = mid;
        } else hi = mid;
      }
    }
    return { peer: peer.name, direction, steps, best: good, generatorLimited };
  } catch (err) {
    return { peer: peer.name, direction, steps, best: good, generatorLimited, note: (err as Error).message };
  }
}

function estimateSeconds(tcpPeers: number, udpPeers: number): number {
  const tcp = TCP_STREAMS.length * tcpPeers * (tcpSeconds + OVERHEAD_S);
  const udpStepsPerPeer = UDP_MAX_DOUBLINGS + UDP_BISECT_STEPS + 1;
  return tcp + DIRECTIONS.length * udpPeers * udpStepsPerPeer * (udpSeconds + OVERHEAD_S) + 10;
}

const cpuPerMpkt = (s: UdpStep) => (s.error ? NaN : s.cpuSeconds / ((s.packetsSent - s.packetsLost) / 1e6));

async function main(): Promise<void> {
  const started = new Date();
  log(`# bench:throughput — ${started.toISOString()}`);
  log(`node ${process.version}, ${cpus().length} cores, load average ${loadAverage()}${quick ? ', --quick' : ''}`);
  const pkgs = ensurePeerPackages(log);
  for (const note of pkgs.notes) log(`note: ${note}`);
  if (!pkgs.iperf3) {
    log('iperf3 is the traffic source and cannot be skipped: install it (apt-get install iperf3) and run again.');
    process.exitCode = 1;
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'plb-bench-'));
  const peers: Peer[] = [];
  const skipped: string[] = [];
  try {
    const serverPort = await freeTcpUdpPort(CONNECTOR_HOST);
    const want = (name: string) => only === undefined || only.has(name);
    if (want('direct')) peers.push(directPeer(serverPort));
    // A peer that fails to start is reported and skipped; the others still run.
    const tryStart = async (name: string, start: () => Promise<Peer>) => {
      try {
        peers.push(await start());
      } catch (err) {
        skipped.push(`${name} (failed to start: ${(err as Error).message.split('\n').slice(-1)[0]})`);
      }
    };
    // The cost of the media-quality meters: the same proxy with listeners.pcoipUdp.mediaQuality off
    // (only when asked for), run in the order --only names them so repeated runs can alternate.
    const order = args.only ? args.only.split(',') : [];
    const variants = [
      { name: 'pcoip-lb', wanted: want('pcoip-lb'), start: () => startPcoipLb(dir, serverPort) },
      { name: 'pcoip-lb-mq-off', wanted: only?.has('pcoip-lb-mq-off') === true, start: () => startPcoipLb(dir, serverPort, { mediaQuality: false }) },
    ].sort((x, y) => order.indexOf(x.name) - order.indexOf(y.name));
    for (const v of variants) if (v.wanted) await tryStart(v.name, v.start);
    if (want('haproxy')) {
      if (pkgs.haproxy) await tryStart('haproxy', () => startHaproxy(dir, serverPort, peerWorkers));
      else skipped.push('haproxy (not installed)');
    }
    if (want('nginx')) {
      if (pkgs.nginxStream) {
        await tryStart('nginx', () => startNginx(dir, serverPort, peerWorkers));
        // pcoip-lb's UDP listener asks for a 4 MiB receive buffer; so may NGINX, for a like-for-like UDP row.
        await tryStart('nginx-rcvbuf=4m', () => startNginx(dir, serverPort, peerWorkers, '4m'));
      } else skipped.push('nginx (nginx-light + libnginx-mod-stream not installed)');
    }
    const udpPeers = peers.filter((p) => p.udp);
    const tcpPeers = peers.filter((p) => p.tcp !== false);
    log(
      `peers: ${peers.map((p) => `${p.name} ${p.host}:${p.port}`).join(', ')}; Connector (iperf3 -s) ${CONNECTOR_HOST}:${serverPort}; peer workers/threads: ${peerWorkers}`,
    );
    log(`estimated time: up to ~${Math.round(estimateSeconds(tcpPeers.length, udpPeers.length) / 60)} min (${tcpSeconds} s per TCP test, ${udpSeconds} s per UDP step)`);

    const tcpRows: TcpRow[] = [];
    for (const streams of TCP_STREAMS) {
      log(`TCP, ${streams} stream(s), ${tcpSeconds} s each:`);
      for (const peer of tcpPeers) {
        const row = await tcpTest(peer, serverPort, streams);
        tcpRows.push(row);
        log(`  ${peer.name.padEnd(8)} ${row.error ? `error: ${row.error}` : `${fmt(row.gbps)} Gbit/s, CPU ${fmt(row.cpuSeconds)} s`}`);
      }
    }
    const udpRows: UdpRow[] = [];
    for (const direction of DIRECTIONS) {
      for (const peer of udpPeers) {
        log(`UDP search, ${DIRECTION_TITLE[direction].split(' (')[0]}, ${peer.name}:`);
        udpRows.push(await udpSearch(peer, serverPort, direction));
      }
      for (const peer of peers.filter((p) => !p.udp)) {
        udpRows.push({ peer: peer.name, direction, steps: [], best: undefined, generatorLimited: false, note: peer.udpNote ?? 'no UDP' });
      }
    }

    const report = buildReport(peers, tcpRows, udpRows, skipped);
    log('');
    log(report.text);
    const resultsDir = fileURLToPath(new URL('./results/', import.meta.url));
    mkdirSync(resultsDir, { recursive: true });
    const file = join(resultsDir, `throughput-${started.toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(
      file,
      JSON.stringify(
        {
          startedAt: started.toISOString(),
          node: process.version,
          cores: cpus().length,
          loadAverageAtEnd: loadAverage(),
          options: { quick, tcpSeconds, udpSeconds, peerWorkers, maxLossPercent: MAX_LOSS_PERCENT },
          skipped,
          notes: pkgs.notes,
          tcp: tcpRows,
          udp: udpRows,
          goals: report.goals,
        },
        null,
        2,
      ),
    );
    log(`\nresults: ${file}`);
    log(`took ${Math.round((Date.now() - started.getTime()) / 1000)} s; load average now ${loadAverage()}`);
  } finally {
    for (const peer of peers) await peer.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Goal {
  goal: string;
  measured: string;
  met: boolean | undefined;
}

function buildReport(peers: Peer[], tcpRows: TcpRow[], udpRows: UdpRow[], skipped: string[]): { text: string; goals: Goal[] } {
  const proxies = peers.filter((p) => p.pid !== undefined).map((p) => p.name);
  const tcp = (peer: string, streams: number) => tcpRows.find((r) => r.peer === peer && r.streams === streams);
  const bestTcp = (streams: number) => Math.max(0, ...proxies.map((p) => tcp(p, streams)?.gbps ?? 0));
  const bestTcpCpu = (streams: number) => Math.min(...proxies.map((p) => tcp(p, streams)?.cpuSecondsPerGB ?? Infinity));
  const ratio = (v: number | undefined, best: number) => (v === undefined || !(best > 0) || !Number.isFinite(best) ? '–' : `${fmt(v / best)}×`);

  const tcpHeader = ['peer'];
  for (const s of TCP_STREAMS) tcpHeader.push(`TCP ×${s} Gbit/s`, 'vs best', `CPU s/GB ×${s}`, 'vs best');
  const tcpTable = markdownTable(
    tcpHeader,
    peers.filter((p) => p.tcp !== false).map((p) => {
      const cells: string[] = [p.name];
      for (const s of TCP_STREAMS) {
        const r = tcp(p.name, s);
        const isProxy = p.pid !== undefined;
        cells.push(r?.error ? 'error' : fmt(r?.gbps), isProxy ? ratio(r?.gbps, bestTcp(s)) : '', fmt(r?.cpuSecondsPerGB), isProxy ? ratio(r?.cpuSecondsPerGB, bestTcpCpu(s)) : '');
      }
      return cells;
    }),
  );

  const udpTables = DIRECTIONS.map((d) => `### UDP ${DIRECTION_TITLE[d]}\n${udpTable(udpRows.filter((r) => r.direction === d), proxies, ratio)}`);

  const goals: Goal[] = [];
  for (const s of TCP_STREAMS) {
    const mine = tcp('pcoip-lb', s)?.gbps;
    const ha = tcp('haproxy', s)?.gbps;
    goals.push({
      goal: `4172/TCP ×${s} stream(s) ≥ 0.9× HAProxy`,
      measured: mine !== undefined && ha ? `${fmt(mine / ha)}× (${fmt(mine)} vs ${fmt(ha)} Gbit/s)` : 'not measured',
      met: mine !== undefined && ha ? mine >= 0.9 * ha : undefined,
    });
  }
  // Against each NGINX variant: its default config, and with pcoip-lb's listener buffer size.
  const nginxes = [...new Set(udpRows.filter((r) => r.peer.startsWith('nginx')).map((r) => r.peer))];
  for (const [d, nginx] of DIRECTIONS.flatMap((dir) => nginxes.map((n) => [dir, n] as const))) {
    const mine = udpRows.find((r) => r.peer === 'pcoip-lb' && r.direction === d);
    const ngx = udpRows.find((r) => r.peer === nginx && r.direction === d);
    const mb = mine?.best;
    const nb = ngx?.best;
    const dir = d === 'forward' ? 'client → Connector' : 'Connector → client';
    goals.push({
      goal: `UDP ${dir}: ≤ 0.1 %-loss rate ≥ 1.2× ${nginx}`,
      measured: mb && nb ? `${fmt(mb.deliveredBitsPerSecond / nb.deliveredBitsPerSecond)}× (${fmt(mb.deliveredBitsPerSecond / 1e6, 0)} vs ${fmt(nb.deliveredBitsPerSecond / 1e6, 0)} Mbit/s)` : 'not measured',
      met: mb && nb ? mb.deliveredBitsPerSecond >= 1.2 * nb.deliveredBitsPerSecond : undefined,
    });
    const mc = mine?.steps[0];
    const nc = ngx?.steps[0];
    goals.push({
      goal: `UDP ${dir}: CPU per million packets ≤ ${nginx}'s (both at ${fmt(UDP_BASE_BPS / 1e6, 0)} Mbit/s)`,
      measured: mc && nc ? `${fmt(cpuPerMpkt(mc))} vs ${fmt(cpuPerMpkt(nc))} s/Mpkt (${fmt(cpuPerMpkt(mc) / cpuPerMpkt(nc))}×)` : 'not measured',
      met: mc && nc ? cpuPerMpkt(mc) <= cpuPerMpkt(nc) : undefined,
    });
  }
  const goalTable = markdownTable(
    ['goal', 'measured', 'met'],
    goals.map((g) => [g.goal, g.measured, g.met === undefined ? '–' : g.met ? 'yes' : 'NO']),
  );
  const text = [
    '## TCP (iperf3 -c … -t ' + tcpSeconds + ' -P k; Gbit/s received by the server; CPU = proxy process user+sys)',
    tcpTable,
    '',
    `## UDP (iperf3 -u -l 1200 -w 4M -b RATE -t ${udpSeconds}; highest rate with ≤ ${MAX_LOSS_PERCENT} % loss; doubling from ${UDP_BASE_BPS / 1e6} Mbit/s then ${UDP_BISECT_STEPS} bisection step(s))`,
    udpTables.join('\n\n'),
    '',
    '## Goals',
    goalTable,
    ...(skipped.length ? ['', `skipped: ${skipped.join('; ')}`] : []),
  ].join('\n');
  return { text, goals };
}

/**
 * One direction's UDP table. CPU per packet is given at the best rate and at the base rate
 * (the first step, offered to every peer alike, so it compares like with like).
 */
function udpTable(rows: UdpRow[], proxies: string[], ratio: (v: number | undefined, best: number) => string): string {
  const proxyRows = rows.filter((r) => proxies.includes(r.peer));
  const bestRate = Math.max(0, ...proxyRows.map((r) => r.best?.deliveredBitsPerSecond ?? 0));
  const bestCpuAtBest = Math.min(...proxyRows.flatMap((r) => (r.best ? [cpuPerMpkt(r.best)] : [])).filter(Number.isFinite));
  const bestCpuAtBase = Math.min(...proxyRows.flatMap((r) => (r.steps[0] ? [cpuPerMpkt(r.steps[0])] : [])).filter(Number.isFinite));
  return markdownTable(
    ['peer', '≤0.1 % loss Mbit/s', 'kpps', 'vs best', 'CPU s/Mpkt there', 'vs best', `CPU s/Mpkt @${fmt(UDP_BASE_BPS / 1e6, 0)} Mbit/s`, 'vs best', 'note'],
    rows.map((r) => {
      const isProxy = proxies.includes(r.peer);
      const b = r.best;
      const base = r.steps[0];
      const note = r.note ?? (r.generatorLimited ? 'iperf3 itself could not send faster' : b ? '' : 'no rate passed');
      return [
        r.peer,
        fmt(b ? b.deliveredBitsPerSecond / 1e6 : undefined, 0),
        fmt(b ? (b.packetsSent - b.packetsLost) / b.seconds / 1e3 : undefined, 1),
        isProxy && b ? ratio(b.deliveredBitsPerSecond, bestRate) : '',
        isProxy && b ? fmt(cpuPerMpkt(b)) : '–',
        isProxy && b ? ratio(cpuPerMpkt(b), bestCpuAtBest) : '',
        isProxy && base ? fmt(cpuPerMpkt(base)) : '–',
        isProxy && base ? ratio(cpuPerMpkt(base), bestCpuAtBase) : '',
        note,
      ];
    }),
  );
}

await main();
