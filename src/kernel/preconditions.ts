import { readFile } from 'node:fs/promises';
import { ErrorCodes, PlbError, type ErrorCode } from '../errors.ts';
import type { Family, KernelTarget } from './plan.ts';
import { firstLines, runTool } from './tools.ts';

/**
 * What the kernel data plane needs of this host, checked before anything is changed. Each
 * failed check is one problem with a stable code and the key (config key, sysctl or tool) to
 * fix. `dataPlane: kernel` refuses to start on any problem; `auto` logs them once and runs in
 * user space.
 */

export interface KernelProblem {
  code: ErrorCode;
  /** What to change: a config key, a sysctl, a tool. */
  key: string;
  message: string;
}

export interface KernelNeeds {
  /** The config keys that asked for the kernel (named by the platform problem). */
  dataPlaneKeys: string[];
  targets: readonly KernelTarget[];
  snat: { ipv4?: string | undefined; ipv6?: string | undefined };
  /** Flows conntrack must be able to hold at once: maxFlows (UDP) + maxConnections (TCP) of the kernel listeners. */
  conntrackFlows: number;
}

export interface KernelTools {
  nft: string;
  conntrack: string;
  ip: string;
}

export const DEFAULT_TOOLS: KernelTools = { nft: 'nft', conntrack: 'conntrack', ip: 'ip' };

const TOOL_PACKAGES: Record<keyof KernelTools, string> = { nft: 'nftables', conntrack: 'conntrack (conntrack-tools)', ip: 'iproute2' };

async function readSysctl(name: string): Promise<string | undefined> {
  try {
    return (await readFile(`/proc/sys/${name.replaceAll('.', '/')}`, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

/** Checks that need no table of ours: platform, tools, CAP_NET_ADMIN, forwarding, rp_filter, the SNAT address. */
export async function checkHost(needs: KernelNeeds, tools: KernelTools = DEFAULT_TOOLS, platform: NodeJS.Platform = process.platform): Promise<KernelProblem[]> {
  if (platform !== 'linux') {
    return [{ code: ErrorCodes.KERNEL_PLATFORM, key: needs.dataPlaneKeys.join(', '), message: `the kernel data plane needs Linux (nftables and conntrack); this is ${platform}: use dataPlane: user` }];
  }
  const problems: KernelProblem[] = [];
  const versions = await Promise.all(
    (Object.keys(tools) as Array<keyof KernelTools>).map(async (name) => ({ name, result: await runTool(tools[name], name === 'ip' ? ['-V'] : ['--version'], { timeoutMs: 5000 }) })),
  );
  for (const { name, result } of versions) {
    if (result.error?.code === 'ENOENT') {
      problems.push({ code: ErrorCodes.KERNEL_TOOL, key: tools[name], message: `"${tools[name]}" is not installed (or not on PATH): install ${TOOL_PACKAGES[name]}` });
    } else if (result.code !== 0) {
      problems.push({ code: ErrorCodes.KERNEL_TOOL, key: tools[name], message: `"${tools[name]}" does not run: ${firstLines(result.stderr || result.error?.message || '')}` });
    }
  }
  if (problems.length > 0) return problems;

  // A harmless read that needs CAP_NET_ADMIN, as every later write does.
  const list = await runTool(tools.nft, ['list', 'tables'], { timeoutMs: 5000 });
  if (list.code !== 0) {
    const denied = /Operation not permitted|Permission denied/i.test(list.stderr);
    problems.push({
      code: ErrorCodes.KERNEL_PERMISSION,
      key: 'CAP_NET_ADMIN',
      message: denied
        ? 'nftables refused "nft list tables": run pcoip-lb as root or give it CAP_NET_ADMIN (systemd: AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE)'
        : `"nft list tables" failed: ${firstLines(list.stderr)}`,
    });
    return problems;
  }

  const families = new Set<Family>(needs.targets.map((t) => t.family));
  if (families.has(4) && (await readSysctl('net.ipv4.ip_forward')) !== '1') {
    problems.push({ code: ErrorCodes.KERNEL_SYSCTL, key: 'net.ipv4.ip_forward', message: 'must be 1: the kernel only forwards packets to the Connectors with IPv4 forwarding on (sysctl -w net.ipv4.ip_forward=1)' });
  }
  if (families.has(6) && (await readSysctl('net.ipv6.conf.all.forwarding')) !== '1') {
    problems.push({ code: ErrorCodes.KERNEL_SYSCTL, key: 'net.ipv6.conf.all.forwarding', message: 'must be 1 for IPv6 Connectors (sysctl -w net.ipv6.conf.all.forwarding=1)' });
  }
  for (const family of [4, 6] as const) {
    const snat = family === 4 ? needs.snat.ipv4 : needs.snat.ipv6;
    if (snat === undefined || !families.has(family)) continue;
    problems.push(...(await checkReplyPath(family, snat, needs.targets.filter((t) => t.family === family), tools.ip)));
  }
  return problems;
}

interface RouteAnswer {
  type?: string;
  dev?: string;
}

async function routeGet(ipBin: string, family: Family, args: string[]): Promise<{ route: RouteAnswer | undefined; error: string }> {
  const r = await runTool(ipBin, [`-${family}`, '-j', 'route', 'get', ...args], { timeoutMs: 5000 });
  if (r.code !== 0) return { route: undefined, error: firstLines(r.stderr || r.error?.message || `exit ${r.code}`, 1) };
  try {
    const parsed = JSON.parse(r.stdout) as RouteAnswer[];
    return { route: parsed[0], error: '' };
  } catch {
    return { route: undefined, error: `unreadable answer: ${firstLines(r.stdout, 1)}` };
  }
}

/**
 * The replies of a forwarded flow come from the Connector to the SNAT address. Asks the kernel's
 * own route lookup about exactly that packet, arriving where the Connector's packets arrive:
 * it must be delivered locally. This proves the SNAT address is this host's and that reverse-path
 * filtering (rp_filter) will not drop the replies — without guessing from sysctl values.
 */
async function checkReplyPath(family: Family, snat: string, targets: readonly KernelTarget[], ipBin: string): Promise<KernelProblem[]> {
  const key = family === 4 ? 'kernel.snat.ipv4' : 'kernel.snat.ipv6';
  const own = await routeGet(ipBin, family, [snat]);
  if (own.route?.type !== 'local') {
    return [{ code: ErrorCodes.KERNEL_SNAT, key, message: `${snat} is not an address of this host (${own.error || `route type ${own.route?.type ?? 'unicast'}`}): use the address this host has on the Connectors' side` }];
  }
  const problems: KernelProblem[] = [];
  for (const t of targets) {
    const out = await routeGet(ipBin, family, [t.address]);
    if (!out.route?.dev) {
      problems.push({ code: ErrorCodes.KERNEL_SNAT, key: `connectors[${t.id}].address`, message: `no route to Connector ${t.id} (${t.address}): ${out.error}` });
      continue;
    }
    const back = await routeGet(ipBin, family, [snat, 'from', t.address, 'iif', out.route.dev]);
    if (back.route?.type === 'local') continue;
    const rp = /cross-device/i.test(back.error);
    problems.push({
      code: rp ? ErrorCodes.KERNEL_RP_FILTER : ErrorCodes.KERNEL_SNAT,
      key: rp ? `net.ipv4.conf.${out.route.dev}.rp_filter` : key,
      message: rp
        ? `reverse-path filtering would drop the replies of Connector ${t.id} (${t.address}) arriving on ${out.route.dev}: set net.ipv4.conf.${out.route.dev}.rp_filter (and .all) to 2 (loose) or fix the routes`
        : `replies of Connector ${t.id} (${t.address}) to ${snat} arriving on ${out.route.dev} would not be delivered here: ${back.error || `route type ${back.route?.type}`}`,
    });
  }
  return problems;
}

/**
 * Checks that need conntrack loaded (it is once our table with NAT exists): the table limit
 * against the flows pcoip-lb may admit. Also returns the UDP stream timeout (the kernel's idle
 * timeout for forwarded UDP flows) for the caller to compare with idleTimeout.
 */
export async function checkConntrack(needs: KernelNeeds): Promise<{ problems: KernelProblem[]; udpStreamTimeoutS: number | undefined; accounting: boolean }> {
  const problems: KernelProblem[] = [];
  const max = Number(await readSysctl('net.netfilter.nf_conntrack_max'));
  if (!Number.isFinite(max) || max <= 0) {
    problems.push({ code: ErrorCodes.KERNEL_SYSCTL, key: 'net.netfilter.nf_conntrack_max', message: 'cannot be read: is connection tracking (nf_conntrack) available in this kernel?' });
  } else if (max < needs.conntrackFlows) {
    problems.push({
      code: ErrorCodes.KERNEL_SYSCTL,
      key: 'net.netfilter.nf_conntrack_max',
      message: `is ${max}, below the ${needs.conntrackFlows} flows pcoip-lb may admit (maxFlows + maxConnections of the kernel listeners): raise it, or lower those limits`,
    });
  }
  const stream = Number(await readSysctl('net.netfilter.nf_conntrack_udp_timeout_stream'));
  return { problems, udpStreamTimeoutS: Number.isFinite(stream) ? stream : undefined, accounting: (await readSysctl('net.netfilter.nf_conntrack_acct')) === '1' };
}

/** One error for a list of problems: the first one's code, every problem as a detail line. */
export function kernelError(problems: readonly KernelProblem[]): PlbError {
  const first = problems[0]!;
  return new PlbError(
    first.code,
    `the kernel data plane cannot start: ${first.key}: ${first.message}${problems.length > 1 ? ` (and ${problems.length - 1} more)` : ''}`,
    problems.map((p) => `${p.code} ${p.key}: ${p.message}`),
  );
}
