import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { isIP } from 'node:net';
import type { Logger } from '../logger.ts';
import { RateLimitedLog } from '../logger.ts';
import { admitsPinnedClients, type ConnectorView, type Pool } from '../pool/pool.ts';
import type { SessionRegistry } from '../sessions/registry.ts';
import { unmapIpv4 } from '../util/address.ts';
import { AddressPortTable } from './address-port-table.ts';

/**
 * The UDP probe fan-out for a shared address (listeners.pcoipUdp.probe; experimental, unverified
 * with real Connectors — docs/sessions.md). A new UDP flow cannot be told apart by its bytes: the
 * SPI is negotiated inside TLS. When the flow's address has live sessions on several Connectors
 * (a live 4172/TCP connection here, or a claimed allocation), its first datagrams go to each of
 * them — sessions without a UDP flow yet first, then the newest; at most `candidates`, at most
 * `datagrams` each — and the flow is
 * pinned to the first that answers: a Security Gateway drops datagrams of SPIs it did not issue.
 * Nothing answers within `deadline`: the flow is placed by address affinity, as without the probe.
 * One candidate (or none): nothing changes. Every outcome is counted; each probe logs one line
 * (rate-limited per outcome).
 */
export interface UdpProbeOptions {
  candidates: number;
  datagrams: number;
  deadlineMs: number;
  recvBufferSize: number;
  sendBufferSize?: number;
}

export interface ProbeWinner {
  connector: ConnectorView;
  /** Connected to the winner: it becomes the flow's upstream (the Connector keeps seeing one source port). */
  upstream: UdpSocket;
  /** The answer that decided it (to be forwarded to the client). */
  firstReply: Buffer;
  candidates: string[];
}

export interface UdpProbeDeps {
  pool: Pool;
  registry: SessionRegistry;
  logger: Logger;
  now: () => number;
  /**
   * The probe is over: open the flow — on the winner, or (winner undefined) by address affinity.
   * `sent`: datagrams the winner already received (count and meter them, do not resend);
   * `pending`: datagrams to forward through the new flow.
   */
  settle(rinfo: RemoteInfo, winner: ProbeWinner | undefined, sent: Buffer[], pending: Buffer[]): void;
}

/** Datagrams held per probe (the flow's pending queue holds as many while connecting). */
const MAX_QUEUED = 64;

interface Candidate {
  connector: ConnectorView;
  socket: UdpSocket;
  connected: boolean;
  /** Datagrams sent to it (the first `sent` of the probe's queue). */
  sent: number;
}

interface Probe {
  rinfo: RemoteInfo;
  clientAddress: string;
  candidates: Candidate[];
  queued: Buffer[];
  dropped: number;
  timer: NodeJS.Timeout;
  done: boolean;
}

export class UdpProbe {
  private readonly options: UdpProbeOptions;
  private readonly deps: UdpProbeDeps;
  private readonly probes = new AddressPortTable<Probe>();
  private readonly outcomeLog = new Map<string, RateLimitedLog>();

  constructor(options: UdpProbeOptions, deps: UdpProbeDeps) {
    this.options = options;
    this.deps = deps;
  }

  /** Probes in progress (they count against listeners.pcoipUdp.maxFlows like flows). */
  get active(): number {
    return this.probes.size;
  }

  /**
   * A datagram from a source with no flow. True: the probe took it (one is running for this
   * source, or it just started one); false: open the flow as usual.
   */
  handle(msg: Buffer, rinfo: RemoteInfo): boolean {
    const running = this.probes.get(rinfo.address, rinfo.port);
    if (running) {
      this.feed(running, msg);
      return true;
    }
    const clientAddress = unmapIpv4(rinfo.address);
    const { registry, pool } = this.deps;
    const connectors = registry
      .udpCandidates(clientAddress, this.options.candidates)
      .map((id) => pool.get(id))
      .filter((c): c is ConnectorView => c !== undefined && admitsPinnedClients(c));
    if (connectors.length < 2) {
      registry.countProbe(connectors.length === 1 ? 'single-candidate' : 'skipped');
      return false;
    }
    const probe: Probe = {
      rinfo,
      clientAddress,
      candidates: [],
      queued: [],
      dropped: 0,
      timer: setTimeout(() => this.finish(probe, undefined), this.options.deadlineMs),
      done: false,
    };
    this.probes.set(rinfo.address, rinfo.port, probe);
    for (const connector of connectors) probe.candidates.push(this.candidate(probe, connector));
    this.feed(probe, msg);
    return true;
  }

  /** Ends every probe at once (shutdown): their sockets close, no flow is opened. */
  close(): void {
    for (const p of this.probes.values()) {
      p.done = true;
      clearTimeout(p.timer);
      for (const c of p.candidates) closeQuietly(c.socket);
    }
    this.probes.clear();
  }

  private candidate(probe: Probe, connector: ConnectorView): Candidate {
    const { recvBufferSize, sendBufferSize } = this.options;
    const socket = createSocket({ type: isIP(connector.address) === 6 ? 'udp6' : 'udp4', recvBufferSize, ...(sendBufferSize ? { sendBufferSize } : {}) });
    const c: Candidate = { connector, socket, connected: false, sent: 0 };
    socket.on('message', (reply) => this.finish(probe, c, reply));
    // A candidate that cannot be reached (ICMP port unreachable) is simply out of the race.
    socket.on('error', () => undefined);
    socket.connect(connector.ports.pcoip, connector.address, () => {
      c.connected = true;
      if (probe.done) return;
      for (let i = 0; i < c.sent; i++) socket.send(probe.queued[i]!);
    });
    return c;
  }

  private feed(probe: Probe, msg: Buffer): void {
    if (probe.queued.length >= MAX_QUEUED) {
      probe.dropped++;
      return;
    }
    probe.queued.push(msg);
    for (const c of probe.candidates) {
      if (c.sent >= this.options.datagrams || c.sent !== probe.queued.length - 1) continue;
      c.sent++;
      if (c.connected) c.socket.send(msg);
    }
  }

  private finish(probe: Probe, winner: Candidate | undefined, reply?: Buffer): void {
    if (probe.done) return;
    probe.done = true;
    clearTimeout(probe.timer);
    this.probes.delete(probe.rinfo.address, probe.rinfo.port);
    const ids = probe.candidates.map((c) => c.connector.id);
    let losing = 0;
    for (const c of probe.candidates) {
      if (c === winner) continue;
      losing += c.sent;
      closeQuietly(c.socket);
    }
    const { registry, logger, now } = this.deps;
    registry.countProbe(winner ? 'answered' : 'none-answered', losing);
    const outcome = winner ? 'answered' : 'none-answered';
    let log = this.outcomeLog.get(outcome);
    if (!log) this.outcomeLog.set(outcome, (log = new RateLimitedLog()));
    log.maybe(now(), (suppressed) =>
      logger.info(
        {
          listener: 'pcoipUdp',
          client: probe.clientAddress,
          clientPort: probe.rinfo.port,
          candidates: ids,
          connector: winner?.connector.id ?? null,
          datagrams: probe.queued.length,
          ...(probe.dropped > 0 ? { droppedWhileProbing: probe.dropped } : {}),
          suppressed,
        },
        winner
          ? `UDP probe: ${winner.connector.id} answered of ${ids.join(', ')}; flow pinned to it`
          : `UDP probe: none of ${ids.join(', ')} answered within ${this.options.deadlineMs} ms; placing the flow by address affinity`,
      ),
    );
    if (!winner) return this.deps.settle(probe.rinfo, undefined, [], probe.queued);
    winner.socket.removeAllListeners('message');
    winner.socket.removeAllListeners('error');
    const sent = probe.queued.slice(0, winner.sent);
    const pending = probe.queued.slice(winner.sent);
    this.deps.settle(probe.rinfo, { connector: winner.connector, upstream: winner.socket, firstReply: reply!, candidates: ids }, sent, pending);
  }
}

function closeQuietly(socket: UdpSocket): void {
  try {
    socket.close();
  } catch {
    // already closed
  }
}
