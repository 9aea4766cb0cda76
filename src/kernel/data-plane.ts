import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import type { Logger } from '../logger.ts';
import { RateLimitedLog } from '../logger.ts';
import { ErrorCodes, PlbError } from '../errors.ts';
import type { ConnectorView, PoolChange } from '../pool/pool.ts';
import type { PinChange, Placer } from '../balance/placer.ts';
import type { FlowStats } from '../proxy/flow-stats.ts';
import { ElementSync } from './element-sync.ts';
import { CounterDeltas, parseCounters, type TrafficDelta } from './counters.ts';
import { ownerOf, planCounters, refusalCounters, renderDeleteTable, renderReplaceElements, renderTable, type CounterRef, type TableOwner } from './nft-script.ts';
import { desiredElements, elementKey, forwardedListeners, kernelTargets, type BoundListener, type ElementChanges, type Family, type KernelPlan, type KernelTarget, type MapElement } from './plan.ts';
import { checkConntrack, checkHost, DEFAULT_TOOLS, kernelError, type KernelNeeds, type KernelTools } from './preconditions.ts';
import { firstLines, runTool } from './tools.ts';
import { Conntrack, type ConntrackFilter } from './conntrack.ts';
import { KernelFlowTracker } from './flow-events.ts';

/**
 * The kernel data plane (docs/kernel.md): one nftables table this process owns. pcoip-lb keeps
 * deciding (placement, affinity, drain, health); the table's client maps are a replica of the
 * placer's pins, and the kernel forwards the packets of pinned clients (DNAT to the Connector,
 * SNAT towards it, conntrack for the replies).
 *
 * - A client with no element reaches pcoip-lb's own listener and is placed there as in user
 *   space. Its element goes into the next batch; once that batch is in, the conntrack entries of
 *   its UDP flows to pcoip-lb are deleted (NAT is decided on a connection's first packet, so
 *   without that its datagrams would keep coming to user space), so its next datagram takes the
 *   kernel path; the user-space flow relays what was in flight and closes once quiet.
 * - A pin change (a re-pin after maint/down, a learned session) changes the element; once it is
 *   in, the client's UDP entries towards the old Connector are deleted (its next datagram goes
 *   to the new one), as issue 9's user-space flows do. A Connector going down with
 *   health.closeFlowsOnDown loses every forwarded flow.
 * - Forwarded flows are followed through conntrack events (flow-events.ts): each holds a lease
 *   on its client's pin, and its end is one "flow closed" line.
 *
 * Lifecycle: `start` checks the host, then writes the table whole (replacing one left by a
 * killed run); `reconfigure` rewrites it whole in one transaction (reload); `drain` stops new
 * kernel flows and waits for the open ones (SIGTERM grace); `stop` deletes the table and the
 * flows it forwarded, leaving nothing behind.
 */

export interface KernelDataPlaneOptions {
  table: string;
  snat: { ipv4?: string | undefined; ipv6?: string | undefined };
  prefixes: { ipv4: number; ipv6: number };
  /** The kernel-forwarded listeners where they are bound, with their limits. */
  listeners: BoundListener[];
  connectors: () => readonly ConnectorView[];
  connector: (id: string) => ConnectorView | undefined;
  placer: Placer;
  stats: FlowStats;
  /** Flows conntrack must hold (maxFlows + maxConnections of the kernel listeners). */
  conntrackFlows: number;
  /** The kernel UDP listener's idleTimeout, compared with conntrack's UDP stream timeout (a warning when they differ). */
  udpIdleTimeoutMs: number | undefined;
  /** health.closeFlowsOnDown, read when a Connector goes down. */
  closeFlowsOnDown: () => boolean;
  /** These clients' UDP packets take the kernel path now: their user-space flows may close once quiet. */
  handOver?: (clientKeys: string[]) => void;
  /** Config keys that asked for the kernel, for error messages. */
  dataPlaneKeys: string[];
  logger: Logger;
  tools?: KernelTools;
  /** Traffic the kernel forwarded since the last poll (added to the listener counters). */
  onTraffic?: (delta: TrafficDelta) => void;
  /** How often the nft counters are read; 0 disables. */
  counterPollMs?: number;
  /** How often the client maps are compared with the pins (expired pins, missed changes); 0 disables. */
  resyncMs?: number;
}

export interface KernelDescription {
  table: string;
  elements: number;
  batches: number;
  batchFailures: number;
  flows: { udp: number; tcp: number };
}

export class KernelDataPlane {
  private plan: KernelPlan;
  /** Looked up per conntrack event and per counter poll: derived once per plan (see derivedOf). */
  private derived: PlanDerived;
  private readonly counterDeltas = new CounterDeltas();
  private readonly sync: ElementSync;
  private readonly options: KernelDataPlaneOptions;
  private readonly tools: KernelTools;
  private readonly conntrack: Conntrack;
  private readonly tracker: KernelFlowTracker;
  /** Conntrack deletions waiting for the next element batch (see ElementSync take/applied). */
  private pendingDeletes: ConntrackFilter[] = [];
  private pollTimer: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  /** After drain(): no elements (no new kernel flows), however the pins change. */
  private accepting = true;
  private stopped = false;
  private readonly refusalLog = new RateLimitedLog();
  /** The refusal counters at the last poll (see countRefusals). */
  private readonly lastRefusals = new Map<string, number>();
  private readonly conntrackErrorLog = new RateLimitedLog(10_000);

  private constructor(options: KernelDataPlaneOptions) {
    this.options = options;
    this.tools = options.tools ?? DEFAULT_TOOLS;
    this.plan = planOf(options);
    this.derived = derivedOf(this.plan);
    this.conntrack = new Conntrack(this.tools.conntrack);
    this.sync = new ElementSync({
      apply: (script) => this.nft(script, 'client map elements'),
      desired: () => this.desired(),
      replaceAll: (elements) => renderReplaceElements(this.plan, elements),
      table: this.plan.table,
      logger: options.logger,
      take: () => this.pendingDeletes.splice(0),
      untake: (items) => this.pendingDeletes.unshift(...(items as ConntrackFilter[])),
      applied: (changes, taken) => this.afterBatch(changes, taken as ConntrackFilter[]),
    });
    this.tracker = new KernelFlowTracker({
      conntrack: this.tools.conntrack,
      placer: options.placer,
      stats: options.stats,
      logger: options.logger,
      listeners: () => this.plan.listeners,
      targets: () => this.derived.targetsByAddress,
    });
  }

  /**
   * Checks the host, writes the table, checks conntrack's limits (conntrack is loaded by then),
   * then follows the placer and the pool. On any problem nothing of ours is left in the kernel
   * and a PlbError lists every problem.
   */
  static async start(options: KernelDataPlaneOptions): Promise<KernelDataPlane> {
    const plane = new KernelDataPlane(options);
    const needs = needsOf(options, plane.plan);
    const host = await checkHost(needs, plane.tools);
    if (host.length > 0) throw kernelError(host);
    const existed = await plane.existingOwner();
    const owner = existed?.owner;
    if (owner && owner.pid !== process.pid && processStartTicks(owner.pid) === owner.startTicks) {
      throw new PlbError(
        ErrorCodes.KERNEL_NFT,
        `kernel.table: the table inet ${plane.plan.table} belongs to pcoip-lb pid ${owner.pid}, which is running: give this instance another kernel.table (or stop that one)`,
      );
    }
    await plane.writeTable();
    const ct = await checkConntrack(needs);
    if (ct.problems.length > 0) {
      await plane.deleteTable().catch(() => undefined);
      throw kernelError(ct.problems);
    }
    if (!ct.accounting) {
      // Per-flow byte counts in conntrack events (flow-end lines) need accounting; it only counts.
      await writeFile('/proc/sys/net/netfilter/nf_conntrack_acct', '1').then(
        () => options.logger.info({ sysctl: 'net.netfilter.nf_conntrack_acct' }, 'kernel data plane: turned on conntrack accounting (per-flow byte counts)'),
        (err: Error) => options.logger.warn({ sysctl: 'net.netfilter.nf_conntrack_acct', err: err.message }, 'kernel data plane: could not turn on conntrack accounting; flow-end lines will have no byte counts'),
      );
    }
    const idleS = options.udpIdleTimeoutMs === undefined ? undefined : Math.round(options.udpIdleTimeoutMs / 1000);
    if (idleS !== undefined && ct.udpStreamTimeoutS !== undefined && ct.udpStreamTimeoutS !== idleS) {
      options.logger.warn(
        { code: 'PLB_W_KERNEL_UDP_TIMEOUT', sysctl: 'net.netfilter.nf_conntrack_udp_timeout_stream', kernelSeconds: ct.udpStreamTimeoutS, idleTimeoutSeconds: idleS },
        `kernel-forwarded UDP flows end after net.netfilter.nf_conntrack_udp_timeout_stream (${ct.udpStreamTimeoutS} s) of silence, not listeners.pcoipUdp.idleTimeout (${idleS} s): set the sysctl to match`,
      );
    }
    await plane.tracker.start();
    options.placer.onPinChange((change) => plane.onPinChange(change));
    options.logger.info(
      {
        table: `inet ${plane.plan.table}`,
        replacedStaleTable: existed !== undefined,
        ...(owner ? { stalePid: owner.pid } : {}),
        listeners: plane.plan.listeners,
        targets: plane.plan.targets.map((t) => t.id),
        snat: plane.plan.snat,
        adoptedFlows: plane.tracker.active(),
      },
      existed !== undefined ? `kernel data plane: replaced the table inet ${plane.plan.table} a previous run left behind` : `kernel data plane: table inet ${plane.plan.table} created`,
    );
    plane.schedulePoll();
    return plane;
  }

  get table(): string {
    return this.plan.table;
  }

  /** What is programmed now (for /status and tests). */
  describe(): KernelDescription {
    return { table: this.plan.table, elements: this.sync.elements.size, batches: this.sync.counts.batches, batchFailures: this.sync.counts.failures, flows: this.tracker.active() };
  }

  /** The elements this process believes the kernel holds. */
  get elements(): ReadonlyMap<string, MapElement> {
    return this.sync.elements;
  }

  /** Brings the client maps up to the placer's pins (batched); resolves once written. */
  syncElements(): Promise<void> {
    return this.sync.request();
  }

  /** The pool changed (health, drain/maint): elements follow at once; closeFlowsOnDown ends that Connector's forwarded flows. */
  onPoolChange(change: PoolChange): void {
    if (change.kind === 'health' && change.to === 'down' && this.options.closeFlowsOnDown()) {
      const target = this.plan.targets.find((t) => t.id === change.id);
      if (target) this.pendingDeletes.push(...this.flowsTo(target));
    }
    void this.sync.request();
  }

  /**
   * Reload: rewrites the whole table (targets, SNAT, limits, counters, every element) in one
   * transaction, so packets see the old table or the new one, never a mix. The counters are read
   * first, so no forwarded byte goes uncounted.
   */
  async reconfigure(changes: { snat?: KernelDataPlaneOptions['snat']; listeners?: BoundListener[] }): Promise<void> {
    const snat = changes.snat ?? this.options.snat;
    const listeners = changes.listeners ?? this.options.listeners;
    await this.pollCounters();
    // The new plan takes over only once nft took its table: if nft refuses it, the kernel keeps
    // the old table, and so does this process (counters and flows stay attributed as the kernel does).
    const plan = planOf({ ...this.options, snat, listeners });
    await this.writeTable(plan);
    this.options.snat = snat;
    this.options.listeners = listeners;
    this.plan = plan;
    this.derived = derivedOf(plan);
    this.options.logger.info(
      { table: `inet ${this.plan.table}`, targets: this.plan.targets.map((t) => t.id), elements: this.sync.elements.size, snat: this.plan.snat },
      `kernel data plane: table inet ${this.plan.table} rewritten (reload)`,
    );
  }

  /**
   * Shutdown, first step: no new kernel flows (every element goes; new packets reach pcoip-lb's
   * listeners, which refuse them while stopping), then wait up to `graceMs` for the forwarded
   * flows to end on their own.
   */
  async drain(graceMs: number): Promise<void> {
    this.accepting = false;
    const deadline = Date.now() + graceMs;
    await this.sync.request();
    while (Date.now() < deadline && this.flowCount() > 0) await new Promise((r) => setTimeout(r, Math.min(100, Math.max(1, deadline - Date.now()))));
  }

  /** Reads the nft counters once and reports what moved since the last reading. */
  async pollCounters(): Promise<void> {
    if (this.stopped) return;
    this.polling ??= (async () => {
      try {
        const r = await runTool(this.tools.nft, ['-j', 'list', 'counters', 'table', 'inet', this.plan.table], { timeoutMs: 10_000 });
        if (r.code !== 0) return;
        const readings = parseCounters(JSON.parse(r.stdout));
        const deltas = this.counterDeltas.next(this.derived.counterRefs, readings);
        if (this.options.onTraffic) for (const d of deltas) this.options.onTraffic(d);
        this.countRefusals(readings);
      } catch {
        // unreadable output: the next poll tries again
      } finally {
        this.polling = undefined;
      }
    })();
    await this.polling;
  }

  /**
   * Deletes the table, then the conntrack entries of the flows it forwarded (their NAT lives in
   * conntrack and would otherwise go on until they idle out): no rule, map, counter or forwarded
   * flow of ours stays in the kernel. Flows still open end here with one line each.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    await this.pollCounters();
    this.stopped = true;
    await this.sync.stop();
    this.tracker.stop('shutdown');
    await this.deleteTable();
    let flowsDeleted = true;
    await this.conntrack.delete(this.plan.targets.flatMap((t) => this.flowsTo(t))).catch((err: Error) => {
      flowsDeleted = false;
      this.options.logger.warn({ code: ErrorCodes.KERNEL_CONNTRACK, err: err.message }, 'kernel data plane: could not delete the forwarded flows; they end when idle');
    });
    this.options.logger.info({ table: `inet ${this.plan.table}`, flowsDeleted }, `kernel data plane: table inet ${this.plan.table} deleted`);
  }

  private flowCount(): number {
    const a = this.tracker.active();
    return a.udp + a.tcp;
  }

  private onPinChange(change: PinChange): void {
    // A re-pin moves the client's UDP flows to the new Connector (TCP connections stay, as in
    // user space). A pin dropped because its Connector left the config moves nothing.
    if (change.from !== undefined && change.to !== undefined && change.from !== change.to) {
      const old = this.plan.targets.find((t) => t.id === change.from);
      const key = elementKey(change.key);
      if (old && key && key.family === old.family) {
        for (const l of this.plan.listeners) {
          if (l.proto !== 'udp' || l.family !== old.family) continue;
          this.pendingDeletes.push({ proto: 'udp', family: l.family, source: change.key, ...(l.address ? { destination: l.address } : {}), destinationPort: l.port, replySource: old.address });
        }
      }
    }
    void this.sync.request();
  }

  /**
   * After a batch is in the kernel: the clients that just got an element switch to the kernel
   * path (their UDP entries to pcoip-lb's own socket are deleted, their user-space flows handed
   * over), and the deletions that waited for this batch run — all in one conntrack process.
   */
  private async afterBatch(changes: ElementChanges, waiting: ConntrackFilter[]): Promise<void> {
    const switched: string[] = [];
    const filters = [...waiting];
    for (const e of changes.adds) {
      const clientKey = clientKeyOf(e);
      switched.push(clientKey);
      for (const l of this.plan.listeners) {
        if (l.proto !== 'udp' || l.family !== e.family) continue;
        // Entries to pcoip-lb's own socket are the ones whose reply comes from the listener address itself (no DNAT).
        // A wildcard listener cannot tell them apart: all of the client's entries to the port go.
        filters.push({ proto: 'udp', family: l.family, source: clientKey, ...(l.address ? { destination: l.address, replySource: l.address } : {}), destinationPort: l.port });
      }
    }
    if (filters.length === 0) return;
    try {
      await this.conntrack.delete(filters);
    } catch (err) {
      this.conntrackErrorLog.maybe(Date.now(), (suppressed) =>
        this.options.logger.warn({ code: ErrorCodes.KERNEL_CONNTRACK, err: (err as Error).message, suppressed }, 'kernel data plane: could not delete conntrack entries; those flows keep their old path until idle'),
      );
      return;
    }
    if (switched.length > 0) this.options.handOver?.(switched);
  }

  /** Filters matching every conntrack entry this table DNATed to one target. */
  private flowsTo(t: KernelTarget): ConntrackFilter[] {
    return this.plan.listeners
      .filter((l) => l.family === t.family)
      .map((l) => ({ proto: l.proto, family: l.family, ...(l.address ? { destination: l.address } : {}), destinationPort: l.port, replySource: t.address }));
  }

  private desired(plan = this.plan): Map<string, MapElement> {
    if (!this.accepting) return new Map();
    const families = new Set<Family>(plan.listeners.map((l) => l.family));
    const all = desiredElements(this.options.placer.affinity.all(), this.options.connector);
    for (const [k, e] of all) if (!families.has(e.family)) all.delete(k);
    return all;
  }

  /** nft's refusal counters (flows past the limits): added to the refusal counts, with one rate-limited line. */
  private countRefusals(readings: ReadonlyMap<string, { packets: number }>): void {
    for (const r of this.derived.refusals) {
      const now = readings.get(r.name)?.packets ?? 0;
      const before = this.lastRefusals.get(r.name) ?? 0;
      this.lastRefusals.set(r.name, now);
      const n = now >= before ? now - before : now;
      if (n === 0) continue;
      const listener = r.proto === 'udp' ? 'pcoipUdp' : 'pcoipTcp';
      const reason = r.kind === 'max-flows' ? (r.proto === 'udp' ? 'max-flows' : 'max-connections') : r.proto === 'udp' ? 'max-flows-per-client' : 'max-connections-per-client';
      const key = `${listener}:${reason}`;
      this.options.stats.refusals.set(key, (this.options.stats.refusals.get(key) ?? 0) + n);
      this.refusalLog.maybe(Date.now(), (suppressed) =>
        this.options.logger.warn(
          { listener, dataPlane: 'kernel', code: ErrorCodes.FLOW_LIMIT, reason, refused: n, suppressed },
          `kernel data plane: ${n} new flow(s) refused: listeners.${listener}.${reason === 'max-flows' ? 'maxFlows' : reason === 'max-connections' ? 'maxConnections' : reason === 'max-flows-per-client' ? 'maxFlowsPerClient' : 'maxConnectionsPerClient'} reached`,
        ),
      );
    }
  }

  private async writeTable(plan = this.plan): Promise<void> {
    const desired = this.desired(plan);
    await this.nft(renderTable(plan, [...desired.values()]), `table inet ${plan.table}`);
    this.sync.reset(desired);
    this.counterDeltas.resetBaseline();
    this.lastRefusals.clear();
  }

  private async deleteTable(): Promise<void> {
    await this.nft(renderDeleteTable(this.plan.table), `deleting table inet ${this.plan.table}`);
  }

  /** undefined: no such table; else who its comment says wrote it (undefined: not written by pcoip-lb). */
  private async existingOwner(): Promise<{ owner: TableOwner | undefined } | undefined> {
    const r = await runTool(this.tools.nft, ['list', 'table', 'inet', this.plan.table], { timeoutMs: 10_000 });
    return r.code === 0 ? { owner: ownerOf(r.stdout) } : undefined;
  }

  /** One nft transaction (`nft -f -`). */
  private async nft(script: string, what: string): Promise<void> {
    const r = await runTool(this.tools.nft, ['-f', '-'], { input: script, timeoutMs: 30_000 });
    if (r.code !== 0) throw new PlbError(ErrorCodes.KERNEL_NFT, `nft refused ${what}: ${firstLines(r.stderr || r.error?.message || `exit ${r.code}`)}`);
  }

  private schedulePoll(): void {
    const every = this.options.counterPollMs ?? 2000;
    if (every > 0) {
      this.pollTimer = setInterval(() => void this.pollCounters(), every);
      this.pollTimer.unref();
    }
    const resync = this.options.resyncMs ?? 1000;
    if (resync > 0) {
      this.resyncTimer = setInterval(() => void this.syncElements(), resync);
      this.resyncTimer.unref();
    }
  }
}

/** The client key an element was made from (`198.18.1.7` → `198.18.1.7/32`). */
function clientKeyOf(e: MapElement): string {
  return e.key.includes('/') ? e.key : `${e.key}/${e.family === 4 ? 32 : 128}`;
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or undefined when the process is gone. */
function processStartTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  } catch {
    return undefined;
  }
}

function planOf(options: KernelDataPlaneOptions): KernelPlan {
  return {
    table: options.table,
    owner: { pid: process.pid, startTicks: processStartTicks(process.pid) ?? 0 },
    listeners: forwardedListeners(options.listeners),
    targets: kernelTargets(options.connectors()),
    snat: options.snat,
    prefixes: options.prefixes,
  };
}

interface PlanDerived {
  counterRefs: CounterRef[];
  targetsByAddress: ReadonlyMap<string, KernelTarget>;
  refusals: ReturnType<typeof refusalCounters>;
}

function derivedOf(plan: KernelPlan): PlanDerived {
  return { counterRefs: planCounters(plan), targetsByAddress: new Map(plan.targets.map((t) => [t.address, t])), refusals: refusalCounters(plan) };
}

function needsOf(options: KernelDataPlaneOptions, plan: KernelPlan): KernelNeeds {
  return { dataPlaneKeys: options.dataPlaneKeys, targets: plan.targets, snat: plan.snat, conntrackFlows: options.conntrackFlows };
}
