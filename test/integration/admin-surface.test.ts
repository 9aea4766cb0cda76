import { request } from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { parsePrometheusText } from '../helpers/prom-text.ts';
import { clientPlacedOn } from '../helpers/checked-connector.ts';
import { echo, TestFlows } from '../helpers/flow-clients.ts';
import type { ReloadOutcome } from '../../src/control/reload.ts';

/**
 * The admin surface of issue 13: same-origin POSTs (port included), probes (/livez vs /readyz),
 * Connectors removed by a reload whose flows are still open, and the metrics operators look
 * for. Connectors on 127.0.13.x.
 */
function post(url: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (s: string) => (body += s));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const metricsOf = async (proxy: TestProxy) => parsePrometheusText(await (await fetch(`${proxy.adminUrl}/metrics`)).text());

describe('admin surface', () => {
  let a: FakeConnector;
  let b: FakeConnector;
  let proxy: TestProxy | undefined;
  const flows = new TestFlows();

  beforeAll(async () => {
    [a, b] = (await Promise.all([startFakeConnector('adm-a', '127.0.13.1'), startFakeConnector('adm-b', '127.0.13.2')])) as [FakeConnector, FakeConnector];
  });
  afterEach(async () => {
    flows.closeAll();
    await proxy?.stop();
    proxy = undefined;
  });
  afterAll(async () => {
    await Promise.all([a, b].map((x) => x.close()));
  });

  it('a POST from another origin is refused even on the same host (the port counts); a malformed Origin is a 400, not a 500', async () => {
    proxy = await startTestProxy(testConfig([a.config(), b.config()]));
    const port = proxy.app.adminAddress!.port;
    proxy.app.setReloadSource(() => ({ ok: true, connectors: { added: [], removed: [], changed: [] }, listeners: {}, applied: [], restartRequired: [], pinsDropped: 0 }));
    const otherPort = port === 9999 ? 9998 : 9999;
    for (const origin of [`http://127.0.0.1:${otherPort}`, 'https://127.0.0.1:' + port, 'null', 'http://evil.example']) {
      expect(await post(`${proxy.adminUrl}/connectors/adm-a/maint`, { origin }), origin).toMatchObject({ status: 403 });
      expect(await post(`${proxy.adminUrl}/reload`, { origin }), origin).toMatchObject({ status: 403 });
    }
    expect(proxy.app.pool.get('adm-a')!.state).toBe('active');
    expect(proxy.app.reloadRequests.results.succeeded).toBe(0);

    const malformed = await post(`${proxy.adminUrl}/connectors/adm-a/maint`, { origin: 'http://[' });
    expect(malformed.status).toBe(400);
    expect(JSON.parse(malformed.body)).toMatchObject({ error: { code: 'PLB_E_ADMIN_REQUEST', message: 'malformed Origin header' } });
    expect(proxy.logs.lines.filter((l) => Number(l.level) >= 50)).toEqual([]);

    // The page's own origin (what a browser sends from the live page) is allowed.
    expect(await post(`${proxy.adminUrl}/connectors/adm-a/drain`, { origin: `http://127.0.0.1:${port}` })).toMatchObject({ status: 200 });
    expect(proxy.app.pool.get('adm-a')!.state).toBe('drain');
  });

  it('/livez stays 200 while no Connector takes new clients; /readyz (and its old name /healthz) turn 503', async () => {
    proxy = await startTestProxy(testConfig([a.config(), b.config()]));
    const probe = async (path: string) => (await fetch(`${proxy!.adminUrl}${path}`)).status;
    expect([await probe('/livez'), await probe('/readyz'), await probe('/healthz')]).toEqual([200, 200, 200]);
    proxy.app.pool.setState('adm-a', 'maint');
    proxy.app.pool.setHealth('adm-b', 'down', 'test');
    expect([await probe('/livez'), await probe('/readyz'), await probe('/healthz')]).toEqual([200, 503, 503]);
    expect(await (await fetch(`${proxy.adminUrl}/readyz`)).json()).toMatchObject({ error: { code: 'PLB_E_NO_CONNECTOR' } });
    expect(await (await fetch(`${proxy.adminUrl}/livez`)).json()).toMatchObject({ status: 'ok' });
  });

  it('flows of a Connector removed by a reload stay in /status and /metrics until they end', async () => {
    proxy = await startTestProxy(testConfig([a.config(), b.config()]));
    const { pcoipTcp, pcoipUdp } = proxy.addresses;
    const client = clientPlacedOn(proxy.app, 'adm-a', 120);
    const control = await flows.greet(pcoipTcp.port, client);
    const media = await flows.udpClient(pcoipUdp.port, client);
    expect((await media.roundTrip('m0')).toString()).toBe('adm-a|m0');
    const other = await flows.greet(pcoipTcp.port, clientPlacedOn(proxy.app, 'adm-b', 120));
    expect([control.id, other.id]).toEqual(['adm-a', 'adm-b']);

    proxy.app.reload(testConfig([b.config()]));
    await echo(control.socket, 'still-open');
    const status = (await (await fetch(`${proxy.adminUrl}/status`)).json()) as {
      activeFlows: number;
      connectors: Array<{ id: string }>;
      removedConnectors: Array<{ id: string; activeFlows: number; flows: Record<string, { active: number }> }>;
    };
    expect(status.connectors.map((c) => c.id)).toEqual(['adm-b']);
    expect(status.removedConnectors).toMatchObject([{ id: 'adm-a', activeFlows: 2, flows: { pcoipTcp: { active: 1 }, pcoipUdp: { active: 1 } } }]);
    expect(status.activeFlows).toBe(3);
    const m = await metricsOf(proxy);
    expect(m.value('pcoip_lb_flows_active', { listener: 'pcoipTcp', connector: 'adm-a' })).toBe(1);
    expect(m.value('pcoip_lb_flows_active', { listener: 'pcoipUdp', connector: 'adm-a' })).toBe(1);
    expect(m.value('pcoip_lb_bytes_total', { listener: 'pcoipTcp', connector: 'adm-a', direction: 'in' })).toBe('still-open'.length);
    // Not a Connector any more: no health or state series for it.
    expect(m.value('pcoip_lb_connector_up', { connector: 'adm-a' })).toBeUndefined();

    control.socket.destroy();
    media.close();
    await proxy.logs.waitFor((l) => l.msg === 'flow closed' && l.listener === 'pcoipTcp' && l.connector === 'adm-a');
    // The UDP flow ends by idle timeout; once both are gone the removed Connector leaves the documents.
    proxy.app.reload(testConfig([b.config()], { listeners: { broker: { bind: '127.0.0.1:0' }, pcoipTcp: { bind: '127.0.0.1:0' }, pcoipUdp: { bind: '127.0.0.1:0', idleTimeout: '1s' } } }));
    await proxy.logs.waitFor((l) => l.msg === 'flow closed' && l.listener === 'pcoipUdp' && l.connector === 'adm-a', 5000);
    const after = (await (await fetch(`${proxy.adminUrl}/status`)).json()) as { removedConnectors: unknown[]; activeFlows: number };
    expect(after).toMatchObject({ removedConnectors: [], activeFlows: 1 });
    expect((await metricsOf(proxy)).value('pcoip_lb_flows_active', { listener: 'pcoipTcp', connector: 'adm-a' })).toBeUndefined();
  });

  it('exports weight, drained, health transitions and time in state, connect and flow-duration histograms, limits, build info and reload results', async () => {
    proxy = await startTestProxy(testConfig([a.config(), { ...b.config(), weight: 7 }], { listeners: { pcoipTcp: { bind: '127.0.0.1:0', maxConnections: 123 }, pcoipUdp: { bind: '127.0.0.1:0' } } }));
    const app = proxy.app;
    const control = await flows.greet(proxy.addresses.pcoipTcp.port, clientPlacedOn(app, 'adm-a', 130));
    let m = await metricsOf(proxy);
    expect(m.value('pcoip_lb_connector_weight', { connector: 'adm-b' })).toBe(7);
    expect(m.value('pcoip_lb_upstream_connect_seconds_count', { listener: 'pcoipTcp', connector: 'adm-a' })).toBe(1);
    expect(m.value('pcoip_lb_upstream_connect_seconds_bucket', { listener: 'pcoipTcp', connector: 'adm-a', le: '+Inf' })).toBe(1);
    expect(m.value('pcoip_lb_upstream_connect_seconds_bucket', { listener: 'pcoipTcp', connector: 'adm-a', le: '5' })).toBe(1);
    expect(m.value('pcoip_lb_upstream_connect_seconds_sum', { listener: 'pcoipTcp', connector: 'adm-a' })).toBeGreaterThan(0);
    expect(m.types.get('pcoip_lb_upstream_connect_seconds')).toBe('histogram');
    expect(m.value('pcoip_lb_flow_duration_seconds_count', { listener: 'pcoipTcp', connector: 'adm-a' })).toBeUndefined();
    expect(m.value('pcoip_lb_limit_max', { listener: 'pcoipTcp', limit: 'max-connections' })).toBe(123);
    expect(m.value('pcoip_lb_limit_current', { listener: 'pcoipTcp', limit: 'max-connections' })).toBe(1);
    expect(m.value('pcoip_lb_connector_live_clients', { connector: 'adm-a' })).toBe(1);
    expect(m.value('pcoip_lb_build_info', { version: '0.1.0', nodejs: process.versions.node })).toBe(1);
    expect(m.value('pcoip_lb_connectors_taking_new_clients')).toBe(2);

    control.socket.destroy();
    await proxy.logs.waitFor((l) => l.msg === 'flow closed' && l.connector === 'adm-a');
    app.pool.setState('adm-a', 'drain');
    app.pool.setHealth('adm-b', 'down', 'test');
    m = await metricsOf(proxy);
    expect(m.value('pcoip_lb_flow_duration_seconds_count', { listener: 'pcoipTcp', connector: 'adm-a' })).toBe(1);
    expect(m.value('pcoip_lb_flow_duration_seconds_bucket', { listener: 'pcoipTcp', connector: 'adm-a', le: '10' })).toBe(1);
    expect(m.value('pcoip_lb_connector_drained', { connector: 'adm-a' })).toBe(1);
    expect(m.value('pcoip_lb_connector_drained', { connector: 'adm-b' })).toBe(0);
    expect(m.value('pcoip_lb_connector_health_transitions_total', { connector: 'adm-b', to: 'down' })).toBe(1);
    expect(m.value('pcoip_lb_connector_health_transitions_total', { connector: 'adm-b', to: 'up' })).toBe(0);
    expect(m.value('pcoip_lb_connector_health_last_change_seconds', { connector: 'adm-b' })).toBeLessThan(1);
    expect(m.value('pcoip_lb_connector_health_last_change_seconds', { connector: 'adm-a' })).toBeGreaterThan(0);
    expect(m.value('pcoip_lb_connectors_taking_new_clients')).toBe(0);
    expect(m.value('pcoip_lb_connector_live_clients', { connector: 'adm-a' })).toBe(0);
    expect(m.value('pcoip_lb_connector_pinned_clients', { connector: 'adm-a' })).toBe(1);

    // Reload results, as the CLI wires them (a source that re-reads the file): one good, one rejected.
    let next: ReloadOutcome = { ok: true, connectors: { added: [], removed: [], changed: [] }, listeners: {}, applied: [], restartRequired: [], pinsDropped: 0 };
    app.setReloadSource(() => next);
    expect((await fetch(`${proxy.adminUrl}/reload`, { method: 'POST' })).status).toBe(200);
    next = { ok: false, code: 'PLB_E_CONFIG_INVALID', message: 'bad', errors: ['x'] };
    expect((await fetch(`${proxy.adminUrl}/reload`, { method: 'POST' })).status).toBe(422);
    m = await metricsOf(proxy);
    expect(m.value('pcoip_lb_config_reloads_total', { result: 'success' })).toBe(1);
    expect(m.value('pcoip_lb_config_reloads_total', { result: 'failure' })).toBe(1);
    expect(m.value('pcoip_lb_config_last_reload_successful')).toBe(0);
    expect(m.value('pcoip_lb_config_last_reload_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000 - 60);
    // promtool's rule: no gauge ends in _total (prom-client's nodejs_active_*_total are dropped; their by-type gauges stay).
    for (const [name, type] of m.types) if (name.endsWith('_total')) expect(type, name).toBe('counter');
    expect(m.types.get('nodejs_active_handles')).toBe('gauge');
    expect(m.value('process_max_fds')).toBeGreaterThan(0);
  });
});
