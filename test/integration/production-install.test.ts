import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = new URL('../..', import.meta.url).pathname;

/**
 * A production install — `npm ci --omit=dev`, as the Dockerfile's runtime stage has it — runs
 * `start` without the dev dependencies: `selfsigned` (used only by the simulators behind `demo`
 * and `simulate`) is not there, and nothing `start` loads needs it. The sources run as .ts from
 * the copy (Node >= 22.18), so no build output can hide a stale import.
 */
describe('a production install (npm ci --omit=dev)', { timeout: 120_000 }, () => {
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'plb13-prod-'));
    for (const entry of ['package.json', 'package-lock.json', 'src', 'config', 'bin']) cpSync(join(ROOT, entry), join(dir, entry), { recursive: true });
    // --ignore-scripts: `prepare` would build with the (omitted) TypeScript compiler.
    await run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: dir, timeout: 100_000 });
  }, 120_000);

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('has no selfsigned (nor its dependencies) and no dev tools', () => {
    for (const name of ['selfsigned', '@peculiar/x509', 'vitest', 'typescript', 'ajv']) expect(existsSync(join(dir, 'node_modules', name)), name).toBe(false);
    expect(existsSync(join(dir, 'node_modules', 'zod'))).toBe(true);
  });

  it('start runs there, check-config says OK, and demo says it needs the dev dependencies', async () => {
    const config = join(dir, 'prod.yaml');
    writeFileSync(
      config,
      // A loopback Connector and no active checks: nothing is sent anywhere while it runs.
      'listeners:\n  pcoipTcp: { bind: "127.0.0.1:0" }\nconnectors:\n  - { id: a, address: 127.0.1.232 }\nworkers: 1\nhealth: { checks: [] }\nadmin: { bind: "127.0.0.1:0" }\nshutdown: { grace: 0s }\n',
    );
    const check = await run(process.execPath, ['src/cli.ts', 'check-config', '-c', config], { cwd: dir });
    expect(check.stdout).toContain('prod.yaml: OK');

    const child = spawn(process.execPath, ['src/cli.ts', 'start', '-c', config], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    try {
      for (let i = 0; i < 200 && !out.includes('pcoip-lb started') && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
      expect(out, err).toContain('pcoip-lb started');
      child.kill('SIGTERM');
      const [code] = (await once(child, 'exit')) as [number | null];
      expect({ code, err }).toEqual({ code: 0, err: '' });
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }

    const demo = await run(process.execPath, ['src/cli.ts', 'demo'], { cwd: dir }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(demo.code).toBe(1);
    expect(demo.stderr).toContain('error PLB_E_USAGE: pcoip-lb demo needs the development dependencies');
  });
});
