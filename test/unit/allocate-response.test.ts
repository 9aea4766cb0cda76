import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { AllocateResponseParser, DEFAULT_ALLOCATE_LIMITS, type AllocateParseResult } from '../../src/pcoip/allocate-response.ts';
import { allocateFailedResp, allocateResourceResp, simpleResp } from '../helpers/broker-xml.ts';

function parse(pieces: Array<string | Buffer>, limits = DEFAULT_ALLOCATE_LIMITS): AllocateParseResult {
  const p = new AllocateResponseParser(limits);
  for (const piece of pieces) {
    const r = p.push(Buffer.isBuffer(piece) ? piece : Buffer.from(piece));
    if (r.status !== 'need-more') return r;
  }
  return p.end();
}

const ALLOC = allocateResourceResp({ ipAddress: '203.0.113.9', sni: 'WS-01.Sessions.Example', port: 4172, sessionId: 'sess-0123456789', connectTag: 'tag+/=secret' });

describe('AllocateResponseParser', () => {
  it('extracts session-id, connect-tag, sni, ip-address and port, and nothing else', () => {
    expect(parse([ALLOC])).toEqual({
      status: 'allocation',
      target: { resultId: 'ALLOC_SUCCESSFUL', sessionId: 'sess-0123456789', connectTag: 'tag+/=secret', sni: 'ws-01.sessions.example', ipAddress: '203.0.113.9', port: 4172 },
    });
  });

  it('gives the same answer fed byte by byte', () => {
    expect(parse([...Buffer.from(ALLOC)].map((b) => Buffer.from([b])))).toEqual(parse([ALLOC]));
  });

  it('reports a failed allocation with its result id', () => {
    expect(parse([allocateFailedResp()])).toMatchObject({ status: 'allocation', target: { resultId: 'ALLOC_FAILED_NO_RESOURCE', connectTag: undefined } });
  });

  it('stops at the first element of another message', () => {
    const p = new AllocateResponseParser();
    const body = simpleResp('hello-resp');
    const cut = body.indexOf('<hello-resp>') + '<hello-resp>'.length;
    expect(p.push(Buffer.from(body.slice(0, cut)))).toEqual({ status: 'other-message', element: 'hello-resp' });
  });

  it('handles comments, CDATA, entities and attributes', () => {
    const body =
      '<!-- lead --><pcoip-client version="2.1" x=\'a>b\'><allocate-resource-resp><result><result-id>ALLOC_SUCCESSFUL</result-id></result>' +
      '<target><sni><![CDATA[cdata.example]]></sni><session-id>a&amp;b&#x41;</session-id><connect-tag>t</connect-tag></target></allocate-resource-resp></pcoip-client>';
    expect(parse([body])).toMatchObject({ status: 'allocation', target: { sni: 'cdata.example', sessionId: 'a&bA', connectTag: 't' } });
  });

  it.each([
    ['truncated XML', ALLOC.slice(0, ALLOC.indexOf('<connect-tag>') + 15), 'truncated'],
    ['a non-XML body (JSON)', '{"code":200,"status":"success"}', 'not-xml'],
    ['an empty body', '', 'not-xml'],
    ['a DOCTYPE (entity expansion)', '<!DOCTYPE x [<!ENTITY a "b">]><pcoip-client/>', 'malformed'],
    ['mismatched tags', '<pcoip-client><allocate-resource-resp></pcoip-client>', 'malformed'],
    ['a wrong root', '<html><body>error</body></html>', 'malformed'],
    ['an unknown entity', ALLOC.replace('sess-0123456789', 'a&nbsp;b'), 'malformed'],
    ['a bad port', ALLOC.replace('<port>4172</port>', '<port>99999</port>'), 'malformed'],
    ['a repeated field', ALLOC.replace('<port>4172</port>', '<port>4172</port><port>1</port>'), 'malformed'],
  ])('rejects %s', (_name, body, reason) => {
    expect(parse([body])).toMatchObject({ status: 'error', reason });
  });

  it.each(['toString', 'valueOf', 'constructor', '__proto__', 'hasOwnProperty', 'isPrototypeOf', 'toLocaleString', '__defineGetter__'])(
    'never resolves &%s; to a JavaScript built-in: only the five XML entities and numeric references',
    (name) => {
      for (const field of ['sess-0123456789', 'tag+/=secret', 'WS-01.Sessions.Example']) {
        const result = parse([ALLOC.replace(field, `x&${name};y`)]);
        expect(result).toMatchObject({ status: 'error', reason: 'malformed' });
        expect(JSON.stringify(result)).not.toContain('native code');
      }
    },
  );

  it('decodes exactly the five predefined entities and numeric references', () => {
    const body = ALLOC.replace('sess-0123456789', '&lt;&gt;&amp;&quot;&apos;&#65;&#x42;');
    expect(parse([body])).toMatchObject({ status: 'allocation', target: { sessionId: `<>&"'AB` } });
    for (const bad of ['&#0;', '&#x110000;', '&#xD800;', '&LT;', '&amp', '&#;']) {
      expect(parse([ALLOC.replace('sess-0123456789', bad)]), bad).toMatchObject({ status: 'error', reason: 'malformed' });
    }
  });

  it('refuses oversized input: total body, field and depth', () => {
    const padded = ALLOC.replace('<resource-id>', `<x>${'a'.repeat(70_000)}</x><resource-id>`);
    expect(parse([padded])).toMatchObject({ status: 'error', reason: 'oversized' });
    expect(parse([ALLOC.replace('tag+/=secret', 't'.repeat(2000))])).toMatchObject({ status: 'error', reason: 'oversized' });
    const deep = `<pcoip-client><allocate-resource-resp>${'<a>'.repeat(40)}`;
    expect(parse([deep])).toMatchObject({ status: 'error', reason: 'oversized' });
  });

  it('property: any split gives the same result; random bytes never throw', () => {
    const whole = parse([ALLOC]);
    const bytes = Buffer.from(ALLOC);
    fc.assert(
      fc.property(fc.array(fc.nat({ max: bytes.length }), { maxLength: 20 }), (cuts) => {
        const points = [...new Set(cuts)].sort((a, b) => a - b);
        let prev = 0;
        const pieces: Buffer[] = [];
        for (const p of [...points, bytes.length]) (pieces.push(bytes.subarray(prev, p)), (prev = p));
        expect(parse(pieces)).toEqual(whole);
      }),
      { numRuns: 200 },
    );
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 300 }), fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u))), (junk) => {
        expect(['error', 'other-message', 'allocation']).toContain(parse([junk]).status);
      }),
      { numRuns: 500 },
    );
  });
});
