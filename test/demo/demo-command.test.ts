import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import type { StatusDocument } from '../../src/admin/status.ts';
import { runLoad } from '../../src/sim/load.ts';
import { CLI, Output, getHealth } from '../helpers/spawned.ts';

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
