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
  ])('rejects %s', (_name, text, code) => {
    const { events } = run(new Http1Framer('request'), [Buffer.from(text)]);
    const err = events.find((e) => e.type === 'error');
    expect(err).toMatchObject({ type: 'error', code });
  });

  it('accepts identical repeated Content-Length values', () => {
    const { events } = run(new Http1Framer('request'), [Buffer.from('POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok')]);
    expect(typeSeq(events)).toEqual(['head', 'data', 'end']);
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
