import { readFileSync } from 'node:fs';
import { admitsPinnedClients, mayTakeNewClients, type ConnectorView } from '../pool/pool.ts';
import type { ConnectorState } from '../config/schema.ts';
import type { ListenerCounters, ListenerName } from '../proxy/flow-stats.ts';
import { formatHostPort } from '../util/address.ts';
import type { AdminView } from './view.ts';
import type { KernelDescription } from '../kernel/data-plane.ts';
import type { SessionsDescription } from '../balance/sessions.ts';

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
  pinnedClients: number;
  activeFlows: number;
  flows: Record<ListenerName, ListenerCounters>;
  bytesIn: number;
  bytesOut: number;
  connectFailures: number;
}

export interface PoolStatus {
  version: string;
  startedAt: string;
  uptimeSeconds: number;
  listeners: Record<string, string>;
  clients: number;
  activeFlows: number;
  connectorsTakingNewClients: number;
  connectors: ConnectorStatus[];
  /** Learned broker sessions (terminate mode; empty otherwise), without secrets. */
  sessions: SessionsDescription;
  /** dataPlane kernel only (docs/kernel.md). */
  kernel?: KernelDescription;
}

let packageVersion: string | undefined;
function version(): string {
  // src/admin/ and dist/admin/ are both two levels below package.json.
  packageVersion ??= (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  return packageVersion;
}

export function buildStatus(app: AdminView, now = Date.now()): PoolStatus {
  // Drop expired affinity entries first so the pinned-client counts are current.
  app.affinity.sweep(now);
  const pinned = pinnedClientsByConnector(app);
  const connectors = app.pool.all().map((c) => connectorStatus(app, c, pinned.get(c.id) ?? 0));
  const listeners = Object.fromEntries(
    Object.entries(app.listenerAddresses).map(([name, a]) => [name, `${formatHostPort(a.address, a.port)}/${name === 'pcoipUdp' ? 'udp' : 'tcp'}`]),
  );
  return {
    version: version(),
    startedAt: new Date(app.startedAt).toISOString(),
    uptimeSeconds: Math.round((now - app.startedAt) / 1000),
    listeners,
    clients: app.affinity.size,
    activeFlows: connectors.reduce((sum, c) => sum + c.activeFlows, 0),
    connectorsTakingNewClients: connectors.filter((c) => c.takesNewClients).length,
    connectors,
    sessions: app.describeSessions(now),
    ...kernelStatus(app),
  };
}

function kernelStatus(app: AdminView): { kernel?: KernelDescription } {
  const kernel = app.describeKernel?.();
  return kernel ? { kernel } : {};
}

/** One Connector's status, or undefined for an unknown id. */
export function buildConnectorStatus(app: AdminView, id: string, now = Date.now()): ConnectorStatus | undefined {
  const view = app.pool.get(id);
  if (!view) return undefined;
  app.affinity.sweep(now);
  return connectorStatus(app, view, pinnedClientsByConnector(app).get(id) ?? 0);
}

function pinnedClientsByConnector(app: AdminView): Map<string, number> {
  const counts = new Map<string, number>();
  for (const entry of app.affinity.all()) counts.set(entry.connectorId, (counts.get(entry.connectorId) ?? 0) + 1);
  return counts;
}

function connectorStatus(app: AdminView, c: ConnectorView, pinnedClients: number): ConnectorStatus {
  const counters = app.stats.counters(c.id);
  const flows = { broker: { ...counters.broker }, pcoipTcp: { ...counters.pcoipTcp }, pcoipUdp: { ...counters.pcoipUdp } };
  const activeFlows = app.stats.activeFlows(c.id);
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
    pinnedClients,
    activeFlows,
    flows,
    bytesIn: flows.broker.bytesIn + flows.pcoipTcp.bytesIn + flows.pcoipUdp.bytesIn,
    bytesOut: flows.broker.bytesOut + flows.pcoipTcp.bytesOut + flows.pcoipUdp.bytesOut,
    connectFailures: app.stats.connectFailures.get(c.id) ?? 0,
  };
}
