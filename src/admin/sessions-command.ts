import { formatBytes, formatTable } from './commands.ts';
import { humanDuration } from '../util/duration.ts';
import type { AdminClient } from './client.ts';
import type { SessionJson, SessionsPageJson } from './sessions-api.ts';

/**
 * `pcoip-lb sessions`: one page of GET /sessions as a table (or the JSON with --json), worst media
 * quality first. The filters go to the server as query parameters; a bad one comes back as the
 * server's 400 with its PLB_E_ code.
 */
export interface SessionsCommandOptions {
  connector?: string;
  client?: string;
  state?: string;
  sort?: string;
  limit?: number;
  offset?: number;
  json: boolean;
}

export async function sessionsCommand(client: AdminClient, out: NodeJS.WritableStream, options: SessionsCommandOptions): Promise<SessionsPageJson> {
  const params = new URLSearchParams();
  for (const key of ['connector', 'client', 'state', 'sort', 'limit', 'offset'] as const) {
    const v = options[key];
    if (v !== undefined) params.set(key, String(v));
  }
  const query = params.size > 0 ? `?${params}` : '';
  const page = await client.get<SessionsPageJson>(`/sessions${query}`);
  out.write(options.json ? `${JSON.stringify(page, null, 2)}\n` : formatSessions(page));
  return page;
}

const pct = (ratio: number | undefined) => (ratio === undefined ? '-' : `${(ratio * 100).toFixed(ratio >= 0.1 ? 0 : ratio >= 0.01 ? 1 : 2)}%`);

/** The worst value of one direction over a session's UDP flows (undefined: nothing measured). */
function worst(s: SessionJson, direction: 'fromClient' | 'fromConnector', pick: (d: NonNullable<SessionJson['udp'][number]['quality']>['fromClient']) => number): number | undefined {
  const values = s.udp.flatMap((u) => (u.quality && u.quality[direction].layout !== 'detecting' && u.quality[direction].layout !== 'unknown' ? [pick(u.quality[direction])] : []));
  return values.length === 0 ? undefined : Math.max(...values);
}

export function formatSessions(page: SessionsPageJson): string {
  const shown = page.sessions.length;
  const header =
    shown === 0
      ? `no sessions${page.total > 0 ? ` on this page (${page.total} in all; offset ${page.offset})` : ''}\n`
      : `${page.total} session(s); showing ${page.offset + 1}–${page.offset + shown}, worst media quality first\n`;
  if (shown === 0) return header;
  const rows = [
    ['SESSION', 'CLIENT', 'CONNECTOR', 'STATE', 'AGE', 'TCP', 'UDP', 'IN', 'OUT', 'LOSS IN', 'LOSS OUT', 'JITTER', 'REKEYS'],
    ...page.sessions.map((s) => {
      const liveTcp = s.tcp.filter((t) => t.endedAt === null).length;
      const liveUdp = s.udp.filter((u) => u.endedAt === null).length;
      const bytesIn = [...s.tcp, ...s.udp].reduce((n, f) => n + f.bytesIn, 0);
      const bytesOut = [...s.tcp, ...s.udp].reduce((n, f) => n + f.bytesOut, 0);
      const jitter = s.quality.measured ? `${s.quality.jitterMs.toFixed(1)} ms` : '-';
      return [
        s.id,
        s.client,
        s.connector,
        s.state,
        humanDuration(s.ageSeconds * 1000),
        `${liveTcp}/${s.tcp.length}`,
        `${liveUdp}/${s.udp.length}`,
        formatBytes(bytesIn),
        formatBytes(bytesOut),
        pct(worst(s, 'fromClient', (d) => d.lossRatio)),
        pct(worst(s, 'fromConnector', (d) => d.lossRatio)),
        jitter,
        String(s.quality.rekeys),
      ];
    }),
  ];
  return `${header}${formatTable(rows)}\nLOSS IN: client → proxy; LOSS OUT: Connector → proxy (ESP sequence gaps; docs/sessions.md). TCP/UDP: open/all flows.\n`;
}
