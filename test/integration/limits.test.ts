import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { tcpGreeting } from '../helpers/clients.ts';
import { echo, closed, waitUntil, type UdpClient, TestFlows } from '../helpers/flow-clients.ts';

describe('connection and flow limits', () => {
  let connector: FakeConnector;
  let proxy: TestProxy | undefined;
  const flows = new TestFlows();

  beforeAll(async () => {
    connector = await startFakeConnector('lim', '127.0.1.60');
  });
  afterEach(async () => {
    flows.closeAll();
    await proxy?.stop();
    proxy = undefined;
  });
  afterAll(async () => {
    await connector.close();
  });

  /** testConfig with one listener's settings changed (the others stay on 127.0.0.1:0). */
  const withListener = (name: 'broker' | 'pcoipTcp' | 'pcoipUdp', settings: Record<string, unknown>) => {
    const listeners: Record<string, unknown> = { broker: { bind: '127.0.0.1:0' }, pcoipTcp: { bind: '127.0.0.1:0' }, pcoipUdp: { bind: '127.0.0.1:0' } };
    listeners[name] = { bind: '127.0.0.1:0', ...settings };
    return testConfig([connector.config()], { listeners });
  };

  const greet = (port: number, from: string) => flows.greet(port, from);

  it('listeners.broker.maxConnections: the connection past the cap is closed unserved, counted and logged', async () => {
    proxy = await startTestProxy(withListener('broker', { maxConnections: 2 }));
    const port = proxy.addresses.broker.port;
    const first = await greet(port, '127.0.2.61');
    await greet(port, '127.0.2.62');
    await expect(tcpGreeting(port, '127.0.2.63')).rejects.toThrow(/closed before a greeting/);
    expect(proxy.app.stats.refusals.get('broker:max-connections')).toBe(1);
    const warn = await proxy.logs.waitFor((l) => l.code === 'PLB_E_CONNECTION_LIMIT');
    expect(warn).toMatchObject({ level: 40, listener: 'broker', reason: 'max-connections', maxConnections: 2, client: '127.0.2.63' });
    // A freed slot takes the next client.
    first.socket.destroy();
    await proxy.logs.waitFor((l) => l.msg === 'flow closed' && l.client === '127.0.2.61');
    expect((await greet(port, '127.0.2.63')).id).toBe('lim');
    // The other TCP listener has its own cap.
    expect((await greet(proxy.addresses.pcoipTcp.port, '127.0.2.64')).id).toBe('lim');
  });

  it('maxConnectionsPerClient: one client address is capped, others are not, and the count drains to zero', async () => {
    proxy = await startTestProxy(withListener('pcoipTcp', { maxConnectionsPerClient: 2 }));
    const port = proxy.addresses.pcoipTcp.port;
    const held = [await greet(port, '127.0.2.65'), await greet(port, '127.0.2.65')];
    await expect(tcpGreeting(port, '127.0.2.65')).rejects.toThrow(/closed before a greeting/);
    expect((await greet(port, '127.0.2.66')).id).toBe('lim');
    expect(proxy.app.stats.refusals.get('pcoipTcp:max-connections-per-client')).toBe(1);
    expect(await proxy.logs.waitFor((l) => l.reason === 'max-connections-per-client')).toMatchObject({
      level: 40,
      code: 'PLB_E_CONNECTION_LIMIT',
      client: '127.0.2.65',
      maxConnectionsPerClient: 2,
    });
    // The 443 listener counts separately: the same client still gets in there.
    expect((await greet(proxy.addresses.broker.port, '127.0.2.65')).id).toBe('lim');
    flows.closeAll();
    await Promise.all(held.map((h) => closed(h.socket)));
    // The per-client count is released on each socket's 'close', a moment after the flow ends.
    await waitUntil(() => proxy!.app.trackedClients().pcoipTcp === 0 && proxy!.app.trackedClients().broker === 0);
    expect(proxy.app.activeFlows()).toEqual({ broker: 0, pcoipTcp: 0, pcoipUdp: 0 });
  });

  it('firstByteTimeout: a client that says nothing is closed; one that speaks stays', async () => {
    proxy = await startTestProxy(withListener('broker', { firstByteTimeout: '300ms' }));
    const port = proxy.addresses.broker.port;
    const talker = await greet(port, '127.0.2.67');
    await echo(talker.socket, 'ClientHello');
    const silent = await greet(port, '127.0.2.68');
    await closed(silent.socket);
    const line = await proxy.logs.waitFor((l) => l.msg === 'flow closed' && l.client === '127.0.2.68');
    expect(line).toMatchObject({ reason: 'first-byte-timeout', bytesIn: 0 });
    expect(proxy.app.stats.refusals.get('broker:first-byte-timeout')).toBe(1);
    expect(await proxy.logs.waitFor((l) => l.code === 'PLB_E_SLOW_CLIENT')).toMatchObject({ level: 40, client: '127.0.2.68', firstByteTimeoutMs: 300 });
    // The talker's timer fired before the silent one's: it is still open and working.
    await echo(talker.socket, 'still-open');
    expect(proxy.app.activeFlows().broker).toBe(1);
  });

  it('listeners.pcoipUdp.maxFlowsPerClient: a flood of source ports from one address stops at the cap', async () => {
    proxy = await startTestProxy(withListener('pcoipUdp', { maxFlowsPerClient: 3, idleTimeout: '1s' }));
    const port = proxy.addresses.pcoipUdp.port;
    const clients: UdpClient[] = [];
    for (let i = 0; i < 5; i++) clients.push(await flows.udpClient(port, '127.0.2.69'));
    for (const [i, u] of clients.slice(0, 3).entries()) expect((await u.roundTrip(`p${i}`)).toString()).toBe(`lim|p${i}`);
    clients[3]!.send('p3');
    clients[4]!.send('p4');
    // The listener handles datagrams in arrival order: once this reply is back, p3 and p4 were handled.
    expect((await clients[0]!.roundTrip('again')).toString()).toBe('lim|again');
    expect(proxy.app.activeFlows().pcoipUdp).toBe(3);
    expect(proxy.app.stats.refusals.get('pcoipUdp:max-flows-per-client')).toBe(2);
    expect(await proxy.logs.waitFor((l) => l.reason === 'max-flows-per-client')).toMatchObject({ level: 40, code: 'PLB_E_FLOW_LIMIT', maxFlowsPerClient: 3 });
    // Another client address is not affected.
    const other = await flows.udpClient(port, '127.0.2.70');
    expect((await other.roundTrip('hi')).toString()).toBe('lim|hi');
    // Once the flows idle out the client may open new ones.
    await waitUntil(() => proxy!.app.activeFlows().pcoipUdp === 0);
    expect(proxy.app.trackedClients().pcoipUdp).toBe(0);
    expect((await clients[4]!.roundTrip('later')).toString()).toBe('lim|later');
  });
});
