import { describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { judgeRound, type CheckResult } from '../../src/health/checks.ts';
import { ThroughputHistory } from '../../src/admin/history.ts';
import { fdsNeededAtLimits, logFdLimit, parseNofile } from '../../src/control/fd-limit.ts';
import { ownExhaustion } from '../../src/util/fd-exhaustion.ts';
import { humanDuration } from '../../src/util/duration.ts';
import { FlowStats } from '../../src/proxy/flow-stats.ts';
import { configSchema } from '../../src/config/schema.ts';
import { createLogger } from '../../src/logger.ts';

const check = (name: 'broker' | 'pcoip', ok: boolean, reason = '', exhausted?: string): CheckResult => ({ check: name, ok, reason, latencyMs: 1, ...(exhausted ? { exhausted } : {}) });

describe('a health round when pcoip-lb is out of descriptors', () => {
  const describeIt = (r: CheckResult) => `${r.check}: ${r.reason}`;
  it.each([
    ['all pass', [check('broker', true), check('pcoip', true)], { ok: true, inconclusive: undefined, reason: '' }],
    ['one exhausted, one passes: proves nothing', [check('broker', false, 'EMFILE', 'EMFILE'), check('pcoip', true)], { ok: false, inconclusive: 'EMFILE', reason: 'broker: EMFILE' }],
    ['both exhausted', [check('broker', false, 'ENFILE', 'ENFILE'), check('pcoip', false, 'EMFILE', 'EMFILE')], { ok: false, inconclusive: 'ENFILE', reason: 'broker: ENFILE; pcoip: EMFILE' }],
    ['a real failure beside an exhausted check still fails (on the real reason)', [check('broker', false, 'HTTP 500', undefined), check('pcoip', false, 'EMFILE', 'EMFILE')], { ok: false, inconclusive: undefined, reason: 'broker: HTTP 500' }],
    ['a real failure alone', [check('broker', true), check('pcoip', false, 'ECONNREFUSED')], { ok: false, inconclusive: undefined, reason: 'pcoip: ECONNREFUSED' }],
  ])('%s', (_name, results, want) => {
    const round = judgeRound(results, describeIt);
    expect({ ok: round.ok, inconclusive: round.inconclusive, reason: round.reason }).toEqual(want);
  });

  it('only EMFILE, ENFILE and ENOBUFS are the proxy\'s own', () => {
    expect(['EMFILE', 'ENFILE', 'ENOBUFS', 'ECONNREFUSED', 'ETIMEDOUT', undefined].map((code) => ownExhaustion({ code }))).toEqual(['EMFILE', 'ENFILE', 'ENOBUFS', undefined, undefined, undefined]);
  });
});

describe('ThroughputHistory', () => {
  it('keeps 15 minutes of per-Connector rates from the server clock, clamps counter drops, counts events in the window', () => {
    let now = 1_000_000;
    const bytes = new Map<string, { bytesIn: number; bytesOut: number }>([['a', { bytesIn: 0, bytesOut: 0 }]]);
    const events = { refused: 0, connectFailures: 0 };
    const h = new ThroughputHistory({ bytes: () => bytes, events: () => ({ ...events }) }, { stepMs: 10_000, windowMs: 60_000, now: () => now });
    h.sample();
    expect(h.toJSON().points).toEqual([]);
    now += 10_000;
    bytes.set('a', { bytesIn: 12_500, bytesOut: 125_000 });
    events.refused = 3;
    h.sample();
    expect(h.toJSON().points).toEqual([{ at: now, rates: { a: [10_000, 100_000] }, events: { refused: 3, connectFailures: 0 } }]);
    // A worker restart takes its bytes out of the sums: the rate is 0, not negative.
    now += 10_000;
    bytes.set('a', { bytesIn: 0, bytesOut: 0 });
    bytes.set('b', { bytesIn: 1250, bytesOut: 0 });
    h.sample();
    expect(h.toJSON().points.at(-1)!.rates).toEqual({ a: [0, 0], b: [1000, 0] });
    for (let i = 0; i < 10; i++) {
      now += 10_000;
      events.refused++;
      h.sample();
    }
    const doc = h.toJSON();
    expect(doc.points).toHaveLength(6);
    expect(doc.points[0]!.at).toBe(now - 50_000);
    // 13 refusals since start; the oldest point kept had seen 8.
    expect(doc.inWindow).toEqual({ refused: 5, connectFailures: 0 });
    expect(doc.totals).toEqual({ refused: 13, connectFailures: 0 });
    expect({ step: doc.stepSeconds, window: doc.windowSeconds }).toEqual({ step: 10, window: 60 });
  });
});

describe('fd limit', () => {
  it('reads the soft and hard RLIMIT_NOFILE from /proc/<pid>/limits', () => {
    const text = 'Limit                     Soft Limit           Hard Limit           Units\nMax processes             63457                63457                processes\nMax open files            1024                 524288               files\n';
    expect(parseNofile(text)).toEqual({ soft: 1024, hard: 524288 });
    expect(parseNofile('Max open files            unlimited            unlimited            files')).toEqual({ soft: Infinity, hard: Infinity });
    expect(parseNofile('nothing here')).toBeUndefined();
  });

  it('sizes the need from the listener limits (2 per TCP connection, 1 per UDP flow) and warns when the limit is below it', () => {
    const config = configSchema.parse({
      listeners: { broker: { bind: '0.0.0.0:443', maxConnections: 100 }, pcoipTcp: { bind: '0.0.0.0:4172', maxConnections: 50 }, pcoipUdp: { bind: '0.0.0.0:4172', maxFlows: 70 } },
      connectors: [{ id: 'a', address: '192.0.2.1' }, { id: 'b', address: '192.0.2.2' }],
    });
    expect(fdsNeededAtLimits(config, 64)).toBe(200 + 100 + 70 + 4 + 64 + 64);
    // A terminating broker's connection may keep one upstream per Connector, up to 4.
    const terminating = { ...config, listeners: { ...config.listeners, broker: { ...config.listeners.broker!, tls: { ...config.listeners.broker!.tls, mode: 'terminate' as const } } } };
    expect(fdsNeededAtLimits(terminating, 64)).toBe(500 + 100 + 70 + 4 + 64 + 64);
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({ write: (chunk: Buffer, _e, done) => (lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>), done()) });
    const logger = createLogger('info', sink);
    logFdLimit(logger, { soft: 4096, hard: 4096 }, 502);
    logFdLimit(logger, { soft: 256, hard: 4096 }, 502);
    expect(lines.map((l) => [l.level, l.code, l.fdLimit])).toEqual([
      [30, undefined, { soft: '4096', hard: '4096' }],
      [40, 'PLB_W_FD_LIMIT', { soft: '256', hard: '4096' }],
    ]);
  });
});

describe('FlowStats histograms', () => {
  it('put each observation in its bucket and add up across workers', () => {
    const w1 = new FlowStats();
    const w2 = new FlowStats();
    w1.connected('pcoipTcp', 'a', 0.3); // 0.3 ms ≤ 0.5 ms
    w1.connected('pcoipTcp', 'a', 7000); // past the last bound (5 s): +Inf
    w2.connected('pcoipTcp', 'a', 2); // ≤ 2.5 ms
    w2.closed('pcoipUdp', 'a', 90_000); // 90 s ≤ 300 s
    const primary = new FlowStats();
    primary.replaceWithSum([w1.snapshot(), w2.snapshot()]);
    const connect = primary.connectSeconds.get('pcoipTcp|a')!;
    expect(connect.count).toBe(3);
    expect(connect.sum).toBeCloseTo(7.0023, 6);
    expect(connect.counts[0]).toBe(1);
    expect(connect.counts[2]).toBe(1);
    expect(connect.counts.at(-1)).toBe(1);
    expect(primary.flowSeconds.get('pcoipUdp|a')).toMatchObject({ count: 1, sum: 90 });
    expect(primary.flowSeconds.get('pcoipUdp|a')!.counts[4]).toBe(1);
    // Sums are rebuilt, not accumulated, on each report.
    primary.replaceWithSum([w1.snapshot()]);
    expect(primary.connectSeconds.get('pcoipTcp|a')!.count).toBe(2);
  });
});

describe('humanDuration', () => {
  it.each([
    [42_000, '42 s'],
    [12 * 60_000 + 5000, '12 min'],
    [3 * 3_600_000 + 5 * 60_000, '3 h 5 min'],
    [2 * 86_400_000 + 4 * 3_600_000 + 59_000, '2 d 4 h'],
  ])('%d ms → %s', (ms, text) => expect(humanDuration(ms)).toBe(text));
});
