import type { AddressInfo } from 'node:net';
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { createLogger, type Logger } from '../logger.ts';
import type { Config } from '../config/schema.ts';
import { applyReload } from '../apply-reload.ts';
import { ProcessState } from '../state/process-state.ts';
import { StateSync } from '../state/sync.ts';
import { DataPlane } from '../data-plane.ts';
import { IpcReplica } from './ipc-replica.ts';
import type { ConnectorHealthState, FromWorker, ToWorker, WorkerProcessSample } from './protocol.ts';
import { OpenFdSampler } from '../util/open-fds.ts';
import { readFdLimits } from '../control/fd-limit.ts';
import { processLoopMonitor } from '../util/event-loop-monitor.ts';

/** How often lease deltas go to the primary (its TTL accounting), and counters. */
const LEASE_FLUSH_MS = 100;
const STATS_EVERY_MS = 1000;

/**
 * A multi-core worker process: a data plane (the listeners, SO_REUSEPORT) over state owners
 * that mirror the primary's: the pool (health and operator state, pushed by the primary), and
 * pins and learned sessions (a StateSync whose replica is the primary, over IPC). Signals are
 * ignored: the primary coordinates shutdown and reload (a terminal's Ctrl-C reaches the whole
 * process group).
 */
class Worker {
  private readonly logger: Logger;
  private config: Config;
  private readonly state: ProcessState;
  private readonly replica: IpcReplica;
  private readonly sync: StateSync;
  private readonly data: DataPlane;
  private readonly send: (msg: FromWorker) => void;
  private statsTimer: NodeJS.Timeout | undefined;
  private lastElu: EventLoopUtilization = performance.eventLoopUtilization();
  /** The data path's descriptors (the workers hold them, not the primary): for fd-usage alerts. */
  private readonly fds = new OpenFdSampler();
  /** The soft descriptor limit, inherited from the primary and fixed for the process: read once, not per report. */
  private readonly maxFds = maxFdsOf(readFdLimits()?.soft);
  private stopping = false;
  private readonly index: number;

  constructor(msg: Extract<ToWorker, { type: 'init' }>, send: (msg: FromWorker) => void) {
    this.config = msg.config;
    this.index = msg.index;
    this.send = send;
    this.logger = createLogger(msg.config.logging.level).child({ worker: msg.index });
    this.state = new ProcessState(msg.config);
    this.applyPool(msg.pool);
    this.replica = new IpcReplica(send, this.logger);
    this.sync = new StateSync(this.state, this.replica, this.logger, { leaseFlushMs: LEASE_FLUSH_MS, operatorState: false });
    // The snapshot first (applied as remote: nothing to publish back), then follow.
    for (const change of msg.state) this.sync.apply(change);
    this.data = new DataPlane(msg.config, this.state, this.logger, {
      shared: { ports: msg.bindPorts },
      beforeDecide: this.sync.beforeDecide,
      beforeSessionRoute: (q) => this.sync.beforeSessionRoute(q),
      onConnectFailure: (connectorId) => send({ type: 'connect-failure', connectorId }),
    });
  }

  async start(): Promise<void> {
    processLoopMonitor(); // measure the event loop from the start; snapshots go with the stats
    this.sync.start();
    const addresses = await this.data.start();
    this.state.startSweeps();
    this.send({ type: 'listening', addresses: addresses as Record<string, AddressInfo> });
    this.statsTimer = setInterval(() => this.send(this.statsMessage()), STATS_EVERY_MS);
    this.statsTimer.unref();
  }

  handle(msg: ToWorker): void {
    switch (msg.type) {
      case 'lookup-result':
        this.replica.answer(msg.id, msg.change);
        break;
      case 'remote':
        this.replica.deliver(msg.change);
        break;
      case 'pool':
        this.applyPool(msg.connectors);
        break;
      case 'reload':
        this.reload(msg.config);
        break;
      case 'stop':
        void this.stop(msg.graceMs);
        break;
      case 'sessions':
        this.send({ type: 'sessions', id: msg.id, fragments: this.state.registry.fragments(Date.now(), this.index) });
        break;
    }
  }

  /** The primary applied (and may have rejected) the file; this applies what it sent. */
  private reload(next: Config): void {
    try {
      this.config = applyReload(this.config, next, { logger: this.logger, state: this.state, data: this.data, flows: () => this.data.activeFlows() }).running;
    } catch (err) {
      this.logger.error({ err }, 'worker could not apply the reloaded config');
    }
  }

  private applyPool(connectors: ConnectorHealthState[]): void {
    for (const c of connectors) {
      this.state.pool.setState(c.id, c.state, 'remote');
      this.state.pool.setHealth(c.id, c.health, c.healthReason);
    }
  }

  async stop(graceMs: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.statsTimer) clearInterval(this.statsTimer);
    await this.data.stop(graceMs);
    this.state.stopSweeps();
    // Flows closed at shutdown give their leases back before the worker goes.
    await this.sync.stop();
    await this.replica.close();
    // IPC sends and pino writes are asynchronous: exit only once the last stats reached the
    // primary and the last log lines (the flows closed at shutdown) are written.
    const exit = () => this.logger.flush(() => process.exit(0));
    if (process.connected) process.send!(this.statsMessage(), exit);
    else exit();
  }

  private statsMessage(): FromWorker {
    return {
      type: 'stats',
      stats: this.state.stats.snapshot(),
      flows: this.data.activeFlows(),
      tracked: this.data.trackedClients(),
      decisions: [...this.state.placer.decisionCounts],
      process: this.processSample(),
      media: this.state.registry.mediaTotals(),
    };
  }

  private processSample(): WorkerProcessSample {
    const cpu = process.cpuUsage();
    const mem = process.memoryUsage();
    const elu = performance.eventLoopUtilization(this.lastElu);
    this.lastElu = performance.eventLoopUtilization();
    return {
      cpuUserSeconds: cpu.user / 1e6,
      cpuSystemSeconds: cpu.system / 1e6,
      residentBytes: mem.rss,
      heapUsedBytes: mem.heapUsed,
      eventLoopUtilization: elu.utilization,
      openFds: this.fds.sample(),
      maxFds: this.maxFds,
      eventLoop: processLoopMonitor().snapshot(),
    };
  }
}

function maxFdsOf(soft: number | undefined): number {
  return soft === undefined || !Number.isFinite(soft) ? -1 : soft;
}

export function runWorker(): void {
  if (!process.send) throw new Error('the worker runs as a child process with an IPC channel');
  const send = (msg: FromWorker) => {
    if (process.connected) process.send!(msg);
  };
  let worker: Worker | undefined;
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => undefined);
  process.on('message', (raw) => {
    const msg = raw as ToWorker;
    if (msg.type !== 'init') return worker?.handle(msg);
    if (worker) return;
    const w = new Worker(msg, send);
    worker = w;
    w.start().catch((err: unknown) => {
      const e = err as { message?: string; code?: string };
      const failed: FromWorker = { type: 'failed', message: e.message ?? String(err), code: e.code };
      process.send!(failed, () => process.exit(1));
    });
  });
  // The primary is gone (crashed or killed): nobody keeps the state in step any more; stop now.
  process.on('disconnect', () => void (worker ? worker.stop(0) : process.exit(0)));
}
