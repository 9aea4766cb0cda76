import { fork, type ChildProcess } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { App, type ListenerAddresses } from '../app.ts';
import type { Config } from '../config/schema.ts';
import type { ConfigDiff } from '../config/diff.ts';
import { ErrorCodes, PlbError, type ErrorCode } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { FlowStatsSnapshot } from '../proxy/flow-stats.ts';
import type { ConnectorHealthState, Flows, FromWorker, ToWorker } from './protocol.ts';
import { workerRuntime } from '../admin/runtime-metrics.ts';

/** The compiled build runs worker-main.js, the sources worker-main.ts (Node runs TypeScript). */
const WORKER_ENTRY = new URL(`./worker-main${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url);
const START_TIMEOUT_MS = 15_000;
/** A worker that crashes is restarted; more than this many restarts a minute and the primary gives up. */
const MAX_RESTARTS_PER_MINUTE = 5;

interface WorkerHandle {
  index: number;
  child: ChildProcess;
  stats: { stats: FlowStatsSnapshot; flows: Flows; tracked: Flows } | undefined;
  exited: Promise<number | null>;
}

/**
 * The multi-core primary (docs/multicore.md): an App in 'control' role (health checks, admin
 * server, the authoritative affinity table) plus N worker processes that own the data
 * listeners, all bound to the same ports with SO_REUSEPORT. The primary answers the workers'
 * affinity look-ups, relays pins between them, mirrors pool changes to them, and sums their
 * counters for /status and /metrics.
 */
export class Supervisor {
  readonly app: App;
  private readonly logger: Logger;
  private config: Config;
  private readonly count: number;
  private readonly workers = new Map<number, WorkerHandle>();
  private bindPorts: Partial<Record<keyof ListenerAddresses, number>> | undefined;
  private stopping = false;
  /** Set once every worker listened: from then on a worker that dies is restarted. */
  private started = false;
  private restarts: number[] = [];
  private readonly onFatal: (err: Error) => void;

  constructor(config: Config, logger: Logger, workers: number, onFatal: (err: Error) => void) {
    this.config = config;
    this.logger = logger;
    this.count = workers;
    this.onFatal = onFatal;
    this.app = new App(config, logger, { role: 'control' });
    workerRuntime(this.app); // /metrics: the event-loop series are the workers', not this process's
    this.app.pool.onChange((change) => this.broadcast({ type: 'pool', connectors: [this.poolState(change.id)].filter((c) => c !== undefined) }));
  }

  get currentConfig(): Config {
    return this.app.currentConfig;
  }

  get stats() {
    return this.app.stats;
  }

  activeFlows(): Flows {
    return this.app.activeFlows();
  }

  /** Starts the control App, then worker 0 (which resolves any port 0), then the others on its ports. */
  async start(): Promise<ListenerAddresses> {
    await this.app.start();
    let addresses: ListenerAddresses;
    try {
      addresses = await this.spawn(0);
      this.bindPorts = Object.fromEntries(Object.entries(addresses).map(([name, a]) => [name, (a as AddressInfo).port]));
      workerRuntime(this.app).udpPort = addresses.pcoipUdp?.port;
      await Promise.all(Array.from({ length: this.count - 1 }, (_, i) => this.spawn(i + 1)));
    } catch (err) {
      await this.stop(0);
      throw err;
    }
    this.started = true;
    this.app.logStartup(addresses, { workers: this.count, pids: [...this.workers.values()].map((w) => w.child.pid) });
    return addresses;
  }

  /** Reload: the primary applies the config (and can reject it), then every worker gets the result. */
  reload(next: Config): { diff: ConfigDiff; pinsDropped: number } {
    const result = this.app.reload(next);
    this.config = this.app.currentConfig;
    this.broadcast({ type: 'reload', config: this.config });
    this.broadcast({ type: 'pool', connectors: this.app.pool.all().map((c) => this.poolState(c.id)!) });
    return result;
  }

  /** Stops the primary's health checks and admin server, and every worker gracefully (each with `graceMs`). */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    const handles = [...this.workers.values()];
    for (const w of handles) this.sendTo(w, { type: 'stop', graceMs });
    await this.app.stop(0);
    const deadline = setTimeout(() => {
      for (const w of handles) if (w.child.exitCode === null) w.child.kill('SIGKILL');
    }, graceMs + 5000);
    await Promise.all(handles.map((w) => w.exited));
    clearTimeout(deadline);
  }

  private spawn(index: number): Promise<ListenerAddresses> {
    const child = fork(WORKER_ENTRY, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const handle: WorkerHandle = { index, child, stats: undefined, exited };
    this.workers.set(index, handle);
    const listening = new Promise<ListenerAddresses>((resolve, reject) => {
      const timer = setTimeout(() => reject(new PlbError(ErrorCodes.WORKER, `worker ${index} did not start within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
      child.on('message', (raw) => {
        const msg = raw as FromWorker;
        if (msg.type === 'listening') {
          clearTimeout(timer);
          resolve(msg.addresses as ListenerAddresses);
        } else if (msg.type === 'failed') {
          clearTimeout(timer);
          const code = (Object.values(ErrorCodes) as string[]).includes(msg.code ?? '') ? (msg.code as ErrorCode) : ErrorCodes.WORKER;
          reject(new PlbError(code, msg.message, [`(reported by worker process ${index})`]));
        } else this.onMessage(handle, msg);
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new PlbError(ErrorCodes.WORKER, `worker ${index} exited (${code}) before listening`));
        this.onExit(handle, code);
      });
    });
    this.sendTo(handle, { type: 'init', index, config: this.config, bindPorts: index === 0 ? undefined : this.bindPorts });
    return listening;
  }

  private onMessage(w: WorkerHandle, msg: FromWorker): void {
    const now = Date.now();
    switch (msg.type) {
      case 'lookup': {
        const entry = this.app.affinity.get(msg.key, now);
        this.sendTo(w, { type: 'lookup-result', id: msg.id, pin: entry ? { key: msg.key, connectorId: entry.connectorId, reason: entry.reason } : undefined });
        break;
      }
      case 'pin':
        this.app.affinity.pin(msg.pin.key, msg.pin.connectorId, now, msg.pin.reason);
        for (const other of this.workers.values()) if (other !== w) this.sendTo(other, { type: 'pin', pin: msg.pin });
        break;
      case 'flows':
        for (const [key, delta] of msg.deltas) {
          for (let i = 0; i < Math.abs(delta); i++) {
            if (delta > 0) this.app.affinity.flowOpened(key, now);
            else this.app.affinity.flowClosed(key, now);
          }
        }
        break;
      case 'connect-failure':
        this.app.health.reportConnectFailure(msg.connectorId);
        break;
      case 'stats': {
        w.stats = { stats: msg.stats, flows: msg.flows, tracked: msg.tracked };
        if (msg.loop) workerRuntime(this.app).loops.set(w.index, msg.loop);
        this.aggregate();
        break;
      }
    }
  }

  /** The workers' counters, summed, become the primary's (what /status and /metrics read). */
  private aggregate(): void {
    const views = [...this.workers.values()].map((w) => w.stats).filter((s) => s !== undefined);
    const sum = (pick: (v: (typeof views)[number]) => Flows): Flows =>
      views.reduce((acc, v) => ({ broker: acc.broker + pick(v).broker, pcoipTcp: acc.pcoipTcp + pick(v).pcoipTcp, pcoipUdp: acc.pcoipUdp + pick(v).pcoipUdp }), {
        broker: 0,
        pcoipTcp: 0,
        pcoipUdp: 0,
      });
    this.app.stats.replaceWithSum(views.map((v) => v.stats));
    this.app.setWorkerView(sum((v) => v.flows), sum((v) => v.tracked));
  }

  private onExit(w: WorkerHandle, code: number | null): void {
    if (this.workers.get(w.index) === w) this.workers.delete(w.index);
    workerRuntime(this.app).loops.delete(w.index);
    if (this.stopping || !this.started) return;
    // Its flows are gone with it; its counters leave the sums until the replacement reports.
    this.aggregate();
    const now = Date.now();
    this.restarts = this.restarts.filter((t) => now - t < 60_000);
    if (this.restarts.length >= MAX_RESTARTS_PER_MINUTE) {
      this.onFatal(new PlbError(ErrorCodes.WORKER, `worker ${w.index} exited (${code}); ${MAX_RESTARTS_PER_MINUTE} restarts within a minute: giving up`));
      return;
    }
    this.restarts.push(now);
    this.logger.error({ worker: w.index, exitCode: code, code: ErrorCodes.WORKER }, `worker ${w.index} exited unexpectedly (${code}); restarting it`);
    this.spawn(w.index).then(
      () => {
        this.logger.info({ worker: w.index }, `worker ${w.index} restarted`);
        // Bring it up to date with the pool as the primary sees it now.
        this.sendTo(this.workers.get(w.index)!, { type: 'pool', connectors: this.app.pool.all().map((c) => this.poolState(c.id)!) });
      },
      (err: unknown) => this.logger.error({ err, worker: w.index }, `worker ${w.index} could not be restarted`),
    );
  }

  private poolState(id: string): ConnectorHealthState | undefined {
    const c = this.app.pool.get(id);
    return c ? { id, health: c.health, healthReason: c.healthReason, state: c.state } : undefined;
  }

  private broadcast(msg: ToWorker): void {
    for (const w of this.workers.values()) this.sendTo(w, msg);
  }

  private sendTo(w: WorkerHandle, msg: ToWorker): void {
    if (w.child.connected) w.child.send(msg);
  }
}
