import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { parsePrometheusText, type Exposition } from '../helpers/prom-text.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { startCli, rawTestConfig, type CliProcess } from '../helpers/cli-process.ts';
import { openUdpClient, waitUntil, type UdpClient } from '../helpers/flow-clients.ts';
import type { ConnectorConfig } from '../../src/config/schema.ts';

/**
 * The runtime metrics of issue 12 (src/admin/runtime-metrics.ts), read from /metrics of a real
 * proxy and parsed strictly: event-loop delay per data-plane process, and the UDP receive queues
 * and kernel drops of the listener and flow sockets, from /proc/net/udp. Overload is real: the
 * proxy's loop is blocked (in-process) or its workers are stopped with SIGSTOP (multi-core)
 * while datagrams keep arriving.
 */
const CONNECTOR_HOST = '127.0.1.112';
const CLIENT_BASE = '127.0.12.';
const MIN_RCVBUF = 65_536;

/** A UDP "Connector" that echoes, remembers who sent, and can burst datagrams back to every flow. */
async function startEchoConnector(): Promise<{ socket: Socket; port: number; peers: Map<string, RemoteInfo>; config: ConnectorConfig; burst(n: number): void; stop(): void }> {
  const socket = createSocket({ type: 'udp4' });
  const peers = new Map<string, RemoteInfo>();
  socket.on('message', (msg, rinfo) => {
    peers.set(`${rinfo.address}:${rinfo.port}`, rinfo);
    if (msg.length < 100) socket.send(msg, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, CONNECTOR_HOST, resolve));
  const port = socket.address().port;
  const payload = Buffer.alloc(1200);
  return {
    socket,
    port,
    peers,
    config: { id: 'rt-a', address: CONNECTOR_HOST, ports: { broker: port, pcoip: port }, weight: 1, state: 'active' },
    burst: (n) => {
      for (const p of peers.values()) for (let i = 0; i < n; i++) socket.send(payload, p.port, p.address);
    },
    stop: () => socket.close(),
  };
}

async function scrape(adminUrl: string): Promise<Exposition> {
  return parsePrometheusText(await (await fetch(`${adminUrl}/metrics`)).text());
}

function rmemMax(): number {
  return Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));
}

/** Checks the histogram's shape for one worker and returns its total count. */
function checkLoopHistogram(m: Exposition, worker: string): number {
  const buckets = m.samples.filter((s) => s.name === 'pcoip_lb_event_loop_delay_seconds_bucket' && s.labels.worker === worker);
  expect(buckets.length).toBe(12);
  expect(buckets.at(-1)!.labels.le).toBe('+Inf');
  for (let i = 1; i < buckets.length; i++) expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value);
  const count = m.value('pcoip_lb_event_loop_delay_seconds_count', { worker })!;
  expect(buckets.at(-1)!.value).toBe(count);
  return count;
}

function pidsOfChildren(pid: number): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        const stat = readFileSync(`/proc/${n}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid;
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe.skipIf(process.platform !== 'linux')('runtime metrics: event-loop delay and UDP receive queues in /metrics', () => {
  let connector: Awaited<ReturnType<typeof startEchoConnector>>;
  const clients: UdpClient[] = [];
  beforeAll(async () => {
    connector = await startEchoConnector();
  });
  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
    connector.peers.clear();
  });
  afterAll(() => connector.stop());

  describe('single process (workers: 1)', () => {
    let proxy: TestProxy;
    beforeAll(async () => {
      proxy = await startTestProxy(testConfig([connector.config], { listeners: { pcoipUdp: { bind: '127.0.0.1:0', recvBufferSize: MIN_RCVBUF } } }));
    });
    afterAll(() => proxy.stop());

    it('counts exactly its own sockets, and a stalled loop shows as delay and as kernel drops on the listener', async () => {
      for (let i = 1; i <= 3; i++) {
        const c = await openUdpClient(proxy.addresses.pcoipUdp.port, `${CLIENT_BASE}${i}`);
        clients.push(c);
        expect((await c.roundTrip('hello')).toString()).toBe('hello');
      }
      await sleep(50);
      const before = await scrape(proxy.adminUrl);
      expect(before.types.get('pcoip_lb_event_loop_delay_seconds')).toBe('histogram');
      expect(before.types.get('pcoip_lb_udp_receive_drops_total')).toBe('counter');
      expect(before.value('pcoip_lb_udp_sockets', { socket: 'listener' })).toBe(1);
      expect(before.value('pcoip_lb_udp_sockets', { socket: 'flows' })).toBe(3);
      expect(before.value('pcoip_lb_udp_receive_queue_limit_bytes', { socket: 'listener' })).toBe(2 * Math.min(MIN_RCVBUF, rmemMax()));
      expect(before.value('pcoip_lb_udp_receive_drops_total', { socket: 'listener' })).toBe(0);
      expect(checkLoopHistogram(before, '0')).toBeGreaterThan(0);
      // prom-client's process_open_fds, replaced by one that reads /proc/self/fd asynchronously.
      expect(before.value('process_open_fds')).toBeGreaterThan(4);

      // Block this process (the proxy's event loop) for 300 ms while a client floods the
      // listener through a connected socket (its sends are synchronous syscalls): the kernel
      // queue (2 × 64 KiB ≈ 56 datagrams) overflows and drops the rest.
      const flood = createSocket('udp4');
      await new Promise<void>((resolve) => flood.bind(0, `${CLIENT_BASE}9`, () => flood.connect(proxy.addresses.pcoipUdp.port, '127.0.0.1', resolve)));
      const payload = Buffer.alloc(1200);
      const until = performance.now() + 300;
      for (let i = 0; i < 300; i++) flood.send(payload);
      while (performance.now() < until) {
        // the stall under test
      }
      await sleep(50);
      const after = await scrape(proxy.adminUrl);
      flood.close();
      expect(after.value('pcoip_lb_udp_receive_drops_total', { socket: 'listener' })).toBeGreaterThan(100);
      expect(after.value('pcoip_lb_event_loop_delay_max_seconds', { worker: '0' })).toBeGreaterThanOrEqual(0.25);
      const count = checkLoopHistogram(after, '0');
      expect(after.value('pcoip_lb_event_loop_delay_seconds_bucket', { worker: '0', le: '0.25' })).toBeLessThan(count);
    });
  });

  describe('multi-core (workers: 2): the primary reports its workers', () => {
    let cli: CliProcess | undefined;
    let stopped: number[] = [];
    afterEach(async () => {
      for (const pid of stopped) process.kill(pid, 'SIGCONT');
      stopped = [];
      await cli?.cleanup();
      cli = undefined;
    });

    it('stopped workers show as deep queues and drops on both kinds of socket, then as event-loop delay per worker', async () => {
      cli = await startCli(rawTestConfig([connector.config], { workers: 2, listeners: { pcoipUdp: { bind: '127.0.0.1:0', recvBufferSize: MIN_RCVBUF } } }));
      const port = cli.ports.pcoipUdp!;
      // Eight source ports: SO_REUSEPORT spreads their flows over both workers.
      for (let i = 11; i <= 18; i++) {
        const c = await openUdpClient(port, `${CLIENT_BASE}${i}`);
        clients.push(c);
        expect((await c.roundTrip('hello')).toString()).toBe('hello');
      }
      await waitUntil(() => connector.peers.size === 8, 2000, 'eight flows at the Connector');
      const workers = pidsOfChildren(cli.child.pid!);
      expect(workers).toHaveLength(2);
      for (const pid of workers) process.kill(pid, 'SIGSTOP');
      stopped = workers;
      // Nobody drains now: both directions pile up in the kernel until the queues are full.
      const payload = Buffer.alloc(1200);
      for (const c of clients) for (let i = 0; i < 100; i++) c.send(payload);
      connector.burst(100);
      await sleep(500);
      const stuck = await scrape(cli.adminUrl!);
      expect(stuck.value('pcoip_lb_udp_sockets', { socket: 'listener' })).toBe(2);
      expect(stuck.value('pcoip_lb_udp_sockets', { socket: 'flows' })).toBe(8);
      const limit = stuck.value('pcoip_lb_udp_receive_queue_limit_bytes', { socket: 'flows' })!;
      for (const socket of ['listener', 'flows']) {
        expect(stuck.value('pcoip_lb_udp_receive_queue_bytes', { socket })).toBeGreaterThan(50_000);
        expect(stuck.value('pcoip_lb_udp_receive_queue_max_bytes', { socket })).toBeLessThanOrEqual(limit + 2 * 1200 * 2);
        expect(stuck.value('pcoip_lb_udp_receive_drops_total', { socket })).toBeGreaterThan(0);
      }
      for (const pid of workers) process.kill(pid, 'SIGCONT');
      stopped = [];
      // Each worker's next stats report (every second) carries the stall it just lived through.
      await sleep(2500);
      const after = await scrape(cli.adminUrl!);
      const maxima = ['0', '1'].map((worker) => after.value('pcoip_lb_event_loop_delay_max_seconds', { worker }));
      expect(maxima.every((v) => v !== undefined)).toBe(true);
      expect(Math.max(...(maxima as number[]))).toBeGreaterThanOrEqual(0.4);
      for (const worker of ['0', '1']) checkLoopHistogram(after, worker);
      // The drained queues are empty again, and the drop counters did not go back.
      expect(after.value('pcoip_lb_udp_receive_queue_bytes', { socket: 'listener' })).toBe(0);
      for (const socket of ['listener', 'flows']) {
        expect(after.value('pcoip_lb_udp_receive_drops_total', { socket })).toBeGreaterThanOrEqual(stuck.value('pcoip_lb_udp_receive_drops_total', { socket })!);
      }
    });
  });
});
