import { afterEach, describe, expect, it } from 'vitest';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { udpRoundTrip } from '../helpers/clients.ts';
import type { UdpProxy } from '../../src/proxy/udp-proxy.ts';

/**
 * `idleTimeout: 0s` means "never" on every listener, 4172/UDP included (it used to close UDP flows
 * after ~60 ms of silence). The idle sweep is driven with a clock 30 days ahead, so the test
 * does not wait: the same flow is closed by a 100ms timeout and kept by 0s.
 */
describe('listeners.pcoipUdp.idleTimeout: 0s', () => {
  let connector: FakeConnector | undefined;
  let proxy: TestProxy | undefined;

  afterEach(async () => {
    await proxy?.stop();
    await connector?.close();
  });

  it.each([
    ['0s', 1],
    ['100ms', 0],
  ])('idleTimeout %s: after 30 days of silence the flow count is %i', async (idleTimeout, open) => {
    connector = await startFakeConnector('conn-a', '127.0.1.231');
    proxy = await startTestProxy(testConfig([connector.config()], { listeners: { pcoipUdp: { bind: '127.0.0.1:0', idleTimeout } } }));
    await udpRoundTrip(proxy.addresses.pcoipUdp.port, '127.0.2.231', Buffer.from('media'));
    expect(proxy.app.activeFlows().pcoipUdp).toBe(1);
    // The listener's own sweep, twice: the first turns "seen" into a time, the second runs 30 days later.
    // (Reached through the App's data plane: the sweep is the listener's own, only its clock is ours.)
    const udp = (proxy.app as unknown as { data: { pcoipUdp: UdpProxy } }).data.pcoipUdp;
    const later = Date.now() + 1000;
    udp.sweepIdle(later);
    udp.sweepIdle(later + 30 * 86_400_000);
    expect(proxy.app.activeFlows().pcoipUdp).toBe(open);
  });
});
