import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { tcpGreeting } from '../helpers/clients.ts';
import { echo } from '../helpers/flow-clients.ts';
import { runCli } from '../helpers/cli.ts';
import { startCli, rawTestConfig, writeConfig, hasMsg, type CliProcess } from '../helpers/cli-process.ts';

/** SIGHUP and `pcoip-lb reload` against the real process. */
describe('reload through SIGHUP and `pcoip-lb reload`', () => {
  let a: FakeConnector;
  let b: FakeConnector;
  let cli: CliProcess | undefined;

  beforeAll(async () => {
    [a, b] = (await Promise.all(['hup-a', 'hup-b'].map((id, i) => startFakeConnector(id, `127.0.1.${90 + i}`)))) as [FakeConnector, FakeConnector];
  });
  afterEach(async () => {
    await cli?.cleanup();
    cli = undefined;
  });
  afterAll(async () => {
    await Promise.all([a, b].map((x) => x.close()));
  });

  const reloadedLines = () => cli!.lines.filter(hasMsg('config reloaded'));

  it('SIGHUP applies a changed file; an invalid one is rejected with file:line and key path, and the old config keeps serving', async () => {
    cli = await startCli(rawTestConfig([a.config()]));
    const control = await tcpGreeting(cli.ports.pcoipTcp!, '127.0.2.160');
    expect(control.id).toBe('hup-a');

    writeConfig(cli.configPath, rawTestConfig([a.config(), b.config(9)]));
    cli.child.kill('SIGHUP');
    const reloaded = await cli.waitForLine(hasMsg('config reloaded'));
    expect(reloaded.connectors).toEqual({ added: ['hup-b'], removed: [], changed: [] });
    await echo(control.socket, 'still-open');
    // The pinned client stays on hup-a despite hup-b's weight.
    const again = await tcpGreeting(cli.ports.broker!, '127.0.2.160');
    expect(again.id).toBe('hup-a');
    again.socket.destroy();

    writeConfig(cli.configPath, 'listeners:\n  broker: { bind: "127.0.0.1:0" }\nconnectors:\n  - { id: x, address: 127.0.1.1, weight: 0 }\n');
    cli.child.kill('SIGHUP');
    const rejected = await cli.waitForLine(hasMsg('reload rejected'));
    expect(rejected).toMatchObject({ level: 50, code: 'PLB_E_CONFIG_INVALID', file: cli.configPath });
    expect(rejected.errors).toEqual([expect.stringMatching(new RegExp(`^${cli.configPath}:4:\\d+ connectors\\[0\\]\\.weight: `))]);
    await echo(control.socket, 'after-rejected');
    expect(reloadedLines()).toHaveLength(1);
    const stillB = await tcpGreeting(cli.ports.broker!, '127.0.2.161');
    expect(['hup-a', 'hup-b']).toContain(stillB.id);
    stillB.socket.destroy();
    control.socket.destroy();
  });

  it('`pcoip-lb reload` asks the admin API and prints what was applied, or every error of a rejected file', async () => {
    cli = await startCli(rawTestConfig([a.config()]));
    writeConfig(cli.configPath, rawTestConfig([a.config(), b.config()], { affinity: { ipv4Prefix: 24 } }));
    const ok = await runCli(['reload', '--config', cli.configPath, '--admin', cli.adminUrl!]);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('reloaded: Connectors added [hup-b], removed [], changed []');
    expect(ok.stdout).toContain('needs a restart (running value kept): affinity.ipv4Prefix');
    await cli.waitForLine(hasMsg('config reloaded'));

    // Valid for `check-config` but not for the running process: a health CA file that does not
    // exist is only found when applied; the process answers 422 and keeps its config.
    writeConfig(cli.configPath, rawTestConfig([a.config()], { health: { checks: [], tls: { ca: '/nonexistent/ca.pem' } } }));
    const rejected = await runCli(['reload', '--config', cli.configPath, '--admin', cli.adminUrl!]);
    expect(rejected.code).toBe(1);
    expect(rejected.stderr).toMatch(/reload rejected: [^\n]*\n +\S+:\d+:\d+ health\.tls\.ca: cannot read \/nonexistent\/ca\.pem: no such file/);
    expect(cli.lines.filter(hasMsg('config reloaded'))).toHaveLength(1);
    const still = await tcpGreeting(cli.ports.broker!, '127.0.2.170');
    expect(['hup-a', 'hup-b']).toContain(still.id);
    still.socket.destroy();
  });

  it('`pcoip-lb reload` validates the file, then signals the pid in pidFile when the admin API is not reachable', async () => {
    const pidDir = mkdtempSync(join(tmpdir(), 'plb-pid-'));
    const raw = (connectors: ReturnType<FakeConnector['config']>[]) => ({ ...rawTestConfig(connectors), pidFile: join(pidDir, 'plb.pid') });
    cli = await startCli(raw([a.config()]));
    expect(readFileSync(join(pidDir, 'plb.pid'), 'utf8').trim()).toBe(String(cli.child.pid));

    writeConfig(cli.configPath, 'connectors: [}');
    const invalid = await runCli(['reload', '--config', cli.configPath]);
    expect(invalid.code).toBe(1);
    expect(invalid.stderr).toContain('PLB_E_CONFIG_PARSE');

    writeConfig(cli.configPath, raw([a.config(), b.config()]));
    const ok = await runCli(['reload', '--config', cli.configPath]);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    // admin.bind in the file says port 0 (the running one is elsewhere): the command falls back.
    expect(ok.stdout).toContain('admin API not reachable');
    expect(ok.stdout).toContain(`sent SIGHUP to pcoip-lb (pid from ${join(pidDir, 'plb.pid')}: ${cli.child.pid})`);
    const reloaded = await cli.waitForLine(hasMsg('config reloaded'));
    expect(reloaded.connectors).toMatchObject({ added: ['hup-b'] });
    // The invalid file never reached the process: one reload only.
    expect(cli.lines.filter(hasMsg('reloading config'))).toHaveLength(1);
    // A clean exit removes the pid file.
    cli.child.kill('SIGTERM');
    expect(await cli.exited).toBe(0);
    expect(existsSync(join(pidDir, 'plb.pid'))).toBe(false);
    rmSync(pidDir, { recursive: true, force: true });
  });

  it('`pcoip-lb reload` with neither admin API nor pidFile says how to reach the process; --pid works', async () => {
    cli = await startCli(rawTestConfig([a.config()], { admin: { enabled: false } }));
    const result = await runCli(['reload', '--config', cli.configPath]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/PLB_E_RELOAD: .*enable admin \(admin\.enabled\), set pidFile, pass --pid/);
    const byPid = await runCli(['reload', '--config', cli.configPath, '--pid', String(cli.child.pid)]);
    expect(byPid.code).toBe(0);
    await cli.waitForLine(hasMsg('config reloaded'));
  });
});
