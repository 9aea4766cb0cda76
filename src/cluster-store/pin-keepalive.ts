/**
 * Keeps a client's pin alive in the store while the client has flows on this instance, with
 * few writes (docs/ha.md, "Pins and their TTL"). Pure bookkeeping: the replica does the I/O.
 *
 * The rule an instance owes the cluster: the stored pin must not expire before `ttl` after the
 * client's last flow here ends. A pin is written with PX = ttl + slack. So
 *  - while the client has flows here, its key is refreshed (PEXPIRE, the same PX) once less
 *    than ttl + slack/2 of it is left: about one write per slack per active client;
 *  - when its last flow here closes, the key is refreshed only if less than ttl is left.
 * Every instance does this for its own flows, so the stored TTL counts from the last flow
 * anywhere. Expiry times are what this instance wrote or read (PTTL), never another clock.
 */
export interface KeepAliveOptions {
  ttlMs: number;
  /** The extra life of a stored pin, and so the refresh period; docs: min(ttl/4, 5 min), ≥ 1 s. */
  slackMs: number;
}

interface Tracked {
  flows: number;
  /** When the stored key expires as far as this instance knows (0: unknown, refresh on need). */
  expiresAt: number;
}

export function keepAliveSlack(ttlMs: number): number {
  return Math.max(1000, Math.min(300_000, Math.round(ttlMs / 4)));
}

export class PinKeepAlive {
  private readonly tracked = new Map<string, Tracked>();
  private options: KeepAliveOptions;

  constructor(options: KeepAliveOptions) {
    this.options = options;
  }

  /** PX of every pin (and learned session) written. */
  get storedTtlMs(): number {
    return this.options.ttlMs + this.options.slackMs;
  }

  /** Keys tracked (with flows here, or idle until their stored pin expires): what bounds this table's memory. */
  get size(): number {
    return this.tracked.size;
  }

  /** The key was just written (or refreshed) with `storedTtlMs`. */
  written(key: string, now: number): void {
    this.entry(key).expiresAt = now + this.storedTtlMs;
  }

  /**
   * Another instance just wrote the key (its message on the channel): a key tracked here expires
   * later now. A key not tracked here stays untracked: this instance keeps alive only its own
   * clients, never every client of the cluster.
   */
  writtenElsewhere(key: string, now: number): void {
    const t = this.tracked.get(key);
    if (t) t.expiresAt = now + this.storedTtlMs;
  }

  /** The store said the key expires in `pttlMs` (a look-up); negative: no such key. */
  observed(key: string, pttlMs: number, now: number): void {
    this.entry(key).expiresAt = pttlMs > 0 ? now + pttlMs : 0;
  }

  /** Net flow changes since the last batch; returns the keys to refresh now (their last flow here just ended). */
  applyDeltas(deltas: ReadonlyMap<string, number>, now: number): string[] {
    const refresh: string[] = [];
    for (const [key, delta] of deltas) {
      const t = this.entry(key);
      t.flows = Math.max(0, t.flows + delta);
      const needed = t.flows > 0 ? this.options.ttlMs + this.options.slackMs / 2 : this.options.ttlMs;
      if (t.expiresAt - now < needed) {
        refresh.push(key);
        t.expiresAt = now + this.storedTtlMs;
      }
    }
    return refresh;
  }

  /**
   * Keys of clients with flows here whose stored pin needs a refresh now (called every slack/2),
   * marked refreshed. Also forgets idle keys whose stored pin has expired (nothing left to keep).
   */
  due(now: number): string[] {
    const refresh: string[] = [];
    const needed = this.options.ttlMs + this.options.slackMs / 2;
    for (const [key, t] of this.tracked) {
      if (t.flows > 0) {
        if (t.expiresAt - now < needed) {
          refresh.push(key);
          t.expiresAt = now + this.storedTtlMs;
        }
      } else if (t.expiresAt <= now) this.tracked.delete(key);
    }
    return refresh;
  }

  private entry(key: string): Tracked {
    let t = this.tracked.get(key);
    if (!t) {
      t = { flows: 0, expiresAt: 0 };
      this.tracked.set(key, t);
    }
    return t;
  }
}
