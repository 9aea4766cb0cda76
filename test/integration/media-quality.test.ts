import { afterEach, describe, expect, it } from 'vitest';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { sendStream, startEspConnector, startLossyRelay, type EspConnector, type LossyRelay } from '../helpers/esp-peers.ts';
import type { SessionsPageJson } from '../../src/admin/sessions-api.ts';
import { parsePrometheusText } from '../helpers/prom-text.ts';

/**
 * Media quality measured on the datagrams the proxy forwards, through real sockets: a client and
 * a Connector that each speak from their own ESP SA (own SPI, own sequence numbers), and a relay
 * that drops every 10th datagram of one direction before it reaches the proxy. Addresses:
 * 127.15.0.x (Connectors, relays) and 127.15.1.x (clients).
 */
const CLIENT_SPI = 0xc11e0001;
const CONNECTOR_SPI = 0xc0de0001;
const N = 205; // drops at 10, 20 … 200 are all followed by later datagrams, so every one is seen as lost

let proxy: TestProxy | undefined;
const closers: Array<() => void> = [];

afterEach(async () => {
  await proxy?.stop();
  proxy = undefined;
  for (const c of closers.splice(0)) c();
});

async function proxyTo(target: { host: string; port: number }, extraUdp: Record<string, unknown> = {}): Promise<TestProxy> {
  proxy = await startTestProxy(
    testConfig([{ id: 'esp', address: target.host, ports: { broker: 443, pcoip: target.port } }] as never, {
      listeners: { pcoipUdp: { bind: '127.0.0.1:0', ...extraUdp } },
    }),
  );
  return proxy;
}

async function sessions(p: TestProxy): Promise<SessionsPageJson> {
  const res = await fetch(`${p.adminUrl}/sessions`);
  expect(res.status).toBe(200);
  return (await res.json()) as SessionsPageJson;
}

function numbered(count: number, spi = CLIENT_SPI, from = 1) {
  return Array.from({ length: count }, (_, i) => ({ spi, seq: from + i }));
}

async function connector(host: string): Promise<EspConnector> {
  const c = await startEspConnector(host, CONNECTOR_SPI);
  closers.push(c.close);
  return c;
}

async function relay(host: string, target: { host: string; port: number }, drop: 'forward' | 'back'): Promise<LossyRelay> {
  const r = await startLossyRelay(host, target, drop, 10);
  closers.push(r.close);
  return r;
}

describe('media quality per direction, from the forwarded datagrams', () => {
  it('loss between the client and the proxy shows as client → Connector loss only', async () => {
    const esp = await connector('127.15.0.1');
    const p = await proxyTo(esp);
    const lossy = await relay('127.15.0.2', { host: '127.0.0.1', port: p.addresses.pcoipUdp.port }, 'forward');
    const stream = await sendStream('127.15.1.1', lossy, numbered(N));
    closers.push(stream.close);
    expect(lossy.dropped()).toBe(20);
    const page = await sessions(p);
    expect(page.total).toBe(1);
    const [s] = page.sessions;
    expect(s!.state).toBe('streaming');
    const q = s!.udp[0]!.quality!;
    expect(q.fromClient).toMatchObject({ layout: 'transport-header', spi: CLIENT_SPI.toString(16), lost: 20, reordered: 0, duplicates: 0, rekeys: 0 });
    expect(q.fromClient.received).toBe(N - 20 - 3); // the first 3 datagrams decide the layout
    expect(q.fromConnector).toMatchObject({ layout: 'transport-header', spi: CONNECTOR_SPI.toString(16), lost: 0 });
    expect(s!.quality.lossPercent).toBeCloseTo((100 * 20) / (N - 3), 1);
  });

  it('loss between the Connector and the proxy shows as Connector → client loss only', async () => {
    const esp = await connector('127.15.0.3');
    const lossy = await relay('127.15.0.4', esp, 'back');
    const p = await proxyTo(lossy);
    const stream = await sendStream('127.15.1.2', { host: '127.0.0.1', port: p.addresses.pcoipUdp.port }, numbered(N));
    closers.push(stream.close);
    expect(esp.received()).toBe(N);
    expect(lossy.dropped()).toBe(20);
    const q = (await sessions(p)).sessions[0]!.udp[0]!.quality!;
    expect(q.fromConnector).toMatchObject({ spi: CONNECTOR_SPI.toString(16), lost: 20 });
    expect(q.fromClient).toMatchObject({ spi: CLIENT_SPI.toString(16), lost: 0, received: N - 3 });
  });

  it('parses a flow without the transport header (SPI at bytes 0-3)', async () => {
    const esp = await connector('127.15.0.5');
    const p = await proxyTo(esp);
    const stream = await sendStream('127.15.1.3', { host: '127.0.0.1', port: p.addresses.pcoipUdp.port }, numbered(100), { header: false });
    closers.push(stream.close);
    const q = (await sessions(p)).sessions[0]!.udp[0]!.quality!;
    expect(q.fromClient).toMatchObject({ layout: 'no-transport-header', spi: CLIENT_SPI.toString(16), received: 97, lost: 0 });
    expect(q.fromConnector).toMatchObject({ layout: 'no-transport-header', spi: CONNECTOR_SPI.toString(16), lost: 0 });
  });

  it('sees a rekey (new SPI) mid-flow, without counting loss for the restarted sequence', async () => {
    const esp = await connector('127.15.0.6');
    const p = await proxyTo(esp);
    const NEW_SPI = 0xc11e0002;
    const stream = await sendStream('127.15.1.4', { host: '127.0.0.1', port: p.addresses.pcoipUdp.port }, [...numbered(60), ...numbered(60, NEW_SPI)]);
    closers.push(stream.close);
    const q = (await sessions(p)).sessions[0]!.udp[0]!.quality!;
    expect(q.fromClient).toMatchObject({ spi: NEW_SPI.toString(16), rekeys: 1, lost: 0 });
    expect(q.fromConnector).toMatchObject({ rekeys: 0, lost: 0 });
  });

  it('with mediaQuality off the flow is listed without quality figures', async () => {
    const esp = await connector('127.15.0.7');
    const p = await proxyTo(esp, { mediaQuality: false });
    const stream = await sendStream('127.15.1.5', { host: '127.0.0.1', port: p.addresses.pcoipUdp.port }, numbered(20));
    closers.push(stream.close);
    const [s] = (await sessions(p)).sessions;
    expect(s!.udp[0]).toMatchObject({ packetsIn: 20, packetsOut: 20, quality: null });
  });

  it('the closed flows feed per-direction counters and histograms in /metrics', async () => {
    const esp = await connector('127.15.0.8');
    const lossy = await relay('127.15.0.9', esp, 'back');
    const p = await proxyTo(lossy, { idleTimeout: '300ms' });
    const stream = await sendStream('127.15.1.6', { host: '127.0.0.1', port: p.addresses.pcoipUdp.port }, numbered(N));
    closers.push(stream.close);
    // Wait for the idle sweep to close the flow (its pending losses become final).
    const deadline = Date.now() + 5000;
    while (p.app.activeFlows().pcoipUdp > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(p.app.activeFlows().pcoipUdp).toBe(0);
    const text = await (await fetch(`${p.adminUrl}/metrics`)).text();
    const m = parsePrometheusText(text);
    expect(m.value('pcoip_lb_udp_media_lost_total', { direction: 'out' })).toBe(20);
    expect(m.value('pcoip_lb_udp_media_lost_total', { direction: 'in' })).toBe(0);
    expect(m.value('pcoip_lb_udp_flow_loss_ratio_count', { direction: 'out' })).toBe(1);
    expect(m.value('pcoip_lb_udp_flow_loss_ratio_bucket', { direction: 'out', le: '0.05' })).toBe(0);
    expect(m.value('pcoip_lb_udp_flow_loss_ratio_bucket', { direction: 'out', le: '0.1' })).toBe(1);
    expect(m.value('pcoip_lb_udp_flows_closed_by_layout_total', { layout: 'transport-header' })).toBe(1);
    // No per-session or per-client label anywhere in these families.
    for (const s of m.samples.filter((x) => x.name.startsWith('pcoip_lb_udp_media') || x.name.startsWith('pcoip_lb_udp_flow_'))) {
      expect(Object.keys(s.labels).filter((k) => k !== 'direction' && k !== 'le')).toEqual([]);
    }
    expect(text).toContain('pcoip_lb_sessions{state="ended"} 1');
  });
});
