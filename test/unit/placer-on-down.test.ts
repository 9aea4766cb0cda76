import { describe, expect, it } from 'vitest';
import { Pool } from '../../src/pool/pool.ts';
import { Placer } from '../../src/balance/placer.ts';
import type { ConnectorConfig } from '../../src/config/schema.ts';

const connectors: ConnectorConfig[] = ['a', 'b', 'c'].map((id, i) => ({ id, address: `192.0.2.${i + 1}`, ports: { broker: 443, pcoip: 4172 }, weight: 1, state: 'active' }));

function setup(onDown: 'repin' | 'keep') {
  const pool = new Pool(connectors);
  const placer = new Placer(pool, 60_000, { algorithm: 'rendezvous', tableSize: 65537, ipv4Prefix: 32, ipv6Prefix: 64, onDown });
  const first = placer.decide('192.0.2.7', 0);
  if (!first.ok) throw new Error('first placement failed');
  return { pool, placer, home: first.connector.id };
}

describe('Placer onDown', () => {
  it('repin (default): a pinned client of a down Connector is moved to another one', () => {
    const { pool, placer, home } = setup('repin');
    pool.setHealth(home, 'down', 'test');
    const d = placer.decide('192.0.2.7', 1);
    expect(d.ok && d.connector.id !== home && d.reason).toBe('repinned');
  });

  it('keep: a pinned client of a down Connector is refused, and returns home when it is up again', () => {
    const { pool, placer, home } = setup('keep');
    pool.setHealth(home, 'down', 'test');
    expect(placer.decide('192.0.2.7', 1)).toEqual({ ok: false, clientKey: '192.0.2.7/32', reason: 'pinned-connector-down' });
    pool.setHealth(home, 'up');
    const back = placer.decide('192.0.2.7', 2);
    expect(back.ok && back.connector.id).toBe(home);
    expect(back.reason).toBe('pinned');
  });

  it('keep still repins off a Connector in maint (the operator took it out)', () => {
    const { pool, placer, home } = setup('keep');
    pool.setState(home, 'maint');
    const d = placer.decide('192.0.2.7', 1);
    expect(d.ok && d.connector.id !== home).toBe(true);
  });

  it('keep does not affect new clients: they are placed on up Connectors', () => {
    const { pool, placer, home } = setup('keep');
    pool.setHealth(home, 'down', 'test');
    for (let i = 1; i <= 20; i++) {
      const d = placer.decide(`198.51.100.${i}`, 1);
      expect(d.ok && d.connector.id !== home).toBe(true);
    }
  });

  it('counts decisions by reason and Connector', () => {
    const { placer, home } = setup('repin');
    placer.decide('192.0.2.7', 1);
    expect(placer.decisionCounts.get(`placed|${home}`)).toBe(1);
    expect(placer.decisionCounts.get(`pinned|${home}`)).toBe(1);
  });
});
