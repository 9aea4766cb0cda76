/**
 * The primary's record of the leases each worker holds (net open flows per client key), so that
 * a worker that dies — SIGKILL, crash, OOM — gives its leases back: its clients' pins then expire
 * after the TTL like anyone else's instead of staying pinned forever. Pure bookkeeping.
 */
export class LeaseLedger {
  private readonly byWorker = new Map<number, Map<string, number>>();

  /** Adds a worker's batch of deltas to its ledger. */
  add(worker: number, deltas: Iterable<[string, number]>): void {
    let ledger = this.byWorker.get(worker);
    if (!ledger) this.byWorker.set(worker, (ledger = new Map()));
    for (const [key, n] of deltas) {
      const held = (ledger.get(key) ?? 0) + n;
      if (held === 0) ledger.delete(key);
      else ledger.set(key, held);
    }
  }

  /** Forgets a worker and returns the deltas that undo what it still held (to apply to the table). */
  release(worker: number): Array<[string, number]> {
    const ledger = this.byWorker.get(worker);
    this.byWorker.delete(worker);
    if (!ledger) return [];
    return [...ledger].filter(([, n]) => n > 0).map(([key, n]) => [key, -n]);
  }

  /** Leases a worker holds now (what its death would give back; the unit tests read it). */
  held(worker: number): number {
    let n = 0;
    for (const v of this.byWorker.get(worker)?.values() ?? []) n += Math.max(0, v);
    return n;
  }
}
