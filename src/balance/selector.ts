import { hash32 } from './hash.ts';

/** What a selector needs to know of a Connector: its identity and its share. */
export interface WeightedMember {
  id: string;
  weight: number;
}

/** Picks a member for a key; the same members and key always give the same answer. */
export interface Selector {
  pick(key: string): string | undefined;
}

const SEED_OFFSET = 0x9e3779b9;
const SEED_SKIP = 0x7f4a7c15;
const SEED_KEY = 0x2545f491;

/**
 * Weighted Maglev (Eisenbud et al., NSDI 2016). Each member walks its own permutation of the
 * table and claims free slots; a member of weight w gets w/maxWeight turns per round, so its
 * share of slots is proportional to its weight. Members are sorted by id first so that the
 * table does not depend on config order, only on the set of (id, weight).
 */
export class MaglevSelector implements Selector {
  readonly table: Int32Array;
  private readonly ids: string[];

  constructor(members: readonly WeightedMember[], tableSize: number) {
    const sorted = [...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    this.ids = sorted.map((m) => m.id);
    this.table = new Int32Array(tableSize).fill(-1);
    if (sorted.length === 0) return;
    const size = tableSize;
    const maxWeight = Math.max(...sorted.map((m) => m.weight));
    const position = sorted.map((m) => hash32(m.id, SEED_OFFSET) % size);
    const skip = sorted.map((m) => (hash32(m.id, SEED_SKIP) % (size - 1)) + 1);
    const credit = sorted.map(() => 0);
    let filled = 0;
    while (filled < size) {
      for (let i = 0; i < sorted.length && filled < size; i++) {
        credit[i]! += sorted[i]!.weight / maxWeight;
        if (credit[i]! < 1) continue;
        credit[i]! -= 1;
        let slot = position[i]!;
        while (this.table[slot] !== -1) slot = (slot + skip[i]!) % size;
        this.table[slot] = i;
        position[i] = (slot + skip[i]!) % size;
        filled++;
      }
    }
  }

  pick(key: string): string | undefined {
    if (this.ids.length === 0) return undefined;
    return this.ids[this.table[hash32(key, SEED_KEY) % this.table.length]!];
  }
}

/**
 * Weighted rendezvous (highest random weight): score = -w / ln(u), u uniform in (0,1) from
 * hash(key, member). No table to build; O(members) per pick, which is fine for new clients only.
 */
export class RendezvousSelector implements Selector {
  private readonly members: readonly WeightedMember[];

  constructor(members: readonly WeightedMember[]) {
    this.members = [...members];
  }

  pick(key: string): string | undefined {
    let best: string | undefined;
    let bestScore = -Infinity;
    for (const m of this.members) {
      const u = (hash32(`${m.id}\u0000${key}`, SEED_KEY) + 0.5) / 4294967296;
      const score = -m.weight / Math.log(u);
      if (score > bestScore || (score === bestScore && best !== undefined && m.id < best)) {
        bestScore = score;
        best = m.id;
      }
    }
    return best;
  }
}
