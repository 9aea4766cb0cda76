import { describe, expect, it } from 'vitest';
import { budgetedBufferSize, decayedPeak, KERNEL_OVERHEAD_PER_DATAGRAM, MIN_BUDGET_BUFFER_BYTES, resizeTo } from '../../src/proxy/queue-budget.ts';

const MiB = 1024 * 1024;
const budget = { maxQueueDelayMs: 50, maxBytes: 4 * MiB, minBytes: MIN_BUDGET_BUFFER_BYTES };
const perDatagram = 1200 + KERNEL_OVERHEAD_PER_DATAGRAM; // 2304 bytes charged per 1200-byte datagram

describe('budgetedBufferSize: SO_RCVBUF from rate × latency budget', () => {
  it.each([
    // [datagrams in 1 s, expected SO_RCVBUF]
    [0, MIN_BUDGET_BUFFER_BYTES], // idle: room for a burst
    [1000, MIN_BUDGET_BUFFER_BYTES], // 50 ms of 1 k/s is 50 datagrams: under the floor
    [20_000, Math.ceil((20_000 * perDatagram * 0.05) / 2)], // 1000 datagrams of queue = 50 ms at 20 k/s
    [40_000, Math.ceil((40_000 * perDatagram * 0.05) / 2)],
    [100_000, 4 * MiB], // capped by recvBufferSize
  ])('%i datagrams/s → %i bytes', (packets, expected) => {
    expect(budgetedBufferSize(packets, packets * 1200, 1000, budget)).toBe(expected);
  });

  it('a full queue of the chosen size drains in the budget at that rate', () => {
    const size = budgetedBufferSize(20_000, 20_000 * 1200, 1000, budget);
    const queuedDatagrams = (2 * size) / perDatagram; // the kernel queues up to 2 × SO_RCVBUF
    expect((queuedDatagrams / 20_000) * 1000).toBeCloseTo(50, 1);
  });

  it('scales with the interval the counts cover, and never goes past the cap or under the floor', () => {
    expect(budgetedBufferSize(10_000, 12_000_000, 500, budget)).toBe(budgetedBufferSize(20_000, 24_000_000, 1000, budget));
    expect(budgetedBufferSize(1e9, 1e12, 1000, budget)).toBe(4 * MiB);
    expect(budgetedBufferSize(0, 0, 1000, { ...budget, maxBytes: 100_000 })).toBe(100_000); // a cap under the floor wins
  });
});

describe('resizeTo: hysteresis', () => {
  it.each([
    [1_000_000, 1_200_000, undefined], // +20 %: keep
    [1_000_000, 1_300_000, 1_300_000], // growing stream: grow at once
    [1_000_000, 600_000, undefined], // -40 %: keep
    [1_000_000, 400_000, 400_000], // under half: shrink
    [4 * MiB, 4 * MiB, undefined],
  ])('%i → %i: %s', (current, target, expected) => {
    expect(resizeTo(current, target)).toBe(expected);
  });
});

describe('decayedPeak: grow at once, shrink slowly', () => {
  it('follows a rising target at once', () => {
    expect(decayedPeak(300_000, 2_000_000, 0.7)).toBe(2_000_000);
  });

  it('after the rate falls, the buffer it leads to halves only after a few checks', () => {
    // A flow at 4 MiB whose rate dropped to nothing: the peak decays by 0.7 per second (flows).
    let peak = 4 * MiB;
    let asked = 4 * MiB;
    const sizes: number[] = [];
    for (let second = 1; second <= 8; second++) {
      peak = decayedPeak(peak, MIN_BUDGET_BUFFER_BYTES, 0.7);
      asked = resizeTo(asked, peak) ?? asked;
      sizes.push(asked);
    }
    expect(sizes[0]).toBe(4 * MiB); // one quiet second changes nothing
    expect(sizes[1]).toBeLessThan(4 * MiB / 2 + 1); // two: halved
    expect(sizes.at(-1)).toBeLessThanOrEqual(2 * MIN_BUDGET_BUFFER_BYTES); // eight: near the floor
    expect(peak).toBe(MIN_BUDGET_BUFFER_BYTES); // never under the target
  });
});
