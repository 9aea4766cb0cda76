import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimConnector } from '../../src/sim/connector.ts';
import { simSpecs, spiLocator, startSimPool } from '../../src/sim/pool.ts';
import { runLoad, type LoadOptions } from '../../src/sim/load.ts';
import { endpointOf } from '../../src/sim/client.ts';
import { REALISTIC_MIX } from '../../src/sim/mix.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { alternate, startTestRouter, type RouteRule, type TestRouter } from '../helpers/test-router.ts';
import { certDir, makeCert } from '../helpers/tls-fixtures.ts';
import { terminateConfig } from '../helpers/terminate-lab.ts';

const USERS = 20;

describe('simulated PCoIP users: through pcoip-lb they all succeed; through a router without affinity they fail as "misrouted"', () => {
  let sims: SimConnector[];
  let proxy: TestProxy;
  const routers: TestRouter[] = [];

  const load = (target: LoadOptions['target'], extra: Partial<LoadOptions> = {}) =>
    runLoad({ users: USERS, target, bitrateBps: 200_000, durationMs: 400, concurrency: 10, locateSpi: spiLocator(sims), ...extra });
  const viaRouter = async (rule: RouteRule) => {
    const router = await startTestRouter(rule);
    routers.push(router);
    return { broker: endpointOf(router.broker), pcoipTcp: endpointOf(router.pcoipTcp), pcoipUdp: endpointOf(router.pcoipUdp) };
  };

  beforeAll(async () => {
    sims = await startSimPool(simSpecs(3));
    proxy = await startTestProxy(testConfig(sims.map((s) => ({ ...s.connectorConfig(), weight: 1, state: 'active' as const }))));
  });

  afterAll(async () => {
    await Promise.all(routers.map((r) => r.close()));
    await proxy.stop();
    await Promise.all(sims.map((s) => s.stop()));
  });

  it(`${USERS} users through pcoip-lb: all ok, spread over the pool, each user's broker, 4172/TCP and UDP flows on one Connector`, async () => {
    const admittedBefore = sims.map((s) => s.counters.tagsAdmitted);
    const { broker, pcoipTcp, pcoipUdp } = proxy.addresses;
    const report = await load({ broker: endpointOf(broker), pcoipTcp: endpointOf(pcoipTcp), pcoipUdp: endpointOf(pcoipUdp) });

    expect(report.failures).toEqual([]);
    expect(report.ok).toBe(USERS);
    expect(report.perConnector.length).toBeGreaterThanOrEqual(2);
    // What the users report matches what each Connector admitted: nobody was admitted twice or elsewhere.
    for (const [i, sim] of sims.entries()) {
      const users = report.perConnector.find((c) => c.id === sim.id)?.users ?? 0;
      expect({ id: sim.id, admitted: sim.counters.tagsAdmitted - admittedBefore[i]! }).toEqual({ id: sim.id, admitted: users });
    }
    expect(sims.reduce((n, s) => n + s.counters.udpUnknownSpi + s.counters.notAuthenticated, 0)).toBe(0);
    expect(report.udp.sent).toBeGreaterThan(USERS * 5);
    expect(report.udp.received).toBe(report.udp.sent);
    expect(report.setupMs.count).toBe(USERS);
  });

  it(`${USERS} users of the realistic client mix through pcoip-lb (passthrough): all ok, every profile`, async () => {
    const { broker, pcoipTcp, pcoipUdp } = proxy.addresses;
    const report = await load({ broker: endpointOf(broker), pcoipTcp: endpointOf(pcoipTcp), pcoipUdp: endpointOf(pcoipUdp) }, { mix: REALISTIC_MIX });
    expect(report.failures).toEqual([]);
    expect(report.settings.mix).toBe('realistic');
    expect(report.perProfile.map((p) => p.profile).sort()).toEqual(REALISTIC_MIX.profiles.map((p) => p.name).sort());
  });

  it.each([
    ['', {}],
    [' with lbCookie', { lbCookie: { enabled: true, keyEnv: 'PLB_I14_SIM_LB_KEYS' } }],
  ])(`${USERS} users of the realistic client mix through pcoip-lb terminating TLS on 443%s (SNI routing on for 4172/TCP): all ok, broker bytes intact`, async (_name, broker) => {
    // The simulated client is as strict as a PCoIP client (chunked XML, "Set-Cookie" spelled so),
    // so this also checks that terminating TLS leaves the broker's bytes as they were.
    process.env.PLB_I14_SIM_LB_KEYS = 'sim-lb-cookie-key-0123456789-0123456789';
    const { dir, cleanup } = await certDir();
    const cert = await makeCert(dir, 'proxy', ['pcoip-lb.test'], ['127.0.0.1']);
    const config = terminateConfig(
      sims.map((s) => s.connectorConfig()),
      { certificates: [{ cert: cert.certPath, key: cert.keyPath }], upstream: { insecure: true } },
      { sniRouting: true, broker },
    );
    const terminating = await startTestProxy(config);
    const counters = () => sims.reduce((n, s) => ({ probes: n.probes + s.counters.probeHellos, byLogId: n.byLogId + s.counters.logIdSessionHits, notAuth: n.notAuth + s.counters.notAuthenticated }), { probes: 0, byLogId: 0, notAuth: 0 });
    const before = counters();
    try {
      const { broker: b, pcoipTcp, pcoipUdp } = terminating.addresses;
      const report = await load({ broker: endpointOf(b), pcoipTcp: endpointOf(pcoipTcp), pcoipUdp: endpointOf(pcoipUdp) }, { mix: REALISTIC_MIX });
      expect(report.failures).toEqual([]);
      expect(report.ok).toBe(USERS);
      expect(report.perConnector.length).toBeGreaterThanOrEqual(2);
      const after = counters();
      expect(after.probes - before.probes).toBeGreaterThan(0);
      // The cookie-less users were followed by their CLIENT-LOG-ID; nobody was refused.
      expect(after.byLogId - before.byLogId).toBeGreaterThan(0);
      expect(after.notAuth - before.notAuth).toBe(0);
      const keepAlive = report.perProfile.find((p) => p.profile === 'keep-alive, probe')!;
      expect(keepAlive).toMatchObject({ requestsPerUser: 6, connectionsPerUser: 1 });
      if ('lbCookie' in broker) expect(terminating.app.stats.brokerEvents.get('lb-cookie-issued') ?? 0).toBeGreaterThan(0);
    } finally {
      await terminating.stop();
      await cleanup();
      delete process.env.PLB_I14_SIM_LB_KEYS;
    }
  });

  it('a router alternating every flow between two Connectors: every user fails as misrouted at authenticate', async () => {
    const target = await viaRouter(alternate([sims[0]!, sims[1]!]));
    // One user at a time, so the alternation is deterministic: hello → conn-a, authenticate → conn-b.
    const report = await load(target, { concurrency: 1 });

    expect(report.ok).toBe(0);
    expect(report.failures).toHaveLength(USERS);
    for (const f of report.failures) {
      expect({ kind: f.kind, stage: f.stage }).toEqual({ kind: 'misrouted', stage: 'authenticate' });
      expect(f.message).toMatch(/^authenticate reached conn-b, but hello was answered by conn-a \(conn-b said NOT_AUTHENTICATED: not authenticated: JSESSIONID unknown to this Connector\)$/);
    }
  });

  it('a router keeping 443 together but sending 4172/TCP to another Connector: misrouted at pcoip-tcp, naming both', async () => {
    const home = (client: string) => Number(client.split('.')[3]) % 2;
    const target = await viaRouter((listener, client) => sims[listener === 'broker' ? home(client) : 1 - home(client)]!);
    const report = await load(target);

    expect(report.failures).toHaveLength(USERS);
    for (const f of report.failures) {
      expect({ kind: f.kind, stage: f.stage }).toEqual({ kind: 'misrouted', stage: 'pcoip-tcp' });
      const [, reached, owner] = /^pcoip-tcp reached (conn-[ab]), but the session was allocated by (conn-[ab]) \(\1: unknown-tag: /.exec(f.message ?? '') ?? [];
      expect(reached).toBeDefined();
      expect(reached).not.toBe(owner);
      expect(owner).toBe(f.connectorId);
    }
  });

  it('a router keeping 443 and 4172/TCP together but sending UDP elsewhere: misrouted at pcoip-udp, naming both', async () => {
    const home = (client: string) => Number(client.split('.')[3]) % 2;
    const target = await viaRouter((listener, client) => sims[listener === 'pcoipUdp' ? 1 - home(client) : home(client)]!);
    const report = await load(target, { concurrency: USERS, durationMs: 200 });

    expect(report.failures).toHaveLength(USERS);
    for (const f of report.failures) {
      expect({ kind: f.kind, stage: f.stage }).toEqual({ kind: 'misrouted', stage: 'pcoip-udp' });
      const [, reached, owner] = /^pcoip-udp \(SPI [0-9a-f]{8}\) reached (conn-[ab]), but the session is on (conn-[ab]); \1 dropped it$/.exec(f.message ?? '') ?? [];
      expect(reached).toBeDefined();
      expect(reached).not.toBe(owner);
      expect(f.udp?.received).toBe(0);
    }
  });
});
