/**
 * Soak: simulated PCoIP sessions through one proxy process for M minutes, sampling the proxy's
 * RSS, heap (after a GC), flow tables, affinity size and error counts every N seconds, then a
 * summary with the RSS drift. Bounded: the run stops at --minutes; leftover sessions get 60 s.
 *   npm run bench:soak -- --minutes 10 [--every 10] [--concurrency 30] [--udp-interval 20]
 *                         [--kill-after S]   kill one Connector S seconds in (sessions must not be misrouted)
 */
import { parseArgs } from 'node:util';
import { startBenchPool } from './lib/bench-pool.ts';
import { startProxyHost } from './lib/host-client.ts';
import { SessionLoad, clientAddresses } from './lib/session-load.ts';
import type { HostStats } from './lib/proxy-host.ts';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    every: { type: 'string', default: '10' },
    concurrency: { type: 'string', default: '30' },
    'udp-interval': { type: 'string', default: '20' },
    'session-seconds': { type: 'string', default: '5-15' },
    'kill-after': { type: 'string' },
  },
});
const minutes = Number(values.minutes);
const everyMs = Number(values.every) * 1000;
const [sLo, sHi] = values['session-seconds'].split('-').map((x) => Number(x) * 1000) as [number, number];
if (!(minutes > 0 && everyMs > 0 && sLo > 0 && sHi >= sLo)) throw new Error('bad arguments: --minutes M --every S --session-seconds LO-HI');

const pool = await startBenchPool(['soak-a', 'soak-b', 'soak-c']);
// A 1 min affinity TTL so entries expire and are swept during the run (a leak would show).
pool.writeConfig(['soak-a', 'soak-b', 'soak-c'], { affinity: { ttl: '1m' } });
const host = await startProxyHost(pool.configPath);
const load = new SessionLoad({
  host: '127.0.0.1',
  ports: host.ports,
  clients: clientAddresses(200),
  concurrency: Number(values.concurrency),
  sessionMs: [sLo, sHi],
  udpIntervalMs: Number(values['udp-interval']),
  udpBytes: 1200,
});

const mb = (n: number) => (n / 1048576).toFixed(1).padStart(6);
const samples: Array<{ t: number; s: HostStats }> = [];
const started = Date.now();
const line = (t: number, s: HostStats) => {
  const c = load.counters;
  const loss = c.udpSent ? (1 - c.udpReceived / c.udpSent) * 100 : 0;
  const refused = Object.values(s.refused).reduce((a, b) => a + b, 0);
  console.log(
    `t=${String(Math.round(t / 1000)).padStart(5)}s rss=${mb(s.rss)}MB heap=${mb(s.heapUsed)}MB ` +
      `flows b/t/u=${s.flows.broker}/${s.flows.pcoipTcp}/${s.flows.pcoipUdp} affinity=${s.affinity} ` +
      `sessions ok=${c.sessionsOk} failed=${c.sessionsFailed} misrouted=${c.misrouted} tcpDropped=${c.tcpDropped} udpLost=${c.udpFlowsLost} ` +
      `udp=${c.udpSent}/${c.udpReceived} (${loss.toFixed(2)}% loss) refused=${refused} warn=${s.warnLines} error=${s.errorLines}`,
  );
};

console.log(`soak: ${minutes} min, ${values.concurrency} concurrent sessions of ${sLo / 1000}-${sHi / 1000} s, UDP 1200 B every ${values['udp-interval']} ms; proxy pid ${host.pid}`);
load.start();
const end = started + minutes * 60_000;
if (values['kill-after'] !== undefined) {
  // The Connector vanishes: its sockets close, its ports refuse. Passive health detection (3 failed
  // connects) marks it down and its clients are re-placed; a session caught mid-login fails.
  setTimeout(() => {
    const victim = pool.connectors[0]!;
    console.log(`t=${Math.round((Date.now() - started) / 1000)}s: killing Connector ${victim.id}`);
    void victim.close();
  }, Number(values['kill-after']) * 1000).unref();
}
while (Date.now() < end) {
  await new Promise((r) => setTimeout(r, Math.min(everyMs, end - Date.now())));
  const s = await host.stats();
  const t = Date.now() - started;
  samples.push({ t, s });
  line(t, s);
}
await load.stop();
const idle = await host.stats();
console.log('after the load stopped:');
line(Date.now() - started, idle);
await host.stop();
await pool.close();

// RSS drift: the first sample after warm-up (20 % of the run, at least 60 s) against the mean of the last three.
const warm = samples.find((x) => x.t >= Math.max(60_000, 0.2 * minutes * 60_000)) ?? samples[0]!;
const last = samples.slice(-3);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const rssEnd = mean(last.map((x) => x.s.rss));
const heapEnd = mean(last.map((x) => x.s.heapUsed));
const c = load.counters;
console.log('summary:');
console.log(`  RSS     ${mb(warm.s.rss)}MB at ${Math.round(warm.t / 1000)}s -> ${mb(rssEnd)}MB at the end: drift ${(((rssEnd - warm.s.rss) / warm.s.rss) * 100).toFixed(1)}% (min ${mb(Math.min(...samples.map((x) => x.s.rss)))}MB, max ${mb(Math.max(...samples.map((x) => x.s.rss)))}MB)`);
console.log(`  heap    ${mb(warm.s.heapUsed)}MB -> ${mb(heapEnd)}MB: drift ${(((heapEnd - warm.s.heapUsed) / warm.s.heapUsed) * 100).toFixed(1)}%`);
console.log(`  sessions ${c.sessionsStarted} started, ${c.sessionsOk} ok, ${c.sessionsFailed} failed, ${c.misrouted} misrouted, ${c.tcpDropped} TCP dropped, ${c.udpFlowsLost} UDP flows lost`);
console.log(`  UDP packets ${c.udpSent} sent, ${c.udpReceived} received (${c.udpSent ? ((1 - c.udpReceived / c.udpSent) * 100).toFixed(3) : 0}% loss)`);
if (c.failures.size) console.log(`  failures: ${JSON.stringify(Object.fromEntries(c.failures))}`);
console.log(`  proxy log lines: ${idle.infoLines} info, ${idle.warnLines} warn, ${idle.errorLines} error`);
