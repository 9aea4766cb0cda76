import { isIP } from 'node:net';
import { parseClientKey } from '../balance/client-key.ts';
import { admitsPinnedClients, type ConnectorView } from '../pool/pool.ts';
import { unmapIpv4 } from '../util/address.ts';

/**
 * What the kernel data plane programs, as plain data: which listener addresses are forwarded,
 * which Connectors are targets, and which client keys map to which Connector. Pure: the nft
 * script is rendered from it (nft-script.ts) and unit-tested; nothing here runs a process.
 */

export type Family = 4 | 6;
export type KernelProto = 'udp' | 'tcp';

/** One forwarded listener: packets to `address:port` (`undefined`: any local address) of `proto`. */
export interface ForwardedListener {
  proto: KernelProto;
  family: Family;
  /** The bound address; undefined for a wildcard bind (0.0.0.0 or ::): any address of this host. */
  address: string | undefined;
  port: number;
  /** Forwarded flows at once (maxFlows / maxConnections); past it new ones are dropped and counted. */
  maxFlows?: number | undefined;
  /** The same per client key (maxFlowsPerClient / maxConnectionsPerClient). */
  maxPerClient?: number | undefined;
}

/** A listener as bound, with its limits. */
export interface BoundListener {
  proto: KernelProto;
  address: string;
  port: number;
  maxFlows?: number | undefined;
  maxPerClient?: number | undefined;
}

/** A Connector as a DNAT target (its pcoip port serves TCP and UDP alike). */
export interface KernelTarget {
  id: string;
  family: Family;
  address: string;
  port: number;
}

export interface KernelPlan {
  table: string;
  /** Written into the table's comment, so a second instance can tell a live owner from a stale table. */
  owner: { pid: number; startTicks: number };
  listeners: ForwardedListener[];
  targets: KernelTarget[];
  snat: { ipv4?: string | undefined; ipv6?: string | undefined };
  /** Client-key prefix lengths: a key shorter than the address needs an interval map. */
  prefixes: { ipv4: number; ipv6: number };
}

/** `address → Connector address . port` for one client key. */
export interface MapElement {
  family: Family;
  /** The nft key: a plain address for a full-length prefix, `addr/len` otherwise. */
  key: string;
  target: { address: string; port: number };
  connectorId: string;
}

/**
 * The listeners a plan forwards, from where they are bound. A wildcard bind of `::` is dual-stack
 * (IPv4 clients arrive on it too), so it is forwarded for both families.
 */
export function forwardedListeners(bound: readonly BoundListener[]): ForwardedListener[] {
  const out: ForwardedListener[] = [];
  for (const b of bound) {
    const limits = { ...(b.maxFlows !== undefined ? { maxFlows: b.maxFlows } : {}), ...(b.maxPerClient !== undefined ? { maxPerClient: b.maxPerClient } : {}) };
    const family = isIP(b.address) === 6 ? 6 : 4;
    if (b.address === '0.0.0.0') out.push({ proto: b.proto, family: 4, address: undefined, port: b.port, ...limits });
    else if (b.address === '::') {
      out.push({ proto: b.proto, family: 4, address: undefined, port: b.port, ...limits }, { proto: b.proto, family: 6, address: undefined, port: b.port, ...limits });
    } else {
      const address = unmapIpv4(b.address);
      out.push({ proto: b.proto, family, address, port: b.port, ...limits });
    }
  }
  return out;
}

/** The netmask of a client-key prefix, as nft writes it (`255.255.255.0`, `ffff:ffff:ffff:ffff::`). Pure. */
export function prefixMask(family: Family, bits: number): string {
  if (family === 4) {
    const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    return [24, 16, 8, 0].map((s) => (mask >>> s) & 0xff).join('.');
  }
  const words = Array.from({ length: 8 }, (_, i) => {
    const keep = Math.max(0, Math.min(16, bits - i * 16));
    return keep === 0 ? 0 : (0xffff << (16 - keep)) & 0xffff;
  });
  return words.map((w) => w.toString(16)).join(':');
}

/** Connectors with an IP address become targets; a name (never with dataPlane: kernel, see schema) is skipped. */
export function kernelTargets(connectors: readonly ConnectorView[]): KernelTarget[] {
  const out: KernelTarget[] = [];
  for (const c of connectors) {
    const family = isIP(c.address);
    if (family === 4 || family === 6) out.push({ id: c.id, family, address: c.address, port: c.ports.pcoip });
  }
  return out;
}

/** Whether the client map of a family holds prefixes (interval map) rather than single addresses. */
export function needsInterval(plan: Pick<KernelPlan, 'prefixes'>, family: Family): boolean {
  return family === 4 ? plan.prefixes.ipv4 < 32 : plan.prefixes.ipv6 < 128;
}

/**
 * A client key (`198.18.0.7/32`, `2001:db8:1:2::/64`, see balance/client-key.ts) as an nft map
 * key, or undefined when it is not one (then the client stays in user space).
 */
export function elementKey(clientKey: string): { family: Family; key: string } | undefined {
  const parsed = parseClientKey(clientKey);
  if (!parsed) return undefined;
  const { family, address, len } = parsed;
  // A /0 key is every address: the map then holds one element covering everything.
  return { family, key: len === (family === 4 ? 32 : 128) ? address : `${address}/${len}` };
}

/** A pin as the kernel should see it. */
export interface PinView {
  readonly clientKey: string;
  readonly connectorId: string;
}

/**
 * The elements the kernel should hold now: one per pinned client key whose Connector still
 * admits pinned clients (up, and active or draining) and has an address of the client's family.
 * A client pinned to a Connector that is down or in maint gets no element: its next new flow
 * reaches pcoip-lb, whose placer re-pins it (or refuses it, with health.onDown: keep), exactly
 * as in user space.
 */
export function desiredElements(pins: Iterable<PinView>, connector: (id: string) => ConnectorView | undefined): Map<string, MapElement> {
  const out = new Map<string, MapElement>();
  for (const pin of pins) {
    const c = connector(pin.connectorId);
    if (!c || !admitsPinnedClients(c)) continue;
    const key = elementKey(pin.clientKey);
    if (!key || isIP(c.address) !== key.family) continue;
    out.set(`${key.family}|${key.key}`, { family: key.family, key: key.key, target: { address: c.address, port: c.ports.pcoip }, connectorId: c.id });
  }
  return out;
}

export interface ElementChanges {
  deletes: MapElement[];
  adds: MapElement[];
}

/**
 * What turns the programmed elements into the desired ones. A changed target is a delete and an
 * add (nft cannot overwrite a map element's value); both go into one transaction.
 */
export function diffElements(programmed: ReadonlyMap<string, MapElement>, desired: ReadonlyMap<string, MapElement>): ElementChanges {
  const deletes: MapElement[] = [];
  const adds: MapElement[] = [];
  for (const [id, have] of programmed) {
    const want = desired.get(id);
    if (!want) deletes.push(have);
    else if (want.target.address !== have.target.address || want.target.port !== have.target.port) {
      deletes.push(have);
      adds.push(want);
    }
  }
  for (const [id, want] of desired) if (!programmed.has(id)) adds.push(want);
  return { deletes, adds };
}
