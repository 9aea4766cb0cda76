/**
 * bench:latency — the delay and jitter a path adds to PCoIP media: direct (no proxy), pcoip-lb
 * (`workers: 1` and `workers: N`, the real CLI with health checks on) and NGINX stream, side by
 * side, with background load in either direction. See bench/README.md ("bench:latency").
 *
 *   npm run bench:latency                  # full: 0/10k/20k/40k datagrams/s, both directions, 3 rounds of 5 s
 *   npm run bench:latency -- --quick       # 0 and 20k/s, both directions, 2 rounds of 3 s (~1.5 min)
 *   npm run bench:latency -- --rates 0,20000 --directions down --rounds 5 --only pcoip-lb-1,nginx
 *   npm run bench:latency -- --lb 'before:workers=1;root=/tmp/main' --lb 'after:workers=1' --only before,after,nginx
 *   npm run bench:latency -- --cpu-quota 15 --rates 20000 --directions up   # each proxy limited to 15 % of a CPU
 *
 * Linux only (/proc); NGINX needs nginx-light + libnginx-mod-stream (installed when run as root).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { freeTcpUdpPort } from './lib/ports.ts';
import { childPids, loadAverage, runQueueWaitNs, socketInodes } from './lib/proc.ts';
import { CONNECTOR_HOST, ensurePeerPackages, startNginx, startPcoipLbCli, type Peer } from './lib/peers.ts';
import { fmt, markdownTable } from './lib/table.ts';
import { parseProcNetUdp } from '../src/util/proc-net-udp.ts';
import { limitCpu, type CpuLimit } from './lib/cpu-limit.ts';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rates: { type: 'string' },
    directions: { type: 'string', default: 'up,down' },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    warmup: { type: 'string' },
    'probe-rate': { type: 'string', default: '1000' },
    'bg-flows': { type: 'string', default: '4' },
    workers: { type: 'string', default: String(availableParallelism()) },
    'peer-workers': { type: 'string', default: '1' },
    /** Connectors in pcoip-lb's pool (each health-checked): the echo Connector answers on 127.0.1.1 … 127.0.1.N. */
    connectors: { type: 'string', default: '4' },
    /** pcoip-lb variants, "name:key=value;key=value" with keys workers, node (flags), udp (pcoipUdp YAML keys), yaml (a top-level YAML line), root (checkout). */
    lb: { type: 'string', multiple: true },
    only: { type: 'string' },
    'trace-gc': { type: 'boolean', default: false },
    /** Confine each proxy (all its processes) to this % of one CPU: a host out of CPU (cgroup CFS quota; root). */
    'cpu-quota': { type: 'string' },
  },
});

const quick = values.quick;
const rates = (values.rates ?? (quick ? '0,20000' : '0,10000,20000,40000')).split(',').map(Number);
const directions = values.directions.split(',') as Array<'up' | 'down'>;
const rounds = Number(values.rounds ?? (quick ? 2 : 3));
const seconds = Number(values.seconds ?? (quick ? 3 : 5));
const warmupMs = Number(values.warmup ?? (quick ? 0.5 : 1)) * 1000;
const probeRate = Number(values['probe-rate']);
const bgFlows = Number(values['bg-flows']);
const PROBE_GRACE_MS = 1000;
/** Between two measurements: queues drain, flows of the last one go quiet. */
const SETTLE_MS = 500;
const SAMPLE_EVERY_MS = 20;

interface LbVariant {
  name: string;
  workers: number;
  nodeFlags: string[];
  udpKeys: string | undefined;
  root: string | undefined;
  yaml: string | undefined;
}

function parseVariant(spec: string): LbVariant {
  const [name, rest = ''] = spec.split(/:(.*)/s) as [string, string?];
  const kv = new Map(rest.split(';').filter(Boolean).map((p) => p.split(/=(.*)/s) as [string, string]));
  for (const key of kv.keys()) if (!['workers', 'node', 'udp', 'root', 'yaml'].includes(key)) throw new Error(`--lb ${spec}: unknown key "${key}" (workers, node, udp, root, yaml)`);
  return {
    name,
    workers: Number(kv.get('workers') ?? 1),
    nodeFlags: (kv.get('node') ?? '').split(' ').filter(Boolean),
    udpKeys: kv.get('udp'),
    root: kv.get('root'),
    yaml: kv.get('yaml'),
  };
}

const variants = (values.lb ?? ['pcoip-lb-1:workers=1', `pcoip-lb-${values.workers}:workers=${values.workers}`]).map(parseVariant);
const only = values.only?.split(',');
const wanted = (name: string) => !only || only.includes(name);

// ---------------------------------------------------------------- child processes

function forkChild(file: string, args: string[] = []): ChildProcess {
  return fork(new URL(file, import.meta.url), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: ['--disable-warning=ExperimentalWarning'] });
}

function ask<T>(child: ChildProcess, msg: object, answer: string, timeoutMs = 60_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${answer}" within ${timeoutMs} ms`)), timeoutMs);
    const onMsg = (m: { type?: string }) => {
      if (m.type !== answer) return;
      clearTimeout(timer);
      child.off('message', onMsg);
      resolve(m as T);
    };
    child.on('message', onMsg);
    child.send(msg);
  });
}

// ---------------------------------------------------------------- measuring one path

interface PathUnderTest {
  name: string;
  host: string;
  port: number;
  /** Processes whose sockets and CPU belong to this path. */
  pids: () => number[];
  cpuSeconds: () => number;
  adminUrl?: string | undefined;
  /** NGINX/pcoip-lb: the listener port; direct: the Connector's. */
  listenerPort: number;
}

interface QueueStats {
  /** Deepest receive queue seen on a listener socket / on a flow socket, in bytes (kernel accounting). */
  listenerMax: number;
  flowMax: number;
  /** Datagrams the kernel dropped on full receive queues of this path's sockets during the measurement. */
  drops: number;
}

/** Samples the receive queues of a path's sockets every SAMPLE_EVERY_MS until stopped. */
function sampleQueues(path: PathUnderTest): () => QueueStats {
  const stats: QueueStats = { listenerMax: 0, flowMax: 0, drops: 0 };
  const firstDrops = new Map<number, number>();
  const lastDrops = new Map<number, number>();
  let inodes = new Set<number>();
  let n = 0;
  const sample = () => {
    if (n++ % 10 === 0) inodes = new Set(path.pids().flatMap(socketInodes));
    const rows = [...parseProcNetUdp(readFileSync('/proc/net/udp', 'latin1')), ...parseProcNetUdp(readFileSync('/proc/net/udp6', 'latin1'))];
    for (const row of rows) {
      if (!inodes.has(row.inode)) continue;
      if (row.local.port === path.listenerPort) stats.listenerMax = Math.max(stats.listenerMax, row.rxQueue);
      else stats.flowMax = Math.max(stats.flowMax, row.rxQueue);
      if (!firstDrops.has(row.inode)) firstDrops.set(row.inode, row.drops);
      lastDrops.set(row.inode, row.drops);
    }
  };
  sample();
  const timer = setInterval(sample, SAMPLE_EVERY_MS);
  return () => {
    clearInterval(timer);
    sample();
    for (const [inode, last] of lastDrops) stats.drops += last - (firstDrops.get(inode) ?? last);
    return stats;
  };
}

interface Measurement {
  path: string;
  rate: number;
  direction: 'up' | 'down' | 'none';
  round: number;
  loadBefore: string;
  loadAfter: string;
  probesSent: number;
  rtt: number[];
  up: number[];
  down: number[];
  bgSent: number;
  bgReceived: number;
  bgForgiven: number;
  cpuSeconds: number;
  /** Datagrams the path moved during the measurement (probes both ways + background delivered). */
  packets: number;
  queues: QueueStats;
  /** pcoip-lb's own view, from its /metrics (when it exports these). */
  eventLoopP99Ms: number | undefined;
  /** Time the path's processes (main threads, summed) waited for a CPU, ms per second of measurement. */
  runQueueWaitMsPerS: number;
}

let nextStreamId = 1;

async function measure(path: PathUnderTest, rate: number, direction: 'up' | 'down' | 'none', round: number, kids: Kids): Promise<Measurement> {
  const loadBefore = loadAverage();
  const cpuBefore = path.cpuSeconds();
  const waited = () => path.pids().reduce((n, pid) => n + runQueueWaitNs(pid), 0);
  const waitBefore = waited();
  const startedAt = performance.now();
  const stopSampling = sampleQueues(path);
  const firstId = nextStreamId;
  nextStreamId += bgFlows;
  const durationMs = warmupMs + seconds * 1000 + PROBE_GRACE_MS + 5000;
  if (rate > 0) {
    await ask(kids.load, { type: 'start', host: path.host, port: path.port, rate, flows: bgFlows, direction, firstId, durationMs }, 'started');
  }
  await new Promise((r) => setTimeout(r, warmupMs));
  const probe = await ask<{ sent: number; rtt: number[]; up: number[]; down: number[] }>(
    kids.probe,
    { type: 'probe', host: path.host, port: path.port, rate: probeRate, durationMs: seconds * 1000, graceMs: PROBE_GRACE_MS },
    'probed',
  );
  let bgSent = 0;
  let bgReceived = 0;
  let bgForgiven = 0;
  if (rate > 0) {
    const stopped = await ask<{ sent: Array<[number, number]>; received: Array<[number, number]>; forgiven: number }>(kids.load, { type: 'stop' }, 'stopped');
    const ids = stopped.sent.map(([id]) => id);
    const counts = await ask<{ up: Array<[number, number]>; down: Array<[number, number]> }>(kids.connector, { type: 'counts', ids }, 'counts');
    const sum = (pairs: Array<[number, number]>) => pairs.reduce((n, [, v]) => n + v, 0);
    bgForgiven = stopped.forgiven;
    if (direction === 'up') {
      bgSent = sum(stopped.sent);
      bgReceived = sum(counts.up);
    } else {
      bgSent = sum(counts.down);
      bgReceived = sum(stopped.received);
    }
  }
  const queues = stopSampling();
  const cpuSeconds = path.cpuSeconds() - cpuBefore;
  const runQueueWaitMsPerS = (waited() - waitBefore) / 1e6 / ((performance.now() - startedAt) / 1000);
  const eventLoopP99Ms = path.adminUrl ? await scrapeEventLoopP99(path.adminUrl) : undefined;
  return {
    path: path.name,
    rate,
    direction,
    round,
    loadBefore,
    loadAfter: loadAverage(),
    probesSent: probe.sent,
    rtt: probe.rtt,
    up: probe.up,
    down: probe.down,
    bgSent,
    bgReceived,
    bgForgiven,
    cpuSeconds,
    packets: probe.sent + probe.rtt.length + bgReceived,
    queues,
    eventLoopP99Ms,
    runQueueWaitMsPerS,
  };
}

/** The worst worker's event-loop delay p99 over the last window, if this pcoip-lb exports it. */
async function scrapeEventLoopP99(adminUrl: string): Promise<number | undefined> {
  try {
    const text = await (await fetch(`${adminUrl}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
    const values = [...text.matchAll(/^pcoip_lb_event_loop_delay_p99_seconds(?:\{[^}]*\})? (\S+)$/gm)].map((m) => Number(m[1]) * 1000);
    return values.length > 0 ? Math.max(...values) : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- summary

function percentile(sorted: number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

interface PathSummary {
  path: string;
  p50?: number | undefined;
  p99?: number | undefined;
  p999?: number | undefined;
  max?: number | undefined;
  downP99?: number | undefined;
  upP99?: number | undefined;
  p99Rounds: number[];
  lossPercent: number;
  bgLossPercent: number | undefined;
  listenerQueueKiB: number;
  flowQueueKiB: number;
  drops: number;
  cpuPerMpkt: number | undefined;
  loads: string[];
  eventLoopP99Ms: number[];
  runQueueWaitMsPerS: number;
}

function summarise(ms: Measurement[]): PathSummary {
  const all = ms.flatMap((m) => m.rtt).sort((a, b) => a - b);
  const sent = ms.reduce((n, m) => n + m.probesSent, 0);
  const bgSent = ms.reduce((n, m) => n + m.bgSent, 0);
  const bgReceived = ms.reduce((n, m) => n + m.bgReceived, 0);
  const cpu = ms.reduce((n, m) => n + m.cpuSeconds, 0);
  const packets = ms.reduce((n, m) => n + m.packets, 0);
  const sorted = (pick: (m: Measurement) => number[]) => ms.flatMap(pick).sort((a, b) => a - b);
  return {
    path: ms[0]!.path,
    p50: percentile(all, 50),
    p99: percentile(all, 99),
    p999: percentile(all, 99.9),
    max: all.at(-1),
    upP99: percentile(sorted((m) => m.up), 99),
    downP99: percentile(sorted((m) => m.down), 99),
    p99Rounds: ms.map((m) => percentile([...m.rtt].sort((a, b) => a - b), 99) ?? NaN),
    lossPercent: sent === 0 ? 0 : (100 * (sent - all.length)) / sent,
    bgLossPercent: bgSent === 0 ? undefined : (100 * Math.max(0, bgSent - bgReceived)) / bgSent,
    listenerQueueKiB: Math.max(...ms.map((m) => m.queues.listenerMax)) / 1024,
    flowQueueKiB: Math.max(...ms.map((m) => m.queues.flowMax)) / 1024,
    drops: ms.reduce((n, m) => n + m.queues.drops, 0),
    cpuPerMpkt: packets > 0 && cpu > 0 ? cpu / (packets / 1e6) : undefined,
    loads: ms.map((m) => m.loadBefore.split(' ')[0]!),
    eventLoopP99Ms: ms.map((m) => m.eventLoopP99Ms).filter((v) => v !== undefined),
    runQueueWaitMsPerS: ms.reduce((n, m) => n + m.runQueueWaitMsPerS, 0) / ms.length,
  };
}

function cellTitle(rate: number, direction: string): string {
  if (rate === 0) return 'no background load';
  return `${rate / 1000}k datagrams/s background, ${direction === 'up' ? 'client → Connector' : 'Connector → client'}`;
}

function table(summaries: PathSummary[]): string {
  return markdownTable(
    ['path', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'p99 per round', 'one-way p99 up / down', 'probe loss %', 'bg loss %', 'max rx queue KiB listener / flows', 'kernel drops', 'CPU s/Mpkt', 'CPU wait ms/s', 'loop p99 ms', 'load'],
    summaries.map((s) => [
      s.path,
      fmt(s.p50),
      fmt(s.p99),
      fmt(s.p999),
      fmt(s.max),
      s.p99Rounds.map((v) => fmt(v, 1)).join(' '),
      `${fmt(s.upP99)} / ${fmt(s.downP99)}`,
      fmt(s.lossPercent, 2),
      fmt(s.bgLossPercent, 2),
      `${fmt(s.listenerQueueKiB, 0)} / ${fmt(s.flowQueueKiB, 0)}`,
      s.drops,
      fmt(s.cpuPerMpkt, 1),
      fmt(s.runQueueWaitMsPerS, 1),
      s.eventLoopP99Ms.length ? fmt(Math.max(...s.eventLoopP99Ms), 1) : '–',
      s.loads.join(' '),
    ]),
  );
}

// ---------------------------------------------------------------- main

interface Kids {
  connector: ChildProcess;
  load: ChildProcess;
  probe: ChildProcess;
}

const dir = mkdtempSync(join(tmpdir(), 'i12-latency-'));
const resultsDir = new URL('./results/', import.meta.url).pathname;
mkdirSync(resultsDir, { recursive: true });
const started = new Date();
const peers: Peer[] = [];
const cpuLimits: CpuLimit[] = [];
const kidsList: ChildProcess[] = [];
try {
  type Cell = { rate: number; direction: 'up' | 'down' | 'none' };
  const cells = rates.flatMap((rate): Cell[] => (rate === 0 ? [{ rate, direction: 'none' }] : directions.map((direction) => ({ rate, direction }))));
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const packages = ensurePeerPackages(log);

  const connectorPort = await freeTcpUdpPort(CONNECTOR_HOST);
  const brokerPort = await freeTcpUdpPort(CONNECTOR_HOST);
  const poolAddresses = Array.from({ length: Math.max(1, Number(values.connectors)) }, (_, i) => `127.0.1.${i + 1}`);
  if (poolAddresses[0] !== CONNECTOR_HOST) throw new Error('the pool starts at CONNECTOR_HOST');
  const connector = forkChild('./lib/latency-connector.ts', [poolAddresses.join(','), String(connectorPort), String(brokerPort)]);
  kidsList.push(connector);
  await new Promise<void>((resolve, reject) => {
    connector.once('message', () => resolve());
    connector.once('exit', (code) => reject(new Error(`the echo Connector exited (${code})`)));
  });
  const kids: Kids = { connector, load: forkChild('./lib/latency-load.ts'), probe: forkChild('./lib/latency-probe.ts') };
  kidsList.push(kids.load, kids.probe);

  const paths: PathUnderTest[] = [];
  if (wanted('direct')) {
    paths.push({ name: 'direct', host: CONNECTOR_HOST, port: connectorPort, listenerPort: connectorPort, pids: () => [connector.pid!], cpuSeconds: () => 0 });
  }
  const peerPids = (pid: number) => () => [pid, ...childPids(pid)];
  for (const v of variants) {
    if (!wanted(v.name)) continue;
    const peer = await startPcoipLbCli(dir, {
      name: v.name,
      workers: v.workers,
      connector: { address: CONNECTOR_HOST, pcoipPort: connectorPort, brokerPort },
      poolAddresses,
      // The defaults operators run (health checks on, logging info), plus an admin server to read /metrics.
      extraYaml: ['admin: { bind: "127.0.0.1:0" }', ...(v.yaml ? [v.yaml] : [])],
      udpKeys: v.udpKeys,
      nodeFlags: [...v.nodeFlags, ...(values['trace-gc'] ? ['--trace-gc'] : [])],
      root: v.root,
      logFile: join(resultsDir, `latency-${v.name}.log`),
    });
    peers.push(peer);
    paths.push({ name: v.name, host: peer.host, port: peer.port, listenerPort: peer.port, pids: peerPids(peer.pid!), cpuSeconds: () => peer.cpuSeconds(), adminUrl: peer.adminUrl });
  }
  if (wanted('nginx')) {
    if (packages.nginxStream) {
      const peerWorkers = values['peer-workers'] === 'auto' ? 'auto' : Number(values['peer-workers']);
      const nginx = await startNginx(dir, connectorPort, peerWorkers);
      peers.push(nginx);
      paths.push({ name: 'nginx', host: nginx.host, port: nginx.port, listenerPort: nginx.port, pids: peerPids(nginx.pid!), cpuSeconds: () => nginx.cpuSeconds() });
    } else log(`nginx skipped: ${packages.notes.join('; ')}`);
  }
  if (paths.length === 0) throw new Error('no path to measure (see --only)');
  if (values['cpu-quota']) {
    const percent = Number(values['cpu-quota']);
    for (const path of paths) {
      if (path.name === 'direct') continue;
      const limit = limitCpu(`i12-latency-${process.pid}-${path.name}`, percent);
      if (typeof limit === 'string') throw new Error(`--cpu-quota: ${limit}`);
      cpuLimits.push(limit);
      for (const pid of path.pids()) limit.add(pid);
    }
  }

  const perMeasurementS = (warmupMs + seconds * 1000 + PROBE_GRACE_MS + SETTLE_MS + 600) / 1000;
  const estimate = rounds * cells.length * paths.length * perMeasurementS;
  const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
  console.log(
    `bench:latency ${started.toISOString()} — Node ${process.version}, ${availableParallelism()} × ${cpu}, load average ${loadAverage()}\n` +
      `probe ${probeRate}/s × 1200 B for ${seconds} s per measurement (after ${warmupMs / 1000} s of background), background on ${bgFlows} flows; pcoip-lb with a pool of ${values.connectors} Connectors (health-checked); ` +
      `${rounds} interleaved rounds × ${cells.length} load cells × ${paths.length} paths (${paths.map((p) => p.name).join(', ')}); ~${Math.round(estimate)} s` +
      (values['cpu-quota'] ? `\neach proxy confined to ${values['cpu-quota']} % of one CPU (cgroup CFS quota, 10 ms period)` : ''),
  );

  const results: Measurement[] = [];
  for (let round = 1; round <= rounds; round++) {
    for (const cell of cells) {
      // Rotate the order each round: no path always runs right after the heaviest one.
      const order = paths.map((_, i) => paths[(i + round - 1) % paths.length]!);
      for (const path of order) {
        const m = await measure(path, cell.rate, cell.direction, round, kids);
        results.push(m);
        const s = summarise([m]);
        log(
          `round ${round} ${cell.rate}/s ${cell.direction} ${path.name}: p50 ${fmt(s.p50)} p99 ${fmt(s.p99)} p99.9 ${fmt(s.p999)} max ${fmt(s.max)} ms, ` +
            `loss ${fmt(s.lossPercent, 2)} %, bg loss ${fmt(s.bgLossPercent, 2)} %, queue ${fmt(s.listenerQueueKiB, 0)}/${fmt(s.flowQueueKiB, 0)} KiB, drops ${s.drops}, load ${m.loadBefore}`,
        );
        await new Promise((r) => setTimeout(r, SETTLE_MS));
      }
    }
  }

  const summaries = new Map<string, PathSummary[]>();
  for (const cell of cells) {
    const key = `${cell.rate}|${cell.direction}`;
    summaries.set(
      key,
      paths.map((p) => summarise(results.filter((m) => m.path === p.name && m.rate === cell.rate && m.direction === cell.direction))),
    );
    console.log(`\n${cellTitle(cell.rate, cell.direction)} (RTT of the probe; all rounds pooled):\n`);
    console.log(table(summaries.get(key)!));
  }

  // Goals (issue 12): at 20 k/s, pcoip-lb's p99 ≤ 1.5× NGINX's and its p99.9 ≤ 2× NGINX's.
  const goalRows: string[][] = [];
  for (const direction of directions) {
    const cell = summaries.get(`20000|${direction}`);
    const nginx = cell?.find((s) => s.path === 'nginx');
    if (!cell || !nginx?.p99 || !nginx.p999) continue;
    for (const s of cell) {
      if (s.path === 'nginx' || s.path === 'direct' || !s.p99 || !s.p999) continue;
      const r99 = s.p99 / nginx.p99;
      const r999 = s.p999 / nginx.p999;
      goalRows.push(
        [`${s.path} ${direction === 'up' ? 'client → Connector' : 'Connector → client'} p99 ≤ 1.5× nginx`, `${r99.toFixed(2)}× (${fmt(s.p99)} vs ${fmt(nginx.p99)} ms)`, r99 <= 1.5 ? 'yes' : 'NO'],
        [`${s.path} ${direction === 'up' ? 'client → Connector' : 'Connector → client'} p99.9 ≤ 2× nginx`, `${r999.toFixed(2)}× (${fmt(s.p999)} vs ${fmt(nginx.p999)} ms)`, r999 <= 2 ? 'yes' : 'NO'],
        [`${s.path} ${direction === 'up' ? 'client → Connector' : 'Connector → client'} CPU per Mpkt vs nginx`, `${fmt(s.cpuPerMpkt, 1)} vs ${fmt(nginx.cpuPerMpkt, 1)} s (${s.cpuPerMpkt && nginx.cpuPerMpkt ? (s.cpuPerMpkt / nginx.cpuPerMpkt).toFixed(2) : '–'}×)`, '–'],
      );
    }
  }
  if (goalRows.length > 0) console.log(`\nGoals at 20k datagrams/s (issue 12):\n\n${markdownTable(['goal', 'measured', 'met'], goalRows)}`);
  console.log(`\nload average at the end ${loadAverage()}; wall time ${((Date.now() - started.getTime()) / 1000).toFixed(0)} s`);

  const file = join(resultsDir, `latency-${started.toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      {
        started: started.toISOString(),
        options: { rates, directions, rounds, seconds, warmupMs, probeRate, bgFlows, variants },
        summaries: Object.fromEntries(summaries),
        measurements: results.map(({ rtt, up, down, ...rest }) => ({ ...rest, probesEchoed: rtt.length, ...summarise([{ rtt, up, down, ...rest }]) })),
      },
      null,
      1,
    ),
  );
  console.log(`every measurement: ${file}`);
} finally {
  for (const limit of cpuLimits) limit.remove();
  await Promise.all(peers.map((p) => p.stop().catch(() => undefined)));
  for (const k of kidsList) k.kill();
  rmSync(dir, { recursive: true, force: true });
}
