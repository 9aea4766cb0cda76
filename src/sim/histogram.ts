/**
 * A log-bucketed histogram for latencies and loss ratios: fixed memory whatever the sample
 * count (a long load run records millions of round trips), ~1 % relative precision.
 * Values below `MIN_VALUE` (including 0) count as 0.
 */
const GROWTH = 1.01;
const MIN_VALUE = 1e-3;
const BUCKETS = Math.ceil(Math.log(1e9) / Math.log(GROWTH)) + 2;

export interface Summary {
  count: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

export class Histogram {
  private readonly buckets = new Float64Array(BUCKETS);
  private zeros = 0;
  count = 0;
  max = 0;
  private sum = 0;

  record(value: number): void {
    this.count++;
    this.sum += value;
    if (value > this.max) this.max = value;
    if (!(value >= MIN_VALUE)) {
      this.zeros++;
      return;
    }
    const index = Math.min(BUCKETS - 1, Math.ceil(Math.log(value / MIN_VALUE) / Math.log(GROWTH)));
    this.buckets[index]!++;
  }

  /** Nearest-rank percentile (0 < p ≤ 100); the bucket's upper bound, capped at the true max. */
  percentile(p: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    if (rank <= this.zeros) return 0;
    let seen = this.zeros;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.buckets[i]!;
      if (seen >= rank) return Math.min(this.max, MIN_VALUE * GROWTH ** i);
    }
    return this.max;
  }

  summary(): Summary {
    return {
      count: this.count,
      p50: this.percentile(50),
      p95: this.percentile(95),
      p99: this.percentile(99),
      max: this.max,
      mean: this.count === 0 ? 0 : this.sum / this.count,
    };
  }
}
