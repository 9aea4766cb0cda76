import { isIP } from 'node:net';

/**
 * Turns a client address into its affinity key: IPv4 masked to ipv4Prefix bits, IPv6 to
 * ipv6Prefix bits (a /64 is one customer site by convention). IPv4-mapped IPv6 addresses are
 * treated as IPv4 so a dual-stack listener and a v4 listener agree on the same client.
 * Pure string/number work (node:net's isIP is pure too), table-testable.
 */
export interface PrefixOptions {
  ipv4Prefix: number;
  ipv6Prefix: number;
}

export function clientKey(address: string, prefixes: PrefixOptions): string {
  const addr = address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
  const v4 = parseIpv4(addr);
  if (v4 !== undefined) {
    const bits = prefixes.ipv4Prefix;
    const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    const masked = (v4 & mask) >>> 0;
    return `${[24, 16, 8, 0].map((s) => (masked >>> s) & 0xff).join('.')}/${bits}`;
  }
  const v6 = parseIpv6(addr);
  if (v6 !== undefined) {
    const bits = prefixes.ipv6Prefix;
    const masked = v6.map((word, i) => {
      const keep = Math.max(0, Math.min(16, bits - i * 16));
      return keep === 0 ? 0 : word & ((0xffff << (16 - keep)) & 0xffff);
    });
    return `${masked.map((w) => w.toString(16)).join(':')}/${bits}`;
  }
  // Not an IP literal (should not happen for socket peers): key on the text itself.
  return address;
}

/**
 * A client key as `clientKey` makes it (`198.18.0.7/32`, `2001:db8:1:2:0:0:0:0/64`): its address,
 * family and prefix length, or undefined when the text is not one (a key read from elsewhere, such
 * as the cluster store, is checked with this).
 */
export function parseClientKey(key: string): { family: 4 | 6; address: string; len: number } | undefined {
  const slash = key.lastIndexOf('/');
  if (slash < 0) return undefined;
  const address = key.slice(0, slash);
  const lenText = key.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText)) return undefined;
  const len = Number(lenText);
  const family = isIP(address);
  if (family !== 4 && family !== 6) return undefined;
  if (len > (family === 4 ? 32 : 128)) return undefined;
  return { family, address, len };
}

export function parseIpv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = value * 256 + n;
  }
  return value;
}

/** Eight 16-bit words, or undefined. Accepts `::` compression, a trailing dotted quad and a `%zone`. */
export function parseIpv6(text: string): number[] | undefined {
  let addr = text;
  const zone = addr.indexOf('%');
  if (zone >= 0) addr = addr.slice(0, zone);
  if (!addr.includes(':')) return undefined;
  const lastColon = addr.lastIndexOf(':');
  const maybeV4 = addr.slice(lastColon + 1);
  if (maybeV4.includes('.')) {
    // `::ffff:1.2.3.4` → `::ffff:102:304`: the dotted quad is just the last two words.
    const v4 = parseIpv4(maybeV4);
    if (v4 === undefined) return undefined;
    addr = `${addr.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const halves = addr.split('::');
  if (halves.length > 2) return undefined;
  const parseWords = (s: string): number[] | undefined => {
    if (s === '') return [];
    const words: number[] = [];
    for (const w of s.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(w)) return undefined;
      words.push(parseInt(w, 16));
    }
    return words;
  };
  const head = parseWords(halves[0]!);
  const rest = halves.length === 2 ? parseWords(halves[1]!) : [];
  if (!head || !rest) return undefined;
  const explicit = head.length + rest.length;
  if (halves.length === 1) return explicit === 8 ? head : undefined;
  if (explicit > 7) return undefined;
  return [...head, ...new Array<number>(8 - explicit).fill(0), ...rest];
}
