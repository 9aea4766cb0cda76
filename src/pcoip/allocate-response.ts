/**
 * Extracts the PCoIP allocation from a broker `allocate-resource-resp` body as it streams past:
 *
 *   <pcoip-client version="2.1"><allocate-resource-resp>
 *     <result><result-id>ALLOC_SUCCESSFUL</result-id>…</result>
 *     <target><ip-address/><hostname/><sni/><port/><session-id/><connect-tag/></target>…
 *
 * Only those six values are captured; every other element is skipped without being kept. The
 * parser gives up as soon as the body turns out to be another message (hello-resp, …), so the
 * rest of the broker exchange costs a few bytes of scanning. Bounded in total bytes, depth, tag
 * length and field length; never throws — a hostile or broken body is a returned error, and the
 * proxy forwards the bytes unchanged whatever the parser says.
 *
 * Deliberately not a general XML parser: no DOCTYPE (so no entity expansion), only the five
 * predefined entities and numeric references, attributes skipped unread.
 */

export interface AllocationTarget {
  resultId: string;
  sessionId: string | undefined;
  connectTag: string | undefined;
  sni: string | undefined;
  ipAddress: string | undefined;
  port: number | undefined;
}

export type AllocateParseResult =
  | { status: 'need-more' }
  /** The body is a different broker message: nothing to learn. */
  | { status: 'other-message'; element: string }
  /** A complete allocate-resource-resp; `resultId` says whether it succeeded. */
  | { status: 'allocation'; target: AllocationTarget }
  | { status: 'error'; reason: AllocateParseError; message: string };

export type AllocateParseError = 'not-xml' | 'malformed' | 'oversized' | 'truncated';

export interface AllocateParserLimits {
  maxBytes: number;
  maxDepth: number;
  maxFieldBytes: number;
  maxMarkupBytes: number;
}

export const DEFAULT_ALLOCATE_LIMITS: AllocateParserLimits = { maxBytes: 64 * 1024, maxDepth: 32, maxFieldBytes: 1024, maxMarkupBytes: 4096 };

export const ALLOC_SUCCESSFUL = 'ALLOC_SUCCESSFUL';

/** Path below the root → the field it fills. */
const FIELDS: Record<string, keyof AllocationTarget> = {
  'allocate-resource-resp/result/result-id': 'resultId',
  'allocate-resource-resp/target/session-id': 'sessionId',
  'allocate-resource-resp/target/connect-tag': 'connectTag',
  'allocate-resource-resp/target/sni': 'sni',
  'allocate-resource-resp/target/ip-address': 'ipAddress',
  'allocate-resource-resp/target/port': 'port',
};

const LT = 0x3c;
const GT = 0x3e;
const NAME_RE = /^[A-Za-z_][A-Za-z0-9._:-]*$/;

export class AllocateResponseParser {
  private readonly limits: AllocateParserLimits;
  private seen = 0;
  private result: AllocateParseResult = { status: 'need-more' };
  private readonly stack: string[] = [];
  private started = false;
  private sawRoot = false;
  /** Bytes of the markup being read (`<…>`), or undefined while in text. */
  private markup: number[] | undefined;
  private quote = 0;
  /** Text of the field being captured, or undefined when the current element is not a field. */
  private field: { name: keyof AllocationTarget; bytes: number[] } | undefined;
  private readonly values: Partial<Record<keyof AllocationTarget, string>> = {};
  private bomSkip = 0;

  constructor(limits: AllocateParserLimits = DEFAULT_ALLOCATE_LIMITS) {
    this.limits = limits;
  }

  get done(): boolean {
    return this.result.status !== 'need-more';
  }

  push(chunk: Buffer): AllocateParseResult {
    if (this.done) return this.result;
    if (this.seen + chunk.length > this.limits.maxBytes) {
      return (this.result = { status: 'error', reason: 'oversized', message: `body larger than ${this.limits.maxBytes} bytes before the allocation was complete` });
    }
    this.seen += chunk.length;
    for (let i = 0; i < chunk.length && !this.done; i++) this.byte(chunk[i]!);
    return this.result;
  }

  /** The body ended: an unfinished document is truncated. */
  end(): AllocateParseResult {
    if (this.done) return this.result;
    return (this.result = this.started
      ? { status: 'error', reason: 'truncated', message: 'body ended before </allocate-resource-resp>' }
      : { status: 'error', reason: 'not-xml', message: 'empty body' });
  }

  private error(reason: AllocateParseError, message: string): void {
    this.result = { status: 'error', reason, message };
  }

  private byte(b: number): void {
    // A UTF-8 byte-order mark before the document is allowed.
    if (!this.started && this.bomSkip < 3 && b === [0xef, 0xbb, 0xbf][this.bomSkip]) {
      this.bomSkip++;
      return;
    }
    if (this.markup !== undefined) return this.markupByte(b);
    if (b === LT) {
      this.started = true;
      this.markup = [];
      return;
    }
    if (this.stack.length === 0) {
      // Outside the root only whitespace may appear.
      if (!isSpace(b)) this.error(this.sawRoot ? 'malformed' : 'not-xml', this.sawRoot ? 'text after the root element' : 'body does not start with XML markup');
      return;
    }
    this.started = true;
    this.textByte(b);
  }

  private textByte(b: number): void {
    if (!this.field) return;
    if (this.field.bytes.length >= this.limits.maxFieldBytes) return this.error('oversized', `<${this.field.name}> longer than ${this.limits.maxFieldBytes} bytes`);
    this.field.bytes.push(b);
  }

  private markupByte(b: number): void {
    const m = this.markup!;
    if (m.length >= this.limits.maxMarkupBytes) return this.error('oversized', `markup longer than ${this.limits.maxMarkupBytes} bytes`);
    m.push(b);
    const kind = markupKind(m);
    if (kind === 'pending') return;
    if (kind === 'doctype') return this.error('malformed', 'DOCTYPE is not accepted in broker XML');
    if (kind === 'tag') {
      // Quoted attribute values may contain '>'.
      if (this.quote !== 0) {
        if (b === this.quote) this.quote = 0;
        return;
      }
      if (b === 0x22 || b === 0x27) {
        this.quote = b;
        return;
      }
      if (b !== GT) return;
    } else if (!endsWith(m, TERMINATORS[kind])) {
      return;
    }
    this.markup = undefined;
    if (kind === 'tag') this.tag(Buffer.from(m.slice(0, -1)).toString('latin1'));
    else if (kind === 'cdata' && this.stack.length > 0) for (const c of m.slice(8, -3)) this.textByte(c);
    else if (kind === 'cdata') this.error('malformed', 'CDATA outside the root element');
    // comments and processing instructions carry nothing we read
  }

  private tag(text: string): void {
    const closing = text.startsWith('/');
    const selfClosing = !closing && text.endsWith('/');
    const body = closing ? text.slice(1) : selfClosing ? text.slice(0, -1) : text;
    const name = body.split(/[\s]/, 1)[0] ?? '';
    if (!NAME_RE.test(name)) return this.error(this.sawRoot ? 'malformed' : 'not-xml', `invalid tag <${text.slice(0, 40)}>`);
    if (closing) {
      if (body.trim() !== name) return this.error('malformed', `junk in closing tag </${name}>`);
      const open = this.stack.pop();
      if (open !== name) return this.error('malformed', `</${name}> closes <${open ?? 'nothing'}>`);
      if (this.field) this.closeField();
      if (this.stack.length === 1 && name === 'allocate-resource-resp') this.complete();
      else if (this.stack.length === 0) this.error('malformed', 'root closed without an allocate-resource-resp');
      return;
    }
    if (this.stack.length === 0) {
      if (this.sawRoot) return this.error('malformed', 'a second root element');
      if (name !== 'pcoip-client') return this.error('malformed', `root element is <${name}>, not <pcoip-client>`);
      this.sawRoot = true;
    } else if (this.stack.length === 1 && name !== 'allocate-resource-resp') {
      this.result = { status: 'other-message', element: name };
      return;
    }
    if (this.stack.length >= this.limits.maxDepth) return this.error('oversized', `nesting deeper than ${this.limits.maxDepth}`);
    this.stack.push(name);
    const fieldName = FIELDS[this.stack.slice(1).join('/')];
    if (fieldName !== undefined) {
      if (this.values[fieldName] !== undefined) return this.error('malformed', `<${name}> appears twice`);
      this.field = { name: fieldName, bytes: [] };
    } else {
      this.field = undefined;
    }
    if (selfClosing) {
      this.stack.pop();
      if (this.field) this.closeField();
    }
  }

  private closeField(): void {
    const f = this.field!;
    this.field = undefined;
    const decoded = decodeEntities(Buffer.from(f.bytes).toString('utf8'));
    if (decoded === undefined) return this.error('malformed', `unknown entity in <${f.name}>`);
    // XML white space only (SP, TAB, CR, LF): JavaScript's trim() would also strip NBSP and others.
    this.values[f.name] = decoded.replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, '');
  }

  private complete(): void {
    const v = this.values;
    if (v.resultId === undefined) return this.error('malformed', 'allocate-resource-resp without result-id');
    let port: number | undefined;
    if (v.port !== undefined) {
      port = /^\d{1,5}$/.test(v.port) ? Number(v.port) : NaN;
      if (!(port >= 1 && port <= 65535)) return this.error('malformed', 'target port is not 1-65535');
    }
    const target: AllocationTarget = {
      resultId: v.resultId,
      sessionId: v.sessionId,
      connectTag: v.connectTag,
      sni: v.sni?.toLowerCase(),
      ipAddress: v.ipAddress,
      port,
    };
    this.result = { status: 'allocation', target };
  }
}

type MarkupKind = 'pending' | 'tag' | 'pi' | 'comment' | 'cdata' | 'doctype';

const TERMINATORS: Record<'pi' | 'comment' | 'cdata', number[]> = {
  pi: [0x3f, GT], // ?>
  comment: [0x2d, 0x2d, GT], // -->
  cdata: [0x5d, 0x5d, GT], // ]]>
};

const PREFIXES: Array<[string, MarkupKind]> = [
  ['?', 'pi'],
  ['!--', 'comment'],
  ['![CDATA[', 'cdata'],
  ['!DOCTYPE', 'doctype'],
];

/** What `<` + m starts; 'pending' while a longer prefix could still match. */
function markupKind(m: number[]): MarkupKind {
  if (m[0] !== 0x21 && m[0] !== 0x3f) return 'tag'; // not '!' or '?'
  const text = Buffer.from(m.slice(0, 9)).toString('latin1');
  for (const [prefix, kind] of PREFIXES) {
    if (text.startsWith(prefix)) {
      // A comment needs its 3-byte prefix before its terminator can be searched for ("<!-->" is not a closed comment).
      if (kind === 'comment' && m.length < prefix.length + 3) return 'pending';
      if (kind === 'cdata' && m.length < prefix.length + 3) return 'pending';
      return kind;
    }
    if (prefix.startsWith(text)) return 'pending';
  }
  return 'doctype'; // any other <!…> declaration is refused the same way
}

function endsWith(m: number[], tail: number[]): boolean {
  if (m.length < tail.length) return false;
  for (let i = 0; i < tail.length; i++) if (m[m.length - tail.length + i] !== tail[i]) return false;
  return true;
}

function isSpace(b: number): boolean {
  return b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
}

/**
 * The five predefined XML entities. A Map, not an object literal: `ref in {…}` would also find
 * `toString`, `valueOf`, `__proto__` … on Object.prototype and turn a hostile Connector's
 * `&toString;` into the text of a JavaScript function (learned as a connect tag or SNI).
 */
const NAMED: ReadonlyMap<string, string> = new Map([
  ['lt', '<'],
  ['gt', '>'],
  ['amp', '&'],
  ['quot', '"'],
  ['apos', "'"],
]);

/** XML 1.0 `Char`: a numeric reference to anything else (NUL, a surrogate, U+FFFE) is not well-formed. */
function isXmlChar(code: number): boolean {
  return code === 0x9 || code === 0xa || code === 0xd || (code >= 0x20 && code <= 0xd7ff) || (code >= 0xe000 && code <= 0xfffd) || (code >= 0x10000 && code <= 0x10ffff);
}

function decodeEntities(text: string): string | undefined {
  let bad = false;
  const out = text.replace(/&([^;&\s]{0,10});?/g, (whole, ref: string) => {
    if (!whole.endsWith(';')) return (bad = true), '';
    const named = NAMED.get(ref);
    if (named !== undefined) return named;
    const m = /^#(?:x([0-9A-Fa-f]{1,6})|(\d{1,7}))$/.exec(ref);
    const code = m ? parseInt(m[1] ?? m[2]!, m[1] ? 16 : 10) : NaN;
    if (!isXmlChar(code)) return (bad = true), '';
    return String.fromCodePoint(code);
  });
  return bad ? undefined : out;
}
