import { spawn } from 'node:child_process';

/**
 * Runs the kernel tools (nft, conntrack, ip) as child processes. One process per batch of
 * work, never per packet: callers batch (see element-sync.ts, conntrack.ts). Output is capped so a
 * tool that prints without end cannot grow memory; every run has a deadline.
 */

export interface ToolResult {
  /** Exit code; null when killed (deadline) or never started. */
  code: number | null;
  stdout: string;
  stderr: string;
  /** The tool printed more than `maxOutputBytes`: stdout/stderr hold only the first part (a listing is incomplete). */
  truncated: boolean;
  /** Set when the tool could not be started (ENOENT: not installed) or was killed at the deadline. */
  error?: NodeJS.ErrnoException;
}

const MAX_OUTPUT_BYTES = 32 * 1024 * 1024;

export function runTool(bin: string, args: readonly string[], options: { input?: string; timeoutMs?: number; maxOutputBytes?: number } = {}): Promise<ToolResult> {
  const maxOutputBytes = options.maxOutputBytes ?? MAX_OUTPUT_BYTES;
  return new Promise((resolve) => {
    let child;
    try {
      child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (err) {
      resolve({ code: null, stdout: '', stderr: '', truncated: false, error: err as NodeJS.ErrnoException });
      return;
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let truncated = false;
    const keep = (into: Buffer[]) => (chunk: Buffer) => {
      if (truncated || outBytes + chunk.length > maxOutputBytes) {
        truncated = true;
        return;
      }
      outBytes += chunk.length;
      into.push(chunk);
    };
    child.stdout.on('data', keep(out));
    child.stderr.on('data', keep(err));
    let failure: NodeJS.ErrnoException | undefined;
    child.on('error', (e: NodeJS.ErrnoException) => (failure = e));
    const timer = setTimeout(() => {
      failure = Object.assign(new Error(`${bin} did not finish within ${options.timeoutMs} ms`), { code: 'ETIMEDOUT' });
      child.kill('SIGKILL');
    }, options.timeoutMs ?? 15_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({
        code: failure ? null : code,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        truncated,
        ...(failure ? { error: failure } : {}),
      });
    });
    // A tool that died before reading its input makes the write fail with EPIPE: the close event reports it.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/** The first lines of a tool's complaint, for an error message (nft repeats the script line under each error). */
export function firstLines(text: string, n = 3): string {
  return text
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.length > 0)
    .slice(0, n)
    .join(' | ');
}
