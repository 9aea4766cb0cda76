import { describe, expect, it } from 'vitest';
import { MAX_LOGINS_PER_ADDRESS, SessionRegistry, digest } from '../../src/sessions/registry.ts';
import { mergeFragments, pageOf, sessionState, viewOf, type SessionFragment } from '../../src/sessions/summary.ts';
import type { AllocationRecord } from '../../src/state/changes.ts';

const options = { maxSessions: 1000, keepEndedMs: 60_000, loginTimeoutMs: 30_000, metering: true };

function allocation(client: string, connectorId: string, sni: string, at: number, tag = `${sni}-tag`): AllocationRecord {
  return { kind: 'allocation', sni, connectorId, clientAddress: client, sessionIdHint: '2305…(19)', ipAddress: undefined, port: undefined, tagFingerprint: tag, learnedAt: at, tagExpiresAt: at + 60_000 };
}

const counters = () => ({ packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0 });

/** A datagram with the transport header: SPI at 4, sequence at 8. */
function datagram(spi: number, seq: number): Buffer {
  const b = Buffer.alloc(40);
  b.writeUInt32BE(spi, 4);
  b.writeUInt32BE(seq, 8);
  return b;
}

describe('SessionRegistry: one session per login, through every flow', () => {
  it('terminate mode: broker requests, allocation, 4172/TCP by SNI and UDP join one session; state follows', () => {
    const r = new SessionRegistry({ ...options });
    r.brokerRequest('198.51.100.7', 'conn-a', 'log-1', 1000);
    r.brokerRequest('198.51.100.7', 'conn-a', 'log-1', 1100);
    expect(r.fragments(1100).map((f) => sessionState(f))).toEqual(['logging-in']);
    r.learned(allocation('198.51.100.7', 'conn-a', 'sni-1', 1200), 'local', 1200);
    expect(r.fragments(1200).map((f) => sessionState(f))).toEqual(['allocated']);
    const tcp = r.tcpOpened('pcoipTcp', { clientAddress: '198.51.100.7', clientPort: 40000, connectorId: 'conn-a', sni: 'SNI-1', now: 1300, bytes: () => ({ bytesIn: 10, bytesOut: 20 }) });
    expect(r.fragments(1300).map((f) => sessionState(f))).toEqual(['connected']);
    const c = { packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0 };
    const udp = r.udpOpened({ clientAddress: '198.51.100.7', clientPort: 4172, connectorId: 'conn-a', now: 1400, counters: c });
    Object.assign(c, { packetsIn: 5, packetsOut: 5, bytesIn: 600, bytesOut: 600 });
    const [f] = r.fragments(1500);
    expect(f).toMatchObject({ id: `a${digest('sni-1-tag')}`, client: '198.51.100.7', connector: 'conn-a', sni: 'sni-1', loginKey: digest('log-1') });
    expect(f!.broker).toEqual({ firstAt: 1000, lastAt: 1100, requests: 2 });
    expect(f!.tcp).toEqual([{ clientPort: 40000, startedAt: 1300, endedAt: undefined, bytesIn: 10, bytesOut: 20 }]);
    expect(f!.udp[0]).toMatchObject({ clientPort: 4172, packetsIn: 5, bytesOut: 600 });
    expect(sessionState(f!)).toBe('streaming');
    udp.closed(2000);
    expect(sessionState(r.fragments(2000)[0]!)).toBe('connected');
    tcp.closed(2100);
    const [ended] = r.fragments(2100);
    expect(sessionState(ended!)).toBe('ended');
    expect(ended!.endedAt).toBe(2100);
    expect(ended!.udp[0]).toMatchObject({ endedAt: 2000, packetsIn: 5 });
    // Listed for keepEndedMs, then forgotten.
    expect(r.fragments(2100 + options.keepEndedMs + 1)).toEqual([]);
  });

  it('two users behind one address on two Connectors stay two sessions, each with its own flows', () => {
    const r = new SessionRegistry({ ...options });
    const nat = '203.0.113.9';
    r.brokerRequest(nat, 'conn-a', 'user-1', 1);
    r.brokerRequest(nat, 'conn-b', 'user-2', 2);
    r.learned(allocation(nat, 'conn-a', 'sni-a', 3), 'local', 3);
    r.learned(allocation(nat, 'conn-b', 'sni-b', 4), 'local', 4);
    r.tcpOpened('pcoipTcp', { clientAddress: nat, clientPort: 1, connectorId: 'conn-b', sni: 'sni-b', now: 5 });
    r.tcpOpened('pcoipTcp', { clientAddress: nat, clientPort: 2, connectorId: 'conn-a', sni: 'sni-a', now: 6 });
    r.udpOpened({ clientAddress: nat, clientPort: 3, connectorId: 'conn-a', now: 7, counters: counters() });
    r.udpOpened({ clientAddress: nat, clientPort: 4, connectorId: 'conn-b', now: 8, counters: counters() });
    const byConnector = Object.fromEntries(r.fragments(9).map((f) => [f.connector, f]));
    expect(byConnector['conn-a']).toMatchObject({ loginKey: digest('user-1'), sni: 'sni-a', tcp: [{ clientPort: 2 }], udp: [{ clientPort: 3 }] });
    expect(byConnector['conn-b']).toMatchObject({ loginKey: digest('user-2'), sni: 'sni-b', tcp: [{ clientPort: 1 }], udp: [{ clientPort: 4 }] });
    // Both sessions have their UDP flow: newest 4172 connection first.
    expect(r.udpCandidates(nat, 3)).toEqual(['conn-a', 'conn-b']);
    expect(r.udpCandidates(nat, 1)).toEqual(['conn-a']);
    // A third session, older, still waiting for its media, comes first: the next new flow is most likely its.
    r.tcpOpened('pcoipTcp', { clientAddress: nat, clientPort: 9, connectorId: 'conn-c', now: 4 });
    expect(r.udpCandidates(nat, 3)).toEqual(['conn-c', 'conn-a', 'conn-b']);
    expect(r.hasLiveSession(nat, 'conn-b')).toBe(true);
    expect(r.hasLiveSession(nat, 'conn-c')).toBe(true);
    expect(r.hasLiveSession(nat, 'conn-d')).toBe(false);
  });

  it('an allocation joins the login whose allocate request it answers, not just the newest of the address', () => {
    const r = new SessionRegistry({ ...options });
    const nat = '203.0.113.20';
    r.brokerRequest('198.51.100.1', 'conn-a', 'older', 1); // hello from another address of the NAT pool
    r.brokerRequest(nat, 'conn-a', 'older', 2);
    r.brokerRequest(nat, 'conn-a', 'newer', 3);
    r.answering('older', () => r.learned(allocation(nat, 'conn-a', 'sni-older', 4), 'local', 4));
    const byLogin = Object.fromEntries(r.fragments(5).map((f) => [f.loginKey, f]));
    expect(byLogin[digest('older')]).toMatchObject({ sni: 'sni-older', client: nat, broker: { requests: 2 } });
    expect(byLogin[digest('newer')]!.allocationKey).toBeUndefined();
    // Found by the address its 4172 flows come from, not only the one its login began at.
    r.tcpOpened('pcoipTcp', { clientAddress: nat, clientPort: 7, connectorId: 'conn-a', sni: 'sni-older', now: 6 });
    expect(r.udpCandidates(nat, 3)).toEqual(['conn-a']);
    // Without the hint the newest login of the address takes it (the heuristic).
    r.learned(allocation(nat, 'conn-a', 'sni-2', 7), 'local', 7);
    expect(r.fragments(8).find((f) => f.loginKey === digest('newer'))!.sni).toBe('sni-2');
  });

  it('an answer the table refuses leaves no hint: the next allocation is joined by the heuristic, not to that login', () => {
    const r = new SessionRegistry({ ...options });
    const nat = '203.0.113.21';
    r.brokerRequest(nat, 'conn-a', 'older', 1);
    r.brokerRequest(nat, 'conn-a', 'newer', 2);
    expect(r.answering('older', () => 'refused')).toBe('refused');
    r.learned(allocation(nat, 'conn-a', 'sni-next', 3), 'local', 3);
    const byLogin = Object.fromEntries(r.fragments(4).map((f) => [f.loginKey, f]));
    expect(byLogin[digest('newer')]!.sni).toBe('sni-next');
    expect(byLogin[digest('older')]!.allocationKey).toBeUndefined();
  });

  it('passthrough: 443 connections, then 4172/TCP and UDP of one address and Connector form a session', () => {
    const r = new SessionRegistry({ ...options });
    r.tcpOpened('broker', { clientAddress: '192.0.2.111', clientPort: 5000, connectorId: 'conn-c', now: 10 });
    r.tcpOpened('broker', { clientAddress: '192.0.2.111', clientPort: 5001, connectorId: 'conn-c', now: 11 });
    r.tcpOpened('pcoipTcp', { clientAddress: '192.0.2.111', clientPort: 5002, connectorId: 'conn-c', now: 12 });
    r.udpOpened({ clientAddress: '192.0.2.111', clientPort: 4172, connectorId: 'conn-c', now: 13, counters: counters() });
    const fs = r.fragments(14);
    expect(fs).toHaveLength(1);
    expect(fs[0]).toMatchObject({ broker: { requests: 2 }, tcp: [{ clientPort: 5002 }], udp: [{ clientPort: 4172 }] });
  });

  it('a replicated allocation is not listed by this process, but its claim makes its Connector a UDP candidate here', () => {
    const r = new SessionRegistry({ ...options });
    r.learned(allocation('192.0.2.122', 'conn-b', 'sni-x', 1), 'remote', 1);
    expect(r.fragments(2)).toEqual([]);
    expect(r.udpCandidates('192.0.2.122', 3)).toEqual([]);
    r.learned({ kind: 'allocation-claimed', sni: 'sni-x', at: 3 }, 'remote', 3);
    expect(r.udpCandidates('192.0.2.122', 3)).toEqual(['conn-b']);
    r.udpOpened({ clientAddress: '192.0.2.122', clientPort: 9, connectorId: 'conn-b', now: 4, counters: counters() });
    expect(r.fragments(5)).toMatchObject([{ id: `a${digest('sni-x-tag')}`, udp: [{ clientPort: 9 }] }]);
  });

  it('a login that goes nowhere ends after the login timeout', () => {
    const r = new SessionRegistry({ ...options });
    r.brokerRequest('192.0.2.133', 'conn-a', undefined, 0);
    expect(sessionState(r.fragments(options.loginTimeoutMs)[0]!)).toBe('logging-in');
    expect(sessionState(r.fragments(options.loginTimeoutMs + 1)[0]!)).toBe('ended');
  });

  it('stays within maxSessions: ended sessions go first', () => {
    const r = new SessionRegistry({ ...options, maxSessions: 10 });
    const live = r.tcpOpened('pcoipTcp', { clientAddress: '192.0.2.199', clientPort: 1, connectorId: 'conn-a', now: 0 });
    for (let i = 0; i < 50; i++) r.tcpOpened('pcoipTcp', { clientAddress: `192.0.2.${i}`, clientPort: 1, connectorId: 'conn-a', now: i + 1 }).closed(i + 1);
    expect(r.size).toBeLessThanOrEqual(10);
    expect(r.fragments(100).some((f) => f.client === '192.0.2.199')).toBe(true);
    live.closed(101);
  });

  it('past maxSessions the earliest ended session goes, before any login or live one', () => {
    const r = new SessionRegistry({ ...options, maxSessions: 4 });
    const a = r.tcpOpened('pcoipTcp', { clientAddress: '192.0.2.1', clientPort: 1, connectorId: 'conn-a', now: 1 });
    const b = r.tcpOpened('pcoipTcp', { clientAddress: '192.0.2.2', clientPort: 1, connectorId: 'conn-a', now: 2 });
    r.brokerRequest('192.0.2.3', 'conn-a', 'login-3', 3);
    r.tcpOpened('pcoipTcp', { clientAddress: '192.0.2.4', clientPort: 1, connectorId: 'conn-a', now: 4 });
    b.closed(5);
    a.closed(6);
    r.brokerRequest('192.0.2.5', 'conn-a', 'login-5', 7);
    expect(r.fragments(8).map((f) => f.client).sort()).toEqual(['192.0.2.1', '192.0.2.3', '192.0.2.4', '192.0.2.5']);
  });

  it(`one address sending a new CLIENT-LOG-ID per request keeps at most ${MAX_LOGINS_PER_ADDRESS} logins in the view; other addresses keep theirs`, () => {
    const r = new SessionRegistry({ ...options, maxSessions: 10_000 });
    r.brokerRequest('198.51.100.8', 'conn-b', 'real-user', 0);
    for (let i = 1; i <= 5000; i++) r.brokerRequest('203.0.113.66', 'conn-a', `forged-${i}`, i);
    const views = r.fragments(5001);
    expect(views.filter((f) => f.client === '203.0.113.66')).toHaveLength(MAX_LOGINS_PER_ADDRESS);
    // The newest are kept (the oldest unallocated login goes first).
    expect(views.some((f) => f.loginKey === digest('forged-5000'))).toBe(true);
    expect(views.some((f) => f.loginKey === digest('forged-1'))).toBe(false);
    expect(views.find((f) => f.client === '198.51.100.8')).toMatchObject({ loginKey: digest('real-user'), connector: 'conn-b' });
    expect(r.size).toBe(MAX_LOGINS_PER_ADDRESS + 1);
  });

  it('meters each UDP direction separately and adds closed flows to the monotonic totals', () => {
    const r = new SessionRegistry({ ...options });
    const tap = r.udpOpened({ clientAddress: '192.0.2.144', clientPort: 1, connectorId: 'conn-a', now: 0, counters: counters() });
    for (let s = 1; s <= 105; s++) {
      if (s % 10 !== 0) tap.fromClient(datagram(0x1111, s));
      tap.fromConnector(datagram(0x2222, s));
    }
    const q = r.fragments(1)[0]!.udp[0]!.quality!;
    expect(q.fromClient).toMatchObject({ layout: 'transport-header', spi: '00001111', lost: 10 });
    expect(q.fromConnector).toMatchObject({ layout: 'transport-header', spi: '00002222', lost: 0 });
    const before = r.mediaTotals();
    // 80, 90 and 100 are within WINDOW (32) of the highest (105): pending, not yet final.
    expect(before.directions.fromClient.lost).toBe(7);
    tap.closed(2);
    const after = r.mediaTotals();
    expect(after.directions.fromClient.lost).toBe(10);
    expect(after.directions.fromConnector.lost).toBe(0);
    expect(after.lossRatio.fromClient.count).toBe(1);
    expect(after.flowsByLayout['transport-header']).toBe(1);
  });

  it('with metering off, the tap measures nothing', () => {
    const r = new SessionRegistry({ ...options, metering: false });
    const tap = r.udpOpened({ clientAddress: '192.0.2.155', clientPort: 1, connectorId: 'conn-a', now: 0, counters: counters() });
    for (let s = 1; s <= 10; s++) tap.fromClient(datagram(0x1111, s));
    expect(r.fragments(1)[0]!.udp[0]!.quality).toBeUndefined();
  });
});

describe('mergeFragments (the multi-core primary joins what its workers hold)', () => {
  const base = (over: Partial<SessionFragment>): SessionFragment => ({
    id: 'x',
    client: '192.0.2.101',
    connector: 'conn-a',
    loginKey: undefined,
    allocationKey: undefined,
    sni: undefined,
    sessionId: undefined,
    createdAt: 0,
    allocatedAt: undefined,
    endedAt: undefined,
    broker: undefined,
    tcp: [],
    udp: [],
    ...over,
  });
  const tcp = (port: number, endedAt?: number) => ({ clientPort: port, startedAt: 1, endedAt, bytesIn: 1, bytesOut: 1 });

  it('joins by allocation, by login key (transitively), and live unkeyed fragments by address and Connector', () => {
    const merged = mergeFragments([
      base({ id: 'l1', loginKey: 'L', broker: { firstAt: 1, lastAt: 2, requests: 2 }, workers: [0] }),
      base({ id: 'aA', loginKey: 'L', allocationKey: 'A', broker: { firstAt: 3, lastAt: 4, requests: 3 }, workers: [1] }),
      base({ id: 'aA', allocationKey: 'A', tcp: [tcp(1)], workers: [0] }),
      base({ id: 's1', client: '192.0.2.109', tcp: [tcp(2)], workers: [0] }),
      base({ id: 's2', client: '192.0.2.109', udp: [], tcp: [tcp(3)], workers: [1] }),
      base({ id: 's3', client: '192.0.2.109', endedAt: 5, tcp: [tcp(4, 5)], workers: [1] }),
    ]);
    expect(merged).toHaveLength(3);
    const a = merged.find((m) => m.id === 'aA')!;
    expect(a).toMatchObject({ loginKey: 'L', allocationKey: 'A', broker: { firstAt: 1, lastAt: 4, requests: 5 }, workers: [0, 1] });
    expect(a.tcp).toHaveLength(1);
    const passthrough = merged.filter((m) => m.client === '192.0.2.109');
    expect(passthrough.map((m) => m.tcp.length).sort()).toEqual([1, 2]);
  });

  it('a merged session is ended only when every fragment is', () => {
    const [m] = mergeFragments([base({ allocationKey: 'A', endedAt: 9 }), base({ allocationKey: 'A', tcp: [tcp(1)] })]);
    expect(viewOf(m!).state).toBe('connected');
  });
});

describe('pageOf: filter, worst quality first, paging', () => {
  const quality = (lossRatio: number, jitterMs: number) => ({
    fromClient: { layout: 'transport-header' as const, spi: '1', datagrams: 1, received: 1, lost: 0, lossRatio, reordered: 0, late: 0, duplicates: 0, rekeys: 0, resyncs: 0, unparsed: 0, jitterMs, jitterSamples: 1 },
    fromConnector: { layout: 'transport-header' as const, spi: '2', datagrams: 1, received: 1, lost: 0, lossRatio: 0, reordered: 0, late: 0, duplicates: 0, rekeys: 0, resyncs: 0, unparsed: 0, jitterMs: 0, jitterSamples: 1 },
  });
  const f = (id: string, connector: string, loss: number, jitter: number, createdAt: number, endedAt?: number): SessionFragment => ({
    id,
    client: `192.0.2.10${id.length}`,
    connector,
    loginKey: undefined,
    allocationKey: undefined,
    sni: undefined,
    sessionId: undefined,
    createdAt,
    allocatedAt: undefined,
    endedAt,
    broker: undefined,
    tcp: [],
    udp: [{ clientPort: 1, startedAt: createdAt, endedAt, bytesIn: 0, bytesOut: 0, packetsIn: 1, packetsOut: 1, probe: undefined, quality: quality(loss, jitter) }],
  });
  const all = [f('a', 'c1', 0, 1, 1), f('b', 'c1', 0.05, 1, 2), f('c', 'c2', 0.05, 9, 3), f('d', 'c2', 0.5, 0, 4, 10), f('e', 'c1', 0, 0, 5)];

  it('sorts live sessions by worst loss, then jitter; ended last', () => {
    expect(pageOf(all, {}).sessions.map((s) => s.id)).toEqual(['c', 'b', 'a', 'e', 'd']);
  });
  it('filters by Connector, client and state, and pages', () => {
    expect(pageOf(all, { connector: 'c2' }).sessions.map((s) => s.id)).toEqual(['c', 'd']);
    expect(pageOf(all, { state: 'ended' }).sessions.map((s) => s.id)).toEqual(['d']);
    expect(pageOf(all, { client: '192.0.2.101' }).total).toBe(5);
    const page = pageOf(all, { offset: 1, limit: 2 });
    expect(page).toMatchObject({ total: 5, offset: 1, limit: 2 });
    expect(page.sessions.map((s) => s.id)).toEqual(['b', 'a']);
    expect(pageOf(all, { sort: 'started' }).sessions.map((s) => s.id)).toEqual(['e', 'd', 'c', 'b', 'a']);
  });
});
