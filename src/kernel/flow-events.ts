import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Logger } from '../logger.ts';
import { RateLimitedLog } from '../logger.ts';
import { ErrorCodes } from '../errors.ts';
import type { Lease, Placer } from '../balance/placer.ts';
import type { FlowStats } from '../proxy/flow-stats.ts';
import type { ForwardedListener, KernelProto, KernelTarget } from './plan.ts';
import { runTool } from './tools.ts';

/**
 * The flows the kernel forwards, followed through conntrack: `conntrack -E` reports each new
 * and each ended connection, and TCP's state changes (a few per connection, never per packet). A new forwarded flow takes a lease on its client's
 * pin (Placer.holdLease), as a flow relayed in user space does, so the pin does not expire while
 * the flow lives and the TTL counts from its end — which conntrack reports after its idle
 * timeout, i.e. counted from the client's last packet. An ended flow releases its lease and gets
 * one "flow closed" line with conntrack's byte and packet counts.
 *
 * Events can be lost (the kernel drops them when the listener falls behind: ENOBUFS), so the
 * live set is also read (`conntrack -L`, our listeners' entries only) at start, after a lost event and every minute;
 * flows found or missing there are adopted or ended.
 */

export interface ConntrackEntry {
  type: 'NEW' | 'DESTROY' | 'UPDATE' | 'LIST';
  proto: string;
  id: string;
  orig: { src: string; dst: string; sport: number; dport: number; packets?: number; bytes?: number };
  reply: { src: string; dst: string; sport: number; dport: number; packets?: number; bytes?: number };
  /** The entry was deleted from user space (conntrack -D), not timed out or closed. */
  byUser: boolean;
  /** TCP's conntrack state (ESTABLISHED, TIME_WAIT, …) when the line has one. */
  state?: string;
}

/** TCP states after which the connection is over (both FINs seen, or a reset): its lease goes then, not after TIME_WAIT. */
const TCP_ENDED = new Set(['TIME_WAIT', 'CLOSE']);

/** One line of `conntrack -E -o id` or `conntrack -L -o id`; undefined for anything else. Pure. */
export function parseConntrackLine(line: string): ConntrackEntry | undefined {
  const tokens = line.trim().split(/\s+/);
  let i = 0;
  let type: ConntrackEntry['type'] = 'LIST';
  const head = tokens[0];
  if (head?.startsWith('[') && head.endsWith(']')) {
    const t = head.slice(1, -1);
    if (t !== 'NEW' && t !== 'DESTROY' && t !== 'UPDATE') return undefined;
    type = t;
    i = 1;
  }
  const proto = tokens[i];
  if (proto !== 'udp' && proto !== 'tcp') return undefined;
  const sides: Array<Record<string, string>> = [{}, {}];
  let side = -1;
  let id: string | undefined;
  let state: string | undefined;
  for (const tok of tokens.slice(i + 1)) {
    const eq = tok.indexOf('=');
    if (eq < 0) {
      if (side < 0 && /^[A-Z_]+$/.test(tok)) state = tok;
      continue;
    }
    const k = tok.slice(0, eq);
    const v = tok.slice(eq + 1);
    if (k === 'src') side++;
    if (k === 'id') id = v;
    else if (side >= 0 && side < 2 && ['src', 'dst', 'sport', 'dport', 'packets', 'bytes'].includes(k)) sides[side]![k] = v;
  }
  const side0 = sides[0]!;
  const side1 = sides[1]!;
  if (id === undefined || side < 1 || !side0.src || !side1.src) return undefined;
  const toSide = (s: Record<string, string>) => ({
    src: s.src!,
    dst: s.dst ?? '',
    sport: Number(s.sport),
    dport: Number(s.dport),
    ...(s.packets !== undefined ? { packets: Number(s.packets) } : {}),
    ...(s.bytes !== undefined ? { bytes: Number(s.bytes) } : {}),
  });
  return { type, proto, id, orig: toSide(side0), reply: toSide(side1), byUser: line.includes('[USERSPACE]'), ...(state ? { state } : {}) };
}

/** The forwarded flow an entry is, if it is one: sent to a listener of ours and DNATed to one of our targets. Pure. */
export function forwardedFlow(e: ConntrackEntry, listeners: readonly ForwardedListener[], targets: ReadonlyMap<string, KernelTarget>): { proto: KernelProto; target: KernelTarget } | undefined {
  const proto = e.proto as KernelProto;
  const listener = listeners.some((l) => l.proto === proto && l.port === e.orig.dport && (l.address === undefined || l.address === e.orig.dst));
  if (!listener) return undefined;
  const target = targets.get(e.reply.src);
  if (!target || target.port !== e.reply.sport || e.reply.src === e.orig.dst) return undefined;
  return { proto, target };
}

/**
 * The `conntrack -L` runs that list every entry sent to our listeners and nothing else: one per
 * family, protocol, port and address (a wildcard listener: any address of its family). conntrack
 * lists only IPv4 unless given `-f`. Pure.
 */
export function listingArgs(listeners: readonly ForwardedListener[]): string[][] {
  const seen = new Map<string, string[]>();
  for (const l of listeners) {
    const args = ['-L', '-f', l.family === 4 ? 'ipv4' : 'ipv6', '-p', l.proto, '--orig-port-dst', String(l.port), ...(l.address !== undefined ? ['-d', l.address] : []), '-o', 'id'];
    seen.set(args.join(' '), args);
  }
  return [...seen.values()];
}

interface TrackedFlow {
  proto: KernelProto;
  client: string;
  clientPort: number;
  connectorId: string;
  lease: Lease;
  startedAt: number;
}

export interface FlowTrackerDeps {
  conntrack: string;
  placer: Placer;
  stats: FlowStats;
  logger: Logger;
  listeners: () => readonly ForwardedListener[];
  targets: () => ReadonlyMap<string, KernelTarget>;
  now?: () => number;
  /** How often the live set is read whole (lost events); 0 disables. */
  reconcileMs?: number;
  /** The most output one `conntrack -L` may print before it counts as cut (default: runTool's cap). */
  maxListingBytes?: number;
}

/** Restarts of a failing `conntrack -E`: 1 s, doubling to 30 s; back to 1 s after a child that ran a minute. */
const RESTART_MIN_MS = 1000;
const RESTART_MAX_MS = 30_000;
const RESTART_RESET_MS = 60_000;

const LISTENER_OF: Record<KernelProto, 'pcoipUdp' | 'pcoipTcp'> = { udp: 'pcoipUdp', tcp: 'pcoipTcp' };

export class KernelFlowTracker {
  private readonly flows = new Map<string, TrackedFlow>();
  private readonly deps: FlowTrackerDeps;
  private readonly now: () => number;
  private events: ChildProcess | undefined;
  private stopped = false;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private reconciling: Promise<void> | undefined;
  private readonly warnLog = new RateLimitedLog(10_000);
  private readonly truncatedLog = new RateLimitedLog(60_000);
  private restartDelayMs = RESTART_MIN_MS;
  private restartTimer: NodeJS.Timeout | undefined;

  constructor(deps: FlowTrackerDeps) {
    this.deps = deps;
    this.now = deps.now ?? Date.now;
  }

  /** Forwarded flows alive now, by protocol. */
  active(): Record<KernelProto, number> {
    const out = { udp: 0, tcp: 0 };
    for (const f of this.flows.values()) out[f.proto]++;
    return out;
  }

  /** Listens for events, then adopts the flows that already exist (a previous run's, or those of the last seconds). */
  async start(): Promise<void> {
    this.listen();
    await this.reconcile();
    const every = this.deps.reconcileMs ?? 60_000;
    if (every > 0) {
      this.reconcileTimer = setInterval(() => void this.reconcile(), every);
      this.reconcileTimer.unref();
    }
  }

  /** Stops listening; every flow still held ends here (its lease released, its line logged). */
  stop(reason = 'shutdown'): void {
    this.stopped = true;
    if (this.reconcileTimer) clearInterval(this.reconcileTimer);
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.events?.kill();
    for (const [id, f] of [...this.flows]) this.end(id, f, { reason });
  }

  private listen(): void {
    if (this.stopped) return;
    // -b: a large receive buffer, so a burst of new flows does not overflow it (ENOBUFS). When
    // every listener has one address, the kernel filters the events for it (-d): the host's other
    // connections are not read at all.
    const addresses = new Set(this.deps.listeners().map((l) => l.address));
    const only = addresses.size === 1 ? [...addresses][0] : undefined;
    const args = ['-E', '-e', 'NEW,UPDATE,DESTROY', '-o', 'id', '-b', String(8 * 1024 * 1024), ...(only ? ['-d', only] : [])];
    const child = spawn(this.deps.conntrack, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.events = child;
    createInterface({ input: child.stdout }).on('line', (line) => {
      const e = parseConntrackLine(line);
      if (e) this.onEntry(e);
    });
    createInterface({ input: child.stderr }).on('line', (line) => {
      if (/ENOBUFS/i.test(line)) {
        this.warnLog.maybe(this.now(), (suppressed) =>
          this.deps.logger.warn({ code: ErrorCodes.KERNEL_CONNTRACK, suppressed }, 'kernel data plane: conntrack events were lost (ENOBUFS); re-reading the flow table'),
        );
        void this.reconcile();
      }
    });
    const startedAt = this.now();
    // A child that could not start (ENOENT, EMFILE) emits 'error' and 'close' but no 'exit':
    // 'close' comes once per child in every case, so the restart hangs on it.
    child.on('error', (err: NodeJS.ErrnoException) =>
      this.warnLog.maybe(this.now(), (suppressed) =>
        this.deps.logger.warn({ code: ErrorCodes.KERNEL_CONNTRACK, err: err.message, errno: err.code, suppressed }, 'kernel data plane: conntrack -E failed'),
      ),
    );
    child.on('close', (code, signal) => {
      if (this.stopped) return;
      // Back off while it keeps failing; a child that ran a while starts the count again.
      if (this.now() - startedAt >= RESTART_RESET_MS) this.restartDelayMs = RESTART_MIN_MS;
      const delay = this.restartDelayMs;
      this.restartDelayMs = Math.min(delay * 2, RESTART_MAX_MS);
      this.deps.logger.error({ code: ErrorCodes.KERNEL_CONNTRACK, exitCode: code, signal, restartInMs: delay }, `kernel data plane: conntrack -E ended; restarting it in ${delay} ms`);
      this.restartTimer = setTimeout(() => {
        this.restartTimer = undefined;
        this.listen();
        void this.reconcile();
      }, delay);
      this.restartTimer.unref();
    });
  }

  private onEntry(e: ConntrackEntry): void {
    if (this.stopped) return;
    const ended = e.type === 'DESTROY' || (e.proto === 'tcp' && e.state !== undefined && TCP_ENDED.has(e.state));
    if (ended) {
      const f = this.flows.get(e.id);
      if (f) this.end(e.id, f, { reason: e.byUser ? 'deleted' : e.proto === 'udp' ? 'idle-timeout' : 'closed', entry: e });
      return;
    }
    if (this.flows.has(e.id)) return;
    const fwd = forwardedFlow(e, this.deps.listeners(), this.deps.targets());
    if (!fwd) return;
    const now = this.now();
    const key = this.deps.placer.keyFor(e.orig.src);
    this.flows.set(e.id, {
      proto: fwd.proto,
      client: e.orig.src,
      clientPort: e.orig.sport,
      connectorId: fwd.target.id,
      lease: this.deps.placer.holdLease(key, fwd.target.id, now),
      startedAt: now,
    });
    this.deps.stats.opened(LISTENER_OF[fwd.proto], fwd.target.id);
  }

  private end(id: string, f: TrackedFlow, how: { reason: string; entry?: ConntrackEntry }): void {
    this.flows.delete(id);
    const now = this.now();
    f.lease.release(now);
    this.deps.stats.closed(LISTENER_OF[f.proto], f.connectorId, now - f.startedAt);
    const e = how.entry;
    this.deps.logger.info(
      {
        listener: LISTENER_OF[f.proto],
        dataPlane: 'kernel',
        client: f.client,
        clientPort: f.clientPort,
        connector: f.connectorId,
        ...(e?.orig.bytes !== undefined ? { bytesIn: e.orig.bytes, bytesOut: e.reply.bytes ?? 0, packetsIn: e.orig.packets ?? 0, packetsOut: e.reply.packets ?? 0 } : {}),
        durationMs: now - f.startedAt,
        reason: how.reason,
      },
      'flow closed',
    );
  }

  /**
   * Reads the live table: adopts forwarded flows not known here, ends those gone (lost DESTROY
   * events). Only entries to our listeners are listed (the host's other connections are not read).
   * A listing cut at the output cap is not the whole table: then nothing is ended as gone.
   */
  private reconcile(): Promise<void> {
    this.reconciling ??= (async () => {
      // A flow that starts while the table is being read is missing from it, not gone.
      const began = this.now();
      try {
        const live = new Set<string>();
        let truncated = false;
        for (const args of listingArgs(this.deps.listeners())) {
          const r = await runTool(this.deps.conntrack, args, { timeoutMs: 30_000, ...(this.deps.maxListingBytes !== undefined ? { maxOutputBytes: this.deps.maxListingBytes } : {}) });
          if (r.code !== 0 || this.stopped) return;
          truncated ||= r.truncated;
          // A cut listing ends mid-line: its last, partial line is not an entry.
          const text = r.truncated ? r.stdout.slice(0, r.stdout.lastIndexOf('\n') + 1) : r.stdout;
          for (const line of text.split('\n')) {
            const e = parseConntrackLine(line);
            if (!e) continue;
            live.add(e.id);
            this.onEntry(e);
          }
        }
        if (truncated) {
          this.truncatedLog.maybe(this.now(), (suppressed) =>
            this.deps.logger.warn(
              { code: ErrorCodes.KERNEL_CONNTRACK, suppressed },
              'kernel data plane: the conntrack listing was longer than the output cap; flows missing from it are kept (their end comes with their DESTROY event)',
            ),
          );
          return;
        }
        for (const [id, f] of [...this.flows]) if (!live.has(id) && f.startedAt < began) this.end(id, f, { reason: 'gone' });
      } finally {
        this.reconciling = undefined;
      }
    })();
    return this.reconciling;
  }
}
