import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { tcpGreeting, udpRoundTrip } from '../helpers/clients.ts';
import { parsePrometheusText } from '../helpers/prom-text.ts';
import { clientPlacedOn } from '../helpers/checked-connector.ts';
import { createLogger } from '../../src/logger.ts';
import { App } from '../../src/app.ts';
import { PlbError } from '../../src/errors.ts';

async function call(url: string, init: RequestInit = {}): Promise<{ status: number; headers: Headers; json: Record<string, any> }> {
  const res = await fetch(url, init);
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text.startsWith('{') ? (JSON.parse(text) as Record<string, any>) : { text } };
}

/** A raw request with headers fetch() will not let us forge (Host). */
function rawGet(url: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (s: string) => (body += s));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('admin API', () => {
  let fakes: FakeConnector[];
  let proxy: TestProxy;

  beforeAll(async () => {
    fakes = await Promise.all([startFakeConnector('conn-a', '127.0.1.61'), startFakeConnector('conn-b', '127.0.1.62')]);
    proxy = await startTestProxy(testConfig(fakes.map((f) => f.config())));
  });

  afterAll(async () => {
    await proxy.stop();
    await Promise.all(fakes.map((f) => f.close()));
  });

  it('answers unknown paths with 404, unknown Connectors with 404, wrong methods with 405 — all as JSON with codes', async () => {
    expect(await call(`${proxy.adminUrl}/nope`)).toMatchObject({ status: 404, json: { error: { code: 'PLB_E_ADMIN_NOT_FOUND' } } });
    expect(await call(`${proxy.adminUrl}/connectors/conn-a/frobnicate`, { method: 'POST' })).toMatchObject({ status: 404, json: { error: { code: 'PLB_E_ADMIN_NOT_FOUND' } } });
    expect(await call(`${proxy.adminUrl}/connectors/zz`)).toMatchObject({ status: 404, json: { error: { code: 'PLB_E_UNKNOWN_CONNECTOR', message: 'no Connector with id "zz"' } } });
    expect(await call(`${proxy.adminUrl}/connectors/zz/drain`, { method: 'POST' })).toMatchObject({ status: 404, json: { error: { code: 'PLB_E_UNKNOWN_CONNECTOR' } } });
    const wrong = await call(`${proxy.adminUrl}/connectors/conn-a/drain`);
    expect(wrong).toMatchObject({ status: 405, json: { error: { code: 'PLB_E_ADMIN_METHOD' } } });
    expect(wrong.headers.get('allow')).toBe('POST');
    const del = await call(`${proxy.adminUrl}/status`, { method: 'DELETE' });
    expect(del.status).toBe(405);
    expect(del.headers.get('allow')).toBe('GET');
    expect(proxy.app.pool.get('conn-a')!.state).toBe('active');
  });

  it('refuses a foreign Host (DNS rebinding) and a cross-origin POST', async () => {
    expect(await rawGet(`${proxy.adminUrl}/status`, { host: 'evil.example:8404' })).toMatchObject({ status: 403 });
    const cross = await call(`${proxy.adminUrl}/connectors/conn-a/maint`, { method: 'POST', headers: { origin: 'http://evil.example' } });
    expect(cross).toMatchObject({ status: 403, json: { error: { code: 'PLB_E_ADMIN_FORBIDDEN' } } });
    expect(proxy.app.pool.get('conn-a')!.state).toBe('active');
  });

  it('GET /affinity/:client says which Connector and why', async () => {
    const client = clientPlacedOn(proxy.app, 'conn-b', 40);
    expect((await call(`${proxy.adminUrl}/affinity/${client}`)).json).toMatchObject({ client, pinned: false, connector: 'conn-b' });
    const session = await tcpGreeting(proxy.addresses.pcoipTcp.port, client);
    const pinned = (await call(`${proxy.adminUrl}/affinity/${client}`)).json;
    expect(pinned).toMatchObject({ client, clientKey: `${client}/32`, pinned: true, connector: 'conn-b', reason: 'placed', flows: 1, connectorHealth: 'up', connectorState: 'active' });
    expect(pinned.explanation).toBe('pinned to conn-b (placed by consistent hashing); 1 open flow(s)');
    session.socket.destroy();
    expect(await call(`${proxy.adminUrl}/affinity/not-an-ip`)).toMatchObject({ status: 400, json: { error: { code: 'PLB_E_ADMIN_REQUEST' } } });
    expect(await call(`${proxy.adminUrl}/affinity/%E0%A4%A`)).toMatchObject({ status: 400, json: { error: { code: 'PLB_E_ADMIN_REQUEST' } } });
  });

  it('GET / serves the live page; GET /healthz is 200 while a Connector takes new clients, else 503', async () => {
    const page = await fetch(`${proxy.adminUrl}/`);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(await page.text()).toContain('<title>pcoip-lb</title>');
    expect(await call(`${proxy.adminUrl}/healthz`)).toMatchObject({ status: 200, json: { status: 'ok', connectorsTakingNewClients: 2 } });
    proxy.app.pool.setState('conn-a', 'maint');
    proxy.app.pool.setHealth('conn-b', 'down', 'test');
    try {
      expect(await call(`${proxy.adminUrl}/healthz`)).toMatchObject({ status: 503, json: { error: { code: 'PLB_E_NO_CONNECTOR' } } });
    } finally {
      proxy.app.pool.setState('conn-a', 'active');
      proxy.app.pool.setHealth('conn-b', 'up');
    }
  });

  it('/metrics parses as Prometheus text and its counters match the traffic sent', async () => {
    const before = parsePrometheusText(await (await fetch(`${proxy.adminUrl}/metrics`)).text());
    const base = (name: string, labels: Record<string, string>) => before.value(name, labels) ?? 0;
    const client = clientPlacedOn(proxy.app, 'conn-a', 60);
    // 4172/TCP: the fake greets with "conn-a\n" (7 bytes), then echoes 11 bytes.
    const session = await tcpGreeting(proxy.addresses.pcoipTcp.port, client);
    const echoed = new Promise<void>((resolve) => {
      let got = 0;
      session.socket.on('data', (c: Buffer) => ((got += c.length) >= 11 ? resolve() : undefined));
    });
    session.socket.write('hello world');
    await echoed;
    // 4172/UDP: 3 datagrams of 100 bytes, each answered with "conn-a|" + the datagram (107 bytes).
    for (let i = 0; i < 3; i++) await udpRoundTrip(proxy.addresses.pcoipUdp.port, client, Buffer.alloc(100, i));
    // A refusal: nobody takes new clients for a moment.
    proxy.app.pool.setState('conn-a', 'maint');
    proxy.app.pool.setState('conn-b', 'maint');
    await expect(tcpGreeting(proxy.addresses.broker.port, '127.0.2.250')).rejects.toThrow();
    proxy.app.pool.setState('conn-a', 'active');
    proxy.app.pool.setState('conn-b', 'active');

    const res = await fetch(`${proxy.adminUrl}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const m = parsePrometheusText(await res.text());
    const delta = (name: string, labels: Record<string, string>) => (m.value(name, labels) ?? NaN) - base(name, labels);
    const tcp = { listener: 'pcoipTcp', connector: 'conn-a' };
    const udp = { listener: 'pcoipUdp', connector: 'conn-a' };
    expect({
      tcpFlows: delta('pcoip_lb_flows_total', tcp),
      tcpActive: m.value('pcoip_lb_flows_active', tcp),
      tcpIn: delta('pcoip_lb_bytes_total', { ...tcp, direction: 'in' }),
      tcpOut: delta('pcoip_lb_bytes_total', { ...tcp, direction: 'out' }),
      udpFlows: delta('pcoip_lb_flows_total', udp),
      udpIn: delta('pcoip_lb_bytes_total', { ...udp, direction: 'in' }),
      udpOut: delta('pcoip_lb_bytes_total', { ...udp, direction: 'out' }),
      packetsIn: delta('pcoip_lb_udp_packets_total', { connector: 'conn-a', direction: 'in' }),
      packetsOut: delta('pcoip_lb_udp_packets_total', { connector: 'conn-a', direction: 'out' }),
      refusals: delta('pcoip_lb_refusals_total', { listener: 'broker', reason: 'no-eligible-connector' }),
      placed: delta('pcoip_lb_placements_total', { connector: 'conn-a', reason: 'placed' }),
      pinned: delta('pcoip_lb_placements_total', { connector: 'conn-a', reason: 'pinned' }),
    }).toEqual({
      tcpFlows: 1,
      tcpActive: 1,
      tcpIn: 11,
      tcpOut: 7 + 11,
      // Each udpRoundTrip uses a new source port: 3 flows.
      udpFlows: 3,
      udpIn: 300,
      udpOut: 3 * 107,
      packetsIn: 3,
      packetsOut: 3,
      refusals: 1,
      placed: 1,
      pinned: 3,
    });
    expect(m.value('pcoip_lb_connector_up', { connector: 'conn-a' })).toBe(1);
    expect(m.value('pcoip_lb_connector_state', { connector: 'conn-a', state: 'active' })).toBe(1);
    expect(m.value('pcoip_lb_connector_state', { connector: 'conn-a', state: 'drain' })).toBe(0);
    expect(m.value('pcoip_lb_affinity_entries')).toBe(proxy.app.affinity.size);
    expect(m.types.get('pcoip_lb_health_check_duration_seconds')).toBe('histogram');
    expect(m.types.get('process_cpu_seconds_total')).toBe('counter');
    session.socket.destroy();
  });

  it('GET /status reports per Connector health, state, clients, flows and bytes', async () => {
    const status = (await call(`${proxy.adminUrl}/status`)).json;
    expect(Object.keys(status.listeners).sort()).toEqual(['broker', 'pcoipTcp', 'pcoipUdp']);
    const a = status.connectors.find((c: { id: string }) => c.id === 'conn-a');
    expect(a).toMatchObject({ id: 'conn-a', address: '127.0.1.61', health: 'up', state: 'active', takesNewClients: true, drained: false });
    expect(a.flows.pcoipUdp.packetsIn).toBeGreaterThanOrEqual(3);
    expect(a.bytesIn).toBe(a.flows.broker.bytesIn + a.flows.pcoipTcp.bytesIn + a.flows.pcoipUdp.bytesIn);
  });
});

describe('admin token', () => {
  it('a non-loopback admin bind without a token refuses to start, before any listener binds', async () => {
    const fake = await startFakeConnector('conn-a', '127.0.1.63');
    // The config schema refuses this bind (test/unit/config-checks.test.ts); App checks again.
    const config = testConfig([fake.config()]);
    const app = new App({ ...config, admin: { ...config.admin, bind: { host: '0.0.0.0', port: 0 } } }, createLogger('silent'));
    try {
      const err = await app.start().then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(PlbError);
      expect((err as PlbError).code).toBe('PLB_E_ADMIN_TOKEN_REQUIRED');
      expect((err as PlbError).message).toContain('admin.bind is 0.0.0.0:0, which is not a loopback address: set admin.token.file or admin.token.env');
      expect(app.listenerAddresses).toEqual({});
      expect(app.adminAddress).toBeUndefined();
    } finally {
      await app.stop(0);
      await fake.close();
    }
  });

  it('with a token every endpoint but /healthz and the page needs it', async () => {
    const fake = await startFakeConnector('conn-a', '127.0.1.64');
    process.env.PLB_TEST_ADMIN_TOKEN = 'test-token-0123456789';
    const proxy = await startTestProxy(testConfig([fake.config()], { admin: { bind: '127.0.0.1:0', token: { env: 'PLB_TEST_ADMIN_TOKEN' } } }));
    try {
      const denied = await call(`${proxy.adminUrl}/status`);
      expect(denied).toMatchObject({ status: 401, json: { error: { code: 'PLB_E_ADMIN_UNAUTHORIZED' } } });
      expect(denied.headers.get('www-authenticate')).toBe('Bearer realm="pcoip-lb"');
      expect((await call(`${proxy.adminUrl}/connectors/conn-a/drain`, { method: 'POST', headers: { authorization: 'Bearer wrong-token-0123456789' } })).status).toBe(401);
      expect(proxy.app.pool.get('conn-a')!.state).toBe('active');
      expect((await call(`${proxy.adminUrl}/status`, { headers: { authorization: 'Bearer test-token-0123456789' } })).status).toBe(200);
      expect((await call(`${proxy.adminUrl}/healthz`)).status).toBe(200);
      expect((await fetch(`${proxy.adminUrl}/`)).status).toBe(200);
    } finally {
      delete process.env.PLB_TEST_ADMIN_TOKEN;
      await proxy.stop();
      await fake.close();
    }
  });
});
