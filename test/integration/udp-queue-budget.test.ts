import { afterEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { parsePrometheusText } from '../helpers/prom-text.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { openUdpClient, type UdpClient } from '../helpers/flow-clients.ts';

/**
 * listeners.pcoipUdp.maxQueueDelay (src/proxy/queue-budget.ts): with a latency budget, a
 * receive queue holds about budget × rate and the kernel drops the rest of a stall's backlog;
 * with `0s` it holds all of recvBufferSize (never drop, any delay). Shown with real sockets: the
 * proxy's event loop is blocked while 700 datagrams arrive each way, then the kernel's drop
 * counters (read through /metrics) tell how many the queues could not hold.
 */
const CLIENT_BASE = '127.0.13.';
const CAP = 1024 * 1024; // recvBufferSize: a 2 MiB queue
const BACKLOG = 700; // 700 × 2304 bytes charged ≈ 1.5 MiB: fits the 2 MiB queue, not the 512 KiB of a 256 KiB buffer

/**
 * A Connector in its own process (so it keeps sending while this process is blocked): echoes,
 * and on { burst: n } sends n datagrams to every flow it has seen, 50 ms after acknowledging.
 */
const CONNECTOR = `
const dgram = require('node:dgram');
const s = dgram.createSocket({ type: 'udp4', sendBufferSize: 8 * 1024 * 1024 });
const peers = new Map();
s.on('message', (m, r) => { peers.set(r.address + ':' + r.port, r); s.send(m, r.port, r.address); });
s.bind(0, process.argv[1], () => process.send({ port: s.address().port }));
const payload = Buffer.alloc(1200);
process.on('message', ({ burst }) => {
  process.send({ ack: true });
  setTimeout(() => { for (const p of peers.values()) for (let i = 0; i < burst; i++) s.send(payload, p.port, p.address); }, 50);
});
process.on('disconnect', () => process.exit(0));
`;

async function startConnector(host: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, ['-e', CONNECTOR, host], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const [msg] = (await once(child, 'message')) as [{ port: number }];
  return { child, port: msg.port };
}

describe.skipIf(process.platform !== 'linux')('UDP receive queues sized by a latency budget', () => {
  let proxy: TestProxy | undefined;
  let connector: ChildProcess | undefined;
  const clients: UdpClient[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    connector?.kill();
    await proxy?.stop();
    proxy = undefined;
  });

  async function dropsUnderStall(maxQueueDelay: string, connectorHost: string, clientIndex: number): Promise<{ listener: number; flows: number }> {
    const rmemMax = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));
    // The contrast needs room for 1 MiB buffers (.ci/run raises the sysctl to 4 MiB; so must an operator).
    expect(rmemMax, 'net.core.rmem_max must allow a 1 MiB SO_RCVBUF (sysctl -w net.core.rmem_max=4194304)').toBeGreaterThanOrEqual(CAP);
    const c = await startConnector(connectorHost);
    connector = c.child;
    proxy = await startTestProxy(
      testConfig([{ id: 'qb', address: connectorHost, ports: { broker: c.port, pcoip: c.port }, weight: 1, state: 'active' }], {
        listeners: { pcoipUdp: { bind: '127.0.0.1:0', recvBufferSize: CAP, maxQueueDelay } },
      }),
    );
    const client = await openUdpClient(proxy.addresses.pcoipUdp.port, `${CLIENT_BASE}${clientIndex}`);
    clients.push(client);
    expect((await client.roundTrip('open')).toString()).toBe('open');
    // Quiet for a while: with a budget, the listener's and the flow's buffers shrink towards the 256 KiB
    // floor (their peaks decay: from 1 MiB, halved within ~1.4 s for the listener, ~2 s for a flow).
    await sleep(4600);
    const flood = createSocket('udp4');
    await new Promise<void>((resolve) => flood.bind(0, `${CLIENT_BASE}${clientIndex + 1}`, () => flood.connect(proxy!.addresses.pcoipUdp.port, '127.0.0.1', resolve)));
    connector.send({ burst: BACKLOG });
    await once(connector, 'message');
    // Block the proxy's loop (this process) while both backlogs arrive.
    const payload = Buffer.alloc(1200);
    const until = performance.now() + 500;
    for (let i = 0; i < BACKLOG; i++) flood.send(payload);
    while (performance.now() < until) {
      // the stall
    }
    await sleep(300); // drain what was queued
    flood.close();
    const metrics = parsePrometheusText(await (await fetch(`${proxy.adminUrl}/metrics`)).text());
    return {
      listener: metrics.value('pcoip_lb_udp_receive_drops_total', { socket: 'listener' })!,
      flows: metrics.value('pcoip_lb_udp_receive_drops_total', { socket: 'flows' })!,
    };
  }

  it('maxQueueDelay 50ms: a stall longer than the budget is dropped, not queued, in both directions', async () => {
    const drops = await dropsUnderStall('50ms', '127.0.1.114', 1);
    // The buffers shrank to 256-512 KiB (a queue of 230-450 datagrams of 1200 bytes); the rest of the 700 are dropped.
    expect(drops.listener).toBeGreaterThan(BACKLOG / 4);
    expect(drops.flows).toBeGreaterThan(BACKLOG / 4);
  });

  it('maxQueueDelay 0s: the whole backlog waits in the 1 MiB buffers (delay instead of loss)', async () => {
    const drops = await dropsUnderStall('0s', '127.0.1.115', 3);
    expect(drops).toEqual({ listener: 0, flows: 0 });
  });
});
