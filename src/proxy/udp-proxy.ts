import { createSocket, type Socket as UdpSocket, type RemoteInfo, type SocketType } from 'node:dgram';
import { lookup as dnsLookup, type LookupOneOptions } from 'node:dns';
import type { AddressInfo } from 'node:net';
import { isIP } from 'node:net';
import { RateLimitedLog } from '../logger.ts';
import { admitsPinnedClients, type ConnectorView } from '../pool/pool.ts';
import { unmapIpv4, type HostPort } from '../util/address.ts';
import { ErrorCodes } from '../errors.ts';
import type { ListenerCounters } from './flow-stats.ts';
import type { ProxyDeps } from './tcp-proxy.ts';
import type { Lease, PinChange } from '../balance/placer.ts';
import { PerClientLimit, RefusalLog } from './limits.ts';
import { AddressPortTable } from './address-port-table.ts';
import { bindUdp } from './listen.ts';
import type { UdpTap } from '../sessions/registry.ts';
import { UdpProbe, type ProbeWinner } from './udp-probe.ts';
import { ownExhaustion } from '../util/fd-exhaustion.ts';
import { budgetedBufferSize, decayedPeak, MIN_BUDGET_BUFFER_BYTES, resizeTo } from './queue-budget.ts';
import { inSlices } from '../util/slices.ts';

export interface UdpProxyOptions {
  bind: HostPort;
  /** A flow silent both ways this long is closed; 0: never (as on the TCP listeners). */
  idleTimeoutMs: number;
  maxFlows: number;
  /** Concurrent flows per client (affinity client key): a flood of source ports from one address stops here. */
  maxFlowsPerClient?: number;
  /** Bind with SO_REUSEPORT (multi-core workers; the kernel keeps each client address:port on one socket). */
  reusePort?: boolean;
  /** SO_RCVBUF of the listening socket and of each flow's upstream socket (default 4 MiB; capped by net.core.rmem_max). */
  recvBufferSize?: number;
  /** SO_SNDBUF of the same sockets (default: the OS's). */
  sendBufferSize?: number;
  /** Latency budget of each receive queue, ms: buffers are resized to rate × budget every second (queue-budget.ts). 0 or unset: fixed recvBufferSize. */
  maxQueueDelayMs?: number;
  /** The probe fan-out for a shared address (listeners.pcoipUdp.probe, experimental; udp-probe.ts). */
  probe?: { enabled: boolean; candidates: number; datagrams: number; deadline: number };
  /** affinity.perSession: a re-pin of an address does not cut the flows of its other live sessions. */
  perSession?: boolean;
}

type UdpCloseReason = 'idle-timeout' | 'connector-unreachable' | 'connector-error' | 'connector-down' | 'repinned' | 'kernel-path' | 'fd-exhausted' | 'shutdown';

/**
 * Receive buffer asked for on the listening socket. Every client's media arrives on this one
 * socket; the kernel default (~208 KB ≈ 90 datagrams of 1200 bytes, < 5 ms at 20 k packets/s)
 * overflows on the first event-loop pause or client burst: bench:sessions lost 11-27 % of
 * upstream packets with 200 users at 500 kbit/s, and none with 4 MiB. Linux caps the value
 * at net.core.rmem_max (raise that sysctl where it is lower).
 */
const LISTENER_RECV_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * Receive buffer asked for on each flow's upstream socket: the Connector → client direction
 * (PCoIP's display stream, most of a session's bytes) queues there. With the kernel default,
 * bench:throughput lost > 0.1 % of a single Connector → client flow from 200-400 Mbit/s while
 * the client → Connector direction, behind the 4 MiB listener, ran clean to 800. The value is a
 * cap, not an allocation: the kernel charges only what is queued, within net.ipv4.udp_mem.
 */
const FLOW_RECV_BUFFER_BYTES = 4 * 1024 * 1024;

/** Idle flows closed per event-loop turn by the sweep (~2-5 ms of work). */
const SWEEP_SLICE = 100;

/** Flows visited per event-loop turn when sizing buffers. */
const BUDGET_SLICE = 2000;

/**
 * How often receive buffers follow their socket's rate (listeners.pcoipUdp.maxQueueDelay): the
 * listener's every 100 ms (its rate is one counter; a burst after a lull must find room within
 * 100 ms), each flow's every second (that walks every flow). The peaks they follow halve in
 * ~1.4 s (listener) and ~2 s (flows) once the rate falls, so a buffer shrinks only after a
 * few seconds of lower rate (bench:throughput lost its ≤ 0.1 % rate when the listener shrank
 * during the 1-2 s between iperf3 tests and the next one began in a small buffer).
 */
const LISTENER_BUDGET_MS = 100;
const FLOW_BUDGET_MS = 1000;
const LISTENER_PEAK_DECAY = 0.95;
const FLOW_PEAK_DECAY = 0.7;

/** A socket's receive buffer under the latency budget: the size asked for, its decaying peak target, and the counters at the last check. */
interface BufferState {
  asked: number;
  peak: number;
  packets: number;
  bytes: number;
}

function newBufferState(size: number): BufferState {
  return { asked: size, peak: size, packets: 0, bytes: 0 };
}

/** Packets held while a new flow's upstream socket connects; PCoIP sends a few at most by then. */
const MAX_PENDING_PACKETS = 64;

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string, family: number) => void;

/**
 * The listening socket's resolver. Every reply goes to the address a client packet came from,
 * which is always an IP literal; Node's default dgram lookup still defers each one by a
 * process.nextTick, once per reply packet. Answering literals at once takes that tick off the
 * Connector → client path (the direction of PCoIP's display stream). Names still go to DNS.
 */
function literalLookup(address: string, family: LookupOneOptions | number, callback: LookupCallback): void {
  const want = typeof family === 'number' ? family : family.family;
  if (isIP(address) === want) callback(null, address, want);
  else dnsLookup(address, typeof family === 'number' ? { family } : family, callback);
}

interface UdpFlow {
  readonly clientAddress: string;
  readonly clientPort: number;
  /** The address exactly as the listening socket reported it (needed to send replies back). */
  readonly replyAddress: string;
  readonly clientKey: string;
  /** The flow's hold on its client's affinity record, released once when the flow closes. */
  readonly lease: Lease;
  readonly connector: ConnectorView;
  readonly upstream: UdpSocket;
  readonly counters: ListenerCounters;
  /** Packets queued until the upstream socket's connect() completes; undefined once connected. */
  pending: Buffer[] | undefined;
  startedAt: number;
  /** When the idle sweep last found the flow active (see sweepIdle). */
  lastActivity: number;
  /** Set by every datagram, either way; the sweep reads and clears it (no clock read per packet). */
  seen: boolean;
  packetsIn: number;
  packetsOut: number;
  bytesIn: number;
  bytesOut: number;
  closed: boolean;
  /** The upstream socket's receive buffer (Connector → client queue) under maxQueueDelay. */
  recvBuffer: BufferState;
  /** Its session's view: meters each datagram's ESP header (docs/sessions.md). */
  tap: UdpTap | undefined;
  /** Placed by the probe fan-out (its own session's evidence), not by its address's pin. */
  probed: boolean;
}

/**
 * The 4172/UDP listener. A flow is one client address:port; each gets its own upstream socket
 * connected to the chosen Connector's pcoip port, so the Connector's replies come back on a
 * socket that already knows which client they belong to. Replies leave from the listening
 * socket, so the client sees one peer address. Payloads are forwarded as they came: same bytes,
 * same size, nothing added that could push a 1200-byte PCoIP packet past the MTU.
 * Idle flows are swept on a timer instead of a timer per flow (no per-packet timer work).
 */
export class UdpProxy {
  private readonly socket: UdpSocket;
  private readonly flows = new AddressPortTable<UdpFlow>();
  /** The same flows by client key: a re-pin moves all of a client's flows at once (followPin). */
  private readonly byClient = new Map<string, Set<UdpFlow>>();
  /** Multi-core: first packets of clients whose affinity entry is being fetched (see awaitDecision). */
  private readonly awaiting = new AddressPortTable<{ rinfo: RemoteInfo; packets: Buffer[] }>();
  /** A dead Connector answers every packet of every flow with ICMP: one line a second is enough. */
  private readonly upstreamErrorLog = new RateLimitedLog();
  private readonly refusals: RefusalLog;
  private readonly perClient: PerClientLimit;
  private readonly now: () => number;
  private sweepTimer: NodeJS.Timeout | undefined;
  private budgetTimers: NodeJS.Timeout[] = [];
  /** The listening socket's receive buffer under maxQueueDelay, and what it received (every client's datagrams). */
  private listenerBuffer: BufferState;
  private readonly received = { packets: 0, bytes: 0 };
  /** Flows handed over to the kernel data plane (handOver), with their packet count when last looked at. */
  private readonly handedOver = new Map<UdpFlow, number>();
  private handOverTimer: NodeJS.Timeout | undefined;
  /** False once shutdown began: packets of known flows still pass, unknown sources open nothing. */
  private accepting = true;
  private options: UdpProxyOptions;
  private readonly deps: ProxyDeps;
  private readonly probe: UdpProbe | undefined;

  constructor(options: UdpProxyOptions, deps: ProxyDeps) {
    this.options = options;
    this.deps = deps;
    this.now = deps.now ?? Date.now;
    this.refusals = new RefusalLog('pcoipUdp', deps.stats, deps.logger);
    this.perClient = new PerClientLimit(options.maxFlowsPerClient ?? Infinity);
    this.listenerBuffer = newBufferState(options.recvBufferSize ?? LISTENER_RECV_BUFFER_BYTES);
    const type: SocketType = isIP(options.bind.host) === 6 ? 'udp6' : 'udp4';
    this.socket = createSocket({
      type,
      recvBufferSize: options.recvBufferSize ?? LISTENER_RECV_BUFFER_BYTES,
      ...(options.sendBufferSize ? { sendBufferSize: options.sendBufferSize } : {}),
      ...(options.reusePort ? { reusePort: true } : {}),
      lookup: literalLookup,
    });
    this.socket.on('message', (msg, rinfo) => this.onClientPacket(msg, rinfo));
    this.probe = this.probeFanOut();
  }

  get activeFlows(): number {
    return this.flows.size;
  }

  /** Clients holding at least one flow (per-client accounting; 0 when idle — leak checks use it). */
  get trackedClients(): number {
    return this.perClient.clients;
  }

  updateOptions(options: Omit<UdpProxyOptions, 'bind'>): void {
    this.options = { ...this.options, ...options };
    this.perClient.setMax(this.options.maxFlowsPerClient ?? Infinity);
    this.scheduleSweep();
    this.scheduleQueueBudget();
  }

  async listen(): Promise<AddressInfo> {
    // Send errors towards clients surface as 'error' events, possibly once per packet: rate-limit the log.
    const errorLog = new RateLimitedLog();
    const address = await bindUdp(this.socket, 'listeners.pcoipUdp', this.options.bind, {
      onLaterError: (err) =>
        errorLog.maybe(this.now(), (suppressed) => this.deps.logger.error({ listener: 'pcoipUdp', err, suppressed }, 'UDP listener error')),
    });
    this.scheduleSweep();
    this.scheduleQueueBudget();
    return address;
  }

  address(): AddressInfo {
    return this.socket.address();
  }

  /**
   * Shutdown, first step: open no new flows, keep forwarding the packets of established ones
   * (the listening socket stays bound, since replies leave from it and clients send to it).
   */
  stopAccepting(): void {
    this.accepting = false;
  }

  /** Stops receiving client packets; closes every flow. */
  close(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const t of this.budgetTimers) clearInterval(t);
    if (this.handOverTimer) clearInterval(this.handOverTimer);
    this.handedOver.clear();
    this.awaiting.clear();
    this.probe?.close();
    for (const flow of this.flows.values()) this.closeFlow(flow, 'shutdown');
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }

  /** Ends every flow to one Connector (health.closeFlowsOnDown); returns how many. */
  closeFlowsTo(connectorId: string): number {
    let closed = 0;
    for (const flow of this.flows.values()) {
      if (flow.connector.id !== connectorId) continue;
      this.closeFlow(flow, 'connector-down');
      closed++;
    }
    return closed;
  }

  /**
   * A client's pin changed (a re-pin here, one relayed from another worker or instance, a learned
   * session): its flows to any other Connector are closed now, so its next datagram opens a flow
   * to the new one. A pin dropped because its Connector left the config moves nothing, nor does
   * the client's next placement after that (from no pin): established flows of a removed
   * Connector run on until they end (README "Reload"). Without this a client that sends from a fixed
   * source port (4172 or 50002, by client generation) would keep feeding the old Connector for as
   * long as it keeps sending. Returns how many flows were closed.
   */
  followPin(change: PinChange): number {
    if (change.to === undefined || change.from === undefined || change.from === change.to) return 0;
    const flows = this.byClient.get(change.key);
    if (!flows) return 0;
    let closed = 0;
    for (const flow of [...flows]) {
      if (flow.connector.id === change.to) continue;
      if (this.belongsToAnotherSession(flow)) continue;
      this.deps.stats.movedByRepin('pcoipUdp', flow.connector.id);
      this.closeFlow(flow, 'repinned', change.to);
      closed++;
    }
    return closed;
  }

  /**
   * The kernel data plane now forwards this client's packets (docs/kernel.md): its flows here
   * get no more datagrams from it, but stay open to relay what was already in flight (a
   * Connector's late replies to this process's socket), and close once no datagram passed either
   * way for `quietMs`. A flow that keeps moving (the switch did not take) stays. Returns how many.
   */
  handOver(clientKey: string, quietMs: number): number {
    const flows = this.byClient.get(clientKey);
    if (!flows) return 0;
    for (const f of flows) this.handedOver.set(f, -1);
    if (!this.handOverTimer) {
      this.handOverTimer = setInterval(() => {
        for (const [f, seen] of this.handedOver) {
          const now = f.packetsIn + f.packetsOut;
          if (f.closed) this.handedOver.delete(f);
          else if (now === seen) {
            this.handedOver.delete(f);
            this.closeFlow(f, 'kernel-path');
          } else this.handedOver.set(f, now);
        }
        if (this.handedOver.size === 0) {
          clearInterval(this.handOverTimer);
          this.handOverTimer = undefined;
        }
      }, quietMs);
      this.handOverTimer.unref();
    }
    return flows.size;
  }

  /**
   * Closes flows idle for longer than the idle timeout; returns how many it found. A datagram
   * only sets `seen`; the sweep turns that into a time. So a flow closes between idleTimeout and
   * idleTimeout + 2 sweep intervals (≤ 1.5 × idleTimeout) after its last datagram. The idle ones
   * close SWEEP_SLICE at a time, one slice per event-loop turn.
   */
  sweepIdle(now = this.now()): number {
    const idle: UdpFlow[] = [];
    for (const flow of this.flows.values()) {
      if (flow.seen) {
        flow.seen = false;
        flow.lastActivity = now;
      } else if (this.options.idleTimeoutMs > 0 && now - flow.lastActivity > this.options.idleTimeoutMs) {
        idle.push(flow);
      }
    }
    // Many flows go idle together (a shift ends, a logon storm's probes time out): closing 3000
    // in one go (socket close, accounting, a log line each) held the event loop for 70-180 ms,
    // and every live session's datagrams waited behind it (bench/README.md, "bench:latency").
    // Between slices the loop forwards what queued; a flow that saw a datagram meanwhile stays.
    inSlices(idle, SWEEP_SLICE, (flow) => {
      if (!flow.seen) this.closeFlow(flow, 'idle-timeout');
    });
    return idle.length;
  }

  private scheduleSweep(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    // Sweep a few times per timeout so a flow lives at most ~25 % past its idle timeout.
    // idleTimeout 0 means never (as on the TCP listeners): the sweep then only resets `seen`.
    const every = this.options.idleTimeoutMs === 0 ? 5000 : Math.max(50, Math.min(5000, Math.floor(this.options.idleTimeoutMs / 4)));
    this.sweepTimer = setInterval(() => this.sweepIdle(), every);
    this.sweepTimer.unref();
  }

  private scheduleQueueBudget(): void {
    for (const t of this.budgetTimers) clearInterval(t);
    this.budgetTimers = [setInterval(() => this.budgetListener(), LISTENER_BUDGET_MS), setInterval(() => this.budgetFlows(), FLOW_BUDGET_MS)];
    for (const t of this.budgetTimers) t.unref();
  }

  /**
   * listeners.pcoipUdp.maxQueueDelay: sizes a receive buffer to its socket's recent rate × the
   * budget (queue-budget.ts): at once when the rate rises, after a while when it falls; with no
   * budget, back to recvBufferSize. A setsockopt only when a size moves past the hysteresis band.
   */
  private resizeBuffer(socket: UdpSocket, state: BufferState, packets: number, bytes: number, intervalMs: number, decay: number): void {
    const cap = this.options.recvBufferSize ?? LISTENER_RECV_BUFFER_BYTES;
    const delay = this.options.maxQueueDelayMs ?? 0;
    const target = delay > 0 ? budgetedBufferSize(packets - state.packets, bytes - state.bytes, intervalMs, { maxQueueDelayMs: delay, maxBytes: cap, minBytes: MIN_BUDGET_BUFFER_BYTES }) : cap;
    state.packets = packets;
    state.bytes = bytes;
    state.peak = delay > 0 ? Math.min(cap, decayedPeak(state.peak, target, decay)) : cap;
    const size = resizeTo(state.asked, state.peak);
    if (size === undefined) return;
    try {
      socket.setRecvBufferSize(size);
      state.asked = size;
    } catch {
      // closing, or not connected yet: the next check tries again
    }
  }

  private budgetListener(): void {
    this.resizeBuffer(this.socket, this.listenerBuffer, this.received.packets, this.received.bytes, LISTENER_BUDGET_MS, LISTENER_PEAK_DECAY);
  }

  /** Every flow's upstream socket (Connector → client), BUDGET_SLICE flows per event-loop turn (3000 flows took 0.37 ms; maxFlows is 100 000). */
  private budgetFlows(): void {
    inSlices([...this.flows.values()], BUDGET_SLICE, (flow) => {
      if (flow.pending === undefined && !flow.closed) this.resizeBuffer(flow.upstream, flow.recvBuffer, flow.packetsOut, flow.bytesOut, FLOW_BUDGET_MS, FLOW_PEAK_DECAY);
    });
  }

  /** The per-datagram path: one table lookup, counters, one send. No string building, no clock. */
  private onClientPacket(msg: Buffer, rinfo: RemoteInfo): void {
    let flow = this.flows.get(rinfo.address, rinfo.port);
    if (flow === undefined) {
      if (!this.accepting) {
        this.deps.stats.refused('pcoipUdp', 'shutting-down');
        return;
      }
      if (this.probe && this.flows.size + this.probe.active < this.options.maxFlows && this.probe.handle(msg, rinfo)) return;
      flow = this.newFlow(msg, rinfo);
      if (flow === undefined) return;
    }
    this.forward(flow, msg);
  }

  /**
   * A re-pin of the address is another session's: a flow the probe placed (or, with
   * affinity.perSession, any flow) stays while its own Connector still holds a live session of
   * the address and can take it.
   */
  private belongsToAnotherSession(flow: UdpFlow): boolean {
    const { registry, pool } = this.deps;
    if (!(flow.probed || this.options.perSession) || !registry?.hasLiveSession(flow.clientAddress, flow.connector.id)) return false;
    const connector = pool?.get(flow.connector.id);
    return connector !== undefined && admitsPinnedClients(connector);
  }

  /** A new source placed by its address (after the replica's look-up where one is needed); undefined: queued or refused. */
  private newFlow(msg: Buffer, rinfo: RemoteInfo): UdpFlow | undefined {
    if (this.deps.beforeDecide && this.awaitDecision(msg, rinfo)) return undefined;
    return this.openFlow(rinfo, this.now());
  }

  private probeFanOut(): UdpProbe | undefined {
    const probe = this.options.probe;
    const { registry, pool } = this.deps;
    if (!probe?.enabled || !registry || !pool) return undefined;
    const options = { candidates: probe.candidates, datagrams: probe.datagrams, deadlineMs: probe.deadline, recvBufferSize: this.options.recvBufferSize ?? FLOW_RECV_BUFFER_BYTES, sendBufferSize: this.options.sendBufferSize };
    return new UdpProbe(options, { pool, registry, logger: this.deps.logger, now: this.now, settle: (rinfo, winner, sent, pending) => this.settleProbe(rinfo, winner, sent, pending) });
  }

  /** The probe decided: open the flow on the winner (or by address), then pass on what it held. */
  private settleProbe(rinfo: RemoteInfo, winner: ProbeWinner | undefined, sent: Buffer[], pending: Buffer[]): void {
    if (!this.accepting || this.flows.has(rinfo.address, rinfo.port)) {
      winner?.upstream.close();
      return;
    }
    if (!winner) {
      for (const msg of pending) {
        const flow = this.flows.get(rinfo.address, rinfo.port) ?? this.newFlow(msg, rinfo);
        if (flow) this.forward(flow, msg);
      }
      return;
    }
    const flow = this.openFlow(rinfo, this.now(), winner);
    if (!flow?.probed) {
      // Refused, or placed elsewhere (the winner could no longer take it): its probe socket goes.
      try {
        winner.upstream.close();
      } catch {
        // already closed
      }
      if (flow) for (const msg of [...sent, ...pending]) this.forward(flow, msg);
      return;
    }
    // The winner has these already: counted and metered as forwarded, not sent twice.
    for (const msg of sent) this.countFromClient(flow, msg);
    // The answer that decided the race goes to the client like any later one.
    this.relayReply(flow, winner.firstReply);
    for (const msg of pending) this.forward(flow, msg);
  }

  /**
   * Multi-core workers: while the primary is asked about a client this worker has not seen,
   * its packets wait here (bounded), then go through the flow opened once the answer is in.
   * Returns false when no wait is needed (the client is known locally).
   */
  private awaitDecision(msg: Buffer, rinfo: RemoteInfo): boolean {
    const { address, port } = rinfo;
    const waiting = this.awaiting.get(address, port);
    if (waiting) {
      if (waiting.packets.length < MAX_PENDING_PACKETS) waiting.packets.push(msg);
      return true;
    }
    // Past maxFlows openFlow refuses (and counts it): do not queue what would be refused.
    if (this.flows.size + this.awaiting.size >= this.options.maxFlows) return false;
    const ready = this.deps.beforeDecide!(unmapIpv4(rinfo.address));
    if (!ready) return false;
    this.awaiting.set(address, port, { rinfo, packets: [msg] });
    const settle = () => {
      const queued = this.awaiting.get(address, port);
      this.awaiting.delete(address, port);
      if (!queued || !this.accepting || this.flows.has(address, port)) return;
      const flow = this.openFlow(queued.rinfo, this.now());
      if (flow) for (const packet of queued.packets) this.forward(flow, packet);
    };
    ready.then(settle, settle);
    return true;
  }

  private forward(flow: UdpFlow, msg: Buffer): void {
    this.countFromClient(flow, msg);
    if (flow.pending !== undefined) {
      if (flow.pending.length < MAX_PENDING_PACKETS) flow.pending.push(msg);
      return;
    }
    flow.upstream.send(msg);
  }

  /** A client's datagram of the flow: counted and metered (forward then sends or queues it). */
  private countFromClient(flow: UdpFlow, msg: Buffer): void {
    this.received.packets++;
    this.received.bytes += msg.length;
    flow.seen = true;
    flow.packetsIn++;
    flow.bytesIn += msg.length;
    flow.counters.packetsIn++;
    flow.counters.bytesIn += msg.length;
    flow.tap?.fromClient(msg);
  }

  /** A Connector's datagram for the flow's client: counted, metered, sent from the listening socket. */
  private relayReply(flow: UdpFlow, reply: Buffer): void {
    flow.seen = true;
    flow.packetsOut++;
    flow.bytesOut += reply.length;
    flow.counters.packetsOut++;
    flow.counters.bytesOut += reply.length;
    flow.tap?.fromConnector(reply);
    this.socket.send(reply, flow.clientPort, flow.replyAddress);
  }

  private openFlow(rinfo: RemoteInfo, now: number, probed?: ProbeWinner): UdpFlow | undefined {
    const { logger, stats, placer } = this.deps;
    const clientAddress = unmapIpv4(rinfo.address);
    if (this.flows.size >= this.options.maxFlows) {
      this.refusals.refuse(
        now,
        'max-flows',
        ErrorCodes.FLOW_LIMIT,
        { client: clientAddress, clientPort: rinfo.port, maxFlows: this.options.maxFlows },
        'UDP flow refused: listeners.pcoipUdp.maxFlows reached',
      );
      return undefined;
    }
    const limitKey = placer.keyFor(clientAddress);
    if (this.perClient.held(limitKey) >= this.perClient.limit) {
      this.refusals.refuse(
        now,
        'max-flows-per-client',
        ErrorCodes.FLOW_LIMIT,
        { client: clientAddress, clientPort: rinfo.port, maxFlowsPerClient: this.perClient.limit },
        'UDP flow refused: listeners.pcoipUdp.maxFlowsPerClient reached for this client',
      );
      return undefined;
    }
    // Placed by the probe: on the Connector that answered (its pin is not the address's), unless it can no longer take it.
    let decision = probed ? placer.decideOn(clientAddress, probed.connector.id, now) : placer.decide(clientAddress, now);
    if (probed && !decision.ok) decision = placer.decide(clientAddress, now);
    if (!decision.ok) {
      this.refusals.refuse(now, decision.reason, ErrorCodes.NO_CONNECTOR, { client: clientAddress }, 'UDP flow refused: no Connector may take this client');
      return undefined;
    }
    const connector = decision.connector;
    const { recvBufferSize, sendBufferSize } = this.options;
    const reused = probed && connector.id === probed.connector.id ? probed.upstream : undefined;
    const upstream =
      reused ??
      createSocket({
        type: isIP(connector.address) === 6 ? 'udp6' : 'udp4',
        recvBufferSize: recvBufferSize ?? FLOW_RECV_BUFFER_BYTES,
        ...(sendBufferSize ? { sendBufferSize } : {}),
      });
    const flow: UdpFlow = {
      clientAddress,
      clientPort: rinfo.port,
      replyAddress: rinfo.address,
      clientKey: decision.clientKey,
      lease: decision.lease,
      connector,
      upstream,
      counters: stats.opened('pcoipUdp', connector.id),
      pending: reused ? undefined : [],
      startedAt: now,
      lastActivity: now,
      seen: false,
      packetsIn: 0,
      packetsOut: 0,
      bytesIn: 0,
      bytesOut: 0,
      closed: false,
      recvBuffer: newBufferState(recvBufferSize ?? FLOW_RECV_BUFFER_BYTES),
      tap: undefined,
      probed: reused !== undefined,
    };
    const probe = reused ? { candidates: probed!.candidates, outcome: 'answered' as const, winner: connector.id } : undefined;
    flow.tap = this.deps.registry?.udpOpened({ clientAddress, clientPort: rinfo.port, connectorId: connector.id, now, counters: flow, probe });
    this.flows.set(rinfo.address, rinfo.port, flow);
    let same = this.byClient.get(decision.clientKey);
    if (!same) this.byClient.set(decision.clientKey, (same = new Set()));
    same.add(flow);
    this.perClient.tryAcquire(decision.clientKey);
    upstream.on('message', (reply) => this.relayReply(flow, reply));
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      const errno = ownExhaustion(err);
      if (errno) {
        // The flow's socket could not be opened: pcoip-lb's own limit, not the Connector's.
        this.refusals.fdExhausted(this.now(), errno, { client: clientAddress, clientPort: rinfo.port, connector: connector.id });
        return this.closeFlow(flow, 'fd-exhausted');
      }
      // A connected UDP socket reports an ICMP port-unreachable from the Connector as ECONNREFUSED.
      const unreachable = err.code === 'ECONNREFUSED' || err.code === 'EHOSTUNREACH' || err.code === 'ENETUNREACH';
      this.upstreamErrorLog.maybe(this.now(), (suppressed) =>
        logger.warn(
          {
            listener: 'pcoipUdp',
            client: clientAddress,
            clientPort: rinfo.port,
            connector: connector.id,
            code: ErrorCodes.UPSTREAM_UNREACHABLE,
            err: err.code ?? err.message,
            suppressed,
          },
          unreachable ? 'Connector unreachable on UDP; closing flow' : 'UDP upstream error; closing flow',
        ),
      );
      this.closeFlow(flow, unreachable ? 'connector-unreachable' : 'connector-error');
    });
    if (reused) return flow;
    upstream.connect(connector.ports.pcoip, connector.address, () => {
      if (flow.closed) return;
      const queued = flow.pending ?? [];
      flow.pending = undefined;
      for (const packet of queued) upstream.send(packet);
    });
    return flow;
  }

  private closeFlow(flow: UdpFlow, reason: UdpCloseReason, movedTo?: string): void {
    if (flow.closed) return;
    flow.closed = true;
    const now = this.now();
    this.flows.delete(flow.replyAddress, flow.clientPort);
    const same = this.byClient.get(flow.clientKey);
    same?.delete(flow);
    if (same?.size === 0) this.byClient.delete(flow.clientKey);
    try {
      flow.upstream.close();
    } catch {
      // already closed by an error
    }
    this.perClient.release(flow.clientKey);
    flow.lease.release(now);
    flow.tap?.closed(now);
    this.deps.stats.closed('pcoipUdp', flow.connector.id, now - flow.startedAt);
    this.deps.logger.info(
      {
        listener: 'pcoipUdp',
        client: flow.clientAddress,
        clientPort: flow.clientPort,
        connector: flow.connector.id,
        bytesIn: flow.bytesIn,
        bytesOut: flow.bytesOut,
        packetsIn: flow.packetsIn,
        packetsOut: flow.packetsOut,
        durationMs: now - flow.startedAt,
        reason,
        ...(reason === 'repinned' ? { movedTo: movedTo ?? null } : {}),
      },
      'flow closed',
    );
  }
}
