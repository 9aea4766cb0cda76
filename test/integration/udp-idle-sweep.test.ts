import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { openUdpClient, waitUntil, type UdpClient } from '../helpers/flow-clients.ts';
import { LogCapture } from '../helpers/proxy.ts';
import { UdpProxy } from '../../src/proxy/udp-proxy.ts';
import { Pool } from '../../src/pool/pool.ts';
import { Placer } from '../../src/balance/placer.ts';
import { FlowStats } from '../../src/proxy/flow-stats.ts';
import { createLogger } from '../../src/logger.ts';

/**
 * The idle sweep closes flows a slice at a time, one slice per event-loop turn, so that
 * thousands of flows ending together do not hold up the datagrams of the live ones; a flow that
 * receives a datagram while its slice waits stays open. Real sockets, a test clock.
 */
const FLOWS = 500;

describe('UDP idle sweep in slices', () => {
  let connector: FakeConnector;
  let proxy: UdpProxy;
  let clock = 0;
  const logs = new LogCapture();
  const clients: UdpClient[] = [];

  beforeAll(async () => {
    connector = await startFakeConnector('sweep', '127.0.1.117');
    const pool = new Pool([connector.config()]);
    const placer = new Placer(pool, 60_000, { algorithm: 'maglev', tableSize: 65_537, ipv4Prefix: 32, ipv6Prefix: 64, onDown: 'repin' });
    proxy = new UdpProxy(
      { bind: { host: '127.0.0.1', port: 0 }, idleTimeoutMs: 1000, maxFlows: 10_000 },
      { placer, stats: new FlowStats(), logger: createLogger('info', logs), now: () => clock },
    );
    await proxy.listen();
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    proxy.close();
    await connector.close();
  });

  it('closes the idle flows over several turns, and keeps the one that spoke meanwhile', async () => {
    const port = proxy.address().port;
    for (let i = 0; i < FLOWS; i++) {
      const c = await openUdpClient(port, '127.0.15.1');
      clients.push(c);
      await c.roundTrip(`open ${i}`);
    }
    expect(proxy.activeFlows).toBe(FLOWS);
    proxy.sweepIdle(clock); // every flow was active: now they all date from t = 0
    clock = 5000;
    // The last flow (in the last slice) sends now; its datagram is read on the next turn, long before its slice comes.
    const last = clients.at(-1)!;
    const echoed = last.roundTrip('still here');
    expect(proxy.sweepIdle(clock)).toBe(FLOWS);
    expect(proxy.activeFlows).toBe(FLOWS - 100); // one slice closed at once, the rest wait for later turns
    await nextTurn();
    expect(proxy.activeFlows).toBeGreaterThan(1);
    expect((await echoed).toString()).toContain('still here');
    await waitUntil(() => proxy.activeFlows === 1, 2000, 'the idle flows closed');
    const closed = logs.lines.filter((l) => l.msg === 'flow closed' && l.reason === 'idle-timeout');
    expect(closed).toHaveLength(FLOWS - 1);
    expect(closed.some((l) => l.client === `127.0.15.1:${last.port}`)).toBe(false);
  });
});
