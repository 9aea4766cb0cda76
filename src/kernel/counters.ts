import type { CounterRef } from './nft-script.ts';
import type { KernelProto } from './plan.ts';

/**
 * The per-Connector nft counters, turned into deltas the listener counters (FlowStats) can add.
 * nft counters start at zero whenever the table is written whole (start, reload), so each
 * reading is compared with the previous one per (Connector, protocol, direction), not per counter
 * name (names follow the plan's order, which a reload may change). Pure.
 */

export interface CounterReading {
  packets: number;
  bytes: number;
}

export interface TrafficDelta {
  connectorId: string;
  proto: KernelProto;
  packetsIn: number;
  bytesIn: number;
  packetsOut: number;
  bytesOut: number;
}

/** `nft -j list counters table inet T` → counter name → reading. Unknown shapes are skipped. */
export function parseCounters(json: unknown): Map<string, CounterReading> {
  const out = new Map<string, CounterReading>();
  const items = (json as { nftables?: unknown[] } | undefined)?.nftables;
  if (!Array.isArray(items)) return out;
  for (const item of items) {
    const c = (item as { counter?: { name?: unknown; packets?: unknown; bytes?: unknown } }).counter;
    if (c && typeof c.name === 'string' && typeof c.packets === 'number' && typeof c.bytes === 'number') out.set(c.name, { packets: c.packets, bytes: c.bytes });
  }
  return out;
}

export class CounterDeltas {
  private last = new Map<string, CounterReading>();

  /** The table was written whole: its counters are zero again. */
  resetBaseline(): void {
    this.last.clear();
  }

  /** Deltas since the previous reading, one per Connector and protocol that moved. */
  next(refs: readonly CounterRef[], readings: ReadonlyMap<string, CounterReading>): TrafficDelta[] {
    const byFlow = new Map<string, TrafficDelta>();
    for (const ref of refs) {
      const now = readings.get(ref.name);
      if (!now) continue;
      const id = `${ref.connectorId}|${ref.proto}|${ref.direction}`;
      const before = this.last.get(id);
      this.last.set(id, now);
      // A reading below the last one means the counter started again (table rewritten): all of it is new.
      const packets = before && now.packets >= before.packets ? now.packets - before.packets : now.packets;
      const bytes = before && now.bytes >= before.bytes ? now.bytes - before.bytes : now.bytes;
      if (packets === 0 && bytes === 0) continue;
      const key = `${ref.connectorId}|${ref.proto}`;
      let d = byFlow.get(key);
      if (!d) {
        d = { connectorId: ref.connectorId, proto: ref.proto, packetsIn: 0, bytesIn: 0, packetsOut: 0, bytesOut: 0 };
        byFlow.set(key, d);
      }
      if (ref.direction === 'in') {
        d.packetsIn += packets;
        d.bytesIn += bytes;
      } else {
        d.packetsOut += packets;
        d.bytesOut += bytes;
      }
    }
    return [...byFlow.values()];
  }
}
