import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

/**
 * A three-namespace lab for the kernel data plane (and its bench): clients ↔ pcoip-lb ↔
 * Connectors, joined by veth pairs, addressed from 198.18.0.0/15 (RFC 2544's benchmarking
 * range). Traffic never leaves these namespaces. Names start with `i11-<pid>-` so parallel test
 * files never collide, and a lab whose creator died (a crashed run) is removed before a new one.
 *
 *   client ns   i11c 198.18.0.2/24, users 198.18.1.1 … (each /32)    default via 198.18.0.1
 *   lb ns       i11l 198.18.0.1/24 (the VIP)   i11r 198.19.0.1/24 (SNAT)   ip_forward=1
 *   conn ns     i11k 198.19.0.2/24, Connectors 198.19.0.11 …         default via 198.19.0.1
 */

export const VIP = '198.18.0.1';
export const SNAT = '198.19.0.1';

export interface NetnsLab {
  name: string;
  client: string;
  lb: string;
  conn: string;
  /** The i-th user's source address (0-based): 198.18.1.1 … 198.18.1.254, 198.18.2.1 … */
  userAddress(index: number): string;
  /** The i-th Connector's address (0-based): 198.19.0.11 … */
  connectorAddress(index: number): string;
  /** Runs a command in a namespace to completion; throws with its stderr when it fails. */
  run(ns: string, cmd: string, args: string[], input?: string): string;
  /** Starts a long-running process in a namespace. */
  spawn(ns: string, cmd: string, args: string[]): ChildProcess;
  remove(): void;
}

const PREFIX = 'i11-';

function sh(cmd: string, args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error ? String(r.error) : '') };
}

function must(cmd: string, args: string[], input?: string): string {
  const r = sh(cmd, args, input);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** Why the lab cannot be built here (undefined: it can). Tests skip with this reason. */
export function labUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'not root: network namespaces and nftables need root (CI runs as root)';
  for (const [tool, pkg] of [
    ['ip', 'iproute2'],
    ['nft', 'nftables'],
    ['conntrack', 'conntrack'],
  ] as const) {
    if (sh('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} is not installed (apt-get install ${pkg})`;
  }
  return undefined;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes `i11-<pid>-*` namespaces whose creating process is gone (a crashed or killed run). */
export function removeStaleLabs(): string[] {
  const removed: string[] = [];
  const names = sh('ip', ['netns', 'list']).stdout.split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(PREFIX));
  for (const name of names) {
    const pid = Number(name.split('-')[1]);
    if (Number.isInteger(pid) && pid > 0 && pidAlive(pid)) continue;
    killProcessesIn(name);
    sh('ip', ['netns', 'del', name]);
    removed.push(name);
  }
  return removed;
}

/** Kills whatever still runs in a namespace (a child that outlived its test), so it can go. */
function killProcessesIn(ns: string): void {
  const pids = sh('ip', ['netns', 'pids', ns]).stdout.split('\n').filter((l) => /^\d+$/.test(l.trim()));
  for (const p of pids) {
    try {
      process.kill(Number(p), 'SIGKILL');
    } catch {
      // gone already
    }
  }
}

let labs = 0;

export function createLab(options: { users: number; connectors: number }): NetnsLab {
  removeStaleLabs();
  const name = `${PREFIX}${process.pid}-${++labs}`;
  const client = `${name}-c`;
  const lb = `${name}-l`;
  const conn = `${name}-k`;
  const userAddress = (i: number) => `198.18.${1 + Math.floor(i / 254)}.${1 + (i % 254)}`;
  const connectorAddress = (i: number) => `198.19.0.${11 + i}`;
  if (options.users > 254 * 50 || options.connectors > 200) throw new Error('lab too large');
  const created: string[] = [];
  const remove = () => {
    for (const ns of created.splice(0)) {
      killProcessesIn(ns);
      sh('ip', ['netns', 'del', ns]);
    }
    process.off('exit', remove);
  };
  // Also when the test process ends without running its afterAll (spawnSync works in 'exit').
  process.on('exit', remove);
  try {
    for (const ns of [client, lb, conn]) {
      must('ip', ['netns', 'add', ns]);
      created.push(ns);
      must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    must('ip', ['-n', client, 'link', 'add', 'i11c', 'type', 'veth', 'peer', 'name', 'i11l', 'netns', lb]);
    must('ip', ['-n', lb, 'link', 'add', 'i11r', 'type', 'veth', 'peer', 'name', 'i11k', 'netns', conn]);
    const batch = (ns: string, lines: string[]) => must('ip', ['-n', ns, '-batch', '-'], `${lines.join('\n')}\n`);
    const userLines: string[] = [];
    for (let i = 0; i < options.users; i++) userLines.push(`addr add ${userAddress(i)}/32 dev i11c`);
    batch(client, ['addr add 198.18.0.2/24 dev i11c', ...userLines, 'link set i11c up', `route add default via ${VIP}`]);
    const subnets = Math.max(1, Math.ceil(options.users / 254));
    batch(lb, [
      `addr add ${VIP}/24 dev i11l`,
      `addr add ${SNAT}/24 dev i11r`,
      'link set i11l up',
      'link set i11r up',
      ...Array.from({ length: subnets }, (_, i) => `route add 198.18.${1 + i}.0/24 via 198.18.0.2`),
    ]);
    const connLines = Array.from({ length: options.connectors }, (_, i) => `addr add ${connectorAddress(i)}/24 dev i11k`);
    batch(conn, ['addr add 198.19.0.2/24 dev i11k', ...connLines, 'link set i11k up', `route add default via ${SNAT}`]);
    must('ip', ['netns', 'exec', lb, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  } catch (err) {
    remove();
    throw err;
  }
  return {
    name,
    client,
    lb,
    conn,
    userAddress,
    connectorAddress,
    run: (ns, cmd, args, input) => must('ip', ['netns', 'exec', ns, cmd, ...args], input),
    spawn: (ns, cmd, args) => spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }),
    remove,
  };
}

/** The nft ruleset of a namespace as text ("" when it has none). */
export function rulesetOf(lab: NetnsLab): string {
  return lab.run(lab.lb, 'nft', ['list', 'ruleset']);
}

/** Conntrack entries in the lb namespace, one per line. */
export function conntrackOf(lab: NetnsLab): string[] {
  const r = sh('ip', ['netns', 'exec', lab.lb, 'conntrack', '-L']);
  return r.stdout.split('\n').filter((l) => l.trim().length > 0);
}

/** Reads a sysctl inside a namespace. */
export function sysctlIn(lab: NetnsLab, ns: string, name: string): string {
  return lab.run(ns, 'cat', [`/proc/sys/${name.replaceAll('.', '/')}`]).trim();
}
