/**
 * bench:broker-pingpong — what one client alternating its session cookie between two Connectors
 * on every request costs a terminating pcoip-lb, and whether other users' UDP round trip suffers
 * (issue 14).
 *
 *   npm run bench:broker-pingpong -- [--seconds 15] [--users 10] [--bitrate 500k]
 *
 * Three phases of --seconds each, the same --users simulated users (realistic mix) logging in and
 * streaming UDP through pcoip-lb in every phase:
 *   idle       nobody else
 *   steady     + one client on one keep-alive TLS connection, one request at a time, always the
 *              same JSESSIONID (so the same Connector)
 *   ping-pong  + the same client alternating between the JSESSIONIDs of two Connectors
 * For each: requests answered, pcoip-lb CPU (child process, from /proc) per request after the
 * idle phase's CPU rate is taken out, and the other users' UDP round trip p50 / p99.
 */
import { parseArgs } from 'node:util';
import { runLoad } from '../src/sim/load.ts';
import { REALISTIC_MIX } from '../src/sim/mix.ts';
import { endpointOf, postBroker, sessionCookie } from '../src/sim/client.ts';
import { requests } from '../src/sim/broker-xml.ts';
import { spiLocator } from '../src/sim/pool.ts';
import { loadAverage } from './lib/proc.ts';
import { PipelinedClient, httpRequest, startTerminateBench } from './lib/terminate-bench.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '15' },
    users: { type: 'string', default: '10' },
    bitrate: { type: 'string', default: '500000' },
  },
});
const seconds = Number(values.seconds);
const users = Number(values.users);

const bench = await startTerminateBench({ connectors: 2, heapMb: 768, logLevel: 'error' });
const { broker, pcoipTcp, pcoipUdp } = bench.addresses;
const target = { broker: endpointOf(broker), pcoipTcp: endpointOf(pcoipTcp), pcoipUdp: endpointOf(pcoipUdp) };

// A session on each Connector: hello through pcoip-lb from addresses until both answered.
const cookies = new Map<string, string>();
for (let i = 0; i < 100 && cookies.size < 2; i++) {
  const reply = await postBroker(endpointOf(broker), { name: 'pp', localAddress: `127.0.16.${i + 1}`, requestTimeoutMs: 10_000 }, requests.hello('pp'), `pingpong-${i}`, undefined);
  const cookie = sessionCookie(reply.rawHeaders);
  if (cookie) cookies.set(reply.connectorId, cookie);
}
if (cookies.size < 2) throw new Error('could not get sessions on two Connectors');
const [cookieA, cookieB] = [...cookies.values()] as [string, string];
const request = (cookie: string) => httpRequest('POST', '/pcoip-broker/xml', { 'Content-Type': 'text/xml; charset=UTF-8', Cookie: `JSESSIONID=${cookie}` }, requests.authenticate('pp', 'secret', 'sim.invalid'));

interface Phase {
  name: string;
  requests: number;
  cpuSeconds: number;
  wallSeconds: number;
  rttP50: number;
  rttP99: number;
  usersOk: number;
  load: string;
}

async function phase(name: string, hostile: (() => Buffer) | undefined): Promise<Phase> {
  const cpu0 = bench.cpuSeconds();
  const t0 = Date.now();
  const client = hostile ? await PipelinedClient.open(broker.port, '127.0.16.200', hostile, { method: 'POST', depth: 1 }) : undefined;
  const report = await runLoad({ users, target, bitrateBps: Number(values.bitrate), durationMs: seconds * 1000, concurrency: users, mix: REALISTIC_MIX, locateSpi: spiLocator(bench.sims) });
  client?.stop();
  return { name, requests: client?.responses ?? 0, cpuSeconds: bench.cpuSeconds() - cpu0, wallSeconds: (Date.now() - t0) / 1000, rttP50: report.udp.rttMs.p50, rttP99: report.udp.rttMs.p99, usersOk: report.ok, load: loadAverage() };
}

console.log(`bench:broker-pingpong — ${users} users streaming ${values.bitrate} bit/s for ${seconds} s per phase; pcoip-lb child pid ${bench.pid}; load average ${loadAverage()}`);
const idle = await phase('idle', undefined);
const steady = await phase('steady (one cookie)', () => request(cookieA));
let turn = 0;
const pingpong = await phase('ping-pong (two Connectors)', () => request(turn++ % 2 === 0 ? cookieA : cookieB));
await bench.stop();

const idleRate = idle.cpuSeconds / idle.wallSeconds;
console.log('| phase | hostile requests answered | wall s | pcoip-lb CPU s | CPU µs per request (idle rate taken out) | others ok | others UDP RTT p50 / p99 ms | load avg at end |');
console.log('|---|---|---|---|---|---|---|---|');
for (const p of [idle, steady, pingpong]) {
  const perRequest = p.requests > 0 ? (((p.cpuSeconds - idleRate * p.wallSeconds) / p.requests) * 1e6).toFixed(0) : '—';
  console.log(`| ${p.name} | ${p.requests} | ${p.wallSeconds.toFixed(1)} | ${p.cpuSeconds.toFixed(2)} | ${perRequest} | ${p.usersOk}/${users} | ${p.rttP50.toFixed(2)} / ${p.rttP99.toFixed(2)} | ${p.load} |`);
}
const per = (p: Phase) => (p.cpuSeconds - idleRate * p.wallSeconds) / Math.max(1, p.requests);
console.log(`ping-pong / steady CPU per request: ${(per(pingpong) / per(steady)).toFixed(2)}×`);
