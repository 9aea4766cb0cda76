import { describe, expect, it } from 'vitest';
import { MaglevSelector, RendezvousSelector, type Selector, type WeightedMember } from '../../src/balance/selector.ts';

const KEYS = Array.from({ length: 10_000 }, (_, i) => `198.18.${(i >> 8) & 255}.${i & 255}/32`);

function spread(selector: Selector): Map<string, number> {
  const counts = new Map<string, number>();
  for (const key of KEYS) {
    const id = selector.pick(key)!;
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

const makers: Array<[string, (m: WeightedMember[]) => Selector]> = [
  ['maglev', (m) => new MaglevSelector(m, 65_537)],
  ['rendezvous', (m) => new RendezvousSelector(m)],
];

const pools: Array<[string, WeightedMember[]]> = [
  ['3 equal', [{ id: 'a', weight: 1 }, { id: 'b', weight: 1 }, { id: 'c', weight: 1 }]],
  ['weights 1:2:3', [{ id: 'a', weight: 1 }, { id: 'b', weight: 2 }, { id: 'c', weight: 3 }]],
  ['10 equal', Array.from({ length: 10 }, (_, i) => ({ id: `conn-${i}`, weight: 1 }))],
  ['5 mixed', [{ id: 'w1', weight: 1 }, { id: 'w4', weight: 4 }, { id: 'w2', weight: 2 }, { id: 'w1b', weight: 1 }, { id: 'w3', weight: 3 }]],
];

describe.each(makers)('%s selection', (_name, make) => {
  it.each(pools)('spreads 10 000 keys within ±10 %% of weights (%s)', (_pool, members) => {
    const counts = spread(make(members));
    const total = members.reduce((s, m) => s + m.weight, 0);
    for (const m of members) {
      const expected = (KEYS.length * m.weight) / total;
      const got = counts.get(m.id) ?? 0;
      expect(Math.abs(got - expected) / expected, `${m.id}: ${got} vs ${expected.toFixed(0)}`).toBeLessThanOrEqual(0.1);
    }
  });

  it.each([3, 5, 10])('removing one of %i Connectors moves only its own clients', (n) => {
    const members = Array.from({ length: n }, (_, i) => ({ id: `conn-${i}`, weight: 1 }));
    const before = make(members);
    const removed = 'conn-1';
    const after = make(members.filter((m) => m.id !== removed));
    let moved = 0;
    let movedForeign = 0;
    for (const key of KEYS) {
      const was = before.pick(key);
      const now = after.pick(key);
      if (was !== now) {
        moved++;
        if (was !== removed) movedForeign++;
      }
    }
    // Clients of the removed Connector must move (≈ 1/N of all); Maglev allows a sliver of
    // collateral movement (the paper's "minimal disruption"), rendezvous none.
    expect(moved / KEYS.length).toBeGreaterThan((1 / n) * 0.85);
    expect(moved / KEYS.length).toBeLessThan((1 / n) * 1.15 + 0.01);
    expect(movedForeign / KEYS.length).toBeLessThan(0.01);
  });

  it('two independent instances (any member order) decide identically', () => {
    const members = [{ id: 'a', weight: 2 }, { id: 'b', weight: 1 }, { id: 'c', weight: 3 }, { id: 'd', weight: 1 }];
    const one = make(members);
    const two = make([...members].reverse());
    for (const key of KEYS) expect(two.pick(key)).toBe(one.pick(key));
  });

  it('returns undefined with no members and the sole member when there is one', () => {
    expect(make([]).pick('192.0.2.4/32')).toBeUndefined();
    expect(make([{ id: 'only', weight: 5 }]).pick('192.0.2.4/32')).toBe('only');
  });
});

describe('maglev table', () => {
  it('fills every slot, in proportion to weight', () => {
    const selector = new MaglevSelector([{ id: 'a', weight: 1 }, { id: 'b', weight: 3 }], 1009);
    expect(selector.table.includes(-1)).toBe(false);
    const counts = [0, 0];
    for (const slot of selector.table) counts[slot]!++;
    expect(counts[1]! / counts[0]!).toBeGreaterThan(2.7);
    expect(counts[1]! / counts[0]!).toBeLessThan(3.3);
  });
});
