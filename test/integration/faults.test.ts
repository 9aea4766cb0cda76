import { afterEach, describe, expect, it } from 'vitest';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { startFaultyConnector, type FaultyConnector } from '../helpers/faulty-connector.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { tcpGreeting } from '../helpers/clients.ts';
import { echo, closed, waitUntil, type UdpClient, TestFlows } from '../helpers/flow-clients.ts';
import { expectDrained } from '../helpers/leaks.ts';

/**
 * Faults a Connector pool meets in production, each with the outcome the proxy must produce,
 * and after each one the proxy drains back to its idle baseline (no leaked flow, counter,
 * limit entry or affinity entry).
 */
describe('faults', () => {
  let proxy: TestProxy | undefined;
  let connectors: FaultyConnector[] = [];
  const flows = new TestFlows();
  let nextHost = 1;

  afterEach(async () => {
    flows.closeAll();
    await proxy?.stop();
    proxy = undefined;
    await Promise.all(connectors.map((c) => c.stop()));
    connectors = [];
  });

  async function setUp(ids: string[], listeners: Record<string, Record<string, unknown>> = {}, extra: Record<string, unknown> = {}) {
    connectors = [];
    for (const id of ids) connectors.push(await startFaultyConnector(id, `127.0.1.${100 + nextHost++}`));
    // A short UDP idle timeout so the flows of closed clients drain within the test.
    const all = { broker: { bind: '127.0.0.1:0' }, pcoipTcp: { bind: '127.0.0.1:0' }, pcoipUdp: { bind: '127.0.0.1:0', idleTimeout: '1s' } } as Record<
      string,
      Record<string, unknown>
    >;
    for (const [name, settings] of Object.entries(listeners)) all[name] = { ...all[name], ...settings };
    proxy = await startTestProxy(testConfig(connectors.map((c) => c.config()), { listeners: all, ...extra }));
    return { proxy, ports: { broker: proxy.addresses.broker.port, pcoipTcp: proxy.addresses.pcoipTcp.port, pcoipUdp: proxy.addresses.pcoipUdp.port } };
  }

  /** A client address that consistent hashing places on `connectorId` (computed, no traffic). */
  const usedClients = new Set<string>();
  function clientOn(connectorId: string): string {
    for (let i = 1; i < 255; i++) {
      const address = `127.0.4.${i}`;
      if (usedClients.has(address)) continue;
      if (proxy!.app.placer.pickNew(proxy!.app.placer.keyFor(address)) === connectorId) {
        usedClients.add(address);
        return address;
      }
    }
    throw new Error(`no client address maps to ${connectorId}`);
  }

  const greet = (port: number, from: string) => flows.greet(port, from);
  const udp = (port: number, from: string) => flows.udpClient(port, from);
  /** A full session: 443, 4172/TCP and 4172/UDP, all checked to reach `expected`. */
  async function session(ports: { broker: number; pcoipTcp: number; pcoipUdp: number }, client: string, expected: string) {
    const broker = await greet(ports.broker, client);
    const control = await greet(ports.pcoipTcp, client);
    const media = await udp(ports.pcoipUdp, client);
    expect([broker.id, control.id, (await media.roundTrip('m')).toString()]).toEqual([expected, expected, `${expected}|m`]);
    return { broker: broker.socket, control: control.socket, media };
  }
  /** A connection attempt that the proxy must close without a greeting. */
  const refusedConnection = (port: number, from: string) => expect(tcpGreeting(port, from)).rejects.toThrow(/closed before a greeting/);
  const flowClosed = (match: Record<string, unknown>) =>
    proxy!.logs.waitFor((l) => l.msg === 'flow closed' && Object.entries(match).every(([k, v]) => l[k] === v));

  it('a Connector killed mid-session (RST): its flows close, others carry on, its clients move once it is marked down', async () => {
    const { ports } = await setUp(['kill-a', 'kill-b']);
    const victim = clientOn('kill-a');
    const bystander = clientOn('kill-b');
    const v = await session(ports, victim, 'kill-a');
    const b = await session(ports, bystander, 'kill-b');

    await connectors[0]!.stop(); // RST on every connection, listeners and UDP socket gone
    await Promise.all([closed(v.broker), closed(v.control)]);
    for (const listener of ['broker', 'pcoipTcp']) {
      expect(await flowClosed({ listener, client: victim })).toMatchObject({ connector: 'kill-a', reason: 'connector-error', err: 'ECONNRESET' });
    }
    // The UDP flow learns from the ICMP port-unreachable its next packet draws.
    v.media.send('after-kill');
    expect(await flowClosed({ listener: 'pcoipUdp', connector: 'kill-a' })).toMatchObject({ reason: 'connector-unreachable' });
    expect(await proxy!.logs.waitFor((l) => l.code === 'PLB_E_UPSTREAM_UNREACHABLE')).toMatchObject({ level: 40, connector: 'kill-a' });
    // The bystander on the other Connector never noticed.
    await echo(b.control, 'unaffected');
    expect((await b.media.roundTrip('unaffected')).toString()).toBe('kill-b|unaffected');
    // Until health says otherwise the victim stays pinned: its new connection is closed, not moved.
    await refusedConnection(ports.pcoipTcp, victim);
    // Marked down (the health checker's call), its next flows all go to the survivor, together.
    proxy!.app.pool.setHealth('kill-a', 'down', 'test: killed');
    const moved = await session(ports, victim, 'kill-b');
    for (const s of [v.media, b.media, moved.media]) s.close();
    for (const s of [b.broker, b.control, moved.broker, moved.control]) s.destroy();
    await expectDrained(proxy!.app);
  });

  it('a Connector restarting: flows cut by the restart close, the pinned client comes back to it afterwards', async () => {
    const { ports } = await setUp(['rs-a', 'rs-b']);
    const client = clientOn('rs-a');
    const s = await session(ports, client, 'rs-a');
    await connectors[0]!.stop();
    await Promise.all([closed(s.broker), closed(s.control)]);
    // While it is away the pinned client is not moved (no health check said it is down).
    await refusedConnection(ports.broker, client);
    s.media.send('while-away');
    await flowClosed({ listener: 'pcoipUdp', reason: 'connector-unreachable' });
    await connectors[0]!.start();
    const again = await session(ports, client, 'rs-a');
    expect(proxy!.app.affinity.get(proxy!.app.placer.keyFor(client), Date.now())?.connectorId).toBe('rs-a');
    for (const x of [s.media, again.media]) x.close();
    again.broker.destroy();
    again.control.destroy();
    await expectDrained(proxy!.app);
  });

  it('ICMP port-unreachable on UDP closes only that UDP flow; the TCP flows of the session stay', async () => {
    const { ports } = await setUp(['icmp-a'], { pcoipUdp: { idleTimeout: '2s' } });
    const client = clientOn('icmp-a');
    const s = await session(ports, client, 'icmp-a');
    await connectors[0]!.closeUdp();
    s.media.send('into-the-void');
    const line = await flowClosed({ listener: 'pcoipUdp', client, clientPort: s.media.port });
    expect(line).toMatchObject({ reason: 'connector-unreachable', packetsIn: 2, packetsOut: 1 });
    await echo(s.control, 'tcp-still-fine');
    await echo(s.broker, 'broker-still-fine');
    s.media.close();
    s.broker.destroy();
    s.control.destroy();
    await expectDrained(proxy!.app);
  });

  it('a blackholed Connector (accepts, never answers): flows end by idle timeout; marked down (closeFlowsOnDown), its UDP flows move at once', async () => {
    const { ports } = await setUp(
      ['bh-a', 'bh-b'],
      { broker: { idleTimeout: '400ms', firstByteTimeout: '0s' }, pcoipUdp: { idleTimeout: '400ms' } },
      { health: { checks: [], closeFlowsOnDown: true } },
    );
    const client = clientOn('bh-a');
    connectors[0]!.blackhole = true;
    // TCP: the client speaks, nothing comes back; the connection is closed once idle.
    const tcp = connect({ host: '127.0.0.1', port: ports.broker, localAddress: client });
    flows.track(tcp);
    await once(tcp, 'connect');
    tcp.write('ClientHello');
    await closed(tcp);
    expect(await flowClosed({ listener: 'broker', client })).toMatchObject({ connector: 'bh-a', reason: 'idle-timeout', bytesIn: 11, bytesOut: 0 });
    await waitUntil(() => connectors[0]!.connections === 0, 2000, 'Connector side closed');
    // UDP: packets are forwarded and vanish; once the client gives up the flow idles out.
    const media = await udp(ports.pcoipUdp, client);
    for (let i = 0; i < 3; i++) media.send(`lost-${i}`);
    expect(await flowClosed({ listener: 'pcoipUdp', connector: 'bh-a' })).toMatchObject({ reason: 'idle-timeout', packetsIn: 3, packetsOut: 0 });
    expect(connectors[0]!.datagrams).toBe(3);
    // A flow still open when health marks the Connector down is closed so its next packet is placed anew.
    const pending = media.roundTrip('first', 3000);
    await waitUntil(() => proxy!.app.activeFlows().pcoipUdp === 1, 2000, 'UDP flow open');
    proxy!.app.pool.setHealth('bh-a', 'down', 'test: no answer');
    expect(await flowClosed({ listener: 'pcoipUdp', reason: 'connector-down' })).toMatchObject({ connector: 'bh-a' });
    expect((await media.roundTrip('second')).toString()).toBe('bh-b|second');
    await pending.catch(() => undefined); // the first packet was lost in the hole
    media.close();
    await expectDrained(proxy!.app);
  });

  it('a client vanishing: an RST from the client or UDP silence frees everything, on both sides', async () => {
    const { ports } = await setUp(['van-a'], { pcoipUdp: { idleTimeout: '300ms' } });
    const client = clientOn('van-a');
    const s = await session(ports, client, 'van-a');
    expect(connectors[0]!.connections).toBe(2);
    s.broker.resetAndDestroy();
    s.control.resetAndDestroy();
    s.media.close(); // stops sending without a word, as a crashed client does
    expect(await flowClosed({ listener: 'pcoipTcp', client })).toMatchObject({ reason: 'client-error', err: 'ECONNRESET' });
    expect(await flowClosed({ listener: 'pcoipUdp', connector: 'van-a' })).toMatchObject({ reason: 'idle-timeout' });
    await waitUntil(() => connectors[0]!.connections === 0, 2000, 'Connector side closed');
    await expectDrained(proxy!.app);
  });

  it('a flood of new UDP source ports from one address stops at maxFlowsPerClient; others keep their flows', async () => {
    const { ports } = await setUp(['fl-a'], { pcoipUdp: { maxFlowsPerClient: 20, idleTimeout: '500ms' } });
    const bystander = await udp(ports.pcoipUdp, '127.0.4.250');
    expect((await bystander.roundTrip('before')).toString()).toBe('fl-a|before');
    const started = Date.now();
    const flood: UdpClient[] = [];
    for (let i = 0; i < 200; i++) {
      const u = await udp(ports.pcoipUdp, '127.0.4.251');
      flood.push(u);
      u.send(`flood-${i}`);
    }
    // Datagrams are handled in arrival order: the bystander's reply means the flood was handled.
    expect((await bystander.roundTrip('during')).toString()).toBe('fl-a|during');
    expect(proxy!.app.activeFlows().pcoipUdp).toBe(21);
    expect(proxy!.app.stats.refusals.get('pcoipUdp:max-flows-per-client')).toBe(180);
    const warnLines = proxy!.logs.lines.filter((l) => l.reason === 'max-flows-per-client');
    expect(warnLines.length).toBeGreaterThan(0);
    expect(warnLines.length).toBeLessThanOrEqual(1 + Math.ceil((Date.now() - started) / 1000));
    for (const u of flood) u.close();
    bystander.close();
    await expectDrained(proxy!.app);
  });

  it('slow-loris on 443: silent connections close at firstByteTimeout, a trickle at idleTimeout, real clients are served', async () => {
    const { ports } = await setUp(['sl-a'], { broker: { firstByteTimeout: '300ms', idleTimeout: '600ms' } });
    const silent: Socket[] = [];
    for (let i = 0; i < 40; i++) silent.push((await greet(ports.broker, `127.0.5.${1 + (i % 20)}`)).socket);
    const trickle: Socket[] = [];
    for (let i = 0; i < 5; i++) {
      const t = (await greet(ports.broker, `127.0.5.${100 + i}`)).socket;
      t.write('\x16'); // the first byte of a TLS record, then nothing
      trickle.push(t);
    }
    const real = await greet(ports.broker, '127.0.5.200');
    await echo(real.socket, 'ClientHello');
    await Promise.all(silent.map(closed));
    expect(proxy!.app.stats.refusals.get('broker:first-byte-timeout')).toBe(40);
    const slowLines = proxy!.logs.lines.filter((l) => l.code === 'PLB_E_SLOW_CLIENT');
    expect(slowLines.length).toBeLessThan(5); // rate-limited, with a suppressed count
    expect(slowLines.reduce((n, l) => n + 1 + Number(l.suppressed), 0)).toBeLessThanOrEqual(40);
    await Promise.all(trickle.map(closed));
    const trickleClosed = proxy!.logs.lines.filter((l) => l.msg === 'flow closed' && /^127\.0\.5\.10\d$/.test(String(l.client)));
    expect(trickleClosed.map((l) => [l.reason, l.bytesIn])).toEqual(Array.from({ length: 5 }, () => ['idle-timeout', 1]));
    real.socket.destroy();
    await expectDrained(proxy!.app);
  });
});
