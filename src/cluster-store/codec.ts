import { isIP } from 'node:net';
import { z } from 'zod';
import { parseClientKey } from '../balance/client-key.ts';
import { isSessionKeyDigest } from '../balance/sessions.ts';
import { CONNECTOR_STATES } from '../config/schema.ts';
import type { LookupQuery, OperatorStateRecord, PinRecord, StateChange } from '../state/changes.ts';

/**
 * What is written to the store and how what is read back is checked. Everything read from Redis
 * is untrusted: another version, a typo in redis-cli or a hostile writer can put anything there.
 * A value that does not parse, has the wrong shape, is too large or names a Connector this
 * instance does not have is rejected with a reason (the replica logs and counts it) and never
 * used to route. Pure: no I/O.
 */

/** Larger values are refused unread (a pin is ~80 bytes, an allocation ~400, a heartbeat ~100 per Connector). */
const MAX_VALUE_BYTES = 64 * 1024;

export type Decoded<T> = { ok: true; value: T } | { ok: false; reason: string };

/** Which Connector ids this instance has (a value naming another one is not used). */
export type KnownConnector = (id: string) => boolean;

const time = z.number().finite().nonnegative();
const shortText = (max: number) => z.string().max(max);
const connectorId = z.string().min(1).max(63);
const instanceId = z.string().min(1).max(253);
const placementReason = z.enum(['placed', 'repinned', 'learned']);
/** A pin's key: a client key (`addr/len`, balance/client-key.ts), nothing else. */
const clientKey = shortText(200).refine((k) => parseClientKey(k) !== undefined, { message: 'not a client key (address/prefix length)' });
/** A learned session's key: the digest the SessionTable keys it by, never a raw cookie. */
const sessionKey = z.string().refine(isSessionKeyDigest, { message: 'not a session key digest' });

const pinValue = z.object({ connector: connectorId, reason: placementReason, at: time, by: instanceId });
const sessionValue = z.object({ connector: connectorId, at: time, by: instanceId });
/** An allocation's fields besides its Connector (the same in the store and on the channel). */
const allocationFields = {
  clientAddress: shortText(64).refine((a) => isIP(a) !== 0, { message: 'clientAddress is not an IP address' }),
  sessionIdHint: shortText(64),
  ipAddress: shortText(253).optional(),
  port: z.number().int().min(0).max(65_535).optional(),
  tagFingerprint: shortText(64),
  learnedAt: time,
  tagExpiresAt: time,
};
const allocationValue = z.object({ connector: connectorId, ...allocationFields, by: instanceId });
const operatorValue = z.object({ state: z.enum(CONNECTOR_STATES), at: time, by: instanceId });

/** A change as it travels on the channel (the StateChange union, checked field by field). */
const changeSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('pin'), key: clientKey, connectorId, reason: placementReason, at: time }),
  z.object({ kind: z.literal('unpin'), key: clientKey, at: time }),
  z.object({ kind: z.enum(['cookie', 'log-id']), key: sessionKey, connectorId, at: time }),
  z.object({ kind: z.literal('allocation'), sni: shortText(253).min(1), connectorId, ...allocationFields }),
  z.object({ kind: z.literal('allocation-claimed'), sni: shortText(253).min(1), at: time }),
  z.object({ kind: z.literal('operator-state'), connectorId, state: z.enum(CONNECTOR_STATES), at: time }),
]);
const messageSchema = z.object({ from: instanceId, change: changeSchema });

/** The stored value of a pin, a session, an allocation or an operator state (what `encodeValue` wrote). */
export function encodeValue(change: Exclude<StateChange, { kind: 'unpin' | 'allocation-claimed' }>, by: string): string {
  switch (change.kind) {
    case 'pin':
      return JSON.stringify({ connector: change.connectorId, reason: change.reason, at: change.at, by });
    case 'cookie':
    case 'log-id':
      return JSON.stringify({ connector: change.connectorId, at: change.at, by });
    case 'allocation': {
      const { kind: _kind, sni: _sni, connectorId: connector, ...rest } = change;
      return JSON.stringify({ connector, ...rest, by });
    }
    case 'operator-state':
      return JSON.stringify({ state: change.state, at: change.at, by });
  }
}

/** Parses JSON within the size bound; the reason says what was wrong (for the log line). */
function parseJson(text: string): Decoded<unknown> {
  if (Buffer.byteLength(text) > MAX_VALUE_BYTES) return { ok: false, reason: `value larger than ${MAX_VALUE_BYTES} bytes` };
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false, reason: 'not JSON' };
  }
}

function check<S extends z.ZodType>(schema: S, text: string): Decoded<z.output<S>> {
  const parsed = parseJson(text);
  if (!parsed.ok) return parsed;
  const result = schema.safeParse(parsed.value);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    return { ok: false, reason: `${issue.path.join('.') || 'value'}: ${issue.message}` };
  }
  return { ok: true, value: result.data };
}

function knownOr<T>(known: KnownConnector, id: string, value: T): Decoded<T> {
  return known(id) ? { ok: true, value } : { ok: false, reason: `names Connector "${id.slice(0, 63)}", which this instance does not have` };
}

/** The record a stored value stands for, given the key it was read from (the query). */
export function decodeValue(query: LookupQuery, text: string, known: KnownConnector): Decoded<StateChange> {
  switch (query.kind) {
    case 'pin': {
      const v = check(pinValue, text);
      if (!v.ok) return v;
      const record: PinRecord = { kind: 'pin', key: query.key, connectorId: v.value.connector, reason: v.value.reason, at: v.value.at };
      return knownOr(known, record.connectorId, record);
    }
    case 'cookie':
    case 'log-id': {
      const v = check(sessionValue, text);
      if (!v.ok) return v;
      return knownOr(known, v.value.connector, { kind: query.kind, key: query.key, connectorId: v.value.connector, at: v.value.at });
    }
    case 'allocation': {
      const v = check(allocationValue, text);
      if (!v.ok) return v;
      const { connector, by: _by, ipAddress, port, ...rest } = v.value;
      return knownOr(known, connector, { kind: 'allocation', sni: query.sni, connectorId: connector, ipAddress, port, ...rest });
    }
  }
}

/** One field of the operator hash. */
export function decodeOperatorState(connector: string, text: string, known: KnownConnector): Decoded<OperatorStateRecord> {
  const v = check(operatorValue, text);
  if (!v.ok) return v;
  return knownOr(known, connector, { kind: 'operator-state', connectorId: connector, state: v.value.state, at: v.value.at });
}

export function encodeMessage(from: string, change: StateChange): string {
  return JSON.stringify({ from, change });
}

/** A message from the channel: who sent it and the change, checked like a stored value. */
export function decodeMessage(text: string, known: KnownConnector): Decoded<{ from: string; change: StateChange }> {
  const v = check(messageSchema, text);
  if (!v.ok) return v;
  const change = v.value.change as StateChange;
  if ('connectorId' in change) {
    const k = knownOr(known, change.connectorId, change);
    if (!k.ok) return k;
  }
  return { ok: true, value: { from: v.value.from, change } };
}

// ---- heartbeats (the cluster view) --------------------------------------------------------------

/** One instance's view of one Connector, as its heartbeat carries it. */
export interface ConnectorViewRecord {
  id: string;
  health: 'up' | 'down';
  state: (typeof CONNECTOR_STATES)[number];
  reason: string;
}

export interface HeartbeatRecord {
  id: string;
  version: string;
  startedAt: number;
  at: number;
  /** Where its listeners are bound ("broker" → "10.0.0.5:443/tcp"). */
  listeners: Record<string, string>;
  /** Its health checks' and operator's view of each Connector it has. */
  connectors: ConnectorViewRecord[];
}

const heartbeatValue = z.object({
  id: instanceId,
  version: shortText(64),
  startedAt: time,
  at: time,
  listeners: z.record(shortText(32), shortText(300)).refine((l) => Object.keys(l).length <= 16, { message: 'too many listeners' }),
  connectors: z
    .array(z.object({ id: connectorId, health: z.enum(['up', 'down']), state: z.enum(CONNECTOR_STATES), reason: shortText(500) }))
    .max(10_000),
});

export function encodeHeartbeat(h: HeartbeatRecord): string {
  return JSON.stringify(h);
}

/** A heartbeat. Connectors this instance does not have are kept: the view shows them as a disagreement. */
export function decodeHeartbeat(id: string, text: string): Decoded<HeartbeatRecord> {
  const v = check(heartbeatValue, text);
  if (!v.ok) return v;
  if (v.value.id !== id) return { ok: false, reason: `heartbeat of "${id}" names itself "${v.value.id.slice(0, 63)}"` };
  return v;
}
