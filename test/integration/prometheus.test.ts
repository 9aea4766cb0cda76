import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startCheckedConnector, type CheckedConnector } from '../helpers/checked-connector.ts';
import { startCli, rawTestConfig, type CliProcess } from '../helpers/cli-process.ts';
import { tcpGreeting } from '../helpers/clients.ts';
import { openUdpClient } from '../helpers/flow-clients.ts';
import { parsePrometheusText } from '../helpers/prom-text.ts';

/**
 * Prometheus's own tools on what pcoip-lb ships: `promtool check metrics` on /metrics of the
 * real CLI (default health checks; 1 and 2 workers), `promtool check rules` and `promtool test
 * rules` on deploy/prometheus, and the Grafana dashboard's queries: every one parses (as a
 * recording rule, offline) and names only metrics /metrics exports. promtool is Debian's
 * `prometheus` package (installed by .ci/run); where it is missing these tests say so and skip.
 * Connectors on 127.0.13.21-22, clients from 127.0.13.80.
 */
const PROMTOOL = '/usr/bin/promtool';
const hasPromtool = existsSync(PROMTOOL);
if (!hasPromtool) console.warn(`prometheus test skipped: ${PROMTOOL} is missing (apt-get install -y prometheus)`);

const DEPLOY = fileURLToPath(new URL('../../deploy/', import.meta.url));
const promtool = (args: string[], input?: string) => spawnSync(PROMTOOL, args, { input, encoding: 'utf8', timeout: 30_000, cwd: join(DEPLOY, 'prometheus') });

interface DashboardPanel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: Array<{ refId: string; expr: string }>;
}

const dashboard = () => JSON.parse(readFileSync(join(DEPLOY, 'grafana/pcoip-lb.json'), 'utf8')) as { uid: string; panels: DashboardPanel[]; templating: { list: Array<{ name: string }> } };
/** Grafana's variables replaced by what they expand to, so Prometheus's parser can read the query. */
const asPromQl = (expr: string) => expr.replaceAll('$__rate_interval', '5m').replaceAll('$instance', '.*');
const METRIC_NAME = /\b(?:pcoip_lb|process|nodejs)_[a-z0-9_]+\b/g;

describe.skipIf(!hasPromtool)('Prometheus: /metrics, alert rules and the Grafana dashboard', () => {
  let connectors: CheckedConnector[];
  let cli: CliProcess | undefined;
  /** Sample names seen on /metrics (both runs). */
  const exported = new Set<string>();
  let work: string;

  beforeAll(async () => {
    connectors = await Promise.all([startCheckedConnector('prom-a', '127.0.13.21'), startCheckedConnector('prom-b', '127.0.13.22')]);
    work = mkdtempSync(join(tmpdir(), 'plb13b-prom-'));
  });
  afterEach(async () => {
    await cli?.cleanup();
    cli = undefined;
  });
  afterAll(async () => {
    await Promise.all((connectors ?? []).map((c) => c.close()));
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it.each([1, 2])('promtool check metrics passes on /metrics of the CLI with workers: %i and the default health checks', async (workers) => {
    cli = await startCli(
      rawTestConfig(
        connectors.map((c) => c.config()),
        {
          workers,
          health: { interval: '200ms', jitter: '0%' },
          listeners: { broker: { bind: '127.0.0.1:0' }, pcoipTcp: { bind: '127.0.0.1:0' }, pcoipUdp: { bind: '127.0.0.1:0', idleTimeout: '1s' } },
        },
      ),
      [],
      15_000,
    );
    // Traffic, so every family has samples: a connect, a closed flow, UDP packets, health rounds.
    const session = await tcpGreeting(cli.ports.pcoipTcp!, '127.0.13.80');
    const media = await openUdpClient(cli.ports.pcoipUdp!, '127.0.13.80');
    await media.roundTrip('m0');
    media.close();
    session.socket.destroy();
    await cli.waitForLine((l) => l.msg === 'flow closed' && l.listener === 'pcoipTcp', 5000);
    // Workers report their counters every second.
    await new Promise((r) => setTimeout(r, 1500));
    const text = await (await fetch(`${cli.adminUrl}/metrics`)).text();
    const m = parsePrometheusText(text);
    expect(m.value('pcoip_lb_flow_duration_seconds_count', { listener: 'pcoipTcp', connector: session.id })).toBe(1);
    expect(m.value('pcoip_lb_upstream_connect_seconds_count', { listener: 'pcoipTcp', connector: session.id })).toBe(1);
    expect(m.value('pcoip_lb_health_checks_total', { connector: 'prom-a', check: 'broker', result: 'pass' })).toBeGreaterThan(0);
    // Families (a counter with no event yet has no sample) and sample names (histogram _bucket, _sum, _count).
    for (const name of [...m.types.keys(), ...m.samples.map((s) => s.name)]) exported.add(name);
    if (workers === 2) {
      // The workers hold the data path's descriptors: each reports its own (counted every 10 s, the first right away).
      let fds: Array<number | undefined> = [];
      for (let i = 0; i < 50 && !fds.every((n) => n !== undefined && n > 10); i++) {
        const now = parsePrometheusText(await (await fetch(`${cli.adminUrl}/metrics`)).text());
        fds = ['0', '1'].flatMap((worker) => [now.value('pcoip_lb_worker_open_fds', { worker }), now.value('pcoip_lb_worker_max_fds', { worker })]);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(fds.every((n) => n !== undefined && n > 10), String(fds)).toBe(true);
    }
    const check = promtool(['check', 'metrics'], text);
    expect({ status: check.status, out: check.stdout + check.stderr }).toEqual({ status: 0, out: '' });
  });

  it('the alert rules pass promtool check rules and their unit tests (promtool test rules)', () => {
    const check = promtool(['check', 'rules', 'alerts.yml']);
    expect(check.status, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toMatch(/SUCCESS: 6 rules found/);
    const tests = promtool(['test', 'rules', 'alerts.test.yml']);
    expect(tests.status, tests.stdout + tests.stderr).toBe(0);
    expect(tests.stdout).toMatch(/SUCCESS/);
  });

  it('every dashboard query parses, and the alerts and the dashboard query only metrics /metrics exports', () => {
    expect(exported.size, 'the /metrics runs above must have passed first').toBeGreaterThan(50);
    const d = dashboard();
    expect(d.uid).toBe('pcoip-lb');
    expect(d.templating.list.map((v) => v.name)).toEqual(['datasource', 'instance']);
    const ids = d.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const targets = d.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p, ...t })));
    expect(targets.length).toBeGreaterThan(20);
    for (const p of d.panels) expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
    // Each query as a recording rule: promtool parses it offline.
    const rulesFile = join(work, 'dashboard-queries.yml');
    writeFileSync(rulesFile, stringify({ groups: [{ name: 'dashboard', rules: targets.map((t) => ({ record: `dashboard:panel_${t.panel.id}_${t.refId}`, expr: asPromQl(t.expr) })) }] }));
    const parsed = spawnSync(PROMTOOL, ['check', 'rules', rulesFile], { encoding: 'utf8', timeout: 30_000 });
    expect(parsed.status, parsed.stdout + parsed.stderr).toBe(0);

    const alerts = readFileSync(join(DEPLOY, 'prometheus/alerts.yml'), 'utf8');
    const queried = new Set([...targets.flatMap((t) => t.expr.match(METRIC_NAME) ?? []), ...(alerts.match(METRIC_NAME) ?? [])]);
    const missing = [...queried].filter((name) => !exported.has(name));
    expect(missing).toEqual([]);
  });
});
