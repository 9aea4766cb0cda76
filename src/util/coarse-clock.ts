import { performance } from 'node:perf_hooks';

/**
 * A millisecond clock for the UDP hot path, which must not read the system clock per datagram:
 * on this project's machines `Date.now()` / `performance.now()` cost 130–210 ns each (a clock
 * source without a fast vDSO path), 1–2 % of a whole forwarded datagram, where a property read
 * costs ~2 ns.
 *
 * The value is `performance.now()` (monotonic, ms) sampled by a 1 ms timer that runs only while
 * someone reads the clock: the first `read()` after a quiet spell samples the real clock at once
 * and starts the timer; the timer stops itself after IDLE_TICKS ticks nobody read. So an idle
 * process has no 1 kHz wake-up.
 *
 * Precision: a reading is the time of the last tick, so it is late by 0 to (1 ms + however long
 * the event loop has been busy since that tick). Datagrams handled in one event-loop turn (a
 * batch read from one socket) all get the same time. Intervals shorter than ~1 ms are not
 * resolved, and under load the error grows with the event-loop turn (docs/sessions.md).
 */
const TICK_MS = 1;
/** Ticks without a read before the timer stops (100 ms of silence). */
const IDLE_TICKS = 100;

export class CoarseClock {
  private value = 0;
  private timer: NodeJS.Timeout | undefined;
  private readSinceTick = false;
  private idleTicks = 0;
  private readonly source: () => number;

  constructor(source: () => number = () => performance.now()) {
    this.source = source;
  }

  /** Milliseconds (monotonic, arbitrary origin), at most ~1 ms + one event-loop turn old. */
  read(): number {
    this.readSinceTick = true;
    if (this.timer === undefined) this.start();
    return this.value;
  }

  /** Whether the sampling timer is running (tests; an idle process must not tick). */
  get running(): boolean {
    return this.timer !== undefined;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private start(): void {
    this.value = this.source();
    this.idleTicks = 0;
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
  }

  private tick(): void {
    this.value = this.source();
    if (this.readSinceTick) {
      this.readSinceTick = false;
      this.idleTicks = 0;
    } else if (++this.idleTicks >= IDLE_TICKS) this.stop();
  }
}

/** The process's one coarse clock (every UDP flow reads the same one: one timer per process). */
export const coarseClock = new CoarseClock();
