import type { PlacementReason } from '../balance/affinity.ts';
import type { ConnectorState } from '../config/schema.ts';

/**
 * Changes to client state, as plain data: what one owner tells its replicas (worker processes
 * over IPC, other instances through a store) and what it applies when a replica tells it.
 * Every field is serializable (structured clone, JSON). Secrets never travel: learned session
 * keys are the digests the SessionTable keys its maps by, never raw cookie values.
 *
 * Only *exceptions* travel: a pin per client (not per flow), a learned session per login, and
 * the operator's state. Flow opens/closes travel as batched lease deltas (see StateReplica).
 */

/** "Client key K belongs to Connector C" (placed, re-placed after a failure, or learned). */
export interface PinRecord {
  kind: 'pin';
  key: string;
  connectorId: string;
  reason: PlacementReason;
  /** When it was pinned (ms since the epoch, the writer's clock). */
  at: number;
}

/** A client key's pin is gone (its Connector left the config, or the operator cleared it). */
export interface UnpinRecord {
  kind: 'unpin';
  key: string;
  at: number;
}

/** A learned broker session key (cookie or CLIENT-LOG-ID digest) → the Connector that owns it. */
export interface SessionKeyRecord {
  kind: 'cookie' | 'log-id';
  key: string;
  connectorId: string;
  at: number;
}

/** An allocation learned from allocate-resource-resp (keyed by its SNI), or its first claim. */
export interface AllocationRecord {
  kind: 'allocation';
  sni: string;
  connectorId: string;
  clientAddress: string;
  sessionIdHint: string;
  ipAddress: string | undefined;
  port: number | undefined;
  /** Fingerprint of the single-use connect tag: a replay through another process is refused too. */
  tagFingerprint: string;
  learnedAt: number;
  tagExpiresAt: number;
}

export interface AllocationClaimRecord {
  kind: 'allocation-claimed';
  sni: string;
  at: number;
}

/** The operator's drain/maint/enable (not health: health is measured by each instance). */
export interface OperatorStateRecord {
  kind: 'operator-state';
  connectorId: string;
  state: ConnectorState;
  at: number;
}

export type SessionRecord = SessionKeyRecord | AllocationRecord | AllocationClaimRecord;
export type StateChange = PinRecord | UnpinRecord | SessionRecord | OperatorStateRecord;

/** What a replica can be asked about on a flow's first packet (bounded, see StateReplica.lookup). */
export type LookupQuery = { kind: 'pin'; key: string } | { kind: 'cookie' | 'log-id'; key: string } | { kind: 'allocation'; sni: string };
