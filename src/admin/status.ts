import { readFileSync } from 'node:fs';
import { admitsPinnedClients, mayTakeNewClients, type ConnectorView } from '../pool/pool.ts';
import type { ConnectorState } from '../config/schema.ts';
import type { ListenerCounters, ListenerName } from '../proxy/flow-stats.ts';
import { formatHostPort } from '../util/address.ts';
import type { AdminView } from './view.ts';
import type { KernelDescription } from '../kernel/data-plane.ts';
import type { SessionsDescription } from '../balance/sessions.ts';
import type { ClusterStatus } from '../cluster-store/view.ts';

/**
 * The JSON behind `GET /status`, `GET /connectors/:id`, the live page and `pcoip-lb status`.
 * Built on request from live objects; nothing here is on the data path.
 */
export interface ConnectorStatus {
  id: string;
  address: string;
  ports: { broker: number; pcoip: number };
  weight: number;
  /** Operator state: active | drain | maint. */
  state: ConnectorState;
  /** Measured health. */
  health: 'up' | 'down';
  healthReason: string;
  healthSince: string;
  /** What set the current health: the first rounds (initial), a check round (active) or failed client connects (passive). */
  healthSource: string;
  lastCheck: { at: string; ok: boolean; reason: string; latencyMs: Record<string, number> } | null;
  /** May receive clients it has never seen (up and active). */
  takesNewClients: boolean;
  /** Still receives new flows of clients pinned to it (up, not maint). */
  admitsPinnedClients: boolean;
  /** In drain and no flow left: safe to take down. */
  drained: boolean;
  /** Clients whose affinity record names this Connector: live ones plus those within affinity.ttl of their last flow. */
  pinnedClients: number;
  /** Of those, clients with at least one open flow right now (live sessions). */
  liveClients: number;
  activeFlows: number;
  flows: Record<ListenerName, ListenerCounters>;
  bytesIn: number;
  bytesOut: number;
  connectFailures: number;
}

/** A Connector removed from the config by a reload whose established flows are still running (README "Reload"). */
export interface RemovedConnectorStatus {
  id: string;
  activeFlows: number;
  flows: Record<ListenerName, ListenerCounters>;
  bytesIn: number;
  bytesOut: number;
}

export interface PoolStatus {
  version: string;
  /** The server's clock when this document was built: rates are computed from it, not the reader's clock. */
  now: string;
  startedAt: string;
  uptimeSeconds: number;
  listeners: Record<string, string>;
  /** Clients in the affinity table (pinned: live, or within affinity.ttl of their last flow). */
  clients: number;
  /** Clients with at least one open flow (live sessions). */
  liveClients: number;
  /** Every open flow, those of removed Connectors included. */
  activeFlows: number;
  connectorsTakingNewClients: number;
  connectors: ConnectorStatus[];
  /** Removed by a reload, flows still open; they leave this list when their last flow ends. */
  removedConnectors: RemovedConnectorStatus[];
  /** Flows refused since start, by listener and reason (limits, no eligible Connector, fd exhaustion, …). */
  refusals: Array<{ listener: string; reason: string; count: number }>;
  /** Failed connects to Connectors since start (refused or timed out), all Connectors. */
  connectFailures: number;
  /** Learned broker sessions (terminate mode; empty otherwise), without secrets. */
  sessions: SessionsDescription;
  /** Several instances as one pool (cluster:): the instances, their views of the Connectors, where they disagree. */
  cluster?: ClusterStatus;
  /** dataPlane kernel only (docs/kernel.md). */
  kernel?: KernelDescription;
}

let cachedVersion: string | undefined;
/** pcoip-lb's version, from package.json. */
export function packageVersion(): string {
  // src/admin/ and dist/admin/ are both two levels below package.json.
  cachedVersion ??= (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  return cachedVersion;
}

export function buildStatus(app: AdminView, now = Date.now()): PoolStatus {
  // Drop expired affinity entries first so the pinned-client counts are current.
  app.affinity.sweep(now);
  const clients = clientsByConnector(app);
  const connectors = app.pool.all().map((c) => connectorStatus(app, c, clients.get(c.id)));
  const removedConnectors = removedWithFlows(app).map((id) => removedStatus(app, id));
  const listeners = formatListeners(app.listenerAddresses);
  let liveClients = 0;
  for (const c of clients.values()) liveClients += c.live;
  return {
    version: packageVersion(),
    now: new Date(now).toISOString(),
    startedAt: new Date(app.startedAt).toISOString(),
    uptimeSeconds: Math.round((now - app.startedAt) / 1000),
    listeners,
    clients: app.affinity.size,
    liveClients,
    activeFlows: [...connectors, ...removedConnectors].reduce((sum, c) => sum + c.activeFlows, 0),
    connectorsTakingNewClients: connectors.filter((c) => c.takesNewClients).length,
    connectors,
    removedConnectors,
    refusals: [...app.stats.refusals].map(([key, count]) => {
      const at = key.indexOf(':');
      return { listener: key.slice(0, at), reason: key.slice(at + 1), count };
    }),
    connectFailures: [...app.stats.connectFailures.values()].reduce((a, b) => a + b, 0),
    sessions: app.describeSessions(now),
    ...(app.cluster ? { cluster: app.cluster.status() } : {}),
    ...kernelStatus(app),
  };
}

function kernelStatus(app: AdminView): { kernel?: KernelDescription } {
  const kernel = app.describeKernel?.();
  return kernel ? { kernel } : {};
}

/** "broker" → "127.0.0.1:443/tcp", for every bound listener. */
export function formatListeners(addresses: AdminView['listenerAddresses']): Record<string, string> {
  return Object.fromEntries(Object.entries(addresses).map(([name, a]) => [name, `${formatHostPort(a.address, a.port)}/${name === 'pcoipUdp' ? 'udp' : 'tcp'}`]));
}

/**
 * Ids of Connectors no longer in the pool whose flows are still open: a reload removed them,
 * and their established flows run on until they end (README "Reload"), so /status and
 * /metrics keep showing them until then.
 */
export function removedWithFlows(app: AdminView): string[] {
  const ids: string[] = [];
  for (const id of app.stats.connectorIds()) if (!app.pool.get(id) && app.stats.activeFlows(id) > 0) ids.push(id);
  return ids;
}

/** The pool's Connectors, then the removed ones that still have flows: every id /metrics reports flow counters for. */
export function connectorsWithCounters(app: AdminView): string[] {
  return [...app.pool.all().map((c) => c.id), ...removedWithFlows(app)];
}

function flowsOf(app: AdminView, id: string): Pick<ConnectorStatus, 'flows' | 'activeFlows' | 'bytesIn' | 'bytesOut'> {
  const counters = app.stats.counters(id);
  const flows = { broker: { ...counters.broker }, pcoipTcp: { ...counters.pcoipTcp }, pcoipUdp: { ...counters.pcoipUdp } };
  return {
    flows,
    activeFlows: app.stats.activeFlows(id),
    bytesIn: flows.broker.bytesIn + flows.pcoipTcp.bytesIn + flows.pcoipUdp.bytesIn,
    bytesOut: flows.broker.bytesOut + flows.pcoipTcp.bytesOut + flows.pcoipUdp.bytesOut,
  };
}

function removedStatus(app: AdminView, id: string): RemovedConnectorStatus {
  const { flows, activeFlows, bytesIn, bytesOut } = flowsOf(app, id);
  return { id, activeFlows, flows, bytesIn, bytesOut };
}

/** One Connector's status, or undefined for an unknown id. */
export function buildConnectorStatus(app: AdminView, id: string, now = Date.now()): ConnectorStatus | undefined {
  const view = app.pool.get(id);
  if (!view) return undefined;
  app.affinity.sweep(now);
  return connectorStatus(app, view, clientsByConnector(app).get(id));
}

/** Per Connector: clients pinned to it, and how many of them have an open flow. */
export function clientsByConnector(app: AdminView): Map<string, { pinned: number; live: number }> {
  const counts = new Map<string, { pinned: number; live: number }>();
  for (const entry of app.affinity.all()) {
    let c = counts.get(entry.connectorId);
    if (!c) counts.set(entry.connectorId, (c = { pinned: 0, live: 0 }));
    c.pinned++;
    if (entry.flows > 0) c.live++;
  }
  return counts;
}

function connectorStatus(app: AdminView, c: ConnectorView, clients: { pinned: number; live: number } | undefined): ConnectorStatus {
  const { flows, activeFlows, bytesIn, bytesOut } = flowsOf(app, c.id);
  const health = app.health.snapshot(c.id);
  const last = health?.lastRound;
  return {
    id: c.id,
    address: c.address,
    ports: { ...c.ports },
    weight: c.weight,
    state: c.state,
    health: c.health,
    healthReason: c.healthReason,
    healthSince: new Date(health?.since ?? app.startedAt).toISOString(),
    healthSource: health?.source ?? 'initial',
    lastCheck: last
      ? {
          at: new Date(last.at).toISOString(),
          ok: last.ok,
          reason: last.reason,
          latencyMs: Object.fromEntries(last.checks.map((r) => [r.check, Math.round(r.latencyMs * 10) / 10])),
        }
      : null,
    takesNewClients: mayTakeNewClients(c),
    admitsPinnedClients: admitsPinnedClients(c),
    drained: c.state === 'drain' && activeFlows === 0,
    pinnedClients: clients?.pinned ?? 0,
    liveClients: clients?.live ?? 0,
    activeFlows,
    flows,
    bytesIn,
    bytesOut,
    connectFailures: app.stats.connectFailures.get(c.id) ?? 0,
  };
}
