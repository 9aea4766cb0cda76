import { describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { PerClientLimit, RefusalLog } from '../../src/proxy/limits.ts';
import { FlowStats } from '../../src/proxy/flow-stats.ts';
import { createLogger } from '../../src/logger.ts';

describe('PerClientLimit', () => {
  it.each([
    { max: 1, acquires: ['a', 'a', 'b'], expected: [true, false, true] },
    { max: 2, acquires: ['a', 'a', 'a', 'b', 'b', 'b'], expected: [true, true, false, true, true, false] },
    { max: 3, acquires: ['a', 'b', 'c', 'a'], expected: [true, true, true, true] },
  ])('max $max: $acquires → $expected', ({ max, acquires, expected }) => {
    const limit = new PerClientLimit(max);
    expect(acquires.map((k) => limit.tryAcquire(k))).toEqual(expected);
  });

  it('frees a slot on release and forgets a client once it holds nothing', () => {
    const limit = new PerClientLimit(2);
    limit.tryAcquire('a');
    limit.tryAcquire('a');
    expect(limit.tryAcquire('a')).toBe(false);
    limit.release('a');
    expect(limit.tryAcquire('a')).toBe(true);
    limit.release('a');
    limit.release('a');
    expect(limit.clients).toBe(0);
    // A stray release (never acquired) does not go negative or create an entry.
    limit.release('zzz');
    expect(limit.clients).toBe(0);
    expect(limit.held('zzz')).toBe(0);
  });

  it('a lowered cap refuses new ones while existing holders keep theirs', () => {
    const limit = new PerClientLimit(3);
    for (let i = 0; i < 3; i++) limit.tryAcquire('a');
    limit.setMax(1);
    expect(limit.held('a')).toBe(3);
    expect(limit.tryAcquire('a')).toBe(false);
    limit.release('a');
    limit.release('a');
    expect(limit.tryAcquire('a')).toBe(false);
    limit.release('a');
    expect(limit.tryAcquire('a')).toBe(true);
  });
});

describe('RefusalLog', () => {
  it('counts every refusal but logs at most one line per second per reason, saying how many it suppressed', () => {
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const t of chunk.toString().split('\n')) if (t) lines.push(JSON.parse(t) as Record<string, unknown>);
        done();
      },
    });
    const stats = new FlowStats();
    const log = new RefusalLog('pcoipUdp', stats, createLogger('info', sink));
    for (let t = 0; t < 10; t++) log.refuse(t * 100, 'max-flows-per-client', 'PLB_E_FLOW_LIMIT', { client: 'x' }, 'refused');
    log.refuse(50, 'first-byte-timeout', 'PLB_E_SLOW_CLIENT', {}, 'slow');
    log.refuse(1000, 'max-flows-per-client', 'PLB_E_FLOW_LIMIT', { client: 'x' }, 'refused');
    expect(stats.refusals.get('pcoipUdp:max-flows-per-client')).toBe(11);
    expect(stats.refusals.get('pcoipUdp:first-byte-timeout')).toBe(1);
    expect(lines.map((l) => [l.reason, l.suppressed])).toEqual([
      ['max-flows-per-client', 0],
      ['first-byte-timeout', 0],
      ['max-flows-per-client', 9],
    ]);
    expect(lines[0]).toMatchObject({ level: 40, listener: 'pcoipUdp', code: 'PLB_E_FLOW_LIMIT', client: 'x' });
  });
});
