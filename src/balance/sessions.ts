import { hash32 } from './hash.ts';

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

  constructor(options: SessionTableOptions) {
    this.options = { tagLifetimeMs: CONNECT_TAG_LIFETIME_MS, ...options };
  }

  setTtl(ttlMs: number): void {
    this.options = { ...this.options, ttlMs };
  }

  learnCookie(value: string, connectorId: string, now: number): void {
    this.learnKeyed(this.cookies, value, connectorId, now);
  }

  learnLogId(value: string, connectorId: string, now: number): void {
    this.learnKeyed(this.logIds, value, connectorId, now);
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
    this.tagsSeen.set(fingerprint, now + this.options.tagLifetimeMs);
    this.bound(this.tagsSeen);
    const allocation: Allocation = {
      sni: input.sni,
      connectorId: input.connectorId,
      clientAddress: input.clientAddress,
      sessionIdHint: input.sessionId ? redact(input.sessionId) : '',
      ipAddress: input.ipAddress,
      port: input.port,
      learnedAt: now,
      tagExpiresAt: now + this.options.tagLifetimeMs,
      claimed: false,
      flows: 0,
      lastSeen: now,
    };
    let replaced = false;
    if (input.sni) {
      replaced = this.allocations.delete(input.sni);
      this.allocations.set(input.sni, allocation);
      this.bound(this.allocations);
    }
    return { ok: true, allocation, replaced };
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
    allocation.claimed = true;
    allocation.flows++;
    allocation.lastSeen = now;
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

  private learnKeyed(map: Map<string, KeyedEntry>, key: string, connectorId: string, now: number): void {
    const existing = map.get(key);
    if (existing && existing.connectorId === connectorId) {
      existing.lastSeen = now;
      return;
    }
    map.delete(key);
    map.set(key, { connectorId, learnedAt: now, lastSeen: now });
    this.bound(map);
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

/** Two independent 32-bit hashes: enough to tell tags apart without keeping the tag itself. */
function tagFingerprint(tag: string): string {
  return `${hash32(tag, 0x5eed).toString(16)}:${hash32(tag, 0xc0ffee).toString(16)}:${tag.length}`;
}
