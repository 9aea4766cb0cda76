import { describe, expect, it } from 'vitest';
import { Pool } from '../../src/pool/pool.ts';
import { AffinityTable } from '../../src/balance/affinity.ts';
import { Placer } from '../../src/balance/placer.ts';
import type { ConnectorConfig, ConnectorState } from '../../src/config/schema.ts';

const TTL = 60_000;

function connector(id: string, state: ConnectorState = 'active', weight = 1): ConnectorConfig {
  return { id, address: `127.0.1.${id.charCodeAt(id.length - 1) % 200}`, ports: { broker: 443, pcoip: 4172 }, weight, state };
}

function setup(connectors = [connector('a'), connector('b'), connector('c')]) {
  const pool = new Pool(connectors);
  const placer = new Placer(pool, TTL, { algorithm: 'maglev', tableSize: 1009, ipv4Prefix: 32, ipv6Prefix: 64 });
  return { pool, affinity: placer.affinity, placer };
}

function decideId(placer: Placer, address: string, now = 0): string | undefined {
  const d = placer.decide(address, now);
  return d.ok ? d.connector.id : undefined;
}

/** A client address whose consistent-hash choice (with all Connectors eligible) is `id`. */
function clientPlacedOn(placer: Placer, id: string): string {
  for (let i = 1; i < 255; i++) {
    const address = `198.51.100.${i}`;
    if (placer.pickNew(placer.keyFor(address)) === id) return address;
  }
  throw new Error(`no client hashes to ${id}`);
}

describe('Placer', () => {
  it('places a new client by consistent hashing and pins it', () => {
    const { placer, affinity } = setup();
    const d = placer.decide('198.51.100.1', 0);
    expect(d).toMatchObject({ ok: true, reason: 'placed' });
    expect(affinity.get('198.51.100.1/32', 0)?.connectorId).toBe(d.ok ? d.connector.id : 'none');
    expect(placer.decide('198.51.100.1', 10)).toMatchObject({ ok: true, reason: 'pinned' });
  });

  it('keeps a pinned client on its Connector when consistent hashing would now say otherwise', () => {
    const { placer, pool } = setup([connector('a'), connector('b')]);
    const client = clientPlacedOn(placer, 'a');
    expect(decideId(placer, client)).toBe('a');
    // A new Connector changes the hash table; the pinned client must not move.
    pool.replaceConfig([connector('a'), connector('b'), connector('c'), connector('d'), connector('e')]);
    for (let i = 0; i < 5; i++) expect(decideId(placer, client, i)).toBe('a');
  });

  it.each<[string, (pool: Pool) => void, string | 'moves']>([
    ['drain: pinned client stays', (pool) => pool.setState('a', 'drain'), 'a'],
    ['maint: pinned client is re-placed', (pool) => pool.setState('a', 'maint'), 'moves'],
    ['down: pinned client is re-placed', (pool) => pool.setHealth('a', 'down', 'test'), 'moves'],
    ['removed from config: pinned client is re-placed', (pool) => pool.replaceConfig([connector('b'), connector('c')]), 'moves'],
    ['weight change: pinned client stays', (pool) => pool.replaceConfig([connector('a', 'active', 5), connector('b'), connector('c')]), 'a'],
  ])('%s', (_name, change, expected) => {
    const { placer, affinity, pool } = setup();
    const client = clientPlacedOn(placer, 'a');
    expect(decideId(placer, client)).toBe('a');
    change(pool);
    const d = placer.decide(client, 1);
    expect(d.ok).toBe(true);
    if (!d.ok) return;
    if (expected === 'moves') {
      expect(d.connector.id).not.toBe('a');
      expect(d.reason).toBe('repinned');
      expect(affinity.get(placer.keyFor(client), 1)?.connectorId).toBe(d.connector.id);
    } else {
      expect(d).toMatchObject({ reason: 'pinned', connector: { id: expected } });
    }
  });

  it('sends no new client to a draining Connector', () => {
    const { placer, pool } = setup();
    pool.setState('b', 'drain');
    for (let i = 1; i <= 200; i++) expect(decideId(placer, `203.0.113.${i}`)).not.toBe('b');
  });

  it('refuses when no Connector may take new clients', () => {
    const { placer, pool } = setup([connector('a'), connector('b')]);
    pool.setState('a', 'maint');
    pool.setHealth('b', 'down', 'broker check failed');
    expect(placer.decide('203.0.113.9', 0)).toEqual({ ok: false, clientKey: '203.0.113.9/32', reason: 'no-eligible-connector' });
  });

  it('places around Connectors to avoid, and re-pins there', () => {
    const { placer, affinity } = setup();
    const client = clientPlacedOn(placer, 'a');
    const d = placer.decide(client, 0, new Set(['a']));
    expect(d.ok && d.connector.id).not.toBe('a');
    expect(affinity.get(placer.keyFor(client), 0)?.connectorId).toBe(d.ok ? d.connector.id : 'none');
  });

  it('groups an IPv6 /64 into one client', () => {
    const { placer } = setup();
    const first = decideId(placer, '2001:db8:5:6::1');
    for (const address of ['2001:db8:5:6::2', '2001:db8:5:6::abcd:1', '2001:db8:5:6:ffff:ffff:ffff:ffff']) {
      expect(decideId(placer, address)).toBe(first);
    }
  });
});

describe('AffinityTable', () => {
  it('keeps an entry while it has flows and for the TTL after the last one ends', () => {
    const table = new AffinityTable(TTL);
    table.pin('k', 'a', 0, 'placed');
    table.flowOpened('k', 0);
    table.flowOpened('k', 5);
    expect(table.sweep(10 * TTL)).toBe(0); // flows open: never expires
    table.flowClosed('k', 10 * TTL);
    table.flowClosed('k', 10 * TTL + 100);
    expect(table.get('k', 11 * TTL + 100)?.connectorId).toBe('a');
    expect(table.get('k', 11 * TTL + 101)).toBeUndefined();
    expect(table.size).toBe(0);
  });

  it('sweeps only expired entries', () => {
    const table = new AffinityTable(TTL);
    table.pin('old', 'a', 0, 'placed');
    table.pin('new', 'b', TTL, 'placed');
    table.pin('busy', 'c', 0, 'placed');
    table.flowOpened('busy', 0);
    expect(table.sweep(TTL + 1)).toBe(1);
    expect([...table.all()].map((e) => e.clientKey).sort()).toEqual(['busy', 'new']);
  });

  it('re-pinning keeps the flow count', () => {
    const table = new AffinityTable(TTL);
    table.pin('k', 'a', 0, 'placed');
    table.flowOpened('k', 0);
    table.pin('k', 'b', 1, 'repinned');
    expect(table.get('k', 2)).toMatchObject({ connectorId: 'b', flows: 1, reason: 'repinned' });
  });
});

describe('Placer as the owner of pins and leases', () => {
  it('each decision holds a lease; the pin lives while any is held and for the TTL after the last release; a second release is a no-op', () => {
    const { placer } = setup();
    const d1 = placer.decide('198.51.100.40', 0);
    const d2 = placer.decide('198.51.100.40', 1);
    if (!d1.ok || !d2.ok) throw new Error('no decision');
    expect(placer.entry('198.51.100.40/32', 10 * TTL)?.flows).toBe(2);
    d1.lease.release(10 * TTL);
    d1.lease.release(10 * TTL);
    expect(placer.entry('198.51.100.40/32', 10 * TTL)?.flows).toBe(1);
    d2.lease.release(10 * TTL + 5);
    expect(placer.entry('198.51.100.40/32', 11 * TTL + 5)?.connectorId).toBe(d1.connector.id);
    expect(placer.entry('198.51.100.40/32', 11 * TTL + 6)).toBeUndefined();
  });

  it('a lease taken before the client has a pin (a flow placed by its session) is counted on the client: its release does not take a later flow\'s count', () => {
    const { placer } = setup();
    const early = placer.decideOn('198.51.100.41', 'a', 0); // no pin yet: placed by its own session
    const later = placer.decide('198.51.100.41', 1); // creates the pin while the first flow is open
    if (!early.ok || !later.ok) throw new Error('no decision');
    expect(placer.entry('198.51.100.41/32', 2)?.flows).toBe(2);
    early.lease.release(3);
    expect(placer.entry('198.51.100.41/32', 3)?.flows).toBe(1);
    // The pin outlives the TTL while the later flow is open.
    expect(placer.entry('198.51.100.41/32', 10 * TTL)?.connectorId).toBe(later.connector.id);
    later.lease.release(10 * TTL);
    expect(placer.entry('198.51.100.41/32', 11 * TTL + 1)).toBeUndefined();
  });

  it('flows still open when their pin is dropped (Connector left the config) keep a new pin of the client alive', () => {
    const { placer, pool } = setup();
    const d = placer.decide('198.51.100.42', 0);
    if (!d.ok) throw new Error('no decision');
    placer.forgetConnector(d.connector.id, 1);
    const again = placer.decide('198.51.100.42', 2);
    if (!again.ok) throw new Error('no decision');
    d.lease.release(3);
    expect(placer.entry('198.51.100.42/32', 4)?.flows).toBe(1);
    expect(pool.get(again.connector.id)).toBeDefined();
    again.lease.release(5);
    expect(placer.entry('198.51.100.42/32', 6)?.flows).toBe(0);
  });

  it('announces every pin write with where it came from and where the client was', () => {
    const { placer, pool } = setup();
    const changes: Array<Record<string, unknown>> = [];
    placer.onPinChange((c) => changes.push({ from: c.from, to: c.to, reason: c.reason, origin: c.origin }));
    const client = clientPlacedOn(placer, 'a');
    placer.decide(client, 0);
    placer.decide(client, 1); // pinned: no write
    pool.setState('a', 'maint');
    placer.decide(client, 2);
    placer.learn(client, 'c', 3);
    placer.applyPin(placer.keyFor(client), 'b', 'learned', 4, 'remote');
    placer.forgetConnector('b', 5);
    expect(changes).toEqual([
      { from: undefined, to: 'a', reason: 'placed', origin: 'local' },
      { from: 'a', to: expect.stringMatching(/^[bc]$/), reason: 'repinned', origin: 'local' },
      { from: expect.stringMatching(/^[bc]$/), to: 'c', reason: 'learned', origin: 'local' },
      { from: 'c', to: 'b', reason: 'learned', origin: 'remote' },
      { from: 'b', to: undefined, reason: 'removed', origin: 'local' },
    ]);
  });

  it('keeps lease deltas only once a replica asked for them, and hands them over once', () => {
    const { placer } = setup();
    placer.decide('198.51.100.41', 0);
    expect(placer.takeLeaseDeltas().size).toBe(0);
    placer.trackLeaseDeltas();
    const d = placer.decide('198.51.100.42', 0);
    placer.decide('198.51.100.42', 0);
    if (d.ok) d.lease.release(1);
    expect([...placer.takeLeaseDeltas()]).toEqual([['198.51.100.42/32', 1]]);
    expect(placer.takeLeaseDeltas().size).toBe(0);
  });
});
