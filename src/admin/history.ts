/**
 * The last 15 minutes of throughput per Connector, for the live page's chart (`GET /history`).
 * Every `stepMs` the byte totals of each Connector are read and the rate since the previous
 * sample is stored, measured by the server's clock (a browser tab that was asleep, or a page
 * opened mid-incident, still gets a true history). A ring of window/step points: memory is
 * bounded by points × Connectors, and nothing here touches the data path.
 */
export interface ByteTotals {
  bytesIn: number;
  bytesOut: number;
}

/** Cumulative event counts read with each sample (the page shows how many fell within the window). */
export interface EventTotals {
  refused: number;
  connectFailures: number;
}

export interface HistorySource {
  /** Byte totals per Connector id, now. */
  bytes(): Iterable<[string, ByteTotals]>;
  events(): EventTotals;
}

export interface HistoryPoint {
  /** Server time of the sample, ms since the epoch. */
  at: number;
  /** Bits per second since the previous sample: [client → Connector, Connector → client]. */
  rates: Record<string, [number, number]>;
  events: EventTotals;
}

export interface HistoryDocument {
  stepSeconds: number;
  windowSeconds: number;
  now: string;
  /** Oldest first. */
  points: HistoryPoint[];
  /** Refusals and failed connects between the oldest sample in the window and now. */
  inWindow: EventTotals;
  /** The same counts since start, now (a reader adds what happened after this answer). */
  totals: EventTotals;
}

export const HISTORY_STEP_MS = 10_000;
export const HISTORY_WINDOW_MS = 15 * 60_000;

export class ThroughputHistory {
  private readonly points: HistoryPoint[] = [];
  private last: { at: number; bytes: Map<string, ByteTotals> } | undefined;
  private first: EventTotals | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly source: HistorySource;
  private readonly stepMs: number;
  private readonly windowMs: number;
  private readonly now: () => number;

  constructor(source: HistorySource, options: { stepMs?: number; windowMs?: number; now?: () => number } = {}) {
    this.source = source;
    this.stepMs = options.stepMs ?? HISTORY_STEP_MS;
    this.windowMs = options.windowMs ?? HISTORY_WINDOW_MS;
    this.now = options.now ?? Date.now;
  }

  /** Takes the first sample now and one every step; the timer never keeps the process alive. */
  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.stepMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Reads the totals and stores the rates since the previous sample. */
  sample(at = this.now()): void {
    const bytes = new Map<string, ByteTotals>();
    for (const [id, totals] of this.source.bytes()) bytes.set(id, { bytesIn: totals.bytesIn, bytesOut: totals.bytesOut });
    const events = this.source.events();
    this.first ??= events;
    const previous = this.last;
    this.last = { at, bytes };
    if (!previous || at <= previous.at) return;
    const seconds = (at - previous.at) / 1000;
    const rates: Record<string, [number, number]> = {};
    for (const [id, now] of bytes) {
      const before = previous.bytes.get(id) ?? { bytesIn: 0, bytesOut: 0 };
      // A multi-core worker that restarted takes its counts out of the sums: never a negative rate.
      rates[id] = [(Math.max(0, now.bytesIn - before.bytesIn) * 8) / seconds, (Math.max(0, now.bytesOut - before.bytesOut) * 8) / seconds];
    }
    this.points.push({ at, rates, events });
    const keep = Math.ceil(this.windowMs / this.stepMs);
    while (this.points.length > keep) this.points.shift();
  }

  toJSON(): HistoryDocument {
    const now = this.now();
    const current = this.source.events();
    // The window starts at the oldest point kept (or, before the first full step, at start-up).
    const base = this.points.length > 0 && this.points.length >= Math.ceil(this.windowMs / this.stepMs) ? this.points[0]!.events : (this.first ?? current);
    return {
      stepSeconds: this.stepMs / 1000,
      windowSeconds: this.windowMs / 1000,
      now: new Date(now).toISOString(),
      points: this.points.map((p) => ({ at: p.at, rates: p.rates, events: p.events })),
      inWindow: { refused: Math.max(0, current.refused - base.refused), connectFailures: Math.max(0, current.connectFailures - base.connectFailures) },
      totals: current,
    };
  }
}
