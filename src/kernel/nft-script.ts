import { isIP } from 'node:net';
import { needsInterval, prefixMask, type ElementChanges, type Family, type KernelPlan, type KernelProto, type MapElement } from './plan.ts';

/**
 * nft scripts (the `nft -f` language) rendered from a KernelPlan. Pure. Every value put into a
 * script is checked here first (table names against a fixed alphabet, addresses with isIP, ports
 * as integers), so nothing from a config file can add a statement to a script.
 *
 * Why the text language and not `nft -j` JSON for writes: nftables 1.0.6 (Debian 12) crashes
 * (SIGSEGV) on the JSON of `dnat ip to ip saddr map @m` with a concatenated address . port value,
 * which is the one rule this data plane is built on. JSON is used for reading (counters).
 */

const TABLE_RE = /^[A-Za-z][A-Za-z0-9_]{0,30}$/;

function checkTableName(table: string): string {
  if (!TABLE_RE.test(table)) throw new Error(`invalid nft table name "${table}"`);
  return table;
}

function addr(address: string, family: Family): string {
  if (isIP(address) !== family) throw new Error(`not an IPv${family} address: "${address}"`);
  return address;
}

function port(p: number): string {
  if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`not a port: ${p}`);
  return String(p);
}

/** An element key: an address, or `address/len` in an interval map. */
function key(element: MapElement): string {
  const slash = element.key.indexOf('/');
  if (slash < 0) return addr(element.key, element.family);
  const len = Number(element.key.slice(slash + 1));
  const max = element.family === 4 ? 32 : 128;
  if (!Number.isInteger(len) || len < 0 || len > max) throw new Error(`bad prefix "${element.key}"`);
  return `${addr(element.key.slice(0, slash), element.family)}/${len}`;
}

/** Who wrote the table: pid and the process's start time (clock ticks since boot), so a reused pid is not mistaken for the owner. */
export interface TableOwner {
  pid: number;
  startTicks: number;
}

const ownerComment = (o: TableOwner) => `pcoip-lb pid ${o.pid} start ${o.startTicks}`;

/** The owner in `nft list table` text output, if the table is one of ours. */
export function ownerOf(listing: string): TableOwner | undefined {
  const m = /comment "pcoip-lb pid (\d+) start (\d+)"/.exec(listing);
  return m ? { pid: Number(m[1]), startTicks: Number(m[2]) } : undefined;
}

const ip = (family: Family) => (family === 4 ? 'ip' : 'ip6');
const clientMap = (family: Family) => `client${family}`;

/** Counter object name for one Connector (by its index in the plan), protocol and direction. */
function counterName(index: number, proto: KernelProto, direction: 'in' | 'out'): string {
  return `c${index}_${proto}_${direction}`;
}

export interface CounterRef {
  name: string;
  connectorId: string;
  proto: KernelProto;
  direction: 'in' | 'out';
}

/** The named counters a plan creates: per Connector, per forwarded protocol, per direction. */
export function planCounters(plan: KernelPlan): CounterRef[] {
  const protos = [...new Set(plan.listeners.map((l) => l.proto))].sort();
  const out: CounterRef[] = [];
  plan.targets.forEach((t, i) => {
    for (const proto of protos) for (const direction of ['in', 'out'] as const) out.push({ name: counterName(i, proto, direction), connectorId: t.id, proto, direction });
  });
  return out;
}

function count(n: number): string {
  if (!Number.isInteger(n) || n < 1 || n > 2 ** 31) throw new Error(`not a limit: ${n}`);
  return String(n);
}

export type RefusalKind = 'max-flows' | 'max-per-client';

/** The counter of one listener's refused flows (one per protocol and kind: families share it). */
function refusalName(l: { proto: KernelProto }, kind: RefusalKind): string {
  return `refused_${l.proto}_${kind.replace(/-/g, '_')}`;
}

/** The refusal counters a plan creates, with what each counts. */
export function refusalCounters(plan: KernelPlan): Array<{ name: string; proto: KernelProto; kind: RefusalKind }> {
  const out = new Map<string, { name: string; proto: KernelProto; kind: RefusalKind }>();
  for (const l of plan.listeners) {
    if (l.maxFlows !== undefined) out.set(refusalName(l, 'max-flows'), { name: refusalName(l, 'max-flows'), proto: l.proto, kind: 'max-flows' });
    if (l.maxPerClient !== undefined) out.set(refusalName(l, 'max-per-client'), { name: refusalName(l, 'max-per-client'), proto: l.proto, kind: 'max-per-client' });
  }
  return [...out.values()];
}

function elementList(elements: readonly MapElement[], withTarget: boolean): string {
  return elements.map((e) => (withTarget ? `${key(e)} : ${addr(e.target.address, e.family)} . ${port(e.target.port)}` : key(e))).join(', ');
}

function familiesOf(plan: KernelPlan): Family[] {
  return ([4, 6] as const).filter((f) => plan.listeners.some((l) => l.family === f));
}

/**
 * The whole table, replacing any table of that name in the same transaction: `add` (a no-op if
 * it exists), `delete`, then the new definition. Used at start (a table left by a killed run is
 * replaced), on reload (targets and elements change at once) and to resynchronise.
 */
export function renderTable(plan: KernelPlan, elements: readonly MapElement[]): string {
  const t = checkTableName(plan.table);
  const { pid, startTicks } = plan.owner;
  if (!Number.isInteger(pid) || pid < 1 || !Number.isInteger(startTicks) || startTicks < 0) throw new Error(`bad owner ${pid}/${startTicks}`);
  const lines = [`add table inet ${t}`, `delete table inet ${t}`, `table inet ${t} {`, `  comment "${ownerComment(plan.owner)}"`];
  const families = familiesOf(plan);
  const counters = planCounters(plan);
  for (const f of families) {
    const type = f === 4 ? 'ipv4_addr' : 'ipv6_addr';
    const mine = elements.filter((e) => e.family === f);
    lines.push(`  map ${clientMap(f)} {`, `    type ${type} : ${type} . inet_service`);
    if (needsInterval(plan, f)) lines.push('    flags interval');
    if (mine.length > 0) lines.push(`    elements = { ${elementList(mine, true)} }`);
    lines.push('  }');
    const targets = plan.targets.map((tg, i) => ({ tg, i })).filter(({ tg }) => tg.family === f);
    lines.push(`  set targets${f} {`, `    type ${type} . inet_service`);
    if (targets.length > 0) lines.push(`    elements = { ${targets.map(({ tg }) => `${addr(tg.address, f)} . ${port(tg.port)}`).join(', ')} }`);
    lines.push('  }');
    for (const direction of ['in', 'out'] as const) {
      const refs = targets.flatMap(({ tg, i }) =>
        counters.filter((c) => c.name.startsWith(`c${i}_`) && c.direction === direction).map((c) => `${c.proto} . ${addr(tg.address, f)} . ${port(tg.port)} : "${c.name}"`),
      );
      lines.push(`  map count_${direction}${f} {`, `    type inet_proto . ${type} . inet_service : counter`);
      if (refs.length > 0) lines.push(`    elements = { ${refs.join(', ')} }`);
      lines.push('  }');
    }
  }
  for (const c of counters) lines.push(`  counter ${c.name} { }`);
  for (const name of refusalCounters(plan)) lines.push(`  counter ${name.name} { }`);
  plan.listeners.forEach((l, i) => {
    if (l.maxPerClient !== undefined) lines.push(`  set per_client_${i} {`, `    type ${l.family === 4 ? 'ipv4_addr' : 'ipv6_addr'}`, '    size 65535', '    flags dynamic', '  }');
  });

  lines.push('  chain prerouting {', '    type nat hook prerouting priority dstnat; policy accept;');
  plan.listeners.forEach((l, i) => {
    const to = l.address === undefined ? `fib daddr type local meta nfproto ${l.family === 4 ? 'ipv4' : 'ipv6'}` : `${ip(l.family)} daddr ${addr(l.address, l.family)}`;
    const match = `${to} ${l.proto} dport ${port(l.port)}`;
    // Limits first, only for clients the kernel would forward (the others reach pcoip-lb, which has its own).
    // NAT chains see a connection's first packet only, so these count connections, not packets.
    const known = `${ip(l.family)} saddr @${clientMap(l.family)}`;
    if (l.maxFlows !== undefined) lines.push(`    ${match} ${known} ct count over ${count(l.maxFlows)} counter name "${refusalName(l, 'max-flows')}" drop`);
    if (l.maxPerClient !== undefined) {
      const bits = l.family === 4 ? plan.prefixes.ipv4 : plan.prefixes.ipv6;
      const keyExpr = bits === (l.family === 4 ? 32 : 128) ? `${ip(l.family)} saddr` : `${ip(l.family)} saddr and ${prefixMask(l.family, bits)}`;
      lines.push(`    ${match} ${known} add @per_client_${i} { ${keyExpr} ct count over ${count(l.maxPerClient)} } counter name "${refusalName(l, 'max-per-client')}" drop`);
    }
    lines.push(`    ${match} dnat ${ip(l.family)} to ${ip(l.family)} saddr map @${clientMap(l.family)}`);
  });
  lines.push('  }');

  // Counted in forward: only packets of flows this table DNATed to a Connector pass there.
  lines.push('  chain forward {', '    type filter hook forward priority filter; policy accept;');
  for (const f of families) {
    const nf = `meta nfproto ${f === 4 ? 'ipv4' : 'ipv6'} meta l4proto { tcp, udp } ct status dnat`;
    lines.push(`    ${nf} ct direction original counter name meta l4proto . ${ip(f)} daddr . th dport map @count_in${f}`);
    lines.push(`    ${nf} ct direction reply counter name meta l4proto . ${ip(f)} saddr . th sport map @count_out${f}`);
  }
  lines.push('  }');

  lines.push('  chain postrouting {', '    type nat hook postrouting priority srcnat; policy accept;');
  for (const f of families) {
    const snat = f === 4 ? plan.snat.ipv4 : plan.snat.ipv6;
    if (snat === undefined || !plan.targets.some((tg) => tg.family === f)) continue;
    lines.push(`    meta nfproto ${f === 4 ? 'ipv4' : 'ipv6'} meta l4proto { tcp, udp } ct status dnat ${ip(f)} daddr . th dport @targets${f} snat ${ip(f)} to ${addr(snat, f)}`);
  }
  lines.push('  }', '}');
  return `${lines.join('\n')}\n`;
}

/** Removes the table (and with it every rule, map and counter) if it exists. */
export function renderDeleteTable(table: string): string {
  const t = checkTableName(table);
  return `add table inet ${t}\ndelete table inet ${t}\n`;
}

/** One transaction with every element change of a batch: deletes first, so a changed target is re-added. */
export function renderElementChanges(table: string, changes: ElementChanges): string {
  const t = checkTableName(table);
  const lines: string[] = [];
  for (const f of [4, 6] as const) {
    const del = changes.deletes.filter((e) => e.family === f);
    if (del.length > 0) lines.push(`delete element inet ${t} ${clientMap(f)} { ${elementList(del, false)} }`);
  }
  for (const f of [4, 6] as const) {
    const add = changes.adds.filter((e) => e.family === f);
    if (add.length > 0) lines.push(`add element inet ${t} ${clientMap(f)} { ${elementList(add, true)} }`);
  }
  return lines.length > 0 ? `${lines.join('\n')}\n` : '';
}

/** Replaces every element of the client maps at once (after a failed batch left the kernel's state unknown). */
export function renderReplaceElements(plan: KernelPlan, elements: readonly MapElement[]): string {
  const t = checkTableName(plan.table);
  const lines: string[] = [];
  for (const f of familiesOf(plan)) {
    lines.push(`flush map inet ${t} ${clientMap(f)}`);
    const mine = elements.filter((e) => e.family === f);
    if (mine.length > 0) lines.push(`add element inet ${t} ${clientMap(f)} { ${elementList(mine, true)} }`);
  }
  return `${lines.join('\n')}\n`;
}
