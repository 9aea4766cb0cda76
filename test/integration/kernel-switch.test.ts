import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { type CliProcess } from '../helpers/cli-process.ts';
import { createKernelLab, elementsOf, nftCounters, stopLb, sumPackets, waitFor, type KernelLab } from '../helpers/kernel-lab.ts';
import { labUnavailable, VIP } from '../helpers/netns.ts';
import { parsePrometheusText } from '../helpers/prom-text.ts';

/**
 * The kernel data plane following pcoip-lb's decisions (docs/kernel.md): a new client's flow
 * switches from user space to the kernel without losing a datagram, kernel flows hold their
 * client's pin (TTL from the last packet), a re-pin moves a fixed-port client's media, limits
 * hold in the kernel. Real nftables and conntrack in three network namespaces; root only.
 */

const RTT_SCRIPT = fileURLToPath(new URL('../../bench/lib/udp-rtt.ts', import.meta.url));
const unavailable = labUnavailable();
if (unavailable) process.stdout.write(`kernel-switch.test.ts skipped: ${unavailable}\n`);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const closedLines = (lb: CliProcess, match: (l: Record<string, unknown>) => boolean) => lb.lines.filter((l) => l.msg === 'flow closed' && match(l));
const sysctl = (k: KernelLab, name: string, value?: string) =>
  value === undefined ? k.lab.run(k.lab.lb, 'sysctl', ['-n', name]).trim() : k.lab.run(k.lab.lb, 'sysctl', ['-q', '-w', `${name}=${value}`]);

describe.skipIf(unavailable !== undefined)('kernel data plane following the placer', () => {
  let k: KernelLab;
  beforeAll(async () => {
    k = await createKernelLab({ connectors: 3, users: 64 });
  }, 60_000);
  afterAll(async () => {
    await k?.close();
  }, 30_000);

  it("switches a new client's UDP flow from user space to the kernel mid-flow, losing no datagram", async () => {
    // A client whose first flow is UDP (no broker exchange before it): one Connector that echoes every datagram.
    k.lab.run(k.lab.conn, 'ip', ['addr', 'add', '198.19.0.14/24', 'dev', 'i11k']);
    const echo = k.lab.spawn(k.lab.conn, process.execPath, [RTT_SCRIPT, 'echo', '198.19.0.14', '4172']);
    const lb = await k.startLb(k.config({ connectors: [{ id: 'echo', address: '198.19.0.14', ports: { broker: 8443, pcoip: 4172 } }], health: { checks: [] } }));
    try {
      const before = nftCounters(k.lab);
      const clients = [0, 1, 2, 3].map((i) => k.lab.userAddress(60 + i));
      const probes = clients.map((c) => k.lab.spawn(k.lab.client, process.execPath, [RTT_SCRIPT, 'probe', c, VIP, '4172', '600', '5']));
      const results = await Promise.all(probes.map(async (p) => {
        let out = '';
        p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
        await once(p, 'exit');
        return JSON.parse(out.trim().split('\n').pop()!) as { sent: number; received: number };
      }));
      const sent = results.reduce((a, r) => a + r.sent, 0);
      expect(results.reduce((a, r) => a + r.received, 0)).toBe(sent); // nothing lost in the switch
      const inKernel = sumPackets(nftCounters(k.lab), /_udp_in$/) - sumPackets(before, /_udp_in$/);
      // The first datagrams of each flow went through user space, the rest through the kernel
      // (how many of each depends on how busy the machine is: the batch and the deletion take ms).
      expect(inKernel).toBeGreaterThan(0);
      expect(inKernel).toBeLessThan(sent);
      // Each user-space flow relayed its share, then closed once quiet (handed over to the kernel).
      await waitFor('handed-over flows closed', () => closedLines(lb, (l) => l.listener === 'pcoipUdp' && l.reason === 'kernel-path').length === clients.length, 15_000);
      const userSpace = closedLines(lb, (l) => l.reason === 'kernel-path').reduce((a, l) => a + Number(l.packetsIn), 0);
      expect(userSpace + inKernel).toBe(sent);
    } finally {
      expect(await stopLb(lb)).toBe(0);
      echo.kill('SIGKILL');
      k.lab.run(k.lab.conn, 'ip', ['addr', 'del', '198.19.0.14/24', 'dev', 'i11k']);
    }
  }, 60_000);

  it('a kernel flow holds its client\'s pin; the TTL counts from its end (the last packet), with one flow-end line', async () => {
    // Short conntrack timeouts in the lab, so a kernel flow ends 2 s after its last packet.
    const saved = ['nf_conntrack_udp_timeout', 'nf_conntrack_udp_timeout_stream', 'nf_conntrack_tcp_timeout_time_wait'].map((n) => [`net.netfilter.${n}`, '']);
    for (const s of saved) s[1] = sysctl(k, s[0]!);
    for (const [name] of saved) sysctl(k, name!, name!.endsWith('time_wait') ? '1' : '2');
    try {
      const lb = await k.startLb(k.config({ affinity: { ttl: '2s' } }));
      try {
      const running = k.runUsers({ users: 6, firstUser: 20, durationMs: 8000, bitrateBps: 200_000 });
      // Well past the TTL after the user-space flows were handed over and closed: only the kernel flows' leases hold the pins.
      await sleep(7000);
      expect(elementsOf(k).size).toBe(6);
      const users = await running;
      expect(users.failures).toEqual([]);
      await waitFor('kernel flow-end lines', () => closedLines(lb, (l) => l.dataPlane === 'kernel' && l.listener === 'pcoipUdp').length === 6, 15_000);
      const line = closedLines(lb, (l) => l.dataPlane === 'kernel' && l.listener === 'pcoipUdp')[0]!;
      expect(Number(line.bytesIn)).toBeGreaterThan(0);
      expect(Number(line.packetsOut)).toBeGreaterThan(0);
      expect(line.reason).toBe('idle-timeout');
      // Then the pins expire TTL after the flows ended, and their elements go.
      await waitFor('elements gone after the TTL', () => elementsOf(k).size === 0, 15_000);
      } finally {
        expect(await stopLb(lb)).toBe(0);
      }
    } finally {
      for (const [name, value] of saved) sysctl(k, name!, value!);
    }
  }, 90_000);

  it("a re-pin moves a fixed-port client's media: session 2 reaches the new Connector, not the old flow's", async () => {
    const lb = await k.startLb(k.config());
    try {
    const port = 50002;
    const first = await k.runUsers({ users: 12, firstUser: 30, udpSourcePort: port });
    expect(first.failures).toEqual([]);
    const onA = first.perConnector.find((c) => c.id === 'conn-a')?.users ?? 0;
    expect(onA).toBeGreaterThan(0);
    // Their forwarded UDP entries (from :50002) stay in conntrack for minutes: session 2 would follow them.
    expect(k.lab.run(k.lab.lb, 'conntrack', ['-L', '-p', 'udp', '--sport', String(port), '-r', '198.19.0.11']).trim()).not.toBe('');
    expect(k.admin(lb.adminUrl!, '/connectors/conn-a/maint', 'POST').status).toBe(200);
    const second = await k.runUsers({ users: 12, firstUser: 30, udpSourcePort: port });
    expect(second.failures).toEqual([]);
    expect(second.perConnector.find((c) => c.id === 'conn-a')).toBeUndefined();
    } finally {
      expect(await stopLb(lb)).toBe(0);
    }
  }, 60_000);

  it("health.closeFlowsOnDown ends a downed Connector's forwarded flows (TCP and UDP); without it they run on", async () => {
    const toB = () => k.lab.run(k.lab.lb, 'conntrack', ['-L', '-r', '198.19.0.12']).split('\n').filter((l) => l.includes('dst=198.18.0.1 ')).length;
    for (const closeFlowsOnDown of [false, true]) {
      const raw = k.config();
      (raw.health as Record<string, unknown>).closeFlowsOnDown = closeFlowsOnDown;
      const lb = await k.startLb(raw);
      try {
        const users = await k.runUsers({ users: 12, firstUser: 40 });
        expect(users.failures).toEqual([]);
        expect(toB()).toBeGreaterThan(0); // forwarded flows to conn-b, still in conntrack
        k.simCommand('unhealthy conn-b');
        await lb.waitForLine((l) => typeof l.msg === 'string' && l.msg.includes('conn-b') && l.msg.includes('down'), 15_000);
        await waitFor('conn-b elements gone', () => ![...elementsOf(k).values()].includes('198.19.0.12'), 15_000);
        if (closeFlowsOnDown) await waitFor('conn-b flows deleted', () => toB() === 0);
        else {
          await sleep(1500);
          expect(toB()).toBeGreaterThan(0);
        }
      } finally {
        k.simCommand('healthy conn-b');
        expect(await stopLb(lb)).toBe(0);
      }
    }
  }, 90_000);

  it('enforces maxFlowsPerClient in the kernel: flows past it are dropped, counted and logged', async () => {
    const raw = k.config();
    (raw.listeners as Record<string, Record<string, unknown>>).pcoipUdp!.maxFlowsPerClient = 2;
    const lb = await k.startLb(raw);
    try {
    const users = await k.runUsers({ users: 1, firstUser: 50 });
    expect(users.failures).toEqual([]);
    const client = k.lab.userAddress(50);
    await waitFor('element', () => elementsOf(k).has(client));
    // Five new flows (source ports) from the pinned client, whose session's UDP flow is still in
    // conntrack: with that one, two may be open at once, so the kernel forwards one and drops four.
    const script = `const d=require('node:dgram');let n=0;for(let p=41001;p<=41005;p++){const s=d.createSocket('udp4');s.bind(p,'${client}',()=>{s.send(Buffer.alloc(64),4172,'${VIP}',()=>{s.close();if(++n===5)process.exit(0)})})}`;
    k.lab.run(k.lab.client, process.execPath, ['-e', script]);
    const refused = () => nftCounters(k.lab).get('refused_udp_max_per_client')?.packets ?? 0;
    await waitFor('4 refusals', () => refused() === 4);
    await waitFor('refusals in /metrics', () => {
      const m = parsePrometheusText(k.admin(lb.adminUrl!, '/metrics').body);
      return m.value('pcoip_lb_refusals_total', { listener: 'pcoipUdp', reason: 'max-flows-per-client' }) === 4;
    });
    await lb.waitForLine((l) => l.dataPlane === 'kernel' && l.code === 'PLB_E_FLOW_LIMIT' && l.reason === 'max-flows-per-client');
    } finally {
      expect(await stopLb(lb)).toBe(0);
    }
  }, 60_000);
});
