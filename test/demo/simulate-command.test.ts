import { afterAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { parse } from 'yaml';
import { configSchema } from '../../src/config/schema.ts';
import { runLoad } from '../../src/sim/load.ts';
import { CLI, Output, getHealth } from '../helpers/spawned.ts';

describe('pcoip-lb simulate', () => {
  let child: ChildProcessWithoutNullStreams | undefined;

  afterAll(() => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
  });

  it('runs N simulated Connectors, prints a connectors: block that pcoip-lb accepts, takes health commands, stops on SIGINT', async () => {
    child = spawn(process.execPath, [CLI, 'simulate', '--connectors', '2', '--host-base', '127.0.1.', '--unhealthy', 'conn-b', '--log-level', 'warn'], { stdio: 'pipe' });
    const out = new Output(child);
    await out.waitFor(/Type "unhealthy <id>/);

    const block = /^connectors:\n(?: {2}- .*\n)+/m.exec(out.text)?.[0];
    expect(block).toBeDefined();
    const config = configSchema.parse({ listeners: { broker: { bind: '127.0.0.1:0' } }, ...(parse(block!) as object) });
    expect(config.connectors.map((c) => [c.id, c.address])).toEqual([
      ['conn-a', '127.0.1.1'],
      ['conn-b', '127.0.1.2'],
    ]);
    const [a, b] = config.connectors;

    expect(await getHealth(a!.address, a!.ports.broker)).toEqual({ status: 200, body: { code: 200, status: 'success' } });
    expect(await getHealth(b!.address, b!.ports.broker)).toEqual({ status: 500, body: { code: 500, status: 'Error', reason: 'unhealthy since start (--unhealthy)' } });
    child.stdin.write('healthy conn-b\n');
    await out.waitFor(/conn-b: GET \/health now answers 200/);
    expect((await getHealth(b!.address, b!.ports.broker)).status).toBe(200);

    // The printed ports are the Connectors' real ones: a user logs in and streams straight to conn-a.
    const report = await runLoad({ users: 1, target: { broker: { host: a!.address, port: a!.ports.broker } }, bitrateBps: 100_000, durationMs: 200 });
    expect(report.failures).toEqual([]);
    expect(report.perConnector.map((c) => c.id)).toEqual(['conn-a']);

    child.kill('SIGINT');
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(0);
  });
});
