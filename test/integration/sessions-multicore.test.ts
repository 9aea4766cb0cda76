import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runLoad } from '../../src/sim/load.ts';
import { spiLocator } from '../../src/sim/pool.ts';
import type { CliProcess, LogLine } from '../helpers/cli-process.ts';
import { runCli } from '../helpers/cli.ts';
import { startLabCli, startTerminateSims, workersThatClosed } from '../helpers/cli-lab.ts';
import type { SessionsPageJson } from '../../src/admin/sessions-api.ts';

/**
 * The per-session view as operators run pcoip-lb: the real CLI, 2 worker processes, health checks
 * on, a terminating broker with sniRouting, in front of simulated Connectors. Every broker request
 * of a login is its own TLS connection, so the kernel spreads one session's parts over both
 * workers; GET /sessions (and `pcoip-lb sessions`) must still show one session per user with its
 * broker exchange, its 4172/TCP connection and its UDP flow, and the media quality of that flow.
 */
const USERS = 6;

describe('sessions across worker processes', () => {
  let lab: Awaited<ReturnType<typeof startTerminateSims>>;
  let cli: (CliProcess & { started: LogLine }) | undefined;

  beforeAll(async () => {
    lab = await startTerminateSims(['sm-a', 'sm-b', 'sm-c'], '127.15.3.');
  });
  afterEach(async () => {
    await cli?.cleanup();
    cli = undefined;
  });
  afterAll(async () => {
    await lab.close();
  });

  it('joins the parts of each session held by different workers; quality measured; the CLI lists them', async () => {
    const sims = lab.sims;
    cli = await startLabCli(lab.config({ workers: 2 }));
    const ports = cli.ports;
    const load = runLoad({
      users: USERS,
      target: { broker: { host: '127.0.0.1', port: ports.broker! }, pcoipTcp: { host: '127.0.0.1', port: ports.pcoipTcp! }, pcoipUdp: { host: '127.0.0.1', port: ports.pcoipUdp! } },
      bitrateBps: 400_000,
      durationMs: 2500,
      concurrency: USERS,
      locateSpi: spiLocator(sims),
    });
    const get = async (query = '') => (await (await fetch(`${cli!.adminUrl}/sessions${query}`)).json()) as SessionsPageJson;
    // While they stream: one streaming session per user.
    const deadline = Date.now() + 10_000;
    let page = await get();
    while (page.sessions.filter((s) => s.state === 'streaming').length < USERS && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      page = await get();
    }
    expect(page.sessions.map((s) => s.state)).toEqual(Array(USERS).fill('streaming'));
    const report = await load;
    expect(report.failed, JSON.stringify(report.failures)).toBe(0);

    // Each session ends with its 4172/TCP connection (the users close it after their media).
    const ended = Date.now() + 10_000;
    page = await get('?sort=started');
    while (page.sessions.some((s) => s.state !== 'ended') && Date.now() < ended) {
      await new Promise((r) => setTimeout(r, 100));
      page = await get('?sort=started');
    }
    expect(page.total).toBe(USERS);
    const byConnector = new Map<string, number>();
    for (const s of page.sessions) {
      expect(s.state).toBe('ended');
      // hello, authenticate, get-resource-list, allocate-resource, bye: each on its own connection.
      expect(s.broker?.requests, `broker requests of ${s.id}`).toBe(5);
      expect(s.tcp).toHaveLength(1);
      expect(s.udp).toHaveLength(1);
      expect(s.sni, 'allocation SNI').toMatch(new RegExp(`\\.${s.connector}\\.sim\\.invalid$`));
      const q = s.udp[0]!.quality!;
      expect(q.fromClient).toMatchObject({ layout: 'transport-header', lost: 0 });
      expect(q.fromConnector).toMatchObject({ layout: 'transport-header', lost: 0 });
      expect(q.fromClient.received).toBeGreaterThan(50);
      byConnector.set(s.connector, (byConnector.get(s.connector) ?? 0) + 1);
    }
    // The users' own view agrees: each reached the Connector the session is listed on.
    const landed = new Map<string, number>();
    for (const u of report.perConnector) landed.set(u.id, u.ok);
    expect(Object.fromEntries(byConnector)).toEqual(Object.fromEntries([...landed].filter(([, n]) => n > 0)));
    // One session's parts sat in both workers (the kernel spreads the per-request connections).
    expect(page.sessions.some((s) => (s.workers ?? []).length === 2)).toBe(true);
    expect(workersThatClosed(cli.lines, (l) => l.listener === 'broker')).toEqual(new Set([0, 1]));

    const filtered = await get(`?connector=${page.sessions[0]!.connector}`);
    expect(filtered.sessions.every((s) => s.connector === page.sessions[0]!.connector)).toBe(true);
    const bad = await fetch(`${cli.adminUrl}/sessions?limit=0`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('PLB_E_ADMIN_REQUEST');

    const table = await runCli(['sessions', '--admin', cli.adminUrl!]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(new RegExp(`^${USERS} session\\(s\\); showing 1–${USERS}, worst media quality first\\n`));
    expect(table.stdout).toMatch(/^SESSION +CLIENT +CONNECTOR +STATE +AGE +TCP +UDP +IN +OUT +LOSS IN +LOSS OUT +JITTER +REKEYS$/m);
    for (const s of page.sessions) expect(table.stdout).toMatch(new RegExp(`^${s.id} +${s.client.replace(/\./g, '\\.')} +${s.connector} +ended .* 0\\.00% +0\\.00% `, 'm'));
    const json = await runCli(['sessions', '--admin', cli.adminUrl!, '--json', '--state', 'ended', '--limit', '2']);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ total: USERS, limit: 2 });
    const refused = await runCli(['sessions', '--admin', cli.adminUrl!, '--state', 'dancing']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('PLB_E_ADMIN_REQUEST');
  }, 60_000);
});
