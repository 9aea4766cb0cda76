import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { availableParallelism } from 'node:os';
import type { SimConnector } from '../../src/sim/connector.ts';
import { postBroker, sessionCookie, type UserPlan } from '../../src/sim/client.ts';
import { requests } from '../../src/sim/broker-xml.ts';
import { readLine } from '../../src/sim/line-reader.ts';
import { formatTagRequest, parseTagAnswer } from '../../src/sim/wire.ts';
import { startCli, type CliProcess, type LogLine } from '../helpers/cli-process.ts';
import { runCli } from '../helpers/cli.ts';
import { writeConfig } from '../helpers/cli-process.ts';
import { FixedPortMedia, simConfig, startLabCli, startSims, startTerminateSims, workersThatClosed } from '../helpers/cli-lab.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A terminating broker and SNI routing on several worker processes: what one worker learns from
 * the broker exchange (the session cookie, CLIENT-LOG-ID, the allocation and its SNI) must be
 * known to every other, since the kernel hands each of a client's connections to any of them.
 */
describe('multi-core with tls.mode: terminate and sniRouting', () => {
  let lab: Awaited<ReturnType<typeof startTerminateSims>>;
  let cli: (CliProcess & { started: LogLine }) | undefined;

  beforeAll(async () => {
    lab = await startTerminateSims(['mt-a', 'mt-b', 'mt-c'], '127.0.31.');
  });
  afterEach(async () => {
    await cli?.cleanup();
    cli = undefined;
  });
  afterAll(async () => {
    await lab.close();
  });

  const terminate = (extra: Record<string, unknown> = {}) => lab.config(extra);

  /**
   * One login whose every broker request comes from another source address (a client behind a
   * NAT pool), then 4172/TCP and UDP from yet another one. Returns the Connector of each step.
   */
  async function scatteredLogin(net: number, user: number): Promise<{ home: string; tcp: string; udpEchoed: boolean }> {
    const from = (k: number): UserPlan => ({ name: `user-${net}-${user}`, localAddress: `127.0.${net}.${user * 8 + k}`, requestTimeoutMs: 5000 });
    const broker = { host: '127.0.0.1', port: cli!.ports.broker! };
    const logId = `${'0'.repeat(8)}-0000-4000-8000-${String(net * 1000 + user).padStart(12, '0')}`;
    const hello = await postBroker(broker, from(1), requests.hello(`user-${user}`), logId, undefined);
    const cookie = sessionCookie(hello.rawHeaders);
    expect(cookie, 'JSESSIONID from hello').toBeDefined();
    const home = hello.connectorId;
    const steps = [requests.authenticate(`user-${user}`, 'secret', 'sim.invalid'), requests.getResourceList(), requests.allocateResource('1')];
    let allocation;
    for (const [i, xml] of steps.entries()) {
      const reply = await postBroker(broker, from(2 + i), xml, logId, cookie);
      expect(reply.connectorId, `broker request ${i + 2} of user ${user}`).toBe(home);
      expect(reply.status).toBe(200);
      allocation = reply.answer.target;
    }
    expect(allocation?.sni).toBeTruthy();
    // 4172/TCP with the allocation's SNI, from an address the broker never saw.
    const address = from(6).localAddress!;
    const tcp = netConnect({ host: '127.0.0.1', port: cli!.ports.pcoipTcp!, localAddress: address });
    const tls = tlsConnect({ socket: tcp, servername: allocation!.sni, rejectUnauthorized: false });
    tls.on('error', () => undefined);
    await once(tls, 'secureConnect');
    tls.write(formatTagRequest(allocation!.connectTag));
    const answer = parseTagAnswer(await readLine(tls, 512, 5000))!;
    let udpEchoed = false;
    if (answer.ok) {
      const media = await FixedPortMedia.open(address, 0, cli!.ports.pcoipUdp!);
      for (let seq = 1; seq <= 3 && !udpEchoed; seq++) udpEchoed = (await media.roundTrip(answer.spi, seq, 1000)) !== undefined;
      media.close();
    }
    tls.destroy();
    return { home, tcp: answer.connectorId, udpEchoed };
  }

  it('logins whose requests come from different addresses succeed, and their 4172 flows follow the learned session, on any worker', async () => {
    cli = await startLabCli(terminate({ workers: 2 }));
    expect(cli.started.workers).toBe(2);
    for (let user = 1; user <= 8; user++) {
      const { home, tcp, udpEchoed } = await scatteredLogin(32, user);
      expect(tcp, `4172/TCP of user ${user}`).toBe(home);
      expect(udpEchoed, `4172/UDP of user ${user} (session on ${home})`).toBe(true);
    }
    // The kernel spread the broker connections (and the 4172 ones) over both workers.
    expect(workersThatClosed(cli.lines, (l) => l.listener === 'broker')).toEqual(new Set([0, 1]));
  });

  it('workers: auto is one per core in terminate mode too', async () => {
    cli = await startLabCli(terminate());
    // Learned sessions are replicated, so nothing holds auto at 1 any more (it was, before).
    expect(cli.started.workers).toBe(availableParallelism());
    const { home, tcp, udpEchoed } = await scatteredLogin(33, 1);
    expect(tcp).toBe(home);
    expect(udpEchoed).toBe(true);
  });
});

describe('a second instance on the same addresses', () => {
  let sims: SimConnector[];
  beforeAll(async () => {
    sims = await startSims(['mi-a'], '127.0.34.');
  });
  afterAll(async () => {
    await Promise.all(sims.map((s) => s.stop()));
  });

  /** A port free on 127.0.0.1 for TCP and UDP right now. */
  async function freePort(): Promise<number> {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const { port } = server.address() as { port: number };
    await new Promise<void>((r) => server.close(() => r()));
    return port;
  }

  it('is refused with PLB_E_LISTEN instead of joining the first one\'s reuse-port group (workers: 2)', async () => {
    const [broker, pcoip] = [await freePort(), await freePort()];
    const listeners = { broker: { bind: `127.0.0.1:${broker}` }, pcoipTcp: { bind: `127.0.0.1:${pcoip}` }, pcoipUdp: { bind: `127.0.0.1:${pcoip}` } };
    const first = await startCli(simConfig(sims, { workers: 2, listeners }), [], 20_000);
    const dir = mkdtempSync(join(tmpdir(), 'plb-second-'));
    try {
      const path = join(dir, 'second.yaml');
      writeConfig(path, simConfig(sims, { workers: 2, listeners, admin: { bind: '127.0.0.1:0' } }));
      const second = await runCli(['start', '--config', path], 20_000);
      expect(second.code).toBe(1);
      expect(second.stderr + second.stdout).toMatch(new RegExp(`PLB_E_LISTEN.*listeners\\.broker.*127\\.0\\.0\\.1:${broker}.*EADDRINUSE`));
      // The first instance still owns the ports alone: its workers are the only listeners.
      expect(first.lines.some((l) => l.level === 50)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await first.cleanup();
    }
  });
});
