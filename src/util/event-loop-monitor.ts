/**
 * How late this process's event loop runs a timer due every TICK_MS: the time a datagram that
 * arrives during a stall waits in its socket's receive queue before the proxy even sees it.
 * One monitor per process (there is one event loop per process), started on first use.
 *
 * Why a JS timer rather than perf_hooks.monitorEventLoopDelay: the native histogram has no
 * buckets to export (only percentiles of everything since its last reset), while this keeps
 * cumulative Prometheus buckets (any quantile over any window, summable over workers) and a
 * short ring of recent samples for exact windowed p99/max. Its cost is 100 callbacks a second.
 */
import { performance } from 'node:perf_hooks';

const TICK_MS = 10;
/** Recent samples kept for the windowed p99/max: 10 s of ticks. */
const WINDOW_SAMPLES = 1000;
/** Upper bounds (seconds) of the delay buckets: sub-millisecond is a healthy loop; 10 ms+ is felt by PCoIP. */
export const LOOP_DELAY_BUCKETS_S = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1] as const;

/** Plain data (workers send it to the primary over IPC). */
export interface LoopSnapshot {
  /** Non-cumulative counts per LOOP_DELAY_BUCKETS_S bound, then one for "+Inf". */
  buckets: number[];
  count: number;
  sumSeconds: number;
  /** Over the last ≤ WINDOW_SAMPLES ticks (≈ 10 s). */
  p99Seconds: number;
  maxSeconds: number;
}

export class EventLoopMonitor {
  private readonly buckets = new Array<number>(LOOP_DELAY_BUCKETS_S.length + 1).fill(0);
  private readonly recent = new Float64Array(WINDOW_SAMPLES);
  private recentCount = 0;
  private count = 0;
  private sum = 0;
  private last = performance.now();
  private readonly timer: NodeJS.Timeout;

  constructor() {
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
  }

  private tick(): void {
    const now = performance.now();
    const delaySeconds = Math.max(0, now - this.last - TICK_MS) / 1000;
    this.last = now;
    let i = 0;
    while (i < LOOP_DELAY_BUCKETS_S.length && delaySeconds > LOOP_DELAY_BUCKETS_S[i]!) i++;
    this.buckets[i]!++;
    this.count++;
    this.sum += delaySeconds;
    this.recent[this.recentCount++ % WINDOW_SAMPLES] = delaySeconds;
  }

  /** Totals since start, plus the recent window's p99/max. */
  snapshot(): LoopSnapshot {
    const window = Array.from(this.recent.subarray(0, Math.min(this.recentCount, WINDOW_SAMPLES))).sort((a, b) => a - b);
    const p99 = window.length === 0 ? 0 : window[Math.min(window.length - 1, Math.ceil(window.length * 0.99) - 1)]!;
    return {
      buckets: [...this.buckets],
      count: this.count,
      sumSeconds: this.sum,
      p99Seconds: p99,
      maxSeconds: window.at(-1) ?? 0,
    };
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

let processMonitor: EventLoopMonitor | undefined;

/** This process's monitor (created on the first call; its timer does not keep the process alive). */
export function processLoopMonitor(): EventLoopMonitor {
  processMonitor ??= new EventLoopMonitor();
  return processMonitor;
}
