import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { ConnectorConfig } from '../../src/config/schema.ts';
import { startCli as spawnCli, type StartOptions } from './cli.ts';

/**
 * `pcoip-lb start` as a real child process (see cli.ts) with its config in a temp file: signals,
 * exit codes and stdout are the ones an operator gets. Listeners bind port 0; the ports actually
 * bound are read from the start-up log line ("pcoip-lb started", `listeners`).
 */
export type LogLine = Record<string, unknown>;

export interface CliProcess {
  child: ChildProcess;
  configPath: string;
  /** Bound ports by listener name ("broker", "pcoipTcp", "pcoipUdp"). */
  ports: Record<string, number>;
  /** `http://127.0.0.1:PORT` of the admin API, when enabled. */
  adminUrl: string | undefined;
  lines: LogLine[];
  waitForLine(match: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Resolves with the exit code once the process has exited. */
  exited: Promise<number | null>;
  /** Kills the process if it is still running and removes its temp dir (for afterEach). */
  cleanup(): Promise<void>;
}

/** A raw (unparsed) config with all listeners on 127.0.0.1:0; `extra` is merged at the top level. */
export function rawTestConfig(connectors: ConnectorConfig[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    listeners: {
      broker: { bind: '127.0.0.1:0' },
      pcoipTcp: { bind: '127.0.0.1:0' },
      pcoipUdp: { bind: '127.0.0.1:0' },
    },
    connectors: connectors.map((c) => ({ id: c.id, address: c.address, ports: c.ports, weight: c.weight, state: c.state })),
    logging: { level: 'info' },
    // As testConfig: the fake Connectors have no HTTPS /health, and the admin server takes port 0.
    health: { checks: [] },
    admin: { bind: '127.0.0.1:0' },
    workers: 1,
    ...extra,
  };
}

export function writeConfig(path: string, raw: unknown): void {
  writeFileSync(path, typeof raw === 'string' ? raw : stringify(raw));
}

export const hasMsg = (prefix: string) => (l: LogLine) => typeof l.msg === 'string' && l.msg.startsWith(prefix);

export async function startCli(raw: unknown, args: string[] = [], timeoutMs = 10_000, options: StartOptions = {}): Promise<CliProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'pcoip-lb-cli-'));
  const configPath = join(dir, 'pcoip-lb.yaml');
  writeConfig(configPath, raw);
  const proc = spawnCli(['start', '--config', configPath, ...args], options);
  let running = true;
  void proc.exit.then(() => (running = false));
  const cleanup = async () => {
    if (running) {
      proc.child.kill('SIGKILL');
      await proc.exit;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  let started: LogLine;
  try {
    started = await proc.waitForLine(hasMsg('pcoip-lb started'), timeoutMs);
  } catch (err) {
    await cleanup();
    throw err;
  }
  const ports: Record<string, number> = {};
  for (const [name, text] of Object.entries((started.listeners ?? {}) as Record<string, string>)) {
    // "127.0.0.1:40123/tcp" or "[::1]:40123/udp"
    const match = /:(\d+)\/(tcp|udp)$/.exec(text);
    if (match) ports[name] = Number(match[1]);
  }
  const adminUrl = typeof started.admin === 'string' ? started.admin.replace(/\/$/, '') : undefined;
  return { child: proc.child, configPath, ports, adminUrl, lines: proc.lines, waitForLine: proc.waitForLine, exited: proc.exit, cleanup };
}
