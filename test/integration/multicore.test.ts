import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFaultyConnector, type FaultyConnector } from '../helpers/faulty-connector.ts';
import { tcpGreeting } from '../helpers/clients.ts';
import { openUdpClient, waitUntil } from '../helpers/flow-clients.ts';
import { startCli, rawTestConfig, writeConfig, hasMsg, type CliProcess, type LogLine } from '../helpers/cli-process.ts';
import { Pool } from '../../src/pool/pool.ts';
import { Placer } from '../../src/balance/placer.ts';

/**
 * `workers: 2`: a primary and two worker processes sharing the ports (SO_REUSEPORT). The kernel
 * spreads a client's connections and UDP source ports over both workers; they must all reach
 * the one Connector the client is pinned to, even when that pin is not what hashing says.
 */
describe('multi-core: workers sharing the ports agree on every client', () => {
  let a: FaultyConnector;
  let b: FaultyConnector;
  let cli: CliProcess | undefined;

  beforeAll(async () => {
    [a, b] = (await Promise.all([startFaultyConnector('mc-a', '127.0.1.241'), startFaultyConnector('mc-b', '127.0.1.242')])) as [FaultyConnector, FaultyConnector];
  });
  afterEach(async () => {
    await cli?.cleanup();
    cli = undefined;
    if (!a.running) await a.start(); // a failed re-pin test may leave mc-a stopped
  });
  afterAll(async () => {
    await Promise.all([a.stop(), b.stop()]);
  });

  const config = (extra: Record<string, unknown> = {}) =>
    rawTestConfig([a.config(), b.config()], {
      workers: 2,
      // Failed connects must not mark mc-a down here: the test is about pins, not health.
      health: { checks: [], passive: { enabled: false } },
      listeners: { broker: { bind: '127.0.0.1:0' }, pcoipTcp: { bind: '127.0.0.1:0' }, pcoipUdp: { bind: '127.0.0.1:0', idleTimeout: '500ms' } },
      ...extra,
    });

  /** A client address that Maglev over {mc-a, mc-b} places on `id` (the same computation the workers make). */
  function clientHashedTo(id: string, base: string): string {
    const pool = new Pool([a.config(), b.config()]);
    const placer = new Placer(pool, 60_000, { algorithm: 'maglev', tableSize: 65_537, ipv4Prefix: 32, ipv6Prefix: 64, onDown: 'repin' });
    for (let i = 1; i < 255; i++) if (placer.pickNew(placer.keyFor(`${base}${i}`)) === id) return `${base}${i}`;
    throw new Error(`no address hashes to ${id}`);
  }
  const workersOf = (lines: LogLine[], match: (l: LogLine) => boolean) => new Set(lines.filter((l) => l.msg === 'flow closed' && match(l)).map((l) => l.worker));

  it('a re-pin made in one worker is followed by the other for TCP and UDP', async () => {
    cli = await startCli(config());
    const started = cli.lines.find(hasMsg('pcoip-lb started'))!;
    expect(started.workers).toBe(2);
    const client = clientHashedTo('mc-a', '127.0.6.');
    // mc-a refuses: the worker that takes the client's first connection re-places it on mc-b.
    await a.stop();
    const first = await tcpGreeting(cli.ports.broker!, client);
    expect(first.id).toBe('mc-b');
    first.socket.destroy();
    // mc-a is back. Hashing alone now says mc-a; the pin says mc-b, and every worker must follow it.
    await a.start();
    const ids: string[] = [];
    for (let i = 0; i < 24; i++) {
      const g = await tcpGreeting(i % 2 ? cli.ports.pcoipTcp! : cli.ports.broker!, client);
      ids.push(g.id);
      g.socket.destroy();
    }
    expect(new Set(ids)).toEqual(new Set(['mc-b']));
    const udpReplies: string[] = [];
    for (let i = 0; i < 12; i++) {
      const u = await openUdpClient(cli.ports.pcoipUdp!, client);
      udpReplies.push((await u.roundTrip(`m${i}`)).toString().split('|')[0]!);
      u.close();
    }
    expect(new Set(udpReplies)).toEqual(new Set(['mc-b']));
    // Both workers served this client (the kernel spread the connections and source ports).
    await cli.waitForLine((l) => l.msg === 'flow closed' && l.listener === 'pcoipUdp' && l.client !== undefined, 5000);
    await waitUntil(() => workersOf(cli!.lines, (l) => String(l.client).startsWith(client)).size === 2, 5000, 'flows closed on both workers');
    expect(workersOf(cli.lines, (l) => l.listener !== 'pcoipUdp' && l.client === client)).toEqual(new Set([0, 1]));
    expect(cli.lines.filter((l) => l.msg === 'flow closed' && String(l.client).startsWith(client)).every((l) => l.connector === 'mc-b')).toBe(true);
  });

  it('/status and /metrics count the flows of both workers; health runs in the primary only', async () => {
    cli = await startCli(config());
    const open = [];
    for (let i = 0; i < 16; i++) open.push(await tcpGreeting(cli.ports.pcoipTcp!, `127.0.7.${i + 1}`));
    // Workers report every second; wait until the primary's sum is complete.
    const status = async () => (await (await fetch(`${cli!.adminUrl}/status`)).json()) as { connectors: Array<{ id: string; flows: Record<string, { active: number }> }> };
    let total = 0;
    for (let attempt = 0; attempt < 50 && total !== 16; attempt++) {
      const s = await status();
      total = s.connectors.reduce((n, c) => n + c.flows.pcoipTcp!.active, 0);
      if (total !== 16) await new Promise((r) => setTimeout(r, 100));
    }
    expect(total).toBe(16);
    const metrics = await (await fetch(`${cli.adminUrl}/metrics`)).text();
    const active = [...metrics.matchAll(/^pcoip_lb_flows_active\{[^}]*listener="pcoipTcp"[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
    expect(active).toBe(16);
    // Flows were spread over both workers.
    for (const g of open) g.socket.destroy();
    await waitUntil(() => workersOf(cli!.lines, (l) => l.listener === 'pcoipTcp').size === 2, 5000, 'closed on both workers');
    // The health monitor lives in the primary: worker log lines never carry health flips.
    expect(cli.lines.filter((l) => l.worker !== undefined && /is (up|down)/.test(String(l.msg)))).toEqual([]);
  });

  it('SIGHUP reaches every worker; SIGTERM stops them all and exits 0', async () => {
    cli = await startCli(config());
    writeConfig(cli.configPath, config({ connectors: [{ ...a.config(), state: 'drain' }, b.config()] }));
    cli.child.kill('SIGHUP');
    await waitUntil(() => cli!.lines.filter(hasMsg('config reloaded')).length === 3, 5000, 'primary and both workers reloaded');
    // mc-a drains: new clients all go to mc-b, whichever worker takes them.
    const ids = new Set<string>();
    for (let i = 0; i < 16; i++) {
      const g = await tcpGreeting(cli.ports.broker!, `127.0.8.${i + 1}`);
      ids.add(g.id);
      g.socket.destroy();
    }
    expect(ids).toEqual(new Set(['mc-b']));
    cli.child.kill('SIGTERM');
    expect(await cli.exited).toBe(0);
    expect(cli.lines.some(hasMsg('stopped'))).toBe(true);
  });
});
