import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { get as httpsGet } from 'node:https';
import { fileURLToPath } from 'node:url';

/** Helpers for tests that run the real CLI in a child process. */

/** The CLI's source entry; Node runs it directly (type stripping), so tests see the current source. */
export const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));

/** Collects a child's stdout and resolves waits for a line matching a pattern. */
export class Output {
  text = '';
  private waiters: Array<{ re: RegExp; resolve: (m: RegExpExecArray) => void }> = [];

  constructor(child: ChildProcessWithoutNullStreams) {
    child.stdout.on('data', (chunk: Buffer) => {
      this.text += chunk.toString('utf8');
      this.waiters = this.waiters.filter((w) => {
        const m = w.re.exec(this.text);
        if (m) w.resolve(m);
        return !m;
      });
    });
  }

  waitFor(re: RegExp, timeoutMs = 15_000): Promise<RegExpExecArray> {
    const m = re.exec(this.text);
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${re} in output within ${timeoutMs} ms:\n${this.text}`)), timeoutMs);
      this.waiters.push({ re, resolve: (found) => (clearTimeout(timer), resolve(found)) });
    });
  }
}

/** GET /health on a simulated Connector's broker port (self-signed certificate). */
export function getHealth(host: string, port: number): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    httpsGet({ host, port, path: '/health', rejectUnauthorized: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(body) }));
    }).on('error', reject);
  });
}
