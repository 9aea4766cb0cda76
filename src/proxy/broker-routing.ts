import type { Logger } from '../logger.ts';
import { RateLimitedLog } from '../logger.ts';
import type { Lease, Placer } from '../balance/placer.ts';
import { redact, type SessionTable } from '../balance/sessions.ts';
import { admitsPinnedClients, type ConnectorView, type Pool } from '../pool/pool.ts';
import { ALLOC_SUCCESSFUL, type AllocationTarget } from '../pcoip/allocate-response.ts';
import { ErrorCodes } from '../errors.ts';
import { headerValues, requestCookie, responseSetCookie, type MessageHead } from './http1-framing.ts';

/**
 * Session-aware routing of broker requests, and learning from the Connectors' answers.
 * Order: the JSESSIONID cookie's Connector, then the CLIENT-LOG-ID header's, then the client
 * address (the placer: affinity, else consistent hashing). No sockets here; the connection
 * relay asks and reports.
 */
export const SESSION_COOKIE = 'JSESSIONID';
export const LOG_ID_HEADER = 'CLIENT-LOG-ID';
/** The broker's XML endpoint: only responses to POSTs there can carry an allocation. */
export const BROKER_XML_PATH = '/pcoip-broker/xml';

export type RouteVia = 'cookie' | 'log-id' | 'address';

export type Route =
  | {
      ok: true;
      connector: ConnectorView;
      via: RouteVia;
      /** Set when the placer chose: its affinity key, reason, and the lease the request's connection holds (released once). */
      placement?: { clientKey: string; reason: string; lease: Lease };
    }
  | { ok: false };

export interface BrokerRoutingDeps {
  pool: Pool;
  placer: Placer;
  sessions: SessionTable;
  logger: Logger;
  now: () => number;
  /** Multi-core / cluster: ask the replica about a cookie or log id this process does not know. */
  beforeSessionRoute?: (query: { kind: 'cookie' | 'log-id'; key: string }) => Promise<void> | undefined;
  /** Multi-core / cluster: ask the replica about a client address with no local pin. */
  beforeDecide?: (clientAddress: string) => Promise<void> | undefined;
}

export class BrokerRouter {
  private readonly deps: BrokerRoutingDeps;
  private readonly staleLog = new RateLimitedLog();

  constructor(deps: BrokerRoutingDeps) {
    this.deps = deps;
  }

  /**
   * Before `route`: what this process must first learn from its replica to route the request as
   * any other process would (its cookie, its log id, its client's pin). undefined: route now.
   * The look-ups are bounded by the replica; whatever they bring, `route` then decides locally.
   */
  prepare(head: MessageHead, clientAddress: string): Promise<void> | undefined {
    const { beforeSessionRoute, beforeDecide } = this.deps;
    if (!beforeSessionRoute && !beforeDecide) return undefined;
    const cookie = requestCookie(head, SESSION_COOKIE);
    const logId = headerValues(head, LOG_ID_HEADER)[0];
    const waits = [
      cookie ? beforeSessionRoute?.({ kind: 'cookie', key: cookie }) : undefined,
      logId ? beforeSessionRoute?.({ kind: 'log-id', key: logId }) : undefined,
      beforeDecide?.(clientAddress),
    ].filter((w) => w !== undefined);
    return waits.length === 0 ? undefined : Promise.all(waits).then(() => undefined);
  }

  /** Picks the Connector for one request. `avoid`: Connectors that just failed to connect. */
  route(head: MessageHead, clientAddress: string, avoid?: ReadonlySet<string>): Route {
    const { sessions, placer } = this.deps;
    const now = this.deps.now();
    const cookie = requestCookie(head, SESSION_COOKIE);
    const logId = headerValues(head, LOG_ID_HEADER)[0];
    let route: Route | undefined;
    if (cookie !== undefined) route = this.byKey('cookie', cookie, sessions.connectorForCookie(cookie, now), clientAddress, avoid);
    if (!route && logId) route = this.byKey('log-id', logId, sessions.connectorForLogId(logId, now), clientAddress, avoid);
    if (!route) {
      const decision = placer.decide(clientAddress, now, avoid);
      if (!decision.ok) return { ok: false };
      route = { ok: true, connector: decision.connector, via: 'address', placement: { clientKey: decision.clientKey, reason: decision.reason, lease: decision.lease } };
    }
    // The log id travels with every request of a login; remember where its session lives so a
    // request from another address without the cookie still finds it.
    if (route.ok && logId) sessions.learnLogId(logId, route.connector.id, now);
    return route;
  }

  private byKey(via: RouteVia, value: string, connectorId: string | undefined, clientAddress: string, avoid?: ReadonlySet<string>): Route | undefined {
    const connector = connectorId === undefined ? undefined : this.deps.pool.get(connectorId);
    if (connector && admitsPinnedClients(connector) && !avoid?.has(connector.id)) return { ok: true, connector, via };
    // A log id nobody has seen is simply the first request of a login: nothing to report.
    if (via === 'log-id' && connectorId === undefined) return undefined;
    // Unknown cookie (proxy restarted, forged, expired) or its Connector cannot take it: fall through.
    this.staleLog.maybe(this.deps.now(), (suppressed) =>
      this.deps.logger.info(
        {
          listener: 'broker',
          client: clientAddress,
          [via === 'cookie' ? 'cookie' : 'logId']: redact(value),
          connector: connectorId,
          why: connectorId === undefined ? 'unknown' : connector ? 'connector-unavailable' : 'connector-removed',
          suppressed,
        },
        `${via === 'cookie' ? SESSION_COOKIE : LOG_ID_HEADER} does not lead to a usable Connector; routing by the next rule`,
      ),
    );
    return undefined;
  }

  /** A response head from `connector`: learn the session cookie it sets. */
  learnFromResponse(head: MessageHead, connector: ConnectorView): void {
    const cookie = responseSetCookie(head, SESSION_COOKIE);
    if (cookie === undefined || cookie === '') return;
    this.deps.sessions.learnCookie(cookie, connector.id, this.deps.now());
    this.deps.logger.debug({ listener: 'broker', connector: connector.id, cookie: redact(cookie) }, 'learned session cookie');
  }

  /**
   * An allocate-resource-resp from `connector` to `clientAddress`: record the allocation and pin
   * the client address to that Connector so its 4172 TCP and UDP flows follow.
   */
  learnAllocation(target: AllocationTarget, connector: ConnectorView, clientAddress: string): void {
    const { sessions, placer, logger } = this.deps;
    const now = this.deps.now();
    const fields = {
      listener: 'broker',
      client: clientAddress,
      connector: connector.id,
      sni: target.sni,
      target: target.ipAddress !== undefined ? `${target.ipAddress}:${target.port ?? '?'}` : undefined,
      sessionId: target.sessionId ? redact(target.sessionId) : undefined,
      connectTag: target.connectTag ? redact(target.connectTag) : undefined,
    };
    if (target.resultId !== ALLOC_SUCCESSFUL) {
      logger.info({ ...fields, resultId: target.resultId }, 'allocation refused by the Connector; nothing learned');
      return;
    }
    const learned = sessions.learnAllocation({ connectorId: connector.id, clientAddress, ...target }, now);
    if (!learned.ok) {
      logger.warn(
        { ...fields, reason: learned.reason, code: learned.reason === 'reused-tag' ? ErrorCodes.CONNECT_TAG_REUSED : undefined },
        learned.reason === 'reused-tag' ? 'allocation ignored: its connect tag was already used' : 'allocation ignored: no connect tag',
      );
      return;
    }
    placer.learn(clientAddress, connector.id, now);
    logger.info({ ...fields, replaced: learned.replaced }, 'allocation learned: client pinned for 4172');
  }
}
