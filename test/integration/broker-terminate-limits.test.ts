import { connect as netConnect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startTerminateLab, type LabOptions, type TerminateLab } from '../helpers/terminate-lab.ts';
import { openBrokerClient, resultId, type BrokerClient } from '../helpers/broker-client.ts';
import { rawRequest } from '../helpers/raw-http.ts';
import { clientRequest } from '../helpers/broker-xml.ts';
import { closed, waitUntil } from '../helpers/flow-clients.ts';
import { expectDrained } from '../helpers/leaks.ts';
import type { Config } from '../../src/config/schema.ts';

/**
 * listeners.broker.maxConnections / maxConnectionsPerClient / firstByteTimeout with
 * tls.mode: terminate: same refusals, counters and log lines as the passthrough listener
 * (test/integration/limits.test.ts), checked before any TLS work.
 */
describe('terminate mode: connection limits on the broker listener', () => {
  let lab: TerminateLab | undefined;
  const clients: BrokerClient[] = [];
  const raw: Socket[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const s of raw.splice(0)) s.destroy();
    await lab?.close();
    lab = undefined;
  });

  const start = async (broker: Record<string, unknown>, extra: LabOptions = {}) => {
    lab = await startTerminateLab({ ids: ['lim-t'], broker, ...extra });
    return lab;
  };
  const port = () => lab!.proxy.addresses.broker.port;
  const open = async (from: string) => {
    const c = await openBrokerClient(port(), from);
    clients.push(c);
    return c;
  };
  const hello = async (c: BrokerClient) => resultId(await c.exchange(rawRequest('/pcoip-broker/xml', clientRequest('hello'))));
  /** A TCP connection that sends nothing (or `bytes`) and stays open until the proxy closes it. */
  const silent = (from: string, bytes?: Buffer) => {
    const s = netConnect({ host: '127.0.0.1', port: port(), localAddress: from });
    s.on('error', () => undefined);
    if (bytes) s.write(bytes);
    raw.push(s);
    return s;
  };
  /** A TLS client from `from` is closed before its handshake completes. */
  const refused = (from: string) => expect(openBrokerClient(port(), from)).rejects.toThrow(/ECONNRESET|disconnected before secure TLS connection/);
  /** The refusal was counted `count` times under `reason` and logged at warn with `fields`. */
  const expectRefusal = async (reason: string, code: string, fields: Record<string, unknown>, count = 1) => {
    const { app, logs } = lab!.proxy;
    expect(app.stats.refusals.get(`broker:${reason}`)).toBe(count);
    expect(await logs.waitFor((l) => l.reason === reason)).toMatchObject({ level: 40, listener: 'broker', reason, code, ...fields });
  };
  /** Closes every client and checks flows, per-client counts and affinity are back to zero. */
  const drained = async () => {
    for (const c of clients.splice(0)) c.close();
    await expectDrained(lab!.proxy.app);
  };

  it('maxConnections: the TLS connection past the cap is closed before the handshake, counted and logged', async () => {
    const { proxy } = await start({ maxConnections: 2 });
    const first = await open('127.0.2.101');
    await open('127.0.2.102');
    await refused('127.0.2.103');
    await expectRefusal('max-connections', 'PLB_E_CONNECTION_LIMIT', { client: '127.0.2.103', maxConnections: 2 });
    // The refused client never reached the TLS server.
    expect(proxy.logs.lines.some((l) => l.msg === 'TLS handshake with client failed')).toBe(false);
    // Admitted connections still work; a freed slot takes the next client.
    expect(await hello(first)).toBe('OK');
    first.close();
    await waitUntil(() => proxy.app.trackedClients().broker === 1, 5000, 'first client released');
    expect(await hello(await open('127.0.2.103'))).toBe('OK');
    await drained();
  });

  it('maxConnectionsPerClient: one address is capped while another still gets through; counts drain to zero', async () => {
    const { proxy } = await start({ maxConnectionsPerClient: 2 });
    const held = [await open('127.0.2.104'), await open('127.0.2.104')];
    await refused('127.0.2.104');
    expect(await hello(await open('127.0.2.105'))).toBe('OK');
    await expectRefusal('max-connections-per-client', 'PLB_E_CONNECTION_LIMIT', { client: '127.0.2.104', maxConnectionsPerClient: 2 });
    for (const c of held) expect(await hello(c)).toBe('OK');
    expect(proxy.app.trackedClients().broker).toBe(2);
    await drained();
    // The capped address may connect again once its connections are gone.
    expect(await hello(await open('127.0.2.104'))).toBe('OK');
    await drained();
  });

  it('firstByteTimeout: a client that sends no ClientHello is closed, counted and logged; a TLS client stays', async () => {
    const { proxy } = await start({ firstByteTimeout: '300ms' });
    const talker = await open('127.0.2.106');
    expect(await hello(talker)).toBe('OK');
    const quiet = silent('127.0.2.107');
    await closed(quiet);
    expect(quiet.bytesRead).toBe(0);
    await expectRefusal('first-byte-timeout', 'PLB_E_SLOW_CLIENT', { client: '127.0.2.107', firstByteTimeoutMs: 300 });
    // Closed by the first-byte rule, not by a TLS handshake failure.
    expect(proxy.logs.lines.some((l) => l.msg === 'TLS handshake with client failed')).toBe(false);
    // The talker connected before the silent client: its deadline passed too, and it is still served.
    expect(await hello(talker)).toBe('OK');
    expect(proxy.app.activeFlows().broker).toBe(1);
    await drained();
  });

  it('after the first byte, the TLS handshake must finish within http.headerTimeout (not a first-byte refusal)', async () => {
    const { proxy } = await start({ firstByteTimeout: '300ms' }, { http: { headerTimeout: '1s' } });
    // 0x16: the first byte of a TLS handshake record, then nothing.
    const stalled = silent('127.0.2.108', Buffer.from([0x16]));
    await closed(stalled);
    expect(await proxy.logs.waitFor((l) => l.msg === 'TLS handshake with client failed')).toMatchObject({ err: 'ERR_TLS_HANDSHAKE_TIMEOUT' });
    expect(proxy.app.stats.refusals.get('broker:first-byte-timeout')).toBeUndefined();
    await drained();
  });

  it('a reload applies changed limits to the terminating listener; open connections stay', async () => {
    const { proxy } = await start({});
    const held = [await open('127.0.2.109'), await open('127.0.2.109')];
    const next = structuredClone(proxy.app.currentConfig) as Config;
    next.listeners.broker!.maxConnectionsPerClient = 1;
    next.listeners.broker!.firstByteTimeout = 300;
    const { diff } = proxy.app.reload(next);
    expect(diff.restartRequired).toEqual([]);
    expect(diff.listeners.broker?.sort()).toEqual(['firstByteTimeout', 'maxConnectionsPerClient']);
    // Holders above the lowered cap keep their connections; new ones are refused.
    for (const c of held) expect(await hello(c)).toBe('OK');
    await refused('127.0.2.109');
    await expectRefusal('max-connections-per-client', 'PLB_E_CONNECTION_LIMIT', { client: '127.0.2.109', maxConnectionsPerClient: 1 });
    const quiet = silent('127.0.2.110');
    await closed(quiet);
    await expectRefusal('first-byte-timeout', 'PLB_E_SLOW_CLIENT', { client: '127.0.2.110', firstByteTimeoutMs: 300 });
    await drained();
  });

  it('stop closes connections still waiting for their first byte', async () => {
    const { proxy } = await start({ firstByteTimeout: '1h' });
    const quiet = silent('127.0.2.111');
    await waitUntil(() => proxy.app.trackedClients().broker === 1, 5000, 'silent client admitted');
    await proxy.stop();
    await closed(quiet);
    // The count is released on the proxy side's 'close', which may come just after the client's.
    await waitUntil(() => proxy.app.trackedClients().broker === 0, 5000, 'silent client released');
  });
});
