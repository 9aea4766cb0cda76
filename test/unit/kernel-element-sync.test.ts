import { describe, expect, it } from 'vitest';
import { ElementSync } from '../../src/kernel/element-sync.ts';
import { renderReplaceElements } from '../../src/kernel/nft-script.ts';
import { forwardedListeners, type MapElement } from '../../src/kernel/plan.ts';
import { createLogger } from '../../src/logger.ts';
import { LogCapture } from '../helpers/proxy.ts';

const el = (key: string, address: string): MapElement => ({ family: 4, key, target: { address, port: 4172 }, connectorId: 'a' });
const plan = {
  table: 'pcoip_lb',
  owner: { pid: 1, startTicks: 1 },
  listeners: forwardedListeners([{ proto: 'udp', address: '198.18.0.1', port: 4172 }]),
  targets: [],
  snat: {},
  prefixes: { ipv4: 32, ipv6: 64 },
};

describe('ElementSync', () => {
  it('never rejects: a batch that throws before nft is counted and logged, and the next request runs a new batch', async () => {
    const logs = new LogCapture();
    const scripts: string[] = [];
    // An element the script renderer refuses (not an IPv4 address), then a good one.
    let desired = new Map([['4|bad', el('198.18.1.1', 'not-an-address')]]);
    const sync = new ElementSync({
      apply: async (script) => void scripts.push(script),
      desired: () => desired,
      replaceAll: (elements) => renderReplaceElements(plan, elements),
      table: 'pcoip_lb',
      logger: createLogger('info', logs),
      coalesceMs: 0,
    });
    await expect(sync.request()).resolves.toBeUndefined();
    expect(sync.counts.failures).toBe(1);
    expect(logs.lines.filter((l) => l.msg === 'kernel data plane: a client map batch failed before reaching nft')).toHaveLength(1);

    desired = new Map([['4|198.18.1.1', el('198.18.1.1', '198.19.0.11')]]);
    await expect(sync.request()).resolves.toBeUndefined();
    expect(scripts).toEqual(['add element inet pcoip_lb client4 { 198.18.1.1 : 198.19.0.11 . 4172 }\n']);
    expect([...sync.elements.keys()]).toEqual(['4|198.18.1.1']);
  });
});
