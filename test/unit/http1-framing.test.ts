import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Http1Framer, requestCookie, responseSetCookie, type FramerEvent, type MessageHead } from '../../src/proxy/http1-framing.ts';

/** Feeds the pieces, returns every event plus the bytes of all events joined. */
function run(framer: Http1Framer, pieces: Buffer[], finish = false): { events: FramerEvent[]; bytes: Buffer; heads: MessageHead[] } {
  const events: FramerEvent[] = [];
  for (const p of pieces) events.push(...framer.push(p));
  if (finish) events.push(...framer.finish());
  const bytes = Buffer.concat(events.flatMap((e) => ('bytes' in e ? [e.bytes] : [])));
  const heads = events.flatMap((e) => (e.type === 'head' ? [e.head] : []));
  return { events, bytes, heads };
}

/** Cuts `data` at the given offsets (sorted, deduplicated, in range). */
function splitAt(data: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...points, data.length]) {
    out.push(data.subarray(prev, p));
    prev = p;
  }
  return out;
}

const typeSeq = (events: FramerEvent[]) => events.map((e) => e.type).filter((t, i, a) => !(t === 'data' && a[i - 1] === 'data') && !(t === 'framing' && a[i - 1] === 'framing'));

const REQUESTS = Buffer.from(
  'POST /pcoip-broker/xml HTTP/1.1\r\nHost: lb\r\nCookie: a=1; JSESSIONID=abc123\r\nCLIENT-LOG-ID: log-7\r\nContent-Length: 11\r\n\r\n<hello/>xyz' +
    'GET /health HTTP/1.1\r\nHost: lb\r\n\r\n' +
    'POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n',
);

const RESPONSES = Buffer.from(
  'HTTP/1.1 200 OK\r\nSet-Cookie: JSESSIONID=SeSsIoN; Path=/; Secure\r\nTransfer-Encoding: chunked\r\nContent-Type: text/xml; charset=UTF-8\r\n\r\n' +
    '1b\r\n<pcoip-client version="2.1"\r\n3\r\n/>\n\r\n0\r\n\r\n' +
    'HTTP/1.1 100 Continue\r\n\r\n' +
    'HTTP/1.1 204 No Content\r\nX-Case-Kept: Yes\r\n\r\n' +
    'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody',
);

function responseFramer(methods = ['POST', 'POST', 'GET']): Http1Framer {
  const f = new Http1Framer('response');
  for (const m of methods) f.expectResponseTo(m);
  return f;
}

describe('Http1Framer: requests', () => {
  it('frames pipelined requests and exposes headers while the bytes stay as sent', () => {
    const { events, bytes, heads } = run(new Http1Framer('request'), [REQUESTS]);
    expect(bytes.equals(REQUESTS)).toBe(true);
    expect(heads.map((h) => [h.method, h.target])).toEqual([
      ['POST', '/pcoip-broker/xml'],
      ['GET', '/health'],
      ['POST', '/x'],
    ]);
    expect(events.filter((e) => e.type === 'end')).toHaveLength(3);
    expect(requestCookie(heads[0]!, 'JSESSIONID')).toBe('abc123');
    expect(heads[0]!.headers.find(([k]) => k === 'CLIENT-LOG-ID')?.[1]).toBe('log-7');
    const payload = Buffer.concat(events.flatMap((e) => (e.type === 'data' ? [e.bytes] : []))).toString();
    expect(payload).toBe('<hello/>xyzhello');
  });

  it.each([
    ['garbage start line', 'HELLO\r\n\r\n', 'bad-start-line'],
    ['HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'bad-start-line'],
    ['space before colon', 'GET / HTTP/1.1\r\nHost : x\r\n\r\n', 'bad-header'],
    ['obs-fold', 'GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n', 'bad-header'],
    ['bare LF inside', 'GET / HTTP/1.1\r\nX: a\nY: b\r\n\r\n', 'bad-header'],
    ['CL and TE', 'POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n', 'bad-transfer-encoding'],
    ['differing CLs', 'POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n', 'bad-content-length'],
    ['negative CL', 'POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n', 'bad-content-length'],
    ['TE not ending in chunked', 'POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n', 'bad-transfer-encoding'],
    ['bad chunk size', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 'bad-chunk'],
    ['chunk without CRLF', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXY', 'bad-chunk'],
    // RFC 9112 differentials: what a strict upstream would refuse, the framer refuses too.
    ['an empty Transfer-Encoding', 'POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n', 'bad-transfer-encoding'],
    ['a Transfer-Encoding of only commas', 'POST / HTTP/1.1\r\nTransfer-Encoding: , ,\r\n\r\n', 'bad-transfer-encoding'],
    ['chunked followed by a vertical tab', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\x0b\r\n\r\n', 'bad-header'],
    ['chunked followed by a form feed', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\x0c\r\n\r\n', 'bad-header'],
    ['chunked followed by a no-break space (0xA0)', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\xa0\r\n\r\n', 'bad-transfer-encoding'],
    ['a Transfer-Encoding that is not a token', 'POST / HTTP/1.1\r\nTransfer-Encoding: "chunked"\r\n\r\n', 'bad-transfer-encoding'],
    ['identical duplicate Content-Length fields', 'POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok', 'bad-content-length'],
    ['a Content-Length list of identical values', 'POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nok', 'bad-content-length'],
    ['a Content-Length with a plus sign', 'POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\nok', 'bad-content-length'],
    ['a Content-Length padded with a vertical tab', 'POST / HTTP/1.1\r\nContent-Length: 2\x0b\r\n\r\nok', 'bad-header'],
    ['a chunk size with a trailing space', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nok\r\n0\r\n\r\n', 'bad-chunk'],
    ['a chunk size with a trailing tab', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\t\r\nok\r\n0\r\n\r\n', 'bad-chunk'],
    ['a chunk size with a leading space', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n 2\r\nok\r\n0\r\n\r\n', 'bad-chunk'],
    ['a control byte in a chunk extension', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;a=\x00\r\nok\r\n0\r\n\r\n', 'bad-chunk'],
    ['a NUL byte in a header value', 'GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n', 'bad-header'],
    ['a DEL byte in a header value', 'GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n', 'bad-header'],
    ['an escape byte in a header value', 'GET / HTTP/1.1\r\nX-A: a\x1bb\r\n\r\n', 'bad-header'],
    ['a NUL byte in a cookie', 'GET / HTTP/1.1\r\nCookie: JSESSIONID=a\x00b\r\n\r\n', 'bad-header'],
    ['a control byte in a trailer', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: a\x01\r\n\r\n', 'bad-chunk'],
    ['a control byte in the request target', 'GET /a\x0bb HTTP/1.1\r\n\r\n', 'bad-start-line'],
    ['a no-break space in the request target', 'GET /a\xa0b HTTP/1.1\r\n\r\n', 'bad-start-line'],
  ])('rejects %s', (_name, text, code) => {
    const { events } = run(new Http1Framer('request'), [Buffer.from(text, 'latin1')]);
    const err = events.find((e) => e.type === 'error');
    expect(err).toMatchObject({ type: 'error', code });
  });

  it('trims only SP and HTAB around a field value (OWS), and keeps obs-text inside it', () => {
    const text = 'POST / HTTP/1.1\r\nX-A: \t v\xe9lue \t\r\nTransfer-Encoding:\tgzip , chunked\t\r\n\r\n2 ;ext=1\r\nok\r\n0\r\n\r\n';
    const { events, heads } = run(new Http1Framer('request'), [Buffer.from(text, 'latin1')]);
    expect(typeSeq(events)).toEqual(['head', 'framing', 'data', 'framing', 'end']);
    expect(heads[0]!.headers).toEqual([
      ['X-A', 'v\xe9lue'],
      ['Transfer-Encoding', 'gzip , chunked'],
    ]);
  });

  it('accepts empty list elements around chunked (RFC 9110 §5.6.1) but not an empty list', () => {
    const ok = run(new Http1Framer('request'), [Buffer.from('POST / HTTP/1.1\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n')]);
    expect(typeSeq(ok.events)).toEqual(['head', 'framing', 'end']);
  });

  it('limits header bytes and header count', () => {
    const big = new Http1Framer('request', { maxHeaderBytes: 64, maxHeaderCount: 100 });
    expect(run(big, [Buffer.from(`GET / HTTP/1.1\r\nX: ${'a'.repeat(60)}`)]).events).toEqual([expect.objectContaining({ code: 'header-too-large' })]);
    const many = new Http1Framer('request', { maxHeaderBytes: 4096, maxHeaderCount: 3 });
    const text = `GET / HTTP/1.1\r\n${'A: 1\r\n'.repeat(4)}\r\n`;
    expect(run(many, [Buffer.from(text)]).events).toEqual([expect.objectContaining({ code: 'too-many-headers' })]);
  });

  it('reports truncation at close, but not a close between messages', () => {
    expect(run(new Http1Framer('request'), [Buffer.from('GET / HTTP/1.1\r\n\r\n')], true).events.map((e) => e.type)).toEqual(['head', 'end']);
    const cut = run(new Http1Framer('request'), [Buffer.from('POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc')], true);
    expect(cut.events.at(-1)).toMatchObject({ type: 'error', code: 'truncated' });
  });

  it('says when a message is in progress (what the slow-sender timer watches)', () => {
    const f = new Http1Framer('request');
    expect(f.inMessage).toBe(false);
    f.push(Buffer.from('GET / HT'));
    expect(f.inMessage).toBe(true);
    f.push(Buffer.from('TP/1.1\r\n\r\n'));
    expect(f.inMessage).toBe(false);
  });
});

describe('Http1Framer: responses', () => {
  it('frames chunked, interim and no-body responses and keeps Set-Cookie as spelled', () => {
    const { events, bytes, heads } = run(responseFramer(), [RESPONSES]);
    expect(bytes.equals(RESPONSES)).toBe(true);
    expect(heads.map((h) => [h.status, h.interim])).toEqual([
      [200, false],
      [100, true],
      [204, false],
      [200, false],
    ]);
    expect(responseSetCookie(heads[0]!, 'JSESSIONID')).toBe('SeSsIoN');
    expect(events.filter((e) => e.type === 'end')).toHaveLength(4);
    expect(events.at(-1)).toEqual({ type: 'end' });
  });

  it('knows a response to HEAD has no body even with a Content-Length', () => {
    const text = 'HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';
    const { events } = run(responseFramer(['HEAD', 'GET']), [Buffer.from(text)]);
    expect(typeSeq(events)).toEqual(['head', 'end', 'head', 'data', 'end']);
  });

  it('reads a response without length until the connection closes', () => {
    const f = responseFramer(['GET']);
    const { events } = run(f, [Buffer.from('HTTP/1.1 200 OK\r\n\r\nall of it')], true);
    expect(typeSeq(events)).toEqual(['head', 'data', 'end']);
  });

  it.each([
    ['an empty Transfer-Encoding', 'HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n'],
    ['identical duplicate Content-Length fields', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok'],
    ['a NUL byte in a header value', 'HTTP/1.1 200 OK\r\nSet-Cookie: JSESSIONID=a\x00b\r\nContent-Length: 0\r\n\r\n'],
    ['a control byte in the reason phrase', 'HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n'],
    ['a chunk size with a trailing space', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nok\r\n0\r\n\r\n'],
  ])('rejects a response with %s', (_name, text) => {
    const { events } = run(responseFramer(['GET']), [Buffer.from(text, 'latin1')]);
    expect(events.find((e) => e.type === 'error')).toBeDefined();
  });

  it('refuses a response nobody asked for', () => {
    const { events } = run(new Http1Framer('response'), [Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n')]);
    expect(events).toEqual([expect.objectContaining({ code: 'unexpected-response' })]);
  });
});

describe('Http1Framer properties', () => {
  const cuts = fc.array(fc.nat({ max: 2000 }), { maxLength: 40 });

  it('any split of a valid request stream yields the same messages and the same bytes', () => {
    const whole = run(new Http1Framer('request'), [REQUESTS]);
    fc.assert(
      fc.property(cuts, (c) => {
        const split = run(new Http1Framer('request'), splitAt(REQUESTS, c));
        expect(split.bytes.equals(REQUESTS)).toBe(true);
        expect(split.heads).toEqual(whole.heads);
        expect(typeSeq(split.events)).toEqual(typeSeq(whole.events));
      }),
      { numRuns: 300 },
    );
  });

  it('any split of a valid response stream yields the same messages and the same bytes', () => {
    const whole = run(responseFramer(), [RESPONSES]);
    fc.assert(
      fc.property(cuts, (c) => {
        const split = run(responseFramer(), splitAt(RESPONSES, c));
        expect(split.bytes.equals(RESPONSES)).toBe(true);
        expect(split.heads).toEqual(whole.heads);
        expect(typeSeq(split.events)).toEqual(typeSeq(whole.events));
      }),
      { numRuns: 300 },
    );
  });

  it('generated chunked bodies survive any split byte for byte and decode to their payload', () => {
    const chunkArb = fc.array(fc.uint8Array({ minLength: 1, maxLength: 40 }), { maxLength: 6 });
    fc.assert(
      fc.property(chunkArb, cuts, fc.boolean(), (chunks, c, upper) => {
        const body = chunks.map((ch) => `${ch.length.toString(16)}${upper ? '' : ';x=y'}\r\n${Buffer.from(ch).toString('latin1')}\r\n`).join('') + '0\r\nT: 1\r\n\r\n';
        const msg = Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'), Buffer.from(body, 'latin1')]);
        const out = run(responseFramer(['POST']), splitAt(msg, c));
        expect(out.bytes.equals(msg)).toBe(true);
        const payload = Buffer.concat(out.events.flatMap((e) => (e.type === 'data' ? [e.bytes] : [])));
        expect(payload.equals(Buffer.concat(chunks.map((ch) => Buffer.from(ch))))).toBe(true);
        expect(out.events.at(-1)).toEqual({ type: 'end' });
      }),
      { numRuns: 300 },
    );
  });

  it('a header value is accepted exactly when it is field-content (VCHAR, obs-text, inner SP/HTAB); only SP/HTAB are trimmed', () => {
    // Bytes a value may be made of, biased towards the interesting ones.
    const byte = fc.oneof(
      fc.constantFrom(0x00, 0x01, 0x09, 0x0b, 0x0c, 0x1b, 0x1f, 0x20, 0x7f, 0x80, 0xa0, 0xff),
      fc.integer({ min: 0x21, max: 0x7e }),
      fc.integer({ min: 0x00, max: 0xff }).filter((b) => b !== 0x0a && b !== 0x0d),
    );
    fc.assert(
      fc.property(fc.array(byte, { maxLength: 24 }), (bytes) => {
        const value = Buffer.from(bytes);
        const msg = Buffer.concat([Buffer.from('GET / HTTP/1.1\r\nX-V:'), value, Buffer.from('\r\n\r\n')]);
        const { events, heads } = run(new Http1Framer('request'), [msg]);
        const valid = bytes.every((b) => b === 0x09 || (b >= 0x20 && b !== 0x7f));
        if (!valid) {
          expect(events).toEqual([expect.objectContaining({ type: 'error', code: 'bad-header' })]);
          return;
        }
        const text = value.toString('latin1');
        expect(heads[0]!.headers).toEqual([['X-V', text.replace(/^[ \t]+|[ \t]+$/g, '')]]);
      }),
      { numRuns: 500 },
    );
  });

  it('a Transfer-Encoding is chunked exactly when its last non-empty list element is "chunked" (any case)', () => {
    const element = fc.constantFrom('chunked', 'Chunked', 'gzip', '', ' ', 'chunked\x0b', 'identity', 'chunked;q=1');
    fc.assert(
      fc.property(fc.array(element, { minLength: 1, maxLength: 4 }), (elements) => {
        const te = elements.join(',');
        const msg = Buffer.from(`POST / HTTP/1.1\r\nTransfer-Encoding: ${te}\r\n\r\n0\r\n\r\n`, 'latin1');
        const { events } = run(new Http1Framer('request'), [msg]);
        const codings = te.split(',').map((t) => t.replace(/^[ \t]+|[ \t]+$/g, '')).filter((t) => t !== '');
        const chunked = codings.length > 0 && codings.at(-1)!.toLowerCase() === 'chunked' && codings.filter((c) => c.toLowerCase() === 'chunked').length === 1 && !te.includes('\x0b');
        if (chunked) expect(typeSeq(events)).toEqual(['head', 'framing', 'end']);
        else expect(events.at(-1)).toMatchObject({ type: 'error' });
      }),
      { numRuns: 300 },
    );
  });

  it('random bytes never throw: the framer forwards a prefix, then at most one error and nothing after it', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 8 }), fc.constantFrom<'request' | 'response'>('request', 'response'), (pieces, kind) => {
        const framer = new Http1Framer(kind, { maxHeaderBytes: 256, maxHeaderCount: 8 });
        framer.expectResponseTo('GET');
        const input = Buffer.concat(pieces.map((p) => Buffer.from(p)));
        const { events, bytes } = run(framer, pieces.map((p) => Buffer.from(p)), true);
        const errors = events.filter((e) => e.type === 'error');
        expect(errors.length).toBeLessThanOrEqual(1);
        if (errors.length === 1) expect(events.at(-1)!.type).toBe('error');
        expect(input.subarray(0, bytes.length).equals(bytes)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });
});
