import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { sessionKeyDigest } from '../../src/balance/sessions.ts';
import { registerClusterMetrics } from '../../src/cluster-store/metrics.ts';
import type { PinRecord } from '../../src/state/changes.ts';
import { RedisServer } from '../helpers/redis-server.ts';
import { eventually, startReplica, type TestReplica } from '../helpers/cluster-store.ts';

/**
 * The cluster store replica against a real redis-server (started per file, persistence off):
 * publish/look-up, expiry and refresh, pub/sub, garbage values, the store killed, paused and
 * restarted. No mock of Redis anywhere.
 */
const pin = (key: string, connectorId: string, reason: PinRecord['reason'] = 'repinned', at = Date.now()): PinRecord => ({ kind: 'pin', key, connectorId, reason, at });
const lines = (r: TestReplica, prefix: string) => r.logs.lines.filter((l) => typeof l.msg === 'string' && (l.msg as string).startsWith(prefix));

describe('RedisReplica against a real redis-server', () => {
  const server = new RedisServer();
  const open: TestReplica[] = [];
  const replica = async (id: string, options: Parameters<typeof startReplica>[2] = {}) => {
    const r = await startReplica(server.url, id, options);
    open.push(r);
    return r;
  };

  beforeAll(async () => {
    await server.start();
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((r) => r.replica.close()));
    if (!server.running) await server.start();
    server.cli('FLUSHALL');
  });
  afterAll(async () => {
    await server.cleanup();
  });

  it('a pin published by one instance is found by another, with PX = TTL + slack', async () => {
    const a = await replica('lb-a');
    const b = await replica('lb-b');
    a.replica.publish(pin('198.51.100.7/32', 'conn-b'));
    await eventually(() => server.cli('EXISTS', 'i10:pin:198.51.100.7/32') === '1', 2000, 'pin written');
    const found = await b.replica.lookup({ kind: 'pin', key: '198.51.100.7/32' });
    expect(found).toMatchObject({ kind: 'pin', key: '198.51.100.7/32', connectorId: 'conn-b', reason: 'repinned' });
    const pttl = Number(server.cli('PTTL', 'i10:pin:198.51.100.7/32'));
    // ttl 60 s + slack min(ttl/4, 5 min) = 75 s
    expect(pttl).toBeGreaterThan(70_000);
    expect(pttl).toBeLessThanOrEqual(75_000);
    expect(await b.replica.lookup({ kind: 'pin', key: '198.51.100.8/32' })).toBeUndefined();
    expect(b.replica.stats.lookups.get('pin|hit')).toBe(1);
    expect(b.replica.stats.lookups.get('pin|miss')).toBe(1);
    // The change also reached b over pub/sub (b applies it without a look-up next time).
    await b.waitForRemote((c) => c.kind === 'pin' && c.key === '198.51.100.7/32');
    expect(a.remote).toEqual([]); // its own messages are not echoed back
  });

  it('a looked-up pin is handed over as live until its stored lifetime ends, however old the decision', async () => {
    const a = await replica('lb-a', { ttlMs: 10_000 });
    const b = await replica('lb-b', { ttlMs: 10_000 });
    // Pinned an hour ago, but its client keeps flows open on a (so the stored key is fresh).
    a.replica.publish(pin('198.51.100.5/32', 'conn-b', 'repinned', Date.now() - 3_600_000));
    await eventually(() => server.cli('EXISTS', 'i10:pin:198.51.100.5/32') === '1', 2000, 'pin written');
    const found = (await b.replica.lookup({ kind: 'pin', key: '198.51.100.5/32' })) as PinRecord | undefined;
    expect(found).toMatchObject({ connectorId: 'conn-b' });
    expect(found!.at).toBeGreaterThan(Date.now() - 1000);
    // A key with 4 s left: the copy must expire with it, so it is handed over as last live 6 s ago (TTL 10 s).
    server.cli('PEXPIRE', 'i10:pin:198.51.100.5/32', '4000');
    const older = (await b.replica.lookup({ kind: 'pin', key: '198.51.100.5/32' })) as PinRecord | undefined;
    expect(Date.now() - older!.at).toBeGreaterThan(5500);
    expect(Date.now() - older!.at).toBeLessThan(6500);
  });

  it('a placed pin never overwrites a stored one: the instance adopts the stored pin instead', async () => {
    const a = await replica('lb-a');
    const b = await replica('lb-b');
    // Stored by another instance whose message b never saw (b was away, say): b learns it only by adopting.
    server.cli('SET', 'i10:pin:198.51.100.9/32', JSON.stringify({ connector: 'conn-c', reason: 'repinned', at: Date.now(), by: 'lb-x' }), 'PX', '60000');
    b.replica.publish(pin('198.51.100.9/32', 'conn-a', 'placed'));
    const adopted = await b.waitForRemote((c) => c.kind === 'pin' && c.key === '198.51.100.9/32');
    expect(adopted).toMatchObject({ connectorId: 'conn-c', reason: 'repinned' });
    await eventually(() => b.replica.stats.writes >= 1, 2000, 'write sent');
    await new Promise((r) => setTimeout(r, 100));
    expect(JSON.parse(server.cli('GET', 'i10:pin:198.51.100.9/32'))).toMatchObject({ connector: 'conn-c', by: 'lb-x' });
    expect(a.remote.some((c) => c.kind === 'pin' && c.key === '198.51.100.9/32')).toBe(false); // the loser is not announced
    // A placed pin where nothing is stored is written and announced.
    b.replica.publish(pin('198.51.100.10/32', 'conn-a', 'placed'));
    await a.waitForRemote((c) => c.kind === 'pin' && c.key === '198.51.100.10/32' && c.connectorId === 'conn-a');
  });

  it("a placement followed at once by a re-pin of the same client reaches the others in that order", async () => {
    const a = await replica('lb-a');
    const b = await replica('lb-b');
    const keys = Array.from({ length: 20 }, (_, i) => `198.51.100.${110 + i}/32`);
    for (const key of keys) {
      a.replica.publish(pin(key, 'conn-a', 'placed'));
      await new Promise((r) => setTimeout(r, 3)); // its own batch: the placement is on the wire first
      a.replica.publish(pin(key, 'conn-c', 'repinned'));
    }
    await eventually(() => keys.every((k) => b.remote.some((c) => c.kind === 'pin' && c.key === k && c.connectorId === 'conn-c')), 3000, 're-pins arrived');
    await new Promise((r) => setTimeout(r, 100));
    const last = (k: string) => b.remote.filter((c): c is PinRecord => c.kind === 'pin' && c.key === k).pop()!.connectorId;
    expect(keys.map(last)).toEqual(keys.map(() => 'conn-c'));
  });

  it('operator state reaches the other instances within a second and a later instance starts with it', async () => {
    const a = await replica('lb-a');
    const b = await replica('lb-b');
    const sent = Date.now();
    a.replica.publish({ kind: 'operator-state', connectorId: 'conn-b', state: 'drain', at: sent });
    await b.waitForRemote((c) => c.kind === 'operator-state' && c.connectorId === 'conn-b' && c.state === 'drain', 1000);
    expect(Date.now() - sent).toBeLessThan(1000);
    // A restarted/new instance reads it while reconciling, before it says it is up.
    const c = await replica('lb-c');
    expect(c.remote).toContainEqual(expect.objectContaining({ kind: 'operator-state', connectorId: 'conn-b', state: 'drain' }));
    // An instance whose own operator change is newer writes it when reconciling.
    const d = await startReplica(server.url, 'lb-d', { waitUp: false });
    open.push(d);
    d.local.push({ kind: 'operator-state', connectorId: 'conn-b', state: 'active', at: sent + 10_000 });
    expect(await d.replica.whenUp(5000)).toBe(true);
    expect(JSON.parse(server.cli('HGET', 'i10:operator', 'conn-b'))).toMatchObject({ state: 'active', by: 'lb-d' });
  });

  it('learned sessions and allocations are stored with their own lifetimes', async () => {
    const a = await replica('lb-a');
    const b = await replica('lb-b');
    const now = Date.now();
    const cookieKey = sessionKeyDigest('JSESSIONID=i10-1');
    a.replica.publish({ kind: 'cookie', key: cookieKey, connectorId: 'conn-a', at: now });
    a.replica.publish({
      kind: 'allocation',
      sni: 'sess-1.example',
      connectorId: 'conn-c',
      clientAddress: '198.51.100.20',
      sessionIdHint: 'ab12…(32)',
      ipAddress: '203.0.113.1',
      port: 4172,
      tagFingerprint: 'f1:f2:40',
      learnedAt: now,
      tagExpiresAt: now + 60_000,
    });
    await eventually(() => server.cli('EXISTS', 'i10:alloc:sess-1.example') === '1', 2000, 'allocation written');
    expect(await b.replica.lookup({ kind: 'cookie', key: cookieKey })).toMatchObject({ kind: 'cookie', connectorId: 'conn-a' });
    expect(await b.replica.lookup({ kind: 'allocation', sni: 'sess-1.example' })).toMatchObject({ kind: 'allocation', connectorId: 'conn-c', port: 4172, clientAddress: '198.51.100.20' });
    const allocTtl = Number(server.cli('PTTL', 'i10:alloc:sess-1.example'));
    expect(allocTtl).toBeGreaterThan(55_000);
    expect(allocTtl).toBeLessThanOrEqual(60_000);
    // Claimed: it lives like a pin from now on.
    a.replica.publish({ kind: 'allocation-claimed', sni: 'sess-1.example', at: Date.now() });
    await eventually(() => Number(server.cli('PTTL', 'i10:alloc:sess-1.example')) > 70_000, 2000, 'claimed allocation refreshed');
  });

  it('a stored allocation never outlives its connect tag, however late it is written', async () => {
    const a = await replica('lb-a');
    const now = Date.now();
    const allocation = (sni: string, learnedAt: number, tagExpiresAt: number) =>
      a.replica.publish({ kind: 'allocation', sni, connectorId: 'conn-a', clientAddress: '198.51.100.21', sessionIdHint: 'cd34…(32)', ipAddress: undefined, port: undefined, tagFingerprint: 'f3:f4:40', learnedAt, tagExpiresAt });
    allocation('late.example', now - 50_000, now + 10_000); // learned 50 s ago, 10 s of its tag left
    allocation('expired.example', now - 70_000, now - 10_000);
    await eventually(() => server.cli('EXISTS', 'i10:alloc:late.example') === '1', 2000, 'allocation written');
    const ttl = Number(server.cli('PTTL', 'i10:alloc:late.example'));
    expect(ttl).toBeGreaterThan(5_000);
    expect(ttl).toBeLessThanOrEqual(10_000);
    expect(server.cli('EXISTS', 'i10:alloc:expired.example')).toBe('0');
  });

  it('a pin expires TTL + slack after its last flow, and lives on while the client has flows', async () => {
    // ttl 1 s → slack 1 s (the floor): stored PX 2 s, refreshed every ~0.5 s while flows are open.
    const a = await replica('lb-a', { ttlMs: 1000 });
    a.replica.publish(pin('198.51.100.30/32', 'conn-a'));
    a.replica.publish(pin('198.51.100.31/32', 'conn-b'));
    a.replica.publishLeases(new Map([['198.51.100.30/32', 1]]));
    await eventually(() => server.cli('EXISTS', 'i10:pin:198.51.100.31/32') === '1', 2000, 'pins written');
    await new Promise((r) => setTimeout(r, 2600));
    expect(server.cli('EXISTS', 'i10:pin:198.51.100.31/32')).toBe('0'); // no flows: gone after PX
    expect(server.cli('EXISTS', 'i10:pin:198.51.100.30/32')).toBe('1'); // flows open: kept alive
    a.replica.publishLeases(new Map([['198.51.100.30/32', -1]]));
    const closedAt = Date.now();
    await eventually(() => server.cli('EXISTS', 'i10:pin:198.51.100.30/32') === '0', 4000, 'pin expired after its last flow');
    expect(Date.now() - closedAt).toBeGreaterThanOrEqual(900); // at least the TTL after the last flow
    // About one refresh per slack/2 while flows were open, not one per flow.
    expect(a.replica.stats.writes).toBeLessThan(12);
  });

  it('garbage in the store is ignored, logged once per kind of source and counted, never used to route', async () => {
    const a = await replica('lb-a');
    const b = await replica('lb-b');
    server.cli('SET', 'i10:pin:198.51.100.40/32', 'not json at all');
    server.cli('SET', 'i10:pin:198.51.100.41/32', JSON.stringify({ connector: 'conn-evil', reason: 'repinned', at: 1, by: 'x' }));
    server.cli('SET', 'i10:pin:198.51.100.42/32', JSON.stringify({ connector: 'conn-a', reason: 'because', at: 'yesterday', by: 'x' }));
    server.cli('HSET', 'i10:pin:198.51.100.43/32', 'f', 'v'); // wrong type: GET answers WRONGTYPE
    server.cli('SET', 'i10:pin:198.51.100.44/32', 'x'.repeat(70_000));
    for (const key of ['198.51.100.40/32', '198.51.100.41/32', '198.51.100.42/32', '198.51.100.43/32', '198.51.100.44/32']) {
      expect(await a.replica.lookup({ kind: 'pin', key })).toBeUndefined();
    }
    expect(a.replica.stats.lookups.get('pin|invalid')).toBe(5);
    expect(a.replica.stats.invalid.get('lookup')).toBe(5);
    const warned = a.logs.lines.filter((l) => l.code === 'PLB_E_CLUSTER_VALUE');
    expect(warned).toHaveLength(1); // rate-limited: one line, the rest suppressed
    expect(warned[0]!.msg).toMatch(/not JSON/);
    // Hostile messages on the channel and garbage in the operator hash.
    server.cli('PUBLISH', 'i10:changes', '{"from":"lb-x","change":{"kind":"pin","key":"198.51.100.45/32","connectorId":"conn-evil","reason":"learned","at":1}}');
    server.cli('PUBLISH', 'i10:changes', '[1,2,3]');
    server.cli('HSET', 'i10:operator', 'conn-a', '{"state":"off","at":1,"by":"x"}', 'conn-nope', '{"state":"drain","at":1,"by":"x"}');
    await eventually(() => (b.replica.stats.invalid.get('message') ?? 0) === 2, 2000, 'bad messages counted');
    const c = await replica('lb-c');
    expect(c.replica.stats.invalid.get('operator')).toBe(2);
    for (const r of [a, b, c]) expect(r.remote.some((ch) => JSON.stringify(ch).includes('conn-evil') || JSON.stringify(ch).includes('conn-nope'))).toBe(false);
    // A placed pin over garbage replaces the garbage.
    a.replica.publish(pin('198.51.100.40/32', 'conn-a', 'placed'));
    await eventually(() => server.cli('GET', 'i10:pin:198.51.100.40/32').startsWith('{'), 2000, 'garbage replaced');
    expect(await b.replica.lookup({ kind: 'pin', key: '198.51.100.40/32' })).toMatchObject({ connectorId: 'conn-a' });
  });

  it('pins announced by other instances are not tracked here; a message whose key is not a client key is rejected and counted', async () => {
    const a = await replica('lb-a');
    const b = await replica('lb-b');
    // The keep-alive table is private state; its size is what this test is about.
    const tracked = (r: TestReplica) => (r.replica as unknown as { keepAlive: { size: number } }).keepAlive.size;
    const keys = Array.from({ length: 200 }, (_, i) => `203.0.113.${i}/32`);
    for (const key of keys) a.replica.publish(pin(key, 'conn-b'));
    await eventually(() => keys.every((k) => b.remote.some((c) => c.kind === 'pin' && c.key === k)), 3000, 'pins announced');
    expect(tracked(a)).toBe(200); // the writer keeps its own clients alive
    expect(tracked(b)).toBe(0); // b has no flows of theirs: nothing to keep alive
    // A client with flows on b too: tracked there, and another announcement of it adds nothing.
    b.replica.publishLeases(new Map([['203.0.113.7/32', 1]]));
    a.replica.publish(pin('203.0.113.7/32', 'conn-c'));
    await b.waitForRemote((c) => c.kind === 'pin' && c.key === '203.0.113.7/32' && c.connectorId === 'conn-c');
    expect(tracked(b)).toBe(1);
    // Hostile input on the channel: a pin whose key is not a client key is not used.
    server.cli('PUBLISH', 'i10:changes', JSON.stringify({ from: 'lb-x', change: { kind: 'pin', key: `x${'y'.repeat(150)}`, connectorId: 'conn-a', reason: 'repinned', at: 1 } }));
    await eventually(() => (b.replica.stats.invalid.get('message') ?? 0) === 1, 2000, 'bad key counted');
    expect(b.remote.some((c) => c.kind === 'pin' && c.key.startsWith('xy'))).toBe(false);
    expect(tracked(b)).toBe(1);
    expect(b.logs.lines.find((l) => l.code === 'PLB_E_CLUSTER_VALUE')?.msg).toMatch(/change\.key: not a client key/);
  });

  it('Redis killed and restarted: one line each way, the metric flips, look-ups answer at once, state is reconciled', async () => {
    const a = await replica('lb-a');
    const b = await replica('lb-b');
    const registry = new Registry();
    registerClusterMetrics(registry, a.replica.stats);
    const upMetric = async () => (await registry.getSingleMetricAsString('pcoip_lb_cluster_store_up')).trim().split('\n').pop();
    expect(await upMetric()).toBe('pcoip_lb_cluster_store_up 1');
    a.replica.publish(pin('198.51.100.50/32', 'conn-c'));
    await eventually(() => server.cli('EXISTS', 'i10:pin:198.51.100.50/32') === '1', 2000, 'pin written');

    await server.kill();
    await eventually(() => !a.replica.up, 3000, 'store seen down');
    expect(await upMetric()).toBe('pcoip_lb_cluster_store_up 0');
    const started = Date.now();
    expect(await a.replica.lookup({ kind: 'pin', key: '198.51.100.50/32' })).toBeUndefined();
    expect(Date.now() - started).toBeLessThan(20); // no waiting on a store that is away
    a.replica.publish(pin('198.51.100.51/32', 'conn-b')); // skipped; comes back through reconcile
    a.replica.publish({ kind: 'operator-state', connectorId: 'conn-c', state: 'drain', at: Date.now() }); // an operator drain while the store is away
    await new Promise((r) => setTimeout(r, 1500)); // several reconnect attempts
    expect(lines(a, 'cluster store')).toHaveLength(2); // "connected" + one "unreachable", whatever the retries

    // Local state is what reconciling re-publishes: the restarted (empty) store gets it back.
    a.local.push(pin('198.51.100.50/32', 'conn-c'), pin('198.51.100.51/32', 'conn-b'));
    b.local.push({ kind: 'operator-state', connectorId: 'conn-a', state: 'maint', at: Date.now() });
    await server.start();
    await eventually(() => a.replica.up && b.replica.up, 8000, 'both back');
    expect(await upMetric()).toBe('pcoip_lb_cluster_store_up 1');
    const back = lines(a, 'cluster store');
    expect(back).toHaveLength(3);
    expect(back[2]!.msg).toMatch(/back after/);
    expect(back[1]!.code).toBe('PLB_E_CLUSTER_STORE');
    await eventually(() => server.cli('EXISTS', 'i10:pin:198.51.100.51/32') === '1', 2000, 'pin re-published');
    expect(JSON.parse(server.cli('GET', 'i10:pin:198.51.100.50/32'))).toMatchObject({ connector: 'conn-c' });
    // Others' state is picked up: b's operator state reaches a (by reconcile or its message).
    await eventually(() => JSON.parse(server.cli('HGET', 'i10:operator', 'conn-a') || 'null')?.state === 'maint', 3000, 'operator state re-published');
    await a.waitForRemote((c) => c.kind === 'operator-state' && c.connectorId === 'conn-a' && c.state === 'maint', 3000);
    // a's drain made while the store was away is in the cluster now, and reached b.
    expect(JSON.parse(server.cli('HGET', 'i10:operator', 'conn-c'))).toMatchObject({ state: 'drain', by: 'lb-a' });
    await b.waitForRemote((c) => c.kind === 'operator-state' && c.connectorId === 'conn-c' && c.state === 'drain', 3000);
  });

  it('reconciling: the newer of local and stored wins, except that a local placed pin never beats a stored one', async () => {
    const t = Date.now();
    const stored = (key: string, connector: string, at: number) =>
      server.cli('SET', `i10:pin:${key}`, JSON.stringify({ connector, reason: 'repinned', at, by: 'lb-x' }), 'PX', '60000');
    stored('198.51.100.55/32', 'conn-a', t - 1000); // older than local: local wins
    stored('198.51.100.56/32', 'conn-a', t + 1000); // newer than local: adopted
    stored('198.51.100.57/32', 'conn-a', t - 1000); // local is only placed: adopted although newer
    const a = await startReplica(server.url, 'lb-a', { waitUp: false });
    open.push(a);
    a.local.push(pin('198.51.100.55/32', 'conn-b', 'repinned', t), pin('198.51.100.56/32', 'conn-b', 'repinned', t), pin('198.51.100.57/32', 'conn-b', 'placed', t), pin('198.51.100.58/32', 'conn-c', 'placed', t));
    expect(await a.replica.whenUp(5000)).toBe(true);
    const connectorOf = (key: string) => (JSON.parse(server.cli('GET', `i10:pin:${key}`)) as { connector: string }).connector;
    expect(['198.51.100.55/32', '198.51.100.56/32', '198.51.100.57/32', '198.51.100.58/32'].map(connectorOf)).toEqual(['conn-b', 'conn-a', 'conn-a', 'conn-c']);
    expect(a.remote.filter((c) => c.kind === 'pin').map((c) => (c as PinRecord).key).sort()).toEqual(['198.51.100.56/32', '198.51.100.57/32']);
    expect(a.logs.lines.find((l) => /connected as instance lb-a/.test(String(l.msg)))?.reconciled).toMatchObject({ written: 2, adopted: 2 });
  });

  it('pins, sessions and operator changes made while reconciling are written once it is done, not skipped', async () => {
    const a = await startReplica(server.url, 'lb-a', { waitUp: false });
    open.push(a);
    // A large local state: reconciling it takes many pipelines, the window in which new clients arrive.
    for (let i = 0; i < 20_000; i++) a.local.push(pin(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}/32`, 'conn-a'));
    await eventually(() => a.replica.stats.reconciles >= 1, 5000, 'reconcile started', 1);
    expect(a.replica.up).toBe(false);
    a.replica.publish(pin('198.51.100.200/32', 'conn-b', 'placed'));
    a.replica.publish(pin('198.51.100.201/32', 'conn-c', 'repinned'));
    a.replica.publish({ kind: 'cookie', key: sessionKeyDigest('JSESSIONID=i10-window'), connectorId: 'conn-c', at: Date.now() });
    a.replica.publish({ kind: 'operator-state', connectorId: 'conn-b', state: 'drain', at: Date.now() });
    expect(a.replica.up).toBe(false); // all made inside the window
    expect(await a.replica.whenUp(20_000)).toBe(true);
    await eventually(() => server.cli('EXISTS', 'i10:pin:198.51.100.201/32') === '1', 2000, 're-pin made while reconciling written');
    expect(JSON.parse(server.cli('GET', 'i10:pin:198.51.100.200/32'))).toMatchObject({ connector: 'conn-b', reason: 'placed', by: 'lb-a' });
    expect(JSON.parse(server.cli('GET', 'i10:pin:198.51.100.201/32'))).toMatchObject({ connector: 'conn-c', reason: 'repinned' });
    expect(JSON.parse(server.cli('GET', `i10:cookie:${sessionKeyDigest('JSESSIONID=i10-window')}`))).toMatchObject({ connector: 'conn-c' });
    expect(JSON.parse(server.cli('HGET', 'i10:operator', 'conn-b'))).toMatchObject({ state: 'drain', by: 'lb-a' });
    expect(a.replica.stats.writesSkipped).toBe(0);
    expect(server.cli('EXISTS', 'i10:pin:10.0.78.31/32')).toBe('1'); // and the reconciled state itself
  }, 30_000);

  it('a store that stops answering (SIGSTOP): look-ups time out within the bound and are counted; then down; back when it answers', async () => {
    const a = await replica('lb-a');
    server.pause();
    try {
      const started = Date.now();
      expect(await a.replica.lookup({ kind: 'pin', key: '198.51.100.60/32' })).toBeUndefined();
      const took = Date.now() - started;
      expect(took).toBeGreaterThanOrEqual(90);
      expect(took).toBeLessThan(400);
      expect(a.replica.stats.lookupTimeouts).toBe(1);
      expect(lines(a, 'cluster store look-ups take longer')).toHaveLength(1);
      await a.replica.lookup({ kind: 'pin', key: '198.51.100.61/32' });
      expect(lines(a, 'cluster store look-ups take longer')).toHaveLength(1); // one line per state change
      // No heartbeat answer for 3 heartbeats (≥ connect timeout): the store counts as down.
      await eventually(() => !a.replica.up, 3000, 'store seen down');
      expect(a.logs.lines.some((l) => /unreachable \(no answer for/.test(String(l.msg)))).toBe(true);
    } finally {
      server.resume();
    }
    await eventually(() => a.replica.up, 5000, 'store back');
    expect(lines(a, 'cluster store').filter((l) => /back after/.test(String(l.msg)))).toHaveLength(1);
  });

  it('an instance started while the store is down connects once it is there', async () => {
    await server.kill();
    const a = await startReplica(server.url, 'lb-a', { waitUp: false });
    open.push(a);
    await new Promise((r) => setTimeout(r, 500));
    expect(a.replica.up).toBe(false);
    expect(lines(a, 'cluster store')).toHaveLength(1);
    expect(lines(a, 'cluster store')[0]!.msg).toMatch(/unreachable at start/);
    await server.start();
    expect(await a.replica.whenUp(8000)).toBe(true);
    expect(lines(a, 'cluster store')).toHaveLength(2);
  });

  it('heartbeats list every live instance and where their views of the Connectors disagree', async () => {
    const a = await replica('lb-a');
    const b = await replica('lb-b');
    b.self.connectors[1] = { id: 'conn-b', health: 'down', state: 'active', reason: 'broker /health: HTTP 500' };
    b.self.connectors[2] = { id: 'conn-c', health: 'up', state: 'drain', reason: '' };
    await eventually(() => {
      const view = a.replica.clusterStatus();
      return view.instances.length === 2 && view.disagreements.length === 2;
    }, 3000, 'both instances in the view');
    const view = a.replica.clusterStatus();
    expect(view.instances.map((i) => [i.id, i.self])).toEqual([['lb-a', true], ['lb-b', false]]);
    expect(view.disagreements).toEqual([
      { connector: 'conn-b', field: 'health', values: { 'lb-a': 'up', 'lb-b': 'down (broker /health: HTTP 500)' } },
      { connector: 'conn-c', field: 'state', values: { 'lb-a': 'active', 'lb-b': 'drain' } },
    ]);
    expect(a.replica.stats.instances).toBe(2);
    // An instance that leaves (close) is gone from the view at once; one that dies, after 3 heartbeats.
    await b.replica.close();
    await eventually(() => a.replica.clusterStatus().instances.length === 1, 2000, 'lb-b gone');
  });

  it('lookups are timed into the histogram', async () => {
    const a = await replica('lb-a');
    const registry = new Registry();
    registerClusterMetrics(registry, a.replica.stats);
    for (let i = 0; i < 5; i++) await a.replica.lookup({ kind: 'pin', key: `198.51.100.7${i}/32` });
    const text = await registry.metrics();
    expect(text).toMatch(/pcoip_lb_cluster_lookup_duration_seconds_count\{kind="pin"\} 5/);
    expect(text).toMatch(/pcoip_lb_cluster_lookups_total\{kind="pin",result="miss"\} 5/);
    expect(text).toMatch(/pcoip_lb_cluster_lookup_timeouts_total 0/);
  });
});

describe('RedisReplica authentication and TLS', () => {
  const servers: RedisServer[] = [];
  const replicas: TestReplica[] = [];
  afterEach(async () => {
    await Promise.all(replicas.splice(0).map((r) => r.replica.close()));
    await Promise.all(servers.splice(0).map((s) => s.cleanup()));
  });

  it('password from an environment variable (requirepass) and an ACL user from a file; a wrong one is logged without the secret', async () => {
    const secret = 'i10-s3cret-passw0rd';
    // The ACL user has only the commands docs/ha.md lists, on its own key prefix and channel.
    const minimal = '-@all +get +set +pexpire +pttl +del +hset +hgetall +publish +subscribe +sadd +srem +srandmember +mget +eval +type +ping +client|setname'.split(' ');
    const server = new RedisServer({ args: ['--requirepass', secret, '--user', 'plb', 'on', '>acl-pass-i10', '~i10:*', '&i10:*', ...minimal] });
    servers.push(server);
    await server.start();
    const a = await startReplica(server.url, 'lb-a', { cluster: { redis: { url: server.url, password: { env: 'I10_REDIS_PASS' } } }, env: { I10_REDIS_PASS: secret } });
    replicas.push(a);
    a.replica.publish(pin('198.51.100.80/32', 'conn-a'));
    await eventually(async () => (await a.replica.lookup({ kind: 'pin', key: '198.51.100.80/32' })) !== undefined, 2000, 'pin via password');

    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const dir = mkdtempSync(`${server.dir}/pw-`);
    writeFileSync(`${dir}/pass`, 'acl-pass-i10\n');
    const b = await startReplica(server.url, 'lb-b', { cluster: { redis: { url: server.url.replace('redis://', 'redis://plb@'), password: { file: `${dir}/pass` } } } });
    replicas.push(b);
    expect(await b.replica.lookup({ kind: 'pin', key: '198.51.100.80/32' })).toMatchObject({ connectorId: 'conn-a' });
    expect(b.replica.storeUrl).toBe(`redis://plb@127.0.0.1:${server.port}`);
    // Everything the replica does works under the minimal ACL: heartbeats, operator state, pub/sub.
    b.replica.publish({ kind: 'operator-state', connectorId: 'conn-a', state: 'drain', at: Date.now() });
    await a.waitForRemote((c) => c.kind === 'operator-state' && c.state === 'drain');
    await eventually(() => b.replica.clusterStatus().instances.length === 2, 3000, 'both heartbeats seen under the ACL');
    expect(b.replica.stats.failedBatches).toBe(0);
    expect(b.replica.stats.writesRefused).toBe(0);
    expect(JSON.parse(server.cli('-a', secret, 'HGET', 'i10:operator', 'conn-a'))).toMatchObject({ state: 'drain', by: 'lb-b' });
    expect(server.cli('-a', secret, 'EXISTS', 'i10:instance:lb-b')).toBe('1');
    expect(b.logs.lines.filter((l) => l.code === 'PLB_E_CLUSTER_STORE').map((l) => l.msg)).toEqual([]);
    // An ACL without SET: the store refuses, the replica says so (once) and counts it.
    server.cli('-a', secret, 'ACL', 'SETUSER', 'plb', '-set');
    b.replica.publish(pin('198.51.100.81/32', 'conn-b'));
    await b.logs.waitFor((l) => /refused 1 write/.test(String(l.msg)), 3000);
    expect(b.replica.stats.writesRefused).toBeGreaterThanOrEqual(1);

    const wrong = await startReplica(server.url, 'lb-c', { waitUp: false, cluster: { redis: { url: server.url, password: { env: 'P' } } }, env: { P: 'wrong-password-i10' } });
    replicas.push(wrong);
    await wrong.logs.waitFor((l) => l.code === 'PLB_E_CLUSTER_STORE', 3000);
    expect(wrong.replica.up).toBe(false);
    for (const r of [a, b, wrong]) {
      const text = JSON.stringify(r.logs.lines);
      expect(text).not.toContain(secret);
      expect(text).not.toContain('acl-pass-i10');
      expect(text).not.toContain('wrong-password-i10');
    }
  });

  it('rediss:// verifies the server against tls.ca', async () => {
    const { certDir, makeCert } = await import('../helpers/tls-fixtures.ts');
    const certs = await certDir();
    try {
      const cert = await makeCert(certs.dir, 'redis', ['localhost'], ['127.0.0.1']);
      const server = new RedisServer({ tls: true, args: ['--tls-cert-file', cert.certPath, '--tls-key-file', cert.keyPath, '--tls-auth-clients', 'no'] });
      servers.push(server);
      await server.start();
      const a = await startReplica(server.url, 'lb-a', { cluster: { redis: { url: server.url, tls: { ca: cert.certPath } } } });
      replicas.push(a);
      a.replica.publish(pin('198.51.100.90/32', 'conn-b'));
      await eventually(async () => (await a.replica.lookup({ kind: 'pin', key: '198.51.100.90/32' })) !== undefined, 2000, 'pin over TLS');
      // Without the CA the server's self-signed certificate is refused.
      const b = await startReplica(server.url, 'lb-b', { waitUp: false, cluster: { redis: { url: server.url } } });
      replicas.push(b);
      await b.logs.waitFor((l) => l.code === 'PLB_E_CLUSTER_STORE', 3000);
      expect(b.replica.up).toBe(false);
    } finally {
      await certs.cleanup();
    }
  });
});

