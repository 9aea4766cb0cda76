import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { udpRoundTrip } from '../helpers/clients.ts';

async function boundSocket(localAddress: string): Promise<UdpSocket> {
  const socket = createSocket('udp4');
  await new Promise<void>((r) => socket.bind({ address: localAddress, port: 0 }, () => r()));
  return socket;
}

/** Sends `count` packets in windows and collects the replies; resolves when all came back or after timeoutMs. */
async function exchange(socket: UdpSocket, port: number, packets: Buffer[], window = 16, timeoutMs = 5000): Promise<Buffer[]> {
  const replies: Buffer[] = [];
  let waiting: (() => void) | undefined;
  socket.on('message', (msg) => {
    replies.push(msg);
    waiting?.();
  });
  const deadline = Date.now() + timeoutMs;
  for (let sent = 0; sent < packets.length; ) {
    const batch = packets.slice(sent, sent + window);
    for (const p of batch) socket.send(p, port, '127.0.0.1');
    sent += batch.length;
    while (replies.length < sent && Date.now() < deadline) {
      await new Promise<void>((r) => {
        waiting = r;
        setTimeout(r, 50);
      });
    }
  }
  return replies;
}

describe('UDP proxying', () => {
  let connectors: FakeConnector[];
  let proxy: TestProxy;

  beforeAll(async () => {
    connectors = await Promise.all(['u-a', 'u-b'].map((id, i) => startFakeConnector(id, `127.0.1.${40 + i}`)));
    proxy = await startTestProxy(
      testConfig(
        connectors.map((c) => c.config()),
        { listeners: { pcoipUdp: { bind: '127.0.0.1:0', idleTimeout: '400ms', maxFlows: 6 } } },
      ),
    );
  });

  afterAll(async () => {
    await proxy.stop();
    await Promise.all(connectors.map((c) => c.close()));
  });

  it.each([1, 12, 500, 1200, 1472])('round-trips a %i-byte payload unchanged', async (size) => {
    const payload = randomBytes(size);
    const reply = await udpRoundTrip(proxy.addresses.pcoipUdp.port, '127.0.2.50', payload);
    const sep = reply.indexOf('|');
    expect(reply.length).toBe(sep + 1 + size);
    expect(reply.subarray(sep + 1).equals(payload)).toBe(true);
  });

  it('keeps every packet of a 1200-byte stream in order and intact', async () => {
    const socket = await boundSocket('127.0.2.51');
    try {
      const packets = Array.from({ length: 400 }, (_, i) => {
        const p = randomBytes(1200);
        p.writeUInt32BE(i, 0);
        return p;
      });
      const replies = await exchange(socket, proxy.addresses.pcoipUdp.port, packets);
      expect(replies).toHaveLength(packets.length);
      const id = replies[0]!.subarray(0, replies[0]!.indexOf('|')).toString();
      replies.forEach((r, i) => expect(r.subarray(id.length + 1).equals(packets[i]!), `packet ${i}`).toBe(true));
    } finally {
      socket.close();
    }
  });

  it('sends two flows of one client address to the same Connector', async () => {
    // The earlier flows count against maxFlows (6) until they idle out.
    await waitUntil(() => proxy.app.activeFlows().pcoipUdp === 0);
    const one = await udpRoundTrip(proxy.addresses.pcoipUdp.port, '127.0.2.52', Buffer.from('x'));
    const two = await udpRoundTrip(proxy.addresses.pcoipUdp.port, '127.0.2.52', Buffer.from('y'));
    expect(two.toString().split('|')[0]).toBe(one.toString().split('|')[0]);
  });

  it('closes idle flows, releasing their affinity references', async () => {
    await udpRoundTrip(proxy.addresses.pcoipUdp.port, '127.0.2.53', Buffer.from('hello'));
    const line = await proxy.logs.waitFor((l) => l.msg === 'flow closed' && l.listener === 'pcoipUdp' && l.client === '127.0.2.53');
    expect(line).toMatchObject({ reason: 'idle-timeout', packetsIn: 1, packetsOut: 1, bytesIn: 5 });
    expect(proxy.app.affinity.get('127.0.2.53/32', Date.now())?.flows).toBe(0);
  });

  it('refuses flows past maxFlows with a logged warning, and serves again once flows expire', async () => {
    // Wait for earlier tests' flows to expire so the count starts from zero.
    await waitUntil(() => proxy.app.activeFlows().pcoipUdp === 0);
    const sockets = await Promise.all(Array.from({ length: 7 }, () => boundSocket('127.0.2.54')));
    try {
      const results = await Promise.allSettled(
        sockets.map(async (s) => {
          const reply = new Promise<Buffer>((resolve, reject) => {
            s.once('message', resolve);
            setTimeout(() => reject(new Error('no reply')), 1000);
          });
          s.send('ping', proxy.addresses.pcoipUdp.port, '127.0.0.1');
          return reply;
        }),
      );
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(6);
      const warn = await proxy.logs.waitFor((l) => l.code === 'PLB_E_FLOW_LIMIT');
      expect(warn).toMatchObject({ level: 40, listener: 'pcoipUdp', maxFlows: 6 });
      await waitUntil(() => proxy.app.activeFlows().pcoipUdp === 0);
      expect((await udpRoundTrip(proxy.addresses.pcoipUdp.port, '127.0.2.55', Buffer.from('again'))).toString()).toMatch(/\|again$/);
    } finally {
      for (const s of sockets) s.close();
    }
  });
});

async function waitUntil(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('UDP wildcard bind', () => {
  it.each([
    ['0.0.0.0:0', true],
    ['127.0.0.1:0', false],
  ])('bind %s → start-up warning about the reply source address: %s', async (bind, warns) => {
    const fake = await startFakeConnector('wild', '127.0.1.45');
    const proxy = await startTestProxy(testConfig([fake.config()], { listeners: { pcoipUdp: { bind } } }));
    try {
      await proxy.logs.waitFor((l) => String(l.msg).startsWith('pcoip-lb started'));
      expect(proxy.logs.lines.some((l) => l.code === 'PLB_W_UDP_WILDCARD')).toBe(warns);
      // The wildcard-bound listener still serves loopback clients.
      expect((await udpRoundTrip(proxy.addresses.pcoipUdp.port, '127.0.2.56', Buffer.from('w'))).toString()).toBe('wild|w');
    } finally {
      await proxy.stop();
      await fake.close();
    }
  });
});

describe('UDP bind failure', () => {
  it('rejects start with PLB_E_LISTEN naming the key and the address', async () => {
    const fake = await startFakeConnector('clash', '127.0.1.46');
    const first = await startTestProxy(testConfig([fake.config()], { listeners: { pcoipUdp: { bind: '127.0.0.1:0' } } }));
    const port = first.addresses.pcoipUdp.port;
    try {
      await expect(startTestProxy(testConfig([fake.config()], { listeners: { pcoipUdp: { bind: `127.0.0.1:${port}` } } }))).rejects.toMatchObject({
        code: 'PLB_E_LISTEN',
        message: `listeners.pcoipUdp: cannot listen on 127.0.0.1:${port}/udp: EADDRINUSE`,
      });
    } finally {
      await first.stop();
      await fake.close();
    }
  });
});
