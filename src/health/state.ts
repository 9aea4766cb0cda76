import type { HealthStatus } from '../pool/pool.ts';

/**
 * The rise/fall state of one Connector (HAProxy's model): `fall` failing rounds in a row take an
 * up Connector down, `rise` passing rounds in a row bring a down one back. Pure: no clock, no I/O.
 */
export interface RiseFall {
  rise: number;
  fall: number;
}

export interface HealthCounters {
  readonly status: HealthStatus;
  /** Passing rounds in a row (reset by a failure). */
  readonly passes: number;
  /** Failing rounds in a row (reset by a pass). */
  readonly failures: number;
}

export interface RoundOutcome {
  readonly next: HealthCounters;
  /** True when this round changed the status (the one moment that is logged). */
  readonly flipped: boolean;
}

/**
 * A Connector starts *provisionally up* (HAProxy's `init-state up`): it takes clients at once,
 * so restarting the proxy does not turn every user away for rise × interval, but its first
 * failing round marks it down instead of waiting for `fall` of them. One passing round makes
 * it fully up.
 */
export function initialHealth(rf: RiseFall): HealthCounters {
  return { status: 'up', passes: 0, failures: rf.fall - 1 };
}

export function applyRound(state: HealthCounters, passed: boolean, rf: RiseFall): RoundOutcome {
  if (passed) {
    const passes = state.passes + 1;
    const status: HealthStatus = state.status === 'down' && passes >= rf.rise ? 'up' : state.status;
    return { next: { status, passes, failures: 0 }, flipped: status !== state.status };
  }
  const failures = state.failures + 1;
  const status: HealthStatus = state.status === 'up' && failures >= rf.fall ? 'down' : state.status;
  return { next: { status, passes: 0, failures }, flipped: status !== state.status };
}

/** Down now, whatever the counters (passive detection); it then needs `rise` passing rounds like any down Connector. */
export function forceDown(state: HealthCounters, rf: RiseFall): RoundOutcome {
  return { next: { status: 'down', passes: 0, failures: Math.max(state.failures, rf.fall) }, flipped: state.status !== 'down' };
}

/**
 * Counts failed connects of real clients in a sliding window. Holds at most `limit` timestamps,
 * so a flood of failures costs constant memory.
 */
export class FailureWindow {
  private times: number[] = [];
  private readonly limit: number;
  private readonly windowMs: number;

  constructor(limit: number, windowMs: number) {
    this.limit = limit;
    this.windowMs = windowMs;
  }

  /** Records one failure at `now`; true when `limit` failures fall within the window. */
  record(now: number): boolean {
    this.times = this.times.filter((t) => now - t < this.windowMs);
    this.times.push(now);
    if (this.times.length > this.limit) this.times.shift();
    return this.times.length >= this.limit;
  }

  count(now: number): number {
    return this.times.filter((t) => now - t < this.windowMs).length;
  }

  clear(): void {
    this.times = [];
  }
}
