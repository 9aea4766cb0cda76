import type { LookupQuery, StateChange } from './changes.ts';

/**
 * A replica of this process's client state, seen from the process that owns it (docs/state.md).
 * The same interface serves both layers:
 *  - a multi-core worker's replica is its primary (IPC, src/cluster/);
 *  - an instance's replica is the cluster store (Redis, when `cluster:` is configured).
 * The owner (Placer for pins and leases, SessionTable for learned sessions, Pool for operator
 * state) never waits on a replica for long: `lookup` is bounded, `publish` is fire-and-forget,
 * and a replica that is down makes the owner decide alone (consistent hashing agrees anyway).
 */
export interface StateReplica {
  /**
   * Asks about something this process has no live record of (a client's first flow here within
   * the TTL, an unknown cookie). Resolves within the replica's own deadline with what the other
   * side knows, or undefined (unknown, timed out, replica down). Never rejects.
   */
  lookup(query: LookupQuery): Promise<StateChange | undefined>;
  /** A change made here. Asynchronous: batched and retried by the replica, never awaited. */
  publish(change: StateChange): void;
  /**
   * Net flow opens (+) and closes (−) per client key since the last call, so the replica can keep
   * pins alive while a client has flows anywhere (its TTL counts from the last flow everywhere).
   */
  publishLeases(deltas: ReadonlyMap<string, number>): void;
  /** Registers where changes made elsewhere are delivered (the owner applies them, without re-publishing). */
  onRemote(apply: (change: StateChange) => void): void;
  close(): Promise<void>;
}
