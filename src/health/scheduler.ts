/**
 * When each Connector is checked. One timer chain per Connector: the next round is scheduled
 * only after the current one finished, so a slow Connector never has two checks in flight, and
 * rounds start `interval ± jitter` apart so the checks of a large pool spread out instead of
 * firing together. Timers are unref'd: health checks alone never keep the process alive.
 * Knows nothing of what a round does; `probe` runs it (and must settle: the checks bound
 * themselves by their timeout).
 */
export interface SchedulerOptions {
  intervalMs: number;
  /** Share of the interval (0–0.5) by which each round is moved earlier or later at random. */
  jitter: number;
  random?: () => number;
}

export class HealthScheduler {
  private readonly timers = new Map<string, NodeJS.Timeout | 'running'>();
  private readonly options: SchedulerOptions;
  private readonly probe: (id: string) => Promise<void>;
  private readonly random: () => number;
  private stopped = false;

  constructor(options: SchedulerOptions, probe: (id: string) => Promise<void>) {
    this.options = options;
    this.probe = probe;
    this.random = options.random ?? Math.random;
  }

  /** Checks exactly these Connectors: starts new ones (first round within the jitter span), forgets removed ones. */
  sync(ids: readonly string[]): void {
    if (this.stopped) return;
    const wanted = new Set(ids);
    for (const [id, timer] of this.timers) {
      if (wanted.has(id)) continue;
      if (timer !== 'running') clearTimeout(timer);
      this.timers.delete(id);
    }
    for (const id of ids) {
      if (!this.timers.has(id)) this.schedule(id, this.random() * this.options.jitter * this.options.intervalMs);
    }
  }

  stop(): void {
    this.stopped = true;
    for (const timer of this.timers.values()) if (timer !== 'running') clearTimeout(timer);
    this.timers.clear();
  }

  private schedule(id: string, delayMs: number): void {
    const timer = setTimeout(() => void this.tick(id), Math.max(0, delayMs));
    timer.unref();
    this.timers.set(id, timer);
  }

  private async tick(id: string): Promise<void> {
    if (this.stopped || !this.timers.has(id)) return;
    this.timers.set(id, 'running');
    const started = Date.now();
    try {
      await this.probe(id);
    } finally {
      // Removed or stopped while the round ran: let the chain end here.
      if (!this.stopped && this.timers.get(id) === 'running') {
        const spread = (this.random() * 2 - 1) * this.options.jitter;
        this.schedule(id, this.options.intervalMs * (1 + spread) - (Date.now() - started));
      }
    }
  }
}
