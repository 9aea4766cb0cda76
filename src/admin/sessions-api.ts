import { isIP } from 'node:net';
import { ErrorCodes } from '../errors.ts';
import type { DirectionFigures } from '../pcoip/media-meter.ts';
import { DEFAULT_PAGE, MAX_PAGE, SESSION_STATES, pageOf, type SessionQuery, type SessionState, type SessionView, type TcpPart, type UdpPart } from '../sessions/summary.ts';
import type { SessionViews } from './view.ts';

/**
 * `GET /sessions`: one page of sessions (docs/sessions.md), worst media quality first.
 * Query: `connector`, `client` (an IP address), `state`, `sort` (quality | started), `offset`,
 * `limit` (1–500, default 100). Answers `{ total, offset, limit, sessions: [...] }`; a bad
 * parameter is a 400 with PLB_E_ADMIN_REQUEST. Secrets stay out as in /status: session ids are
 * redacted hints, cookies, log ids and connect tags never appear.
 */
export interface SessionJson {
  id: string;
  client: string;
  connector: string;
  state: SessionState;
  startedAt: string;
  endedAt: string | null;
  lastActivityAt: string;
  ageSeconds: number;
  sni: string | null;
  sessionId: string | null;
  broker: { firstAt: string; lastAt: string; requests: number } | null;
  tcp: Array<FlowJson>;
  udp: Array<FlowJson & { packetsIn: number; packetsOut: number; probe: UdpPart['probe'] | null; quality: { fromClient: DirectionFigures; fromConnector: DirectionFigures } | null }>;
  /** Worst over the UDP flows and directions; lossPercent is 0–100. */
  quality: { lossPercent: number; jitterMs: number; rekeys: number; measured: boolean };
  workers?: number[];
}

interface FlowJson {
  clientPort: number;
  startedAt: string;
  endedAt: string | null;
  bytesIn: number;
  bytesOut: number;
}

export interface SessionsPageJson {
  total: number;
  offset: number;
  limit: number;
  sessions: SessionJson[];
}

export type SessionsAnswer = { status: 200; body: SessionsPageJson } | { status: 400; body: { error: { code: string; message: string } } };

/** The answer to `GET /sessions?…` (the server sends it as JSON). */
export async function sessionsAnswer(views: SessionViews, url: string | undefined, now = Date.now()): Promise<SessionsAnswer> {
  const parsed = parseQuery(new URL(url ?? '/', 'http://admin.invalid').searchParams);
  if ('error' in parsed) return { status: 400, body: { error: { code: ErrorCodes.ADMIN_REQUEST, message: parsed.error } } };
  const page = pageOf(await views.fragments(now), parsed);
  return { status: 200, body: { ...page, sessions: page.sessions.map((s) => sessionJson(s, now)) } };
}

/** A query value echoed in an error, cut so a hostile URL cannot make the answer as big as itself. */
function shown(value: string): string {
  return value.length <= 64 ? value : `${value.slice(0, 64)}…`;
}

export function parseQuery(params: URLSearchParams): SessionQuery | { error: string } {
  const query: SessionQuery = {};
  for (const key of params.keys()) if (!['connector', 'client', 'state', 'sort', 'offset', 'limit'].includes(key)) return { error: `unknown query parameter "${shown(key)}" (use connector, client, state, sort, offset, limit)` };
  const connector = params.get('connector');
  if (connector !== null) query.connector = connector;
  const client = params.get('client');
  if (client !== null) {
    if (isIP(client) === 0) return { error: `client "${shown(client)}" is not an IPv4 or IPv6 address` };
    query.client = client;
  }
  const state = params.get('state');
  if (state !== null) {
    if (!(SESSION_STATES as readonly string[]).includes(state)) return { error: `state "${shown(state)}" is not one of ${SESSION_STATES.join(', ')}` };
    query.state = state as SessionState;
  }
  const sort = params.get('sort');
  if (sort !== null) {
    if (sort !== 'quality' && sort !== 'started') return { error: `sort "${shown(sort)}" is not quality or started` };
    query.sort = sort;
  }
  for (const [key, min, max] of [
    ['offset', 0, Number.MAX_SAFE_INTEGER],
    ['limit', 1, MAX_PAGE],
  ] as const) {
    const text = params.get(key);
    if (text === null) continue;
    const n = Number(text);
    if (!/^\d+$/.test(text) || n < min || n > max) return { error: `${key} must be a whole number from ${min} to ${max}${key === 'limit' ? ` (default ${DEFAULT_PAGE})` : ''}` };
    query[key] = n;
  }
  return query;
}

const iso = (ms: number) => new Date(ms).toISOString();
const isoOrNull = (ms: number | undefined) => (ms === undefined ? null : iso(ms));

function flowJson(p: TcpPart): FlowJson {
  return { clientPort: p.clientPort, startedAt: iso(p.startedAt), endedAt: isoOrNull(p.endedAt), bytesIn: p.bytesIn, bytesOut: p.bytesOut };
}

export function sessionJson(s: SessionView, now: number): SessionJson {
  return {
    id: s.id,
    client: s.client,
    connector: s.connector,
    state: s.state,
    startedAt: iso(s.createdAt),
    endedAt: isoOrNull(s.endedAt),
    lastActivityAt: iso(s.lastActivityAt),
    ageSeconds: Math.round((now - s.createdAt) / 1000),
    sni: s.sni ?? null,
    sessionId: s.sessionId ?? null,
    broker: s.broker ? { firstAt: iso(s.broker.firstAt), lastAt: iso(s.broker.lastAt), requests: s.broker.requests } : null,
    tcp: s.tcp.map(flowJson),
    udp: s.udp.map((u) => ({ ...flowJson(u), packetsIn: u.packetsIn, packetsOut: u.packetsOut, probe: u.probe ?? null, quality: u.quality ?? null })),
    quality: { lossPercent: Math.round(s.quality.lossRatio * 1e5) / 1e3, jitterMs: s.quality.jitterMs, rekeys: s.quality.rekeys, measured: s.quality.measured },
    ...(s.workers ? { workers: s.workers } : {}),
  };
}
