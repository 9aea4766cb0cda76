import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { tcpGreeting } from '../helpers/clients.ts';

describe('App.stop with flows still open', () => {
  let connector: FakeConnector;
  let proxy: TestProxy;

  beforeAll(async () => {
    connector = await startFakeConnector('conn-a', '127.0.1.1');
    proxy = await startTestProxy(testConfig([connector.config()]));
  });

  afterAll(async () => {
    await connector.close();
  });

  it('returns after the grace period and closes the open connections', async () => {
    const open = await tcpGreeting(proxy.addresses.pcoipTcp.port, '127.0.2.1');
    const closed = new Promise<void>((r) => open.socket.once('close', () => r()));
    await proxy.app.stop(100);
    await closed;
    expect(open.socket.destroyed).toBe(true);
    expect(proxy.app.activeFlows().pcoipTcp).toBe(0);
  });
});
