import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { startFakeConnector } from '../helpers/fake-connector.ts';
import { startTestProxy, testConfig } from '../helpers/proxy.ts';
import { tcpGreeting } from '../helpers/clients.ts';

describe('App.stop with flows still open', () => {
  it('returns after the grace period and closes the open flows (it does not wait for clients to leave)', async () => {
    const connector = await startFakeConnector('conn-a', '127.0.1.30');
    const proxy = await startTestProxy(testConfig([connector.config()]));
    try {
      const session = await tcpGreeting(proxy.addresses.pcoipTcp.port, '127.0.2.30');
      const closed = once(session.socket, 'close');
      await proxy.app.stop(200);
      await closed;
      const line = await proxy.logs.waitFor((l) => l.msg === 'flow closed');
      expect(line.reason).toBe('shutdown');
    } finally {
      await connector.close();
    }
  });
});
