import type { AdminConfig } from '../config/schema.ts';
import { ErrorCodes, PlbError } from '../errors.ts';
import { formatHostPort } from '../util/address.ts';
import { formatDuration, humanDuration } from '../util/duration.ts';
import { AdminClient } from './client.ts';
import type { ConnectorStatus, PoolStatus } from './status.ts';
import { resolveAdminToken } from './token.ts';
import { formatClusterStatus } from '../cluster-store/view.ts';

/**
 * The operator commands (`status`, `drain`, `enable`, `maint`), all through the admin API.
 * They write to the stream they are given and return; the CLI decides about exit codes.
 */
export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:8404';
export const ADMIN_TOKEN_ENV = 'PCOIP_LB_ADMIN_TOKEN';

/**
 * Where the admin API is and which token to send: `--admin`/`--token` win; else the config file's
 * admin section (a wildcard bind is reached on loopback); else the default URL and
 * $PCOIP_LB_ADMIN_TOKEN.
 */
export function adminTarget(options: { admin?: string; token?: string; config?: AdminConfig }, env: NodeJS.ProcessEnv = process.env): { url: string; token: string | undefined } {
  let url = options.admin ?? DEFAULT_ADMIN_URL;
  if (!options.admin && options.config) {
    const { host, port } = options.config.bind;
    const reachable = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
    url = `http://${formatHostPort(reachable, port)}`;
  }
  const fromEnv = env[ADMIN_TOKEN_ENV]?.trim() || undefined;
  const fromConfig = options.config?.token ? resolveAdminToken(options.config, env) : undefined;
  return { url, token: options.token ?? fromEnv ?? fromConfig };
}

export async function statusCommand(client: AdminClient, out: NodeJS.WritableStream, json: boolean): Promise<void> {
  const status = await client.get<PoolStatus>('/status');
  out.write(json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
}

const STATE_OF_ACTION = { drain: 'drain', enable: 'active', maint: 'maint' } as const;

export async function setStateCommand(client: AdminClient, out: NodeJS.WritableStream, id: string, action: keyof typeof STATE_OF_ACTION): Promise<ConnectorStatus> {
  const answer = await client.post<{ previous: string; state: string; changed: boolean; connector: ConnectorStatus }>(`/connectors/${encodeURIComponent(id)}/${action}`);
  out.write(answer.changed ? `${id}: state ${answer.previous} → ${answer.state}\n` : `${id}: already ${answer.state}\n`);
  return answer.connector;
}

export interface DrainWaitOptions {
  /** 0: wait as long as it takes. */
  timeoutMs: number;
  pollMs?: number;
  /** A progress line at least this often even when nothing changed. */
  heartbeatMs?: number;
}

/** Polls the Connector until it is drained (state drain, no flows), printing progress when its flow count changes. */
export async function waitForDrain(client: AdminClient, out: NodeJS.WritableStream, id: string, options: DrainWaitOptions): Promise<void> {
  const pollMs = options.pollMs ?? 500;
  const heartbeatMs = options.heartbeatMs ?? 10_000;
  const started = Date.now();
  let lastLine = '';
  let lastPrinted = 0;
  for (;;) {
    const c = await client.get<ConnectorStatus>(`/connectors/${encodeURIComponent(id)}`);
    const elapsed = Date.now() - started;
    if (c.state !== 'drain') {
      throw new PlbError(ErrorCodes.ADMIN_REQUEST, `${id} is now in state ${c.state}, not drain (someone changed it); stopped waiting`);
    }
    if (c.drained) {
      out.write(`${id}: drained after ${(elapsed / 1000).toFixed(1)} s (no flows left; ${c.pinnedClients} client(s) still pinned until their affinity TTL ends)\n`);
      return;
    }
    const line = `${id}: draining: ${c.activeFlows} flow(s) left (443: ${c.flows.broker.active}, 4172/tcp: ${c.flows.pcoipTcp.active}, 4172/udp: ${c.flows.pcoipUdp.active}), ${c.pinnedClients} pinned client(s)`;
    if (line !== lastLine || Date.now() - lastPrinted >= heartbeatMs) {
      out.write(`${line}\n`);
      lastLine = line;
      lastPrinted = Date.now();
    }
    if (options.timeoutMs > 0 && elapsed >= options.timeoutMs) {
      throw new PlbError(ErrorCodes.DRAIN_TIMEOUT, `${id} still has ${c.activeFlows} flow(s) after ${formatDuration(options.timeoutMs)}; it stays in drain`);
    }
    const wait = options.timeoutMs > 0 ? Math.min(pollMs, Math.max(0, options.timeoutMs - elapsed)) : pollMs;
    await new Promise((r) => setTimeout(r, wait));
  }
}

export function formatStatus(s: PoolStatus): string {
  const header =
    `pcoip-lb ${s.version} · up ${humanDuration(s.uptimeSeconds * 1000)} · ${s.liveClients} live session(s), ${s.clients} pinned client(s) · ${s.activeFlows} flow(s) · ` +
    `${s.connectorsTakingNewClients}/${s.connectors.length} Connector(s) take new clients${s.connectorsTakingNewClients === 0 ? ' — OUTAGE: new clients are refused' : ''}\n`;
  const rows = [
    ['CONNECTOR', 'ADDRESS', 'HEALTH', 'STATE', 'LIVE/PINNED', 'FLOWS 443/TCP/UDP', 'IN', 'OUT', 'CHECK', 'REASON'],
    ...s.connectors.map((c) => [
      c.id,
      c.address,
      c.health,
      c.state === 'drain' ? (c.drained ? 'drain (drained)' : 'drain') : c.state,
      `${c.liveClients}/${c.pinnedClients}`,
      `${c.activeFlows} (${c.flows.broker.active}/${c.flows.pcoipTcp.active}/${c.flows.pcoipUdp.active})`,
      formatBytes(c.bytesIn),
      formatBytes(c.bytesOut),
      c.lastCheck ? `${c.lastCheck.ok ? 'pass' : 'fail'} ${Math.max(0, ...Object.values(c.lastCheck.latencyMs)).toFixed(0)} ms` : '-',
      c.healthReason,
    ]),
    // Removed by a reload, flows still open (they run until they end).
    ...s.removedConnectors.map((c) => [
      c.id,
      '-',
      '-',
      'removed',
      '-',
      `${c.activeFlows} (${c.flows.broker.active}/${c.flows.pcoipTcp.active}/${c.flows.pcoipUdp.active})`,
      formatBytes(c.bytesIn),
      formatBytes(c.bytesOut),
      '-',
      'removed from the config; flows run until they end',
    ]),
  ];
  return header + formatTable(rows) + '\n' + (s.cluster ? formatClusterStatus(s.cluster) : '');
}

/** Rows as columns padded to their widest cell, two spaces apart (the first row is the header). */
export function formatTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((r) => r[col]!.length)));
  return rows.map((r) => r.map((cell, col) => cell.padEnd(widths[col]!)).join('  ').trimEnd()).join('\n');
}

/** Bytes in decimal units, as the live page shows them (`12.3 MB`). */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}
