import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { tcpGreeting } from '../helpers/clients.ts';
import { echo, TestFlows } from '../helpers/flow-clients.ts';

/** App.reload in process: what changes, what must not (established flows, pinned clients). */
describe('reload', () => {
  let a: FakeConnector;
  let b: FakeConnector;
  let c: FakeConnector;
  let proxy: TestProxy | undefined;
  const flows = new TestFlows();

  beforeAll(async () => {
    [a, b, c] = (await Promise.all(['rl-a', 'rl-b', 'rl-c'].map((id, i) => startFakeConnector(id, `127.0.1.${80 + i}`)))) as [
      FakeConnector,
      FakeConnector,
      FakeConnector,
    ];
  });
  afterEach(async () => {
    flows.closeAll();
    await proxy?.stop();
    proxy = undefined;
  });
  afterAll(async () => {
    await Promise.all([a, b, c].map((x) => x.close()));
  });

  const greet = (port: number, from: string) => flows.greet(port, from);
  /** Which Connector a client reaches on 443 now (one short connection). */
  const brokerOf = async (from: string) => {
    const g = await tcpGreeting(proxy!.addresses.broker.port, from);
    g.socket.destroy();
    return g.id;
  };

  it('adds, re-weights and removes Connectors without dropping a flow or moving a pinned client', async () => {
    proxy = await startTestProxy(testConfig([a.config(), b.config()]));
    const { pcoipTcp, pcoipUdp } = proxy.addresses;
    const clients = Array.from({ length: 30 }, (_, i) => `127.0.2.${100 + i}`);
    const pinnedTo = new Map<string, string>();
    for (const client of clients) pinnedTo.set(client, await brokerOf(client));
    const onA = clients.find((x) => pinnedTo.get(x) === 'rl-a')!;
    const onB = clients.find((x) => pinnedTo.get(x) === 'rl-b')!;
    expect(onA && onB).toBeTruthy();
    // Live sessions: 4172/TCP and 4172/UDP of one client on each Connector.
    const sessions = await Promise.all(
      [onA, onB].map(async (client) => {
        const control = await greet(pcoipTcp.port, client);
        const media = await flows.udpClient(pcoipUdp.port, client);
        expect((await media.roundTrip('m0')).toString()).toBe(`${control.id}|m0`);
        return { client, control, media, id: control.id };
      }),
    );
    const liveFlows = proxy.app.activeFlows();

    // 1. A new heavy Connector and a new weight: every pinned client stays where it is.
    proxy.app.reload(testConfig([a.config(), b.config(5), c.config(20)]));
    // Placement alone would now send most of these clients elsewhere; their pins must hold them.
    const wouldMove = clients.filter((x) => proxy!.app.placer.pickNew(proxy!.app.placer.keyFor(x)) !== pinnedTo.get(x));
    expect(wouldMove.length).toBeGreaterThan(clients.length / 2);
    for (const client of clients) expect(await brokerOf(client), client).toBe(pinnedTo.get(client));
    for (const s of sessions) {
      await echo(s.control.socket, `after-add-${s.client}`);
      expect((await s.media.roundTrip('m1')).toString()).toBe(`${s.id}|m1`);
    }
    // New clients do reach the new Connector.
    const newcomers = await Promise.all(Array.from({ length: 12 }, (_, i) => brokerOf(`127.0.3.${i + 1}`)));
    expect(newcomers).toContain('rl-c');

    // 2. rl-a leaves the config: its clients lose their pin, its established flows run on.
    const pinnedToA = clients.filter((x) => pinnedTo.get(x) === 'rl-a').length + newcomers.filter((id) => id === 'rl-a').length;
    const { diff, pinsDropped } = proxy.app.reload(testConfig([b.config(5), c.config(20)]));
    expect(diff.connectors.removed).toEqual(['rl-a']);
    expect(pinsDropped).toBe(pinnedToA);
    for (const s of sessions) {
      await echo(s.control.socket, `after-remove-${s.client}`);
      expect((await s.media.roundTrip('m2')).toString()).toBe(`${s.id}|m2`);
    }
    for (const client of clients) {
      const now = await brokerOf(client);
      if (pinnedTo.get(client) === 'rl-a') expect(now).not.toBe('rl-a');
      else expect(now, client).toBe(pinnedTo.get(client));
    }
    // No flow was closed by either reload: every 'flow closed' so far is a 443 probe the client ended.
    expect(proxy.app.activeFlows()).toMatchObject({ pcoipTcp: liveFlows.pcoipTcp, pcoipUdp: liveFlows.pcoipUdp });
    const closedByProxy = proxy.logs.lines.filter((l) => l.msg === 'flow closed' && l.reason !== 'client-closed');
    expect(closedByProxy).toEqual([]);
    expect(proxy.logs.lines.filter((l) => l.msg === 'config reloaded')).toHaveLength(2);
  });

  it('keeps a runtime drain through an unrelated reload and applies a state the config changes', async () => {
    proxy = await startTestProxy(testConfig([a.config(), b.config()]));
    proxy.app.pool.setState('rl-a', 'drain');
    proxy.app.reload(testConfig([a.config(), b.config(3)]));
    expect(proxy.app.pool.get('rl-a')?.state).toBe('drain');
    expect(proxy.app.pool.get('rl-b')?.weight).toBe(3);
    proxy.app.reload(testConfig([{ ...a.config(), state: 'maint' }, b.config(3)]));
    expect(proxy.app.pool.get('rl-a')?.state).toBe('maint');
  });

  it('applies listener limits and timeouts, keeps the bound address, and says a bind change needs a restart', async () => {
    proxy = await startTestProxy(testConfig([a.config()]));
    const { broker, pcoipTcp } = proxy.addresses;
    await greet(pcoipTcp.port, '127.0.2.150');
    proxy.app.reload(
      testConfig([a.config()], {
        listeners: {
          broker: { bind: '127.0.0.1:1' },
          pcoipTcp: { bind: '127.0.0.1:0', maxConnectionsPerClient: 1 },
          pcoipUdp: { bind: '127.0.0.1:0', idleTimeout: '7m' },
        },
        affinity: { ttl: '5m', ipv4Prefix: 24 },
      }),
    );
    const warns = proxy.logs.lines.filter((l) => l.level === 40 && String(l.msg).includes('needs a restart')).map((l) => l.key);
    expect(warns).toEqual(['listeners.broker.bind', 'affinity.ipv4Prefix']);
    expect(proxy.app.currentConfig.listeners.broker!.bind).toEqual({ host: '127.0.0.1', port: 0 });
    expect(proxy.app.currentConfig.affinity).toMatchObject({ ttl: 300_000, ipv4Prefix: 32 });
    expect(proxy.app.currentConfig.listeners.pcoipUdp!.idleTimeout).toBe(420_000);
    // Still serving on the port bound at start.
    expect((await greet(broker.port, '127.0.2.151')).id).toBe('rl-a');
    // The lowered per-client cap applies at once: the client already holds one connection.
    await expect(tcpGreeting(pcoipTcp.port, '127.0.2.150')).rejects.toThrow(/closed before a greeting/);
    expect(proxy.app.stats.refusals.get('pcoipTcp:max-connections-per-client')).toBe(1);
  });
});
