import { describe, expect, it } from 'vitest';
import { AddressPortTable } from '../../src/proxy/address-port-table.ts';

describe('AddressPortTable', () => {
  it('keys by address and port, counts, and forgets an address once its last port is gone', () => {
    const t = new AddressPortTable<string>();
    t.set('127.0.0.1', 1, 'a');
    t.set('127.0.0.1', 2, 'b');
    t.set('::1', 1, 'c');
    t.set('127.0.0.1', 1, 'a2');
    expect(t.size).toBe(3);
    expect([t.get('127.0.0.1', 1), t.get('127.0.0.1', 2), t.get('::1', 1), t.get('::1', 2)]).toEqual(['a2', 'b', 'c', undefined]);
    expect(t.delete('127.0.0.1', 1)).toBe(true);
    expect(t.delete('127.0.0.1', 1)).toBe(false);
    expect(t.has('127.0.0.1', 2)).toBe(true);
    expect(t.size).toBe(2);
    t.delete('127.0.0.1', 2);
    expect([...t.values()]).toEqual(['c']);
  });

  it('allows deleting while iterating', () => {
    const t = new AddressPortTable<number>();
    for (let i = 0; i < 10; i++) t.set(`192.0.2.${i % 3}`, i, i);
    const seen: number[] = [];
    for (const v of t.values()) {
      seen.push(v);
      t.delete(`192.0.2.${v % 3}`, v);
    }
    expect(seen.sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(t.size).toBe(0);
  });
});
