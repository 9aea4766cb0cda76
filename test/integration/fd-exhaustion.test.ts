import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCheckedConnector, type CheckedConnector } from '../helpers/checked-connector.ts';
import { startCli, rawTestConfig, hasMsg, type CliProcess, type LogLine } from '../helpers/cli-process.ts';
import { echo, openUdpClient, type UdpClient } from '../helpers/flow-clients.ts';
import { tcpGreeting } from '../helpers/clients.ts';
import { parsePrometheusText } from '../helpers/prom-text.ts';

/**
 * pcoip-lb's own descriptor limit (issue 13), for real: the CLI runs under
 * `prlimit --nofile=N:N` (util-linux), the test fills its descriptors with idle connections,
 * and the proxy must blame itself — not the Connectors. Health checks on (the default checks,
 * broker + pcoip), closeFlowsOnDown on: a Connector wrongly marked down would cut the live
 * session. Connectors on 127.0.13.11-12, clients from 127.0.13.50-200.
 */
const FD_LIMIT = 160;
const prlimit = (soft: number, hard = soft) => ['prlimit', `--nofile=${soft}:${hard}`];

/**
 * Lowers a running process's soft fd limit so that exactly one descriptor number stays free:
 * the next accepted client takes it and the proxy's connect to the Connector fails with EMFILE.
 */
function leaveOneFreeFd(pid: number): void {
  const open = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
  const free: number[] = [];
  for (let fd = 0; free.length < 2; fd++) if (!open.has(fd)) free.push(fd);
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${free[1]}:`]);
}

/** Opens a TCP connection and resolves once it is connected (or closed at once by the proxy); never rejects. */
function openIdle(port: number, localAddress: string): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress });
    socket.on('error', () => undefined);
    const timer = setTimeout(() => resolve(socket), 300);
    socket.once('data', () => (clearTimeout(timer), resolve(socket)));
    socket.once('close', () => (clearTimeout(timer), resolve(undefined)));
  });
}

describe('the proxy out of file descriptors', () => {
  let connectors: CheckedConnector[];
  let cli: CliProcess | undefined;
  const idle: Socket[] = [];
  let media: UdpClient | undefined;

  beforeAll(async () => {
    connectors = await Promise.all([startCheckedConnector('fd-a', '127.0.13.11'), startCheckedConnector('fd-b', '127.0.13.12')]);
  });
  afterEach(async () => {
    for (const s of idle.splice(0)) s.destroy();
    media?.close();
    media = undefined;
    await cli?.cleanup();
    cli = undefined;
  });
  afterAll(async () => {
    await Promise.all((connectors ?? []).map((c) => c.close()));
  });

  const config = (extra: Record<string, unknown> = {}) =>
    rawTestConfig(
      connectors.map((c) => c.config()),
      {
        // The default checks (broker /health over HTTPS + pcoip TCP connect), quick rounds.
        health: { interval: '300ms', timeout: '300ms', rise: 2, fall: 2, jitter: '0%', closeFlowsOnDown: true },
        listeners: {
          broker: { bind: '127.0.0.1:0' },
          // Idle connections must stay: no first-byte timeout.
          pcoipTcp: { bind: '127.0.0.1:0', firstByteTimeout: '0s' },
          pcoipUdp: { bind: '127.0.0.1:0' },
        },
        ...extra,
      },
    );
  const downLines = (lines: LogLine[]) => lines.filter((l) => typeof l.msg === 'string' && / is down/.test(l.msg));

  it('at its fd limit no Connector is marked down, live flows survive (closeFlowsOnDown on), and one clear PLB_E_FD_EXHAUSTED line says why', async () => {
    cli = await startCli(config(), [], 10_000, { wrap: prlimit(FD_LIMIT) });
    const started = cli.lines.find((l) => l.fdLimit !== undefined)!;
    expect(started).toMatchObject({ fdLimit: { soft: String(FD_LIMIT), hard: String(FD_LIMIT) }, code: 'PLB_W_FD_LIMIT', level: 40 });
    // Health rounds pass first (both Connectors answer).
    await new Promise((r) => setTimeout(r, 600));
    // A live session: 4172/TCP control channel and 4172/UDP media.
    const control = await tcpGreeting(cli.ports.pcoipTcp!, '127.0.13.50');
    idle.push(control.socket);
    media = await openUdpClient(cli.ports.pcoipUdp!, '127.0.13.50');
    expect((await media.roundTrip('m0')).toString()).toBe(`${control.id}|m0`);

    // Fill the proxy's descriptors: every idle connection costs it two (client + Connector).
    for (let i = 0; i < FD_LIMIT; i++) {
      const s = await openIdle(cli.ports.pcoipTcp!, '127.0.13.200');
      if (s) idle.push(s);
    }
    // New clients while exhausted: their Connector connects fail with EMFILE, which must not count as passive failures either.
    for (let i = 0; i < 6; i++) {
      const s = await openIdle(cli.ports.pcoipTcp!, `127.0.13.${60 + i}`);
      if (s) idle.push(s);
    }
    // Many rounds of both Connectors (fall is 2 at 200 ms) while exhausted.
    await new Promise((r) => setTimeout(r, 2000));
    expect(downLines(cli.lines)).toEqual([]);
    const exhausted = await cli.waitForLine((l) => l.code === 'PLB_E_FD_EXHAUSTED' && l.source === 'health-check', 5000);
    expect(exhausted).toMatchObject({ level: 50, errno: 'EMFILE' });
    expect(String(exhausted.msg)).toMatch(/^pcoip-lb is out of file descriptors \(EMFILE\): health check rounds are skipped/);
    // One line per 10 s from the health checks, not one per check.
    expect(cli.lines.filter((l) => l.code === 'PLB_E_FD_EXHAUSTED' && l.source === 'health-check').length).toBeLessThanOrEqual(2);
    // The live session still passes bytes both ways.
    await echo(control.socket, 'still-alive');
    expect((await media.roundTrip('m1')).toString()).toBe(`${control.id}|m1`);

    // Descriptors free again: health rounds count again, both Connectors are still up, the exhaustion is in the metrics.
    for (const s of idle.splice(1)) s.destroy();
    await new Promise((r) => setTimeout(r, 500));
    const status = (await (await fetch(`${cli.adminUrl}/status`)).json()) as { connectors: Array<{ id: string; health: string }> };
    expect(status.connectors.map((c) => [c.id, c.health])).toEqual([
      ['fd-a', 'up'],
      ['fd-b', 'up'],
    ]);
    const m = parsePrometheusText(await (await fetch(`${cli.adminUrl}/metrics`)).text());
    expect(m.value('pcoip_lb_fd_exhausted_total', { source: 'health-check' })).toBeGreaterThan(0);
    expect(m.value('pcoip_lb_connector_health_transitions_total', { connector: 'fd-a', to: 'down' })).toBe(0);
    expect(m.value('pcoip_lb_connect_failures_total', { connector: 'fd-a' }) ?? 0).toBe(0);
    await echo(control.socket, 'after');
    expect(downLines(cli.lines)).toEqual([]);
  });

  it.each([1, 2])('a client connect that fails with EMFILE is refused as fd-exhausted, never counted against the Connector (passive health; workers: %i)', async (workers) => {
    // Passive detection on (3 failed connects in 10 s mark a Connector down); no active rounds to compete for the free descriptor.
    cli = await startCli(config({ workers, health: { checks: [], passive: { enabled: true, failures: 3, window: '10s' }, closeFlowsOnDown: true } }), [], 15_000, {
      wrap: prlimit(FD_LIMIT),
    });
    // The processes that hold the data path: the single process, or each worker.
    const dataPids = workers === 1 ? [cli.child.pid!] : (cli.lines.find(hasMsg('pcoip-lb started'))!.pids as number[]);
    const control = await tcpGreeting(cli.ports.pcoipTcp!, '127.0.13.52');
    idle.push(control.socket);
    for (const pid of dataPids) leaveOneFreeFd(pid);
    const attempts: Array<Socket | undefined> = [];
    for (let i = 0; i < 5; i++) attempts.push(await openIdle(cli.ports.pcoipTcp!, '127.0.13.70'));
    for (const pid of dataPids) execFileSync('prlimit', ['--pid', String(pid), `--nofile=${FD_LIMIT}:`]);
    for (const s of attempts) if (s) idle.push(s);
    expect(downLines(cli.lines)).toEqual([]);
    expect(cli.lines.filter((l) => l.msg === 'connect to Connector failed')).toEqual([]);
    // The proxy closed each client it could not connect onwards, and said why.
    expect(attempts.filter((s) => s !== undefined)).toHaveLength(0);
    const refused = await cli.waitForLine((l) => l.code === 'PLB_E_FD_EXHAUSTED' && l.reason === 'fd-exhausted', 2000);
    expect(refused).toMatchObject({ level: 40, listener: 'pcoipTcp', errno: 'EMFILE', client: '127.0.13.70' });
    await echo(control.socket, 'still-alive');
    // Workers report their counters to the primary every second.
    const metrics = async () => parsePrometheusText(await (await fetch(`${cli!.adminUrl}/metrics`)).text());
    let m = await metrics();
    for (let i = 0; i < 30 && (m.value('pcoip_lb_fd_exhausted_total', { source: 'pcoipTcp' }) ?? 0) === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      m = await metrics();
    }
    const refusals = m.value('pcoip_lb_refusals_total', { listener: 'pcoipTcp', reason: 'fd-exhausted' });
    // Single process: all five. Workers: each attempt either took a worker's free descriptor and was refused so, or found none at accept (closed by libuv, not counted).
    if (workers === 1) expect(refusals).toBe(5);
    else expect(refusals).toBeGreaterThanOrEqual(1);
    expect(m.value('pcoip_lb_fd_exhausted_total', { source: 'pcoipTcp' })).toBe(refusals);
    expect(m.value('pcoip_lb_connector_up', { connector: control.id })).toBe(1);
    expect(m.value('pcoip_lb_connect_failures_total', { connector: control.id })).toBe(0);
  });

  it('idle admin connections cannot eat the descriptors: capped, and closed after a short silence', async () => {
    cli = await startCli(config(), [], 10_000, { wrap: prlimit(FD_LIMIT) });
    const adminPort = Number(new URL(cli.adminUrl!).port);
    // More idle connections than the limit allows descriptors; none sends a byte.
    const opened: Socket[] = [];
    const closedAt: number[] = [];
    const started = Date.now();
    for (let i = 0; i < FD_LIMIT + 40; i++) {
      const s = connect({ host: '127.0.0.1', port: adminPort, localAddress: '127.0.13.150' });
      s.on('error', () => undefined);
      s.on('close', () => closedAt.push(Date.now() - started));
      opened.push(s);
      idle.push(s);
    }
    await new Promise((r) => setTimeout(r, 500));
    // The data path still has descriptors: a new session works.
    const session = await tcpGreeting(cli.ports.pcoipTcp!, '127.0.13.51');
    idle.push(session.socket);
    await echo(session.socket, 'data-path-fine');
    expect(cli.lines.filter((l) => l.code === 'PLB_E_FD_EXHAUSTED')).toEqual([]);
    expect(await cli.waitForLine((l) => l.listener === 'admin' && l.code === 'PLB_E_CONNECTION_LIMIT', 2000)).toMatchObject({ level: 40, maxConnections: 64 });
    // Every idle one is closed by the server: past the cap at once, the others after the idle timeout (5 s).
    const deadline = Date.now() + 8000;
    while (closedAt.length < opened.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(closedAt.length).toBe(opened.length);
    expect(Math.max(...closedAt)).toBeLessThan(7500);
    expect((await fetch(`${cli.adminUrl}/livez`)).status).toBe(200);
    expect(downLines(cli.lines)).toEqual([]);
  });

  it('says at start which descriptor limit it runs with: Node.js raises the soft limit to the hard one, for the workers too', async () => {
    cli = await startCli(config({ workers: 2 }), [], 15_000, { wrap: prlimit(256, 4096) });
    const line = cli.lines.find((l) => l.fdLimit !== undefined)!;
    expect(line.fdLimit).toEqual({ soft: '4096', hard: '4096' });
    expect(String(line.msg)).toMatch(/^file descriptor limit 4096 \(the soft limit is the hard limit: Node\.js raises it at start\)/);
    const started = cli.lines.find(hasMsg('pcoip-lb started'))!;
    const pids = [cli.child.pid!, ...(started.pids as number[])];
    expect(pids).toHaveLength(3);
    for (const pid of pids) expect(readFileSync(`/proc/${pid}/limits`, 'utf8')).toMatch(/^Max open files\s+4096\s+4096/m);
  });
});
