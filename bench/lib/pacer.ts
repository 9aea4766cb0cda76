/**
 * Sends at a steady rate from a timer, in small batches, so a load source at 40 000
 * datagrams/s costs its sends and nothing else (no busy loop spinning a core). Each tick sends
 * what is due since the start; a late tick is caught up over the next ticks, at most
 * `maxBurstMs` worth per tick, and a backlog older than `forgiveMs` is dropped (the source fell
 * behind: counted as not offered, so the offered rate stays honest).
 */
export interface Pacer {
  stop(): void;
  /** Datagrams handed to `send` so far. */
  readonly sent: number;
  /** Datagrams that were due but skipped because the source itself fell behind. */
  readonly forgiven: number;
}

export interface PacerOptions {
  tickMs?: number;
  maxBurstMs?: number;
  forgiveMs?: number;
  /** Stop by itself after this long (every bench loop is bounded in time). */
  durationMs: number;
}

export function pace(ratePerSecond: number, send: () => void, options: PacerOptions): Pacer {
  const tickMs = options.tickMs ?? 1;
  const maxBurst = Math.max(1, Math.ceil((ratePerSecond * (options.maxBurstMs ?? 4)) / 1000));
  const forgiveAfter = Math.ceil((ratePerSecond * (options.forgiveMs ?? 50)) / 1000);
  const start = performance.now();
  let sent = 0;
  let forgiven = 0;
  const tick = () => {
    const elapsed = performance.now() - start;
    if (elapsed >= options.durationMs) return stop();
    let due = Math.floor((elapsed * ratePerSecond) / 1000) - sent - forgiven;
    if (due > forgiveAfter) {
      forgiven += due - maxBurst;
      due = maxBurst;
    }
    for (let i = 0; i < Math.min(due, maxBurst); i++) {
      send();
      sent++;
    }
  };
  const timer = setInterval(tick, tickMs);
  const stop = () => clearInterval(timer);
  return {
    stop,
    get sent() {
      return sent;
    },
    get forgiven() {
      return forgiven;
    },
  };
}
