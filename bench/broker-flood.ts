/**
 * bench:broker-flood — memory of a terminating pcoip-lb under a flood of new identifiers, while
 * live users log in and stream (issue 14).
 *
 *   npm run bench:broker-flood -- [--scenario health|hello|connector-cookies] [--seconds 30]
 *        [--heap-mb 768] [--connections 6] [--value-bytes 16000] [--live-users 40]
 *
 * Scenarios (each flood client keeps --depth requests in flight on each of --connections
 * keep-alive TLS connections, all from one address):
 *   health             GET /health, each with a new --value-bytes CLIENT-LOG-ID (no login needed)
 *   hello              POST /pcoip-broker/xml hello, each with a new --value-bytes CLIENT-LOG-ID
 *   connector-cookies  a hostile Connector (in the pool) answers every request with a new 8 KB
 *                      JSESSIONID; the flood sends GET /health to it
 * The child runs with --max-old-space-size=--heap-mb, so unbounded growth ends in
 * "JavaScript heap out of memory", as in production. Prints RSS (from /proc), heap and what the
 * App has learned every --every seconds, then the live users' report. Exit 1 if the proxy died or
 * a live user failed.
 */
import { parseArgs } from 'node:util';
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import { runLoad } from '../src/sim/load.ts';
import { REALISTIC_MIX } from '../src/sim/mix.ts';
import { endpointOf } from '../src/sim/client.ts';
import { generateCertificate } from '../src/sim/certs.ts';
import { spiLocator } from '../src/sim/pool.ts';
import { formatReport } from '../src/sim/report.ts';
import { loadAverage } from './lib/proc.ts';
import { PipelinedClient, httpRequest, startTerminateBench, type ProxyStats } from './lib/terminate-bench.ts';

const { values } = parseArgs({
  options: {
    scenario: { type: 'string', default: 'health' },
    seconds: { type: 'string', default: '30' },
    'heap-mb': { type: 'string', default: '768' },
    connections: { type: 'string', default: '6' },
    depth: { type: 'string', default: '8' },
    'value-bytes': { type: 'string', default: '16000' },
    'live-users': { type: 'string', default: '40' },
    every: { type: 'string', default: '2' },
    'proxy-log-level': { type: 'string', default: 'error' },
  },
});
const scenario = values.scenario!;
if (!['health', 'hello', 'connector-cookies'].includes(scenario)) throw new Error(`--scenario: health, hello or connector-cookies, not ${scenario}`);
const seconds = Number(values.seconds);
const heapMb = Number(values['heap-mb']);
const valueBytes = Number(values['value-bytes']);
const liveUsers = Number(values['live-users']);

/**
 * A Connector that sets a new 8 KB JSESSIONID on every answer. It passes pcoip-lb's health checks
 * (GET /health answers the HP contract; its 4172 port accepts), so it stays in rotation.
 */
async function startHostileConnector(): Promise<{ host: string; port: number; pcoipPort: number; close: () => void }> {
  const host = '127.0.1.200';
  const pair = await generateCertificate('hostile.bench.invalid', [host]);
  const sockets = new Set<TLSSocket>();
  const body = '{"code":200,"status":"success"}';
  const server = createTlsServer({ key: pair.key, cert: pair.cert, ALPNProtocols: ['http/1.1'] }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let buffered = '';
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      for (let end = buffered.indexOf('\r\n\r\n'); end >= 0; end = buffered.indexOf('\r\n\r\n')) {
        buffered = buffered.slice(end + 4); // GET requests: no body
        const cookie = randomBytes(6144).toString('base64');
        socket.write(`HTTP/1.1 200 OK\r\nX-Hostile: 1\r\nSet-Cookie: JSESSIONID=${cookie}; Path=/\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, host, () => r()));
  const pcoip = createTcpServer((s) => s.destroy());
  await new Promise<void>((r) => pcoip.listen(0, host, () => r()));
  return {
    host,
    port: (server.address() as AddressInfo).port,
    pcoipPort: (pcoip.address() as AddressInfo).port,
    close: () => {
      sockets.forEach((s) => s.destroy());
      server.close();
      pcoip.close();
    },
  };
}

const hostile = scenario === 'connector-cookies' ? await startHostileConnector() : undefined;
const bench = await startTerminateBench({
  connectors: 3,
  heapMb,
  logLevel: values['proxy-log-level']!,
  // The hostile Connector takes (nearly) every new client (weight 1000 vs 1), so the flood lands
  // there; no live users in this scenario (they would be placed on it too).
  ...(hostile ? { extraConnectors: [{ id: 'hostile', address: hostile.host, ports: { broker: hostile.port, pcoip: hostile.pcoipPort }, weight: 1000 }] } : {}),
});
const port = bench.addresses.broker.port;
const bigValue = () => `${randomUUID()}-${'x'.repeat(Math.max(0, valueBytes - 37))}`;
const next =
  scenario === 'hello'
    ? () => httpRequest('POST', '/pcoip-broker/xml', { 'Content-Type': 'text/xml; charset=UTF-8', 'CLIENT-LOG-ID': bigValue() }, '<?xml version="1.0"?><pcoip-client version="2.1"><hello/></pcoip-client>')
    : scenario === 'health'
      ? () => httpRequest('GET', '/health', { 'CLIENT-LOG-ID': bigValue() })
      : () => httpRequest('GET', '/health', {});
const method = scenario === 'hello' ? 'POST' : 'GET';

const load0 = loadAverage();
console.log(
  `bench:broker-flood — scenario ${scenario}: ${values.connections} keep-alive connections × ${values.depth} in flight from 127.0.15.1, ` +
    `${scenario === 'connector-cookies' ? 'Connector sets 8 KB JSESSIONIDs' : `${valueBytes}-byte CLIENT-LOG-IDs`}; ${hostile ? 'no' : liveUsers} live users (realistic mix); ` +
    `pcoip-lb child pid ${bench.pid}, --max-old-space-size=${heapMb}; load average ${load0}`,
);
const rssBefore = bench.rss() ?? 0;
const mib = (n: number | undefined) => (n === undefined ? '   n/a' : (n / 2 ** 20).toFixed(0).padStart(6));
const flood = await Promise.all(Array.from({ length: Number(values.connections) }, () => PipelinedClient.open(port, '127.0.15.1', next, { method, depth: Number(values.depth) })));
const live = hostile
  ? undefined
  : runLoad({
      users: liveUsers,
      target: { broker: endpointOf(bench.addresses.broker), pcoipTcp: endpointOf(bench.addresses.pcoipTcp), pcoipUdp: endpointOf(bench.addresses.pcoipUdp) },
      bitrateBps: 200_000,
      durationMs: Math.max(1000, seconds * 1000 - 5000),
      concurrency: 10,
      mix: REALISTIC_MIX,
      locateSpi: spiLocator(bench.sims),
      requestTimeoutMs: 20_000,
    });

const started = Date.now();
let maxRss = rssBefore;
let lastStats: ProxyStats | undefined;
let lastResponses = 0;
console.log('|   t s | RSS MiB | heap MiB | external MiB | flood responses/s | learned log ids | learned cookies | learned bytes | load avg |');
console.log('|-------|---------|----------|--------------|-------------------|-----------------|-----------------|---------------|----------|');
while (Date.now() - started < seconds * 1000 && !bench.exited) {
  await new Promise((r) => setTimeout(r, Number(values.every) * 1000));
  const rss = bench.rss();
  if (rss !== undefined) maxRss = Math.max(maxRss, rss);
  const stats = await bench.stats();
  if (stats) lastStats = stats;
  const responses = flood.reduce((n, c) => n + c.responses, 0);
  const rate = (responses - lastResponses) / Number(values.every);
  lastResponses = responses;
  const learned = stats?.sessionBytes ? Object.values(stats.sessionBytes).reduce((a, b) => a + b, 0) : undefined;
  console.log(
    `| ${String(Math.round((Date.now() - started) / 1000)).padStart(5)} | ${mib(rss)}  | ${mib(stats?.heapUsed)}   | ${mib(stats?.external).padStart(12)} | ${String(Math.round(rate)).padStart(17)} | ${String(stats?.sessions.logIds ?? 'n/a').padStart(15)} | ${String(stats?.sessions.cookies ?? 'n/a').padStart(15)} | ${learned === undefined ? '          n/a' : `${(learned / 1024).toFixed(0).padStart(9)} KiB`} | ${loadAverage().split(' ')[0]!.padStart(8)} |`,
  );
}
for (const c of flood) c.stop();
const report = live ? await live : undefined;
const died = bench.exited;
console.log('');
console.log(
  died
    ? `pcoip-lb DIED after ${(died.atMs / 1000).toFixed(1)} s (exit code ${died.code}, signal ${died.signal}) — RSS before the flood ${mib(rssBefore)} MiB, last seen ${mib(maxRss)} MiB`
    : `pcoip-lb alive after ${seconds} s — RSS before the flood ${mib(rssBefore).trim()} MiB, max ${mib(maxRss).trim()} MiB, end ${mib(bench.rss()).trim()} MiB; ` +
        `flood requests answered ${flood.reduce((n, c) => n + c.responses, 0)}; broker events ${JSON.stringify(lastStats?.brokerEvents ?? {})}`,
);
if (report) console.log(`live users: ${report.ok} ok / ${report.failed} failed${report.failed ? ` (${JSON.stringify(report.failuresByKind)})` : ''}\n${formatReport(report, 5)}`);
await bench.stop();
hostile?.close();
process.exitCode = died || (report && report.failed > 0) ? 1 : 0;
