import { describe, expect, it } from 'vitest';
import { applyRound, FailureWindow, forceDown, initialHealth, type HealthCounters } from '../../src/health/state.ts';

const rf = { rise: 2, fall: 3 };

/** Runs a sequence of rounds (true = pass) from a start state; returns the status after each and where it flipped. */
function run(start: HealthCounters, rounds: boolean[]): { statuses: string[]; flips: number[] } {
  let state = start;
  const statuses: string[] = [];
  const flips: number[] = [];
  rounds.forEach((passed, i) => {
    const out = applyRound(state, passed, rf);
    state = out.next;
    statuses.push(state.status);
    if (out.flipped) flips.push(i);
  });
  return { statuses, flips };
}

const fullyUp: HealthCounters = { status: 'up', passes: 5, failures: 0 };
const down: HealthCounters = { status: 'down', passes: 0, failures: 3 };

describe('rise/fall health state', () => {
  it.each([
    { name: 'fall failures in a row take an up Connector down', start: fullyUp, rounds: [false, false, false], statuses: ['up', 'up', 'down'], flips: [2] },
    { name: 'a pass in between resets the failure count', start: fullyUp, rounds: [false, false, true, false, false], statuses: ['up', 'up', 'up', 'up', 'up'], flips: [] },
    { name: 'rise passes in a row bring a down Connector back', start: down, rounds: [true, true], statuses: ['down', 'up'], flips: [1] },
    { name: 'a failure in between resets the pass count', start: down, rounds: [true, false, true, true], statuses: ['down', 'down', 'down', 'up'], flips: [3] },
    { name: 'more passes after coming up do not flip again', start: down, rounds: [true, true, true, true], statuses: ['down', 'up', 'up', 'up'], flips: [1] },
    { name: 'provisional start: the first failed round marks it down', start: initialHealth(rf), rounds: [false], statuses: ['down'], flips: [0] },
    { name: 'provisional start: one pass makes it fully up (fall failures needed again)', start: initialHealth(rf), rounds: [true, false, false, false], statuses: ['up', 'up', 'up', 'down'], flips: [3] },
  ])('$name', ({ start, rounds, statuses, flips }) => {
    expect(run(start, rounds)).toEqual({ statuses, flips });
  });

  it('starts provisionally up', () => {
    expect(initialHealth(rf)).toEqual({ status: 'up', passes: 0, failures: 2 });
  });

  it('forceDown (passive) flips an up Connector once, and it then needs rise passes', () => {
    const first = forceDown(fullyUp, rf);
    expect(first.flipped).toBe(true);
    expect(forceDown(first.next, rf).flipped).toBe(false);
    expect(run(first.next, [true, true])).toEqual({ statuses: ['down', 'up'], flips: [1] });
  });
});

describe('FailureWindow (passive detection)', () => {
  it('reaches the limit only with that many failures inside the window', () => {
    const w = new FailureWindow(3, 1000);
    expect([w.record(0), w.record(500), w.record(1200)]).toEqual([false, false, false]); // 0 fell out by 1200
    expect(w.record(1400)).toBe(true); // 500, 1200, 1400
    expect(w.count(1400)).toBe(3);
    w.clear();
    expect(w.count(1400)).toBe(0);
  });

  it('keeps at most `limit` timestamps whatever the flood', () => {
    const w = new FailureWindow(2, 10_000);
    for (let i = 0; i < 1000; i++) w.record(i);
    expect(w.count(1000)).toBe(2);
  });
});
