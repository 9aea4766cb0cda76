import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { availableParallelism } from 'node:os';
import type { SimConnector } from '../../src/sim/connector.ts';
import { establishSession, type EstablishedSession, type SessionTarget } from '../../src/sim/client.ts';
import type { CliProcess, LogLine } from '../helpers/cli-process.ts';
import { hasMsg } from '../helpers/cli-process.ts';
import {
  FixedPortMedia,
  adminPost,
  connectorOf,
  metrics,
  simConfig,
  startLabCli,
  startSims,
  status,
  statusUntil,
  workersThatClosed,
} from '../helpers/cli-lab.ts';

/**
 * The multi-core control plane as a mirror of one owner (issue "One owner for client state"):
 * real worker processes, health checks ON, simulated Connectors that reject what they did not
 * broker. Every client is a full PCoIP login through the proxy (443 → 4172/TCP → 4172/UDP).
 */
describe('multi-core: every worker mirrors the primary', () => {
  let sims: SimConnector[];
  let cli: (CliProcess & { started: LogLine }) | undefined;

  beforeAll(async () => {
    sims = await startSims(['ms-a', 'ms-b', 'ms-c'], '127.0.21.');
  });
  afterEach(async () => {
    await cli?.cleanup();
    cli = undefined;
    for (const s of sims) s.setHealth(true);
  });
  afterAll(async () => {
    await Promise.all(sims.map((s) => s.stop()));
  });

  const target = (): SessionTarget => ({
    broker: { host: '127.0.0.1', port: cli!.ports.broker! },
    pcoipTcp: { host: '127.0.0.1', port: cli!.ports.pcoipTcp! },
    pcoipUdp: { host: '127.0.0.1', port: cli!.ports.pcoipUdp! },
  });
  const login = (address: string): Promise<EstablishedSession> => establishSession({ name: `u-${address}`, localAddress: address, requestTimeoutMs: 5000 }, target());

  /** Logs users in from 127.0.<net>.1…n, checks each one's media is echoed by its Connector, ends them; returns their Connectors. */
  async function users(net: number, n: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 1; i <= n; i++) {
      const address = `127.0.${net}.${i}`;
      const session = await login(address);
      const media = await FixedPortMedia.open(address, 0, cli!.ports.pcoipUdp!);
      const echo = await media.roundTrip(session.spi, 1, 2000);
      media.close();
      session.control.destroy();
      expect(echo, `media of ${address} (session on ${session.connectorId})`).toBeDefined();
      ids.push(session.connectorId);
    }
    return ids;
  }

  it('a Connector down at boot with workers: 4 gets no new client, on any worker', async () => {
    sims[0]!.setHealth(false, 'down before pcoip-lb started');
    const udpBefore = sims[0]!.counters.udpIn;
    // Broker and 4172 work done for clients (the /health checks are not counted here).
    const clientWork = (sim: SimConnector) =>
      sim.counters.allocations + sim.counters.notAuthenticated + sim.counters.tagsAdmitted + Object.values(sim.counters.tagsRejected).reduce((a, b) => a + b, 0);
    const workBefore = clientWork(sims[0]!);
    cli = await startLabCli(simConfig(sims, { workers: 4 }));
    expect(cli.started.workers).toBe(4);
    await statusUntil(cli, (s) => connectorOf(s, 'ms-a').health === 'down', 5000, 'ms-a down');
    const ids = await users(22, 40);
    expect(ids).not.toContain('ms-a');
    expect(new Set(ids)).toEqual(new Set(['ms-b', 'ms-c']));
    // Not one flow of any kind reached ms-a.
    expect(sims[0]!.counters.udpIn - udpBefore).toBe(0);
    expect(clientWork(sims[0]!) - workBefore).toBe(0);
    // The clients were spread over the workers by the kernel: more than one of them served.
    expect(workersThatClosed(cli.lines, (l) => l.listener === 'broker').size).toBeGreaterThan(1);
  });

  it('a health flip and an operator drain reach every worker, including one restarted after them', async () => {
    cli = await startLabCli(simConfig(sims));
    expect(cli.started.workers).toBe(availableParallelism());
    sims[1]!.setHealth(false, 'flipped during the run');
    await statusUntil(cli, (s) => connectorOf(s, 'ms-b').health === 'down', 5000, 'ms-b down');
    expect(await adminPost(cli, '/connectors/ms-c/drain')).toBe(200);
    // Worker 0 dies after both changes; its replacement must start from the primary's view, not the config.
    const pids = cli.started.pids as number[];
    process.kill(pids[0]!, 'SIGKILL');
    await cli.waitForLine(hasMsg('worker 0 restarted'), 10_000);
    const ids = await users(23, 30);
    expect(new Set(ids)).toEqual(new Set(['ms-a']));
    // The restarted worker took part.
    const restartedAt = cli.lines.findIndex(hasMsg('worker 0 restarted'));
    expect(workersThatClosed(cli.lines.slice(restartedAt), (l) => l.listener === 'broker')).toContain(0);
  });

  it('SIGKILL of a worker: the other keeps its flows, the dead one gives its leases back, counters never go down, the restart shares the ports', async () => {
    cli = await startLabCli(simConfig(sims, { workers: 2, affinity: { ttl: '1s' }, listeners: { broker: { bind: '127.0.0.1:0' }, pcoipTcp: { bind: '127.0.0.1:0' }, pcoipUdp: { bind: '127.0.0.1:0', idleTimeout: '500ms' } } }));
    const sessions: Array<{ address: string; session: EstablishedSession; media: FixedPortMedia }> = [];
    for (let i = 1; i <= 16; i++) {
      const address = `127.0.24.${i}`;
      const session = await login(address);
      const media = await FixedPortMedia.open(address, 0, cli.ports.pcoipUdp!);
      expect(await media.roundTrip(session.spi, 1)).toBeDefined();
      sessions.push({ address, session, media });
    }
    // Both workers report every second: wait until the primary counted all 16 control connections.
    await statusUntil(cli, (s) => s.connectors.reduce((n, c) => n + c.flows.pcoipTcp!.active, 0) === 16, 5000, '16 open 4172 connections counted');
    const totalBefore = (await metrics(cli)).sum('pcoip_lb_flows_total');
    process.kill((cli.started.pids as number[])[0]!, 'SIGKILL');
    await cli.waitForLine(hasMsg('worker 0 restarted'), 10_000);
    await new Promise((r) => setTimeout(r, 300));
    const gone = sessions.filter((s) => s.session.control.destroyed || s.session.control.closed);
    const alive = sessions.filter((s) => !gone.includes(s));
    // The kernel had spread the 16 connections over both workers: some died with worker 0, the rest live on.
    expect(gone.length).toBeGreaterThan(0);
    expect(alive.length).toBeGreaterThan(0);
    for (const s of sessions) {
      // Media keeps flowing for every client: datagrams of worker 0's flows now reach worker 1,
      // which opens a flow to the same Connector (the pin is the instance's, not the worker's).
      // A client whose control connection died has no admitted session any more (no echo);
      // a live one must still be echoed.
      if (alive.includes(s)) expect(await s.media.roundTrip(s.session.spi, 2), s.address).toBeDefined();
    }
    // Counters are monotonic across the restart (the dead worker's totals stay in the sums).
    await new Promise((r) => setTimeout(r, 1200));
    expect((await metrics(cli)).sum('pcoip_lb_flows_total')).toBeGreaterThanOrEqual(totalBefore);
    // Everyone leaves: every pin must expire after the TTL, including those the dead worker held leases on.
    for (const s of sessions) {
      s.session.control.destroy();
      s.media.close();
    }
    await statusUntil(cli, (s) => s.clients === 0, 6000, 'every client unpinned after its TTL');
    // The restarted worker shares the ports (they were port 0 in the config): it takes new flows.
    const restartedAt = cli.lines.findIndex(hasMsg('worker 0 restarted'));
    await users(25, 12);
    expect(workersThatClosed(cli.lines.slice(restartedAt), (l) => l.listener === 'broker')).toEqual(new Set([0, 1]));
  });

  it('a client sending media from a fixed UDP port follows its re-pin: session 2 reaches the new Connector', async () => {
    cli = await startLabCli(simConfig(sims, { workers: 2 }));
    const address = '127.0.26.1';
    // Session 1, media from the client's fixed port (held open).
    const first = await login(address);
    const media = await FixedPortMedia.open(address, 50_002, cli.ports.pcoipUdp!);
    expect(await media.roundTrip(first.spi, 1), 'session 1 media').toBeDefined();
    // The operator takes session 1's Connector out.
    expect(await adminPost(cli, `/connectors/${first.connectorId}/maint`)).toBe(200);
    await statusUntil(cli, (s) => connectorOf(s, first.connectorId).state === 'maint', 3000, 'maint');
    // Session 2 of the same client lands elsewhere; its media comes from the same 4-tuple, within the UDP idle timeout.
    const second = await login(address);
    expect(second.connectorId).not.toBe(first.connectorId);
    let echo: Buffer | undefined;
    for (let seq = 1; seq <= 5 && !echo; seq++) echo = await media.roundTrip(second.spi, seq, 500);
    expect(echo, `session 2 media (on ${second.connectorId}) must not go to ${first.connectorId}`).toBeDefined();
    await cli.waitForLine((l) => l.msg === 'flow closed' && l.reason === 'repinned' && l.connector === first.connectorId, 3000);
    // Workers report their counters once a second.
    let moved = 0;
    for (let i = 0; i < 30 && moved === 0; i++) {
      moved = (await metrics(cli)).sum('pcoip_lb_flows_repinned_total', { connector: first.connectorId });
      if (moved === 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect(moved).toBe(1);
    media.close();
    first.control.destroy();
    second.control.destroy();
  });

  it('metrics under workers: placements counted, /status lists the listeners, per-worker process metrics; --log-level reaches the workers', async () => {
    // The file says warn; the command line says info: every worker must log at info (its flow lines).
    cli = await startLabCli(simConfig(sims, { workers: 2, logging: { level: 'warn' } }), ['--log-level', 'info']);
    await users(27, 8);
    await cli.waitForLine((l) => l.msg === 'flow closed' && l.worker !== undefined, 3000);
    const s = await status(cli);
    expect(Object.keys(s.listeners).sort()).toEqual(['broker', 'pcoipTcp', 'pcoipUdp']);
    expect(s.listeners.pcoipUdp).toBe(`127.0.0.1:${cli.ports.pcoipUdp}/udp`);
    let m = await metrics(cli);
    for (let i = 0; i < 40 && m.sum('pcoip_lb_placements_total', { reason: 'placed' }) < 8; i++) {
      await new Promise((r) => setTimeout(r, 100));
      m = await metrics(cli);
    }
    // 8 users placed, plus their later flows following the pin.
    expect(m.sum('pcoip_lb_placements_total', { reason: 'placed' })).toBe(8);
    expect(m.sum('pcoip_lb_placements_total', { reason: 'pinned' })).toBeGreaterThan(8);
    expect(m.value('pcoip_lb_worker_up', { worker: '0' })).toBe(1);
    expect(m.value('pcoip_lb_worker_up', { worker: '1' })).toBe(1);
    expect(m.value('pcoip_lb_worker_resident_memory_bytes', { worker: '1' })).toBeGreaterThan(10_000_000);
  });

  it('a paused primary: workers decide alone after the look-up deadline and say so once a second, not once per client', async () => {
    cli = await startLabCli(simConfig(sims, { workers: 2 }));
    const primary = cli.child.pid!;
    const dropped = () => sims.reduce((n, s) => n + s.counters.udpUnknownSpi, 0);
    const droppedBefore = dropped();
    process.kill(primary, 'SIGSTOP');
    const sockets: FixedPortMedia[] = [];
    try {
      // 120 new clients (distinct addresses and ports): each one's first datagram needs the primary.
      for (let i = 0; i < 120; i++) {
        const media = await FixedPortMedia.open(`127.0.28.${1 + (i % 60)}`, 0, cli.ports.pcoipUdp!);
        media.socket.send(Buffer.alloc(64), cli.ports.pcoipUdp!, '127.0.0.1');
        sockets.push(media);
      }
      await new Promise((r) => setTimeout(r, 2500));
    } finally {
      process.kill(primary, 'SIGCONT');
    }
    const warned = cli.lines.filter((l) => l.msg === 'no answer from the primary in time; deciding locally');
    expect(warned.length).toBeGreaterThanOrEqual(1);
    expect(warned.length).toBeLessThanOrEqual(6);
    // The workers went on without it: the datagrams reached the Connectors (which drop unknown SPIs).
    expect(dropped() - droppedBefore).toBe(120);
    for (const m of sockets) m.close();
  });
});
