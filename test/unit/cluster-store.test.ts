import { describe, expect, it } from 'vitest';
import { decodeHeartbeat, decodeMessage, decodeOperatorState, decodeValue, encodeHeartbeat, encodeMessage, encodeValue } from '../../src/cluster-store/codec.ts';
import { PinKeepAlive, keepAliveSlack } from '../../src/cluster-store/pin-keepalive.ts';
import { findDisagreements, formatClusterStatus, instanceViews } from '../../src/cluster-store/view.ts';
import { sessionKeyDigest } from '../../src/balance/sessions.ts';
import type { AllocationRecord, StateChange } from '../../src/state/changes.ts';

const known = (id: string) => ['conn-a', 'conn-b'].includes(id);

describe('cluster store codec', () => {
  const allocation: AllocationRecord = {
    kind: 'allocation',
    sni: 's1.example',
    connectorId: 'conn-b',
    clientAddress: '2001:db8::5',
    sessionIdHint: 'ab12…(32)',
    ipAddress: undefined,
    port: undefined,
    tagFingerprint: 'a:b:40',
    learnedAt: 1000,
    tagExpiresAt: 61_000,
  };

  it('round-trips every stored kind', () => {
    const pin = { kind: 'pin', key: '192.0.2.1', connectorId: 'conn-a', reason: 'learned', at: 5 } as const;
    expect(decodeValue({ kind: 'pin', key: '192.0.2.1' }, encodeValue(pin, 'lb-a'), known)).toEqual({ ok: true, value: pin });
    const cookie = { kind: 'cookie', key: 'd1', connectorId: 'conn-b', at: 7 } as const;
    expect(decodeValue({ kind: 'cookie', key: 'd1' }, encodeValue(cookie, 'lb-a'), known)).toEqual({ ok: true, value: cookie });
    const decoded = decodeValue({ kind: 'allocation', sni: 's1.example' }, encodeValue(allocation, 'lb-a'), known);
    expect(decoded).toEqual({ ok: true, value: allocation });
    const op = { kind: 'operator-state', connectorId: 'conn-a', state: 'maint', at: 9 } as const;
    expect(decodeOperatorState('conn-a', encodeValue(op, 'lb-a'), known)).toEqual({ ok: true, value: op });
  });

  it('the stored value names the writer; the key names the client (a value cannot re-key itself)', () => {
    const text = encodeValue({ kind: 'pin', key: '192.0.2.1', connectorId: 'conn-a', reason: 'placed', at: 5 }, 'lb-a');
    expect(JSON.parse(text)).toEqual({ connector: 'conn-a', reason: 'placed', at: 5, by: 'lb-a' });
    expect(decodeValue({ kind: 'pin', key: '192.0.2.99' }, text, known)).toMatchObject({ ok: true, value: { key: '192.0.2.99' } });
  });

  it.each([
    ['not JSON', 'nope', /not JSON/],
    ['an array', '[1]', /expected object/],
    ['a wrong reason', '{"connector":"conn-a","reason":"x","at":1,"by":"b"}', /reason/],
    ['a string time', '{"connector":"conn-a","reason":"placed","at":"now","by":"b"}', /at/],
    ['an infinite time', '{"connector":"conn-a","reason":"placed","at":1e999,"by":"b"}', /at/],
    ['an unknown Connector', '{"connector":"conn-z","reason":"placed","at":1,"by":"b"}', /conn-z.*does not have/],
    ['a huge value', `"${'x'.repeat(70_000)}"`, /larger than/],
  ])('rejects %s with a reason', (_what, text, reason) => {
    const d = decodeValue({ kind: 'pin', key: 'k' }, text, known);
    expect(d.ok).toBe(false);
    if (!d.ok) expect(d.reason).toMatch(reason);
  });

  it('rejects an allocation whose client address is not an IP and an operator state that is not one', () => {
    const bad = JSON.parse(encodeValue(allocation, 'lb-a')) as Record<string, unknown>;
    bad.clientAddress = '<script>';
    expect(decodeValue({ kind: 'allocation', sni: 's' }, JSON.stringify(bad), known)).toMatchObject({ ok: false, reason: expect.stringMatching(/clientAddress/) });
    expect(decodeOperatorState('conn-a', '{"state":"off","at":1,"by":"x"}', known).ok).toBe(false);
    expect(decodeOperatorState('conn-q', '{"state":"drain","at":1,"by":"x"}', known)).toMatchObject({ ok: false, reason: expect.stringMatching(/conn-q/) });
  });

  it('checks messages on the channel like stored values', () => {
    const change: StateChange = { kind: 'operator-state', connectorId: 'conn-b', state: 'drain', at: 3 };
    expect(decodeMessage(encodeMessage('lb-a', change), known)).toEqual({ ok: true, value: { from: 'lb-a', change } });
    expect(decodeMessage(encodeMessage('lb-a', { ...change, connectorId: 'conn-x' }), known).ok).toBe(false);
    expect(decodeMessage('{"from":"lb-a","change":{"kind":"evil"}}', known).ok).toBe(false);
    expect(decodeMessage('{"change":{"kind":"unpin","key":"192.0.2.1/32","at":1}}', known).ok).toBe(false);
    expect(decodeMessage(encodeMessage('lb-a', { kind: 'unpin', key: '192.0.2.1/32', at: 1 }), known).ok).toBe(true);
  });

  it('checks the keys on the channel: a pin names a client key (addr/len), a session a key digest', () => {
    const pinOf = (key: string) => encodeMessage('lb-a', { kind: 'pin', key, connectorId: 'conn-a', reason: 'placed', at: 1 });
    const unpinOf = (key: string) => encodeMessage('lb-a', { kind: 'unpin', key, at: 1 });
    const cookieOf = (key: string) => encodeMessage('lb-a', { kind: 'cookie', key, connectorId: 'conn-a', at: 1 });
    for (const good of ['192.0.2.1/32', '192.0.2.0/24', '2001:db8:1:2:0:0:0:0/64', '0.0.0.0/0']) {
      expect(decodeMessage(pinOf(good), known).ok, good).toBe(true);
      expect(decodeMessage(unpinOf(good), known).ok, good).toBe(true);
    }
    for (const bad of ['192.0.2.1', 'k', '192.0.2.1/33', '2001:db8::/129', '192.0.2.1/', '/32', 'host.example/32', `${'1'.repeat(300)}/32`]) {
      expect(decodeMessage(pinOf(bad), known), bad).toMatchObject({ ok: false, reason: expect.stringMatching(/^change\.key: /) });
      expect(decodeMessage(unpinOf(bad), known).ok, bad).toBe(false);
    }
    expect(decodeMessage(cookieOf(sessionKeyDigest('JSESSIONID=abc')), known).ok).toBe(true);
    for (const bad of ['d1', 'JSESSIONID=abc', `${sessionKeyDigest('x')}x`]) expect(decodeMessage(cookieOf(bad), known), bad).toMatchObject({ ok: false, reason: expect.stringMatching(/session key digest/) });
  });

  it('checks heartbeats, including that a heartbeat names its own key', () => {
    const h = { id: 'lb-a', version: '1', startedAt: 1, at: 2, listeners: { broker: '192.0.2.1:443/tcp' }, connectors: [{ id: 'conn-x', health: 'down' as const, state: 'active' as const, reason: 'r' }] };
    expect(decodeHeartbeat('lb-a', encodeHeartbeat(h))).toEqual({ ok: true, value: h });
    expect(decodeHeartbeat('lb-b', encodeHeartbeat(h))).toMatchObject({ ok: false, reason: expect.stringMatching(/names itself/) });
    expect(decodeHeartbeat('lb-a', '{"id":"lb-a"}').ok).toBe(false);
  });
});

describe('PinKeepAlive', () => {
  const ttl = 60_000;
  const slack = keepAliveSlack(ttl); // 15 s
  it('slack is ttl/4 within [1 s, 5 min]', () => {
    expect(keepAliveSlack(1000)).toBe(1000);
    expect(keepAliveSlack(60_000)).toBe(15_000);
    expect(keepAliveSlack(3_600_000)).toBe(300_000);
  });

  it('refreshes a key with flows about once per slack, not per flow', () => {
    const k = new PinKeepAlive({ ttlMs: ttl, slackMs: slack });
    k.written('c1', 0);
    expect(k.applyDeltas(new Map([['c1', 3]]), 1000)).toEqual([]);
    let refreshes = 0;
    for (let t = 0; t <= 120_000; t += slack / 2) refreshes += k.due(t).length;
    // Two minutes with flows open: one refresh every 7.5-15 s.
    expect(refreshes).toBeGreaterThanOrEqual(8);
    expect(refreshes).toBeLessThanOrEqual(16);
  });

  it('refreshes when the last flow ends only if the stored pin would expire within the TTL', () => {
    const k = new PinKeepAlive({ ttlMs: ttl, slackMs: slack });
    k.written('c1', 0); // expires at 75 s
    k.applyDeltas(new Map([['c1', 1]]), 0);
    expect(k.applyDeltas(new Map([['c1', -1]]), 10_000)).toEqual([]); // 65 s left ≥ ttl
    expect(k.applyDeltas(new Map([['c1', 1]]), 5000)).toEqual([]); // 70 s left ≥ ttl + slack/2
    expect(k.applyDeltas(new Map([['c1', -1]]), 16_000)).toEqual(['c1']); // 59 s left < ttl: refresh
  });

  it('a key seen through a look-up uses the stored PTTL; an unknown one is refreshed on its first flow', () => {
    const k = new PinKeepAlive({ ttlMs: ttl, slackMs: slack });
    k.observed('seen', 74_000, 0);
    expect(k.applyDeltas(new Map([['seen', 1], ['unknown', 1]]), 0)).toEqual(['unknown']);
  });

  it("a key written by another instance is refreshed here only if tracked here (this instance's own clients)", () => {
    const k = new PinKeepAlive({ ttlMs: ttl, slackMs: slack });
    k.writtenElsewhere('theirs', 0);
    expect(k.size).toBe(0);
    k.written('ours', 0); // expires at 75 s
    k.writtenElsewhere('ours', 20_000); // re-written elsewhere: expires at 95 s
    expect(k.size).toBe(1);
    k.applyDeltas(new Map([['ours', 1]]), 20_000);
    expect(k.due(25_000)).toEqual([]); // 70 s left: no refresh needed (by the 75 s it had, 50 s left: it would be)
  });

  it('forgets idle keys once their stored pin has expired (bounded memory)', () => {
    const k = new PinKeepAlive({ ttlMs: ttl, slackMs: slack });
    k.written('idle', 0);
    k.written('busy', 0);
    k.applyDeltas(new Map([['busy', 1]]), 0);
    expect(k.due(80_000)).toEqual(['busy']); // kept, and refreshed: its client has flows here
    expect(k.size).toBe(1);
  });
});

describe('cluster view', () => {
  const hb = (id: string, connectors: Array<[string, 'up' | 'down', 'active' | 'drain' | 'maint']>) => ({
    record: { id, version: '0.1.0', startedAt: 0, at: 0, listeners: {}, connectors: connectors.map(([cid, health, state]) => ({ id: cid, health, state, reason: health === 'down' ? 'refused' : '' })) },
    receivedAt: 1000,
  });

  it('lists this instance first and finds health, state and configuration disagreements', () => {
    const views = instanceViews('lb-b', [hb('lb-a', [['c1', 'up', 'active'], ['c2', 'down', 'drain']]), hb('lb-b', [['c1', 'up', 'active'], ['c2', 'up', 'active'], ['c3', 'up', 'active']])], 1500);
    expect(views.map((v) => [v.id, v.self, v.heartbeatAgeMs])).toEqual([
      ['lb-b', true, 500],
      ['lb-a', false, 500],
    ]);
    expect(findDisagreements(views)).toEqual([
      { connector: 'c2', field: 'health', values: { 'lb-b': 'up', 'lb-a': 'down (refused)' } },
      { connector: 'c2', field: 'state', values: { 'lb-b': 'active', 'lb-a': 'drain' } },
      { connector: 'c3', field: 'configured', values: { 'lb-b': 'present', 'lb-a': 'absent' } },
    ]);
    expect(findDisagreements([views[0]!, { ...views[0]!, id: 'lb-z' }])).toEqual([]);
  });

  it('formats the instances and disagreements for pcoip-lb status', () => {
    const instances = instanceViews('lb-a', [hb('lb-a', [['c1', 'up', 'active']]), hb('lb-b', [['c1', 'down', 'active']])], 1200);
    const text = formatClusterStatus({ instanceId: 'lb-a', store: { url: 'redis://r:6379', up: true, since: 'x', lastError: undefined }, instances, disagreements: findDisagreements(instances) });
    expect(text).toContain('cluster: 2 instance(s) · store redis://r:6379 up · this instance: lb-a');
    expect(text).toMatch(/lb-a \(this\)\s+0\.2 s ago\s+up\/active/);
    expect(text).toMatch(/lb-b\s+0\.2 s ago\s+down\/active/);
    expect(text).toContain('disagree: c1 health: lb-a=up, lb-b=down (refused)');
  });
});
