import { AffinityTable, type AffinityEntry, type PlacementReason } from '../balance/affinity.ts';
import type { PinMessage } from './protocol.ts';

/**
 * A worker's affinity table: a local cache of the primary's authoritative table. Every pin this
 * worker makes (a new client placed, a client re-placed after a failed connect, a learned pin)
 * is reported to the primary at once; flow opens and closes are batched (the primary counts
 * them for the TTL). Pins from the primary (another worker's re-placement) are applied
 * without being reported back. Expiry and deletions stay local: a worker that no longer has an
 * entry asks the primary again (see WorkerAffinity.beforeDecide).
 */
export class SyncedAffinityTable extends AffinityTable {
  private readonly report: (pin: PinMessage) => void;
  private deltas = new Map<string, number>();
  private applyingRemote = false;

  constructor(ttlMs: number, report: (pin: PinMessage) => void) {
    super(ttlMs);
    this.report = report;
  }

  override pin(clientKey: string, connectorId: string, now: number, reason: PlacementReason): AffinityEntry {
    const entry = super.pin(clientKey, connectorId, now, reason);
    if (!this.applyingRemote) this.report({ key: clientKey, connectorId, reason });
    return entry;
  }

  /** A pin decided elsewhere (the primary's answer, or another worker's change). */
  applyRemote(pin: PinMessage, now: number): void {
    this.applyingRemote = true;
    try {
      super.pin(pin.key, pin.connectorId, now, pin.reason);
    } finally {
      this.applyingRemote = false;
    }
  }

  override flowOpened(clientKey: string, now: number): void {
    super.flowOpened(clientKey, now);
    this.deltas.set(clientKey, (this.deltas.get(clientKey) ?? 0) + 1);
  }

  override flowClosed(clientKey: string, now: number): void {
    super.flowClosed(clientKey, now);
    this.deltas.set(clientKey, (this.deltas.get(clientKey) ?? 0) - 1);
  }

  /** The flow deltas since the last call (zeros dropped), for one batched message. */
  takeDeltas(): Array<[string, number]> {
    const out = [...this.deltas].filter(([, d]) => d !== 0);
    this.deltas = new Map();
    return out;
  }
}
