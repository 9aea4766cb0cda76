import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { startTestProxy, testConfig } from '../helpers/proxy.ts';

/**
 * The shipped keepalived example (deploy/keepalived/, docs/ha.md) is parsed by Debian's real
 * keepalived (`--config-test`; .ci/run installs it), so a typo in the example fails here rather
 * than on an operator's machine. Only the script user and path are adapted to this machine.
 */
const DEPLOY = fileURLToPath(new URL('../../deploy/keepalived/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'i10-keepalived-'));

function configTest(text: string): string {
  const file = join(dir, 'keepalived.conf');
  writeFileSync(file, text);
  const r = spawnSync('/usr/sbin/keepalived', ['--config-test', '-f', file], { encoding: 'utf8', timeout: 10_000 });
  if (r.error) throw r.error;
  return `${r.stdout}${r.stderr}`.trim();
}

describe('deploy/keepalived/keepalived.conf', () => {
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const example = readFileSync(join(DEPLOY, 'keepalived.conf'), 'utf8')
    .replace('script_user pcoip-lb', 'script_user nobody')
    .replace('/usr/local/lib/pcoip-lb/check-pcoip-lb.sh', join(DEPLOY, 'check-pcoip-lb.sh'));

  it('parses cleanly with keepalived --config-test', () => {
    expect(configTest(example)).toBe('');
  });

  it('the check fails on a broken example (the test can fail)', () => {
    expect(configTest(example.replace('advert_int 1', 'advrt_int 1'))).toMatch(/Unknown keyword 'advrt_int'/);
  });
});

describe('deploy/keepalived/check-pcoip-lb.sh against a running pcoip-lb', () => {
  it('passes while a Connector takes new clients and fails when none does (falls back to /healthz without /readyz)', async () => {
    const proxy = await startTestProxy(testConfig([{ id: 'conn-a', address: '192.0.2.1', ports: { broker: 443, pcoip: 4172 }, weight: 1, state: 'active' }]));
    // Asynchronously: the admin server answers from this process's event loop.
    const check = () =>
      new Promise<number | null>((resolve) => execFile('/bin/sh', [join(DEPLOY, 'check-pcoip-lb.sh'), proxy.adminUrl], { timeout: 10_000 }, (err) => resolve(err ? (err as { code?: number }).code ?? -1 : 0)));
    try {
      expect(await check()).toBe(0);
      proxy.app.pool.setState('conn-a', 'drain');
      expect(await check()).toBe(1);
      proxy.app.pool.setState('conn-a', 'active');
      expect(await check()).toBe(0);
    } finally {
      await proxy.stop();
    }
    // Nothing listening: not ready.
    expect(await check()).toBe(1);
  });
});
