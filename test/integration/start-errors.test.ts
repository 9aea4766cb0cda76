import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, runCli } from '../helpers/cli.ts';

/**
 * A `start` that fails before it runs: with stdout a pipe (a service manager, a container
 * runtime), the error is one JSON line on stdout like every log line, and stderr stays empty; on
 * a terminal it stays the human line on stderr.
 */
describe('fatal start errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plb13b-start-'));
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'listeners:\n  pcoipTcp: { bind: "0.0.0.0" }\nconnectors:\n  - { id: a, address: 192.0.2.1 }\n');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('are a JSON log line on stdout when stdout is a pipe', async () => {
    const r = await runCli(['--log-level', 'info', 'start', '--config', bad]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('');
    const lines = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 60, app: 'pcoip-lb', code: 'PLB_E_CONFIG_INVALID' });
    expect(String(lines[0]!.msg)).toContain(bad);
    expect(lines[0]!.details).toEqual([expect.stringContaining(`${bad}:2:15 listeners.pcoipTcp.bind`)]);
    expect(Number.isNaN(Date.parse(String(lines[0]!.time)))).toBe(false);
  });

  it('stay the human line on a terminal (util-linux script gives the CLI a pty)', () => {
    const r = spawnSync('script', ['-q', '-e', '-c', `${process.execPath} ${CLI} start --config ${bad}`, '/dev/null'], { encoding: 'utf8', timeout: 15_000 });
    expect(r.status).toBe(1);
    expect(r.stdout).toContain(`error PLB_E_CONFIG_INVALID: ${bad}`);
    expect(r.stdout).not.toContain('"level":60');
  });
});
