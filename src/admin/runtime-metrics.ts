/**
 * What the data plane's latency depends on, for /metrics: how late each data-plane event loop
 * runs (a stall is delay for every datagram queued behind it) and how deep the UDP receive
 * queues are and whether the kernel drops on them (bench/README.md, "bench:latency", has the
 * measurements that chose these). Registered from metrics.ts by registerRuntimeMetrics().
 *
 * Where the numbers come from:
 * - event loop: this process's EventLoopMonitor in single-process mode (series worker="0");
 *   in multi-core mode each worker's, sent with its stats over IPC (WorkerProcessView.eventLoop),
 *   one series per worker. The primary's own loop is not the data path (Node's
 *   nodejs_eventloop_lag_* describe it).
 * - UDP queues: /proc/net/udp and /proc/net/udp6 (Linux), read when scraped: the sockets bound to
 *   the pcoipUdp listener's address (every worker's, with SO_REUSEPORT) and the sockets connected
 *   to a Connector's pcoip port (one per flow). These are matched by address, so they include any
 *   other process of this host with sockets to the same Connector ports — normally none. (The
 *   experimental rewriteTarget listeners are not included.)
 *
 * It also reads prom-client's process_open_fds asynchronously (so it is registered after
 * collectDefaultMetrics): in single-process mode a scrape runs on the data path's event loop,
 * and that synchronous readdir of /proc/self/fd was the largest part of a scrape with many flows.
 */
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import type { Registry } from 'prom-client';
import type { AdminView } from './view.ts';
import { LOOP_DELAY_BUCKETS_S, processLoopMonitor, type LoopSnapshot } from '../util/event-loop-monitor.ts';
import { canonicalAddress, readUdpSockets, type UdpSocketRow } from '../util/proc-net-udp.ts';

type SocketKind = 'listener' | 'flows';
type Sample = { labels: Record<string, string | number>; value: number; metricName?: string };

/** A metric whose whole text is computed when scraped (prom-client's Registry accepts any object with get()). */
function custom(registry: Registry, name: string, type: 'gauge' | 'counter' | 'histogram', help: string, values: () => Promise<Sample[]> | Sample[]): void {
  const metric = { name, help, type, aggregator: 'sum', get: async () => ({ name, help, type, aggregator: 'sum', values: await values() }) };
  registry.registerMetric(metric as unknown as Parameters<Registry['registerMetric']>[0]);
}

/** The kernel doubles SO_RCVBUF and caps it at 2 × net.core.rmem_max: the bytes a queue may hold. */
function queueLimitBytes(asked: number): number {
  let max = Infinity;
  try {
    max = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));
  } catch {
    // not Linux: report what was asked for
  }
  return 2 * Math.min(asked, max);
}

/**
 * prom-client's process_open_fds lists /proc/self/fd synchronously at each scrape (4.5 ms with
 * 3000 UDP flows, best of 10): read it asynchronously instead (same name, same meaning).
 */
function openFdsOffTheLoop(registry: Registry): void {
  if (!registry.getSingleMetric('process_open_fds')) return; // not Linux
  registry.removeSingleMetric('process_open_fds');
  custom(registry, 'process_open_fds', 'gauge', 'Number of open file descriptors.', async () => {
    const fds = await readdir('/proc/self/fd').catch(() => undefined);
    // Minus the descriptor readdir itself held open.
    return fds ? [{ labels: {}, value: fds.length - 1 }] : [];
  });
}

export function registerRuntimeMetrics(registry: Registry, app: AdminView): void {
  openFdsOffTheLoop(registry);
  const workers = app.workerProcesses?.bind(app);
  // Single-process mode: this process is the data plane; start measuring now, not at the first scrape.
  if (!workers) processLoopMonitor();
  const loops = (): Array<[string, LoopSnapshot]> => {
    if (!workers) return [['0', processLoopMonitor().snapshot()]];
    return workers().flatMap((w): Array<[string, LoopSnapshot]> => (w.up && w.eventLoop ? [[String(w.index), w.eventLoop]] : []));
  };
  // Several loop metrics are read per scrape: take one snapshot per scrape, not one per metric.
  let cached: { at: number; value: Array<[string, LoopSnapshot]> } | undefined;
  const loopsNow = () => {
    const now = Date.now();
    if (!cached || now - cached.at > 100) cached = { at: now, value: loops() };
    return cached.value;
  };

  custom(
    registry,
    'pcoip_lb_event_loop_delay_seconds',
    'histogram',
    'How late each data-plane event loop ran a 10 ms timer, by worker. Every datagram arriving during such a stall waits that long in a socket queue: a p99 above a few ms (GC pauses, CPU starvation, synchronous work) is jitter PCoIP sees',
    () =>
      loopsNow().flatMap(([worker, s]) => {
        let cumulative = 0;
        const buckets = [...LOOP_DELAY_BUCKETS_S, Infinity].map((le, i) => {
          cumulative += s.buckets[i] ?? 0;
          return { labels: { worker, le: le === Infinity ? '+Inf' : String(le) }, value: cumulative, metricName: 'pcoip_lb_event_loop_delay_seconds_bucket' };
        });
        return [
          ...buckets,
          { labels: { worker }, value: s.sumSeconds, metricName: 'pcoip_lb_event_loop_delay_seconds_sum' },
          { labels: { worker }, value: s.count, metricName: 'pcoip_lb_event_loop_delay_seconds_count' },
        ];
      }),
  );
  custom(
    registry,
    'pcoip_lb_event_loop_delay_p99_seconds',
    'gauge',
    'p99 of the event-loop delay over the last ~10 s, by worker (see pcoip_lb_event_loop_delay_seconds); above ~5 ms the proxy adds noticeable jitter',
    () => loopsNow().map(([worker, s]) => ({ labels: { worker }, value: s.p99Seconds })),
  );
  custom(
    registry,
    'pcoip_lb_event_loop_delay_max_seconds',
    'gauge',
    'Longest event-loop stall over the last ~10 s, by worker: datagrams queued behind it were delayed this much (or dropped if the receive queue filled)',
    () => loopsNow().map(([worker, s]) => ({ labels: { worker }, value: s.maxSeconds })),
  );
  // ------------------------------------------------------------ UDP receive queues
  /** Drops of sockets that closed since, so the counter never goes down when a flow ends. */
  const retiredDrops: Record<SocketKind, number> = { listener: 0, flows: 0 };
  const lastDrops = new Map<number, { kind: SocketKind; drops: number }>();
  let scan: { at: number; rows: Promise<Array<{ kind: SocketKind; row: UdpSocketRow }>> } | undefined;

  const listenerEndpoints = (): Array<{ address: string; port: number }> => {
    const udp = app.currentConfig.listeners.pcoipUdp;
    const out: Array<{ address: string; port: number }> = [];
    const port = app.listenerAddresses.pcoipUdp?.port ?? udp?.bind.port;
    if (udp && port) out.push({ address: canonicalAddress(udp.bind.host), port });
    return out;
  };
  const connectorEndpoints = async (): Promise<Array<{ address: string; port: number }>> => {
    const out: Array<{ address: string; port: number }> = [];
    for (const c of app.pool.all()) {
      if (isIP(c.address)) out.push({ address: canonicalAddress(c.address), port: c.ports.pcoip });
      else {
        const found = await lookup(c.address, { all: true }).catch(() => []);
        for (const a of found) out.push({ address: canonicalAddress(a.address), port: c.ports.pcoip });
      }
    }
    return out;
  };
  const same = (e: { address: string; port: number }, r: { address: string; port: number }) => e.port === r.port && e.address === r.address;

  const classify = async (): Promise<Array<{ kind: SocketKind; row: UdpSocketRow }>> => {
    const listeners = listenerEndpoints();
    const connectors = await connectorEndpoints();
    const ports = new Set(listeners.map((l) => l.port));
    const remotePorts = new Set(connectors.map((c) => c.port));
    const rows = await readUdpSockets((localPort, remotePort) => (remotePort === 0 && ports.has(localPort)) || remotePorts.has(remotePort));
    const out: Array<{ kind: SocketKind; row: UdpSocketRow }> = [];
    for (const row of rows) {
      if (row.remote.port === 0 && listeners.some((l) => same(l, row.local))) out.push({ kind: 'listener', row });
      else if (connectors.some((c) => same(c, row.remote))) out.push({ kind: 'flows', row });
    }
    // Keep the drops counter monotonic across sockets that come and go.
    const alive = new Set(out.map((o) => o.row.inode));
    for (const [inode, last] of lastDrops) {
      if (alive.has(inode)) continue;
      retiredDrops[last.kind] += last.drops;
      lastDrops.delete(inode);
    }
    for (const { kind, row } of out) lastDrops.set(row.inode, { kind, drops: row.drops });
    return out;
  };
  /** One scan of /proc per scrape, shared by the UDP metrics below. */
  const sockets = () => {
    const now = Date.now();
    if (!scan || now - scan.at > 100) scan = { at: now, rows: classify() };
    return scan.rows;
  };
  const perKind = async (value: (rows: UdpSocketRow[]) => number): Promise<Sample[]> => {
    const rows = await sockets();
    return (['listener', 'flows'] as const).map((kind) => ({ labels: { socket: kind }, value: value(rows.filter((r) => r.kind === kind).map((r) => r.row)) }));
  };

  custom(
    registry,
    'pcoip_lb_udp_receive_queue_bytes',
    'gauge',
    'Bytes waiting in UDP receive queues (kernel accounting, ~2 KB per 1200-byte datagram), summed: socket="listener" is client to Connector (the pcoipUdp listener of every worker), "flows" Connector to client (one socket per flow). Above zero for more than a moment, the proxy is behind: each queued byte is delay',
    () => perKind((rows) => rows.reduce((n, r) => n + r.rxQueue, 0)),
  );
  custom(
    registry,
    'pcoip_lb_udp_receive_queue_max_bytes',
    'gauge',
    'The deepest single UDP receive queue of each kind (see pcoip_lb_udp_receive_queue_bytes); near pcoip_lb_udp_receive_queue_limit_bytes the kernel is about to drop',
    () => perKind((rows) => rows.reduce((n, r) => Math.max(n, r.rxQueue), 0)),
  );
  custom(
    registry,
    'pcoip_lb_udp_receive_queue_limit_bytes',
    'gauge',
    'How many bytes one receive queue may hold (2 x listeners.pcoipUdp.recvBufferSize, capped by net.core.rmem_max). Divided by the packet rate it is the longest delay a queue can add before it drops',
    () => {
      const asked = app.currentConfig.listeners.pcoipUdp?.recvBufferSize;
      return asked === undefined ? [] : (['listener', 'flows'] as const).map((kind) => ({ labels: { socket: kind }, value: queueLimitBytes(asked) }));
    },
  );
  custom(
    registry,
    'pcoip_lb_udp_receive_drops_total',
    'counter',
    'Datagrams the kernel dropped because a pcoip-lb UDP receive queue was full (the proxy fell behind for longer than the queue holds). Any increase is media loss the proxy caused',
    async () => {
      const rows = await sockets();
      return (['listener', 'flows'] as const).map((kind) => ({
        labels: { socket: kind },
        value: retiredDrops[kind] + rows.filter((r) => r.kind === kind).reduce((n, r) => n + r.row.drops, 0),
      }));
    },
  );
  custom(registry, 'pcoip_lb_udp_sockets', 'gauge', 'UDP sockets the queue metrics above were read from (Linux /proc/net/udp; 0 elsewhere)', () =>
    perKind((rows) => rows.length),
  );
}
