import { afterEach, describe, expect, it } from 'vitest';
import { Held, Media, login, startSharedLab, type SharedLab, type UserSession } from '../helpers/shared-address-lab.ts';
import { parsePrometheusText } from '../helpers/prom-text.ts';
import type { SessionsPageJson } from '../../src/admin/sessions-api.ts';

/**
 * The UDP probe fan-out (listeners.pcoipUdp.probe) through real sockets, in front of simulated
 * Connectors that answer only the SPIs they issued. Two users behind one NAT address N: each
 * login starts from another address of the NAT pool (so consistent hashing puts one on conn-a and
 * the other on conn-b), finishes from N and opens 4172/TCP from N. N then has live sessions on both
 * Connectors and is pinned to the one learned last; each user's UDP flow from N must still reach
 * its own Connector. Addresses 127.15.4–6.x.
 */
const NAT = '127.15.4.9';

const held = new Held();
afterEach(() => held.release());

async function twoUsersBehindNat(probe: Record<string, unknown>): Promise<{ lab: SharedLab; u1: UserSession; u2: UserSession }> {
  const lab = held.lab = await startSharedLab({ hostBase: '127.15.6.', ids: ['conn-a', 'conn-b'], udp: { probe, idleTimeout: '2s' } });
  const u1 = await login(lab, 'u1', NAT, lab.addressPlacedOn('conn-a', 5));
  const u2 = await login(lab, 'u2', NAT, lab.addressPlacedOn('conn-b', 5));
  held.keep(u1.control, u2.control);
  expect([u1.home, u1.tcpConnector, u2.home, u2.tcpConnector]).toEqual(['conn-a', 'conn-a', 'conn-b', 'conn-b']);
  // The address is pinned to the session learned last.
  expect(lab.proxy.app.affinity.get(lab.proxy.app.placer.keyFor(NAT), Date.now())?.connectorId).toBe('conn-b');
  return { lab, u1, u2 };
}

async function media(): Promise<Media> {
  const m = await Media.open(NAT);
  held.keep(m);
  return m;
}

async function metricValue(l: SharedLab, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  return parsePrometheusText(await (await fetch(`${l.proxy.adminUrl}/metrics`)).text()).value(name, labels);
}

describe('UDP probe fan-out for a shared address', () => {
  it('without the probe, the older session\'s media follows the address pin to the other Connector, which drops it', async () => {
    const { lab: l, u1, u2 } = await twoUsersBehindNat({ enabled: false });
    const m1 = await media();
    expect(await m1.send(l.proxy.addresses.pcoipUdp.port, u1.spi, 5, 500)).toBe(0);
    expect(l.sims[1]!.sawUnknownSpi(u1.spi)).toBe(true);
    const m2 = await media();
    expect(await m2.send(l.proxy.addresses.pcoipUdp.port, u2.spi, 5)).toBe(5);
  });

  it('sends a new flow\'s first datagrams to each Connector holding a live session of the address and pins it to the one that answers', async () => {
    const { lab: l, u1, u2 } = await twoUsersBehindNat({ enabled: true, candidates: 3, datagrams: 2, deadline: '1s' });
    const port = l.proxy.addresses.pcoipUdp.port;
    const m1 = await media();
    const m2 = await media();
    expect(await m1.send(port, u1.spi, 5)).toBe(5);
    expect(await m2.send(port, u2.spi, 5)).toBe(5);
    // Later datagrams stay on the winner; the loser saw at most the probe's datagrams.
    expect(await m1.send(port, u1.spi, 20)).toBe(20);
    expect(l.sims[0]!.counters.udpIn).toBeGreaterThanOrEqual(25);
    expect(l.sims[1]!.counters.udpUnknownSpi).toBeLessThanOrEqual(2); // u1's two probe datagrams at conn-b
    const line = await l.proxy.logs.waitFor((x) => x.msg === 'UDP probe: conn-a answered of conn-b, conn-a; flow pinned to it');
    // The log shape of every flow line: the address in `client`, the port in its own field.
    expect(line).toMatchObject({ client: NAT, clientPort: expect.any(Number), connector: 'conn-a' });
    expect(await metricValue(l, 'pcoip_lb_udp_probes_total', { outcome: 'answered' })).toBe(2);
    // Each loser got 1 or 2 datagrams (the race may be decided before the second one is sent).
    const losing = (await metricValue(l, 'pcoip_lb_udp_probe_datagrams_total'))!;
    expect(losing).toBeGreaterThanOrEqual(2);
    expect(losing).toBeLessThanOrEqual(4);
    // Placed by their own session on conn-a: u1's 4172/TCP connection (its SNI) and its UDP flow (the probe).
    expect(await metricValue(l, 'pcoip_lb_placements_total', { reason: 'session', connector: 'conn-a' })).toBe(2);
    // The session view says how each flow was placed.
    const page = (await (await fetch(`${l.proxy.adminUrl}/sessions?client=${NAT}`)).json()) as SessionsPageJson;
    const byConnector = Object.fromEntries(page.sessions.map((s) => [s.connector, s]));
    expect(byConnector['conn-a']!.udp[0]!.probe).toEqual({ candidates: ['conn-b', 'conn-a'], outcome: 'answered', winner: 'conn-a' });
    expect(byConnector['conn-a']!.udp[0]!.packetsOut).toBe(25);
    expect(byConnector['conn-b']!.udp[0]!.probe).toMatchObject({ winner: 'conn-b' });
    // A re-pin of the address does not cut a flow the probe placed while its session lives.
    l.proxy.app.placer.learn(NAT, 'conn-a', Date.now());
    expect(await m2.send(port, u2.spi, 5)).toBe(5);
  });

  it('gives up cleanly when no candidate answers: the flow is placed by address affinity, counted and logged', async () => {
    const { lab: l } = await twoUsersBehindNat({ enabled: true, candidates: 3, datagrams: 3, deadline: '300ms' });
    const stray = await media();
    const FOREIGN_SPI = 0x0f0f0f0f;
    expect(await stray.send(l.proxy.addresses.pcoipUdp.port, FOREIGN_SPI, 6, 800)).toBe(0);
    await l.proxy.logs.waitFor((x) => typeof x.msg === 'string' && x.msg.startsWith('UDP probe: none of conn-b, conn-a answered within 300 ms'));
    expect(await metricValue(l, 'pcoip_lb_udp_probes_total', { outcome: 'none-answered' })).toBe(1);
    // Both Connectors saw the probe; the flow then went where the address is pinned (conn-b), with every datagram.
    expect(l.sims[0]!.sawUnknownSpi(FOREIGN_SPI)).toBe(true);
    expect(l.sims[1]!.sawUnknownSpi(FOREIGN_SPI)).toBe(true);
    expect(l.proxy.app.stats.counters('conn-b').pcoipUdp.active).toBe(1);
    expect(l.proxy.app.stats.counters('conn-a').pcoipUdp.total).toBe(0);
    // Nothing is left behind once the flow idles out (probe sockets closed, leases released).
    const deadline = Date.now() + 6000;
    while (l.proxy.app.activeFlows().pcoipUdp > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(l.proxy.app.activeFlows().pcoipUdp).toBe(0);
    expect(l.proxy.app.trackedClients().pcoipUdp).toBe(0);
  });

  it('with one candidate nothing changes: no probe, address affinity as before', async () => {
    const lab = held.lab = await startSharedLab({ hostBase: '127.15.6.', ids: ['conn-a', 'conn-b'], udp: { probe: { enabled: true } } });
    const u1 = await login(lab, 'solo', NAT, lab.addressPlacedOn('conn-a', 5));
    held.keep(u1.control);
    const m = await media();
    expect(await m.send(lab.proxy.addresses.pcoipUdp.port, u1.spi, 5)).toBe(5);
    expect(await metricValue(lab, 'pcoip_lb_udp_probes_total', { outcome: 'single-candidate' })).toBe(1);
    expect(await metricValue(lab, 'pcoip_lb_udp_probes_total', { outcome: 'answered' })).toBe(0);
    expect(lab.sims[1]!.counters.udpUnknownSpi).toBe(0);
  });
});
