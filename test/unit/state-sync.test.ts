import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.ts';
import { ProcessState } from '../../src/state/process-state.ts';
import { StateSync, localRecord } from '../../src/state/sync.ts';
import type { LookupQuery, StateChange } from '../../src/state/changes.ts';
import type { StateReplica } from '../../src/state/replica.ts';
import type { PinChange } from '../../src/balance/placer.ts';
import { createLogger } from '../../src/logger.ts';

const config = configSchema.parse({
  listeners: { pcoipUdp: { bind: '127.0.0.1:0' } },
  connectors: [
    { id: 'a', address: '192.0.2.1' },
    { id: 'b', address: '192.0.2.2' },
  ],
  affinity: { ttl: '10s' },
});

/**
 * Two processes' owners joined through StateSync by an in-memory channel implementing the
 * replica interface both ways (what the IPC replica and the primary do over a real channel):
 * what one decides the other applies, nothing echoes back, look-ups answer from the other side.
 */
function pair() {
  const a = new ProcessState(config);
  const b = new ProcessState(config);
  const sent: StateChange[] = [];
  const link = (otherState: ProcessState, other: () => StateSync): StateReplica => ({
    // The other side answers from what it has (as the primary does for a worker).
    lookup: async (q: LookupQuery) => localRecord(otherState, q, Date.now()),
    publish: (c) => {
      sent.push(c);
      other().apply(c);
    },
    publishLeases: (deltas) => otherState.placer.applyLeases(deltas, Date.now()),
    onRemote: () => undefined,
    close: async () => undefined,
  });
  const logger = createLogger('silent');
  const syncA: StateSync = new StateSync(a, link(b, () => syncB), logger, { leaseFlushMs: 10_000, operatorState: true });
  const syncB: StateSync = new StateSync(b, link(a, () => syncA), logger, { leaseFlushMs: 10_000, operatorState: true });
  syncA.start();
  syncB.start();
  return { a, b, syncA, syncB, sent };
}

describe('StateSync', () => {
  it('publishes local pins once; the other side applies them as remote and does not publish them back', () => {
    const { a, b, sent } = pair();
    const seenByB: PinChange[] = [];
    b.placer.onPinChange((c) => seenByB.push(c));
    const d = a.placer.decide('198.51.100.7', 1000);
    expect(d.ok).toBe(true);
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ kind: 'pin', key: '198.51.100.7/32', reason: 'placed' });
    expect(seenByB).toEqual([expect.objectContaining({ key: '198.51.100.7/32', origin: 'remote', from: undefined })]);
    expect(b.placer.entry('198.51.100.7/32', 1001)?.connectorId).toBe(d.ok ? d.connector.id : '');
  });

  it("an operator's state change is published once; the other instance applies it and does not publish it back", () => {
    const { a, b, sent } = pair();
    a.pool.setState('b', 'drain');
    expect(sent.filter((c) => c.kind === 'operator-state')).toEqual([expect.objectContaining({ kind: 'operator-state', connectorId: 'b', state: 'drain' })]);
    expect(b.pool.get('b')!.state).toBe('drain');
    // Applied from elsewhere: announced as remote (the multi-core primary still pushes it to its workers).
    const origins: string[] = [];
    a.pool.onChange((c) => (c.kind === 'state' ? origins.push(c.origin) : undefined));
    b.pool.setState('b', 'active');
    expect(a.pool.get('b')!.state).toBe('active');
    expect(origins).toEqual(['remote']);
    expect(sent.filter((c) => c.kind === 'operator-state')).toHaveLength(2);
  });

  it('learned sessions travel too: a cookie learned on one side routes on the other', () => {
    const { a, b, sent } = pair();
    a.sessions.learnCookie('COOKIE-1', 'b', 1000);
    expect(sent.map((c) => c.kind)).toEqual(['cookie']);
    expect(b.sessions.connectorForCookie('COOKIE-1', 1001)).toBe('b');
    // Learning the same thing again is no change: nothing more is sent.
    a.sessions.learnCookie('COOKIE-1', 'b', 1002);
    expect(sent).toHaveLength(1);
  });

  it('drops a replicated record naming a Connector this side does not have', () => {
    const { b } = pair();
    const sync = new StateSync(b, { lookup: async () => undefined, publish: () => undefined, publishLeases: () => undefined, onRemote: () => undefined, close: async () => undefined }, createLogger('silent'), {
      leaseFlushMs: 10_000,
      operatorState: true,
    });
    sync.apply({ kind: 'pin', key: '198.51.100.9/32', connectorId: 'ghost', reason: 'placed', at: Date.now() });
    sync.apply({ kind: 'operator-state', connectorId: 'ghost', state: 'drain', at: Date.now() });
    expect(b.placer.entry('198.51.100.9/32', Date.now())).toBeUndefined();
  });

  it('looks up an unknown client once (concurrent flows share the answer) and decides like the owner did', async () => {
    const { a, b, syncB } = pair();
    // Pinned on a where hashing would not put it: only the look-up can tell b.
    const key = '198.51.100.20/32';
    const hashed = a.placer.pickNew(key)!;
    const other = hashed === 'a' ? 'b' : 'a';
    a.placer.applyPin(key, other, 'repinned', Date.now(), 'local'); // published to b at once; forget it there
    b.placer.forgetConnector(other, Date.now());
    b.pool.setState(other, 'active');
    const w1 = syncB.beforeDecide('198.51.100.20');
    const w2 = syncB.beforeDecide('198.51.100.20');
    expect(w1).toBeDefined();
    expect(w2).toBe(w1);
    await w1;
    const d = b.placer.decide('198.51.100.20', Date.now());
    expect(d.ok && d.connector.id).toBe(other);
    // Known now: no further look-up.
    expect(syncB.beforeDecide('198.51.100.20')).toBeUndefined();
  });

  it('lease deltas reach the owner: a pin with flows elsewhere does not expire here', async () => {
    const { a, b, syncA } = pair();
    const d = a.placer.decide('198.51.100.30', 0);
    if (!d.ok) throw new Error('no decision');
    syncA.flush();
    expect(b.placer.entry('198.51.100.30/32', 0)?.flows).toBe(1);
    expect(b.placer.entry('198.51.100.30/32', 60_000)?.connectorId).toBe(d.connector.id); // past the TTL, still held
    d.lease.release(60_000);
    syncA.flush();
    expect(b.placer.entry('198.51.100.30/32', 60_001)?.flows).toBe(0);
  });
});
