import { createHash } from 'node:crypto';
import { hash32 } from './hash.ts';

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
 * kept (a fixed ~120 bytes per entry however long the value); a value longer than any real one
 * (MAX_COOKIE_CHARS, MAX_LOG_ID_CHARS; PCOIP.md: UUID log ids, 32-hex JSESSIONIDs) is not learned
 * at all; an allocation keeps only short, length-checked fields. Each kind has a byte budget
 * (`maxBytesPerKind`) besides `maxEntries`; past either, the oldest entries go first.
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
 * a 16-character digest key, its entry object and the Map slot ≈ 117 bytes). Strings held by an
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

export type SniMatch = { ok: true; allocation: Allocation } | { ok: false; reason: 'unknown' | 'tag-expired' };

/** A value safe for logs: its first 4 characters and its length ("ab12…(32)"). */
export function redact(secret: string): string {
  return secret.length <= 4 ? `…(${secret.length})` : `${secret.slice(0, 4)}…(${secret.length})`;
}

/**
 * One kind of learned entry: a Map in insertion (= age) order, with its byte count, bounded in
 * entries and bytes (the oldest go first).
 */
class BoundedMap<V> {
  readonly map = new Map<string, V>();
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

  *entries(): IterableIterator<[string, V]> {
    yield* this.map.entries();
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
  private options: Required<SessionTableOptions>;

  constructor(options: SessionTableOptions) {
    this.options = { tagLifetimeMs: CONNECT_TAG_LIFETIME_MS, maxBytesPerKind: DEFAULT_MAX_BYTES_PER_KIND, ...options };
    const limits = () => ({ maxEntries: this.options.maxEntries, maxBytes: this.options.maxBytesPerKind });
    this.cookies = new BoundedMap<KeyedEntry>(() => KEYED_ENTRY_BYTES, limits);
    this.logIds = new BoundedMap<KeyedEntry>(() => KEYED_ENTRY_BYTES, limits);
    this.allocations = new BoundedMap<Allocation>((key, a) => ALLOCATION_BYTES + key.length + a.clientAddress.length + (a.ipAddress?.length ?? 0) + a.sessionIdHint.length, limits);
    this.tagsSeen = new BoundedMap<number>(() => TAG_FINGERPRINT_BYTES, limits);
  }

  setTtl(ttlMs: number): void {
    this.options = { ...this.options, ttlMs };
  }

  /** Remembers which Connector issued a session cookie. A value longer than MAX_COOKIE_CHARS is ignored. */
  learnCookie(value: string, connectorId: string, now: number): void {
    if (value.length > MAX_COOKIE_CHARS) return;
    this.learnKeyed(this.cookies, keyDigest(value), connectorId, now);
  }

  /** Remembers where a login's log id lives. A value longer than MAX_LOG_ID_CHARS is ignored. */
  learnLogId(value: string, connectorId: string, now: number): void {
    if (value.length > MAX_LOG_ID_CHARS) return;
    this.learnKeyed(this.logIds, keyDigest(value), connectorId, now);
  }

  /** The Connector that issued this session cookie, refreshing its lifetime; undefined if unknown or expired. */
  connectorForCookie(value: string, now: number): string | undefined {
    if (value.length > MAX_COOKIE_CHARS) return undefined;
    return this.lookupKeyed(this.cookies, keyDigest(value), now);
  }

  connectorForLogId(value: string, now: number): string | undefined {
    if (value.length > MAX_LOG_ID_CHARS) return undefined;
    return this.lookupKeyed(this.logIds, keyDigest(value), now);
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
    this.tagsSeen.set(fingerprint, now + this.options.tagLifetimeMs);
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
    if (input.sni) replaced = this.allocations.set(input.sni, allocation);
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
    for (const kind of [this.cookies, this.logIds]) {
      for (const [k, e] of kind.entries()) if (now - e.lastSeen > this.options.ttlMs) (kind.delete(k), removed++);
    }
    for (const [k, a] of this.allocations.entries()) if (this.isExpired(a, now)) (this.allocations.delete(k), removed++);
    for (const [k, until] of this.tagsSeen.entries()) if (until <= now) this.tagsSeen.delete(k);
    return removed;
  }

  /** Drops what points at a Connector that left the config. */
  forgetConnector(connectorId: string): void {
    for (const kind of [this.cookies, this.logIds]) for (const [k, e] of kind.entries()) if (e.connectorId === connectorId) kind.delete(k);
    for (const [k, a] of this.allocations.entries()) if (a.connectorId === connectorId) this.allocations.delete(k);
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

  private learnKeyed(kind: BoundedMap<KeyedEntry>, key: string, connectorId: string, now: number): void {
    const existing = kind.get(key);
    if (existing && existing.connectorId === connectorId) {
      existing.lastSeen = now;
      return;
    }
    kind.set(key, { connectorId, learnedAt: now, lastSeen: now });
  }

  private lookupKeyed(kind: BoundedMap<KeyedEntry>, key: string, now: number): string | undefined {
    const e = kind.get(key);
    if (!e) return undefined;
    if (now - e.lastSeen > this.options.ttlMs) {
      kind.delete(key);
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

/**
 * The key kept for a cookie or log id: the first 128 bits of its SHA-256, as a 16-character
 * one-byte string. Cryptographic so that nobody can craft a value that collides with another
 * user's and move that user's routing.
 */
function keyDigest(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest().toString('latin1', 0, 16);
}

/** Two independent 32-bit hashes: enough to tell tags apart without keeping the tag itself. */
function tagFingerprint(tag: string): string {
  return `${hash32(tag, 0x5eed).toString(16)}:${hash32(tag, 0xc0ffee).toString(16)}:${tag.length}`;
}
