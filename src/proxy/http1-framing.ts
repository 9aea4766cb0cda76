/**
 * A byte-preserving, incremental HTTP/1.1 message framer for one direction of one connection.
 *
 * It does not rebuild messages: it cuts the input into events whose `bytes` are slices of what
 * came in, in order, so a proxy that forwards every event's bytes forwards the input unchanged
 * (header case, chunk sizes, extensions and trailers included). What it adds is knowledge: where
 * each message starts and ends, and the parsed start line and header values, so the proxy can
 * route each request and look at each response. No I/O, no timers; the proxy owns those.
 *
 * Strictness is deliberate where framing is ambiguous (request smuggling): both Content-Length
 * and Transfer-Encoding, several Content-Lengths (even identical ones: we forward bytes as they
 * are, so we cannot merge them as RFC 9110 §8.6 would have us), a Transfer-Encoding that is empty
 * or does not end in `chunked` on a request, whitespace before a header colon, obsolete line
 * folding, a bare LF line end, a control byte (NUL, VT, FF, DEL, …) anywhere in a field value, a
 * chunk size with whitespace not followed by an extension — each is an error, as RFC 9112 allows.
 * Optional whitespace is SP and HTAB only (RFC 9110 §5.6.3): nothing else is trimmed, so a value
 * means the same here as in any strict parser behind us.
 */

export type MessageKind = 'request' | 'response';

export interface MessageHead {
  /** Request: method; response: undefined. */
  readonly method: string | undefined;
  /** Request: request-target as sent. */
  readonly target: string | undefined;
  /** Response: status code. */
  readonly status: number | undefined;
  /** `HTTP/1.1` or `HTTP/1.0`. */
  readonly version: string;
  /** Header fields in arrival order, names as sent (case kept), values trimmed. */
  readonly headers: ReadonlyArray<readonly [name: string, value: string]>;
  /** The connection closes after this message (HTTP/1.0 without keep-alive, `Connection: close`). */
  readonly closeAfter: boolean;
  /** 1xx other than 101: an interim response, another follows for the same request. */
  readonly interim: boolean;
  /** 101 Switching Protocols / CONNECT 2xx: after this head the connection is an opaque tunnel. */
  readonly upgrade: boolean;
}

export type FramerEvent =
  /** The start line and header section, up to and including the blank line. */
  | { type: 'head'; head: MessageHead; bytes: Buffer }
  /** Message payload (after chunk decoding, which for Content-Length bodies is the bytes themselves). */
  | { type: 'data'; bytes: Buffer }
  /** Chunk-size lines, chunk CRLFs, the last chunk and trailers: forwarded, never payload. */
  | { type: 'framing'; bytes: Buffer }
  /** The message is complete (no bytes). */
  | { type: 'end' }
  /** The input is not valid HTTP/1.1 framing; the framer accepts nothing more. */
  | { type: 'error'; code: FramingErrorCode; message: string };

export type FramingErrorCode =
  | 'bad-start-line'
  | 'bad-header'
  | 'header-too-large'
  | 'too-many-headers'
  | 'bad-content-length'
  | 'bad-transfer-encoding'
  | 'bad-chunk'
  | 'truncated'
  | 'unexpected-response';

export interface FramerLimits {
  /** Bytes of start line + headers (and, separately, of a trailer section). */
  maxHeaderBytes: number;
  maxHeaderCount: number;
}

export const DEFAULT_FRAMER_LIMITS: FramerLimits = { maxHeaderBytes: 16 * 1024, maxHeaderCount: 100 };

/** A chunk-size line (size plus extensions) longer than this is abuse, not HTTP. */
const MAX_CHUNK_LINE = 4096;
/** 2^53 bytes is beyond any body; refusing longer numbers keeps arithmetic exact. */
const MAX_LENGTH_DIGITS = 15;

type State =
  | { s: 'head' }
  | { s: 'fixed'; remaining: number }
  | { s: 'chunk-size' }
  | { s: 'chunk-data'; remaining: number }
  | { s: 'chunk-crlf' }
  | { s: 'trailers' }
  | { s: 'until-close' }
  | { s: 'tunnel' }
  | { s: 'dead' };

const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** field-content (RFC 9110 §5.5) as latin1 text: VCHAR, obs-text, SP and HTAB; no other control byte. */
const FIELD_VALUE_RE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** A transfer-coding: a token, optionally with parameters (RFC 9112 §7, RFC 9110 §10.1.4). */
const TRANSFER_CODING_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:[ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+=(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"))*$/;
/**
 * chunk = chunk-size [ chunk-ext ] CRLF, chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
 * (RFC 9112 §7.1.1): whitespace only before a ";", never on its own after the size.
 */
const CHUNK_LINE_RE = /^([0-9A-Fa-f]{1,13})((?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?)$/;
/** Request-target: visible ASCII only (RFC 9112 §3.2; URIs carry no raw bytes above 0x7e). */
const REQUEST_LINE_RE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) (HTTP\/1\.[01])$/;
/** status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4); reason: HTAB, SP, VCHAR, obs-text. */
const STATUS_LINE_RE = /^(HTTP\/1\.[01]) (\d{3})(?: [\t\x20-\x7e\x80-\xff]*)?$/;
const CRLF = Buffer.from('\r\n');
const CRLFCRLF = Buffer.from('\r\n\r\n');

export class Http1Framer {
  readonly kind: MessageKind;
  private readonly limits: FramerLimits;
  private state: State = { s: 'head' };
  /** Bytes of an incomplete head, size line or trailer section, held until it is complete. */
  private pending: Buffer = Buffer.alloc(0);
  /** Response framing depends on the request (HEAD, CONNECT): the proxy queues each request's method here. */
  private readonly requestMethods: string[] = [];
  private trailerCount = 0;

  constructor(kind: MessageKind, limits: FramerLimits = DEFAULT_FRAMER_LIMITS) {
    this.kind = kind;
    this.limits = limits;
  }

  /** True between the first byte of a message and its end: what a slow-sender timer watches. */
  get inMessage(): boolean {
    return this.state.s !== 'head' || this.pending.length > 0;
  }

  /** Bytes of a head have arrived but not the whole head: what the slow-sender timer watches. */
  get awaitingHead(): boolean {
    return this.state.s === 'head' && this.pending.length > 0;
  }

  get failed(): boolean {
    return this.state.s === 'dead';
  }

  /** Response framers only: the method of the next request sent on this connection, in order. */
  expectResponseTo(method: string): void {
    this.requestMethods.push(method.toUpperCase());
  }

  /** Feeds bytes; returns the events they complete. After an 'error' event, returns nothing more. */
  push(chunk: Buffer): FramerEvent[] {
    const out: FramerEvent[] = [];
    let input = chunk;
    while (input.length > 0 && this.state.s !== 'dead') {
      input = this.step(input, out);
    }
    return out;
  }

  /**
   * The peer closed its side. Completes a read-until-close body; anything else cut mid-message is
   * 'truncated'. A connection closed between messages is fine.
   */
  finish(): FramerEvent[] {
    switch (this.state.s) {
      case 'until-close':
        this.state = { s: 'head' };
        return [{ type: 'end' }];
      case 'tunnel':
      case 'dead':
        return [];
      case 'head':
        // A connection closed between messages is fine; a partial head is a truncated message.
        return this.pending.length === 0 ? [] : [this.fail('truncated', 'connection closed in the middle of a message head')];
      default:
        return [this.fail('truncated', 'connection closed in the middle of a message body')];
    }
  }

  private fail(code: FramingErrorCode, message: string): FramerEvent {
    this.state = { s: 'dead' };
    this.pending = Buffer.alloc(0);
    return { type: 'error', code, message };
  }

  /** Consumes a prefix of `input`, appends events, returns the rest. */
  private step(input: Buffer, out: FramerEvent[]): Buffer {
    const st = this.state;
    switch (st.s) {
      case 'head':
        return this.stepHead(input, out);
      case 'fixed': {
        const n = Math.min(st.remaining, input.length);
        out.push({ type: 'data', bytes: input.subarray(0, n) });
        st.remaining -= n;
        if (st.remaining === 0) this.endMessage(out);
        return input.subarray(n);
      }
      case 'chunk-size':
        return this.stepChunkSize(input, out);
      case 'chunk-data': {
        const n = Math.min(st.remaining, input.length);
        out.push({ type: 'data', bytes: input.subarray(0, n) });
        st.remaining -= n;
        if (st.remaining === 0) this.state = { s: 'chunk-crlf' };
        return input.subarray(n);
      }
      case 'chunk-crlf': {
        // The CRLF after chunk data may itself arrive split.
        const need = 2 - this.pending.length;
        const take = input.subarray(0, need);
        this.pending = Buffer.concat([this.pending, take]);
        if (this.pending.length < 2) return input.subarray(take.length);
        if (!this.pending.equals(CRLF)) {
          out.push(this.fail('bad-chunk', 'chunk data not followed by CRLF'));
          return Buffer.alloc(0);
        }
        out.push({ type: 'framing', bytes: this.pending });
        this.pending = Buffer.alloc(0);
        this.state = { s: 'chunk-size' };
        return input.subarray(take.length);
      }
      case 'trailers':
        return this.stepTrailers(input, out);
      case 'until-close':
      case 'tunnel':
        out.push({ type: 'data', bytes: input });
        return Buffer.alloc(0);
      case 'dead':
        return Buffer.alloc(0);
    }
  }

  private stepHead(input: Buffer, out: FramerEvent[]): Buffer {
    const held = this.pending;
    const joined = held.length === 0 ? input : Buffer.concat([held, input]);
    // Empty lines before a request line are tolerated (RFC 9112 §2.2); they travel with the head.
    let skip = 0;
    while (this.kind === 'request' && joined[skip] === 0x0d && joined[skip + 1] === 0x0a) skip += 2;
    const end = joined.indexOf(CRLFCRLF, Math.max(skip, held.length - 3));
    const headEnd = end < 0 ? -1 : end + 4;
    if ((headEnd < 0 ? joined.length : headEnd) > this.limits.maxHeaderBytes) {
      out.push(this.fail('header-too-large', `header section exceeds ${this.limits.maxHeaderBytes} bytes`));
      return Buffer.alloc(0);
    }
    if (headEnd < 0) {
      this.pending = joined;
      return Buffer.alloc(0);
    }
    this.pending = Buffer.alloc(0);
    const headBytes = joined.subarray(0, headEnd);
    const parsed = this.parseHead(headBytes);
    if ('code' in parsed) {
      out.push(this.fail(parsed.code, parsed.message));
      return Buffer.alloc(0);
    }
    out.push({ type: 'head', head: parsed.head, bytes: headBytes });
    this.enterBody(parsed.framing, out);
    return joined.subarray(headEnd);
  }

  private parseHead(bytes: Buffer): { head: MessageHead; framing: BodyFraming } | { code: FramingErrorCode; message: string } {
    // latin1 maps bytes 1:1 so nothing in a header value is lost or mangled by decoding.
    let text = bytes.toString('latin1');
    // Leading empty lines before a request line are allowed; they stay in the forwarded bytes.
    while (text.startsWith('\r\n')) text = text.slice(2);
    const lines = text.slice(0, -4).split('\r\n');
    if (lines.some((l) => l.includes('\n') || l.includes('\r'))) return { code: 'bad-header', message: 'bare CR or LF in header section' };
    const startLine = lines[0] ?? '';
    let method: string | undefined;
    let target: string | undefined;
    let status: number | undefined;
    let version: string;
    if (this.kind === 'request') {
      const m = REQUEST_LINE_RE.exec(startLine);
      if (!m) return { code: 'bad-start-line', message: `not an HTTP/1.x request line: ${printable(startLine)}` };
      method = m[1]!;
      target = m[2]!;
      version = m[3]!;
    } else {
      const m = STATUS_LINE_RE.exec(startLine);
      if (!m) return { code: 'bad-start-line', message: `not an HTTP/1.x status line: ${printable(startLine)}` };
      version = m[1]!;
      status = Number(m[2]);
    }
    const headers: Array<[string, string]> = [];
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!;
      if (line.startsWith(' ') || line.startsWith('\t')) return { code: 'bad-header', message: 'obsolete line folding is not accepted' };
      const colon = line.indexOf(':');
      const name = colon > 0 ? line.slice(0, colon) : '';
      if (!TOKEN_RE.test(name)) return { code: 'bad-header', message: `malformed header line: ${printable(line)}` };
      const value = line.slice(colon + 1);
      if (!FIELD_VALUE_RE.test(value)) return { code: 'bad-header', message: `control byte in the value of ${printable(name, 40)}` };
      headers.push([name, trimOws(value)]);
      if (headers.length > this.limits.maxHeaderCount) return { code: 'too-many-headers', message: `more than ${this.limits.maxHeaderCount} header fields` };
    }
    const values = (n: string) => headers.filter(([k]) => k.toLowerCase() === n).map(([, v]) => v);
    const connectionTokens = values('connection').flatMap((v) => listElements(v.toLowerCase()));
    const closeAfter = connectionTokens.includes('close') || (version === 'HTTP/1.0' && !connectionTokens.includes('keep-alive'));

    let requestMethod: string | undefined;
    if (this.kind === 'response') {
      requestMethod = this.requestMethods[0];
      if (requestMethod === undefined) return { code: 'unexpected-response', message: 'response without a pending request' };
    }
    const interim = status !== undefined && status >= 100 && status < 200 && status !== 101;
    const upgrade = status === 101 || (requestMethod === 'CONNECT' && status !== undefined && status >= 200 && status < 300);
    if (this.kind === 'response' && !interim) this.requestMethods.shift();

    const head: MessageHead = { method, target, status, version, headers, closeAfter, interim, upgrade };
    const framing = this.bodyFraming(head, values('transfer-encoding'), values('content-length'), requestMethod);
    if ('code' in framing) return framing;
    return { head, framing };
  }

  private bodyFraming(
    head: MessageHead,
    transferEncodings: string[],
    contentLengths: string[],
    requestMethod: string | undefined,
  ): BodyFraming | { code: FramingErrorCode; message: string } {
    if (this.kind === 'response') {
      const s = head.status!;
      if (head.upgrade) return { kind: 'tunnel' };
      if (head.interim || s === 204 || s === 304 || requestMethod === 'HEAD') return { kind: 'none' };
    }
    if (transferEncodings.length > 0) {
      if (contentLengths.length > 0) return { code: 'bad-transfer-encoding', message: 'both Transfer-Encoding and Content-Length' };
      // Empty list elements are allowed (RFC 9110 §5.6.1), an empty list is not: `Transfer-Encoding:`
      // or `: ,` names no coding, so it is not chunked and the length is unknowable.
      const codings = transferEncodings.flatMap((v) => listElements(v.toLowerCase()));
      if (codings.length === 0) return { code: 'bad-transfer-encoding', message: 'empty Transfer-Encoding' };
      const bad = codings.find((c) => !TRANSFER_CODING_RE.test(c));
      if (bad !== undefined) return { code: 'bad-transfer-encoding', message: `malformed transfer coding ${printable(bad, 40)}` };
      const chunkedAt = codings.indexOf('chunked');
      if (chunkedAt >= 0 && chunkedAt !== codings.length - 1) return { code: 'bad-transfer-encoding', message: '"chunked" must be the last transfer coding, and only once' };
      if (head.version === 'HTTP/1.0') return { code: 'bad-transfer-encoding', message: 'Transfer-Encoding in an HTTP/1.0 message' };
      if (chunkedAt === codings.length - 1) return { kind: 'chunked' };
      // A request must be chunked last (else its length is unknowable); a response reads until close.
      if (this.kind === 'request') return { code: 'bad-transfer-encoding', message: `unsupported Transfer-Encoding "${transferEncodings.join(', ')}"` };
      return { kind: 'until-close' };
    }
    if (contentLengths.length > 0) {
      // One field, one decimal value. RFC 9110 §8.6 lets a recipient merge identical duplicates
      // ("42, 42") into one field; we forward bytes unchanged, so we cannot merge and must reject
      // (a server behind us could read the duplicates differently).
      const value = contentLengths[0]!;
      if (contentLengths.length > 1 || !/^\d+$/.test(value) || value.length > MAX_LENGTH_DIGITS) {
        return { code: 'bad-content-length', message: `invalid Content-Length ${printable(contentLengths.join(', '), 60)}${contentLengths.length > 1 ? ' (more than one)' : ''}` };
      }
      const n = Number(value);
      return n === 0 ? { kind: 'none' } : { kind: 'fixed', length: n };
    }
    return this.kind === 'request' ? { kind: 'none' } : { kind: 'until-close' };
  }

  private enterBody(framing: BodyFraming, out: FramerEvent[]): void {
    switch (framing.kind) {
      case 'none':
        this.endMessage(out);
        return;
      case 'fixed':
        this.state = { s: 'fixed', remaining: framing.length };
        return;
      case 'chunked':
        this.state = { s: 'chunk-size' };
        return;
      case 'until-close':
        this.state = { s: 'until-close' };
        return;
      case 'tunnel':
        this.state = { s: 'tunnel' };
        return;
    }
  }

  private endMessage(out: FramerEvent[]): void {
    out.push({ type: 'end' });
    this.state = { s: 'head' };
  }

  private stepChunkSize(input: Buffer, out: FramerEvent[]): Buffer {
    const joined = this.pending.length === 0 ? input : Buffer.concat([this.pending, input]);
    const nl = joined.indexOf(CRLF, Math.max(0, this.pending.length - 1));
    if (nl < 0) {
      if (joined.length > MAX_CHUNK_LINE) {
        out.push(this.fail('bad-chunk', `chunk-size line longer than ${MAX_CHUNK_LINE} bytes`));
        return Buffer.alloc(0);
      }
      this.pending = joined;
      return Buffer.alloc(0);
    }
    const lineEnd = nl + 2;
    const lineText = joined.subarray(0, nl).toString('latin1');
    // chunk-size [ chunk-ext ]; extensions are forwarded, not interpreted (but hold no control bytes).
    const m = CHUNK_LINE_RE.exec(lineText);
    if (!m) {
      out.push(this.fail('bad-chunk', `malformed chunk-size line: ${printable(lineText)}`));
      return Buffer.alloc(0);
    }
    const size = parseInt(m[1]!, 16);
    out.push({ type: 'framing', bytes: joined.subarray(0, lineEnd) });
    this.pending = Buffer.alloc(0);
    if (size === 0) {
      this.trailerCount = 0;
      this.state = { s: 'trailers' };
    } else {
      this.state = { s: 'chunk-data', remaining: size };
    }
    return joined.subarray(lineEnd);
  }

  /** After the last chunk: trailer fields, then an empty line. Forwarded as framing. */
  private stepTrailers(input: Buffer, out: FramerEvent[]): Buffer {
    const joined = this.pending.length === 0 ? input : Buffer.concat([this.pending, input]);
    let pos = 0;
    for (;;) {
      const nl = joined.indexOf(CRLF, pos);
      if (nl < 0) break;
      const line = joined.subarray(pos, nl).toString('latin1');
      pos = nl + 2;
      if (line === '') {
        out.push({ type: 'framing', bytes: joined.subarray(0, pos) });
        this.pending = Buffer.alloc(0);
        this.endMessage(out);
        return joined.subarray(pos);
      }
      const colon = line.indexOf(':');
      if (colon <= 0 || !TOKEN_RE.test(line.slice(0, colon)) || !FIELD_VALUE_RE.test(line.slice(colon + 1))) {
        out.push(this.fail('bad-chunk', `malformed trailer line: ${printable(line)}`));
        return Buffer.alloc(0);
      }
      if (++this.trailerCount > this.limits.maxHeaderCount) {
        out.push(this.fail('too-many-headers', `more than ${this.limits.maxHeaderCount} trailer fields`));
        return Buffer.alloc(0);
      }
    }
    if (joined.length > this.limits.maxHeaderBytes) {
      out.push(this.fail('header-too-large', `trailer section exceeds ${this.limits.maxHeaderBytes} bytes`));
      return Buffer.alloc(0);
    }
    // Keep the whole unfinished trailer section so it is forwarded as one piece; recount next time.
    this.trailerCount = 0;
    this.pending = joined;
    return Buffer.alloc(0);
  }
}

type BodyFraming = { kind: 'none' } | { kind: 'fixed'; length: number } | { kind: 'chunked' } | { kind: 'until-close' } | { kind: 'tunnel' };

/** Strips optional whitespace (RFC 9110 §5.6.3: SP and HTAB, nothing else) from both ends. */
export function trimOws(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && (text.charCodeAt(start) === 0x20 || text.charCodeAt(start) === 0x09)) start++;
  while (end > start && (text.charCodeAt(end - 1) === 0x20 || text.charCodeAt(end - 1) === 0x09)) end--;
  return text.slice(start, end);
}

/** The non-empty elements of a comma-separated list field (RFC 9110 §5.6.1), OWS trimmed. */
function listElements(value: string): string[] {
  return value.split(',').map(trimOws).filter((t) => t !== '');
}

/** The message's body is chunked: its last transfer coding is `chunked` (as the framer decided). */
export function isChunked(head: MessageHead): boolean {
  return headerValues(head, 'transfer-encoding').flatMap((v) => listElements(v.toLowerCase())).at(-1) === 'chunked';
}

/** Case-insensitive look-up of every value of a header. */
export function headerValues(head: MessageHead, name: string): string[] {
  const lower = name.toLowerCase();
  return head.headers.filter(([k]) => k.toLowerCase() === lower).map(([, v]) => v);
}

/** One cookie's value from the request's Cookie header(s), or undefined. */
export function requestCookie(head: MessageHead, name: string): string | undefined {
  for (const header of headerValues(head, 'cookie')) {
    for (const pair of header.split(';')) {
      const eq = pair.indexOf('=');
      if (eq > 0 && trimOws(pair.slice(0, eq)) === name) return trimOws(pair.slice(eq + 1)).replace(/^"(.*)"$/, '$1');
    }
  }
  return undefined;
}

/** The value a response sets for one cookie via Set-Cookie (any header-name case), or undefined. */
export function responseSetCookie(head: MessageHead, name: string): string | undefined {
  for (const header of headerValues(head, 'set-cookie')) {
    const first = header.split(';')[0] ?? '';
    const eq = first.indexOf('=');
    if (eq > 0 && trimOws(first.slice(0, eq)) === name) return trimOws(first.slice(eq + 1)).replace(/^"(.*)"$/, '$1');
  }
  return undefined;
}

/** A bounded, escaped excerpt for error messages: never dumps a whole hostile header. */
export function printable(text: string, max = 80): string {
  const cut = text.length > max ? `${text.slice(0, max)}…` : text;
  return JSON.stringify(cut);
}
