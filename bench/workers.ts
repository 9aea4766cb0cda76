/**
 * bench:workers — UDP throughput of `pcoip-lb start` with 1 and with N worker processes: the real
 * CLI (primary + workers) in front of an iperf3 server on 127.0.1.1, iperf3 sending 1200-byte
 * datagrams on several streams (several client source ports, which SO_REUSEPORT spreads over the
 * workers). For each worker count the offered rate is doubled until loss passes 0.1 %, then
 * bisected twice; the proxy's CPU (primary + workers, from /proc) per datagram is reported.
 *
 *   npm run bench:workers -- [--workers 1,2] [--streams 8] [--seconds 4] [--start 100] [--steps 5] [--reverse]
 *
 * Linux only (/proc, SO_REUSEPORT); needs iperf3 (`apt-get install iperf3`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, availableParallelism } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { freeTcpUdpPort } from './lib/ports.ts';
import { cpuSecondsOfTree, loadAverage } from './lib/proc.ts';
import { iperfUdp } from './lib/iperf.ts';
import { CONNECTOR_HOST, PROXY_HOST, startPcoipLbCli } from './lib/peers.ts';

const { values } = parseArgs({
  options: {
    workers: { type: 'string', default: '1,2' },
    streams: { type: 'string', default: '8' },
    seconds: { type: 'string', default: '4' },
    start: { type: 'string', default: '100' },
    steps: { type: 'string', default: '5' },
    reverse: { type: 'boolean', default: false },
  },
});
const workerCounts = values.workers.split(',').map(Number);
const streams = Number(values.streams);
const seconds = Number(values.seconds);
const MAX_LOSS = 0.1;

const dir = mkdtempSync(join(tmpdir(), 'pcoip-lb-workers-'));
const best = new Map<number, number>();
try {
  console.log(
    `bench:workers on ${availableParallelism()} core(s), load ${loadAverage()}: iperf3 UDP${values.reverse ? ' reverse (Connector -> client)' : ''}, ` +
      `1200 B datagrams, ${streams} streams, ${seconds} s per step, loss limit ${MAX_LOSS} %`,
  );
  for (const workers of workerCounts) {
    const connectorPort = await freeTcpUdpPort(CONNECTOR_HOST);
    const proxy = await startPcoipLbCli(dir, {
      name: `pcoip-lb-${workers}`,
      workers,
      connector: { address: CONNECTOR_HOST, pcoipPort: connectorPort },
      // No health probes (iperf3 would take one for a test), no admin server, errors only;
      // --log-level info for the start-up line only (nothing is logged per flow at this rate).
      extraYaml: ['health: { checks: [], passive: { enabled: false } }', 'admin: { enabled: false }', 'logging: { level: error }'],
      logLevel: 'info',
    });
    const { port } = proxy;
    const measure = async (mbps: number): Promise<{ lostPercent: number }> => {
      const before = cpuSecondsOfTree(proxy.pid!);
      let r;
      try {
        r = await iperfUdp(PROXY_HOST, port, connectorPort, seconds, mbps * 1e6, values.reverse, streams);
      } catch (err) {
        // iperf3 sometimes hangs at a saturated step (its end-of-test exchange is lost): a failed step.
        console.log(`workers=${workers} offered=${mbps.toFixed(0)} Mbit/s: step failed (${(err as Error).message.slice(0, 80)})`);
        return { lostPercent: 100 };
      }
      const cpu = cpuSecondsOfTree(proxy.pid!) - before;
      const delivered = r.packetsSent - r.packetsLost;
      console.log(
        `workers=${workers} offered=${mbps.toFixed(0)} Mbit/s delivered=${(r.deliveredBitsPerSecond / 1e6).toFixed(0)} Mbit/s loss=${r.lostPercent.toFixed(3)} % ` +
          `proxy CPU=${cpu.toFixed(2)} s (${((cpu / Math.max(1, delivered)) * 1e6).toFixed(1)} µs per datagram)`,
      );
      return r;
    };
    try {
      // Double until loss passes the limit, then bisect twice between the last good and the first bad rate.
      let good = 0;
      let bad = 0;
      for (let i = 0, rate = Number(values.start); i < Number(values.steps); i++, rate *= 2) {
        if ((await measure(rate)).lostPercent > MAX_LOSS) {
          bad = rate;
          break;
        }
        good = rate;
      }
      for (let i = 0; i < 2 && bad > 0; i++) {
        const mid = (good + bad) / 2;
        if ((await measure(mid)).lostPercent > MAX_LOSS) bad = mid;
        else good = mid;
      }
      best.set(workers, good);
    } finally {
      await proxy.stop();
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(`summary (highest offered rate delivered with loss <= ${MAX_LOSS} %):`);
for (const [workers, rate] of best) console.log(`  workers=${workers}: ${rate.toFixed(0)} Mbit/s`);
const one = best.get(1);
for (const [workers, rate] of best) if (one && workers !== 1) console.log(`  ${workers} workers / 1 worker: ${(rate / one).toFixed(2)}x`);
