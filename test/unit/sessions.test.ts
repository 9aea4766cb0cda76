import { describe, expect, it } from 'vitest';
import { MAX_COOKIE_CHARS, MAX_LOG_ID_CHARS, SessionTable, redact, type AllocationInput } from '../../src/balance/sessions.ts';

const TTL = 10_000;
const alloc = (over: Partial<AllocationInput> = {}): AllocationInput => ({
  connectorId: 'conn-a',
  clientAddress: '127.0.2.1',
  sni: 'ws-1.example',
  sessionId: 'session-secret-1',
  connectTag: 'tag-secret-1',
  ipAddress: '192.0.2.1',
  port: 4172,
  ...over,
});

describe('SessionTable', () => {
  it('maps cookies and log ids to Connectors and forgets them after the TTL of disuse', () => {
    const t = new SessionTable({ ttlMs: TTL, maxEntries: 100 });
    t.learnCookie('C1', 'conn-a', 0);
    t.learnLogId('L1', 'conn-b', 0);
    expect(t.connectorForCookie('C1', 9_000)).toBe('conn-a');
    // The look-up at 9 s refreshed it.
    expect(t.connectorForCookie('C1', 18_000)).toBe('conn-a');
    expect(t.connectorForLogId('L1', 10_001)).toBeUndefined();
    expect(t.connectorForCookie('unknown', 0)).toBeUndefined();
  });

  it('bounds each map, dropping the oldest entry', () => {
    const t = new SessionTable({ ttlMs: TTL, maxEntries: 3 });
    for (let i = 0; i < 5; i++) t.learnLogId(`L${i}`, 'conn-a', i);
    expect(t.counts.logIds).toBe(3);
    expect(t.connectorForLogId('L0', 5)).toBeUndefined();
    expect(t.connectorForLogId('L4', 5)).toBe('conn-a');
  });

  it('matches an allocation by SNI (any case) while its tag is valid, then expires it unclaimed', () => {
    const t = new SessionTable({ ttlMs: TTL, maxEntries: 100 });
    expect(t.learnAllocation(alloc(), 0)).toMatchObject({ ok: true, replaced: false });
    expect(t.matchSni('WS-1.example', 59_999)).toMatchObject({ ok: true, allocation: { connectorId: 'conn-a' } });
    expect(t.matchSni('ws-1.example', 60_000)).toEqual({ ok: false, reason: 'tag-expired' });
    expect(t.matchSni('ws-1.example', 60_001)).toEqual({ ok: false, reason: 'unknown' });
  });

  it('keeps a claimed allocation while its flows live, then for the TTL', () => {
    const t = new SessionTable({ ttlMs: TTL, maxEntries: 100 });
    t.learnAllocation(alloc(), 0);
    const m = t.matchSni('ws-1.example', 1000);
    if (!m.ok) throw new Error('no match');
    t.flowOpened(m.allocation, 1000);
    expect(t.matchSni('ws-1.example', 500_000).ok).toBe(true);
    t.flowClosed(m.allocation, 500_000);
    expect(t.matchSni('ws-1.example', 500_000 + TTL).ok).toBe(true);
    expect(t.sweep(500_001 + TTL)).toBe(1);
    expect(t.counts.allocations).toBe(0);
  });

  it('refuses a reused connect tag and an allocation without one', () => {
    const t = new SessionTable({ ttlMs: TTL, maxEntries: 100 });
    t.learnAllocation(alloc(), 0);
    expect(t.learnAllocation(alloc({ connectorId: 'conn-b', sni: 'other.example' }), 30_000)).toEqual({ ok: false, reason: 'reused-tag' });
    expect(t.learnAllocation(alloc({ connectTag: undefined }), 0)).toEqual({ ok: false, reason: 'no-connect-tag' });
    expect(t.matchSni('other.example', 30_000)).toEqual({ ok: false, reason: 'unknown' });
  });

  it('describes sessions without secrets', () => {
    const t = new SessionTable({ ttlMs: TTL, maxEntries: 100 });
    t.learnCookie('COOKIE-SECRET-VALUE', 'conn-a', 0);
    t.learnAllocation(alloc(), 0);
    const d = t.describeSessions(5);
    const text = JSON.stringify(d);
    for (const secret of ['COOKIE-SECRET-VALUE', 'tag-secret-1', 'session-secret-1']) expect(text).not.toContain(secret);
    expect(d.allocations).toEqual([{ sni: 'ws-1.example', connector: 'conn-a', client: '127.0.2.1', sessionId: 'sess…(16)', ageMs: 5, state: 'awaiting-4172', flows: 0 }]);
    expect(d.perConnector).toEqual({ 'conn-a': { cookies: 1, logIds: 0, allocations: 1 } });
    expect(redact('ab')).toBe('…(2)');
  });

  it('forgets everything that points at a removed Connector', () => {
    const t = new SessionTable({ ttlMs: TTL, maxEntries: 100 });
    t.learnCookie('C', 'conn-a', 0);
    t.learnAllocation(alloc(), 0);
    t.forgetConnector('conn-a');
    expect(t.counts).toEqual({ cookies: 0, logIds: 0, allocations: 0 });
  });

  it('bounds each kind in bytes too: a flood of long values costs a fixed size per entry, then the oldest go', () => {
    const t = new SessionTable({ ttlMs: TTL, maxEntries: 1_000_000, maxBytesPerKind: 64 * 1024 });
    for (let i = 0; i < 5000; i++) t.learnLogId(`${i}-${'x'.repeat(120)}`, 'conn-a', i);
    expect(t.bytes.logIds).toBeLessThanOrEqual(64 * 1024);
    expect(t.counts.logIds).toBe(512); // 64 KiB / 128 bytes per digest entry
    expect(t.connectorForLogId(`4999-${'x'.repeat(120)}`, 5000)).toBe('conn-a');
    expect(t.connectorForLogId(`0-${'x'.repeat(120)}`, 5000)).toBeUndefined();
  });

  it('ignores cookies and log ids longer than any real one', () => {
    const t = new SessionTable({ ttlMs: TTL, maxEntries: 100 });
    t.learnCookie('c'.repeat(MAX_COOKIE_CHARS + 1), 'conn-a', 0);
    t.learnLogId('l'.repeat(MAX_LOG_ID_CHARS + 1), 'conn-a', 0);
    expect(t.counts).toEqual({ cookies: 0, logIds: 0, allocations: 0 });
    t.learnCookie('c'.repeat(MAX_COOKIE_CHARS), 'conn-a', 0);
    expect(t.connectorForCookie('c'.repeat(MAX_COOKIE_CHARS), 1)).toBe('conn-a');
  });

  it('keeps only a digest of a cookie or log id: the value is not anywhere in the table', () => {
    const t = new SessionTable({ ttlMs: TTL, maxEntries: 100 });
    t.learnCookie('COOKIE-SECRET-VALUE', 'conn-a', 0);
    t.learnLogId('LOG-ID-VALUE-0123', 'conn-b', 0);
    const seen: string[] = [];
    const walk = (v: unknown, depth: number): void => {
      if (depth > 6 || v === null) return;
      if (typeof v === 'string') seen.push(v);
      else if (v instanceof Map) for (const [k, x] of v) (walk(k, depth + 1), walk(x, depth + 1));
      else if (typeof v === 'object') for (const x of Object.values(v)) walk(x, depth + 1);
    };
    walk(t, 0);
    expect(seen.join('|')).not.toContain('COOKIE-SECRET');
    expect(seen.join('|')).not.toContain('LOG-ID-VALUE');
    expect(t.connectorForCookie('COOKIE-SECRET-VALUE', 1)).toBe('conn-a');
    expect(t.connectorForLogId('LOG-ID-VALUE-0123', 1)).toBe('conn-b');
  });

  it('refuses an allocation whose sni or ip-address is longer than a DNS name', () => {
    const t = new SessionTable({ ttlMs: TTL, maxEntries: 100 });
    expect(t.learnAllocation(alloc({ sni: `${'a'.repeat(250)}.example` }), 0)).toEqual({ ok: false, reason: 'oversized' });
    expect(t.learnAllocation(alloc({ ipAddress: 'h'.repeat(300) }), 0)).toEqual({ ok: false, reason: 'oversized' });
    expect(t.counts.allocations).toBe(0);
  });
});
