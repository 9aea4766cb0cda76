import { createHash } from 'node:crypto';
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
 * Memory is bounded in bytes, not only in entries, because cookies and log ids are chosen by
 * whoever sends them: a cookie or log id is only ever a key, so only a 128-bit digest of it is
 * kept (`sessionKeyDigest`: a fixed ~128 bytes per entry however long the value; it is also the
 * key replicated records and look-ups carry, so no raw cookie travels); a value longer than any
 * real one (MAX_COOKIE_CHARS, MAX_LOG_ID_CHARS; docs/pcoip-protocol.md: UUID log ids, 32-hex JSESSIONIDs) is not
 * learned at all; an allocation keeps only short, length-checked fields. Each kind has a byte
 * budget (`maxBytesPerKind`) besides `maxEntries`; past either, the oldest entries go first.
 *
 * Lifetimes: a cookie or log id lives `ttlMs` after it was last used. An allocation first lives
 * while its connect tag is valid (60 s, single use: PCoIP Client SDK); once a 4172 flow claimed
 * it, it lives while such flows are open plus `ttlMs`, like an affinity entry.
 */

export const CONNECT_TAG_LIFETIME_MS = 60_000;

/** Longest JSESSIONID learned or looked up. Real ones are 32 hex digits (plus a route suffix). */
export const MAX_COOKIE_CHARS = 256;
/** Longest CLIENT-LOG-ID learned or looked up. Real ones are UUIDs (36 characters). */
export const MAX_LOG_ID_CHARS = 128;
/** Longest allocation `sni` kept (a DNS name is at most 253 characters). */
export const MAX_SNI_CHARS = 253;
/** Longest allocation `ip-address` kept (a DNS name; an IPv6 address is at most 45). */
const MAX_HOST_CHARS = 253;
/** Default byte budget per kind (cookies, log ids, allocations, tag fingerprints). */
export const DEFAULT_MAX_BYTES_PER_KIND = 16 * 1024 * 1024;

/**
 * What an entry costs on the V8 heap, approximately (measured on Node 24 with 200 000 entries:
 * a 22-character digest key, its entry object and the Map slot ≈ 120 bytes). Strings held by an
 * allocation are counted by length on top of ALLOCATION_BYTES.
 */
const KEYED_ENTRY_BYTES = 128;
const ALLOCATION_BYTES = 320;
const TAG_FINGERPRINT_BYTES = 112;

export interface SessionTableOptions {
  /** Idle lifetime of cookies, log ids and claimed allocations (the affinity TTL). */
  ttlMs: number;
  /** Per kind; the oldest entry is dropped past it so a flood cannot grow memory without bound. */
  maxEntries: number;
  /** Per kind, in (approximate) heap bytes; default DEFAULT_MAX_BYTES_PER_KIND. */
  maxBytesPerKind?: number;
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
  /** oversized: a field longer than any real one (a hostile or broken Connector); nothing kept. */
  | { ok: false; reason: 'reused-tag' | 'no-connect-tag' | 'oversized' };

/** ambiguous: more than one live allocation carried this SNI (a constant default?): it names no one session. */
export type SniMatch = { ok: true; allocation: Allocation } | { ok: false; reason: 'unknown' | 'tag-expired' | 'ambiguous' };

/** A value safe for logs: its first 4 characters and its length ("ab12…(32)"). */
export function redact(secret: string): string {
  return secret.length <= 4 ? `…(${secret.length})` : `${secret.slice(0, 4)}…(${secret.length})`;
}

/**
 * One kind of learned entry: a Map in insertion (= age) order, with its byte count, bounded in
 * entries and bytes (the oldest go first).
 */
class BoundedMap<V> {
  private readonly map = new Map<string, V>();
  bytes = 0;
  private readonly sizeOf: (key: string, value: V) => number;
  private readonly limits: () => { maxEntries: number; maxBytes: number };

  constructor(sizeOf: (key: string, value: V) => number, limits: () => { maxEntries: number; maxBytes: number }) {
    this.sizeOf = sizeOf;
    this.limits = limits;
  }

  get size(): number {
    return this.map.size;
  }

  get(key: string): V | undefined {
    return this.map.get(key);
  }

  /** Inserts as the newest entry (replacing one with the same key), then drops the oldest past the bounds. */
  set(key: string, value: V): boolean {
    const replaced = this.delete(key);
    this.map.set(key, value);
    this.bytes += this.sizeOf(key, value);
    const { maxEntries, maxBytes } = this.limits();
    while (this.map.size > 0 && (this.map.size > maxEntries || this.bytes > maxBytes)) {
      const oldest = this.map.keys().next().value as string;
      this.delete(oldest);
    }
    return replaced;
  }

  delete(key: string): boolean {
    const old = this.map.get(key);
    if (old === undefined) return false;
    this.map.delete(key);
    this.bytes -= this.sizeOf(key, old);
    return true;
  }

  [Symbol.iterator](): IterableIterator<[string, V]> {
    return this.map.entries();
  }

  values(): IterableIterator<V> {
    return this.map.values();
  }
}

export class SessionTable {
  private readonly cookies: BoundedMap<KeyedEntry>;
  private readonly logIds: BoundedMap<KeyedEntry>;
  private readonly allocations: BoundedMap<Allocation>;
  /** Fingerprints of connect tags seen, with when they stop mattering (a tag is single-use). */
  private readonly tagsSeen: BoundedMap<number>;
  /** SNIs seen in more than one live allocation, with until when they stay ambiguous. */
  private readonly ambiguousSnis: BoundedMap<number>;
  private options: Required<SessionTableOptions>;
  private readonly learnListeners: Array<(record: SessionRecord, origin: 'local' | 'remote') => void> = [];

  constructor(options: SessionTableOptions) {
    this.options = { tagLifetimeMs: CONNECT_TAG_LIFETIME_MS, maxBytesPerKind: DEFAULT_MAX_BYTES_PER_KIND, ...options };
    const limits = () => ({ maxEntries: this.options.maxEntries, maxBytes: this.options.maxBytesPerKind });
    this.cookies = new BoundedMap<KeyedEntry>(() => KEYED_ENTRY_BYTES, limits);
    this.logIds = new BoundedMap<KeyedEntry>(() => KEYED_ENTRY_BYTES, limits);
    this.allocations = new BoundedMap<Allocation>((key, a) => ALLOCATION_BYTES + key.length + a.clientAddress.length + (a.ipAddress?.length ?? 0) + a.sessionIdHint.length, limits);
    this.tagsSeen = new BoundedMap<number>(() => TAG_FINGERPRINT_BYTES, limits);
    this.ambiguousSnis = new BoundedMap<number>((key) => TAG_FINGERPRINT_BYTES + key.length, limits);
  }

  setTtl(ttlMs: number): void {
    this.options = { ...this.options, ttlMs };
  }

  /** Remembers which Connector issued a session cookie. A value longer than MAX_COOKIE_CHARS is ignored. */
  learnCookie(value: string, connectorId: string, now: number): void {
    if (value.length > MAX_COOKIE_CHARS) return;
    const key = sessionKeyDigest(value);
    if (this.learnKeyed(this.cookies, key, connectorId, now)) this.emit({ kind: 'cookie', key, connectorId, at: now });
  }

  /** Remembers where a login's log id lives. A value longer than MAX_LOG_ID_CHARS is ignored. */
  learnLogId(value: string, connectorId: string, now: number): void {
    if (value.length > MAX_LOG_ID_CHARS) return;
    const key = sessionKeyDigest(value);
    if (this.learnKeyed(this.logIds, key, connectorId, now)) this.emit({ kind: 'log-id', key, connectorId, at: now });
  }

  /** The Connector that issued this session cookie, refreshing its lifetime; undefined if unknown or expired. */
  connectorForCookie(value: string, now: number): string | undefined {
    if (value.length > MAX_COOKIE_CHARS) return undefined;
    return this.lookupKeyed(this.cookies, sessionKeyDigest(value), now);
  }

  connectorForLogId(value: string, now: number): string | undefined {
    if (value.length > MAX_LOG_ID_CHARS) return undefined;
    return this.lookupKeyed(this.logIds, sessionKeyDigest(value), now);
  }

  /**
   * Records an allocation. A connect tag seen before is refused (single use: a replayed or
   * duplicated response must not move anyone). A new allocation for the same sni replaces the old.
   * Fields longer than any real one are refused whole ('oversized').
   */
  learnAllocation(input: AllocationInput, now: number): LearnResult {
    if (!input.connectTag) return { ok: false, reason: 'no-connect-tag' };
    if ((input.sni?.length ?? 0) > MAX_SNI_CHARS || (input.ipAddress?.length ?? 0) > MAX_HOST_CHARS) return { ok: false, reason: 'oversized' };
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
    this.noteSharedSni(record);
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
    // A replicated record is checked like a learned one: nothing longer than a DNS name is kept.
    if (allocation.sni && allocation.sni.length <= MAX_SNI_CHARS && (allocation.ipAddress?.length ?? 0) <= MAX_HOST_CHARS) replaced = this.allocations.set(allocation.sni, allocation);
    return { allocation, replaced };
  }

  /**
   * A second live allocation with the same SNI makes that SNI ambiguous — a Connector that puts a
   * constant default there, not a per-session value — until the TTL after the last such allocation
   * could still be in use: routing by it would send a session to whichever allocation came last.
   */
  private noteSharedSni(record: AllocationRecord): void {
    const sni = record.sni.toLowerCase();
    if (!sni) return;
    const existing = this.allocations.get(sni);
    const shared = this.ambiguousSnis.get(sni) !== undefined || (existing !== undefined && existing.tagFingerprint !== record.tagFingerprint && !this.isExpired(existing, record.learnedAt));
    if (shared) this.ambiguousSnis.set(sni, record.tagExpiresAt + this.options.ttlMs);
  }

  /**
   * The allocation a 4172 ClientHello's SNI names. An unclaimed allocation whose tag expired is
   * dropped (the client can no longer use it). Does not claim: call `flowOpened` once the flow is up.
   */
  matchSni(sni: string, now: number): SniMatch {
    const until = this.ambiguousSnis.get(sni.toLowerCase());
    if (until !== undefined && until > now) return { ok: false, reason: 'ambiguous' };
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
    for (const [k, until] of this.ambiguousSnis) if (until <= now) this.ambiguousSnis.delete(k);
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

  /** Approximate heap bytes held, per kind (what the byte budget counts). */
  get bytes(): { cookies: number; logIds: number; allocations: number; tags: number } {
    return { cookies: this.cookies.bytes, logIds: this.logIds.bytes, allocations: this.allocations.bytes, tags: this.tagsSeen.bytes };
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
    const b = this.bytes;
    return { counts: this.counts, approxBytes: b.cookies + b.logIds + b.allocations + b.tags, perConnector, allocations };
  }

  private isExpired(a: Allocation, now: number): boolean {
    if (!a.claimed) return now >= a.tagExpiresAt;
    return a.flows === 0 && now - a.lastSeen > this.options.ttlMs;
  }

  /** Returns true when the key is new or now points elsewhere (a change worth replicating). */
  private learnKeyed(map: BoundedMap<KeyedEntry>, key: string, connectorId: string, now: number): boolean {
    const existing = map.get(key);
    if (existing && existing.connectorId === connectorId) {
      existing.lastSeen = now;
      return false;
    }
    map.set(key, { connectorId, learnedAt: now, lastSeen: now });
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

  /** What this table knows for a replica's look-up (undefined: nothing live). Cookie and log-id keys are digests (`sessionKeyDigest`). */
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

  private lookupKeyed(map: BoundedMap<KeyedEntry>, key: string, now: number): string | undefined {
    const e = map.get(key);
    if (!e) return undefined;
    if (now - e.lastSeen > this.options.ttlMs) {
      map.delete(key);
      return undefined;
    }
    e.lastSeen = now;
    return e.connectorId;
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
  /** Approximate heap bytes of everything learned (bounded per kind). */
  approxBytes: number;
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

/**
 * The key kept (and replicated, and looked up) for a cookie or log id: the first 128 bits of its
 * SHA-256, base64url (22 ASCII characters). Cryptographic so that nobody can craft a value that
 * collides with another user's and move that user's routing; ASCII so that it travels in JSON.
 */
export function sessionKeyDigest(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest().subarray(0, 16).toString('base64url');
}

/** Whether a text has the shape `sessionKeyDigest` gives (16 bytes, base64url: 22 characters), for keys read from elsewhere. */
export function isSessionKeyDigest(text: string): boolean {
  return /^[A-Za-z0-9_-]{22}$/.test(text);
}

/** Two independent 32-bit hashes: enough to tell tags apart without keeping the tag itself. */
function tagFingerprint(tag: string): string {
  return `${hash32(tag, 0x5eed).toString(16)}:${hash32(tag, 0xc0ffee).toString(16)}:${tag.length}`;
}
