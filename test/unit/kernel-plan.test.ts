import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { desiredElements, diffElements, elementKey, forwardedListeners, kernelTargets, type KernelPlan, type MapElement } from '../../src/kernel/plan.ts';
import { ownerOf, planCounters, renderDeleteTable, renderElementChanges, renderReplaceElements, renderTable } from '../../src/kernel/nft-script.ts';
import { CounterDeltas, parseCounters } from '../../src/kernel/counters.ts';
import { deleteCommand } from '../../src/kernel/conntrack.ts';
import { forwardedFlow, parseConntrackLine } from '../../src/kernel/flow-events.ts';
import { prefixMask } from '../../src/kernel/plan.ts';
import { clientKey } from '../../src/balance/client-key.ts';
import type { ConnectorView } from '../../src/pool/pool.ts';
import { labUnavailable } from '../helpers/netns.ts';

const conn = (id: string, address: string, over: Partial<ConnectorView> = {}): ConnectorView => ({
  id,
  address,
  ports: { broker: 443, pcoip: 4172 },
  weight: 1,
  state: 'active',
  health: 'up',
  healthReason: '',
  ...over,
});

const el = (key: string, address: string, connectorId = 'a', family: 4 | 6 = 4): MapElement => ({ family, key, target: { address, port: 4172 }, connectorId });

const plan = (over: Partial<KernelPlan> = {}): KernelPlan => ({
  table: 'pcoip_lb',
  owner: { pid: 4242, startTicks: 99 },
  listeners: forwardedListeners([
    { proto: 'udp', address: '198.18.0.1', port: 4172 },
    { proto: 'tcp', address: '198.18.0.1', port: 4172 },
  ]),
  targets: kernelTargets([conn('a', '198.19.0.11'), conn('b', '198.19.0.12')]),
  snat: { ipv4: '198.19.0.1' },
  prefixes: { ipv4: 32, ipv6: 64 },
  ...over,
});

describe('kernel plan (pure)', () => {
  it('turns client keys into nft map keys: plain addresses for full prefixes, prefixes otherwise', () => {
    expect(elementKey(clientKey('198.18.1.7', { ipv4Prefix: 32, ipv6Prefix: 64 }))).toEqual({ family: 4, key: '198.18.1.7' });
    expect(elementKey(clientKey('198.18.1.7', { ipv4Prefix: 24, ipv6Prefix: 64 }))).toEqual({ family: 4, key: '198.18.1.0/24' });
    expect(elementKey(clientKey('::ffff:198.18.1.7', { ipv4Prefix: 32, ipv6Prefix: 64 }))).toEqual({ family: 4, key: '198.18.1.7' });
    expect(elementKey(clientKey('2001:db8:1:2::9', { ipv4Prefix: 32, ipv6Prefix: 64 }))).toEqual({ family: 6, key: '2001:db8:1:2:0:0:0:0/64' });
    expect(elementKey(clientKey('2001:db8::9', { ipv4Prefix: 32, ipv6Prefix: 128 }))?.key).toBe('2001:db8:0:0:0:0:0:9');
    expect(elementKey('not-an-address')).toBeUndefined();
    expect(elementKey('192.0.2.4/33')).toBeUndefined();
  });

  it('forwards a wildcard :: listener for both families, a specific address for its own', () => {
    expect(forwardedListeners([{ proto: 'udp', address: '::', port: 4172 }])).toEqual([
      { proto: 'udp', family: 4, address: undefined, port: 4172 },
      { proto: 'udp', family: 6, address: undefined, port: 4172 },
    ]);
    expect(forwardedListeners([{ proto: 'tcp', address: '0.0.0.0', port: 1 }])).toEqual([{ proto: 'tcp', family: 4, address: undefined, port: 1 }]);
    expect(forwardedListeners([{ proto: 'tcp', address: 'fd00::1', port: 2 }])).toEqual([{ proto: 'tcp', family: 6, address: 'fd00::1', port: 2 }]);
  });

  it('wants an element only for pins whose Connector admits pinned clients and has the client family', () => {
    const pool = new Map([
      ['a', conn('a', '198.19.0.11')],
      ['drain', conn('drain', '198.19.0.12', { state: 'drain' })],
      ['maint', conn('maint', '198.19.0.13', { state: 'maint' })],
      ['down', conn('down', '198.19.0.14', { health: 'down' })],
      ['v6', conn('v6', 'fd00::5')],
    ]);
    const pins = [
      { clientKey: '198.18.1.1/32', connectorId: 'a' },
      { clientKey: '198.18.1.2/32', connectorId: 'drain' },
      { clientKey: '198.18.1.3/32', connectorId: 'maint' },
      { clientKey: '198.18.1.4/32', connectorId: 'down' },
      { clientKey: '198.18.1.5/32', connectorId: 'gone' },
      { clientKey: '198.18.1.6/32', connectorId: 'v6' },
      { clientKey: 'fd00:1:2:3:0:0:0:0/64', connectorId: 'v6' },
    ];
    const want = desiredElements(pins, (id) => pool.get(id));
    expect([...want.values()].map((e) => [e.key, e.connectorId])).toEqual([
      ['198.18.1.1', 'a'],
      ['198.18.1.2', 'drain'],
      ['fd00:1:2:3:0:0:0:0/64', 'v6'],
    ]);
  });

  it('diffs programmed against desired: a changed target is a delete plus an add', () => {
    const have = new Map([
      ['4|198.51.100.1', el('198.51.100.1', '192.0.2.1')],
      ['4|198.51.100.2', el('198.51.100.2', '192.0.2.1')],
      ['4|198.51.100.3', el('198.51.100.3', '192.0.2.1')],
    ]);
    const want = new Map([
      ['4|198.51.100.1', el('198.51.100.1', '192.0.2.1')],
      ['4|198.51.100.2', el('198.51.100.2', '192.0.2.2', 'b')],
      ['4|198.51.100.4', el('198.51.100.4', '192.0.2.1')],
    ]);
    const d = diffElements(have, want);
    expect(d.deletes.map((e) => e.key)).toEqual(['198.51.100.2', '198.51.100.3']);
    expect(d.adds.map((e) => `${e.key}>${e.target.address}`)).toEqual(['198.51.100.2>192.0.2.2', '198.51.100.4>192.0.2.1']);
    expect(diffElements(want, want)).toEqual({ deletes: [], adds: [] });
  });
});

describe('nft scripts (pure)', () => {
  it('writes the table whole, replacing any old one in the same transaction', () => {
    const text = renderTable(plan(), [el('198.18.1.1', '198.19.0.11')]);
    const lines = text.split('\n');
    expect(lines.slice(0, 4)).toEqual(['add table inet pcoip_lb', 'delete table inet pcoip_lb', 'table inet pcoip_lb {', '  comment "pcoip-lb pid 4242 start 99"']);
    expect(text).toContain('elements = { 198.18.1.1 : 198.19.0.11 . 4172 }');
    expect(text).toContain('ip daddr 198.18.0.1 udp dport 4172 dnat ip to ip saddr map @client4');
    expect(text).toContain('ip daddr 198.18.0.1 tcp dport 4172 dnat ip to ip saddr map @client4');
    expect(text).toContain('ct status dnat ip daddr . th dport @targets4 snat ip to 198.19.0.1');
    expect(text).not.toContain('flags interval');
    expect(text).not.toContain('client6');
    expect(renderTable(plan({ prefixes: { ipv4: 24, ipv6: 64 } }), [])).toContain('flags interval');
    expect(ownerOf(text)).toEqual({ pid: 4242, startTicks: 99 });
  });

  it('names a counter per Connector, protocol and direction, and maps each Connector address . port to its counters', () => {
    expect(planCounters(plan()).map((c) => `${c.name}=${c.connectorId}`)).toEqual([
      'c0_tcp_in=a', 'c0_tcp_out=a', 'c0_udp_in=a', 'c0_udp_out=a',
      'c1_tcp_in=b', 'c1_tcp_out=b', 'c1_udp_in=b', 'c1_udp_out=b',
    ]);
    const text = renderTable(plan(), []);
    expect(text).toContain('udp . 198.19.0.12 . 4172 : "c1_udp_in"');
    expect(text).toContain('counter name meta l4proto . ip saddr . th sport map @count_out4');
  });

  it('refuses values that are not what they claim to be (no script injection from a config)', () => {
    expect(() => renderTable(plan({ table: 'x; flush ruleset' }), [])).toThrow(/table name/);
    expect(() => renderTable(plan({ snat: { ipv4: '192.0.2.4 ; flush ruleset' } }), [])).toThrow(/IPv4/);
    expect(() => renderElementChanges('t', { deletes: [], adds: [el('192.0.2.4 }', '192.0.2.1')] })).toThrow(/IPv4/);
    expect(() => renderElementChanges('t', { deletes: [], adds: [{ ...el('192.0.2.4', '192.0.2.1'), target: { address: '192.0.2.1', port: 70_000 } }] })).toThrow(/port/);
  });

  it('batches element changes into one transaction, deletes first', () => {
    const text = renderElementChanges('pcoip_lb', { deletes: [el('198.51.100.2', '192.0.2.1')], adds: [el('198.51.100.2', '192.0.2.2'), el('fd00::1', 'fd00::9', 'v6', 6)] });
    expect(text).toBe(
      'delete element inet pcoip_lb client4 { 198.51.100.2 }\nadd element inet pcoip_lb client4 { 198.51.100.2 : 192.0.2.2 . 4172 }\nadd element inet pcoip_lb client6 { fd00::1 : fd00::9 . 4172 }\n',
    );
    expect(renderElementChanges('pcoip_lb', { deletes: [], adds: [] })).toBe('');
    expect(renderReplaceElements(plan(), [el('198.51.100.1', '192.0.2.1')])).toBe('flush map inet pcoip_lb client4\nadd element inet pcoip_lb client4 { 198.51.100.1 : 192.0.2.1 . 4172 }\n');
    expect(renderDeleteTable('pcoip_lb')).toBe('add table inet pcoip_lb\ndelete table inet pcoip_lb\n');
  });

  const noLab = labUnavailable();
  it.skipIf(noLab !== undefined)('renders scripts the real nft accepts (v4, v6, interval maps, wildcard binds), checked in a throwaway namespace', () => {
    const ns = `i11-${process.pid}-unit`;
    spawnSync('ip', ['netns', 'add', ns]);
    try {
      const variants = [
        renderTable(plan(), [el('198.18.1.1', '198.19.0.11')]),
        renderTable(
          plan({
            listeners: forwardedListeners([{ proto: 'udp', address: '::', port: 4172, maxFlows: 1000, maxPerClient: 10 }]),
            targets: kernelTargets([conn('a', '198.19.0.11'), conn('v6', 'fd00::5')]),
            snat: { ipv4: '198.19.0.1', ipv6: 'fd00::1' },
            prefixes: { ipv4: 24, ipv6: 64 },
          }),
          [el('198.18.1.0/24', '198.19.0.11'), el('2001:db8:1:2:0:0:0:0/64', 'fd00::5', 'v6', 6)],
        ),
      ];
      for (const script of variants) {
        const r = spawnSync('ip', ['netns', 'exec', ns, 'nft', '-c', '-f', '-'], { input: script, encoding: 'utf8' });
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
      }
      const bad = spawnSync('ip', ['netns', 'exec', ns, 'nft', '-c', '-f', '-'], { input: 'table inet x { chain c { nonsense } }\n', encoding: 'utf8' });
      expect(bad.status).not.toBe(0);
    } finally {
      spawnSync('ip', ['netns', 'del', ns]);
    }
  });
});

describe('kernel counters and conntrack filters (pure)', () => {
  it('reads nft -j counters and turns them into per-Connector deltas that survive a table rewrite', () => {
    const refs = planCounters(plan());
    const reading = (n: number) =>
      parseCounters({ nftables: [{ metainfo: {} }, { counter: { name: 'c0_udp_in', packets: n, bytes: n * 1000 } }, { counter: { name: 'c0_udp_out', packets: 2 * n, bytes: 0 } }] });
    const deltas = new CounterDeltas();
    expect(deltas.next(refs, reading(10))).toEqual([{ connectorId: 'a', proto: 'udp', packetsIn: 10, bytesIn: 10_000, packetsOut: 20, bytesOut: 0 }]);
    expect(deltas.next(refs, reading(15))).toEqual([{ connectorId: 'a', proto: 'udp', packetsIn: 5, bytesIn: 5000, packetsOut: 10, bytesOut: 0 }]);
    expect(deltas.next(refs, reading(15))).toEqual([]);
    // The table was rewritten (reload): counters restarted from zero.
    expect(deltas.next(refs, reading(3))).toEqual([{ connectorId: 'a', proto: 'udp', packetsIn: 3, bytesIn: 3000, packetsOut: 6, bytesOut: 0 }]);
    expect(parseCounters('garbage').size).toBe(0);
  });

  it('renders conntrack -D lines from filters and refuses bad values', () => {
    expect(deleteCommand({ proto: 'udp', family: 4, source: '198.18.1.0/24', destination: '198.18.0.1', destinationPort: 4172, replySource: '198.19.0.11' })).toBe(
      '-D -f ipv4 -p udp -s 198.18.1.0/24 -d 198.18.0.1 -r 198.19.0.11 --dport 4172',
    );
    expect(deleteCommand({ proto: 'tcp', family: 6, sourcePort: 50002 })).toBe('-D -f ipv6 -p tcp --sport 50002');
    expect(() => deleteCommand({ proto: 'udp', family: 4, source: '192.0.2.4 -F' })).toThrow(/IPv4/);
  });
});

describe('conntrack lines and limits (pure)', () => {
  const targets = new Map(kernelTargets([conn('a', '198.19.0.11'), conn('b', '198.19.0.12')]).map((t) => [t.address, t]));
  const listeners = forwardedListeners([{ proto: 'udp', address: '198.18.0.1', port: 4172 }, { proto: 'tcp', address: '198.18.0.1', port: 4172 }]);

  it('reads conntrack -E / -L lines: type, tuples, counters, state, who deleted it', () => {
    const fresh = parseConntrackLine('[NEW] udp      17 30 src=198.18.1.7 dst=198.18.0.1 sport=50002 dport=4172 [UNREPLIED] src=198.19.0.12 dst=198.19.0.1 sport=4172 dport=50002 id=3854527617');
    expect(fresh).toMatchObject({ type: 'NEW', proto: 'udp', id: '3854527617', orig: { src: '198.18.1.7', dport: 4172 }, reply: { src: '198.19.0.12', sport: 4172 }, byUser: false });
    const gone = parseConntrackLine(
      '[DESTROY] udp      17 src=198.18.1.7 dst=198.18.0.1 sport=50002 dport=4172 packets=2 bytes=66 [UNREPLIED] src=198.19.0.12 dst=198.19.0.1 sport=4172 dport=50002 packets=0 bytes=0 id=3854527617 [USERSPACE] portid=4002823491',
    );
    expect(gone).toMatchObject({ type: 'DESTROY', orig: { packets: 2, bytes: 66 }, reply: { packets: 0, bytes: 0 }, byUser: true });
    expect(parseConntrackLine('[UPDATE] tcp      6 120 TIME_WAIT src=198.18.1.7 dst=198.18.0.1 sport=40000 dport=4172 src=198.19.0.11 dst=198.19.0.1 sport=4172 dport=40000 [ASSURED] id=7')?.state).toBe('TIME_WAIT');
    expect(parseConntrackLine('tcp      6 431999 ESTABLISHED src=198.18.1.7 dst=198.18.0.1 sport=40000 dport=4172 src=198.19.0.11 dst=198.19.0.1 sport=4172 dport=40000 [ASSURED] mark=0 use=1 id=8')).toMatchObject({ type: 'LIST', state: 'ESTABLISHED' });
    expect(parseConntrackLine('conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.')).toBeUndefined();
    expect(parseConntrackLine('[NEW] icmp 1 30 src=198.51.100.1 dst=198.51.100.2 type=8 code=0 id=1')).toBeUndefined();
  });

  it('knows a forwarded flow (to a listener of ours, DNATed to a target) from pcoip-lb\'s own and from strangers', () => {
    const line = (origDst: string, dport: number, replySrc: string, proto = 'udp') =>
      parseConntrackLine(`[NEW] ${proto} 17 30 src=198.18.1.7 dst=${origDst} sport=50002 dport=${dport} src=${replySrc} dst=198.19.0.1 sport=4172 dport=50002 id=1`)!;
    expect(forwardedFlow(line('198.18.0.1', 4172, '198.19.0.12'), listeners, targets)).toEqual({ proto: 'udp', target: targets.get('198.19.0.12') });
    expect(forwardedFlow(line('198.18.0.1', 4172, '198.18.0.1'), listeners, targets)).toBeUndefined(); // to pcoip-lb's socket
    expect(forwardedFlow(line('198.18.0.1', 5000, '198.19.0.12'), listeners, targets)).toBeUndefined(); // another port
    expect(forwardedFlow(line('198.18.0.9', 4172, '198.19.0.12'), listeners, targets)).toBeUndefined(); // another address
    expect(forwardedFlow(line('198.18.0.1', 4172, '198.19.0.99'), listeners, targets)).toBeUndefined(); // not a target
    expect(forwardedFlow(line('198.18.0.1', 4172, '198.19.0.11', 'tcp'), listeners, targets)?.proto).toBe('tcp');
  });

  it('renders limits as ct count rules for clients with an element, per client key prefix', () => {
    const limited = plan({
      listeners: forwardedListeners([{ proto: 'udp', address: '198.18.0.1', port: 4172, maxFlows: 100_000, maxPerClient: 1000 }]),
      prefixes: { ipv4: 24, ipv6: 64 },
    });
    const text = renderTable(limited, []);
    expect(text).toContain('ip daddr 198.18.0.1 udp dport 4172 ip saddr @client4 ct count over 100000 counter name "refused_udp_max_flows" drop');
    expect(text).toContain('add @per_client_0 { ip saddr and 255.255.255.0 ct count over 1000 } counter name "refused_udp_max_per_client" drop');
    expect(text.indexOf('ct count over 100000')).toBeLessThan(text.indexOf('dnat ip to'));
    expect(prefixMask(4, 32)).toBe('255.255.255.255');
    expect(prefixMask(4, 0)).toBe('0.0.0.0');
    expect(prefixMask(6, 64)).toBe('ffff:ffff:ffff:ffff:0:0:0:0');
    expect(prefixMask(6, 56)).toBe('ffff:ffff:ffff:ff00:0:0:0:0');
  });
});
