import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';
import type { ConnectorConfig } from '../../src/config/schema.ts';

/**
 * Runs the real `pcoip-lb start` as a child process (Node 24 runs src/cli.ts natively), so
 * signals, exit codes and stdout are the ones an operator gets. Listeners bind port 0; the
 * ports actually bound are read from the start-up log line ("pcoip-lb started", `listeners`).
 */
const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;

export type LogLine = Record<string, unknown>;

export interface CliProcess {
  child: ChildProcess;
  configPath: string;
  /** Bound ports by listener name ("broker", "pcoipTcp", "pcoipUdp"). */
  ports: Record<string, number>;
  lines: LogLine[];
  stderr: () => string;
  waitForLine(match: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
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
    ...extra,
  };
}

export function writeConfig(path: string, raw: unknown): void {
  writeFileSync(path, typeof raw === 'string' ? raw : stringify(raw));
}

export async function startCli(raw: unknown, args: string[] = [], timeoutMs = 10_000): Promise<CliProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'pcoip-lb-cli-'));
  const configPath = join(dir, 'pcoip-lb.yaml');
  writeConfig(configPath, raw);
  const child = spawn(process.execPath, [CLI, 'start', '--config', configPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: LogLine[] = [];
  let waiters: Array<{ match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  createInterface({ input: child.stdout! }).on('line', (text) => {
    let line: LogLine;
    try {
      line = JSON.parse(text) as LogLine;
    } catch {
      line = { msg: text, notJson: true };
    }
    lines.push(line);
    waiters = waiters.filter((w) => (w.match(line) ? (w.resolve(line), false) : true));
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  let running = true;
  void exited.then(() => (running = false));

  const waitForLine = (match: (l: LogLine) => boolean, ms = 5000): Promise<LogLine> => {
    const found = lines.find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching log line within ${ms} ms; stderr: ${stderr}`)), ms);
      const onExit = () => reject(new Error(`process exited before the log line; stderr: ${stderr}`));
      void exited.then(() => setImmediate(onExit));
      waiters.push({ match, resolve: (l) => (clearTimeout(timer), resolve(l)) });
    });
  };
  const cleanup = async () => {
    if (running) {
      child.kill('SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };

  let started: LogLine;
  try {
    started = await waitForLine((l) => typeof l.msg === 'string' && l.msg.startsWith('pcoip-lb started'), timeoutMs);
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
  return { child, configPath, ports, lines, stderr: () => stderr, waitForLine, exited, cleanup };
}

export const hasMsg = (prefix: string) => (l: LogLine) => typeof l.msg === 'string' && l.msg.startsWith(prefix);
