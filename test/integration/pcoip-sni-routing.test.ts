import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTerminateLab, type TerminateLab } from '../helpers/terminate-lab.ts';
import { brokerCall, resultId, setCookieValue } from '../helpers/broker-client.ts';
import { udpRoundTrip } from '../helpers/clients.ts';
import { captureClientHello } from '../helpers/tls-fixtures.ts';
import { SniRouter } from '../../src/proxy/sni-routing.ts';
import { SessionTable } from '../../src/balance/sessions.ts';
import { Placer } from '../../src/balance/placer.ts';
import { Pool } from '../../src/pool/pool.ts';
import { createLogger } from '../../src/logger.ts';
import { LogCapture } from '../helpers/proxy.ts';

/** Logs in from one address and allocates; returns the Connector and the allocation's sni. */
async function loginAndAllocate(lab: TerminateLab, address: string): Promise<{ connectorId: string; sni: string }> {
  const port = lab.proxy.addresses.broker.port;
  const cookie = setCookieValue(await brokerCall(port, address, 'hello'))!;
  const alloc = await brokerCall(port, address, 'allocate-resource', { Cookie: `JSESSIONID=${cookie}` });
  expect(resultId(alloc)).toBe('ALLOC_SUCCESSFUL');
  const sni = /<sni>([^<]+)<\/sni>/.exec(alloc.body.toString())![1]!;
  return { connectorId: cookie.split('-s')[0]!, sni };
}

/** An address in [from, from+50) that consistent hashing alone would send elsewhere than `connectorId`. */
function addressPlacedElsewhere(lab: TerminateLab, connectorId: string, from: number): string {
  const placer = lab.proxy.app.placer;
  for (let k = from; k < from + 50; k++) {
    if (placer.pickNew(placer.keyFor(`127.0.2.${k}`)) !== connectorId) return `127.0.2.${k}`;
  }
  throw new Error('no such address');
}

/** Raw 4172/TCP: sends `pieces` (one write each, a tick apart), reads the fake Connector's greeting and echo. */
async function pcoipTcpSend(port: number, localAddress: string, pieces: Buffer[]): Promise<{ connectorId: string; echoed: Buffer; socket: Socket }> {
  const socket = connect({ host: '127.0.0.1', port, localAddress });
  socket.setNoDelay(true);
  socket.on('error', () => undefined);
  await new Promise<void>((r) => socket.once('connect', () => r()));
  const total = pieces.reduce((n, p) => n + p.length, 0);
  const received: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    socket.on('data', (c: Buffer) => {
      received.push(c);
      const all = Buffer.concat(received);
      const nl = all.indexOf('\n');
      if (nl >= 0 && all.length - nl - 1 >= total) resolve(all);
    });
    socket.once('close', () => reject(new Error(`closed after ${Buffer.concat(received).length} bytes`)));
  });
  for (const p of pieces) {
    socket.write(p);
    await new Promise((r) => setTimeout(r, 2));
  }
  const all = await done;
  const nl = all.indexOf('\n');
  return { connectorId: all.subarray(0, nl).toString(), echoed: all.subarray(nl + 1), socket };
}

describe('4172/TCP routing by the ClientHello SNI (sniRouting: true)', () => {
  let lab: TerminateLab;

  beforeAll(async () => {
    lab = await startTerminateLab({ sniRouting: true });
  });

  afterAll(async () => {
    await lab.close();
  });

  it('beats address affinity when both exist and disagree, and the UDP flow follows', async () => {
    const { pcoipTcp, pcoipUdp } = lab.proxy.addresses;
    const { connectorId, sni } = await loginAndAllocate(lab, '127.0.2.70');
    // A second address, already pinned (by its own UDP flow) to a different Connector.
    const other = addressPlacedElsewhere(lab, connectorId, 71);
    const before = (await udpRoundTrip(pcoipUdp.port, other, Buffer.from('before'))).toString().split('|')[0];
    expect(before).not.toBe(connectorId);

    const hello = await captureClientHello(sni);
    // Split across three TCP segments to exercise reassembly on the wire.
    const thirds = [hello.subarray(0, 3), hello.subarray(3, 100), hello.subarray(100)];
    const tcp = await pcoipTcpSend(pcoipTcp.port, other, thirds);
    expect(tcp.connectorId).toBe(connectorId);
    expect(tcp.echoed.equals(hello)).toBe(true); // forwarded unchanged, first
    const line = await lab.proxy.logs.waitFor((l) => l.msg === 'SNI matches a learned allocation: routed by it, overriding address affinity');
    expect(line).toMatchObject({ client: other, connector: connectorId, overrides: before, sni });
    // The address is now pinned there: a new UDP flow (new source port) goes to the same Connector.
    const after = (await udpRoundTrip(pcoipUdp.port, other, Buffer.from('after'))).toString().split('|')[0];
    expect(after).toBe(connectorId);
    expect(lab.proxy.app.describeSessions().allocations.find((a) => a.sni === sni)).toMatchObject({ state: 'active', flows: 1 });
    tcp.socket.destroy();
  });

  it('routes a ClientHello that arrives byte by byte', async () => {
    const { connectorId, sni } = await loginAndAllocate(lab, '127.0.2.130');
    const hello = await captureClientHello(sni);
    const bytes = [...hello.subarray(0, 40)].map((b) => Buffer.from([b]));
    const tcp = await pcoipTcpSend(lab.proxy.addresses.pcoipTcp.port, addressPlacedElsewhere(lab, connectorId, 131), [...bytes, hello.subarray(40)]);
    expect(tcp.connectorId).toBe(connectorId);
    expect(tcp.echoed.equals(hello)).toBe(true);
    tcp.socket.destroy();
  });

  it('passes a non-TLS first packet through by address, unchanged, with a log line', async () => {
    const junk = Buffer.from('GET / HTTP/1.0\r\n\r\n');
    const tcp = await pcoipTcpSend(lab.proxy.addresses.pcoipTcp.port, '127.0.2.140', [junk]);
    expect(tcp.echoed.equals(junk)).toBe(true);
    const placer = lab.proxy.app.placer;
    expect(tcp.connectorId).toBe(placer.affinity.get(placer.keyFor('127.0.2.140'), Date.now())!.connectorId);
    await lab.proxy.logs.waitFor((l) => l.msg === 'first bytes are not a TLS ClientHello; routing by address' && l.client === '127.0.2.140');
    tcp.socket.destroy();
  });

  it('does not learn an allocation whose connect tag was already used', async () => {
    const broker = lab.brokers[0]!;
    broker.fixedConnectTag = 'same-tag-twice-0123';
    try {
      // Two logins that both land on this broker (addresses chosen by the placer's own hashing).
      const placer = lab.proxy.app.placer;
      const addrs: string[] = [];
      for (let k = 150; k < 250 && addrs.length < 2; k++) if (placer.pickNew(placer.keyFor(`127.0.2.${k}`)) === broker.id) addrs.push(`127.0.2.${k}`);
      expect(addrs).toHaveLength(2);
      const first = await loginAndAllocate(lab, addrs[0]!);
      const second = await loginAndAllocate(lab, addrs[1]!);
      expect([first.connectorId, second.connectorId]).toEqual([broker.id, broker.id]);
      const warn = await lab.proxy.logs.waitFor((l) => l.code === 'PLB_E_CONNECT_TAG_REUSED');
      expect(warn).toMatchObject({ client: addrs[1], sni: second.sni, connectTag: 'same…(19)' });
      const snis = lab.proxy.app.describeSessions().allocations.map((a) => a.sni);
      expect(snis).toContain(first.sni);
      expect(snis).not.toContain(second.sni);
    } finally {
      broker.fixedConnectTag = undefined;
    }
  });
});

describe('SniRouter with an expired connect tag', () => {
  it('routes by address and logs when the SNI names an allocation whose tag expired unused', async () => {
    let now = 1_000_000;
    const pool = new Pool([
      { id: 'conn-a', address: '127.0.1.1', ports: { broker: 443, pcoip: 4172 }, weight: 1, state: 'active' },
      { id: 'conn-b', address: '127.0.1.2', ports: { broker: 443, pcoip: 4172 }, weight: 1, state: 'active' },
    ]);
    const placer = new Placer(pool, 3_600_000, { algorithm: 'maglev', tableSize: 65537, ipv4Prefix: 32, ipv6Prefix: 64 });
    const sessions = new SessionTable({ ttlMs: 3_600_000, maxEntries: 10 });
    sessions.learnAllocation({ connectorId: 'conn-b', clientAddress: '127.0.2.1', sni: 'late.example', sessionId: 's', connectTag: 't', ipAddress: undefined, port: undefined }, now);
    const logs = new LogCapture();
    const router = new SniRouter({ placer, sessions, logger: createLogger('debug', logs), now: () => now }, 2000);

    const server = createServer({ pauseOnConnect: true });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const accepted = new Promise<Socket>((r) => server.once('connection', r));
    const client = connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port });
    const hello = await captureClientHello('late.example');
    client.write(hello);
    const serverSide = await accepted;
    now += 61_000; // past the 60 s tag lifetime
    const routing = await router.route(serverSide, '127.0.2.9');
    expect(routing.consumed.equals(hello)).toBe(true);
    expect(routing.opened).toBeUndefined();
    expect(placer.affinity.get(placer.keyFor('127.0.2.9'), now)).toBeUndefined();
    await logs.waitFor((l) => l.msg === 'SNI names an allocation whose connect tag expired unused; routing by address');
    client.destroy();
    serverSide.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });
});
