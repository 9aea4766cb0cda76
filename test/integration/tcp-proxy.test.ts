import { afterEach, describe, expect, it } from 'vitest';
import { createServer, connect, type Server, type Socket, type AddressInfo } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { startFakeConnector } from '../helpers/fake-connector.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { tcpGreeting, udpRoundTrip } from '../helpers/clients.ts';
import type { ConnectorConfig } from '../../src/config/schema.ts';

const BULK = 8 * 1024 * 1024;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Reads a socket to its end. */
async function readAll(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  await once(socket, 'end');
  return Buffer.concat(chunks);
}

/**
 * A Connector stand-in for bulk tests: reads the client's bytes until the client half-closes,
 * then answers with its own payload and closes. It only answers after the FIN, so the test also
 * proves the half-close went through the proxy and the other direction stayed open.
 */
async function startSink(host: string, reply: Buffer): Promise<{ server: Server; port: number; received: Promise<Buffer> }> {
  let resolveReceived!: (b: Buffer) => void;
  const received = new Promise<Buffer>((r) => (resolveReceived = r));
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    readAll(socket).then((data) => {
      resolveReceived(data);
      socket.end(reply);
    });
  });
  await new Promise<void>((r) => server.listen({ host, port: 0 }, () => r()));
  return { server, port: (server.address() as AddressInfo).port, received };
}

async function freePort(host: string): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen({ host, port: 0 }, () => r()));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function sinkConnector(id: string, host: string, port: number): ConnectorConfig {
  return { id, address: host, ports: { broker: port, pcoip: port }, weight: 1, state: 'active' };
}

describe('TCP proxying', () => {
  let proxy: TestProxy | undefined;
  afterEach(async () => {
    await proxy?.stop();
    proxy = undefined;
  });

  it.each(['broker', 'pcoipTcp'] as const)('carries 8 MB each way intact through %s, with half-close', async (listener) => {
    const toClient = randomBytes(BULK);
    const sink = await startSink('127.0.1.20', toClient);
    try {
      proxy = await startTestProxy(testConfig([sinkConnector('sink', '127.0.1.20', sink.port)]));
      const toConnector = randomBytes(BULK);
      const client = connect({ host: '127.0.0.1', port: proxy.addresses[listener].port, localAddress: '127.0.2.200' });
      const fromConnector = readAll(client);
      client.end(toConnector); // FIN after the payload; the reply must still arrive.
      expect(sha256(await sink.received)).toBe(sha256(toConnector));
      expect(sha256(await fromConnector)).toBe(sha256(toClient));
      const line = await proxy.logs.waitFor((l) => l.msg === 'flow closed' && l.listener === listener);
      expect(line).toMatchObject({ connector: 'sink', client: '127.0.2.200', bytesIn: BULK, bytesOut: BULK });
      expect(proxy.app.activeFlows()[listener]).toBe(0);
    } finally {
      sink.server.close();
    }
  });

  it('closes the client, logs, and stays up when the Connector refuses connections', async () => {
    const deadPort = await freePort('127.0.1.21');
    proxy = await startTestProxy(testConfig([sinkConnector('dead', '127.0.1.21', deadPort)]));
    const client = connect({ host: '127.0.0.1', port: proxy.addresses.pcoipTcp.port, localAddress: '127.0.2.201' });
    client.on('error', () => undefined);
    await once(client, 'close');
    const line = await proxy.logs.waitFor((l) => l.msg === 'connect to Connector failed');
    expect(line).toMatchObject({ level: 40, connector: 'dead', client: '127.0.2.201', code: 'PLB_E_UPSTREAM_CONNECT', err: 'ECONNREFUSED' });
    // The proxy still accepts and answers the next client the same way.
    const again = connect({ host: '127.0.0.1', port: proxy.addresses.pcoipTcp.port, localAddress: '127.0.2.202' });
    again.on('error', () => undefined);
    await once(again, 'close');
    expect(proxy.logs.lines.filter((l) => l.msg === 'connect to Connector failed')).toHaveLength(2);
  });

  it('refuses TCP and UDP flows with a counted, logged PLB_E_NO_CONNECTOR when no Connector may take the client', async () => {
    const fake = await startFakeConnector('maint-only', '127.0.1.26');
    try {
      proxy = await startTestProxy(testConfig([{ ...fake.config(), state: 'maint' }]));
      const client = connect({ host: '127.0.0.1', port: proxy.addresses.pcoipTcp.port, localAddress: '127.0.2.203' });
      client.on('error', () => undefined);
      await once(client, 'close');
      await expect(udpRoundTrip(proxy.addresses.pcoipUdp.port, '127.0.2.203', Buffer.from('x'), 300)).rejects.toThrow();
      for (const listener of ['pcoipTcp', 'pcoipUdp']) {
        const line = await proxy.logs.waitFor((l) => l.code === 'PLB_E_NO_CONNECTOR' && l.listener === listener);
        expect(line).toMatchObject({ level: 40, reason: 'no-eligible-connector', client: '127.0.2.203' });
        expect(proxy.app.stats.refusals.get(`${listener}:no-eligible-connector`)).toBe(1);
      }
      expect(fake.seen.pcoipTcp.length + fake.seen.pcoipUdp.length).toBe(0);
    } finally {
      await fake.close();
    }
  });

  it('places a new client on another Connector when its first choice refuses', async () => {
    const alive = await startFakeConnector('alive', '127.0.1.22');
    try {
      const deadPort = await freePort('127.0.1.23');
      proxy = await startTestProxy(testConfig([alive.config(), sinkConnector('dead', '127.0.1.23', deadPort)]));
      const ids = new Set<string>();
      for (let i = 1; i <= 12; i++) {
        const { id, socket } = await tcpGreeting(proxy.addresses.broker.port, `127.0.3.${i}`);
        ids.add(id);
        socket.destroy();
      }
      expect([...ids]).toEqual(['alive']);
      // Some of those clients hashed to the dead Connector first: they were re-pinned, not refused.
      expect(proxy.logs.lines.some((l) => l.msg === 'connect to Connector failed' && l.connector === 'dead')).toBe(true);
    } finally {
      await alive.close();
    }
  });

  it('closes a connection idle for idleTimeout and releases its affinity reference', async () => {
    const fake = await startFakeConnector('idle', '127.0.1.25');
    try {
      proxy = await startTestProxy(
        testConfig([fake.config()], {
          listeners: { pcoipTcp: { bind: '127.0.0.1:0', idleTimeout: '300ms' } },
        }),
      );
      const { socket } = await tcpGreeting(proxy.addresses.pcoipTcp.port, '127.0.2.210');
      await once(socket, 'close');
      const line = await proxy.logs.waitFor((l) => l.msg === 'flow closed');
      expect(line).toMatchObject({ reason: 'idle-timeout', connector: 'idle' });
      const entry = proxy.app.affinity.get('127.0.2.210/32', Date.now());
      expect(entry).toMatchObject({ connectorId: 'idle', flows: 0 });
    } finally {
      await fake.close();
    }
  });
});
