import { afterEach, describe, expect, it } from 'vitest';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { udpRoundTrip } from '../helpers/clients.ts';

// The UDP listener resolves reply addresses (always IP literals) without a per-packet tick, and
// hands anything else to DNS: both a literal and a host-name bind must listen and answer.
describe('UDP listener reply path', () => {
  let connector: FakeConnector | undefined;
  let proxy: TestProxy | undefined;

  afterEach(async () => {
    await proxy?.stop();
    await connector?.close();
  });

  it.each(['127.0.0.1', 'localhost'])('bound to %s, relays a burst of replies back to the client unchanged', async (host) => {
    connector = await startFakeConnector('conn-a', '127.0.1.1');
    const config = testConfig([connector.config()]);
    config.listeners.pcoipUdp = { ...config.listeners.pcoipUdp!, bind: { host, port: 0 } };
    proxy = await startTestProxy(config);
    const port = proxy.addresses.pcoipUdp.port;
    for (let i = 0; i < 20; i++) {
      const payload = Buffer.alloc(1200, i);
      const reply = await udpRoundTrip(port, '127.0.2.1', payload);
      expect(reply.subarray(0, 7).toString('utf8')).toBe('conn-a|');
      expect(reply.subarray(7).equals(payload)).toBe(true);
    }
  });
});
