import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, startCli as runningCli } from './cli.ts';
import { startCli, writeConfig, type CliProcess } from './cli-process.ts';
import { createLab, SNAT, VIP, type NetnsLab } from './netns.ts';

/**
 * The kernel data plane's test bed: the netns lab (netns.ts) with `pcoip-lb simulate` (the real
 * CLI, simulated Connectors that reject every flow they did not broker) in the Connector
 * namespace, `pcoip-lb start` (the real CLI) in the lb namespace, and simulated users
 * (netns-users.ts) in the client namespace. Everything talks over the veth pairs only.
 */

export const BROKER_PORT = 8443;
export const PCOIP_PORT = 4172;
const USERS_SCRIPT = fileURLToPath(new URL('./netns-users.ts', import.meta.url));

export interface UsersReport {
  users: number;
  ok: number;
  failed: number;
  failuresByKind: Record<string, number>;
  failures: Array<{ name: string; address: string; kind: string; stage: string; message: string }>;
  perConnector: Array<{ id: string; users: number; ok: number; failed: number }>;
  udp: { sent: number; received: number; lossPct: number };
}

export interface KernelLab {
  lab: NetnsLab;
  connectorIds: string[];
  /** The simulators' process (stdin takes `unhealthy <id>` / `healthy <id>`). */
  sims: ChildProcess;
  simCommand(line: string): void;
  /** pcoip-lb's raw config for the lab, with `extra` merged at the top level and `listeners` overrides. */
  config(extra?: Record<string, unknown>): Record<string, unknown>;
  startLb(raw: Record<string, unknown>, args?: string[]): Promise<CliProcess>;
  /** Runs `pcoip-lb start` expecting it to refuse: resolves with its fatal JSON line (stdout is a pipe) and exit code. */
  failingStart(raw: Record<string, unknown>): Promise<{ code: number | null; fatal: Record<string, unknown> | undefined; lines: Array<Record<string, unknown>> }>;
  runUsers(options: { users: number; bitrateBps?: number; durationMs?: number; firstUser?: number; udpSourcePort?: number }): Promise<UsersReport>;
  /** An admin API request from inside the lb namespace (the admin server listens on its loopback). */
  admin(url: string, path: string, method?: 'GET' | 'POST'): { status: number; body: string };
  close(): Promise<void>;
}

export async function createKernelLab(options: { connectors: number; users: number }): Promise<KernelLab> {
  const lab = createLab(options);
  const connectorIds = Array.from({ length: options.connectors }, (_, i) => `conn-${String.fromCharCode(97 + i)}`);
  const lbs: CliProcess[] = [];
  let sims: ChildProcess | undefined;
  const close = async () => {
    for (const lb of lbs) await lb.cleanup();
    if (sims && sims.exitCode === null) {
      sims.kill('SIGKILL');
      await once(sims, 'exit');
    }
    lab.remove();
  };
  try {
    sims = lab.spawn(lab.conn, process.execPath, [
      CLI,
      'simulate',
      '--connectors',
      String(options.connectors),
      '--host-base',
      '198.19.0.1', // + 1, 2, … → 198.19.0.11, .12, …
      '--broker-port',
      String(BROKER_PORT),
      '--pcoip-port',
      String(PCOIP_PORT),
      '--advertise',
      `${VIP}:${PCOIP_PORT}`,
    ]);
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`simulate did not start: ${out}`)), 20_000);
      sims!.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('Paste into')) {
          clearTimeout(timer);
          resolve();
        }
      });
      sims!.stderr!.on('data', (c: Buffer) => (out += c.toString()));
      sims!.once('exit', (code) => reject(new Error(`simulate exited (${code}): ${out}`)));
    });
  } catch (err) {
    await close();
    throw err;
  }

  const config = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    listeners: {
      broker: { bind: `${VIP}:${BROKER_PORT}` },
      pcoipTcp: { bind: `${VIP}:${PCOIP_PORT}`, dataPlane: 'kernel' },
      pcoipUdp: { bind: `${VIP}:${PCOIP_PORT}`, dataPlane: 'kernel' },
    },
    connectors: connectorIds.map((id, i) => ({ id, address: lab.connectorAddress(i), ports: { broker: BROKER_PORT, pcoip: PCOIP_PORT } })),
    kernel: { table: 'i11_lab', snat: { ipv4: SNAT } },
    health: { interval: '1s', timeout: '1s', rise: 1, fall: 1, tls: {} },
    admin: { bind: '127.0.0.1:0' },
    logging: { level: 'info' },
    shutdown: { grace: '1s' },
    ...extra,
  });

  return {
    lab,
    connectorIds,
    sims: sims!,
    simCommand: (line) => void sims!.stdin!.write(`${line}\n`),
    config,
    startLb: async (raw, args = []) => {
      const lb = await startCli(raw, args, 20_000, { wrap: ['ip', 'netns', 'exec', lab.lb] });
      lbs.push(lb);
      return lb;
    },
    failingStart: async (raw) => {
      const dir = mkdtempSync(join(tmpdir(), 'i11-lab-'));
      try {
        writeConfig(join(dir, 'pcoip-lb.yaml'), raw);
        const proc = runningCli(['start', '--config', join(dir, 'pcoip-lb.yaml')], { wrap: ['ip', 'netns', 'exec', lab.lb] });
        const timer = setTimeout(() => proc.child.kill('SIGKILL'), 30_000);
        const code = await proc.exit;
        clearTimeout(timer);
        return { code, fatal: proc.lines.find((l) => l.level === 60), lines: proc.lines };
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    runUsers: async ({ users, bitrateBps = 200_000, durationMs = 1500, firstUser = 0, udpSourcePort }) => {
      const opts = { users, broker: { host: VIP, port: BROKER_PORT }, bitrateBps, durationMs, firstUser, ...(udpSourcePort !== undefined ? { udpSourcePort } : {}) };
      const child = lab.spawn(lab.client, process.execPath, [USERS_SCRIPT, JSON.stringify(opts)]);
      let out = '';
      let err = '';
      child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      const [code] = (await once(child, 'exit')) as [number | null];
      clearTimeout(timer);
      const line = out.trim().split('\n').pop() ?? '';
      if (code !== 0 || !line.startsWith('{')) throw new Error(`users exited (${code}): ${err.slice(-2000)} ${out.slice(-500)}`);
      return JSON.parse(line) as UsersReport;
    },
    admin: (url, path, method = 'GET') => {
      // Node's fetch, run inside the namespace (no curl needed on the machine).
      const script = `fetch(process.argv[1], { method: process.argv[2] }).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })))`;
      return JSON.parse(lab.run(lab.lb, process.execPath, ['-e', script, `${url}${path}`, method])) as { status: number; body: string };
    },
    close,
  };
}

/** The named nft counters of the lab's table, by name (c0_udp_in …), from inside the lb namespace. */
export function nftCounters(lab: NetnsLab, table = 'i11_lab'): Map<string, { packets: number; bytes: number }> {
  const json = JSON.parse(lab.run(lab.lb, 'nft', ['-j', 'list', 'counters', 'table', 'inet', table])) as { nftables: Array<{ counter?: { name: string; packets: number; bytes: number } }> };
  return new Map(json.nftables.flatMap((i) => (i.counter ? [[i.counter.name, { packets: i.counter.packets, bytes: i.counter.bytes }] as const] : [])));
}

/** Polls `check` every 100 ms until it holds; throws after `timeoutMs`. */
export async function waitFor(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Packets of the counters whose names match. */
export function sumPackets(counters: Map<string, { packets: number }>, match: RegExp): number {
  return [...counters].filter(([n]) => match.test(n)).reduce((a, [, c]) => a + c.packets, 0);
}

/** The lab table's IPv4 client map: element key → Connector address. */
export function elementsOf(k: KernelLab, table = 'i11_lab'): Map<string, string> {
  const json = JSON.parse(k.lab.run(k.lab.lb, 'nft', ['-j', 'list', 'map', 'inet', table, 'client4'])) as { nftables: Array<{ map?: { elem?: Array<[string, { concat: [string, number] }]> } }> };
  const map = json.nftables.find((i) => i.map)?.map;
  return new Map((map?.elem ?? []).map(([key, value]) => [key, value.concat[0]]));
}

/** SIGTERM, then the exit code. */
export async function stopLb(lb: CliProcess): Promise<number | null> {
  lb.child.kill('SIGTERM');
  return lb.exited;
}
