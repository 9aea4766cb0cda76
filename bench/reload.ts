/**
 * Reloads under load: simulated sessions (long enough to span several reloads) run through one
 * proxy process while its config is rewritten and reloaded N times — Connectors added and
 * removed, weights, a drain and back, timeouts and limits. Counts what must stay zero:
 * dropped 4172/TCP connections, lost UDP flows, misrouted sessions, failed sessions.
 *   npm run bench:reload -- [--reloads 10] [--interval 2] [--concurrency 40]
 */
import { parseArgs } from 'node:util';
import { startBenchPool } from './lib/bench-pool.ts';
import { startProxyHost } from './lib/host-client.ts';
import { SessionLoad, clientAddresses } from './lib/session-load.ts';

const { values } = parseArgs({
  options: {
    reloads: { type: 'string', default: '10' },
    interval: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '40' },
  },
});
const reloads = Number(values.reloads);
const intervalMs = Number(values.interval) * 1000;

const ids = ['rl-a', 'rl-b', 'rl-c', 'rl-d'];
const pool = await startBenchPool(ids, 210);
const base = ['rl-a', 'rl-b', 'rl-c'];
pool.writeConfig(base);
/** The configs cycled through: every kind of change a reload may carry. */
const steps: Array<{ what: string; write: () => void }> = [
  { what: 'weights 1/3/5', write: () => pool.writeConfig(base, {}, { 'rl-b': 3, 'rl-c': 5 }) },
  { what: 'add rl-d (weight 10)', write: () => pool.writeConfig(ids, {}, { 'rl-b': 3, 'rl-c': 5, 'rl-d': 10 }) },
  { what: 'drain rl-a, ttl 30m', write: () => pool.writeConfig(ids, { affinity: { ttl: '30m' } }, { 'rl-b': 3, 'rl-c': 5, 'rl-d': 10 }, { 'rl-a': 'drain' }) },
  {
    what: 'timeouts and limits',
    write: () =>
      pool.writeConfig(ids, {
        listeners: {
          broker: { bind: '127.0.0.1:0', idleTimeout: '2m', maxConnectionsPerClient: 500 },
          pcoipTcp: { bind: '127.0.0.1:0', idleTimeout: '30m', firstByteTimeout: '5s' },
          pcoipUdp: { bind: '127.0.0.1:0', idleTimeout: '45s', maxFlowsPerClient: 200 },
        },
      }),
  },
  { what: 'remove rl-d', write: () => pool.writeConfig(base) },
  { what: 'balance rendezvous', write: () => pool.writeConfig(base, { balance: { algorithm: 'rendezvous' } }) },
];

const host = await startProxyHost(pool.configPath);
const load = new SessionLoad({
  host: '127.0.0.1',
  ports: host.ports,
  clients: clientAddresses(120),
  concurrency: Number(values.concurrency),
  // Long sessions: most of them are established across several reloads.
  sessionMs: [6_000, 15_000],
  udpIntervalMs: 20,
  udpBytes: 1200,
});
console.log(`reload bench: ${reloads} reloads every ${intervalMs / 1000} s under ${values.concurrency} concurrent sessions; proxy pid ${host.pid}`);
load.start();
await new Promise((r) => setTimeout(r, 3000));
let applied = 0;
for (let i = 0; i < reloads; i++) {
  const step = steps[i % steps.length]!;
  step.write();
  const before = await host.stats();
  const ok = await host.reload();
  if (ok) applied++;
  console.log(
    `reload ${i + 1}: ${step.what.padEnd(22)} ${ok ? 'applied' : 'REJECTED'}; flows b/t/u=${before.flows.broker}/${before.flows.pcoipTcp}/${before.flows.pcoipUdp} ` +
      `sessions ok=${load.counters.sessionsOk} failed=${load.counters.sessionsFailed}`,
  );
  await new Promise((r) => setTimeout(r, intervalMs));
}
await load.stop();
const end = await host.stats();
await host.stop();
await pool.close();
const c = load.counters;
console.log('summary:');
console.log(`  reloads applied: ${applied}/${reloads}`);
console.log(`  sessions ${c.sessionsStarted} started, ${c.sessionsOk} ok, ${c.sessionsFailed} failed`);
console.log(`  dropped 4172/TCP connections: ${c.tcpDropped}; lost UDP flows: ${c.udpFlowsLost}; misrouted sessions: ${c.misrouted}`);
console.log(`  UDP packets ${c.udpSent} sent, ${c.udpReceived} received (${c.udpSent ? ((1 - c.udpReceived / c.udpSent) * 100).toFixed(3) : 0}% loss)`);
if (c.failures.size) console.log(`  failures: ${JSON.stringify(Object.fromEntries(c.failures))}`);
console.log(`  proxy: refused ${JSON.stringify(end.refused)}, ${end.warnLines} warn / ${end.errorLines} error log lines`);
