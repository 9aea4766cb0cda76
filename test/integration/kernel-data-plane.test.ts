import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeConfig, hasMsg, type CliProcess } from '../helpers/cli-process.ts';
import { createKernelLab, elementsOf, nftCounters, stopLb, sumPackets, waitFor, type KernelLab } from '../helpers/kernel-lab.ts';
import { labUnavailable, conntrackOf, rulesetOf } from '../helpers/netns.ts';
import { parsePrometheusText } from '../helpers/prom-text.ts';

/**
 * The kernel data plane in a real network: three namespaces (clients, pcoip-lb, Connectors)
 * joined by veth pairs, real nftables and conntrack in the pcoip-lb namespace, the real CLI for
 * pcoip-lb and for the simulated Connectors (which reject any flow they did not broker, so a
 * misrouted flow fails the user). Needs root; skipped with the reason otherwise.
 */

const unavailable = labUnavailable();
if (unavailable) process.stdout.write(`kernel-data-plane.test.ts skipped: ${unavailable}\n`);
const USERS = 24;

const metricsOf = (k: KernelLab, lb: CliProcess) => parsePrometheusText(k.admin(lb.adminUrl!, '/metrics').body);

describe.skipIf(unavailable !== undefined)('kernel data plane (nftables + conntrack in network namespaces)', () => {
  let k: KernelLab;
  beforeAll(async () => {
    k = await createKernelLab({ connectors: 3, users: USERS * 2 });
  }, 60_000);
  afterAll(async () => {
    await k?.close();
  }, 30_000);

  it('creates its table at start, forwards pinned clients in the kernel with 0 misrouted, and leaves nothing at stop', async () => {
    const lb = await k.startLb(k.config());
    const ruleset = rulesetOf(k.lab);
    expect(ruleset).toContain('table inet i11_lab');
    expect(ruleset).toMatch(/comment "pcoip-lb pid \d+ start \d+"/);
    expect(ruleset).toContain('dnat ip to ip saddr map @client4');

    // First sessions: placed in user space (broker on 443, then 4172), which pins each user.
    const first = await k.runUsers({ users: USERS });
    expect(first.failures).toEqual([]);
    await waitFor('an element per user', () => elementsOf(k).size === USERS);
    const pinned = elementsOf(k);

    // Second sessions of the same users: their 4172 TCP and UDP go through the kernel now.
    const before = nftCounters(k.lab);
    const udpFlows = () => {
      const m = metricsOf(k, lb);
      return k.connectorIds.reduce((a, id) => a + (m.value('pcoip_lb_flows_total', { listener: 'pcoipUdp', connector: id }) ?? 0), 0);
    };
    const udpFlowsBefore = udpFlows();
    const second = await k.runUsers({ users: USERS });
    expect(second.failures).toEqual([]);
    expect(second.ok).toBe(USERS);
    const after = nftCounters(k.lab);
    const forwarded = sumPackets(after, /_udp_in$/) - sumPackets(before, /_udp_in$/);
    expect(forwarded).toBe(second.udp.sent); // every datagram of the second round took the kernel path
    expect(sumPackets(after, /_udp_out$/) - sumPackets(before, /_udp_out$/)).toBe(second.udp.received);
    expect(sumPackets(after, /_tcp_in$/) - sumPackets(before, /_tcp_in$/)).toBeGreaterThan(0);
    // Same Connector as pinned: the users' sessions only succeed on the Connector that brokered them.
    expect(second.perConnector.map((c) => c.id).sort()).toEqual(first.perConnector.map((c) => c.id).sort());
    expect(elementsOf(k)).toEqual(pinned);

    // The kernel's packets reach /metrics through the listener counters (polled every 2 s).
    await waitFor('kernel packets in /metrics', () => {
      const m = metricsOf(k, lb);
      const udpIn = ['conn-a', 'conn-b', 'conn-c'].reduce((a, id) => a + (m.value('pcoip_lb_udp_packets_total', { connector: id, direction: 'in' }) ?? 0), 0);
      return udpIn >= first.udp.sent + second.udp.sent;
    });
    // One flow per user, each followed through conntrack (no user-space flow was opened for them).
    expect(udpFlows() - udpFlowsBefore).toBe(USERS);
    // /status: the table, its elements and the live forwarded flows; per-Connector packets include the kernel's.
    const status = JSON.parse(k.admin(lb.adminUrl!, '/status').body) as {
      kernel: { table: string; elements: number; flows: { udp: number; tcp: number } };
      connectors: Array<{ id: string; flows: { pcoipUdp: { packetsIn: number; active: number } } }>;
    };
    expect(status.kernel.table).toBe('i11_lab');
    expect(status.kernel.elements).toBe(USERS);
    expect(status.kernel.flows.udp).toBeGreaterThanOrEqual(USERS);
    expect(status.connectors.reduce((a, c) => a + c.flows.pcoipUdp.packetsIn, 0)).toBeGreaterThanOrEqual(first.udp.sent + second.udp.sent);

    // Forwarded flows (client → VIP, DNATed to a Connector) are in conntrack now; none outlives the table.
    const forwardedFlows = () => conntrackOf(k.lab).filter((l) => /src=198\.18\.\d+\.\d+ dst=198\.18\.0\.1 .* src=198\.19\.0\.1\d /.test(l));
    expect(forwardedFlows().length).toBeGreaterThan(0);
    expect(await stopLb(lb)).toBe(0);
    expect(rulesetOf(k.lab)).toBe('');
    expect(forwardedFlows()).toEqual([]);
  }, 90_000);

  it('replaces the table a SIGKILLed run left at the next start, and refuses to take one whose owner runs', async () => {
    const killed = await k.startLb(k.config());
    killed.child.kill('SIGKILL');
    await killed.exited;
    expect(rulesetOf(k.lab)).toContain(`pid ${killed.child.pid} `);

    const next = await k.startLb(k.config());
    const line = await next.waitForLine(hasMsg('kernel data plane: replaced the table'));
    expect(line.stalePid).toBe(killed.child.pid);
    expect(rulesetOf(k.lab).match(/table inet i11_lab/g)).toHaveLength(1);
    expect(rulesetOf(k.lab)).toContain(`pid ${next.child.pid} `);

    // A second instance (other listener ports, same table name) must not take the running one's table.
    const raw = k.config({ admin: { enabled: false } });
    const listeners = raw.listeners as Record<string, { bind: string }>;
    listeners.broker!.bind = '198.18.0.1:9443';
    listeners.pcoipTcp!.bind = listeners.pcoipUdp!.bind = '198.18.0.1:5172';
    const refused = await k.failingStart(raw);
    expect(refused.code).not.toBe(0);
    expect(refused.fatal).toMatchObject({ code: 'PLB_E_KERNEL_NFT', msg: expect.stringContaining(`belongs to pcoip-lb pid ${next.child.pid}, which is running`) });
    expect(rulesetOf(k.lab)).toContain(`pid ${next.child.pid} `);

    expect(await stopLb(next)).toBe(0);
    expect(rulesetOf(k.lab)).toBe('');
  }, 60_000);

  it('checks its preconditions: kernel refuses to start naming the key, auto falls back to user space with one warning', async () => {
    k.lab.run(k.lab.lb, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=0']);
    try {
      const refused = await k.failingStart(k.config());
      expect(refused.code).not.toBe(0);
      expect(refused.fatal).toMatchObject({ code: 'PLB_E_KERNEL_SYSCTL', msg: expect.stringContaining('net.ipv4.ip_forward: must be 1') });
      expect(rulesetOf(k.lab)).toBe('');

      const raw = k.config();
      const listeners = raw.listeners as Record<string, Record<string, unknown>>;
      listeners.pcoipTcp!.dataPlane = listeners.pcoipUdp!.dataPlane = 'auto';
      const lb = await k.startLb(raw);
      const warnings = lb.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('dataPlane: auto'));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]!.code).toBe('PLB_E_KERNEL_SYSCTL');
      expect(String(warnings[0]!.msg)).toContain('net.ipv4.ip_forward');
      expect(rulesetOf(k.lab)).toBe('');
      const users = await k.runUsers({ users: 4, firstUser: USERS });
      expect(users.failures).toEqual([]);
      expect(await stopLb(lb)).toBe(0);
    } finally {
      k.lab.run(k.lab.lb, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
    }

    const raw = k.config({ kernel: { table: 'i11_lab', snat: { ipv4: '198.19.0.99' } } });
    expect((await k.failingStart(raw)).fatal).toMatchObject({ code: 'PLB_E_KERNEL_SNAT', msg: expect.stringContaining('kernel.snat.ipv4: 198.19.0.99 is not an address of this host') });

    const big = k.config();
    const conntrackMax = Number(k.lab.run(k.lab.lb, 'cat', ['/proc/sys/net/netfilter/nf_conntrack_max']).trim());
    expect(conntrackMax).toBeLessThan(10_000_000); // the most maxFlows may be (262144 by default here)
    (big.listeners as Record<string, Record<string, unknown>>).pcoipUdp!.maxFlows = conntrackMax + 1;
    expect((await k.failingStart(big)).fatal).toMatchObject({ code: 'PLB_E_KERNEL_SYSCTL', msg: expect.stringContaining('net.netfilter.nf_conntrack_max: is ') });
    expect(rulesetOf(k.lab)).toBe('');
  }, 60_000);

  it('drain keeps pinned clients on the kernel path; a Connector going down loses its elements and its users are re-placed', async () => {
    const lb = await k.startLb(k.config());
    const first = await k.runUsers({ users: USERS });
    expect(first.failures).toEqual([]);
    await waitFor('elements', () => elementsOf(k).size === USERS);
    const onA = [...elementsOf(k)].filter(([, to]) => to === '198.19.0.11').map(([from]) => from);
    expect(onA.length).toBeGreaterThan(0);

    expect(k.admin(lb.adminUrl!, '/connectors/conn-a/drain', 'POST').status).toBe(200);
    // Pinned clients keep their element (and their Connector) while it drains; new users avoid it.
    expect([...elementsOf(k)].filter(([, to]) => to === '198.19.0.11').map(([from]) => from)).toEqual(onA);
    const again = await k.runUsers({ users: USERS });
    expect(again.failures).toEqual([]);
    expect(again.perConnector.find((c) => c.id === 'conn-a')?.users).toBe(onA.length);
    const fresh = await k.runUsers({ users: 8, firstUser: USERS });
    expect(fresh.failures).toEqual([]);
    expect(fresh.perConnector.find((c) => c.id === 'conn-a')).toBeUndefined();

    // conn-b fails its health checks: its clients' elements go at once, so their next flows reach
    // pcoip-lb and are placed on a healthy Connector.
    k.simCommand('unhealthy conn-b');
    await waitFor('conn-b elements gone', () => ![...elementsOf(k).values()].includes('198.19.0.12'), 15_000);
    const afterDown = await k.runUsers({ users: USERS });
    expect(afterDown.failures).toEqual([]);
    expect(afterDown.perConnector.find((c) => c.id === 'conn-b')).toBeUndefined();
    k.simCommand('healthy conn-b');
    expect(await stopLb(lb)).toBe(0);
  }, 120_000);

  it('reload rewrites targets and elements in one transaction; a removed Connector leaves nothing behind', async () => {
    const lb = await k.startLb(k.config());
    const first = await k.runUsers({ users: USERS });
    expect(first.failures).toEqual([]);
    await waitFor('elements', () => elementsOf(k).size === USERS);
    const kept = [...elementsOf(k)].filter(([, to]) => to !== '198.19.0.13');

    const raw = k.config();
    raw.connectors = (raw.connectors as Array<{ id: string }>).filter((c) => c.id !== 'conn-c');
    writeConfig(lb.configPath, raw);
    lb.child.kill('SIGHUP');
    await lb.waitForLine(hasMsg('kernel data plane: table inet i11_lab rewritten'));
    const ruleset = rulesetOf(k.lab);
    expect(ruleset).not.toContain('198.19.0.13');
    expect([...elementsOf(k)]).toEqual(kept);
    const again = await k.runUsers({ users: USERS });
    expect(again.failures).toEqual([]);
    expect(again.perConnector.find((c) => c.id === 'conn-c')).toBeUndefined();
    expect(await stopLb(lb)).toBe(0);
    expect(rulesetOf(k.lab)).toBe('');
  }, 90_000);
});

