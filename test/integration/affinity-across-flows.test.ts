import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSocket } from 'node:dgram';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { tcpGreeting, udpRoundTrip } from '../helpers/clients.ts';

const CLIENTS = 24;

describe('one affinity record per client across 443, 4172/TCP and 4172/UDP', () => {
  let connectors: FakeConnector[];
  let proxy: TestProxy;

  beforeAll(async () => {
    connectors = await Promise.all(['conn-a', 'conn-b', 'conn-c'].map((id, i) => startFakeConnector(id, `127.0.1.${i + 1}`)));
    proxy = await startTestProxy(testConfig(connectors.map((c) => c.config())));
  });

  afterAll(async () => {
    await proxy.stop();
    await Promise.all(connectors.map((c) => c.close()));
  });

  it('sends every flow of a client to one Connector and spreads clients over the pool', async () => {
    const { broker, pcoipTcp, pcoipUdp } = proxy.addresses;
    const landedOn = new Map<string, string>();
    for (let i = 1; i <= CLIENTS; i++) {
      const client = `127.0.2.${i}`;
      // A login: two short 443 connections, then 4172/TCP, then the UDP media flow.
      const first = await tcpGreeting(broker.port, client);
      first.socket.end();
      const second = await tcpGreeting(broker.port, client);
      const control = await tcpGreeting(pcoipTcp.port, client);
      const reply = await udpRoundTrip(pcoipUdp.port, client, Buffer.from(`media from ${client}`));
      const udpConnector = reply.toString('utf8').split('|')[0]!;
      expect([second.id, control.id, udpConnector], `client ${client}`).toEqual([first.id, first.id, first.id]);
      expect(reply.toString('utf8')).toBe(`${first.id}|media from ${client}`);
      landedOn.set(client, first.id);
      second.socket.end();
      control.socket.end();
    }
    // The Connectors saw each client only on the flows the proxy sent them.
    // The proxy connects upstream from its own address, so count flows per Connector instead:
    // each client made 2 broker, 1 pcoipTcp and 1 pcoipUdp flow, all on its Connector.
    for (const c of connectors) {
      const clients = [...landedOn.values()].filter((id) => id === c.id).length;
      expect({ id: c.id, broker: c.seen.broker.length, pcoipTcp: c.seen.pcoipTcp.length, pcoipUdp: c.seen.pcoipUdp.length }).toEqual({
        id: c.id,
        broker: clients * 2,
        pcoipTcp: clients,
        pcoipUdp: clients,
      });
    }
    const perConnector = new Map<string, number>();
    for (const id of landedOn.values()) perConnector.set(id, (perConnector.get(id) ?? 0) + 1);
    expect(perConnector.size).toBe(3);
    expect(proxy.app.affinity.size).toBe(CLIENTS);
  });
});

describe('IPv6 listeners', () => {
  it('serves clients on [::1] and keys them by their /64', async () => {
    const fake = await startFakeConnector('v6-target', '127.0.1.90');
    const proxy = await startTestProxy(
      testConfig([fake.config()], {
        listeners: { pcoipTcp: { bind: '[::1]:0' }, pcoipUdp: { bind: '[::1]:0' } },
      }),
    );
    try {
      const control = await tcpGreeting(proxy.addresses.pcoipTcp.port, '::1', '::1');
      expect(control.id).toBe('v6-target');
      control.socket.end();
      const socket = createSocket('udp6');
      await new Promise<void>((r) => socket.bind({ address: '::1', port: 0 }, () => r()));
      const reply = new Promise<Buffer>((r) => socket.once('message', r));
      socket.send('v6 media', proxy.addresses.pcoipUdp.port, '::1');
      expect((await reply).toString()).toBe('v6-target|v6 media');
      socket.close();
      expect([...proxy.app.affinity.all()].map((e) => e.clientKey)).toEqual(['0:0:0:0:0:0:0:0/64']);
    } finally {
      await proxy.stop();
      await fake.close();
    }
  });
});
