import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseDocument } from 'yaml';
import { runCli, startCli } from '../helpers/cli.ts';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { tcpGreeting, udpRoundTrip } from '../helpers/clients.ts';

const dir = mkdtempSync(join(tmpdir(), 'plb-cli-'));
const EXAMPLE = new URL('../../config/pcoip-lb.yaml', import.meta.url).pathname;

describe('pcoip-lb check-config', () => {
  it('exits 0 and says OK for the annotated example', async () => {
    const r = await runCli(['check-config', '--config', EXAMPLE]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/pcoip-lb\.yaml: OK \(2 Connector\(s\); listeners: broker, pcoipTcp, pcoipUdp\)/);
  });

  it('exits non-zero listing every error with file, line and key path', async () => {
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'listeners:\n  pcoipTcp: { bind: "0.0.0.0" }\nconnectors:\n  - { id: a, address: 192.0.2.1 }\n  - { id: b, address: "not a host" }\n');
    const r = await runCli(['check-config', '-c', file]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`error PLB_E_CONFIG_INVALID: ${file}: 2 config errors`);
    expect(r.stderr).toContain(`${file}:2:15 listeners.pcoipTcp.bind: expected "host:port", got "0.0.0.0"`);
    expect(r.stderr).toMatch(new RegExp(`${file}:5:\\d+ connectors\\[1\\]\\.address: `));
  });

  it('names a missing file', async () => {
    const r = await runCli(['check-config', '-c', join(dir, 'missing.yaml')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('PLB_E_CONFIG_READ');
    expect(r.stderr).toContain('missing.yaml: cannot read config: no such file');
  });

  it('runs the checks start makes (files named by the config), each at its line, and prints warnings', async () => {
    const doc = parseDocument(readFileSync(EXAMPLE, 'utf8'));
    doc.setIn(['health', 'tls', 'ca'], join(dir, 'no-ca.pem'));
    doc.setIn(['admin', 'token'], doc.createNode({ file: join(dir, 'no-token') }));
    const file = join(dir, 'files.yaml');
    writeFileSync(file, doc.toString());
    const r = await runCli(['check-config', '-c', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`error PLB_E_CONFIG_INVALID: ${file}: 2 config errors`);
    expect(r.stderr).toMatch(new RegExp(`\\n  ${file}:\\d+:\\d+ health\\.tls\\.ca: cannot read ${dir}/no-ca\\.pem: no such file\\n  ${file}:\\d+:\\d+ admin\\.token\\.file: ${dir}/no-token: cannot read: ENOENT\\n`));

    doc.setIn(['health', 'checks'], doc.createNode(['pcoip']));
    // Loopback Connectors: should start ever get past its checks here, its health checks stay on this machine.
    doc.setIn(['connectors', 0, 'address'], '127.0.1.232');
    doc.setIn(['connectors', 1, 'address'], '127.0.1.233');
    doc.deleteIn(['health', 'tls', 'ca']);
    doc.setIn(['admin', 'token'], doc.createNode({ env: 'PLB13_UNSET_TOKEN' }));
    writeFileSync(file, doc.toString());
    const warned = await runCli(['check-config', '-c', file]);
    expect(warned.code, warned.stderr).toBe(0);
    expect(warned.stdout).toMatch(/files\.yaml: OK \(2 Connector\(s\); listeners: broker, pcoipTcp, pcoipUdp; 2 warning\(s\)\)/);
    expect(warned.stderr).toMatch(/^warning: \S+:\d+:\d+ health\.checks: no broker check: .*\(PLB_W_NO_BROKER_CHECK\)$/m);
    expect(warned.stderr).toMatch(/^warning: \S+:\d+:\d+ admin\.token\.env: PLB13_UNSET_TOKEN: no token there \(empty or unset\) in this shell; .*\(PLB_W_ADMIN_TOKEN_ENV\)$/m);
    // start, with the same file, refuses: its environment is the one that counts. Its stdout is a
    // pipe here, so the fatal error is one JSON log line there, like every other line.
    const start = await runCli(['start', '-c', file]);
    expect(start.code).toBe(1);
    const fatal = JSON.parse(start.stdout.trim().split('\n').at(-1)!) as { level: number; msg: string; details?: string[] };
    expect(fatal.level).toBe(60);
    expect(JSON.stringify(fatal)).toMatch(/admin\.token\.env: PLB13_UNSET_TOKEN: no token there/);
  }, 60_000);

  it('checks the cluster store password and CA as start reads them, each at its line', async () => {
    const doc = parseDocument(readFileSync(EXAMPLE, 'utf8'));
    doc.setIn(['cluster'], doc.createNode({ instanceId: 'lb-i10', redis: { url: 'rediss://127.0.0.1:6399', password: { file: join(dir, 'no-redis-pass') }, tls: { ca: join(dir, 'no-redis-ca.pem') } } }));
    const file = join(dir, 'cluster.yaml');
    writeFileSync(file, doc.toString());
    const r = await runCli(['check-config', '-c', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`error PLB_E_CONFIG_INVALID: ${file}: 2 config errors`);
    expect(r.stderr).toMatch(new RegExp(`\\n  ${file}:\\d+:\\d+ cluster\\.redis\\.password\\.file: ${dir}/no-redis-pass: cannot read: ENOENT\\n  ${file}:\\d+:\\d+ cluster\\.redis\\.tls\\.ca: cannot read ${dir}/no-redis-ca\\.pem: no such file\\n`));
    // The password from a variable this shell does not have: a warning (start's environment is the one that counts).
    doc.setIn(['cluster', 'redis', 'password'], doc.createNode({ env: 'PLB_I10_UNSET_REDIS_PASS' }));
    doc.deleteIn(['cluster', 'redis', 'tls']);
    writeFileSync(file, doc.toString());
    const warned = await runCli(['check-config', '-c', file]);
    expect(warned.code, warned.stderr).toBe(0);
    expect(warned.stderr).toMatch(/^warning: \S+:\d+:\d+ cluster\.redis\.password\.env: PLB_I10_UNSET_REDIS_PASS: no password there \(empty or unset\) in this shell; .*\(PLB_W_CLUSTER_PASSWORD_ENV\)$/m);
  }, 60_000);

  it('--log-level only where it changes something; reload --help names --config; completion', async () => {
    // Three at a time, each allowed 45 s: every one is a Node start-up, slow on a loaded 2-core machine.
    const commands = ['start', 'demo', 'simulate', 'check-config', 'reload', 'status', 'drain', 'enable', 'maint'];
    const helps: Array<readonly [string, string]> = [];
    for (let i = 0; i < commands.length; i += 3) {
      helps.push(...(await Promise.all(commands.slice(i, i + 3).map(async (c) => [c, (await runCli([c, '--help'], 45_000)).stdout] as const))));
    }
    for (const [command, help] of helps) {
      if (['start', 'demo', 'simulate'].includes(command)) expect(help, command).toContain('--log-level');
      else expect(help, command).not.toContain('--log-level');
    }
    const refused = await runCli(['check-config', '-c', EXAMPLE, '--log-level', 'debug']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('Unknown argument');
    const reload = (await runCli(['reload', '--help'])).stdout;
    expect(reload).toContain('validates the --config file');
    expect(reload).not.toContain('FILE');
    const completion = await runCli(['completion']);
    expect(completion.code).toBe(0);
    expect(completion.stdout).toContain('pcoip-lb --get-yargs-completions');
    const words = await runCli(['--get-yargs-completions', 'dr']);
    expect(words.stdout.split('\n')).toContain('drain');
  }, 180_000);

  it('--admin takes host:port or a URL, and says so for anything else', async () => {
    // Nothing listens on port 1: both spellings reach the same "unreachable" answer, not a URL error.
    for (const admin of ['127.0.0.1:1', 'http://127.0.0.1:1', 'http://127.0.0.1:1/']) {
      const r = await runCli(['status', '--admin', admin]);
      expect(r.stderr, admin).toContain('PLB_E_ADMIN_UNREACHABLE: cannot reach the admin API at http://127.0.0.1:1');
    }
    const bad = await runCli(['drain', 'conn-a', '--admin', 'http://127.0.0.1:1/status']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('error PLB_E_USAGE: --admin "http://127.0.0.1:1/status": give the server\'s address only, without a path');
    expect((await runCli(['reload', '-c', EXAMPLE, '--admin', 'nope'])).stderr).toContain('error PLB_E_USAGE: --admin "nope": expected "host:port"');
  }, 60_000);

  it('has --help on every command and --version', async () => {
    for (const args of [['--help'], ['start', '--help'], ['check-config', '--help']]) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/--config|Commands:/);
    }
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect((await runCli(['--version'])).stdout.trim()).toBe(pkg.version);
    const none = await runCli([]);
    expect(none.code).not.toBe(0);
    expect(none.stderr).toContain('name a command');
  });
});

describe('pcoip-lb start with the example config, pointed at local Connectors', () => {
  let connectors: FakeConnector[];

  beforeAll(async () => {
    connectors = await Promise.all(['conn-a', 'conn-b'].map((id, i) => startFakeConnector(id, `127.0.1.${60 + i}`)));
  });
  afterAll(async () => {
    await Promise.all(connectors.map((c) => c.close()));
  });

  it('proxies all three flows with one affinity record per client, logs, and stops on SIGTERM', async () => {
    // The shipped example, with only addresses and ports changed to this machine's loopback.
    const doc = parseDocument(readFileSync(EXAMPLE, 'utf8'));
    for (const name of ['broker', 'pcoipTcp', 'pcoipUdp']) doc.setIn(['listeners', name, 'bind'], '127.0.0.1:0');
    // The admin server on a free port; no active checks (these plain-TCP fakes have no HTTPS /health).
    doc.setIn(['admin', 'bind'], '127.0.0.1:0');
    doc.setIn(['health', 'checks'], doc.createNode([]));
    connectors.forEach((c, i) => {
      doc.setIn(['connectors', i, 'address'], c.host);
      doc.setIn(['connectors', i, 'ports'], doc.createNode({ broker: c.brokerPort, pcoip: c.pcoipPort }));
    });
    // UDP flows outlive their clients until idleTimeout, and shutdown lets them run up to the
    // grace period: keep it short so the SIGTERM below does not wait the example's 10 s.
    doc.setIn(['shutdown', 'grace'], '1s');
    // The single-process path (the example's workers: auto would fork one worker per core).
    doc.setIn(['workers'], 1);
    const file = join(dir, 'local.yaml');
    writeFileSync(file, doc.toString());

    const proc = startCli(['start', '--config', file]);
    try {
      const started = await proc.waitForLine((l) => String(l.msg).startsWith('pcoip-lb started'));
      // checks: [] here: start says what that costs, with the key.
      expect(proc.lines.find((l) => l.code === 'PLB_W_NO_BROKER_CHECK')).toMatchObject({ level: 40, key: 'health.checks', msg: expect.stringContaining('active health checks are off') });
      const listeners = started.listeners as Record<string, string>;
      const port = (name: string) => Number(/:(\d+)\//.exec(listeners[name]!)![1]);
      const landed = new Map<string, string>();
      for (let i = 1; i <= 10; i++) {
        const client = `127.0.2.${100 + i}`;
        const broker = await tcpGreeting(port('broker'), client);
        const control = await tcpGreeting(port('pcoipTcp'), client);
        const media = (await udpRoundTrip(port('pcoipUdp'), client, Buffer.from('m'))).toString().split('|')[0];
        expect([control.id, media], client).toEqual([broker.id, broker.id]);
        landed.set(client, broker.id);
        broker.socket.end();
        control.socket.end();
      }
      expect(new Set(landed.values()).size).toBe(2);
      // `pcoip-lb status` against the running process, through its admin API.
      const status = await runCli(['status', '--admin', String(started.admin)]);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).toMatch(/^pcoip-lb \S+ · up \d+ s · \d+ live session\(s\), 10 pinned client\(s\) · \d+ flow\(s\) · 2\/2 Connector\(s\) take new clients\n/);
      expect(status.stdout).toMatch(/^CONNECTOR +ADDRESS +HEALTH +STATE +LIVE\/PINNED/m);
      for (const c of connectors) expect(status.stdout).toMatch(new RegExp(`^${c.id} +${c.host.replace(/\./g, '\\.')} +up +active +\\d+/${[...landed.values()].filter((id) => id === c.id).length} `, 'm'));
      await proc.waitForLine((l) => l.msg === 'flow closed' && l.listener === 'pcoipTcp');
      proc.child.kill('SIGTERM');
      expect(await proc.exit).toBe(0);
      expect(proc.lines.some((l) => l.msg === 'stopped')).toBe(true);
    } finally {
      proc.child.kill('SIGKILL');
    }
  });

  it('exits non-zero with a clear message when a listener cannot bind', async () => {
    const file = join(dir, 'conflict.yaml');
    // Another server already holds the address.
    const holder = await startFakeConnector('holder', '127.0.1.70');
    // admin on port 0 too: the default 127.0.0.1:8404 may be taken (by a running demo).
    writeFileSync(file, `listeners:\n  pcoipTcp: { bind: "127.0.1.70:${holder.brokerPort}" }\nconnectors:\n  - { id: a, address: 127.0.1.61 }\nadmin: { bind: "127.0.0.1:0" }\n`);
    try {
      const r = await runCli(['start', '-c', file]);
      expect(r.code).not.toBe(0);
      // stdout is a pipe here: the error is a JSON log line like every other (see start-errors.test.ts).
      const fatal = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.level === 60);
      expect(fatal).toMatchObject({ code: 'PLB_E_LISTEN', msg: `listeners.pcoipTcp: cannot listen on 127.0.1.70:${holder.brokerPort}: EADDRINUSE` });
      // The options before the command name (yargs takes them): still start's JSON line.
      const before = await runCli(['-c', file, 'start']);
      expect(before.code).not.toBe(0);
      expect(before.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.level === 60)).toMatchObject({ code: 'PLB_E_LISTEN' });
      // One clear line, not also a stack trace from the listener's own error handler.
      expect(r.stdout).not.toContain('listener error');
    } finally {
      await holder.close();
    }
  });
});
