import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { createLab, labUnavailable, type NetnsLab } from '../helpers/netns.ts';

/**
 * A reload whose table the kernel refuses leaves the data plane on its previous plan, in memory
 * as in the kernel: the driver (run in the lab's lb namespace, real nft and conntrack) reconfigures
 * onto a table nft rejects, then creates forwarded flows and reports who they were attributed to.
 * Needs root; skipped otherwise.
 */

const unavailable = labUnavailable();
if (unavailable) process.stdout.write(`kernel-reconfigure.test.ts skipped: ${unavailable}\n`);
const DRIVER = fileURLToPath(new URL('../helpers/kernel-reload-driver.ts', import.meta.url));

describe.skipIf(unavailable !== undefined)('kernel data plane reconfigure refused by nft', () => {
  let lab: NetnsLab;
  beforeAll(() => {
    lab = createLab({ users: 1, connectors: 3 });
  });
  afterAll(() => lab?.remove());

  it('keeps the old plan: flows to the old targets are still attributed to their Connectors', () => {
    const out = lab.run(lab.lb, process.execPath, [DRIVER, 'i11_reconf']);
    const report = JSON.parse(out.trim().split('\n').pop()!) as { reconfigureError?: string; opened: Record<string, number>; tableHasConnB: boolean };
    expect(report.reconfigureError).toMatch(/nft refused table inet i11_reconf/);
    expect(report.tableHasConnB).toBe(true); // the kernel kept the old table (one transaction)
    expect(report.opened).toEqual({ 'conn-a': 1, 'conn-b': 1 });
    expect(lab.run(lab.lb, 'nft', ['list', 'ruleset'])).toBe('');
  }, 30_000);
});
