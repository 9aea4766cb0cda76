import type { Logger } from '../logger.ts';
import { RateLimitedLog } from '../logger.ts';
import type { Lease, Placer } from '../balance/placer.ts';
import { MAX_COOKIE_CHARS, MAX_LOG_ID_CHARS, redact, sessionKeyDigest, type SessionTable } from '../balance/sessions.ts';
import { admitsPinnedClients, type ConnectorView, type Pool } from '../pool/pool.ts';
import { ALLOC_SUCCESSFUL, type AllocationTarget } from '../pcoip/allocate-response.ts';
import { ErrorCodes } from '../errors.ts';
import type { FlowStats } from './flow-stats.ts';
import type { LbCookie } from './lb-cookie.ts';
import { headerValues, requestCookie, responseSetCookie, type MessageHead } from './http1-framing.ts';
import type { SessionRegistry } from '../sessions/registry.ts';

/**
 * Session-aware routing of broker requests, and learning from the Connectors' answers.
 * Order: pcoip-lb's own LB cookie (when lbCookie is enabled), then the JSESSIONID cookie's
 * Connector, then the CLIENT-LOG-ID header's, then the client address (the placer: affinity,
 * else consistent hashing). No sockets here; the connection relay asks and reports.
 *
 * Client-supplied identifiers are not trusted: one longer than any real one is ignored (not
 * routed by, not learned, counted, one rate-limited line), a forged or stale LB cookie is ignored
 * and counted, and a CLIENT-LOG-ID is learned only once the Connector has answered a POST to the
 * broker's XML endpoint with a 2xx — a request to any other path (GET /health) teaches nothing.
 */
export const SESSION_COOKIE = 'JSESSIONID';
export const LOG_ID_HEADER = 'CLIENT-LOG-ID';
/** The broker's XML endpoint: only responses to POSTs there can carry an allocation. */
export const BROKER_XML_PATH = '/pcoip-broker/xml';

export type RouteVia = 'lb-cookie' | 'cookie' | 'log-id' | 'session' | 'address';

export type Route =
  | {
      ok: true;
      connector: ConnectorView;
      via: RouteVia;
      /** Set when the placer chose: its affinity key, reason, and the lease the request's connection holds (released once). */
      placement?: { clientKey: string; reason: string; lease: Lease };
      /** The request's CLIENT-LOG-ID, when usable: learned if the Connector answers a broker XML POST. */
      logId?: string;
      /** The request carried a valid LB cookie for this Connector that needs no refresh. */
      lbCookieCurrent?: boolean;
    }
  | { ok: false };

/** What the relay remembers of a request until its response head arrives. */
export interface ExchangeFacts {
  /** A POST to BROKER_XML_PATH. */
  brokerXml: boolean;
  logId: string | undefined;
  lbCookieCurrent: boolean;
}

export interface BrokerRoutingDeps {
  pool: Pool;
  placer: Placer;
  sessions: SessionTable;
  logger: Logger;
  now: () => number;
  /** Counts ignored identifiers and issued LB cookies (pcoip_lb_broker_events_total). */
  stats?: FlowStats;
  /** listeners.broker.lbCookie, when enabled. */
  lbCookie?: LbCookie;
  /** Multi-core / cluster: ask the replica about a cookie or log id (by digest) this process does not know. */
  beforeSessionRoute?: (query: { kind: 'cookie' | 'log-id'; key: string }) => Promise<void> | undefined;
  /** Multi-core / cluster: ask the replica about a client address with no local pin. */
  beforeDecide?: (clientAddress: string) => Promise<void> | undefined;
  /** The per-session view (observability): told of every routed request (docs/sessions.md). */
  registry?: SessionRegistry;
  /** affinity.perSession: a new login is placed by its CLIENT-LOG-ID, not by its address (bySession). */
  perSession?: boolean;
}

export class BrokerRouter {
  private readonly deps: BrokerRoutingDeps & { lbCookie?: LbCookie };
  private readonly staleLog = new RateLimitedLog();
  private readonly ignoredLog = new RateLimitedLog();

  constructor(deps: BrokerRoutingDeps) {
    this.deps = { ...deps };
  }

  /** New LB cookie keys (a rewritten key file): cookies signed by any of them verify from now on. */
  setLbCookie(lbCookie: LbCookie): void {
    this.deps.lbCookie = lbCookie;
  }

  /**
   * Before `route`: what this process must first learn from its replica to route the request as
   * any other process would (its cookie, its log id, its client's pin). undefined: route now.
   * The look-ups are bounded by the replica; whatever they bring, `route` then decides locally.
   * Keys travel as digests (sessionKeyDigest), never raw; implausibly long values are not asked about.
   */
  prepare(head: MessageHead, clientAddress: string): Promise<void> | undefined {
    const { beforeSessionRoute, beforeDecide } = this.deps;
    if (!beforeSessionRoute && !beforeDecide) return undefined;
    const cookie = requestCookie(head, SESSION_COOKIE);
    const logId = headerValues(head, LOG_ID_HEADER)[0];
    const waits = [
      cookie && cookie.length <= MAX_COOKIE_CHARS ? beforeSessionRoute?.({ kind: 'cookie', key: sessionKeyDigest(cookie) }) : undefined,
      logId && logId.length <= MAX_LOG_ID_CHARS ? beforeSessionRoute?.({ kind: 'log-id', key: sessionKeyDigest(logId) }) : undefined,
      beforeDecide?.(clientAddress),
    ].filter((w) => w !== undefined);
    return waits.length === 0 ? undefined : Promise.all(waits).then(() => undefined);
  }

  /** Picks the Connector for one request. `avoid`: Connectors that just failed to connect. */
  route(head: MessageHead, clientAddress: string, avoid?: ReadonlySet<string>): Route {
    const { sessions, placer, lbCookie } = this.deps;
    const now = this.deps.now();
    const cookie = this.plausible('cookie', requestCookie(head, SESSION_COOKIE), MAX_COOKIE_CHARS, clientAddress);
    const logId = this.plausible('log-id', headerValues(head, LOG_ID_HEADER)[0], MAX_LOG_ID_CHARS, clientAddress) || undefined;
    let route: Route | undefined;
    let lbCookieFor: string | undefined;
    if (lbCookie) {
      const value = requestCookie(head, lbCookie.settings.name);
      if (value !== undefined) {
        const check = lbCookie.verify(value, this.deps.pool.all().map((c) => c.id), now);
        if (check.ok) {
          route = this.byKey('lb-cookie', value, check.connectorId, clientAddress, avoid);
          if (route?.ok && !check.refresh) lbCookieFor = check.connectorId;
        } else this.ignored(`lb-cookie-${check.reason}`, clientAddress, { why: check.reason, lbCookie: redact(value) }, `${lbCookie.settings.name} cookie ${check.reason === 'forged' ? 'not signed by any configured key' : 'expired or names no Connector'}; ignored`);
      }
    }
    if (!route && cookie !== undefined) route = this.byKey('cookie', cookie, sessions.connectorForCookie(cookie, now), clientAddress, avoid);
    if (!route && logId) route = this.byKey('log-id', logId, sessions.connectorForLogId(logId, now), clientAddress, avoid);
    if (!route && logId && this.deps.perSession) route = this.bySession(logId, clientAddress, now, avoid);
    if (!route) {
      const decision = placer.decide(clientAddress, now, avoid);
      if (!decision.ok) return { ok: false };
      route = { ok: true, connector: decision.connector, via: 'address', placement: { clientKey: decision.clientKey, reason: decision.reason, lease: decision.lease } };
    }
    if (!route.ok) return route;
    this.deps.registry?.brokerRequest(clientAddress, route.connector.id, logId, now);
    return { ...route, ...(logId ? { logId } : {}), ...(lbCookieFor === route.connector.id ? { lbCookieCurrent: true } : {}) };
  }

  /**
   * affinity.perSession: the first request of a login (no LB cookie, cookie or log id that leads
   * anywhere yet) is placed by consistent hashing of its CLIENT-LOG-ID instead of its address, so
   * the logins of users behind one address spread as if each had an address of its own; the
   * login's later requests follow its cookie and log id as usual. The address's pin is not touched
   * (another user's session may hold it); the request's connection holds a lease on it.
   */
  private bySession(logId: string, clientAddress: string, now: number, avoid?: ReadonlySet<string>): Route | undefined {
    const { placer } = this.deps;
    const connectorId = placer.pickNew(`login:${logId}`, avoid);
    const decision = connectorId === undefined ? undefined : placer.decideOn(clientAddress, connectorId, now);
    if (!decision?.ok) return undefined;
    return { ok: true, connector: decision.connector, via: 'session', placement: { clientKey: decision.clientKey, reason: decision.reason, lease: decision.lease } };
  }

  /** A value longer than any real one is no identifier: ignored, counted, logged (rate-limited). */
  private plausible(kind: 'cookie' | 'log-id', value: string | undefined, max: number, clientAddress: string): string | undefined {
    if (value === undefined || value.length <= max) return value;
    this.ignored('id-too-long', clientAddress, { what: kind === 'cookie' ? SESSION_COOKIE : LOG_ID_HEADER, length: value.length, max }, `${kind === 'cookie' ? SESSION_COOKIE : LOG_ID_HEADER} longer than any real one; ignored (not routed by, not learned)`);
    return undefined;
  }

  private ignored(event: string, clientAddress: string | undefined, fields: Record<string, unknown>, msg: string): void {
    this.deps.stats?.brokerEvent(event);
    this.ignoredLog.maybe(this.deps.now(), (suppressed) =>
      this.deps.logger.warn({ listener: 'broker', client: clientAddress, code: ErrorCodes.BROKER_ID_IGNORED, event, ...fields, suppressed }, msg),
    );
  }

  private byKey(via: RouteVia, value: string, connectorId: string | undefined, clientAddress: string, avoid?: ReadonlySet<string>): Route | undefined {
    const connector = connectorId === undefined ? undefined : this.deps.pool.get(connectorId);
    if (connector && admitsPinnedClients(connector) && !avoid?.has(connector.id)) return { ok: true, connector, via };
    // A log id nobody has seen is simply the first request of a login: nothing to report.
    if (via === 'log-id' && connectorId === undefined) return undefined;
    const name = via === 'lb-cookie' ? this.deps.lbCookie!.settings.name : via === 'cookie' ? SESSION_COOKIE : LOG_ID_HEADER;
    // Unknown cookie (proxy restarted, forged, expired) or its Connector cannot take it: fall through.
    this.staleLog.maybe(this.deps.now(), (suppressed) =>
      this.deps.logger.info(
        {
          listener: 'broker',
          client: clientAddress,
          [via === 'log-id' ? 'logId' : 'cookie']: redact(value),
          connector: connectorId,
          why: connectorId === undefined ? 'unknown' : connector ? 'connector-unavailable' : 'connector-removed',
          suppressed,
        },
        `${name} does not lead to a usable Connector; routing by the next rule`,
      ),
    );
    return undefined;
  }

  /**
   * A response head from `connector` to a request: learn the session cookie it sets, and the
   * request's log id when this is the Connector's 2xx answer to a broker XML POST. `mayLearnLogId`
   * is the connection's say (it caps how many log ids one connection may teach).
   * Returns whether the log id was learned.
   */
  learnFromResponse(head: MessageHead, connector: ConnectorView, exchange: ExchangeFacts, mayLearnLogId: boolean): boolean {
    const now = this.deps.now();
    const cookie = responseSetCookie(head, SESSION_COOKIE);
    if (cookie !== undefined && cookie !== '') {
      if (cookie.length > MAX_COOKIE_CHARS) {
        this.ignored('id-too-long', undefined, { what: `${SESSION_COOKIE} (Set-Cookie)`, connector: connector.id, length: cookie.length, max: MAX_COOKIE_CHARS }, `Connector set a ${SESSION_COOKIE} longer than any real one; not learned`);
      } else {
        this.deps.sessions.learnCookie(cookie, connector.id, now);
        this.deps.logger.debug({ listener: 'broker', connector: connector.id, cookie: redact(cookie) }, 'learned session cookie');
      }
    }
    const answered = head.status !== undefined && head.status >= 200 && head.status < 300;
    if (!exchange.brokerXml || !exchange.logId || !answered) return false;
    if (!mayLearnLogId) {
      this.ignored('log-id-limit', undefined, { connector: connector.id, logId: redact(exchange.logId) }, `one connection sent more distinct ${LOG_ID_HEADER} values than a login uses; not learned`);
      return false;
    }
    // The log id travels with every request of a login; remember where its session lives so a
    // request from another address without the cookie still finds it.
    this.deps.sessions.learnLogId(exchange.logId, connector.id, now);
    return true;
  }

  /** The Set-Cookie line (CRLF included) to add to a response from `connector`, or undefined. */
  lbCookieLine(connector: ConnectorView, exchange: ExchangeFacts): string | undefined {
    const lb = this.deps.lbCookie;
    if (!lb || exchange.lbCookieCurrent) return undefined;
    this.deps.stats?.brokerEvent('lb-cookie-issued');
    return lb.setCookieLine(connector.id, this.deps.now());
  }

  /**
   * An allocate-resource-resp from `connector` to `clientAddress`: record the allocation and pin
   * the client address to that Connector so its 4172 TCP and UDP flows follow. `logId`: the
   * CLIENT-LOG-ID of the request it answers (tells the session view which login it belongs to).
   */
  learnAllocation(target: AllocationTarget, connector: ConnectorView, clientAddress: string, logId?: string): void {
    const { sessions, placer, logger } = this.deps;
    const now = this.deps.now();
    const fields = {
      listener: 'broker',
      client: clientAddress,
      connector: connector.id,
      sni: target.sni !== undefined && target.sni.length > 64 ? redact(target.sni) : target.sni,
      target: target.ipAddress !== undefined ? `${target.ipAddress.slice(0, 64)}:${target.port ?? '?'}` : undefined,
      sessionId: target.sessionId ? redact(target.sessionId) : undefined,
      connectTag: target.connectTag ? redact(target.connectTag) : undefined,
    };
    if (target.resultId !== ALLOC_SUCCESSFUL) {
      logger.info({ ...fields, resultId: target.resultId.slice(0, 64) }, 'allocation refused by the Connector; nothing learned');
      return;
    }
    const learn = () => sessions.learnAllocation({ connectorId: connector.id, clientAddress, ...target }, now);
    const learned = this.deps.registry ? this.deps.registry.answering(logId, learn) : learn();
    if (!learned.ok) {
      const why = { 'reused-tag': 'its connect tag was already used', 'no-connect-tag': 'no connect tag', oversized: 'a field is longer than any real one' }[learned.reason];
      logger.warn({ ...fields, reason: learned.reason, code: learned.reason === 'reused-tag' ? ErrorCodes.CONNECT_TAG_REUSED : undefined }, `allocation ignored: ${why}`);
      return;
    }
    placer.learn(clientAddress, connector.id, now);
    logger.info({ ...fields, replaced: learned.replaced }, 'allocation learned: client pinned for 4172');
  }
}
