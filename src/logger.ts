import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/**
 * JSON lines on stdout (pino). Operators pipe them to their collector or to `pino-pretty`.
 * `destination` lets tests capture the lines.
 */
export function createLogger(level: LevelWithSilent, destination?: NodeJS.WritableStream): Logger {
  const options = { level, base: { app: 'pcoip-lb' }, timestamp: pino.stdTimeFunctions.isoTime };
  return destination ? pino(options, destination as pino.DestinationStream) : pino(options);
}

/**
 * Logs at most one line per `intervalMs` for a noisy condition (refused flows during a flood),
 * and says how many were suppressed in between so nothing is silently lost.
 */
export class RateLimitedLog {
  private lastAt = -Infinity;
  private suppressed = 0;
  private readonly intervalMs: number;

  constructor(intervalMs = 1000) {
    this.intervalMs = intervalMs;
  }

  /** Calls `emit` with the count of suppressed lines when a line is due; otherwise counts it. */
  maybe(now: number, emit: (suppressed: number) => void): void {
    if (now - this.lastAt >= this.intervalMs) {
      emit(this.suppressed);
      this.suppressed = 0;
      this.lastAt = now;
    } else {
      this.suppressed++;
    }
  }
}
