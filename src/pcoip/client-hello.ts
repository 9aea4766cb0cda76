/**
 * Reads the SNI (server_name) out of a TLS ClientHello without terminating TLS: the 4172/TCP
 * listener feeds it the first bytes a client sends, as they arrive (one segment, several, or one
 * byte at a time), and forwards those same bytes to the Connector afterwards.
 *
 * Bounded: it never holds more than `maxBytes`, answers "not TLS" from the first byte that
 * cannot start a TLS handshake record, and never throws on hostile input — every outcome is a
 * returned value. The handshake message may span several records (large post-quantum key
 * shares); records are reassembled up to the bound.
 */

export type HelloResult =
  | { status: 'need-more' }
  /** A complete ClientHello; `sni` is the lower-cased host_name, or undefined when absent. */
  | { status: 'done'; sni: string | undefined }
  | { status: 'error'; reason: HelloError; message: string };

export type HelloError = 'not-tls' | 'not-client-hello' | 'malformed' | 'too-large';

const RECORD_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;
const NAME_TYPE_HOST = 0x00;
/** RFC 8446 §5.1: a record body never exceeds 2^14 bytes (+ expansion we do not accept here). */
const MAX_RECORD_BODY = 16384;
/** host_name is a DNS name: letters, digits, hyphen, dot, and (seen in the wild) underscore. */
const HOSTNAME_RE = /^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?$/;

export const DEFAULT_MAX_HELLO_BYTES = 16 * 1024;

export class ClientHelloPeeker {
  private readonly maxBytes: number;
  private buffered: Buffer[] = [];
  private bufferedLength = 0;
  private result: HelloResult = { status: 'need-more' };
  /** No answer can change before this many bytes are in (skips re-parsing a trickle byte by byte). */
  private nextCheckAt = 1;

  constructor(maxBytes = DEFAULT_MAX_HELLO_BYTES) {
    this.maxBytes = maxBytes;
  }

  /** Adds bytes; returns the outcome so far. Once done or failed, further bytes change nothing. */
  push(chunk: Buffer): HelloResult {
    if (this.result.status !== 'need-more') return this.result;
    this.buffered.push(chunk);
    this.bufferedLength += chunk.length;
    if (this.bufferedLength < this.nextCheckAt && this.bufferedLength < this.maxBytes) return this.result;
    const all = this.buffered.length === 1 ? chunk : Buffer.concat(this.buffered, this.bufferedLength);
    this.buffered = [all];
    const outcome = examineWithHint(all, this.maxBytes);
    this.result = outcome.result;
    this.nextCheckAt = outcome.atLeast;
    if (this.result.status !== 'need-more') this.buffered = [];
    return this.result;
  }
}

/** Parses as much as `data` allows. Pure: same bytes, same answer. */
export function examine(data: Buffer, maxBytes = DEFAULT_MAX_HELLO_BYTES): HelloResult {
  return examineWithHint(data, maxBytes).result;
}

/** `atLeast`: when more bytes are needed, how many must be buffered before the answer can change. */
function examineWithHint(data: Buffer, maxBytes: number): { result: HelloResult; atLeast: number } {
  let atLeast = data.length + 1;
  const result = parseRecords(data, maxBytes, (n) => (atLeast = Math.max(atLeast, n)));
  return { result, atLeast };
}

function parseRecords(data: Buffer, maxBytes: number, needAtLeast: (n: number) => void): HelloResult {
  // Reassemble the handshake layer from consecutive handshake records.
  const handshake: Buffer[] = [];
  let handshakeLength = 0;
  let pos = 0;
  let expected: number | undefined;
  for (;;) {
    if (data.length < pos + 1) return needMore(data, maxBytes);
    if (data[pos] !== RECORD_HANDSHAKE) {
      return pos === 0
        ? fail('not-tls', `first byte 0x${hex(data[0]!)} does not start a TLS handshake record`)
        : fail('malformed', 'ClientHello interrupted by a non-handshake record');
    }
    if (data.length < pos + 2) return needMore(data, maxBytes);
    // Legacy record version: 0x0301..0x0304 in practice; 0x0300 from very old stacks.
    if (data[pos + 1] !== 0x03) return fail(pos === 0 ? 'not-tls' : 'malformed', 'record version is not 3.x');
    if (data.length < pos + 5) return needMore(data, maxBytes);
    const recordLength = data.readUInt16BE(pos + 3);
    if (recordLength === 0 || recordLength > MAX_RECORD_BODY) return fail('malformed', `record length ${recordLength} is out of range`);
    const bodyStart = pos + 5;
    const available = Math.min(recordLength, data.length - bodyStart);
    handshake.push(data.subarray(bodyStart, bodyStart + available));
    handshakeLength += available;
    if (expected === undefined && handshakeLength >= 4) {
      const hs = Buffer.concat(handshake, handshakeLength);
      if (hs[0] !== HANDSHAKE_CLIENT_HELLO) return fail('not-client-hello', `handshake type ${hs[0]} is not ClientHello (1)`);
      expected = 4 + hs.readUIntBE(1, 3);
      if (expected + 5 * Math.ceil(expected / MAX_RECORD_BODY) > maxBytes) return fail('too-large', `ClientHello of ${expected} bytes exceeds the ${maxBytes}-byte limit`);
    }
    if (expected !== undefined && handshakeLength >= expected) {
      return parseClientHello(Buffer.concat(handshake, handshakeLength).subarray(0, expected));
    }
    if (available < recordLength) {
      needAtLeast(Math.min(bodyStart + recordLength, maxBytes));
      return needMore(data, maxBytes);
    }
    pos = bodyStart + recordLength;
  }
}

function needMore(data: Buffer, maxBytes: number): HelloResult {
  if (data.length >= maxBytes) return fail('too-large', `no complete ClientHello within ${maxBytes} bytes`);
  return { status: 'need-more' };
}

function fail(reason: HelloError, message: string): HelloResult {
  return { status: 'error', reason, message };
}

function hex(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/** A cursor over the ClientHello body that reports running past its end instead of throwing. */
class Reader {
  private pos: number;
  private readonly end: number;
  private readonly buf: Buffer;
  overrun = false;

  constructor(buf: Buffer, start = 0, end = buf.length) {
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  u8(): number {
    if (this.remaining < 1) return this.over();
    return this.buf[this.pos++]!;
  }

  u16(): number {
    if (this.remaining < 2) return this.over();
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  skip(n: number): void {
    if (this.remaining < n) this.over();
    else this.pos += n;
  }

  /** A sub-reader over the next `n` bytes (a length-prefixed vector). */
  sub(n: number): Reader {
    if (this.remaining < n) {
      this.over();
      return new Reader(this.buf, this.pos, this.pos);
    }
    const r = new Reader(this.buf, this.pos, this.pos + n);
    this.pos += n;
    return r;
  }

  bytes(n: number): Buffer {
    if (this.remaining < n) {
      this.over();
      return Buffer.alloc(0);
    }
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  private over(): number {
    this.overrun = true;
    this.pos = this.end;
    return 0;
  }
}

function parseClientHello(hs: Buffer): HelloResult {
  const r = new Reader(hs, 4);
  r.skip(2); // legacy_version
  r.skip(32); // random
  r.skip(r.u8()); // legacy_session_id (0..32)
  const suites = r.u16();
  if (suites < 2 || suites % 2 !== 0) return fail('malformed', 'cipher_suites length must be even and non-zero');
  r.skip(suites);
  const compressions = r.u8();
  if (compressions < 1) return fail('malformed', 'no compression methods');
  r.skip(compressions);
  if (r.overrun) return fail('malformed', 'ClientHello shorter than its fixed fields');
  if (r.remaining === 0) return { status: 'done', sni: undefined }; // no extensions at all (TLS 1.0 style)
  const extensions = r.sub(r.u16());
  if (r.overrun || r.remaining !== 0) return fail('malformed', 'extensions length does not match the ClientHello length');
  let sni: string | undefined;
  let sawServerName = false;
  while (extensions.remaining > 0) {
    const type = extensions.u16();
    const body = extensions.sub(extensions.u16());
    if (extensions.overrun) return fail('malformed', 'extension runs past the extensions block');
    if (type !== EXT_SERVER_NAME) continue;
    if (sawServerName) return fail('malformed', 'server_name extension appears twice');
    sawServerName = true;
    const list = body.sub(body.u16());
    if (body.overrun || body.remaining !== 0) return fail('malformed', 'server_name list length mismatch');
    while (list.remaining > 0) {
      const nameType = list.u8();
      const name = list.bytes(list.u16());
      if (list.overrun) return fail('malformed', 'server_name entry runs past its list');
      if (nameType !== NAME_TYPE_HOST || sni !== undefined) continue;
      const text = name.toString('latin1').toLowerCase();
      if (!HOSTNAME_RE.test(text) || text.length > 253) return fail('malformed', 'server_name host_name is not a DNS name');
      sni = text.endsWith('.') ? text.slice(0, -1) : text;
    }
  }
  return { status: 'done', sni };
}
