import { afterEach, describe, expect, it } from 'vitest';
import { Held, Media, login, startSharedLab, type SharedLab, type UserSession } from '../helpers/shared-address-lab.ts';
import { parsePrometheusText } from '../helpers/prom-text.ts';

/**
 * Users behind one shared address (affinity.perSession), through real sockets, in front of
 * simulated Connectors that admit on 4172/TCP only the tags they issued and answer on UDP only the
 * SPIs they issued: with the option off every user of the address lands on one Connector; with it
 * on the logins spread by their session and every user's three flows (443, 4172/TCP, 4172/UDP)
 * reach that user's Connector. Addresses 127.15.7–8.x.
 */
const NAT = '127.15.7.9';
const USERS = 6;
const IDS = ['conn-a', 'conn-b', 'conn-c'];

const held = new Held();
afterEach(() => held.release());

const perSession = { affinity: { perSession: true } };
const probe = { probe: { enabled: true, candidates: 3, datagrams: 2, deadline: '1s' } };

async function users(l: SharedLab, count: number): Promise<UserSession[]> {
  const out: UserSession[] = [];
  for (let i = 1; i <= count; i++) {
    const u = await login(l, `user${i}`, NAT);
    held.keep(u.control);
    out.push(u);
  }
  return out;
}

async function media(l: SharedLab, u: UserSession): Promise<number> {
  const m = await Media.open(NAT);
  held.keep(m);
  return m.send(l.proxy.addresses.pcoipUdp.port, u.spi, 5);
}

async function metric(l: SharedLab, name: string, labels: Record<string, string> = {}): Promise<number> {
  return parsePrometheusText(await (await fetch(`${l.proxy.adminUrl}/metrics`)).text()).sum(name, labels);
}

describe('users behind one shared address', () => {
  it('option off: every user of the address lands on the one Connector it is pinned to', async () => {
    const lab = held.lab = await startSharedLab({ hostBase: '127.15.8.', ids: IDS, udp: probe });
    const all = await users(lab, USERS);
    expect(new Set(all.map((u) => u.home)).size).toBe(1);
    for (const u of all) {
      expect(u.tcpConnector).toBe(u.home);
      expect(await media(lab, u), `${u.name}'s media`).toBe(5);
    }
  });

  it('option on: the logins spread by their session and each user\'s 443, 4172/TCP and UDP reach that user\'s Connector', async () => {
    const lab = held.lab = await startSharedLab({ hostBase: '127.15.8.', ids: IDS, udp: probe, extra: perSession });
    const l = lab;
    // Each user starts its media right after its login, while the next users log in (each login
    // re-pins the address to its session's Connector).
    const all: Array<UserSession & { media: Media }> = [];
    for (let i = 1; i <= USERS; i++) {
      const u = await login(l, `user${i}`, NAT);
      const m = await Media.open(NAT);
      held.keep(u.control);
      held.keep(m);
      expect(await m.send(l.proxy.addresses.pcoipUdp.port, u.spi, 5), `user${i}'s first media (session on ${u.home})`).toBe(5);
      all.push({ ...u, media: m });
    }
    const homes = new Set(all.map((u) => u.home));
    expect(homes.size, `homes: ${all.map((u) => u.home).join(', ')}`).toBeGreaterThan(1);
    // login() checks every broker request reached the Connector that answered hello.
    for (const u of all) expect(u.tcpConnector, `${u.name}'s 4172/TCP`).toBe(u.home);
    // The later logins' re-pins did not cut anybody's media: same flows, still answered.
    for (const u of all) expect(await u.media.send(l.proxy.addresses.pcoipUdp.port, u.spi, 5), `${u.name}'s media after the others logged in`).toBe(5);
    expect(await metric(l, 'pcoip_lb_flows_repinned_total')).toBe(0);
    expect(l.proxy.app.activeFlows().pcoipUdp).toBe(USERS);
    for (const sim of lab.sims) expect(sim.counters.tagsAdmitted).toBe(all.filter((u) => u.home === sim.id).length);
    // Logins placed by their session, not by the address.
    expect(await metric(lab, 'pcoip_lb_placements_total', { reason: 'session' })).toBeGreaterThanOrEqual(USERS);
    expect(await metric(lab, 'pcoip_lb_udp_probes_total', { outcome: 'answered' })).toBeGreaterThan(0);
    expect(await metric(lab, 'pcoip_lb_sni_ambiguous_total')).toBe(0);
    // With the default health checks running against every Connector (the first round of each
    // starts within one interval, 5 s, jittered), passing, none failing.
    const checked = async () => Promise.all(lab.sims.map((sim) => metric(lab, 'pcoip_lb_health_checks_total', { connector: sim.id, result: 'pass' })));
    const until = Date.now() + 8000;
    while ((await checked()).some((n) => n === 0) && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
    expect(await checked(), lab.sims.map((s) => s.id).join(', ')).not.toContain(0);
    expect(await metric(lab, 'pcoip_lb_health_checks_total', { result: 'fail' })).toBe(0);
  });

  it('an SNI seen in more than one live session is ambiguous: 4172/TCP falls back to address affinity, logged and counted', async () => {
    const lab = held.lab = await startSharedLab({ hostBase: '127.15.8.', ids: IDS, udp: probe, extra: perSession, sim: { constantSni: 'desktop.sim.invalid' } });
    const l = lab;
    const first = await login(l, 'user1', NAT);
    held.keep(first.control);
    // The first allocation of that SNI still names one session: routed by it.
    expect(first.tcpConnector).toBe(first.home);
    const second = await login(l, 'user2', NAT);
    held.keep(second.control);
    await l.proxy.logs.waitFor((x) => x.msg === 'SNI was seen in more than one live session (a constant default?): it names no one session; routing by address affinity');
    expect(await metric(l, 'pcoip_lb_sni_ambiguous_total')).toBe(1);
    // By address affinity: the Connector the address is pinned to (the allocation learned last, the second user's).
    const pinned = l.proxy.app.affinity.get(l.proxy.app.placer.keyFor(NAT), Date.now())?.connectorId;
    expect(second.tcpConnector).toBe(pinned);
    expect(pinned).toBe(second.home);
  });
});
