import { hash32 } from './hash.ts';
import type { AllocationRecord, LookupQuery, SessionRecord } from '../state/changes.ts';

/**
 * What the terminating broker listener learns from the broker exchange, for routing:
 *  - JSESSIONID cookie → Connector (from the Connector's Set-Cookie),
 *  - CLIENT-LOG-ID header → Connector (from the first request that carried it),
 *  - allocation (by its `sni`) → Connector, from allocate-resource-resp.
 * Pure: the clock is an argument, nothing here touches a socket. Secrets (cookie values, connect
 * tags) are used as keys or fingerprinted but never returned by `describeSessions()`.
 *
 * Lifetimes: a cookie or log id lives `ttlMs` after it was last used. An allocation first lives
 * while its connect tag is valid (60 s, single use: PCoIP Client SDK); once a 4172 flow claimed
 * it, it lives while such flows are open plus `ttlMs`, like an affinity entry.
 */

export const CONNECT_TAG_LIFETIME_MS = 60_000;

export interface SessionTableOptions {
  /** Idle lifetime of cookies, log ids and claimed allocations (the affinity TTL). */
  ttlMs: number;
  /** Per kind; the oldest entry is dropped past it so a flood cannot grow memory without bound. */
  maxEntries: number;
  tagLifetimeMs?: number;
}

interface KeyedEntry {
  connectorId: string;
  learnedAt: number;
  lastSeen: number;
}

export interface Allocation {
  readonly sni: string | undefined;
  readonly connectorId: string;
  /** The requesting client's address (as seen on 443). */
  readonly clientAddress: string;
  readonly sessionIdHint: string;
  readonly ipAddress: string | undefined;
  readonly port: number | undefined;
  readonly learnedAt: number;
  readonly tagExpiresAt: number;
  readonly tagFingerprint: string;
  /** A 4172 flow matched this allocation: the tag has been used. */
  claimed: boolean;
  flows: number;
  lastSeen: number;
}

export interface AllocationInput {
  connectorId: string;
  clientAddress: string;
  sni: string | undefined;
  sessionId: string | undefined;
  connectTag: string | undefined;
  ipAddress: string | undefined;
  port: number | undefined;
}

export type LearnResult =
  | { ok: true; allocation: Allocation; replaced: boolean }
  | { ok: false; reason: 'reused-tag' | 'no-connect-tag' };

export type SniMatch = { ok: true; allocation: Allocation } | { ok: false; reason: 'unknown' | 'tag-expired' };

/** A value safe for logs: its first 4 characters and its length ("ab12…(32)"). */
export function redact(secret: string): string {
  return secret.length <= 4 ? `…(${secret.length})` : `${secret.slice(0, 4)}…(${secret.length})`;
}

export class SessionTable {
  private readonly cookies = new Map<string, KeyedEntry>();
  private readonly logIds = new Map<string, KeyedEntry>();
  private readonly allocations = new Map<string, Allocation>();
  /** Fingerprints of connect tags seen, with when they stop mattering (a tag is single-use). */
  private readonly tagsSeen = new Map<string, number>();
  private options: Required<SessionTableOptions>;
  private readonly learnListeners: Array<(record: SessionRecord, origin: 'local' | 'remote') => void> = [];

  constructor(options: SessionTableOptions) {
    this.options = { tagLifetimeMs: CONNECT_TAG_LIFETIME_MS, ...options };
  }

  setTtl(ttlMs: number): void {
    this.options = { ...this.options, ttlMs };
  }

  learnCookie(value: string, connectorId: string, now: number): void {
    if (this.learnKeyed(this.cookies, value, connectorId, now)) this.emit({ kind: 'cookie', key: value, connectorId, at: now });
  }

  learnLogId(value: string, connectorId: string, now: number): void {
    if (this.learnKeyed(this.logIds, value, connectorId, now)) this.emit({ kind: 'log-id', key: value, connectorId, at: now });
  }

  /** The Connector that issued this session cookie, refreshing its lifetime; undefined if unknown or expired. */
  connectorForCookie(value: string, now: number): string | undefined {
    return this.lookupKeyed(this.cookies, value, now);
  }

  connectorForLogId(value: string, now: number): string | undefined {
    return this.lookupKeyed(this.logIds, value, now);
  }

  /**
   * Records an allocation. A connect tag seen before is refused (single use: a replayed or
   * duplicated response must not move anyone). A new allocation for the same sni replaces the old.
   */
  learnAllocation(input: AllocationInput, now: number): LearnResult {
    if (!input.connectTag) return { ok: false, reason: 'no-connect-tag' };
    const fingerprint = tagFingerprint(input.connectTag);
    const seenUntil = this.tagsSeen.get(fingerprint);
    if (seenUntil !== undefined && seenUntil > now) return { ok: false, reason: 'reused-tag' };
    const record: AllocationRecord = {
      kind: 'allocation',
      sni: input.sni ?? '',
      connectorId: input.connectorId,
      clientAddress: input.clientAddress,
      sessionIdHint: input.sessionId ? redact(input.sessionId) : '',
      ipAddress: input.ipAddress,
      port: input.port,
      tagFingerprint: fingerprint,
      learnedAt: now,
      tagExpiresAt: now + this.options.tagLifetimeMs,
    };
    const { allocation, replaced } = this.storeAllocation(record);
    this.emit(record);
    return { ok: true, allocation, replaced };
  }

  /** Records an allocation (learned here or replicated) and its tag; returns it and whether it replaced one. */
  private storeAllocation(record: AllocationRecord): { allocation: Allocation; replaced: boolean } {
    this.tagsSeen.set(record.tagFingerprint, record.tagExpiresAt);
    this.bound(this.tagsSeen);
    const allocation: Allocation = {
      sni: record.sni === '' ? undefined : record.sni,
      connectorId: record.connectorId,
      clientAddress: record.clientAddress,
      sessionIdHint: record.sessionIdHint,
      ipAddress: record.ipAddress,
      port: record.port,
      learnedAt: record.learnedAt,
      tagExpiresAt: record.tagExpiresAt,
      tagFingerprint: record.tagFingerprint,
      claimed: false,
      flows: 0,
      lastSeen: record.learnedAt,
    };
    let replaced = false;
    if (allocation.sni) {
      replaced = this.allocations.delete(allocation.sni);
      this.allocations.set(allocation.sni, allocation);
      this.bound(this.allocations);
    }
    return { allocation, replaced };
  }

  /**
   * The allocation a 4172 ClientHello's SNI names. An unclaimed allocation whose tag expired is
   * dropped (the client can no longer use it). Does not claim: call `flowOpened` once the flow is up.
   */
  matchSni(sni: string, now: number): SniMatch {
    const a = this.allocations.get(sni.toLowerCase());
    if (!a) return { ok: false, reason: 'unknown' };
    if (this.isExpired(a, now)) {
      this.allocations.delete(sni.toLowerCase());
      return { ok: false, reason: a.claimed ? 'unknown' : 'tag-expired' };
    }
    return { ok: true, allocation: a };
  }

  flowOpened(allocation: Allocation, now: number): void {
    const first = !allocation.claimed;
    allocation.claimed = true;
    allocation.flows++;
    allocation.lastSeen = now;
    if (first && allocation.sni) this.emit({ kind: 'allocation-claimed', sni: allocation.sni, at: now });
  }

  flowClosed(allocation: Allocation, now: number): void {
    allocation.flows = Math.max(0, allocation.flows - 1);
    allocation.lastSeen = now;
  }

  /** Drops every expired entry; returns how many. */
  sweep(now: number): number {
    let removed = 0;
    for (const map of [this.cookies, this.logIds]) {
      for (const [k, e] of map) if (now - e.lastSeen > this.options.ttlMs) (map.delete(k), removed++);
    }
    for (const [k, a] of this.allocations) if (this.isExpired(a, now)) (this.allocations.delete(k), removed++);
    for (const [k, until] of this.tagsSeen) if (until <= now) this.tagsSeen.delete(k);
    return removed;
  }

  /** Drops what points at a Connector that left the config. */
  forgetConnector(connectorId: string): void {
    for (const map of [this.cookies, this.logIds]) for (const [k, e] of map) if (e.connectorId === connectorId) map.delete(k);
    for (const [k, a] of this.allocations) if (a.connectorId === connectorId) this.allocations.delete(k);
  }

  get counts(): { cookies: number; logIds: number; allocations: number } {
    return { cookies: this.cookies.size, logIds: this.logIds.size, allocations: this.allocations.size };
  }

  /** For /status: live entries without secrets (cookie values and tags never leave this table). */
  describeSessions(now: number): SessionsDescription {
    const perConnector: Record<string, { cookies: number; logIds: number; allocations: number }> = {};
    const bump = (id: string, k: 'cookies' | 'logIds' | 'allocations') => {
      const c = (perConnector[id] ??= { cookies: 0, logIds: 0, allocations: 0 });
      c[k]++;
    };
    for (const e of this.cookies.values()) if (now - e.lastSeen <= this.options.ttlMs) bump(e.connectorId, 'cookies');
    for (const e of this.logIds.values()) if (now - e.lastSeen <= this.options.ttlMs) bump(e.connectorId, 'logIds');
    const allocations: AllocationDescription[] = [];
    for (const a of this.allocations.values()) {
      if (this.isExpired(a, now)) continue;
      bump(a.connectorId, 'allocations');
      allocations.push({
        sni: a.sni,
        connector: a.connectorId,
        client: a.clientAddress,
        sessionId: a.sessionIdHint,
        ageMs: now - a.learnedAt,
        state: a.claimed ? (a.flows > 0 ? 'active' : 'idle') : 'awaiting-4172',
        flows: a.flows,
      });
    }
    return { counts: this.counts, perConnector, allocations };
  }

  private isExpired(a: Allocation, now: number): boolean {
    if (!a.claimed) return now >= a.tagExpiresAt;
    return a.flows === 0 && now - a.lastSeen > this.options.ttlMs;
  }

  /** Returns true when the key is new or now points elsewhere (a change worth replicating). */
  private learnKeyed(map: Map<string, KeyedEntry>, key: string, connectorId: string, now: number): boolean {
    const existing = map.get(key);
    if (existing && existing.connectorId === connectorId) {
      existing.lastSeen = now;
      return false;
    }
    map.delete(key);
    map.set(key, { connectorId, learnedAt: now, lastSeen: now });
    this.bound(map);
    return true;
  }

  // ---- replication (docs/state.md): this table is the one owner of learned sessions -------------

  /**
   * Calls `listener` with every record stored: learned here (`local`), or applied from another
   * process (`apply`'s origin). A record that changed nothing (already known) is not announced.
   */
  onLearn(listener: (record: SessionRecord, origin: 'local' | 'remote') => void): void {
    this.learnListeners.push(listener);
  }

  /**
   * A session learned in another process. `origin` 'local': this process owns it for its
   * instance (the primary applying what its workers learned: its own replica must hear of it);
   * 'remote': it came from a replica and is not published again.
   */
  apply(record: SessionRecord, now: number, origin: 'local' | 'remote'): void {
    if (this.store(record, now)) this.emit(record, origin);
  }

  /** Stores a replicated record; false when it changed nothing (already known, or too late to use). */
  private store(record: SessionRecord, now: number): boolean {
    switch (record.kind) {
      case 'cookie':
      case 'log-id':
        return this.learnKeyed(record.kind === 'cookie' ? this.cookies : this.logIds, record.key, record.connectorId, now);
      case 'allocation':
        // A record that arrives after its tag expired can no longer be used.
        if (record.tagExpiresAt <= now || this.tagsSeen.get(record.tagFingerprint) === record.tagExpiresAt) return false;
        this.storeAllocation(record);
        return true;
      case 'allocation-claimed': {
        const a = this.allocations.get(record.sni);
        if (!a || a.claimed) return false;
        a.claimed = true;
        a.lastSeen = now;
        return true;
      }
    }
  }

  /** Everything live, as records: what a new replica (a worker forked later) starts from. */
  records(now: number): SessionRecord[] {
    const out: SessionRecord[] = [];
    const live = (e: KeyedEntry) => now - e.lastSeen <= this.options.ttlMs;
    for (const [key, e] of this.cookies) if (live(e)) out.push({ kind: 'cookie', key, connectorId: e.connectorId, at: e.learnedAt });
    for (const [key, e] of this.logIds) if (live(e)) out.push({ kind: 'log-id', key, connectorId: e.connectorId, at: e.learnedAt });
    for (const a of this.allocations.values()) {
      if (this.isExpired(a, now) || !a.sni) continue;
      out.push(allocationRecord(a));
      if (a.claimed) out.push({ kind: 'allocation-claimed', sni: a.sni, at: a.lastSeen });
    }
    return out;
  }

  /** What this table knows for a replica's look-up (undefined: nothing live). */
  lookup(query: Exclude<LookupQuery, { kind: 'pin' }>, now: number): SessionRecord | undefined {
    if (query.kind === 'allocation') {
      const a = this.allocations.get(query.sni);
      return a && !this.isExpired(a, now) ? allocationRecord(a) : undefined;
    }
    const map = query.kind === 'cookie' ? this.cookies : this.logIds;
    const e = map.get(query.key);
    if (!e || now - e.lastSeen > this.options.ttlMs) return undefined;
    return { kind: query.kind, key: query.key, connectorId: e.connectorId, at: e.learnedAt };
  }

  private emit(record: SessionRecord, origin: 'local' | 'remote' = 'local'): void {
    for (const l of this.learnListeners) l(record, origin);
  }

  private lookupKeyed(map: Map<string, KeyedEntry>, key: string, now: number): string | undefined {
    const e = map.get(key);
    if (!e) return undefined;
    if (now - e.lastSeen > this.options.ttlMs) {
      map.delete(key);
      return undefined;
    }
    e.lastSeen = now;
    return e.connectorId;
  }

  /** Map iteration order is insertion order: dropping the first key drops the oldest. */
  private bound(map: Map<string, unknown>): void {
    while (map.size > this.options.maxEntries) {
      const oldest = map.keys().next().value;
      if (oldest === undefined) break;
      map.delete(oldest);
    }
  }
}

export interface AllocationDescription {
  sni: string | undefined;
  connector: string;
  client: string;
  /** Redacted: first 4 characters and length. */
  sessionId: string;
  ageMs: number;
  state: 'awaiting-4172' | 'active' | 'idle';
  flows: number;
}

export interface SessionsDescription {
  counts: { cookies: number; logIds: number; allocations: number };
  perConnector: Record<string, { cookies: number; logIds: number; allocations: number }>;
  allocations: AllocationDescription[];
}

function allocationRecord(a: Allocation): AllocationRecord {
  return {
    kind: 'allocation',
    sni: a.sni ?? '',
    connectorId: a.connectorId,
    clientAddress: a.clientAddress,
    sessionIdHint: a.sessionIdHint,
    ipAddress: a.ipAddress,
    port: a.port,
    tagFingerprint: a.tagFingerprint,
    learnedAt: a.learnedAt,
    tagExpiresAt: a.tagExpiresAt,
  };
}

/** Two independent 32-bit hashes: enough to tell tags apart without keeping the tag itself. */
function tagFingerprint(tag: string): string {
  return `${hash32(tag, 0x5eed).toString(16)}:${hash32(tag, 0xc0ffee).toString(16)}:${tag.length}`;
}
