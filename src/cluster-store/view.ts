import type { HeartbeatRecord } from './codec.ts';

/**
 * The cluster view (`/status` → `cluster`, `pcoip-lb status`, the live page): the instances
 * whose heartbeats are in the store, each one's view of each Connector, and where they
 * disagree. Health is measured by each instance on its own (a Connector one instance cannot
 * reach is down for that instance only), so a disagreement is information, not an error: it
 * says which instance sees what. Pure: built from heartbeat records.
 */
export interface InstanceView {
  id: string;
  /** This instance (the one answering). */
  self: boolean;
  version: string;
  startedAt: string;
  /** How old its last heartbeat is (ms), by this instance's clock at receipt. */
  heartbeatAgeMs: number;
  listeners: Record<string, string>;
  connectors: HeartbeatRecord['connectors'];
}

export interface Disagreement {
  connector: string;
  /** `configured`: some instances do not have this Connector at all. */
  field: 'health' | 'state' | 'configured';
  /** Instance id → its value (`absent` for an instance without the Connector). */
  values: Record<string, string>;
}

export interface ClusterStatus {
  instanceId: string;
  store: { url: string; up: boolean; since: string; lastError: string | undefined };
  instances: InstanceView[];
  disagreements: Disagreement[];
}

export interface ReceivedHeartbeat {
  record: HeartbeatRecord;
  /** When this instance read it. */
  receivedAt: number;
}

export function instanceViews(selfId: string, heartbeats: readonly ReceivedHeartbeat[], now: number): InstanceView[] {
  return heartbeats
    .map(({ record, receivedAt }) => ({
      id: record.id,
      self: record.id === selfId,
      version: record.version,
      startedAt: new Date(record.startedAt).toISOString(),
      heartbeatAgeMs: Math.max(0, now - receivedAt),
      listeners: record.listeners,
      connectors: record.connectors,
    }))
    .sort((a, b) => (a.self === b.self ? a.id.localeCompare(b.id) : a.self ? -1 : 1));
}

/** Per Connector and field, the instances' values when they are not all the same. */
export function findDisagreements(instances: readonly Pick<InstanceView, 'id' | 'connectors'>[]): Disagreement[] {
  const ids = new Set<string>();
  for (const i of instances) for (const c of i.connectors) ids.add(c.id);
  const out: Disagreement[] = [];
  for (const connector of [...ids].sort()) {
    const views = instances.map((i) => ({ instance: i.id, c: i.connectors.find((c) => c.id === connector) }));
    const values = (pick: (c: NonNullable<(typeof views)[number]['c']>) => string) =>
      Object.fromEntries(views.map((v) => [v.instance, v.c ? pick(v.c) : 'absent']));
    if (views.some((v) => !v.c)) out.push({ connector, field: 'configured', values: values(() => 'present') });
    for (const field of ['health', 'state'] as const) {
      const present = views.filter((v) => v.c).map((v) => v.c![field]);
      if (new Set(present).size > 1) out.push({ connector, field, values: values((c) => (field === 'health' && c.health === 'down' && c.reason ? `down (${c.reason})` : c[field])) });
    }
  }
  return out;
}

/** The text `pcoip-lb status` prints under the Connector table. */
export function formatClusterStatus(c: ClusterStatus): string {
  const lines = [`\ncluster: ${c.instances.length} instance(s) · store ${c.store.url} ${c.store.up ? 'up' : `DOWN since ${c.store.since}${c.store.lastError ? ` (${c.store.lastError})` : ''}`} · this instance: ${c.instanceId}`];
  const ids = [...new Set(c.instances.flatMap((i) => i.connectors.map((x) => x.id)))].sort();
  const rows = [
    ['INSTANCE', 'HEARTBEAT', ...ids],
    ...c.instances.map((i) => [
      i.self ? `${i.id} (this)` : i.id,
      `${(i.heartbeatAgeMs / 1000).toFixed(1)} s ago`,
      ...ids.map((id) => {
        const v = i.connectors.find((x) => x.id === id);
        return v ? `${v.health}/${v.state}` : '-';
      }),
    ]),
  ];
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((r) => r[col]!.length)));
  for (const r of rows) lines.push(r.map((cell, col) => cell.padEnd(widths[col]!)).join('  ').trimEnd());
  if (c.disagreements.length === 0) lines.push('instances agree on every Connector');
  for (const d of c.disagreements) {
    lines.push(`disagree: ${d.connector} ${d.field}: ${Object.entries(d.values).map(([i, v]) => `${i}=${v}`).join(', ')}`);
  }
  return `${lines.join('\n')}\n`;
}
