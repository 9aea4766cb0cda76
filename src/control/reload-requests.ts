import type { ReloadOutcome } from './reload-outcome.ts';

/** Outcomes of the reload requests a process received since start (SIGHUP, POST /reload), for /metrics. */
export interface ReloadCounts {
  readonly succeeded: number;
  readonly failed: number;
  /** The last one applied (true before any request). */
  readonly lastOk: boolean;
  /** When the last one was requested, ms since the epoch; 0: never. */
  readonly lastAt: number;
}

/**
 * Where a reload request (SIGHUP, POST /reload) gets its config from — the CLI sets the source
 * to re-read the file the process was started with; unset (tests, embedded use): no reload —
 * and what came of each request. One per process: the single App or the multi-core primary.
 */
export class ReloadRequests {
  private source: (() => ReloadOutcome) | undefined;
  private readonly counts = { succeeded: 0, failed: 0, lastOk: true, lastAt: 0 };

  setSource(source: () => ReloadOutcome): void {
    this.source = source;
  }

  request(now = Date.now()): ReloadOutcome | undefined {
    const outcome = this.source?.();
    if (outcome) {
      if (outcome.ok) this.counts.succeeded++;
      else this.counts.failed++;
      this.counts.lastOk = outcome.ok;
      this.counts.lastAt = now;
    }
    return outcome;
  }

  get results(): ReloadCounts {
    return { ...this.counts };
  }
}
