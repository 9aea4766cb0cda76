import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.ts';
import { resolveWorkers } from '../../src/cluster/workers.ts';
import { SyncedAffinityTable } from '../../src/cluster/synced-affinity.ts';
import { FlowStats } from '../../src/proxy/flow-stats.ts';
import type { PinMessage } from '../../src/cluster/protocol.ts';

const base = { listeners: { broker: { bind: '0.0.0.0:443' }, pcoipUdp: { bind: '0.0.0.0:4172' } }, connectors: [{ id: 'a', address: '192.0.2.1' }] };
const terminate = { mode: 'terminate', certificates: [{ cert: '/x.crt', key: '/x.key' }], upstream: { insecure: true } };

describe('resolveWorkers', () => {
  it.each<[string, Record<string, unknown>, number, NodeJS.Platform, number]>([
    ['auto on Linux: one per core', {}, 8, 'linux', 8],
    ['auto on a 1-core machine', {}, 1, 'linux', 1],
    ['auto elsewhere: 1 (no SO_REUSEPORT sharing)', {}, 8, 'darwin', 1],
    ['auto with a terminating broker: 1', { listeners: { ...base.listeners, broker: { bind: '0.0.0.0:443', tls: terminate } } }, 8, 'linux', 1],
    ['an explicit number wins', { workers: 3 }, 8, 'linux', 3],
    ['workers: 1 is the single-process path', { workers: 1 }, 8, 'linux', 1],
  ])('%s', (_name, patch, cores, platform, expected) => {
    const config = configSchema.parse({ ...base, ...patch });
    expect(resolveWorkers(config, cores, platform).count).toBe(expected);
  });

  it('refuses more than one worker with a terminating broker, naming the key', () => {
    const result = configSchema.safeParse({ ...base, workers: 2, listeners: { broker: { bind: '0.0.0.0:443', tls: terminate } } });
    expect(result.success).toBe(false);
    expect(result.error!.issues[0]).toMatchObject({ path: ['workers'] });
  });
});

describe('SyncedAffinityTable', () => {
  it('reports its own pins, not the ones it is told, and batches flow deltas per client', () => {
    const reported: PinMessage[] = [];
    const table = new SyncedAffinityTable(60_000, (p) => reported.push(p));
    table.pin('192.0.2.1/32', 'a', 0, 'placed');
    table.applyRemote({ key: '192.0.2.2/32', connectorId: 'b', reason: 'repinned' }, 0);
    expect(reported).toEqual([{ key: '192.0.2.1/32', connectorId: 'a', reason: 'placed' }]);
    expect(table.get('192.0.2.2/32', 1)?.connectorId).toBe('b');
    table.flowOpened('192.0.2.1/32', 1);
    table.flowOpened('192.0.2.1/32', 1);
    table.flowClosed('192.0.2.1/32', 2);
    table.flowOpened('192.0.2.2/32', 2);
    table.flowClosed('192.0.2.2/32', 3);
    expect(table.takeDeltas()).toEqual([['192.0.2.1/32', 1]]);
    expect(table.takeDeltas()).toEqual([]);
    expect(table.get('192.0.2.1/32', 3)?.flows).toBe(1);
  });
});

describe('FlowStats.replaceWithSum', () => {
  it('becomes the sum of the workers, updating the counter objects readers already hold', () => {
    const w1 = new FlowStats();
    const w2 = new FlowStats();
    w1.opened('pcoipUdp', 'a').bytesIn = 100;
    w2.opened('pcoipUdp', 'a').bytesIn = 50;
    w2.opened('broker', 'b');
    w1.refused('broker', 'max-connections');
    w2.refused('broker', 'max-connections');
    w2.connectFailed('b');
    const primary = new FlowStats();
    const held = primary.counters('a').pcoipUdp;
    primary.replaceWithSum([w1.snapshot(), w2.snapshot()]);
    expect(held).toMatchObject({ active: 2, total: 2, bytesIn: 150 });
    expect(primary.activeFlows('b')).toBe(1);
    expect(primary.refusals.get('broker:max-connections')).toBe(2);
    expect(primary.connectFailures.get('b')).toBe(1);
    // Again with fewer workers (one restarted): no double counting.
    primary.replaceWithSum([w1.snapshot()]);
    expect(held).toMatchObject({ active: 1, bytesIn: 100 });
    expect(primary.activeFlows('b')).toBe(0);
  });
});
