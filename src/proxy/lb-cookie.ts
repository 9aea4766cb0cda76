import { createHmac, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ErrorCodes, PlbError } from '../errors.ts';

/**
 * The load balancer's own stickiness cookie (listeners.broker.lbCookie), as HP's cloud templates
 * use one (AWS ALB `lb_cookie`, GCP `GENERATED_COOKIE`): pcoip-lb names the Connector that
 * answered in a cookie of its own, and routes a later request carrying it to that Connector ahead
 * of JSESSIONID. Stateless, so it survives a restart of pcoip-lb (learned JSESSIONIDs do not).
 *
 * The value is opaque and authenticated: base64url of
 *   version (1 byte) | issued-at (uint32, seconds) | Connector token (8 bytes) | MAC (16 bytes)
 * where token = HMAC-SHA256(key, "plb-lb-cookie-connector\0" + id)[0..8] (the Connector id is not
 * readable) and MAC = HMAC-SHA256(key, "plb-lb-cookie\0" + the first 13 bytes)[0..16]. Several
 * keys may be configured: the first signs, every one verifies, so a key rotation (new key first,
 * old key second, later removed) does not break a login in progress.
 * No sockets here; the clock is an argument.
 */

export interface LbCookieSettings {
  name: string;
  /** Lifetime (Max-Age, and how old an issued-at may be), ms. */
  maxAgeMs: number;
}

export type LbCookieCheck =
  | { ok: true; connectorId: string; /** Older than half its lifetime: issue a fresh one. */ refresh: boolean }
  /** forged: a MAC no key makes, a bad shape, or an issue time in the future; stale: too old, or its Connector is not in the pool. */
  | { ok: false; reason: 'forged' | 'stale' };

const VERSION = 1;
const BODY_BYTES = 13;
const MAC_BYTES = 16;
const TOKEN_BYTES = 8;
const COOKIE_BYTES = BODY_BYTES + MAC_BYTES;
/** A clock step between instances (or an NTP correction) must not make fresh cookies look forged. */
const FUTURE_SKEW_S = 60;
/** Shortest key accepted: 32 characters (from a file or an environment variable). */
export const MIN_KEY_CHARS = 32;

export class LbCookie {
  readonly settings: LbCookieSettings;
  private readonly keys: readonly Buffer[];
  /** Per key: Connector token (hex) → id, for the pool ids it was built from. */
  private tokenMaps: Map<string, string>[] = [];
  private tokenIds = '';

  constructor(settings: LbCookieSettings, keys: readonly string[]) {
    if (keys.length === 0) throw new PlbError(ErrorCodes.LB_COOKIE_KEY, 'listeners.broker.lbCookie: no key');
    this.settings = settings;
    this.keys = keys.map((k) => Buffer.from(k, 'utf8'));
  }

  /** A fresh cookie value naming `connectorId`, signed with the first key. */
  issue(connectorId: string, nowMs: number): string {
    const key = this.keys[0]!;
    const body = Buffer.alloc(BODY_BYTES);
    body[0] = VERSION;
    body.writeUInt32BE(Math.floor(nowMs / 1000) >>> 0, 1);
    connectorToken(key, connectorId).copy(body, 5);
    return Buffer.concat([body, mac(key, body)]).toString('base64url');
  }

  /** The Set-Cookie header line (with CRLF) that hands the client a cookie for `connectorId`. */
  setCookieLine(connectorId: string, nowMs: number): string {
    const maxAge = Math.max(1, Math.round(this.settings.maxAgeMs / 1000));
    return `Set-Cookie: ${this.settings.name}=${this.issue(connectorId, nowMs)}; Path=/; Max-Age=${maxAge}; Secure; HttpOnly\r\n`;
  }

  /** Checks a value from a request; `poolIds` are the Connectors that exist now. */
  verify(value: string, poolIds: readonly string[], nowMs: number): LbCookieCheck {
    if (value.length !== Math.ceil((COOKIE_BYTES * 4) / 3) || !/^[A-Za-z0-9_-]+$/.test(value)) return { ok: false, reason: 'forged' };
    const raw = Buffer.from(value, 'base64url');
    if (raw.length !== COOKIE_BYTES || raw[0] !== VERSION) return { ok: false, reason: 'forged' };
    const body = raw.subarray(0, BODY_BYTES);
    const given = raw.subarray(BODY_BYTES);
    const index = this.keys.findIndex((key) => timingSafeEqual(mac(key, body), given));
    if (index < 0) return { ok: false, reason: 'forged' };
    const issuedS = body.readUInt32BE(1);
    const nowS = nowMs / 1000;
    if (issuedS > nowS + FUTURE_SKEW_S) return { ok: false, reason: 'forged' };
    const ageMs = Math.max(0, nowMs - issuedS * 1000);
    if (ageMs > this.settings.maxAgeMs) return { ok: false, reason: 'stale' };
    const connectorId = this.tokensFor(poolIds)[index]!.get(body.subarray(5, 5 + TOKEN_BYTES).toString('hex'));
    if (connectorId === undefined) return { ok: false, reason: 'stale' };
    // Re-signed with the first key as soon as an older key verified it, so rotation completes.
    return { ok: true, connectorId, refresh: index > 0 || ageMs > this.settings.maxAgeMs / 2 };
  }

  private tokensFor(poolIds: readonly string[]): Map<string, string>[] {
    const joined = poolIds.join('\0');
    if (joined !== this.tokenIds || this.tokenMaps.length === 0) {
      this.tokenMaps = this.keys.map((key) => new Map(poolIds.map((id) => [connectorToken(key, id).toString('hex'), id])));
      this.tokenIds = joined;
    }
    return this.tokenMaps;
  }
}

function connectorToken(key: Buffer, connectorId: string): Buffer {
  return createHmac('sha256', key).update('plb-lb-cookie-connector\0').update(connectorId).digest().subarray(0, TOKEN_BYTES);
}

function mac(key: Buffer, body: Buffer): Buffer {
  return createHmac('sha256', key).update('plb-lb-cookie\0').update(body).digest().subarray(0, MAC_BYTES);
}

export interface LbCookieKeySource {
  keyFile?: string | undefined;
  keyEnv?: string | undefined;
}

/**
 * The keys, in order (the first signs): one per non-empty line of `keyFile` (lines starting with
 * `#` are comments), or separated by commas or white space in the environment variable `keyEnv`.
 * Every key needs MIN_KEY_CHARS characters. Errors name the config key.
 */
export function readLbCookieKeys(source: LbCookieKeySource, env: NodeJS.ProcessEnv = process.env, readFile: (path: string) => string = (p) => readFileSync(p, 'utf8')): string[] {
  let keys: string[];
  let where: string;
  if (source.keyFile !== undefined) {
    where = `listeners.broker.lbCookie.keyFile (${source.keyFile})`;
    let text: string;
    try {
      text = readFile(source.keyFile);
    } catch (err) {
      throw new PlbError(ErrorCodes.LB_COOKIE_KEY, `${where}: cannot read the key file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, [], { cause: err });
    }
    keys = text
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
  } else if (source.keyEnv !== undefined) {
    where = `listeners.broker.lbCookie.keyEnv (${source.keyEnv})`;
    const value = env[source.keyEnv];
    if (value === undefined) throw new PlbError(ErrorCodes.LB_COOKIE_KEY, `${where}: the environment variable is not set`);
    keys = value.split(/[\s,]+/).filter((k) => k !== '');
  } else {
    throw new PlbError(ErrorCodes.LB_COOKIE_KEY, 'listeners.broker.lbCookie: set keyFile or keyEnv');
  }
  if (keys.length === 0) throw new PlbError(ErrorCodes.LB_COOKIE_KEY, `${where}: no key in it (one key per line; the first signs, all verify)`);
  const short = keys.findIndex((k) => k.length < MIN_KEY_CHARS);
  if (short >= 0) throw new PlbError(ErrorCodes.LB_COOKIE_KEY, `${where}: key ${short + 1} has ${keys[short]!.length} characters; use at least ${MIN_KEY_CHARS} (e.g. \`openssl rand -base64 48\`)`);
  return keys;
}
