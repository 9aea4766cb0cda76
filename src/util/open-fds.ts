import { readdir } from 'node:fs/promises';

/**
 * This process's open file descriptors (Linux /proc/self/fd), for a process that reports them
 * on a timer (multi-core workers). Listing a directory of 100 000 entries takes milliseconds,
 * so it runs in libuv's thread pool (async readdir), at most every `everyMs`, and `sample()`
 * returns the last count without waiting: never a pause on the data path's event loop.
 */
export class OpenFdSampler {
  private last = -1;
  private at = -Infinity;
  private pending = false;
  private readonly everyMs: number;

  constructor(everyMs = 10_000) {
    this.everyMs = everyMs;
  }

  /** The last count (-1 until the first listing finished, or where /proc is missing); starts a new listing when due. */
  sample(now = Date.now()): number {
    if (!this.pending && now - this.at >= this.everyMs) {
      this.pending = true;
      this.at = now;
      readdir('/proc/self/fd').then(
        // The listing itself holds one descriptor on the directory.
        (entries) => ((this.last = Math.max(0, entries.length - 1)), (this.pending = false)),
        () => (this.pending = false),
      );
    }
    return this.last;
  }
}
