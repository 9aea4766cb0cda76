/**
 * bench:memory — resident memory of pcoip-lb holding N concurrent sessions, each one 4172/TCP
 * connection and one 4172/UDP flow from its own client address (127.0.2.1, 127.0.2.2, …, so
 * each session also holds its own affinity entry), to three echo Connectors on 127.0.1.1–3.
 *
 *   node bench/memory.ts [--levels 1000,5000,10000] [--quick] [--from dist|src]
 *
 * pcoip-lb runs as `pcoip-lb start` does: the compiled dist/ (built first), in its own process.
 * RSS is read from /proc/<pid>/status of that process after two forced full GCs, at 0 sessions
 * and at each level (sessions are added, never closed, between levels).
 *
 * Each session costs pcoip-lb 3 file descriptors (client TCP, Connector TCP, Connector UDP) and
 * this process 3 (client TCP, client UDP, the echo Connector's TCP). A level that does not fit
 * the open-file limit is measured at the largest level that does, and the rest is extrapolated
 * linearly (the steeper of the last interval's and the average per-session growth) — said so
 * in the table.
 */
import { connect, type Socket } from 'node:net';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { startFakeConnector, type FakeConnector } from '../test/helpers/fake-connector.ts';
import { startPcoipLb, PROXY_HOST, type PcoipLbPeer } from './lib/peers.ts';
import { rssBytes, openFds, openFileLimit, loadAverage } from './lib/proc.ts';
import { markdownTable, fmt } from './lib/table.ts';

const { values: args } = parseArgs({
  options: {
    levels: { type: 'string' },
    quick: { type: 'boolean', default: false },
    from: { type: 'string', default: 'dist' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  process.stdout.write('usage: npm run bench:memory -- [--levels 1000,5000,10000] [--quick] [--from dist|src]\n');
  process.exit(0);
}
const levels = (args.levels ?? (args.quick ? '500,1000,2000' : '1000,5000,10000')).split(',').map(Number).sort((a, b) => a - b);
const maxSessions = levels[levels.length - 1] ?? 0;
const from = args.from === 'src' ? 'src' : 'dist';
/** Descriptors per session in pcoip-lb and in this process, and a margin for everything else. */
const FDS_PER_SESSION = 3;
const FD_MARGIN = 200;
/** Sessions opened at once; the listen backlog (511) and 2 cores set the pace, not this. */
const BATCH = 200;
const STEP_TIMEOUT_MS = 10_000;
const GOAL_BYTES = 300 * 1024 * 1024;
const log = (line: string) => process.stdout.write(`${line}\n`);

/** 127.0.2.1 … 127.0.2.250, 127.0.3.1 …: up to 250 × 250 distinct loopback client addresses. */
function clientAddress(i: number): string {
  return `127.0.${2 + Math.floor(i / 250)}.${1 + (i % 250)}`;
}

interface Session {
  tcp: Socket;
  udp: UdpSocket;
}

function withTimeout<T>(what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** One session: a TCP connection that got the Connector's greeting, and a UDP flow that got an echo. */
async function openSession(i: number, port: number): Promise<Session> {
  const localAddress = clientAddress(i);
  const tcp = connect({ host: PROXY_HOST, port, localAddress });
  tcp.on('error', () => undefined);
  await withTimeout(
    `session ${i} TCP from ${localAddress}`,
    new Promise<void>((resolve, reject) => {
      tcp.once('data', () => resolve());
      tcp.once('close', () => reject(new Error(`session ${i}: TCP from ${localAddress} closed before the Connector's greeting`)));
    }),
  );
  const udp = createSocket('udp4');
  udp.on('error', () => undefined);
  await new Promise<void>((resolve) => udp.bind({ address: localAddress, port: 0 }, () => resolve()));
  // Retry the datagram a few times: UDP may drop one while 200 sessions open at once.
  await withTimeout(
    `session ${i} UDP from ${localAddress}`,
    new Promise<void>((resolve) => {
      let tries = 0;
      const timer = setInterval(() => (tries++ < 5 ? udp.send(`s${i}`, port, PROXY_HOST) : clearInterval(timer)), 1000);
      udp.once('message', () => {
        clearInterval(timer);
        resolve();
      });
      udp.send(`s${i}`, port, PROXY_HOST);
    }),
  );
  return { tcp, udp };
}

/** Raises this process's and the proxy's open-file limit: 10 k sessions need ~30 k descriptors in the proxy. */
function raiseFdLimit(pid: number, limit: number): string {
  const r = spawnSync('prlimit', ['--pid', String(pid), `--nofile=${limit}:${limit}`], { encoding: 'utf8' });
  return r.status === 0 ? `raised to ${limit}` : `could not raise (${(r.stderr || r.error?.message || '').trim()}); the current limit applies`;
}

interface MemSample {
  type: 'mem';
  gcRan: boolean;
  flows: { broker: number; pcoipTcp: number; pcoipUdp: number };
  affinity: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

interface LevelRow {
  sessions: number;
  rssBytes: number;
  heapUsed: number;
  external: number;
  tcpFlows: number;
  udpFlows: number;
  affinityEntries: number;
  fds: number | undefined;
  openSeconds: number;
  /** Not measured: projected from the measured levels (the open-file limit stopped the bench). */
  extrapolated?: boolean;
}

async function sample(peer: PcoipLbPeer, sessions: number, openSeconds: number): Promise<LevelRow> {
  // Let in-flight I/O settle, then GC in the child, then read RSS from outside.
  await new Promise((r) => setTimeout(r, 1000));
  const mem = await peer.request<MemSample>('mem');
  if (!mem.gcRan) throw new Error('the pcoip-lb child did not run with --expose-gc');
  await new Promise((r) => setTimeout(r, 500));
  return {
    sessions,
    rssBytes: rssBytes(peer.pid!) ?? NaN,
    heapUsed: mem.heapUsed,
    external: mem.external,
    tcpFlows: mem.flows.pcoipTcp,
    udpFlows: mem.flows.pcoipUdp,
    affinityEntries: mem.affinity,
    fds: openFds(peer.pid!),
    openSeconds,
  };
}

async function main(): Promise<void> {
  const started = new Date();
  log(`# bench:memory — ${started.toISOString()}`);
  log(`node ${process.version}, ${cpus().length} cores, load average ${loadAverage()}; levels ${levels.join(' / ')} sessions (1 TCP + 1 UDP flow each)`);
  if (maxSessions > 250 * 250) throw new Error('at most 62 500 sessions (distinct 127.0.x.y client addresses)');
  const fdLimit = Math.max(65_536, maxSessions * FDS_PER_SESSION + 1000);
  log(`open-file limit of this process (clients + echo Connectors, ${FDS_PER_SESSION} fds per session): ${raiseFdLimit(process.pid, fdLimit)}`);
  if (from === 'dist') {
    log('building dist/ (npm run build) so that pcoip-lb runs as `pcoip-lb start` does');
    const build = spawnSync(process.execPath, [fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url)), '-p', 'tsconfig.build.json'], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
      encoding: 'utf8',
    });
    if (build.status !== 0) throw new Error(`npm run build failed:\n${build.stdout}${build.stderr}`);
  }

  const dir = mkdtempSync(join(tmpdir(), 'plb-mem-'));
  const connectors: FakeConnector[] = [];
  const sessions: Session[] = [];
  let peer: PcoipLbPeer | undefined;
  try {
    for (let c = 1; c <= 3; c++) connectors.push(await startFakeConnector(`conn-${c}`, `127.0.1.${c}`));
    peer = await startPcoipLb(dir, 0, {
      connectors: connectors.map((c) => ({ id: c.id, address: c.host, port: c.pcoipPort })),
      udpIdleTimeout: '10m', // the flows are quiet while the bench opens the next level
      udpMaxFlows: Math.max(100_000, maxSessions * 2),
      from,
    });
    log(`pcoip-lb (pid ${peer.pid}, from ${from}/) open-file limit (${FDS_PER_SESSION} fds per session): ${raiseFdLimit(peer.pid!, fdLimit)}`);
    const limit = Math.min(openFileLimit(peer.pid!) ?? Infinity, openFileLimit(process.pid) ?? Infinity);
    const fit = Math.floor((limit - FD_MARGIN) / FDS_PER_SESSION / 100) * 100;
    const measured = [...new Set(levels.map((l) => Math.min(l, fit)))];
    const beyond = levels.filter((l) => l > fit);
    if (beyond.length > 0) {
      log(`open-file limit ${limit} fits ${fit} sessions: measuring up to ${fit}, extrapolating ${beyond.join(', ')} (raise the hard limit, e.g. as root with CAP_SYS_RESOURCE, to measure them)`);
    }
    const rows: LevelRow[] = [await sample(peer, 0, 0)];
    log(`  0 sessions: RSS ${fmt(rows[0]!.rssBytes / 2 ** 20, 1)} MiB`);
    for (const level of measured) {
      const t0 = Date.now();
      while (sessions.length < level) {
        const from = sessions.length;
        const count = Math.min(BATCH, level - from);
        const batch = await Promise.all(Array.from({ length: count }, (_, k) => openSession(from + k, peer!.port)));
        sessions.push(...batch);
      }
      const row = await sample(peer, level, (Date.now() - t0) / 1000);
      rows.push(row);
      log(`  ${level} sessions: RSS ${fmt(row.rssBytes / 2 ** 20, 1)} MiB, flows TCP ${row.tcpFlows} UDP ${row.udpFlows}, affinity ${row.affinityEntries}, fds ${row.fds}`);
      if (row.tcpFlows !== level || row.udpFlows !== level) throw new Error(`expected ${level} TCP and UDP flows in pcoip-lb, found ${row.tcpFlows} / ${row.udpFlows}`);
    }
    const [prev, last] = rows.slice(-2) as [LevelRow, LevelRow];
    const zero = rows[0]!;
    // RSS grows in steps (heap pages, malloc arenas): take the steeper of the last interval's
    // slope and the average from 0 sessions, so the projection errs high rather than low.
    const perSession = (a: LevelRow, b: LevelRow, key: 'rssBytes' | 'heapUsed') => (b[key] - a[key]) / Math.max(1, b.sessions - a.sessions);
    for (const level of beyond) {
      const slope = Math.max(perSession(prev, last, 'rssBytes'), perSession(zero, last, 'rssBytes'));
      const heapSlope = Math.max(perSession(prev, last, 'heapUsed'), perSession(zero, last, 'heapUsed'));
      rows.push({
        ...last,
        sessions: level,
        rssBytes: last.rssBytes + slope * (level - last.sessions),
        heapUsed: last.heapUsed + heapSlope * (level - last.sessions),
        tcpFlows: NaN,
        udpFlows: NaN,
        affinityEntries: NaN,
        fds: undefined,
        openSeconds: NaN,
        extrapolated: true,
      });
    }
    const base = rows[0]!.rssBytes;
    const table = markdownTable(
      ['sessions', 'RSS MiB', 'Δ RSS per session KiB', 'heap used MiB', 'external MiB', 'TCP flows', 'UDP flows', 'affinity entries', 'fds', 'open s'],
      rows.map((r) => [
        r.extrapolated ? `${r.sessions} (extrapolated)` : r.sessions,
        fmt(r.rssBytes / 2 ** 20, 1),
        r.sessions ? fmt((r.rssBytes - base) / r.sessions / 1024, 1) : '–',
        fmt(r.heapUsed / 2 ** 20, 1),
        fmt(r.external / 2 ** 20, 1),
        fmt(r.tcpFlows, 0),
        fmt(r.udpFlows, 0),
        fmt(r.affinityEntries, 0),
        r.fds ?? '–',
        fmt(r.openSeconds, 1),
      ]),
    );
    const top = rows[rows.length - 1]!;
    const how = top.extrapolated ? 'extrapolated' : 'measured';
    const goal =
      top.sessions >= 10_000
        ? `goal 10 k sessions < 300 MB RSS: ${fmt(top.rssBytes / 1e6, 0)} MB (${fmt(top.rssBytes / 2 ** 20, 0)} MiB) at ${top.sessions}, ${how} — ${top.rssBytes < GOAL_BYTES ? 'met' : 'NOT met'}`
        : `goal 10 k sessions < 300 MB RSS: not measured (largest level ${top.sessions})`;
    log(`\n${table}\n\n${goal}`);
    const resultsDir = fileURLToPath(new URL('./results/', import.meta.url));
    mkdirSync(resultsDir, { recursive: true });
    const file = join(resultsDir, `memory-${started.toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, JSON.stringify({ startedAt: started.toISOString(), node: process.version, from, levels: rows, goal }, null, 2));
    log(`results: ${file}; took ${Math.round((Date.now() - started.getTime()) / 1000)} s; load average now ${loadAverage()}`);
  } finally {
    for (const s of sessions) {
      s.tcp.destroy();
      s.udp.close();
    }
    await peer?.stop();
    await Promise.all(connectors.map((c) => c.close()));
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
