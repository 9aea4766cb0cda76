import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { createSocket } from 'node:dgram';
import { App } from '../../src/app.ts';
import { createLogger } from '../../src/logger.ts';
import type { StateReplica } from '../../src/state/replica.ts';
import type { StateChange } from '../../src/state/changes.ts';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { startFakeBroker, type FakeBroker } from '../helpers/fake-broker.ts';
import { terminateConfig } from '../helpers/terminate-lab.ts';
import { captureClientHello, certDir, makeCert } from '../helpers/tls-fixtures.ts';
import { LogCapture } from '../helpers/proxy.ts';
import { waitUntil } from '../helpers/flow-clients.ts';

/**
 * A replica that never answers until told to: clients with no local pin wait in their look-up,
 * the phase a worker's connection spends waiting for its primary (or an instance for its store).
 */
class StalledReplica implements StateReplica {
  private readonly waiting: Array<() => void> = [];
  lookups = 0;
  lookup(): Promise<StateChange | undefined> {
    this.lookups++;
    return new Promise((resolve) => this.waiting.push(() => resolve(undefined)));
  }
  release(): void {
    for (const w of this.waiting.splice(0)) w();
  }
  publish(): void {}
  publishLeases(): void {}
  onRemote(): void {}
  async close(): Promise<void> {}
}

/**
 * A Connector whose process is stuck (its event loop blocked) with a full accept queue: the
 * kernel drops further SYNs, so a connect to it stays in progress — the "mid-connect" phase.
 */
async function stuckConnector(host: string): Promise<{ port: number; child: ChildProcess; fillers: Socket[] }> {
  const child = spawn(
    process.execPath,
    [
      '-e',
      `const s=require('net').createServer().listen({host:'${host}',port:0,backlog:1},()=>{process.stdout.write(s.address().port+'\\n');setTimeout(()=>Atomics.wait(new Int32Array(new SharedArrayBuffer(4)),0,0,30000),50)})`,
    ],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  const port = await new Promise<number>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
  await new Promise((r) => setTimeout(r, 200));
  // Fill the accept queue of the blocked process (backlog 1 holds two).
  const fillers = Array.from({ length: 4 }, () => connect({ host, port }).on('error', () => undefined));
  await new Promise((r) => setTimeout(r, 200));
  return { port, child, fillers };
}

describe('App.stop() closes connections in every phase', () => {
  let working: FakeConnector;
  let broker: FakeBroker;
  let stuck: Awaited<ReturnType<typeof stuckConnector>>;
  let cleanup: () => Promise<void>;
  let app: App;
  const replica = new StalledReplica();
  const logs = new LogCapture();

  beforeAll(async () => {
    const dir = await certDir();
    cleanup = dir.cleanup;
    const [proxyCert, upstreamCert] = await Promise.all([makeCert(dir.dir, 'proxy', ['broker.example'], ['127.0.0.1']), makeCert(dir.dir, 'up', ['c'], ['127.0.41.1'])]);
    working = await startFakeConnector('st-ok', '127.0.41.1');
    broker = await startFakeBroker('st-ok', '127.0.41.1', upstreamCert);
    stuck = await stuckConnector('127.0.41.2');
    const config = terminateConfig(
      [
        { id: 'st-ok', address: '127.0.41.1', ports: { broker: broker.port, pcoip: working.pcoipPort } },
        { id: 'st-stuck', address: '127.0.41.2', ports: { broker: stuck.port, pcoip: stuck.port } },
      ],
      { certificates: [{ cert: proxyCert.certPath, key: proxyCert.keyPath }], upstream: { insecure: true } },
      { sniRouting: true },
    );
    config.listeners.pcoipTcp!.connectTimeout = 20_000;
    app = new App(config, createLogger('debug', logs), { replica });
    await app.start();
  });
  afterAll(async () => {
    stuck.child.kill('SIGKILL');
    for (const f of stuck.fillers) f.destroy();
    await Promise.all([working.close(), broker.close()]);
    await cleanup();
  });

  it('routing (SNI peek), waiting for a look-up, connecting, relaying, handshaking, and UDP waiting: all end, none goes on after stop', async () => {
    const { broker: b, pcoipTcp, pcoipUdp } = app.listenerAddresses;
    const now = Date.now();
    const open = (address: string, port: number) => {
      const s = connect({ host: '127.0.0.1', port, localAddress: address });
      s.on('error', () => undefined);
      s.resume(); // read what arrives, so the end of the connection is seen
      return s;
    };
    // No SNI: routed by address (an unknown SNI would wait for the replica too).
    const hello = await captureClientHello(undefined);
    // 1. waiting for the replica's look-up: no local pin for this client.
    const lookingUp = open('127.0.42.1', pcoipTcp!.port);
    // 2. in the SNI peek: pinned locally, sends nothing yet.
    app.placer.learn('127.0.42.2', 'st-ok', now);
    const peeking = open('127.0.42.2', pcoipTcp!.port);
    // 3. connecting: pinned to the stuck Connector.
    app.placer.learn('127.0.42.3', 'st-stuck', now);
    const connecting = open('127.0.42.3', pcoipTcp!.port);
    connecting.write(hello);
    // 4. relaying to a working Connector.
    app.placer.learn('127.0.42.4', 'st-ok', now);
    const relaying = open('127.0.42.4', pcoipTcp!.port);
    relaying.write(hello);
    // 5. the terminating broker, before the TLS handshake.
    const handshaking = open('127.0.42.5', b!.port);
    // 6. UDP datagrams waiting for a look-up.
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind({ address: '127.0.42.6', port: 0 }, () => r()));
    udp.send(Buffer.alloc(100), pcoipUdp!.port, '127.0.0.1');
    await waitUntil(() => replica.lookups >= 2 && working.seen.pcoipTcp.length === 1, 3000, 'look-ups asked, relay connected').catch((err) => {
      throw new Error(`${err.message}: lookups ${replica.lookups}, seen ${JSON.stringify(working.seen)}, logs ${JSON.stringify(logs.lines.slice(-8))}`);
    });
    expect(app.activeFlows().pcoipTcp).toBe(1); // only the relaying one is connected

    const clients = [lookingUp, peeking, connecting, relaying, handshaking];
    const closed = clients.map((s) => new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve()))));
    const started = Date.now();
    await app.stop(300);
    await Promise.all(closed);
    expect(Date.now() - started).toBeLessThan(3000);
    // The look-ups answer late: nothing may connect or reach a Connector after stop.
    const seenBefore = working.seen.pcoipTcp.length + working.seen.pcoipUdp.length;
    replica.release();
    await new Promise((r) => setTimeout(r, 300));
    expect(working.seen.pcoipTcp.length + working.seen.pcoipUdp.length).toBe(seenBefore);
    expect(app.activeFlows()).toEqual({ broker: 0, pcoipTcp: 0, pcoipUdp: 0 });
    expect(app.trackedClients()).toEqual({ broker: 0, pcoipTcp: 0, pcoipUdp: 0 });
    // Every pin the flows held a lease on is free again.
    for (const e of app.affinity.all()) expect(e.flows, e.clientKey).toBe(0);
    udp.close();
  });
});
