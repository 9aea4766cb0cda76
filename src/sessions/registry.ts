import { hash32 } from '../balance/hash.ts';
import { DirectionMeter } from '../pcoip/media-meter.ts';
import type { SessionRecord } from '../state/changes.ts';
import {
  JITTER_SECONDS_BUCKETS,
  LOSS_RATIO_BUCKETS,
  addMeter,
  emptyMediaTotals,
  observe,
  sumMediaTotals,
  type MediaTotalsSnapshot,
  type ProbeOutcome,
} from './media-totals.ts';
import type { BrokerPart, SessionFragment, TcpPart, UdpPart } from './summary.ts';

/**
 * The one owner of the per-session view in a process (docs/sessions.md, docs/state.md): which
 * broker exchange, 4172/TCP connection and UDP flows belong together, and their media quality.
 * Observability only: routing never reads it, except the UDP probe fan-out asking which
 * Connectors hold live sessions of an address (udpCandidates).
 *
 * Fed by the listeners (brokerRequest, tcpOpened, udpOpened — each flow gets a tap it reports to)
 * and by the SessionTable's learned allocations, local or replicated (learned). Linking, newest
 * first, within one client address and Connector:
 *  - broker requests of one login share its CLIENT-LOG-ID (digest); without one, the newest
 *    login of that address and Connector seen within the login timeout;
 *  - an allocation joins the login whose allocate request it answers (`answering`), else
 *    the newest login of its address and Connector not yet allocated;
 *  - 4172/TCP joins the allocation its SNI names (sniRouting), else the newest allocation without
 *    a 4172 connection, else the newest login (passthrough);
 *  - a UDP flow joins the newest session holding a live 4172 connection and no live UDP flow,
 *    else the newest claimed allocation (its 4172 connection may be in another worker).
 * Behind one NAT address on one Connector this can swap two users' flows; routing is unaffected.
 *
 * Bounded: at most `maxSessions` sessions (ended ones go first), `MAX_PARTS` flows listed per
 * session, ended sessions listed for `keepEndedMs`. Pure apart from the clock the meters sample
 * (media-meter.ts); every other time is an argument.
 */
export interface SessionRegistryOptions {
  maxSessions: number;
  /** Ended sessions stay listed this long. */
  keepEndedMs: number;
  /** A login or an allocation that goes no further within this is ended. */
  loginTimeoutMs: number;
  /** Media quality meters on UDP flows (listeners.pcoipUdp.mediaQuality). */
  metering: boolean;
}

/** A flow's link to its session; `closed` is called once when the flow ends. */
export interface FlowTap {
  closed(now: number): void;
}

/** What a UDP flow's tap reads of the flow (the listener keeps these counters anyway). */
export interface UdpCounters {
  readonly packetsIn: number;
  readonly packetsOut: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
}

const MAX_PARTS = 16;
/**
 * Logins not yet allocated kept per client address. A CLIENT-LOG-ID is the client's word, sent
 * before any Connector has answered: without a bound one address could fill the view (and make
 * every look-up of its address walk them all) by sending a new one per request. Past it, the
 * address's oldest such login goes; routing never reads the view, so only the listing loses it.
 */
export const MAX_LOGINS_PER_ADDRESS = 64;
const ID_CHARS = 12;

interface TcpLink {
  part: TcpPart;
  bytes: (() => { bytesIn: number; bytesOut: number }) | undefined;
}

interface Session {
  id: string;
  /** Where its 4172 flows come from (else its login): shown, and what the UDP candidates are looked up by. */
  clientAddress: string;
  /** Every address a part came from (a NAT pool spreads one login over several): all index it. */
  addresses: Set<string>;
  connectorId: string;
  loginKey: string | undefined;
  allocationKey: string | undefined;
  sni: string | undefined;
  sessionIdHint: string | undefined;
  createdAt: number;
  allocatedAt: number | undefined;
  claimedAt: number | undefined;
  endedAt: number | undefined;
  lastAt: number;
  /** Something happened in this process (not only a replicated allocation). */
  local: boolean;
  broker: BrokerPart | undefined;
  tcp: TcpLink[];
  udp: UdpTap[];
}

/** A short, stable digest (not reversible into the value at this length; ids are not secrets). */
export function digest(value: string): string {
  return (hash32(value, 0x15e55) * 2 ** 21 + (hash32(value, 0x1d) >>> 11)).toString(36).padStart(ID_CHARS, '0').slice(-ID_CHARS);
}

/**
 * A UDP flow's tap: the listener calls fromClient / fromConnector for every datagram (the meters'
 * two u32 reads and a few additions, a clock read on ~9 % of them; with metering off, nothing).
 */
export class UdpTap implements FlowTap {
  readonly part: UdpPart;
  readonly fromClientMeter: DirectionMeter | undefined;
  readonly fromConnectorMeter: DirectionMeter | undefined;
  private readonly counters: UdpCounters;
  private readonly onClose: (tap: UdpTap, now: number) => void;
  session: Session | undefined;

  constructor(part: UdpPart, counters: UdpCounters, metering: boolean, onClose: (tap: UdpTap, now: number) => void) {
    this.part = part;
    this.counters = counters;
    this.onClose = onClose;
    this.fromClientMeter = metering ? new DirectionMeter() : undefined;
    this.fromConnectorMeter = metering ? new DirectionMeter() : undefined;
  }

  fromClient(msg: Buffer): void {
    this.fromClientMeter?.observe(msg);
  }

  fromConnector(msg: Buffer): void {
    this.fromConnectorMeter?.observe(msg);
  }

  get live(): boolean {
    return this.part.endedAt === undefined;
  }

  /** The part with its counters and quality as of now. */
  snapshot(): UdpPart {
    const c = this.counters;
    const quality = this.fromClientMeter && this.fromConnectorMeter ? { fromClient: this.fromClientMeter.figures(), fromConnector: this.fromConnectorMeter.figures() } : undefined;
    if (!this.live) return { ...this.part };
    return { ...this.part, packetsIn: c.packetsIn, packetsOut: c.packetsOut, bytesIn: c.bytesIn, bytesOut: c.bytesOut, quality };
  }

  closed(now: number): void {
    if (!this.live) return;
    this.fromClientMeter?.finish();
    this.fromConnectorMeter?.finish();
    Object.assign(this.part, this.snapshot(), { endedAt: now });
    this.onClose(this, now);
  }
}

export class SessionRegistry {
  private readonly options: SessionRegistryOptions;
  private readonly sessions = new Map<string, Session>();
  private readonly byClient = new Map<string, Set<Session>>();
  private readonly byLoginKey = new Map<string, Session>();
  private readonly byAllocation = new Map<string, Session>();
  private readonly bySni = new Map<string, Session>();
  /** Closed flows' counts (monotonic); live meters are added when a snapshot is taken. */
  private readonly retired: MediaTotalsSnapshot = emptyMediaTotals();
  private readonly liveUdp = new Set<UdpTap>();
  /** Ended sessions in the order they ended: the first to go past maxSessions, without a scan. */
  private readonly ended = new Set<Session>();
  private sequence = 0;
  /** Set by `answering` while its call runs (the allocation is learned in the same call stack). */
  private answeredLogin: Session | undefined;

  constructor(options: SessionRegistryOptions) {
    this.options = options;
  }

  get size(): number {
    return this.sessions.size;
  }

  get metering(): boolean {
    return this.options.metering;
  }

  setMetering(on: boolean): void {
    this.options.metering = on;
  }

  // ---- what the listeners report -------------------------------------------------------------

  /** A broker request routed to `connectorId` (terminate mode), with the login's CLIENT-LOG-ID if any. */
  brokerRequest(clientAddress: string, connectorId: string, logId: string | undefined, now: number): void {
    const loginKey = logId ? digest(logId) : undefined;
    let s = loginKey ? this.byLoginKey.get(loginKey) : this.newest(clientAddress, (x) => x.connectorId === connectorId && x.loginKey === undefined && isLogin(x) && now - x.lastAt <= this.options.loginTimeoutMs);
    if (s && s.endedAt !== undefined) s = undefined;
    if (!s) {
      this.boundLogins(clientAddress);
      // A new login that reuses an ended one's log id gets an id of its own.
      s = this.create(loginKey && !this.sessions.has(`l${loginKey}`) ? `l${loginKey}` : undefined, clientAddress, connectorId, now);
      if (loginKey) (s.loginKey = loginKey), this.byLoginKey.set(loginKey, s);
    }
    // A login's requests normally stay on one Connector; if they moved (failover), the session moved.
    if (s.allocationKey === undefined) s.connectorId = connectorId;
    s.broker ??= { firstAt: now, lastAt: now, requests: 0 };
    s.broker.lastAt = now;
    s.broker.requests++;
    this.touch(s, now);
  }

  /**
   * Runs `learn` (which learns an allocation here, synchronously, or refuses it) as the answer to
   * the allocate-resource request of the login with this CLIENT-LOG-ID (the broker relay knows which
   * request a response answers): an allocation learned meanwhile joins that login rather than the
   * newest one of the address, which behind one NAT may be another user's. Scoped, so an allocation
   * refused by the table leaves no hint for the next one.
   */
  answering<T>(logId: string | undefined, learn: () => T): T {
    this.answeredLogin = logId ? this.byLoginKey.get(digest(logId)) : undefined;
    try {
      return learn();
    } finally {
      this.answeredLogin = undefined;
    }
  }

  /** A learned session record (SessionTable.onLearn), learned here or replicated. */
  learned(record: SessionRecord, origin: 'local' | 'remote', now: number): void {
    if (record.kind === 'allocation') {
      const key = digest(record.tagFingerprint);
      const answered = origin === 'local' ? this.answeredLogin : undefined;
      this.answeredLogin = undefined;
      if (this.byAllocation.has(key)) return;
      const fits = (x: Session) => x.connectorId === record.connectorId && x.allocationKey === undefined && isLogin(x);
      let s = answered && fits(answered) ? answered : this.newest(record.clientAddress, fits);
      if (!s) s = this.create(`a${key}`, record.clientAddress, record.connectorId, record.learnedAt);
      else {
        // The allocation's id is the one every process agrees on: the session takes it.
        this.sessions.delete(s.id);
        s.id = `a${key}`;
        this.sessions.set(s.id, s);
      }
      this.seenFrom(s, record.clientAddress);
      s.allocationKey = key;
      s.allocatedAt = record.learnedAt;
      s.sessionIdHint = record.sessionIdHint || undefined;
      if (record.sni) (s.sni = record.sni.toLowerCase()), this.bySni.set(s.sni, s);
      this.byAllocation.set(key, s);
      this.touch(s, now, origin === 'local');
    } else if (record.kind === 'allocation-claimed') {
      const s = this.bySni.get(record.sni);
      if (s) s.claimedAt ??= record.at;
    }
  }

  /** A 4172/TCP connection reached `connectorId` (or, listener 'broker', a passthrough 443 connection). */
  tcpOpened(listener: 'broker' | 'pcoipTcp', info: { clientAddress: string; clientPort: number; connectorId: string; sni?: string; now: number; bytes?: () => { bytesIn: number; bytesOut: number } }): FlowTap {
    const { clientAddress, connectorId, now } = info;
    if (listener === 'broker') {
      this.brokerRequest(clientAddress, connectorId, undefined, now);
      return NO_TAP;
    }
    const here = (x: Session) => x.connectorId === connectorId && x.endedAt === undefined;
    const bySni = info.sni ? this.bySni.get(info.sni.toLowerCase()) : undefined;
    const s =
      (bySni && here(bySni) ? bySni : undefined) ??
      this.newest(clientAddress, (x) => here(x) && x.allocationKey !== undefined && x.tcp.length === 0) ??
      this.newest(clientAddress, (x) => here(x) && isLogin(x) && x.allocationKey === undefined && now - x.lastAt <= this.options.loginTimeoutMs) ??
      this.create(undefined, clientAddress, connectorId, now);
    const link: TcpLink = { part: { clientPort: info.clientPort, startedAt: now, endedAt: undefined, bytesIn: 0, bytesOut: 0 }, bytes: info.bytes };
    this.seenFrom(s, clientAddress);
    s.claimedAt ??= now;
    pushBounded(s.tcp, link);
    this.touch(s, now);
    return {
      closed: (at: number) => {
        if (link.part.endedAt !== undefined) return;
        Object.assign(link.part, link.bytes?.() ?? {}, { endedAt: at });
        link.bytes = undefined;
        this.partClosed(s, at);
      },
    };
  }

  /** A UDP flow was opened to `connectorId`; the returned tap meters its datagrams. */
  udpOpened(info: { clientAddress: string; clientPort: number; connectorId: string; now: number; counters: UdpCounters; probe?: UdpPart['probe'] }): UdpTap {
    const { clientAddress, connectorId, now } = info;
    const here = (x: Session) => x.connectorId === connectorId && x.endedAt === undefined;
    const s =
      this.newest(clientAddress, (x) => here(x) && x.tcp.some((t) => t.part.endedAt === undefined) && !x.udp.some((u) => u.live)) ??
      this.newest(clientAddress, (x) => here(x) && x.tcp.some((t) => t.part.endedAt === undefined)) ??
      this.newest(clientAddress, (x) => here(x) && x.claimedAt !== undefined && !x.udp.some((u) => u.live)) ??
      this.newest(clientAddress, (x) => here(x) && x.allocationKey !== undefined && !x.udp.some((u) => u.live)) ??
      this.create(undefined, clientAddress, connectorId, now);
    const part: UdpPart = { clientPort: info.clientPort, startedAt: now, endedAt: undefined, bytesIn: 0, bytesOut: 0, packetsIn: 0, packetsOut: 0, probe: info.probe, quality: undefined };
    const tap = new UdpTap(part, info.counters, this.options.metering, (t, at) => this.udpClosed(t, at));
    tap.session = s;
    this.seenFrom(s, clientAddress);
    pushBounded(s.udp, tap);
    this.liveUdp.add(tap);
    this.touch(s, now);
    return tap;
  }

  countProbe(outcome: ProbeOutcome, losingDatagrams = 0): void {
    this.retired.probes[outcome]++;
    this.retired.probeDatagrams += losingDatagrams;
  }

  countAmbiguousSni(): void {
    this.retired.ambiguousSni++;
  }

  // ---- what readers ask ----------------------------------------------------------------------

  /**
   * Connectors holding a live session of this client address — a live 4172/TCP connection here,
   * or a claimed allocation (its connection may be in another worker) — at most `max`: sessions
   * still waiting for their media (no live UDP flow here) first, as the new flow is most likely
   * theirs; newest first within each group.
   */
  udpCandidates(clientAddress: string, max: number): string[] {
    const set = this.byClient.get(clientAddress);
    if (!set) return [];
    const scored: Array<{ id: string; waiting: boolean; at: number }> = [];
    for (const s of set) {
      if (s.endedAt !== undefined) continue;
      const liveTcp = s.tcp.filter((t) => t.part.endedAt === undefined).map((t) => t.part.startedAt);
      const at = liveTcp.length > 0 ? Math.max(...liveTcp) : s.claimedAt;
      if (at !== undefined) scored.push({ id: s.connectorId, waiting: !s.udp.some((u) => u.live), at });
    }
    scored.sort((a, b) => Number(b.waiting) - Number(a.waiting) || b.at - a.at);
    return [...new Set(scored.map((c) => c.id))].slice(0, max);
  }

  /** Whether `connectorId` holds a live session of this address (a re-pin must not cut its UDP flow). */
  hasLiveSession(clientAddress: string, connectorId: string): boolean {
    for (const s of this.byClient.get(clientAddress) ?? []) {
      if (s.endedAt === undefined && s.connectorId === connectorId && (s.claimedAt !== undefined || s.tcp.some((t) => t.part.endedAt === undefined))) return true;
    }
    return false;
  }

  /** The sessions this process has parts of, as plain data (sweeps first). */
  fragments(now: number, worker?: number): SessionFragment[] {
    this.sweep(now);
    const out: SessionFragment[] = [];
    for (const s of this.sessions.values()) if (s.local) out.push(this.fragment(s, worker));
    return out;
  }

  /** Aggregates for /metrics: closed flows' counts plus the live meters' monotonic ones. */
  mediaTotals(): MediaTotalsSnapshot {
    const live = emptyMediaTotals();
    for (const tap of this.liveUdp) {
      if (tap.fromClientMeter) addMeter(live.directions.fromClient, tap.fromClientMeter);
      if (tap.fromConnectorMeter) addMeter(live.directions.fromConnector, tap.fromConnectorMeter);
    }
    return sumMediaTotals([this.retired, live]);
  }

  /** Ends logins and allocations that went nowhere; forgets ended sessions past keepEndedMs. */
  sweep(now: number): void {
    const { loginTimeoutMs, keepEndedMs } = this.options;
    for (const s of this.sessions.values()) {
      if (s.endedAt !== undefined) {
        if (now - s.endedAt > keepEndedMs) this.remove(s);
        continue;
      }
      const hasParts = s.tcp.length > 0 || s.udp.length > 0;
      if (!hasParts && now - s.lastAt > loginTimeoutMs) this.end(s, s.lastAt);
    }
  }

  // ---- internals -----------------------------------------------------------------------------

  private fragment(s: Session, worker: number | undefined): SessionFragment {
    return {
      id: s.id,
      client: s.clientAddress,
      connector: s.connectorId,
      loginKey: s.loginKey,
      allocationKey: s.allocationKey,
      sni: s.sni,
      sessionId: s.sessionIdHint,
      createdAt: s.createdAt,
      allocatedAt: s.allocatedAt,
      endedAt: s.endedAt,
      broker: s.broker ? { ...s.broker } : undefined,
      tcp: s.tcp.map((t) => ({ ...t.part, ...(t.part.endedAt === undefined ? (t.bytes?.() ?? {}) : {}) })),
      udp: s.udp.map((u) => u.snapshot()),
      ...(worker !== undefined ? { workers: [worker] } : {}),
    };
  }

  private udpClosed(tap: UdpTap, now: number): void {
    this.liveUdp.delete(tap);
    const meters = [
      ['fromClient', tap.fromClientMeter],
      ['fromConnector', tap.fromConnectorMeter],
    ] as const;
    for (const [d, m] of meters) {
      if (!m) continue;
      addMeter(this.retired.directions[d], m);
      const f = m.figures();
      if (f.layout === 'transport-header' || f.layout === 'no-transport-header') {
        observe(this.retired.lossRatio[d], LOSS_RATIO_BUCKETS, f.lossRatio);
        observe(this.retired.jitterSeconds[d], JITTER_SECONDS_BUCKETS, f.jitterMs / 1000);
      }
    }
    if (tap.fromClientMeter) this.retired.flowsByLayout[tap.fromClientMeter.detectedLayout]++;
    if (tap.session) this.partClosed(tap.session, now);
  }

  /** A flow of `s` ended: the session ends with its last flow. */
  private partClosed(s: Session, now: number): void {
    this.touch(s, now);
    if (s.tcp.some((t) => t.part.endedAt === undefined) || s.udp.some((u) => u.live)) return;
    this.end(s, now);
  }

  private end(s: Session, at: number): void {
    s.endedAt = at;
    this.ended.add(s);
  }

  private create(id: string | undefined, clientAddress: string, connectorId: string, now: number): Session {
    const s: Session = {
      id: id ?? `s${digest(`${clientAddress}|${connectorId}|${now}|${++this.sequence}|${process.pid}`)}`,
      clientAddress,
      addresses: new Set([clientAddress]),
      connectorId,
      loginKey: undefined,
      allocationKey: undefined,
      sni: undefined,
      sessionIdHint: undefined,
      createdAt: now,
      allocatedAt: undefined,
      claimedAt: undefined,
      endedAt: undefined,
      lastAt: now,
      local: false,
      broker: undefined,
      tcp: [],
      udp: [],
    };
    this.sessions.set(s.id, s);
    let set = this.byClient.get(clientAddress);
    if (!set) this.byClient.set(clientAddress, (set = new Set()));
    set.add(s);
    this.bound(s);
    return s;
  }

  /** A part of `s` came from `address` (its 4172 flows, or its allocate request): it is found and shown by it. */
  private seenFrom(s: Session, address: string): void {
    s.clientAddress = address;
    if (s.addresses.has(address)) return;
    s.addresses.add(address);
    let set = this.byClient.get(address);
    if (!set) this.byClient.set(address, (set = new Set()));
    set.add(s);
  }

  /** Activity on `s`; `local`: seen in this process (not only replicated), so it is listed. */
  private touch(s: Session, now: number, local = true): void {
    s.lastAt = Math.max(s.lastAt, now);
    if (local) s.local = true;
  }

  /** The newest session of this address matching `pick` (sessions are few per address). */
  private newest(clientAddress: string, pick: (s: Session) => boolean): Session | undefined {
    let best: Session | undefined;
    for (const s of this.byClient.get(clientAddress) ?? []) if (pick(s) && (!best || s.createdAt >= best.createdAt)) best = s;
    return best;
  }

  private remove(s: Session): void {
    this.sessions.delete(s.id);
    this.ended.delete(s);
    for (const address of s.addresses) {
      const set = this.byClient.get(address);
      set?.delete(s);
      if (set?.size === 0) this.byClient.delete(address);
    }
    if (s.loginKey && this.byLoginKey.get(s.loginKey) === s) this.byLoginKey.delete(s.loginKey);
    if (s.allocationKey && this.byAllocation.get(s.allocationKey) === s) this.byAllocation.delete(s.allocationKey);
    if (s.sni && this.bySni.get(s.sni) === s) this.bySni.delete(s.sni);
  }

  /** Past the cap, ended sessions go first (the earliest ended), then those without a live flow (oldest first). */
  private bound(keep: Session): void {
    for (const s of this.ended) {
      if (this.sessions.size <= this.options.maxSessions) return;
      this.remove(s);
    }
    if (this.sessions.size <= this.options.maxSessions) return;
    for (const s of this.sessions.values()) {
      if (this.sessions.size <= this.options.maxSessions) return;
      if (s !== keep && !s.tcp.some((t) => t.part.endedAt === undefined) && !s.udp.some((u) => u.live)) this.remove(s);
    }
  }

  /** Makes room for one more login of this address (MAX_LOGINS_PER_ADDRESS): its oldest unallocated login goes. */
  private boundLogins(clientAddress: string): void {
    let count = 0;
    let oldest: Session | undefined;
    for (const s of this.byClient.get(clientAddress) ?? []) {
      if (!isLogin(s) || s.allocationKey !== undefined) continue;
      count++;
      if (!oldest || s.createdAt < oldest.createdAt) oldest = s;
    }
    if (count >= MAX_LOGINS_PER_ADDRESS && oldest) this.remove(oldest);
  }
}

/** Still only a login or an allocation: no 4172 flow yet. */
function isLogin(s: Session): boolean {
  return s.endedAt === undefined && s.tcp.length === 0 && s.udp.length === 0;
}

function pushBounded<T extends { part: TcpPart } | UdpTap>(list: T[], item: T): void {
  list.push(item);
  if (list.length <= MAX_PARTS) return;
  const i = list.findIndex((x) => ('live' in x ? !x.live : x.part.endedAt !== undefined));
  list.splice(i >= 0 ? i : 0, 1);
}

const NO_TAP: FlowTap = { closed: () => undefined };
