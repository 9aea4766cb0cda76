import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.ts';
import { resolveWorkers } from '../../src/cluster/workers.ts';
import { LeaseLedger } from '../../src/cluster/lease-ledger.ts';
import { WorkerTotals } from '../../src/cluster/worker-totals.ts';
import { emptyMediaTotals } from '../../src/sessions/media-totals.ts';
import { FlowStats } from '../../src/proxy/flow-stats.ts';

const base = { listeners: { broker: { bind: '0.0.0.0:443' }, pcoipUdp: { bind: '0.0.0.0:4172' } }, connectors: [{ id: 'a', address: '192.0.2.1' }] };
const terminate = { mode: 'terminate', certificates: [{ cert: '/x.crt', key: '/x.key' }], upstream: { insecure: true } };

describe('resolveWorkers', () => {
  it.each<[string, Record<string, unknown>, number, NodeJS.Platform, number]>([
    ['auto on Linux: one per core', {}, 8, 'linux', 8],
    ['auto on a 1-core machine', {}, 1, 'linux', 1],
    ['auto elsewhere: 1 (no SO_REUSEPORT sharing)', {}, 8, 'darwin', 1],
    ['auto with a terminating broker: one per core (sessions are replicated)', { listeners: { ...base.listeners, broker: { bind: '0.0.0.0:443', tls: terminate } } }, 8, 'linux', 8],
    [
      'auto with sniRouting: one per core',
      { listeners: { ...base.listeners, broker: { bind: '0.0.0.0:443', tls: terminate }, pcoipTcp: { bind: '0.0.0.0:4172', sniRouting: true } } },
      4,
      'linux',
      4,
    ],
    [
      'auto with rewriteTarget on port 0: 1',
      { listeners: { ...base.listeners, broker: { bind: '0.0.0.0:443', tls: terminate, rewriteTarget: { enabled: true, publicAddress: '192.0.2.9', ports: { a: 0 } } } } },
      8,
      'linux',
      1,
    ],
    ['an explicit number wins', { workers: 3 }, 8, 'linux', 3],
    ['workers: 1 is the single-process path', { workers: 1 }, 8, 'linux', 1],
  ])('%s', (_name, patch, cores, platform, expected) => {
    const config = configSchema.parse({ ...base, ...patch });
    expect(resolveWorkers(config, cores, platform).count).toBe(expected);
  });

  it('accepts several workers with a terminating broker; refuses them with rewriteTarget port 0, naming the key', () => {
    expect(configSchema.safeParse({ ...base, workers: 2, listeners: { broker: { bind: '0.0.0.0:443', tls: terminate } } }).success).toBe(true);
    const result = configSchema.safeParse({
      ...base,
      workers: 2,
      listeners: { broker: { bind: '0.0.0.0:443', tls: terminate, rewriteTarget: { enabled: true, publicAddress: '192.0.2.9', ports: { a: 0 } } } },
    });
    expect(result.success).toBe(false);
    expect(result.error!.issues[0]).toMatchObject({ path: ['workers'] });
  });
});

describe('LeaseLedger', () => {
  it("keeps each worker's net leases and undoes exactly what a dead worker still held", () => {
    const ledger = new LeaseLedger();
    ledger.add(0, [['k1', 2], ['k2', 1]]);
    ledger.add(1, [['k1', 1]]);
    ledger.add(0, [['k2', -1], ['k1', 1]]);
    expect(ledger.held(0)).toBe(3);
    expect(ledger.release(0)).toEqual([['k1', -3]]);
    expect(ledger.held(0)).toBe(0);
    expect(ledger.release(0)).toEqual([]);
    expect(ledger.release(1)).toEqual([['k1', -1]]);
  });
});

describe('WorkerTotals', () => {
  const report = (total: number, active: number, decisions: number) => {
    const stats = new FlowStats();
    for (let i = 0; i < total; i++) stats.opened('pcoipUdp', 'a');
    for (let i = 0; i < total - active; i++) stats.closed('pcoipUdp', 'a');
    stats.refused('pcoipUdp', 'max-flows');
    const media = emptyMediaTotals();
    media.directions.fromClient.lost = total;
    media.probes.answered = decisions;
    return { media, stats: stats.snapshot(), flows: { broker: 0, pcoipTcp: 0, pcoipUdp: active }, tracked: { broker: 0, pcoipTcp: 0, pcoipUdp: active }, decisions: [['placed|a', decisions]] as Array<[string, number]> };
  };

  it('sums live reports, keeps a retired worker totals but not its open flows, never goes down', () => {
    const totals = new WorkerTotals();
    const stats = new FlowStats();
    const decisions = new Map<string, number>();
    totals.report(0, report(10, 4, 10));
    totals.report(1, report(5, 5, 5));
    let sums = totals.writeInto(stats, decisions);
    expect(stats.counters('a').pcoipUdp).toMatchObject({ total: 15, active: 9 });
    expect(sums.flows.pcoipUdp).toBe(9);
    expect(decisions.get('placed|a')).toBe(15);
    // Worker 0 dies: its 10 flows stay counted, its 4 open ones are gone.
    totals.retire(0);
    sums = totals.writeInto(stats, decisions);
    expect(stats.counters('a').pcoipUdp).toMatchObject({ total: 15, active: 5 });
    expect(sums.flows.pcoipUdp).toBe(5);
    expect(stats.refusals.get('pcoipUdp:max-flows')).toBe(2);
    // Its replacement starts from zero; the sums go on from where they were.
    totals.report(0, report(1, 1, 1));
    totals.writeInto(stats, decisions);
    expect(stats.counters('a').pcoipUdp).toMatchObject({ total: 16, active: 6 });
    expect(decisions.get('placed|a')).toBe(16);
    // Media aggregates are monotonic the same way.
    expect(totals.media().directions.fromClient.lost).toBe(16);
    expect(totals.media().probes.answered).toBe(16);
  });
});
