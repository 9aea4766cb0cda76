/**
 * bench:sessions — simulated PCoIP users through pcoip-lb, end to end.
 *
 *   npm run bench:sessions -- --users 200 [--bitrate 500k] [--duration 10s] [--connectors 3]
 *   npm run bench:sessions -- --target demo --users 50          (against a running `npm start`)
 *   npm run bench:sessions -- --workers 2 --tls terminate        (multi-core, terminating broker)
 *   npm run bench:sessions -- --tls terminate --lb-cookie [--mix realistic|legacy]
 *   npm run bench:sessions -- --tls terminate --same-source --users 60 [--per-session]   (users behind one address)
 *
 * By default it starts simulated Connectors on 127.0.1.x (in this process) and pcoip-lb (the
 * App, all listeners on 127.0.0.1 port 0, in a child process), runs the load generator, prints
 * the report as tables and exits 1 if any user failed. See bench/README.md for each figure.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { cpus, tmpdir } from 'node:os';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { generateCertificate } from '../src/sim/certs.ts';
import { CLIENT_MIXES } from '../src/sim/mix.ts';
import { loadAverage } from './lib/proc.ts';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { parseDuration } from '../src/util/duration.ts';
import { parseHostPort, type HostPort } from '../src/util/address.ts';
import type { SimConnector } from '../src/sim/connector.ts';
import { simSpecs, spiLocator, startSimPool } from '../src/sim/pool.ts';
import { endpointOf, type Endpoint, type SessionTarget } from '../src/sim/client.ts';
import { runLoad } from '../src/sim/load.ts';
import { formatBitrate, formatProgress, formatReport } from '../src/sim/report.ts';
import type { ListenerAddresses } from '../src/app.ts';

const DEMO_BROKER: HostPort = { host: '127.0.0.1', port: 8443 };

function parseBitrate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)(?:bit\/s|bps|b)?$/i.exec(text.trim());
  if (!m) throw new Error(`--bitrate: "${text}" is not a bitrate (e.g. 500k, 1M, 2.5M)`);
  return Math.round(Number(m[1]) * { '': 1, k: 1e3, m: 1e6, g: 1e9 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g']);
}

function hostPort(flag: string) {
  return (text: string | undefined): Endpoint | undefined => {
    if (text === undefined) return undefined;
    const parsed = parseHostPort(text);
    if ('error' in parsed) throw new Error(`--${flag}: ${parsed.error}`);
    return parsed;
  };
}

const args = await yargs(hideBin(process.argv))
  .scriptName('bench:sessions')
  .option('users', { alias: 'u', type: 'number', default: 200, describe: 'simulated users' })
  .option('bitrate', { type: 'string', default: '500k', describe: 'UDP bitrate per user (bit/s; k, M, G suffixes)' })
  .option('duration', { type: 'string', default: '10s', describe: 'how long each user streams' })
  .option('packet-size', { type: 'number', default: 1200, describe: 'UDP payload bytes per datagram' })
  .option('concurrency', { type: 'number', default: 32, describe: 'user set-ups in flight at once' })
  .option('connectors', { type: 'number', default: 3, describe: 'simulated Connectors to start (self-hosted mode)' })
  .option('same-source', { type: 'boolean', default: false, describe: 'all users from one source address instead of 127.0.2.x each' })
  .option('max-loss', { type: 'number', default: 10, describe: 'a user fails above this UDP loss %' })
  .option('target', { type: 'string', describe: '"demo" or HOST:PORT of a running pcoip-lb broker listener; starts nothing' })
  .option('pcoip', { type: 'string', describe: 'with --target: 4172 TCP (and UDP) address; default: what allocate-resource-resp says' })
  .option('pcoip-udp', { type: 'string', describe: 'with --target: 4172 UDP address when it differs from --pcoip' })
  .option('direct', { type: 'boolean', default: false, describe: 'no proxy: user i talks straight to Connector i mod N (a baseline for the generator itself)' })
  .option('proxy-log-level', { type: 'string', default: 'warn', describe: 'log level of the pcoip-lb child' })
  .option('workers', { type: 'string', default: '1', describe: 'pcoip-lb workers (self-hosted mode): a number or "auto"' })
  .option('tls', { type: 'string', choices: ['passthrough', 'terminate'], default: 'passthrough', describe: 'broker listener TLS mode (self-hosted mode); terminate uses a throwaway self-signed certificate' })
  .option('mix', { type: 'string', choices: Object.keys(CLIENT_MIXES), default: 'realistic', describe: 'client mix: realistic (probe hello, keep-alive and per-request, log-id-only users; see src/sim/mix.ts) or legacy (one connection per request, no probe)' })
  .option('lb-cookie', { type: 'boolean', default: false, describe: 'with --tls terminate: listeners.broker.lbCookie on (a throwaway key)' })
  .option('per-session', { type: 'boolean', default: false, describe: 'with --tls terminate: affinity.perSession on (with sniRouting and the UDP probe it needs): users behind one address placed per session' })
  .strict()
  .help()
  .parseAsync();

const bitrateBps = parseBitrate(args.bitrate);
const durationMs = parseDuration(args.duration);
if (durationMs === undefined) throw new Error(`--duration: "${args.duration}" is not a duration (e.g. 10s, 500ms)`);

let sims: SimConnector[] = [];
let certDir: string | undefined;
let proxy: ChildProcess | undefined;
let target: SessionTarget | ((userIndex: number) => SessionTarget);

if (args.target !== undefined) {
  const broker = args.target === 'demo' ? DEMO_BROKER : hostPort('target')(args.target)!;
  const pcoipTcp = hostPort('pcoip')(args.pcoip);
  const pcoipUdp = hostPort('pcoip-udp')(args.pcoipUdp) ?? pcoipTcp;
  target = { broker, ...(pcoipTcp ? { pcoipTcp } : {}), ...(pcoipUdp ? { pcoipUdp } : {}) };
} else if (args.direct) {
  sims = await startSimPool(simSpecs(args.connectors));
  const direct = sims;
  target = (i) => ({ broker: { host: direct[i % direct.length]!.host, port: direct[i % direct.length]!.brokerPort } });
} else {
  sims = await startSimPool(simSpecs(args.connectors));
  proxy = fork(new URL('./lib/sessions-proxy-process.ts', import.meta.url), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const workers = args.workers === 'auto' ? 'auto' : Number(args.workers);
  let brokerTls: Record<string, unknown> = {};
  if (args.tls === 'terminate') {
    certDir = mkdtempSync(join(tmpdir(), 'bench-sessions-'));
    const cert = await generateCertificate('bench.pcoip-lb.invalid', ['127.0.0.1']);
    writeFileSync(join(certDir, 'proxy.crt'), cert.cert);
    writeFileSync(join(certDir, 'proxy.key'), cert.key);
    brokerTls = { tls: { mode: 'terminate', certificates: [{ cert: join(certDir, 'proxy.crt'), key: join(certDir, 'proxy.key') }], upstream: { insecure: true } } };
    if (args.lbCookie) {
      writeFileSync(join(certDir, 'lb-cookie.keys'), `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
      brokerTls.lbCookie = { enabled: true, keyFile: join(certDir, 'lb-cookie.keys') };
    }
  } else if (args.lbCookie || args.perSession) {
    throw new Error(`--${args.lbCookie ? 'lb-cookie' : 'per-session'} needs --tls terminate`);
  }
  // affinity.perSession and what it needs (docs/sessions.md).
  const perSession = args.perSession
    ? { affinity: { perSession: true }, pcoipTcp: { sniRouting: true }, pcoipUdp: { probe: { enabled: true } } }
    : { affinity: {}, pcoipTcp: {}, pcoipUdp: {} };
  proxy.send({
    type: 'start',
    logLevel: args.proxyLogLevel,
    config: {
      workers,
      listeners: { broker: { bind: '127.0.0.1:0', ...brokerTls }, pcoipTcp: { bind: '127.0.0.1:0', ...perSession.pcoipTcp }, pcoipUdp: { bind: '127.0.0.1:0', ...perSession.pcoipUdp } },
      affinity: perSession.affinity,
      connectors: sims.map((s) => s.connectorConfig()),
      // Health checks run against the simulators as in production; no admin server (its default
      // port could clash with a running demo).
      admin: { enabled: false },
    },
  });
  const [reply] = (await once(proxy, 'message')) as [{ type: string; addresses?: Required<ListenerAddresses>; message?: string }];
  if (reply.type !== 'started' || !reply.addresses) throw new Error(`pcoip-lb did not start: ${reply.message ?? reply.type}`);
  const a = reply.addresses;
  target = { broker: endpointOf(a.broker), pcoipTcp: endpointOf(a.pcoipTcp), pcoipUdp: endpointOf(a.pcoipUdp) };
}

const mix = CLIENT_MIXES[args.mix]!;
const where = proxy
  ? `pcoip-lb (child process, workers: ${args.workers}, broker TLS ${args.tls}${args.lbCookie ? ', lbCookie on' : ''}${args.perSession ? ', affinity.perSession on' : ''}) in front of ${sims.length} simulated Connectors`
  : args.direct
    ? `no proxy, straight to ${sims.length} simulated Connectors`
    : `the pcoip-lb at ${args.target === 'demo' ? `${DEMO_BROKER.host}:${DEMO_BROKER.port} (the demo)` : args.target}`;
process.stderr.write(`bench:sessions: ${args.users} users (client mix "${mix.name}") × ${formatBitrate(bitrateBps)} for ${args.duration} through ${where}\n`);
const loadBefore = loadAverage();

const report = await runLoad({
  users: args.users,
  target,
  bitrateBps,
  durationMs,
  packetBytes: args.packetSize,
  concurrency: args.concurrency,
  distinctSources: !args.sameSource,
  maxLossPct: args.maxLoss,
  mix,
  ...(sims.length > 0 ? { locateSpi: spiLocator(sims) } : {}),
  onProgress: (p) => process.stderr.write(`${formatProgress(p)}\n`),
  progressEveryMs: 2000,
});

let proxyUsage = '';
if (proxy) {
  proxy.send({ type: 'stop' });
  const [stopped] = (await once(proxy, 'message')) as [{ cpuUserUs: number; cpuSystemUs: number; treeCpuSeconds: number; maxRssBytes: number }];
  proxyUsage =
    `pcoip-lb process: CPU ${((stopped.cpuUserUs + stopped.cpuSystemUs) / 1e6).toFixed(2)} s (user ${(stopped.cpuUserUs / 1e6).toFixed(2)}, system ${(stopped.cpuSystemUs / 1e6).toFixed(2)}), max RSS ${(stopped.maxRssBytes / 2 ** 20).toFixed(0)} MiB` +
    (args.workers === '1' ? '' : `; with its workers: CPU ${stopped.treeCpuSeconds.toFixed(2)} s`);
}
if (certDir) rmSync(certDir, { recursive: true, force: true });
await Promise.all(sims.map((s) => s.stop()));

const cpu = cpus();
process.stdout.write(
  [
    `bench:sessions ${new Date().toISOString().slice(0, 10)} — Node ${process.version}, ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, load average ${loadBefore} at start, ${loadAverage()} at end`,
    `through ${where}; client mix "${mix.name}": ${mix.profiles.map((p) => `${p.name} ×${p.weight}`).join(', ')}`,
    formatReport(report),
    ...(proxyUsage ? ['', proxyUsage] : []),
    '',
  ].join('\n'),
);
process.exitCode = report.failed > 0 ? 1 : 0;
