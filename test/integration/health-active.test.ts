import { afterEach, describe, expect, it } from 'vitest';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { tcpGreeting } from '../helpers/clients.ts';
import { startCheckedConnector, nextRounds, clientPlacedOn, type CheckedConnector } from '../helpers/checked-connector.ts';
import { startTcpGate, testCertificate, type TcpGate } from '../helpers/https-connector.ts';
import { once } from 'node:events';

/** Short intervals so a test sees several rounds within a second or two; waits are on rounds and log lines. */
const INTERVAL = 300;
const RISE = 2;
const FALL = 3;
/** Room for a loaded 2-core CI machine on top of the protocol's own bound. */
const SLACK = 1500;

describe('active health checks', () => {
  let connectors: CheckedConnector[] = [];
  let gates: TcpGate[] = [];
  let proxy: TestProxy | undefined;

  afterEach(async () => {
    await proxy?.stop();
    await Promise.all([...connectors.map((c) => c.close()), ...gates.map((g) => g.close())]);
    proxy = undefined;
    connectors = [];
    gates = [];
  });

  async function start(hosts: string[], health: Record<string, unknown> = {}, configs?: (c: CheckedConnector[]) => ReturnType<CheckedConnector['config']>[]) {
    connectors = await Promise.all(hosts.map((host, i) => startCheckedConnector(`conn-${'abc'[i]}`, host)));
    const list = configs ? configs(connectors) : connectors.map((c) => c.config());
    proxy = await startTestProxy(testConfig(list, { health: { interval: `${INTERVAL}ms`, timeout: `${INTERVAL}ms`, rise: RISE, fall: FALL, jitter: '0%', ...health } }));
    return proxy;
  }

  it('a Connector whose /health turns 500 gets no new clients within fall × interval, and gets them again after rise × interval', async () => {
    const p = await start(['127.0.1.11', '127.0.1.12']);
    const [a] = connectors as [CheckedConnector, CheckedConnector];
    // Both fully up first (a passing round clears the provisional state).
    await Promise.all([nextRounds(p.app, 'conn-a', 2), nextRounds(p.app, 'conn-b', 2)]);
    // A session on conn-a that must survive the flip (closeFlowsOnDown is off by default).
    const session = await tcpGreeting(p.addresses.pcoipTcp.port, clientPlacedOn(p.app, 'conn-a'));
    expect(session.id).toBe('conn-a');

    let failuresAtFlip = -1;
    p.app.pool.onChange((ch) => {
      if (ch.kind === 'health' && ch.id === 'conn-a' && ch.to === 'down') failuresAtFlip = p.app.health.snapshot('conn-a')!.failures;
    });
    const t0 = Date.now();
    a.broker.setHealth({ kind: 'error', reason: 'Cannot communicate with broker' });
    const down = await p.logs.waitFor((l) => l.msg === 'Connector conn-a is down: broker /health: HTTP 500: Cannot communicate with broker');
    const downAfter = Date.now() - t0;
    expect(failuresAtFlip).toBe(FALL);
    expect(downAfter).toBeLessThan(FALL * INTERVAL + SLACK);
    expect(down).toMatchObject({ connector: 'conn-a', health: 'down', source: 'active', level: 40 });

    // No new client goes to conn-a now.
    for (let i = 100; i < 112; i++) expect((await tcpGreeting(p.addresses.pcoipTcp.port, `127.0.2.${i}`)).id).toBe('conn-b');
    // More failing rounds: still one log line for the flip.
    await nextRounds(p.app, 'conn-a', 3);
    expect(p.logs.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Connector conn-a is down')).length).toBe(1);
    // The established session was left alone.
    session.socket.write('still here');
    const [echo] = (await once(session.socket, 'data')) as [Buffer];
    expect(echo.toString()).toBe('still here');

    let passesAtFlip = -1;
    p.app.pool.onChange((ch) => {
      if (ch.kind === 'health' && ch.id === 'conn-a' && ch.to === 'up') passesAtFlip = p.app.health.snapshot('conn-a')!.passes;
    });
    const t1 = Date.now();
    a.broker.setHealth({ kind: 'ok' });
    await p.logs.waitFor((l) => l.msg === 'Connector conn-a is up again');
    expect(passesAtFlip).toBe(RISE);
    expect(Date.now() - t1).toBeLessThan(RISE * INTERVAL + SLACK);
    const landed = [];
    for (let i = 120; i < 136; i++) landed.push((await tcpGreeting(p.addresses.pcoipTcp.port, `127.0.2.${i}`)).id);
    expect(landed).toContain('conn-a');
    session.socket.destroy();
  });

  it('a Connector whose 4172 stops accepting is marked down, and up when it accepts again', async () => {
    gates = [await startTcpGate('127.0.1.13')];
    const gate = gates[0]!;
    const p = await start(['127.0.1.13', '127.0.1.14'], {}, (cs) => [cs[0]!.config({ ports: { broker: cs[0]!.broker.port, pcoip: gate.port } }), cs[1]!.config()]);
    await nextRounds(p.app, 'conn-a', 1);
    expect(p.app.pool.get('conn-a')!.health).toBe('up');
    await gate.stopAccepting();
    const line = await p.logs.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('Connector conn-a is down'));
    expect(line.reason).toBe(`pcoip 127.0.1.13:${gate.port}/tcp: ECONNREFUSED`);
    const client = clientPlacedOn(p.app, 'conn-b');
    expect((await tcpGreeting(p.addresses.pcoipTcp.port, client)).id).toBe('conn-b');
    await gate.startAccepting();
    await p.logs.waitFor((l) => l.msg === 'Connector conn-a is up again');
  });

  it('a hung /health fails at the timeout', async () => {
    const p = await start(['127.0.1.15', '127.0.1.16'], { timeout: '300ms', fall: 1 });
    connectors[0]!.broker.setHealth({ kind: 'hang' });
    const line = await p.logs.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('Connector conn-a is down'));
    expect(line.reason).toBe('broker /health: no answer within 300 ms');
    const latency = p.app.health.snapshot('conn-a')!.lastRound!.checks.find((c) => c.check === 'broker')!.latencyMs;
    expect(latency).toBeGreaterThanOrEqual(295);
    expect(latency).toBeLessThan(300 + SLACK);
    // The data path was never blocked: conn-b serves new clients meanwhile.
    expect((await tcpGreeting(p.addresses.pcoipTcp.port, clientPlacedOn(p.app, 'conn-b'))).id).toBe('conn-b');
  });

  it('verifies certificates only when health.tls.ca is set, against that CA', async () => {
    const p = await start(['127.0.1.17', '127.0.1.18'], { tls: { ca: testCertificate().certFile }, fall: 1 });
    const rounds = await nextRounds(p.app, 'conn-a', 2);
    expect(rounds.map((r) => r.ok)).toEqual([true, true]);
    await p.stop();
    await Promise.all(connectors.map((c) => c.close()));

    const q = await start(['127.0.1.19', '127.0.1.20'], { tls: { ca: testCertificate('another-ca').certFile }, fall: 1 });
    const line = await q.logs.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('Connector conn-a is down'));
    expect(line.reason).toMatch(/^broker \/health: [A-Z_]*CERT[A-Z_]*$/);
  });

  it('onDown: keep refuses a pinned client’s new flows while its Connector is down, and sends it home when it is back', async () => {
    const p = await start(['127.0.1.23', '127.0.1.24'], { onDown: 'keep', fall: 1, rise: 1 });
    await nextRounds(p.app, 'conn-a', 1);
    const client = clientPlacedOn(p.app, 'conn-a');
    const first = await tcpGreeting(p.addresses.pcoipTcp.port, client);
    expect(first.id).toBe('conn-a');
    first.socket.destroy();
    connectors[0]!.broker.setHealth({ kind: 'error', reason: 'Cannot communicate with broker' });
    await p.logs.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('Connector conn-a is down'));
    await expect(tcpGreeting(p.addresses.pcoipTcp.port, client)).rejects.toThrow(/closed before a greeting/);
    expect(p.app.stats.refusals.get('pcoipTcp:pinned-connector-down')).toBe(1);
    // A new client is not affected.
    expect((await tcpGreeting(p.addresses.pcoipTcp.port, clientPlacedOn(p.app, 'conn-b'))).id).toBe('conn-b');
    connectors[0]!.broker.setHealth({ kind: 'ok' });
    await p.logs.waitFor((l) => l.msg === 'Connector conn-a is up again');
    expect((await tcpGreeting(p.addresses.pcoipTcp.port, client)).id).toBe('conn-a');
  });

  it('closeFlowsOnDown: true ends the established flows of a Connector that goes down', async () => {
    const p = await start(['127.0.1.21', '127.0.1.22'], { closeFlowsOnDown: true, fall: 1 });
    await nextRounds(p.app, 'conn-a', 1);
    const session = await tcpGreeting(p.addresses.pcoipTcp.port, clientPlacedOn(p.app, 'conn-a'));
    const closed = once(session.socket, 'close');
    connectors[0]!.broker.setHealth({ kind: 'error', reason: 'Security Gateway is enabled but does not respond' });
    await closed;
    const line = await p.logs.waitFor((l) => l.msg === 'flow closed' && l.connector === 'conn-a');
    expect(line.reason).toBe('connector-down');
  });
});
