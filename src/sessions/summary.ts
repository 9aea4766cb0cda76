import type { DirectionFigures } from '../pcoip/media-meter.ts';
import type { ProbeOutcome } from './media-totals.ts';

/**
 * A PCoIP session as the operator sees it (GET /sessions, `pcoip-lb sessions`, the live page):
 * its broker exchange, its 4172/TCP connection and its UDP flow(s), and the media quality measured
 * on the UDP flows. Plain data: a worker process sends its fragments to the primary, which merges
 * the fragments of one session held by different workers (mergeFragments). Times are ms since the
 * epoch. No secrets: keys are short digests, session ids are redacted hints (as in /status).
 */
export type SessionState = 'logging-in' | 'allocated' | 'connected' | 'streaming' | 'ended';
export const SESSION_STATES: readonly SessionState[] = ['logging-in', 'allocated', 'connected', 'streaming', 'ended'];

export interface BrokerPart {
  firstAt: number;
  lastAt: number;
  /** Broker requests routed (terminate mode) or 443 connections (passthrough). */
  requests: number;
}

export interface TcpPart {
  clientPort: number;
  startedAt: number;
  endedAt: number | undefined;
  /** Client → Connector. */
  bytesIn: number;
  /** Connector → client. */
  bytesOut: number;
}

export interface UdpPart extends TcpPart {
  packetsIn: number;
  packetsOut: number;
  /** Set when the flow was placed by the probe fan-out (shared address). */
  probe: { candidates: string[]; outcome: ProbeOutcome; winner: string | undefined } | undefined;
  /** Media quality per direction, measured at the proxy (undefined when listeners.pcoipUdp.mediaQuality is off). */
  quality: { fromClient: DirectionFigures; fromConnector: DirectionFigures } | undefined;
}

/** What one process knows of a session. */
export interface SessionFragment {
  id: string;
  client: string;
  connector: string;
  /** Digest of the login's CLIENT-LOG-ID (terminate mode): joins the fragments of one login. */
  loginKey: string | undefined;
  /** Digest of the allocation's connect-tag fingerprint: the same in every process. */
  allocationKey: string | undefined;
  sni: string | undefined;
  /** Redacted (first 4 characters and length), as in /status. */
  sessionId: string | undefined;
  createdAt: number;
  allocatedAt: number | undefined;
  endedAt: number | undefined;
  broker: BrokerPart | undefined;
  tcp: TcpPart[];
  udp: UdpPart[];
  /** Multi-core: the worker(s) holding its parts. */
  workers?: number[];
}

export interface SessionQuality {
  /** Worst loss ratio over the session's UDP flows and directions. */
  lossRatio: number;
  /** Worst jitter, ms. */
  jitterMs: number;
  rekeys: number;
  /** At least one direction had its layout decided (there is something to judge). */
  measured: boolean;
}

export interface SessionView extends SessionFragment {
  state: SessionState;
  quality: SessionQuality;
  lastActivityAt: number;
}

const live = (p: TcpPart) => p.endedAt === undefined;

/**
 * A session's state from its parts. The 4172/TCP connection carries the session's control for its
 * whole life (docs/pcoip-protocol.md), so a session whose 4172 connection has closed is over, even while its UDP
 * flow lingers until the UDP idle timeout.
 */
export function sessionState(f: SessionFragment): SessionState {
  if (f.endedAt !== undefined || (f.tcp.length > 0 && !f.tcp.some(live))) return 'ended';
  if (f.udp.some((u) => live(u) && u.packetsIn > 0 && u.packetsOut > 0)) return 'streaming';
  if (f.tcp.some(live) || f.udp.some(live)) return 'connected';
  if (f.allocationKey !== undefined) return 'allocated';
  return 'logging-in';
}

export function sessionQuality(f: SessionFragment): SessionQuality {
  const q: SessionQuality = { lossRatio: 0, jitterMs: 0, rekeys: 0, measured: false };
  for (const u of f.udp) {
    if (!u.quality) continue;
    for (const d of [u.quality.fromClient, u.quality.fromConnector]) {
      if (d.layout === 'detecting' || d.layout === 'unknown') continue;
      q.measured = true;
      q.lossRatio = Math.max(q.lossRatio, d.lossRatio);
      q.jitterMs = Math.max(q.jitterMs, d.jitterMs);
      q.rekeys += d.rekeys;
    }
  }
  return q;
}

export function viewOf(f: SessionFragment): SessionView {
  const times = [f.createdAt, f.broker?.lastAt ?? 0, f.endedAt ?? 0, ...f.tcp.map((t) => t.endedAt ?? t.startedAt), ...f.udp.map((u) => u.endedAt ?? u.startedAt)];
  return { ...f, state: sessionState(f), quality: sessionQuality(f), lastActivityAt: Math.max(...times) };
}

/**
 * Joins the fragments of one session held by different processes (multi-core primary): by the
 * allocation (the same key in every worker, learned sessions being replicated), by the login's
 * log-id digest, and — fragments with neither (passthrough) — by client address and Connector
 * while they are live (a passthrough proxy cannot tell two sessions of one address apart).
 */
export function mergeFragments(fragments: readonly SessionFragment[]): SessionFragment[] {
  const parent = fragments.map((_, i) => i);
  const find = (i: number): number => (parent[i] === i ? i : (parent[i] = find(parent[i]!)));
  const byKey = new Map<string, number>();
  fragments.forEach((f, i) => {
    const keys: string[] = [];
    if (f.allocationKey) keys.push(`a:${f.allocationKey}`);
    if (f.loginKey) keys.push(`l:${f.loginKey}`);
    if (keys.length === 0 && f.endedAt === undefined) keys.push(`c:${f.client}|${f.connector}`);
    for (const k of keys) {
      const j = byKey.get(k);
      if (j === undefined) byKey.set(k, i);
      else parent[find(i)] = find(j);
    }
  });
  const groups = new Map<number, SessionFragment[]>();
  fragments.forEach((f, i) => {
    const root = find(i);
    const g = groups.get(root);
    if (g) g.push(f);
    else groups.set(root, [f]);
  });
  return [...groups.values()].map(combine);
}

function combine(group: SessionFragment[]): SessionFragment {
  if (group.length === 1) return group[0]!;
  // The allocated fragment names the session (its id is the one every process agrees on).
  const lead = group.find((f) => f.allocationKey !== undefined) ?? group.find((f) => f.loginKey !== undefined) ?? group[0]!;
  const brokers = group.map((f) => f.broker).filter((b) => b !== undefined);
  const ended = group.every((f) => f.endedAt !== undefined);
  const pick = <K extends keyof SessionFragment>(k: K): SessionFragment[K] => lead[k] ?? group.find((f) => f[k] !== undefined)?.[k] ?? lead[k];
  return {
    id: lead.id,
    client: lead.client,
    connector: lead.connector,
    loginKey: pick('loginKey'),
    allocationKey: pick('allocationKey'),
    sni: pick('sni'),
    sessionId: pick('sessionId'),
    createdAt: Math.min(...group.map((f) => f.createdAt)),
    allocatedAt: pick('allocatedAt'),
    endedAt: ended ? Math.max(...group.map((f) => f.endedAt!)) : undefined,
    broker:
      brokers.length === 0
        ? undefined
        : { firstAt: Math.min(...brokers.map((b) => b.firstAt)), lastAt: Math.max(...brokers.map((b) => b.lastAt)), requests: brokers.reduce((n, b) => n + b.requests, 0) },
    tcp: group.flatMap((f) => f.tcp),
    udp: group.flatMap((f) => f.udp),
    workers: [...new Set(group.flatMap((f) => f.workers ?? []))].sort((a, b) => a - b),
  };
}

export interface SessionQuery {
  connector?: string;
  /** Client address (exact). */
  client?: string;
  state?: SessionState;
  /** quality (default): worst loss, then worst jitter, first; started: newest first. */
  sort?: 'quality' | 'started';
  offset?: number;
  limit?: number;
}

export const MAX_PAGE = 500;
export const DEFAULT_PAGE = 100;

export interface SessionPage {
  total: number;
  offset: number;
  limit: number;
  sessions: SessionView[];
}

/** Filters, sorts and pages sessions (the API's one code path, whatever process gathered them). */
export function pageOf(fragments: readonly SessionFragment[], query: SessionQuery): SessionPage {
  const views = fragments
    .map(viewOf)
    .filter((v) => (query.connector === undefined || v.connector === query.connector) && (query.client === undefined || v.client === query.client) && (query.state === undefined || v.state === query.state));
  views.sort(query.sort === 'started' ? byNewest : byWorstQuality);
  const offset = Math.max(0, Math.floor(query.offset ?? 0));
  const limit = Math.min(MAX_PAGE, Math.max(1, Math.floor(query.limit ?? DEFAULT_PAGE)));
  return { total: views.length, offset, limit, sessions: views.slice(offset, offset + limit) };
}

function byNewest(a: SessionView, b: SessionView): number {
  return b.createdAt - a.createdAt || a.id.localeCompare(b.id);
}

/** Live before ended; then the worst loss, the worst jitter; then the newest. */
export function byWorstQuality(a: SessionView, b: SessionView): number {
  const ended = Number(a.state === 'ended') - Number(b.state === 'ended');
  return ended || b.quality.lossRatio - a.quality.lossRatio || b.quality.jitterMs - a.quality.jitterMs || byNewest(a, b);
}
