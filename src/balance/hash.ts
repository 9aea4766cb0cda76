/**
 * A small, fast, deterministic 32-bit string hash (FNV-1a over UTF-16 code units, then the
 * murmur3 finaliser for avalanche). Deterministic across processes and machines, which is what
 * lets separate workers and separate proxy instances place a client identically.
 * Not cryptographic: clients cannot pick their own source address freely enough for that to matter,
 * and a determined skew only moves them between healthy Connectors.
 */
export function hash32(text: string, seed = 0): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return fmix32(h);
}

export function fmix32(input: number): number {
  let h = input >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
