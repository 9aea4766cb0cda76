import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import type { Logger } from '../logger.ts';
import { ErrorCodes, PlbError } from '../errors.ts';
import type { ConnectorView } from '../pool/pool.ts';
import { ElementSync } from './element-sync.ts';
import { CounterDeltas, parseCounters, type TrafficDelta } from './counters.ts';
import { ownerOf, planCounters, type TableOwner, renderDeleteTable, renderReplaceElements, renderTable, type CounterRef } from './nft-script.ts';
import { desiredElements, forwardedListeners, kernelTargets, type Family, type KernelPlan, type KernelProto, type MapElement, type PinView } from './plan.ts';
import { checkConntrack, checkHost, DEFAULT_TOOLS, kernelError, type KernelNeeds, type KernelProblem, type KernelTools } from './preconditions.ts';
import { firstLines, runTool } from './tools.ts';
import { Conntrack, type ConntrackFilter } from './conntrack.ts';

/**
 * The kernel data plane (docs/kernel.md): one nftables table this process owns. pcoip-lb keeps
 * deciding (placement, affinity, drain, health); the table's client maps are a replica of its
 * pins, and the kernel forwards the packets of pinned clients (DNAT to the Connector, SNAT
 * towards it, conntrack for the replies). A client with no element reaches pcoip-lb's own
 * listener, is placed there as in user space, and gets its element in the next batch.
 *
 * Lifecycle: `start` checks the host, then writes the table whole (replacing one left by a
 * killed run); `reconfigure` rewrites it whole in one transaction (reload: targets, SNAT and
 * every element at once); `stop` deletes it, leaving no rule behind.
 */

export interface KernelDataPlaneOptions {
  table: string;
  snat: { ipv4?: string | undefined; ipv6?: string | undefined };
  prefixes: { ipv4: number; ipv6: number };
  /** The kernel-forwarded listeners where they are bound. */
  listeners: Array<{ proto: KernelProto; address: string; port: number }>;
  connectors: () => readonly ConnectorView[];
  connector: (id: string) => ConnectorView | undefined;
  /** The placer's pins (client key → Connector id). */
  pins: () => Iterable<PinView>;
  /** Flows conntrack must hold (maxFlows + maxConnections of the kernel listeners). */
  conntrackFlows: number;
  /** The kernel UDP listener's idleTimeout, compared with conntrack's UDP stream timeout (a warning when they differ). */
  udpIdleTimeoutMs: number | undefined;
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

export class KernelDataPlane {
  private plan: KernelPlan;
  private counterRefs: CounterRef[];
  private readonly counterDeltas = new CounterDeltas();
  private readonly sync: ElementSync;
  private readonly options: KernelDataPlaneOptions;
  private readonly tools: KernelTools;
  private pollTimer: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private readonly conntrack: Conntrack;
  private polling: Promise<void> | undefined;
  private stopped = false;

  private constructor(options: KernelDataPlaneOptions) {
    this.options = options;
    this.tools = options.tools ?? DEFAULT_TOOLS;
    this.plan = planOf(options);
    this.counterRefs = planCounters(this.plan);
    this.conntrack = new Conntrack(this.tools.conntrack);
    this.sync = new ElementSync({
      apply: (script) => this.nft(script, 'client map elements'),
      desired: () => this.desired(),
      replaceAll: (elements) => renderReplaceElements(this.plan, elements),
      table: this.plan.table,
      logger: options.logger,
    });
  }

  /** The host checks that can run before anything is changed (see preconditions.ts). */
  static async checkHost(options: KernelDataPlaneOptions): Promise<KernelProblem[]> {
    return checkHost(needsOf(options, planOf(options)), options.tools ?? DEFAULT_TOOLS);
  }

  /**
   * Checks the host, writes the table, checks conntrack's limits (conntrack is loaded by then).
   * On any problem nothing of ours is left in the kernel and a PlbError lists every problem.
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
    options.logger.info(
      { table: `inet ${plane.plan.table}`, replacedStaleTable: existed !== undefined, ...(owner ? { stalePid: owner.pid } : {}), listeners: plane.plan.listeners, targets: plane.plan.targets.map((t) => t.id), snat: plane.plan.snat },
      existed !== undefined ? `kernel data plane: replaced the table inet ${plane.plan.table} a previous run left behind` : `kernel data plane: table inet ${plane.plan.table} created`,
    );
    plane.schedulePoll();
    return plane;
  }

  get table(): string {
    return this.plan.table;
  }

  /** What is programmed now (for /status and tests). */
  describe(): { table: string; elements: number; batches: number; batchFailures: number } {
    return { table: this.plan.table, elements: this.sync.elements.size, batches: this.sync.counts.batches, batchFailures: this.sync.counts.failures };
  }

  /** The elements this process believes the kernel holds. */
  get elements(): ReadonlyMap<string, MapElement> {
    return this.sync.elements;
  }

  /** Brings the client maps up to the placer's pins (batched); resolves once written. */
  syncElements(): Promise<void> {
    return this.sync.request();
  }

  /**
   * Reload: rewrites the whole table (targets, SNAT, counters, every element) in one transaction,
   * so packets see the old table or the new one, never a mix. The counters are read first, so
   * no forwarded byte goes uncounted.
   */
  async reconfigure(changes: { snat?: KernelDataPlaneOptions['snat'] }): Promise<void> {
    if (changes.snat) this.options.snat = changes.snat;
    await this.pollCounters();
    this.plan = planOf(this.options);
    this.counterRefs = planCounters(this.plan);
    await this.writeTable();
    this.options.logger.info(
      { table: `inet ${this.plan.table}`, targets: this.plan.targets.map((t) => t.id), elements: this.sync.elements.size, snat: this.plan.snat },
      `kernel data plane: table inet ${this.plan.table} rewritten (reload)`,
    );
  }

  /** Reads the nft counters once and reports what moved since the last reading. */
  async pollCounters(): Promise<void> {
    if (this.stopped) return;
    this.polling ??= (async () => {
      try {
        const r = await runTool(this.tools.nft, ['-j', 'list', 'counters', 'table', 'inet', this.plan.table], { timeoutMs: 10_000 });
        if (r.code !== 0) return;
        const deltas = this.counterDeltas.next(this.counterRefs, parseCounters(JSON.parse(r.stdout)));
        if (this.options.onTraffic) for (const d of deltas) this.options.onTraffic(d);
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
   * flow of ours stays in the kernel.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    await this.pollCounters();
    this.stopped = true;
    await this.sync.stop();
    await this.deleteTable();
    let flowsDeleted = true;
    await this.conntrack.delete(this.forwardedFlows()).catch((err: Error) => {
      flowsDeleted = false;
      this.options.logger.warn({ code: ErrorCodes.KERNEL_CONNTRACK, err: err.message }, 'kernel data plane: could not delete the forwarded flows; they end when idle');
    });
    this.options.logger.info({ table: `inet ${this.plan.table}`, flowsDeleted }, `kernel data plane: table inet ${this.plan.table} deleted`);
  }

  /** Filters matching every conntrack entry this table DNATed (listener address:port → a target). */
  private forwardedFlows(): ConntrackFilter[] {
    return this.plan.listeners.flatMap((l) =>
      this.plan.targets
        .filter((t) => t.family === l.family)
        .map((t) => ({ proto: l.proto, family: l.family, ...(l.address ? { destination: l.address } : {}), destinationPort: l.port, replySource: t.address })),
    );
  }

  private desired(): Map<string, MapElement> {
    const families = new Set<Family>(this.plan.listeners.map((l) => l.family));
    const all = desiredElements(this.options.pins(), this.options.connector);
    for (const [k, e] of all) if (!families.has(e.family)) all.delete(k);
    return all;
  }

  private async writeTable(): Promise<void> {
    const desired = this.desired();
    await this.nft(renderTable(this.plan, [...desired.values()]), `table inet ${this.plan.table}`);
    this.sync.reset(desired);
    this.counterDeltas.resetBaseline();
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

function needsOf(options: KernelDataPlaneOptions, plan: KernelPlan): KernelNeeds {
  return { dataPlaneKeys: options.dataPlaneKeys, targets: plan.targets, snat: plan.snat, conntrackFlows: options.conntrackFlows };
}
