import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { PoolStatus } from '../../src/admin/status.ts';
import { runLoad } from '../../src/sim/load.ts';
import { CLI, Output, getHealth } from '../helpers/spawned.ts';

const run = promisify(execFile);
const ROOT = new URL('../..', import.meta.url).pathname;

describe('pcoip-lb demo (npm start)', { timeout: 40_000 }, () => {
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

  it('starts 3 simulated Connectors and pcoip-lb, answers GET /status, takes users, takes out a Connector made unhealthy, stops on SIGINT', async () => {
    const admin = (await out.waitFor(/admin +http:\/\/(127\.0\.0\.1:\d+)\//))[1]!;
    const listeners = await out.waitFor(/broker 127\.0\.0\.1:(\d+)\/tcp +pcoip 127\.0\.0\.1:(\d+)\/tcp 127\.0\.0\.1:(\d+)\/udp/);
    const [brokerPort, udpPort] = [Number(listeners[1]), Number(listeners[3])];
    // --pcoip 127.0.0.1:0: one port for 4172/TCP and 4172/UDP (the Connectors hand out one).
    expect(Number(listeners[2])).toBe(udpPort);
    const connB = await out.waitFor(/conn-b +127\.0\.1\.2 +broker :(\d+)/);

    const status = (await (await fetch(`http://${admin}/status`)).json()) as PoolStatus;
    expect(status.connectors.map((c) => [c.id, c.address, c.state, c.health])).toEqual([
      ['conn-a', '127.0.1.1', 'active', 'up'],
      ['conn-b', '127.0.1.2', 'active', 'up'],
      ['conn-c', '127.0.1.3', 'active', 'up'],
    ]);
    expect(status.clients).toBe(0);

    // Three users through the demo's pcoip-lb; 4172/TCP goes where allocate-resource-resp points
    // (the simulators advertise pcoip-lb's address), UDP to the demo's UDP listener.
    const report = await runLoad({
      users: 3,
      target: { broker: { host: '127.0.0.1', port: brokerPort }, pcoipUdp: { host: '127.0.0.1', port: udpPort } },
      bitrateBps: 100_000,
      durationMs: 200,
    });
    expect(report.failures).toEqual([]);
    const after = (await (await fetch(`http://${admin}/status`)).json()) as PoolStatus;
    expect(after.clients).toBe(3);
    expect(after.connectors.reduce((n, c) => n + c.pinnedClients, 0)).toBe(3);
    expect(after.connectors.reduce((n, c) => n + c.flows.pcoipUdp.active, 0)).toBe(3);

    // "unhealthy conn-b" on stdin: the simulator's /health answers 500, and pcoip-lb's health
    // checks (demo.yaml: every 2 s, fall 2) take conn-b out with that reason.
    // The banner's "try next" command, as printed, with fewer users: from the checkout, on a
    // machine whose first node is the one in /usr/bin (Debian's 20 here and in CI).
    const tryNext = (await out.waitFor(/^ +(\.\/scripts\/node24\.sh npm run bench:sessions -- .*)$/m))[1]!;
    const bench = await run('bash', ['-c', tryNext.replace('--users 50 --duration 5s', '--users 2 --duration 1s')], {
      cwd: ROOT,
      env: { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH}` },
      timeout: 30_000,
    });
    expect(bench.stdout).toMatch(/users ok \/ failed +\| 2 \/ 0 /);

    child.stdin.write('unhealthy conn-b testing the demo\n');
    await out.waitFor(/conn-b: GET \/health now answers 500 \(reason: testing the demo\)/);
    expect(await getHealth('127.0.1.2', Number(connB[1]))).toEqual({ status: 500, body: { code: 500, status: 'Error', reason: 'testing the demo' } });
    const connBStatus = async () => ((await (await fetch(`http://${admin}/status`)).json()) as PoolStatus).connectors.find((c) => c.id === 'conn-b')!;
    let down = await connBStatus();
    for (let i = 0; i < 60 && down.health !== 'down'; i++) {
      await new Promise((r) => setTimeout(r, 250));
      down = await connBStatus();
    }
    expect({ health: down.health, takesNewClients: down.takesNewClients }).toEqual({ health: 'down', takesNewClients: false });
    expect(down.healthReason).toContain('testing the demo');

    child.kill('SIGINT');
    const [code] = (await once(child, 'exit')) as [number | null];
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    expect(out.text).toContain('SIGINT: stopping');
  });
});
