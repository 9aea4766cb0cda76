import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

const ROOT = new URL('../..', import.meta.url).pathname;
/** Every file in the repository (tracked or new, not ignored): what a fresh clone has. */
const files = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' })
  .split('\n')
  .filter((f) => f && existsSync(join(ROOT, f)));

describe('docs the code relies on live in the repository', () => {
  it('no file points at the workspace-only shared/ folder (PCOIP.md, DESIGN.md)', () => {
    const offenders = files
      .filter((f) => /\.(ts|js|mjs|md|yaml|yml|json|sh)$/.test(f) || f === 'Dockerfile')
      .filter((f) => f !== 'test/docs/links.test.ts')
      .filter((f) => /shared\/(PCOIP|DESIGN)\.md|\b(PCOIP|DESIGN)\.md\b/.test(readFileSync(join(ROOT, f), 'utf8')));
    expect(offenders).toEqual([]);
  });

  it('every relative link in the Markdown files resolves to a file or folder of the repository', () => {
    const broken: string[] = [];
    for (const file of files.filter((f) => f.endsWith('.md'))) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^(https?:|mailto:|#)/.test(target!)) continue;
        const path = target!.split('#')[0]!;
        if (!existsSync(join(ROOT, dirname(file), path))) broken.push(`${file}: ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });
});
