import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { get as httpsGet } from 'node:https';
import { fileURLToPath } from 'node:url';
import type { StatusDocument } from '../../src/admin/status.ts';
import { runLoad } from '../../src/sim/load.ts';

const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));

/** Collects a child's stdout and resolves waits for a line matching a pattern. */
class Output {
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

function getHealth(host: string, port: number): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    httpsGet({ host, port, path: '/health', rejectUnauthorized: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(body) }));
    }).on('error', reject);
  });
}

describe('pcoip-lb demo (npm start)', () => {
  let child: ChildProcessWithoutNullStreams;
  let out: Output;
  let stderr = '';

  beforeAll(async () => {
    child = spawn(process.execPath, [CLI, 'demo', '--broker', '127.0.0.1:0', '--pcoip', '127.0.0.1:0', '--admin', '127.0.0.1:0'], { stdio: 'pipe' });
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    out = new Output(child);
    await out.waitFor(/Ctrl-C stops the demo/);
  });

  afterAll(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });

  it('starts 3 simulated Connectors and pcoip-lb, answers GET /status, takes users, switches a Connector unhealthy, and stops on SIGINT', async () => {
    const admin = (await out.waitFor(/admin +http:\/\/(127\.0\.0\.1:\d+)\/status/))[1]!;
    const listeners = await out.waitFor(/broker 127\.0\.0\.1:(\d+)\/tcp +pcoip 127\.0\.0\.1:(\d+)\/tcp 127\.0\.0\.1:(\d+)\/udp/);
    const [brokerPort, udpPort] = [Number(listeners[1]), Number(listeners[3])];
    const connB = await out.waitFor(/conn-b +127\.0\.1\.2 +broker :(\d+)/);

    const status = (await (await fetch(`http://${admin}/status`)).json()) as StatusDocument;
    expect(status.connectors.map((c) => [c.id, c.address, c.state, c.health])).toEqual([
      ['conn-a', '127.0.1.1', 'active', 'up'],
      ['conn-b', '127.0.1.2', 'active', 'up'],
      ['conn-c', '127.0.1.3', 'active', 'up'],
    ]);
    expect(status.pinnedClients).toBe(0);
    expect((await fetch(`http://${admin}/nope`)).status).toBe(404);

    // Three users through the demo's pcoip-lb; 4172/TCP goes where allocate-resource-resp points
    // (the simulators advertise pcoip-lb's address), UDP to the demo's UDP listener.
    const report = await runLoad({
      users: 3,
      target: { broker: { host: '127.0.0.1', port: brokerPort }, pcoipUdp: { host: '127.0.0.1', port: udpPort } },
      bitrateBps: 100_000,
      durationMs: 200,
    });
    expect(report.failures).toEqual([]);
    const after = (await (await fetch(`http://${admin}/status`)).json()) as StatusDocument;
    expect(after.pinnedClients).toBe(3);
    expect(after.connectors.reduce((n, c) => n + c.pinnedClients, 0)).toBe(3);
    expect(after.activeFlows.pcoipUdp).toBe(3);

    child.stdin.write('unhealthy conn-b testing the demo\n');
    await out.waitFor(/conn-b: GET \/health now answers 500 \(reason: testing the demo\)/);
    expect(await getHealth('127.0.1.2', Number(connB[1]))).toEqual({ status: 500, body: { code: 500, status: 'Error', reason: 'testing the demo' } });

    child.kill('SIGINT');
    const [code] = (await once(child, 'exit')) as [number | null];
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    expect(out.text).toContain('SIGINT: stopping');
  });
});
