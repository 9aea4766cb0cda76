import type { Summary } from './histogram.ts';
import type { LoadProgress, LoadReport } from './load.ts';

/** Renders a load report as plain-text tables (also valid Markdown), for terminals and bench/README.md. */
export function formatReport(report: LoadReport, maxFailuresListed = 20): string {
  const s = report.settings;
  const lines: string[] = [];
  lines.push(
    `${report.users} users × ${formatBitrate(s.bitrateBps)} for ${(s.durationMs / 1000).toFixed(1)} s, ${s.packetBytes}-byte datagrams, ` +
      `${s.concurrency} set-ups at a time, ${s.distinctSources ? 'one source address per user' : 'one shared source address'}, client mix "${s.mix}"; wall time ${(report.wallMs / 1000).toFixed(1)} s`,
    '',
  );
  const kinds = Object.entries(report.failuresByKind)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  const u = report.udp;
  lines.push(
    ...table(
      ['figure', 'value'],
      [
        ['users ok / failed', `${report.ok} / ${report.failed}${kinds ? ` (${kinds})` : ''}`],
        ['set-up latency ms (p50 / p95 / p99 / max)', quantiles(report.setupMs, 1)],
        ['UDP datagrams sent / echoed', `${u.sent} / ${u.received}`],
        ['UDP loss % (total; up / down)', `${fixed(u.lossPct, 3)} (${fixed(u.upLossPct, 3)} / ${fixed(u.downLossPct, 3)})`],
        ['UDP loss % per user (p50 / p95 / p99 / max)', quantiles(u.lossPerUserPct, 2)],
        ['UDP round trip ms (p50 / p95 / p99 / max)', quantiles(u.rttMs, 2)],
      ],
    ),
  );
  lines.push('');
  lines.push(
    ...table(
      ['Connector', 'users', 'ok', 'failed', 'share'],
      report.perConnector.map((c) => [c.id, String(c.users), String(c.ok), String(c.failed), `${fixed((100 * c.users) / Math.max(1, report.users), 1)} %`]),
    ),
  );
  lines.push('');
  lines.push(
    ...table(
      ['client profile', 'users', 'ok', 'failed', 'set-up ms p50 / p99', 'requests / connections per user'],
      report.perProfile.map((p) => [
        p.profile,
        String(p.users),
        String(p.ok),
        String(p.failed),
        p.setupMs.count === 0 ? 'n/a' : `${fixed(p.setupMs.p50, 1)} / ${fixed(p.setupMs.p99, 1)}`,
        `${fixed(p.requestsPerUser, 1)} / ${fixed(p.connectionsPerUser, 1)}`,
      ]),
    ),
  );
  if (report.failures.length > 0) {
    lines.push('', `failed users (${report.failures.length}${report.failures.length > maxFailuresListed ? `, first ${maxFailuresListed}` : ''}):`);
    for (const f of report.failures.slice(0, maxFailuresListed)) {
      lines.push(`  ${f.name}${f.localAddress ? ` (${f.localAddress})` : ''} [${f.profile}]: ${f.kind ?? 'failed'}: ${f.message ?? ''}`);
    }
  }
  return lines.join('\n');
}

export function formatProgress(p: LoadProgress): string {
  const done = p.ok + p.failed;
  return `[sessions ${(p.elapsedMs / 1000).toFixed(0)}s] ${done}/${p.users} done (${p.ok} ok, ${p.failed} failed), ${p.settingUp} setting up, ${p.streaming} streaming`;
}

export function formatBitrate(bps: number): string {
  if (bps >= 1e9) return `${fixed(bps / 1e9, 2)} Gbit/s`;
  if (bps >= 1e6) return `${fixed(bps / 1e6, 2)} Mbit/s`;
  if (bps >= 1e3) return `${fixed(bps / 1e3, 2)} kbit/s`;
  return `${bps} bit/s`;
}

function quantiles(s: Summary, digits: number): string {
  if (s.count === 0) return 'n/a';
  return [s.p50, s.p95, s.p99, s.max].map((v) => fixed(v, digits)).join(' / ');
}

function fixed(v: number, digits: number): string {
  return v.toFixed(digits);
}

/** A Markdown table with columns padded for reading in a terminal. */
export function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const row = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [row(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(row)];
}
