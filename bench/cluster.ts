/**
 * bench:cluster — several pcoip-lb instances as one pool (docs/ha.md), end to end: real
 * `pcoip-lb start` processes on their own loopback addresses (127.0.21.x), one redis-server,
 * simulated Connectors (127.0.20.x) that drop any flow they did not broker.
 *
 *   npm run bench:cluster -- [--instances 3] [--workers 1] [--users 150] [--kill-users 60]
 *                            [--latency-users 60] [--duration 6s] [--no-control]
 *
 * 1. Set-up latency with and without the store: the same logins through one instance that has
 *    `cluster:` and one that has not, interleaved in 6 rounds (each user's first flow costs one
 *    store look-up); plus the look-up latency the instance measured itself.
 * 2. Spread: every flow of every user (each 443 request, the 4172/TCP, the 4172/UDP) goes to an
 *    instance picked at random (ECMP with a changing member set), and an operator drains one
 *    Connector on ONE instance mid-run. Misrouted must be 0. A control run with stand-alone
 *    instances (no store) shows what the store prevents.
 * 3. Kill: users spread the same way stream media; one instance is SIGKILLed mid-run. Media that
 *    went through it moves to another instance (as the router would) and must reach the same
 *    Connector: sessions continued and the UDP interruption are reported. Users whose 4172/TCP
 *    went through it lose that connection (no instance can take over a TCP connection) and log
 *    in again: how many land on the same Connector.
 * Prints the load average beside each part. Exits 1 if anything was misrouted.
 */
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { parseDuration } from '../src/util/duration.ts';
import { simSpecs, spiLocator, startSimPool } from '../src/sim/pool.ts';
import { establishSession, type EstablishedSession, type SessionTarget } from '../src/sim/client.ts';
import { runLoad, userSourceAddress, type LoadReport } from '../src/sim/load.ts';
import { Histogram } from '../src/sim/histogram.ts';
import { RedisServer } from '../test/helpers/redis-server.ts';
import { adminPost, instanceConfig, metricsText, startInstance, type Instance, type InstanceSpec } from '../test/helpers/cluster-lab.ts';
import { failoverMedia, type FailoverResult } from './lib/failover-media.ts';
import { fmt, markdownTable } from './lib/table.ts';

const { values } = parseArgs({
  options: {
    instances: { type: 'string', default: '3' },
    workers: { type: 'string', default: '1' },
    users: { type: 'string', default: '150' },
    'kill-users': { type: 'string', default: '60' },
    'latency-users': { type: 'string', default: '90' },
    duration: { type: 'string', default: '6s' },
    'no-control': { type: 'boolean', default: false },
  },
});
const instanceCount = Number(values.instances);
const workers = values.workers === 'auto' ? 'auto' : Number(values.workers);
const users = Number(values.users);
const killUsers = Number(values['kill-users']);
const latencyUsers = Number(values['latency-users']);
const durationMs = parseDuration(values.duration!) ?? NaN;
if (!(instanceCount >= 2 && instanceCount <= 9 && users > 0 && killUsers > 0 && latencyUsers >= 2 && durationMs > 0)) {
  throw new Error('bad arguments: --instances 2-9 --users N --kill-users N --latency-users N --duration 6s');
}

const load = () => `load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`;
const pick = <T>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)]!;
let nextSource = 0;
/** A block of fresh client addresses for one run (no run shares a client with another). */
const sources = (n: number) => {
  const first = nextSource;
  nextSource += n;
  return first;
};

const redis = new RedisServer({ host: '127.0.0.1' });
await redis.start();
const sims = await startSimPool(simSpecs(3, '127.0.20.'));
const locateSpi = spiLocator(sims);
const connectors = sims.map((s) => s.connectorConfig());
const common = { health: { interval: '2s', timeout: '1s', rise: 2, fall: 2 }, top: { workers, affinity: { ttl: '10m' } } };
const clusterCfg = { keyPrefix: 'bench', timeouts: { heartbeat: '1s', lookup: '75ms', connect: '2s' } };
const spec = (id: string, host: string): InstanceSpec => ({ id, host });
const started: Instance[] = [];
const start = async (s: InstanceSpec, cluster: boolean): Promise<Instance> => {
  const i = await startInstance(s, instanceConfig(s, redis.url, connectors, { ...common, cluster: cluster ? clusterCfg : null }));
  started.push(i);
  return i;
};
const stop = async (i: Instance) => i.cli.cleanup();
const targetOf = (i: Instance): SessionTarget => ({ broker: i.broker, pcoipTcp: i.pcoipTcp, pcoipUdp: i.pcoipUdp });
/** Each 443 request to a random instance; 4172/TCP and UDP to random instances too (chosen per user). */
const spread = (pool: Instance[]) => (): SessionTarget => ({ broker: () => pick(pool).broker, pcoipTcp: pick(pool).pcoipTcp, pcoipUdp: pick(pool).pcoipUdp });
const misrouted = (r: LoadReport) => r.failuresByKind.misrouted ?? 0;
let anyMisrouted = 0;

try {
  console.log(`bench:cluster — ${instanceCount} instances (workers: ${workers}), 3 simulated Connectors, redis-server ${redis.url}; ${load()}`);
  const cluster = await Promise.all(Array.from({ length: instanceCount }, (_, i) => start(spec(`lb-${i + 1}`, `127.0.21.${i + 1}`), true)));

  // ---- 1. set-up latency, with and without the store ------------------------------------------
  const solo = await start(spec('solo', '127.0.21.9'), false);
  const rounds: string[][] = [];
  const ratios: number[] = [];
  const ROUNDS = 6;
  const perRound = Math.max(1, Math.floor(latencyUsers / 2 / ROUNDS));
  for (let round = 1; round <= ROUNDS; round++) {
    const p50: number[] = [];
    // Alternate which goes first, so neither always runs on the quieter half of a round.
    const order = round % 2 ? ([['stand-alone', solo], ['cluster', cluster[0]!]] as const) : ([['cluster', cluster[0]!], ['stand-alone', solo]] as const);
    for (const [name, via] of order) {
      const r = await runLoad({ users: perRound, target: targetOf(via), bitrateBps: 100_000, durationMs: 300, concurrency: 4, sourceOffset: sources(perRound), locateSpi });
      p50[name === 'cluster' ? 1 : 0] = r.setupMs.p50;
      rounds.push([String(round), name, `${r.ok}/${r.users}`, fmt(r.setupMs.p50, 1), fmt(r.setupMs.p95, 1), fmt(r.setupMs.mean, 1), load()]);
    }
    ratios.push(p50[1]! / p50[0]!);
  }
  console.log('\n1. Set-up latency of a full login (5 broker requests + 4172/TCP admission), same instance type with and without cluster:, ms');
  console.log(markdownTable(['round', 'instance', 'ok', 'p50', 'p95', 'mean', 'load'], rounds));
  const sorted = [...ratios].sort((x, y) => x - y);
  console.log(`p50 cluster / stand-alone per round: ${ratios.map((x) => x.toFixed(2)).join(' ')} (median ${((sorted[2]! + sorted[3]!) / 2).toFixed(2)})`);
  const lookups = lookupStats(await metricsText(cluster[0]!));
  console.log(`store look-ups measured by ${cluster[0]!.spec.id} (first flow of each new client): ${lookups.count}, mean ${fmt(lookups.meanMs, 2)} ms, p50 ≤ ${lookups.p50Ms} ms, p95 ≤ ${lookups.p95Ms} ms (histogram bucket bounds), timeouts ${lookups.timeouts}`);
  await stop(solo);

  // ---- 2. spread over the instances at random, drain on one of them -----------------------------
  const spreadRun = async (pool: Instance[], label: string) => {
    const drainAfterMs = 1500;
    const drainTarget = sims[1]!.id;
    const timer = setTimeout(() => void adminPost(pool[0]!, `/connectors/${drainTarget}/drain`).catch(() => undefined), drainAfterMs);
    const r = await runLoad({ users, target: spread(pool), bitrateBps: 300_000, durationMs, concurrency: 16, sourceOffset: sources(users), locateSpi });
    clearTimeout(timer);
    await adminPost(pool[0]!, `/connectors/${drainTarget}/enable`).catch(() => undefined);
    if (label === 'cluster') anyMisrouted += misrouted(r);
    return [label, `${r.ok}/${r.users}`, String(misrouted(r)), String(r.failed - misrouted(r)), fmt(r.setupMs.p50, 1), fmt(r.setupMs.p95, 1), fmt(r.udp.lossPct, 3), r.perConnector.map((c) => `${c.id} ${c.users}`).join(', '), load()];
  };
  const spreadRows = [await spreadRun(cluster, 'cluster')];
  if (!values['no-control']) {
    const alone = await Promise.all(Array.from({ length: instanceCount }, (_, i) => start(spec(`alone-${i + 1}`, `127.0.21.${11 + i}`), false)));
    spreadRows.push(await spreadRun(alone, 'stand-alone (control)'));
    await Promise.all(alone.map(stop));
  }
  console.log(`\n2. ${users} users, every flow to a random instance of ${instanceCount}; ${sims[1]!.id} drained on the first instance 1.5 s in:`);
  console.log(markdownTable(['instances', 'ok', 'misrouted', 'other failures', 'set-up p50 ms', 'p95 ms', 'UDP loss %', 'users per Connector', 'load'], spreadRows));

  // ---- 3. kill one instance mid-run ----------------------------------------------------------------
  const killed = cluster[instanceCount - 1]!;
  const survivors = cluster.slice(0, -1);
  const first = sources(killUsers);
  const sessions: Array<{ session: EstablishedSession; tcpVia: Instance; udpVia: Instance; closedAt?: number }> = [];
  let setupFailures = 0;
  await Promise.all(
    Array.from({ length: killUsers }, async (_, i) => {
      const tcpVia = pick(cluster);
      const udpVia = pick(cluster);
      try {
        const session = await establishSession(
          { name: `kill-user-${i}`, localAddress: userSourceAddress(first + i), requestTimeoutMs: 10_000 },
          { broker: () => pick(cluster).broker, pcoipTcp: tcpVia.pcoipTcp },
        );
        const entry: (typeof sessions)[number] = { session, tcpVia, udpVia };
        session.control.on('close', () => (entry.closedAt = performance.now()));
        session.control.on('error', () => undefined);
        sessions.push(entry);
      } catch {
        setupFailures++;
      }
    }),
  );
  const mediaMs = 8000;
  const killAtMs = 3000;
  const media = sessions.map((s) =>
    failoverMedia({
      spi: s.session.spi,
      replySpi: s.session.replySpi,
      localAddress: s.session.plan.localAddress!,
      endpoints: [s.udpVia, ...survivors.filter((x) => x !== s.udpVia)].map((x) => x.pcoipUdp),
      intervalMs: 20,
      durationMs: mediaMs,
      packetBytes: 1200,
      deadAfterMs: 250,
      stopped: () => s.closedAt !== undefined,
    }),
  );
  const killTimer = setTimeout(() => killed.cli.child.kill('SIGKILL'), killAtMs);
  const results: FailoverResult[] = await Promise.all(media);
  clearTimeout(killTimer);
  const viaKilledUdp = sessions.map((s, i) => ({ s, r: results[i]! })).filter(({ s }) => s.udpVia === killed && s.tcpVia !== killed);
  const continued = viaKilledUdp.filter(({ r }) => r.resumed);
  const gaps = new Histogram();
  const resumes = new Histogram();
  for (const { r } of continued) (gaps.record(r.gapMs!), resumes.record(r.resumeMs!));
  const gap = gaps.summary();
  const resume = resumes.summary();
  const unaffected = sessions.map((s, i) => ({ s, r: results[i]! })).filter(({ s }) => s.udpVia !== killed && s.tcpVia !== killed);
  const unaffectedOk = unaffected.filter(({ r }) => r.received > r.sent * 0.9).length;
  // Users whose 4172/TCP went through the dead instance: their session ended with it. They log in again.
  const lostTcp = sessions.filter((s) => s.tcpVia === killed);
  let sameConnector = 0;
  let reloginFailed = 0;
  for (const s of lostTcp) {
    try {
      const again = await establishSession({ ...s.session.plan, name: `${s.session.plan.name}-again` }, { broker: () => pick(survivors).broker, pcoipTcp: pick(survivors).pcoipTcp });
      if (again.connectorId === s.session.connectorId) sameConnector++;
      again.control.destroy();
    } catch {
      reloginFailed++;
    }
  }
  const foreign = viaKilledUdp.filter(({ s, r }) => !r.resumed && locateSpi(s.session.spi) !== undefined && locateSpi(s.session.spi) !== s.session.connectorId).length;
  anyMisrouted += foreign + (lostTcp.length - sameConnector - reloginFailed);
  for (const s of sessions) s.session.control.destroy();
  console.log(`\n3. ${killUsers} users streaming 480 kbit/s through ${instanceCount} instances (flows spread at random); ${killed.spec.id} SIGKILLed ${killAtMs / 1000} s in; a stream moves after ${250} ms without an echo:`);
  console.log(
    markdownTable(
      ['figure', 'value'],
      [
        ['sessions set up / failed', `${sessions.length} / ${setupFailures}`],
        ['media through the killed instance (4172/TCP elsewhere)', String(viaKilledUdp.length)],
        ['… continued on another instance, same Connector', `${continued.length} / ${viaKilledUdp.length}`],
        ['… UDP interruption ms (p50 / p95 / max), incl. 250 ms detection', continued.length ? `${fmt(gap.p50, 0)} / ${fmt(gap.p95, 0)} / ${fmt(gap.max, 0)}` : '-'],
        ['… of which from the move to the first echo via the new instance, ms (p50 / p95 / max)', continued.length ? `${fmt(resume.p50, 1)} / ${fmt(resume.p95, 1)} / ${fmt(resume.max, 1)}` : '-'],
        ['… media reaching another Connector (misrouted)', String(foreign)],
        ['sessions not touching the killed instance: media kept flowing', `${unaffectedOk} / ${unaffected.length}`],
        ['4172/TCP through the killed instance (session lost with it)', String(lostTcp.length)],
        ['… logged in again through the others: same Connector', `${sameConnector} / ${lostTcp.length}${reloginFailed ? ` (${reloginFailed} failed)` : ''}`],
        ['load', load()],
      ],
    ),
  );
} finally {
  await Promise.all(started.map((i) => i.cli.cleanup().catch(() => undefined)));
  await Promise.all(sims.map((s) => s.stop()));
  await redis.cleanup();
}
console.log(`\nmisrouted with the store: ${anyMisrouted}`);
process.exitCode = anyMisrouted === 0 ? 0 : 1;

/** Mean and bucket bounds (p50, p95) of the instance's own look-up histogram, from /metrics. */
function lookupStats(text: string): { count: number; meanMs: number; p50Ms: string; p95Ms: string; timeouts: number } {
  const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  const count = num(/^pcoip_lb_cluster_lookup_duration_seconds_count\{kind="pin"\} (\S+)$/m);
  const sum = num(/^pcoip_lb_cluster_lookup_duration_seconds_sum\{kind="pin"\} (\S+)$/m);
  const buckets = [...text.matchAll(/^pcoip_lb_cluster_lookup_duration_seconds_bucket\{le="([^"]+)",kind="pin"\} (\S+)$/gm)].map((m) => ({ le: m[1]!, n: Number(m[2]) }));
  const bound = (q: number) => {
    const b = buckets.find((x) => x.n >= q * count);
    return b ? (b.le === '+Inf' ? '∞' : String(Number(b.le) * 1000)) : '-';
  };
  return { count, meanMs: (sum / count) * 1000, p50Ms: bound(0.5), p95Ms: bound(0.95), timeouts: num(/^pcoip_lb_cluster_lookup_timeouts_total (\S+)$/m) };
}
