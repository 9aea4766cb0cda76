import { afterEach, describe, expect, it } from 'vitest';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { tcpGreeting } from '../helpers/clients.ts';
import { startTcpGate, type TcpGate } from '../helpers/https-connector.ts';
import { clientPlacedOn } from '../helpers/checked-connector.ts';

/**
 * conn-a's broker port refuses connections (its pcoip port works); conn-b is healthy.
 * Active checks are off, so only failed client connects can mark conn-a down.
 */
describe('passive detection: failed client connects mark a Connector down', () => {
  let fakes: FakeConnector[] = [];
  let gate: TcpGate | undefined;
  let proxy: TestProxy | undefined;

  afterEach(async () => {
    await proxy?.stop();
    await Promise.all(fakes.map((f) => f.close()));
    await gate?.close();
  });

  async function start(health: Record<string, unknown>) {
    fakes = await Promise.all([startFakeConnector('conn-a', '127.0.1.41'), startFakeConnector('conn-b', '127.0.1.42')]);
    gate = await startTcpGate('127.0.1.41');
    await gate.stopAccepting(); // a port nothing listens on: connects are refused
    const a = { ...fakes[0]!.config(), ports: { broker: gate.port, pcoip: fakes[0]!.pcoipPort } };
    proxy = await startTestProxy(testConfig([a, fakes[1]!.config()], { health: { checks: [], passive: { failures: 2, window: '10s' }, ...health } }));
    return proxy;
  }

  it('new clients are retried elsewhere; after `failures` failed connects the Connector is down and no longer tried', async () => {
    const p = await start({ interval: '1h' });
    const port = p.addresses.broker.port;
    // Clients that consistent hashing puts on conn-a: their first connect fails, and they land on conn-b.
    const first = clientPlacedOn(p.app, 'conn-a', 1);
    const second = clientPlacedOn(p.app, 'conn-a', Number(first.split('.')[3]) + 1);
    expect((await tcpGreeting(port, first)).id).toBe('conn-b');
    expect(p.app.pool.get('conn-a')!.health).toBe('up');
    expect((await tcpGreeting(port, second)).id).toBe('conn-b');
    const line = await p.logs.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('Connector conn-a is down'));
    expect(line).toMatchObject({ source: 'passive', reason: '2 failed connect(s) from clients within 10s' });
    expect(p.app.stats.connectFailures.get('conn-a')).toBe(2);
    // Down now: new clients go straight to conn-b, nobody tries conn-a any more.
    for (let i = 200; i < 210; i++) expect((await tcpGreeting(port, `127.0.2.${i}`)).id).toBe('conn-b');
    expect(p.app.stats.connectFailures.get('conn-a')).toBe(2);
  });

  it('a client with established flows on a Connector is not silently moved when its next connect fails', async () => {
    const p = await start({ interval: '1h', passive: { failures: 100, window: '10s' } });
    const client = clientPlacedOn(p.app, 'conn-a');
    // Its 4172/TCP flow reaches conn-a (that port works) and pins it there.
    const session = await tcpGreeting(p.addresses.pcoipTcp.port, client);
    expect(session.id).toBe('conn-a');
    // Its next 443 connection fails at conn-a: the proxy closes it instead of handing it to conn-b.
    await expect(tcpGreeting(p.addresses.broker.port, client)).rejects.toThrow(/closed before a greeting/);
    const line = await p.logs.waitFor((l) => l.msg === 'connect to Connector failed');
    expect(line).toMatchObject({ connector: 'conn-a', client });
    expect(p.app.affinity.get(p.app.placer.keyFor(client), Date.now())!.connectorId).toBe('conn-a');
    session.socket.destroy();
  });

  it('with no active checks, a passively downed Connector is tried again after rise × interval', async () => {
    const p = await start({ interval: '200ms', rise: 2, jitter: '0%' });
    const first = clientPlacedOn(p.app, 'conn-a', 1);
    const second = clientPlacedOn(p.app, 'conn-a', Number(first.split('.')[3]) + 1);
    await tcpGreeting(p.addresses.broker.port, first);
    await tcpGreeting(p.addresses.broker.port, second);
    await p.logs.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('Connector conn-a is down'));
    const up = await p.logs.waitFor((l) => l.msg === 'Connector conn-a is up again');
    expect(up.source).toBe('active');
  });
});
