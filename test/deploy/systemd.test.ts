import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseConfigText } from '../../src/config/load.ts';

const run = promisify(execFile);
const file = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');
const UNIT = 'deploy/systemd/pcoip-lb.service';
/** Installed by .ci/run (Debian package systemd); it cannot exist off Linux. */
const ANALYZE = '/usr/bin/systemd-analyze';
if (process.platform === 'linux' && !existsSync(ANALYZE)) throw new Error(`${ANALYZE} is missing: apt-get install -y systemd (.ci/run does)`);

/** `Key=value` lines of a unit file (the last one wins, as systemd reads them). */
function directives(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) out.set(m[1]!, m[2]!);
  }
  return out;
}

const defaults = parseConfigText('listeners: { pcoipUdp: { bind: "127.0.0.1:4172" } }\nconnectors: [{ id: a, address: 192.0.2.1 }]\n', 'x.yaml');

describe.skipIf(process.platform !== 'linux')('deploy/systemd (systemd-analyze, systemd-sysusers)', () => {
  let dir: string;
  /** The unit with the pcoip-lb executable pointed at a stub: verify checks executables exist. */
  let unitCopy: (text: string, name?: string) => string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'plb13-systemd-'));
    const stub = join(dir, 'pcoip-lb');
    writeFileSync(stub, '#!/bin/sh\n');
    chmodSync(stub, 0o755);
    unitCopy = (text, name = 'pcoip-lb.service') => {
      const path = join(dir, name);
      writeFileSync(path, text.replaceAll('/usr/local/bin/pcoip-lb', stub));
      return path;
    };
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const verify = (path: string) => run(ANALYZE, ['verify', '--man=no', '--generators=no', path]).then(
    (r) => ({ code: 0, output: r.stdout + r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, output: e.stdout + e.stderr }),
  );

  it('the unit passes systemd-analyze verify without a single warning', async () => {
    expect(await verify(unitCopy(file(UNIT)))).toEqual({ code: 0, output: '' });
  });

  it('verify would notice a mistake (so the check above can fail)', async () => {
    const typo = await verify(unitCopy(file(UNIT).replace('TimeoutStopSec=', 'TimeoutStopSecs='), 'typo.service'));
    expect(typo.output).toContain("Unknown key 'TimeoutStopSecs'");
  });

  it('runs as a non-root user with only CAP_NET_BIND_SERVICE, reloads by SIGHUP, outlasts shutdown.grace, restarts, lifts the fd limit', () => {
    const d = directives(file(UNIT));
    expect(d.get('User')).toBe('pcoip-lb');
    expect(d.get('AmbientCapabilities')).toBe('CAP_NET_BIND_SERVICE');
    expect(d.get('CapabilityBoundingSet')).toBe('CAP_NET_BIND_SERVICE');
    expect(d.get('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(d.get('KillSignal')).toBe('SIGTERM');
    expect(d.get('ExecStart')).toBe('/usr/local/bin/pcoip-lb start --config /etc/pcoip-lb/pcoip-lb.yaml');
    expect(d.get('ExecStartPre')).toBe('/usr/local/bin/pcoip-lb check-config --config /etc/pcoip-lb/pcoip-lb.yaml');
    expect(d.get('Restart')).toBe('on-failure');
    expect(Number(d.get('LimitNOFILE'))).toBeGreaterThanOrEqual(65_536);
    const stopMs = Number(/^(\d+)s$/.exec(d.get('TimeoutStopSec') ?? '')?.[1]) * 1000;
    expect(stopMs).toBeGreaterThan(defaults.shutdown.grace);
  });

  it('the sysusers file creates the user (dry run into an empty root)', async () => {
    const root = join(dir, 'root');
    const r = await run('systemd-sysusers', ['--dry-run', `--root=${root}`, new URL('../../deploy/systemd/pcoip-lb.sysusers.conf', import.meta.url).pathname]);
    expect(r.stdout + r.stderr).toMatch(/Creating user 'pcoip-lb'/);
  });

  it('the sysctl file raises the buffer caps to at least the default UDP socket buffer, with keys this kernel knows', () => {
    const entries = file('deploy/systemd/pcoip-lb.sysctl.conf')
      .split('\n')
      .filter((l) => l.trim() && !l.startsWith('#'))
      .map((l) => l.split('=').map((s) => s.trim()) as [string, string]);
    expect(entries.map(([k]) => k)).toEqual(['net.core.rmem_max', 'net.core.wmem_max']);
    for (const [key, value] of entries) {
      expect(existsSync(`/proc/sys/${key.replaceAll('.', '/')}`), key).toBe(true);
      expect(Number(value), key).toBeGreaterThanOrEqual(defaults.listeners.pcoipUdp!.recvBufferSize);
    }
  });
});
