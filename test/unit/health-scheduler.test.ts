import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { HealthScheduler } from '../../src/health/scheduler.ts';

/** Timing of check rounds, with fake timers (no sockets: the probe is a controllable promise). */
describe('HealthScheduler', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('runs the first round within the jitter span, then every interval ± jitter', async () => {
    const starts: number[] = [];
    const random = vi.fn(() => 1); // the latest start the jitter allows
    const s = new HealthScheduler({ intervalMs: 1000, jitter: 0.1, random }, async () => void starts.push(Date.now()));
    const t0 = Date.now();
    s.sync(['a']);
    await vi.advanceTimersByTimeAsync(100);
    expect(starts.map((t) => t - t0)).toEqual([100]);
    await vi.advanceTimersByTimeAsync(1100 * 3);
    expect(starts.map((t) => t - t0)).toEqual([100, 1200, 2300, 3400]);
    s.stop();
  });

  it('never has two rounds in flight for one Connector: a slow round delays the next', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    let rounds = 0;
    const s = new HealthScheduler({ intervalMs: 100, jitter: 0, random: () => 0 }, async () => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      rounds++;
      await new Promise((r) => setTimeout(r, 350)); // slower than the interval
      inFlight--;
    });
    s.sync(['a']);
    await vi.advanceTimersByTimeAsync(2000);
    s.stop();
    expect(maxInFlight).toBe(1);
    // Each round takes 350 ms and the next starts right after: 0, 350, 700, … < 2000.
    expect(rounds).toBe(6);
  });

  it('sync starts new Connectors and forgets removed ones; stop ends every chain', async () => {
    const seen: string[] = [];
    const s = new HealthScheduler({ intervalMs: 100, jitter: 0, random: () => 0 }, async (id) => void seen.push(id));
    s.sync(['a', 'b']);
    await vi.advanceTimersByTimeAsync(50);
    expect(seen.sort()).toEqual(['a', 'b']);
    s.sync(['b', 'c']);
    seen.length = 0;
    // Within the next interval: b's next round and c's first; a's chain is gone.
    await vi.advanceTimersByTimeAsync(99);
    expect(seen.sort()).toEqual(['b', 'c']);
    s.stop();
    seen.length = 0;
    await vi.advanceTimersByTimeAsync(1000);
    expect(seen).toEqual([]);
  });
});
