/**
 * bench:workers — UDP throughput of `pcoip-lb start` with 1 and with N worker processes, the real
 * CLI (primary + workers) in front of an iperf3 server on 127.0.1.1, iperf3 sending 1200-byte
 * datagrams on several streams (several client source ports, which SO_REUSEPORT spreads over the
 * workers). For each worker count: the offered rate is doubled until loss passes 0.1 %, and the
 * proxy's CPU (primary + workers, from /proc) per million packets is reported.
 *
 *   npm run bench:workers -- [--workers 1,2] [--streams 8] [--seconds 4] [--start 100] [--steps 5]
 *
 * Linux only (/proc, SO_REUSEPORT); needs iperf3 (`apt-get install iperf3`).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { tmpdir, availableParallelism } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';

const { values } = parseArgs({
  options: {
    workers: { type: 'string', default: '1,2' },
    streams: { type: 'string', default: '8' },
    seconds: { type: 'string', default: '4' },
    start: { type: 'string', default: '100' },
    steps: { type: 'string', default: '5' },
  },
});
const workerCounts = values.workers.split(',').map(Number);
const streams = Number(values.streams);
const seconds = Number(values.seconds);
const MAX_LOSS = 0.1;
const CLI = new URL('../src/cli.ts', import.meta.url).pathname;
const CONNECTOR = '127.0.1.1';

try {
  execFileSync('iperf3', ['--version'], { stdio: 'ignore' });
} catch {
  throw new Error('bench:workers needs iperf3 (apt-get install iperf3)');
}

async function freeTcpUdpPort(host: string): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const server = createServer();
    const port = await new Promise<number>((r) => server.listen({ host, port: 0 }, () => r((server.address() as { port: number }).port)));
    const udp = createSocket('udp4');
    const ok = await new Promise<boolean>((r) => {
      udp.once('error', () => r(false));
      udp.bind({ address: host, port }, () => r(true));
    });
    udp.close();
    await new Promise((r) => server.close(r));
    if (ok) return port;
  }
  throw new Error('no port free for TCP and UDP');
}

/** utime + stime of a process and its children (the workers), in seconds. */
function cpuSeconds(pid: number): number {
  const ticks = 100; // USER_HZ on Linux
  const one = (p: number) => {
    try {
      const fields = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return (Number(fields[11]) + Number(fields[12])) / ticks;
    } catch {
      return 0;
    }
  };
  let total = one(pid);
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    const children = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    for (const child of children ? children.split(' ').map(Number) : []) total += one(child);
  }
  return total;
}

async function startProxy(dir: string, port: number, connectorPort: number, workers: number): Promise<ChildProcess> {
  const configPath = join(dir, `pcoip-lb-${workers}.yaml`);
  writeFileSync(
    configPath,
    [
      'listeners:',
      `  pcoipTcp: { bind: "127.0.0.1:${port}" }`,
      `  pcoipUdp: { bind: "127.0.0.1:${port}" }`,
      'connectors:',
      `  - { id: iperf, address: ${CONNECTOR}, ports: { broker: ${connectorPort}, pcoip: ${connectorPort} } }`,
      'health: { checks: [], passive: { enabled: false } }',
      'admin: { enabled: false }',
      'logging: { level: error }',
      `workers: ${workers}`,
      '',
    ].join('\n'),
  );
  // Logs at error only; the start-up line is info, so wait for the ports to answer instead.
  const child = spawn(process.execPath, [CLI, 'start', '--config', configPath, '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('pcoip-lb did not start')), 20_000);
    child.once('exit', (code) => reject(new Error(`pcoip-lb exited (${code})`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('pcoip-lb started')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return child;
}

interface Step {
  offeredMbps: number;
  deliveredMbps: number;
  lossPercent: number;
  packets: number;
  cpuSeconds: number;
}

function iperfUdp(port: number, totalMbps: number): { deliveredMbps: number; lossPercent: number; packets: number } {
  const perStream = totalMbps / streams;
  const out = execFileSync('iperf3', ['-c', '127.0.0.1', '-p', String(port), '-u', '-b', `${perStream}M`, '-l', '1200', '-P', String(streams), '-t', String(seconds), '-J'], {
    encoding: 'utf8',
    timeout: (seconds + 20) * 1000,
  });
  const json = JSON.parse(out) as { end: { sum: { bits_per_second: number; lost_percent: number; packets: number; lost_packets: number } } };
  const sum = json.end.sum;
  return { deliveredMbps: (sum.bits_per_second * (1 - sum.lost_percent / 100)) / 1e6, lossPercent: sum.lost_percent, packets: sum.packets - sum.lost_packets };
}

const dir = mkdtempSync(join(tmpdir(), 'pcoip-lb-workers-'));
const connectorPort = await freeTcpUdpPort(CONNECTOR);
const server = spawn('iperf3', ['-s', '-B', CONNECTOR, '-p', String(connectorPort)], { stdio: 'ignore' });
await new Promise((r) => setTimeout(r, 300));
const results = new Map<number, Step[]>();
try {
  console.log(`bench:workers on ${availableParallelism()} core(s): iperf3 UDP, 1200 B datagrams, ${streams} streams, ${seconds} s per step, loss limit ${MAX_LOSS} %`);
  for (const workers of workerCounts) {
    const port = await freeTcpUdpPort('127.0.0.1');
    const proxy = await startProxy(dir, port, connectorPort, workers);
    const steps: Step[] = [];
    const measure = (rate: number): Step => {
      const before = cpuSeconds(proxy.pid!);
      const r = iperfUdp(port, rate);
      const cpu = cpuSeconds(proxy.pid!) - before;
      const step = { offeredMbps: rate, ...r, cpuSeconds: cpu };
      steps.push(step);
      console.log(
        `workers=${workers} offered=${rate.toFixed(0)} Mbit/s delivered=${r.deliveredMbps.toFixed(0)} Mbit/s loss=${r.lossPercent.toFixed(3)} % ` +
          `proxy CPU=${cpu.toFixed(2)} s (${((cpu / Math.max(1, r.packets)) * 1e6).toFixed(1)} µs per packet)`,
      );
      return step;
    };
    try {
      // Double until loss passes the limit, then bisect twice between the last good and first bad rate.
      let good = 0;
      let bad = 0;
      for (let i = 0, rate = Number(values.start); i < Number(values.steps); i++, rate *= 2) {
        if (measure(rate).lossPercent > MAX_LOSS) {
          bad = rate;
          break;
        }
        good = rate;
      }
      for (let i = 0; i < 2 && bad > 0; i++) {
        const mid = (good + bad) / 2;
        if (measure(mid).lossPercent > MAX_LOSS) bad = mid;
        else good = mid;
      }
    } finally {
      proxy.kill('SIGTERM');
      await new Promise((r) => proxy.once('exit', r));
    }
    results.set(workers, steps);
  }
} finally {
  server.kill();
  rmSync(dir, { recursive: true, force: true });
}
console.log('summary (highest delivered rate with loss <= 0.1 %):');
const best = new Map<number, number>();
for (const [workers, steps] of results) {
  const ok = steps.filter((s) => s.lossPercent <= MAX_LOSS);
  const top = ok.length ? Math.max(...ok.map((s) => s.deliveredMbps)) : 0;
  best.set(workers, top);
  console.log(`  workers=${workers}: ${top.toFixed(0)} Mbit/s`);
}
const one = best.get(1);
for (const [workers, top] of best) if (one && workers !== 1) console.log(`  ${workers} workers / 1 worker: ${(top / one).toFixed(2)}x`);
