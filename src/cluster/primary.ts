import { fork, type ChildProcess } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import type { Config } from '../config/schema.ts';
import type { ConfigDiff } from '../config/diff.ts';
import { applyReload } from '../apply-reload.ts';
import { ErrorCodes, PlbError, type ErrorCode } from '../errors.ts';
import { RateLimitedLog, type Logger } from '../logger.ts';
import type { AffinityView } from '../balance/placer.ts';
import type { SessionsDescription } from '../balance/sessions.ts';
import type { Pool } from '../pool/pool.ts';
import type { FlowStats } from '../proxy/flow-stats.ts';
import type { ListenerAddresses } from '../proxy/listen.ts';
import type { HealthMonitor } from '../health/monitor.ts';
import type { AdminView, SessionViews, WorkerProcessView } from '../admin/view.ts';
import { mergeFragments, type SessionFragment } from '../sessions/summary.ts';
import type { ReloadOutcome } from '../control/reload-outcome.ts';
import { ReloadRequests } from '../control/reload-requests.ts';
import type { LookupQuery, StateChange } from '../state/changes.ts';
import type { StateReplica } from '../state/replica.ts';
import { ProcessState } from '../state/process-state.ts';
import { StateSync, localRecord } from '../state/sync.ts';
import { ClusterMember } from '../cluster-store/member.ts';
import { ControlPlane } from '../control-plane.ts';
import { logStartup } from '../app.ts';
import { LeaseLedger } from './lease-ledger.ts';
import { WorkerTotals } from './worker-totals.ts';
import { assertListenersFree } from './reuse-port-guard.ts';
import type { ConnectorHealthState, Flows, FromWorker, ToWorker, WorkerProcessSample } from './protocol.ts';

/** The compiled build runs worker-main.js, the sources worker-main.ts (Node runs TypeScript). */
const WORKER_ENTRY = new URL(`./worker-main${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url);
const START_TIMEOUT_MS = 15_000;
/** A worker that crashes is restarted; more than this many restarts a minute and the primary gives up. */
const MAX_RESTARTS_PER_MINUTE = 5;
/** How often a clustered primary sends its instance's lease deltas to the store. */
const STORE_LEASE_FLUSH_MS = 1000;
/** GET /sessions waits this long for the workers' fragments; a worker that has not answered by then is left out. */
const SESSION_QUERY_TIMEOUT_MS = 1000;

interface WorkerHandle {
  index: number;
  child: ChildProcess;
  listening: boolean;
  process: WorkerProcessSample | undefined;
  exited: Promise<number | null>;
}

export interface SupervisorOptions {
  /** Other instances (the cluster store): the primary is the instance's one link to it. */
  replica?: StateReplica;
}

/**
 * The multi-core primary (docs/multicore.md, docs/state.md): the instance's state owners (pool,
 * pins and leases, learned sessions — authoritative), its control plane (health checks, admin
 * server) and N worker processes that own the data listeners, all bound to the same ports with
 * SO_REUSEPORT. Workers start from a full snapshot and follow every change; what they decide
 * comes here and goes to the others; their leases are kept per worker so a dead worker's are
 * given back; their counters are summed monotonically for /status and /metrics.
 */
export class Supervisor implements AdminView {
  readonly startedAt = Date.now();
  private readonly logger: Logger;
  private config: Config;
  private readonly count: number;
  private readonly state: ProcessState;
  private readonly control: ControlPlane;
  private readonly sync: StateSync | undefined;
  /** `cluster:` configured: the instance's link to the cluster store (the primary is its one link). */
  private readonly member: ClusterMember | undefined;
  private readonly workers = new Map<number, WorkerHandle>();
  private readonly restartsByIndex = new Map<number, number>();
  private readonly ledger = new LeaseLedger();
  private readonly totals = new WorkerTotals();
  private readonly decisions = new Map<string, number>();
  /** IPC send failures (EPIPE to a worker that was killed) and forks that could not start: one line a second. */
  private readonly childErrorLog = new RateLimitedLog();
  private workerFlows: { flows: Flows; tracked: Flows } = { flows: { broker: 0, pcoipTcp: 0, pcoipUdp: 0 }, tracked: { broker: 0, pcoipTcp: 0, pcoipUdp: 0 } };
  private bindPorts: Partial<Record<keyof ListenerAddresses, number>> | undefined;
  private addresses: ListenerAddresses = {};
  private stopping = false;
  /** Set once every worker listened: from then on a worker that dies is restarted. */
  private started = false;
  private restarts: number[] = [];
  /** The worker whose change is being applied (not sent back to it). */
  private applyingFrom: number | undefined;
  /** Where reloads come from and what came of them (/metrics). */
  readonly reloadRequests = new ReloadRequests();
  private readonly onFatal: (err: Error) => void;
  /** GET /sessions in flight: the workers' answers by query id. */
  private readonly sessionQueries = new Map<number, { waiting: number; fragments: SessionFragment[]; done: () => void }>();
  private nextSessionQuery = 0;

  constructor(config: Config, logger: Logger, workers: number, onFatal: (err: Error) => void, options: SupervisorOptions = {}) {
    this.config = config;
    this.logger = logger;
    this.count = workers;
    this.onFatal = onFatal;
    this.state = new ProcessState(config);
    this.control = new ControlPlane(config, this.state.pool, logger);
    this.member = config.cluster && !options.replica ? new ClusterMember(config, this.state, this, logger) : undefined;
    const replica = options.replica ?? this.member?.replica;
    this.sync = replica ? new StateSync(this.state, replica, logger, { leaseFlushMs: STORE_LEASE_FLUSH_MS, operatorState: true }) : undefined;
    // Every change of the instance's state reaches every worker — forked before or after it.
    this.state.pool.onChange((change) => this.broadcast({ type: 'pool', connectors: [this.poolState(change.id)].filter((c) => c !== undefined) }));
    this.state.placer.onPinChange((c) => {
      // Pins dropped by a reload are dropped by each worker's own reload.
      if (c.to === undefined || c.reason === 'removed') return;
      this.relay({ kind: 'pin', key: c.key, connectorId: c.to, reason: c.reason, at: c.at });
    });
    this.state.sessions.onLearn((record) => this.relay(record));
  }

  // ---- AdminView -----------------------------------------------------------------------------

  get pool(): Pool {
    return this.state.pool;
  }

  get cluster(): ClusterMember | undefined {
    return this.member;
  }

  /** Placement counts are the workers' (summed); keying and hashing are the instance's. */
  get placer(): AdminView['placer'] {
    const placer = this.state.placer;
    return { keyFor: (a) => placer.keyFor(a), pickNew: (k, avoid) => placer.pickNew(k, avoid), decisionCounts: this.decisions };
  }

  get affinity(): AffinityView {
    return this.state.placer.affinity;
  }

  get stats(): FlowStats {
    return this.state.stats;
  }

  get health(): HealthMonitor {
    return this.control.health;
  }

  get listenerAddresses(): ListenerAddresses {
    return this.addresses;
  }

  get adminAddress(): AddressInfo | undefined {
    return this.control.adminAddress;
  }

  get currentConfig(): Config {
    return this.config;
  }

  describeSessions(now = Date.now()): SessionsDescription {
    return this.state.sessions.describeSessions(now);
  }

  /**
   * Sessions live in the workers that carry their flows: GET /sessions asks every worker for its
   * fragments (bounded wait) and joins the fragments of one session (docs/sessions.md). Media
   * aggregates come with the workers' stats every second.
   */
  get sessionViews(): SessionViews {
    return { fragments: () => this.workerFragments(), mediaTotals: () => this.totals.media() };
  }

  private async workerFragments(): Promise<SessionFragment[]> {
    const targets = [...this.workers.values()].filter((w) => w.listening && w.child.connected);
    if (targets.length === 0) return [];
    const id = ++this.nextSessionQuery;
    const fragments: SessionFragment[] = [];
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, SESSION_QUERY_TIMEOUT_MS);
      this.sessionQueries.set(id, { waiting: targets.length, fragments, done: () => (clearTimeout(timer), resolve()) });
      for (const w of targets) this.sendTo(w, { type: 'sessions', id });
    });
    this.sessionQueries.delete(id);
    return mergeFragments(fragments);
  }

  setReloadSource(source: () => ReloadOutcome): void {
    this.reloadRequests.setSource(source);
  }

  requestReload(): ReloadOutcome | undefined {
    return this.reloadRequests.request();
  }

  workerProcesses(): WorkerProcessView[] {
    return Array.from({ length: this.count }, (_, index) => {
      const w = this.workers.get(index);
      const p = w?.process;
      return {
        index,
        pid: w?.child.pid,
        up: w?.listening === true && w.child.exitCode === null,
        restarts: this.restartsByIndex.get(index) ?? 0,
        cpuUserSeconds: p?.cpuUserSeconds ?? 0,
        cpuSystemSeconds: p?.cpuSystemSeconds ?? 0,
        residentBytes: p?.residentBytes ?? 0,
        heapUsedBytes: p?.heapUsedBytes ?? 0,
        eventLoopUtilization: p?.eventLoopUtilization ?? 0,
        openFds: p?.openFds ?? -1,
        maxFds: p?.maxFds ?? -1,
        eventLoop: p?.eventLoop,
      };
    });
  }

  activeFlows(): Flows {
    return { ...this.workerFlows.flows };
  }

  trackedClients(): Flows {
    return { ...this.workerFlows.tracked };
  }

  // ---- lifecycle -----------------------------------------------------------------------------

  /**
   * Proves the listening addresses are free (no other instance joins our reuse-port group),
   * starts worker 0 (which resolves any port 0), then the others on its ports, then the health
   * checks and the admin server.
   */
  async start(): Promise<ListenerAddresses> {
    this.control.checkAdmin();
    await assertListenersFree(this.config);
    this.sync?.start();
    try {
      // The cluster's operator state applies before the workers get their snapshot.
      await this.member?.start();
      this.addresses = await this.spawn(0);
      this.bindPorts = Object.fromEntries(Object.entries(this.addresses).map(([name, a]) => [name, (a as AddressInfo).port]));
      await Promise.all(Array.from({ length: this.count - 1 }, (_, i) => this.spawn(i + 1)));
      await this.control.start(this);
    } catch (err) {
      await this.stop(0);
      throw err;
    }
    this.state.startSweeps();
    this.started = true;
    logStartup(this.logger, this.config, this.state.pool, this.addresses, this.adminAddress, {
      workers: this.count,
      pids: [...this.workers.values()].map((w) => w.child.pid),
    });
    return this.addresses;
  }

  /** Reload: the primary applies the config (and can reject it), then every worker gets the result. */
  reload(next: Config): { diff: ConfigDiff; pinsDropped: number } {
    const { running, diff, pinsDropped } = applyReload(this.config, next, { logger: this.logger, state: this.state, control: this.control, flows: () => this.activeFlows() });
    this.config = running;
    this.broadcast({ type: 'reload', config: this.config });
    this.broadcast({ type: 'pool', connectors: this.fullPool() });
    return { diff, pinsDropped };
  }

  /** Stops every worker gracefully (each with `graceMs`), then the health checks and the admin server. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    const handles = [...this.workers.values()];
    for (const w of handles) this.sendTo(w, { type: 'stop', graceMs });
    this.state.stopSweeps();
    await this.control.stop();
    const deadline = setTimeout(() => {
      for (const w of handles) if (w.child.exitCode === null) w.child.kill('SIGKILL');
    }, graceMs + 5000);
    await Promise.all(handles.map((w) => w.exited));
    clearTimeout(deadline);
    await this.sync?.stop();
    await this.member?.close();
  }

  // ---- workers -------------------------------------------------------------------------------

  private spawn(index: number): Promise<ListenerAddresses> {
    const child = fork(WORKER_ENTRY, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' });
    const exited = new Promise<number | null>((resolve) => {
      child.once('exit', (code) => resolve(code));
      // A fork that could not start (EAGAIN, EMFILE) emits 'error' and never 'exit'.
      child.on('error', (err) => {
        if (child.pid === undefined) resolve(null);
        this.childErrorLog.maybe(Date.now(), (suppressed) =>
          this.logger.warn({ worker: index, err: err.message, code: ErrorCodes.WORKER, suppressed }, `worker ${index}: ${child.pid === undefined ? 'could not be started' : 'IPC channel failed (it is exiting or gone)'}`),
        );
      });
    });
    const handle: WorkerHandle = { index, child, listening: false, process: undefined, exited };
    this.workers.set(index, handle);
    const listening = new Promise<ListenerAddresses>((resolve, reject) => {
      const timer = setTimeout(() => reject(new PlbError(ErrorCodes.WORKER, `worker ${index} did not start within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
      child.on('message', (raw) => {
        const msg = raw as FromWorker;
        if (msg.type === 'listening') {
          clearTimeout(timer);
          handle.listening = true;
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
    // A full snapshot, whenever the worker is forked: it must not start from the config alone.
    // Every worker, restarted ones too, binds the ports the first one resolved.
    const now = Date.now();
    const snapshot: StateChange[] = [];
    for (const e of this.state.placer.affinity.all()) {
      const live = localRecord(this.state, { kind: 'pin', key: e.clientKey }, now);
      if (live) snapshot.push(live);
    }
    snapshot.push(...this.state.sessions.records(now));
    this.sendTo(handle, { type: 'init', index, config: this.config, bindPorts: this.bindPorts, pool: this.fullPool(), state: snapshot });
    return listening;
  }

  private onMessage(w: WorkerHandle, msg: FromWorker): void {
    switch (msg.type) {
      case 'lookup':
        void this.answer(w, msg.id, msg.query);
        break;
      case 'publish':
        this.applyFromWorker(w, msg.change);
        break;
      case 'leases':
        this.ledger.add(w.index, msg.deltas);
        this.state.placer.applyLeases(msg.deltas, Date.now());
        break;
      case 'connect-failure':
        this.control.health.reportConnectFailure(msg.connectorId);
        break;
      case 'sessions': {
        const query = this.sessionQueries.get(msg.id);
        if (!query) break;
        query.fragments.push(...msg.fragments);
        if (--query.waiting === 0) query.done();
        break;
      }
      case 'stats':
        w.process = msg.process;
        this.totals.report(w.index, msg);
        this.aggregate();
        break;
    }
  }

  /** A worker's look-up: the instance's record, else (clustered) the store's, bounded there. */
  private async answer(w: WorkerHandle, id: number, query: LookupQuery): Promise<void> {
    const change = this.sync ? await this.sync.resolve(query) : localRecord(this.state, query, Date.now());
    this.sendTo(w, { type: 'lookup-result', id, change });
  }

  /** A worker decided something: the instance owns it now (published to the store), and the other workers hear of it. */
  private applyFromWorker(w: WorkerHandle, change: StateChange): void {
    const now = Date.now();
    if ('connectorId' in change && !this.state.pool.get(change.connectorId)) return;
    this.applyingFrom = w.index;
    try {
      if (change.kind === 'pin') this.state.placer.applyPin(change.key, change.connectorId, change.reason, change.at, 'local');
      else if (change.kind === 'cookie' || change.kind === 'log-id' || change.kind === 'allocation' || change.kind === 'allocation-claimed') {
        this.state.sessions.apply(change, now, 'local');
      }
    } finally {
      this.applyingFrom = undefined;
    }
  }

  /** Sends a change to every worker but the one it came from. */
  private relay(change: StateChange): void {
    for (const w of this.workers.values()) if (w.index !== this.applyingFrom) this.sendTo(w, { type: 'remote', change });
  }

  private aggregate(): void {
    this.workerFlows = this.totals.writeInto(this.state.stats, this.decisions);
  }

  private onExit(w: WorkerHandle, code: number | null): void {
    if (this.workers.get(w.index) === w) this.workers.delete(w.index);
    // Whatever it held, it holds no more: its flows are gone, its counters stay in the totals.
    this.state.placer.applyLeases(this.ledger.release(w.index), Date.now());
    this.totals.retire(w.index);
    this.aggregate();
    if (this.stopping || !this.started) return;
    const now = Date.now();
    this.restarts = this.restarts.filter((t) => now - t < 60_000);
    if (this.restarts.length >= MAX_RESTARTS_PER_MINUTE) {
      this.onFatal(new PlbError(ErrorCodes.WORKER, `worker ${w.index} exited (${code}); ${MAX_RESTARTS_PER_MINUTE} restarts within a minute: giving up`));
      return;
    }
    this.restarts.push(now);
    this.restartsByIndex.set(w.index, (this.restartsByIndex.get(w.index) ?? 0) + 1);
    this.logger.error({ worker: w.index, exitCode: code, code: ErrorCodes.WORKER }, `worker ${w.index} exited unexpectedly (${code}); restarting it`);
    this.spawn(w.index).then(
      () => this.logger.info({ worker: w.index }, `worker ${w.index} restarted`),
      (err: unknown) => this.logger.error({ err, worker: w.index }, `worker ${w.index} could not be restarted`),
    );
  }

  private fullPool(): ConnectorHealthState[] {
    return this.state.pool.all().map((c) => this.poolState(c.id)!);
  }

  private poolState(id: string): ConnectorHealthState | undefined {
    const c = this.state.pool.get(id);
    return c ? { id, health: c.health, healthReason: c.healthReason, state: c.state } : undefined;
  }

  private broadcast(msg: ToWorker): void {
    for (const w of this.workers.values()) this.sendTo(w, msg);
  }

  private sendTo(w: WorkerHandle, msg: ToWorker): void {
    if (w.child.connected) w.child.send(msg);
  }
}
