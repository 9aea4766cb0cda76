import { describe, expect, it } from 'vitest';
import { runTool } from '../../src/kernel/tools.ts';

describe('runTool output cap', () => {
  it('says when it stopped collecting at the cap (32 MiB by default), so a cut listing is not taken as whole', async () => {
    const over = await runTool('sh', ['-c', `head -c ${32 * 1024 * 1024 + 1} /dev/zero`]);
    expect(over.code).toBe(0);
    expect(over.truncated).toBe(true);
    expect(over.stdout.length).toBeLessThanOrEqual(32 * 1024 * 1024);

    const small = await runTool('sh', ['-c', 'printf "a\\nb\\nc\\n"'], { maxOutputBytes: 6 });
    expect(small).toMatchObject({ code: 0, truncated: false, stdout: 'a\nb\nc\n' });
    const cut = await runTool('sh', ['-c', 'printf "a\\nb\\nc\\n"'], { maxOutputBytes: 5 });
    expect(cut.truncated).toBe(true);
  });
});
