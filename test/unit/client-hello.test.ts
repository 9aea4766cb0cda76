import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ClientHelloPeeker, examine, type HelloResult } from '../../src/pcoip/client-hello.ts';
import { buildClientHello, captureClientHello } from '../helpers/tls-fixtures.ts';

function feed(pieces: Buffer[], maxBytes?: number): HelloResult {
  const peeker = new ClientHelloPeeker(maxBytes);
  let result: HelloResult = { status: 'need-more' };
  for (const p of pieces) result = peeker.push(p);
  return result;
}

function bytewise(data: Buffer): Buffer[] {
  return [...data].map((b) => Buffer.from([b]));
}

describe('ClientHelloPeeker', () => {
  let nodeHello: Buffer;
  let nodeHelloNoSni: Buffer;

  beforeAll(async () => {
    nodeHello = await captureClientHello('Session-7.PCoIP.example');
    nodeHelloNoSni = await captureClientHello(undefined);
  });

  it('reads the SNI of a real ClientHello (lower-cased), whole and byte by byte', () => {
    expect(feed([nodeHello])).toEqual({ status: 'done', sni: 'session-7.pcoip.example' });
    expect(feed(bytewise(nodeHello))).toEqual({ status: 'done', sni: 'session-7.pcoip.example' });
  });

  it('reports a ClientHello without SNI as done with no name', () => {
    expect(feed([nodeHelloNoSni])).toEqual({ status: 'done', sni: undefined });
  });

  it('reassembles a ClientHello spread over several TLS records', () => {
    const hello = buildClientHello({ sni: 'multi.example', padding: 3000, recordSize: 700 });
    expect(examine(hello)).toEqual({ status: 'done', sni: 'multi.example' });
    expect(feed(bytewise(hello))).toEqual({ status: 'done', sni: 'multi.example' });
  });

  it('rejects non-TLS first bytes from the first byte', () => {
    for (const first of ['GET / HTTP/1.1\r\n', 'SSH-2.0-x', '\x80\x2e\x01']) {
      expect(feed([Buffer.from(first, 'latin1').subarray(0, 1)])).toMatchObject({ status: 'error', reason: 'not-tls' });
    }
    expect(feed([Buffer.from([0x16, 0x04])])).toMatchObject({ status: 'error', reason: 'not-tls' });
  });

  it('rejects a handshake that is not a ClientHello, and duplicate server_name', () => {
    const serverHelloish = Buffer.from(buildClientHello({ sni: 'x.example' }));
    serverHelloish[5] = 2;
    expect(examine(serverHelloish)).toMatchObject({ status: 'error', reason: 'not-client-hello' });
    expect(examine(buildClientHello({ sni: 'a.example', extraSni: true }))).toMatchObject({ status: 'error', reason: 'malformed' });
  });

  it('refuses a ClientHello larger than its bound without buffering it', () => {
    const big = buildClientHello({ sni: 'big.example', padding: 9000 });
    expect(feed([big.subarray(0, 9)], 4096)).toMatchObject({ status: 'error', reason: 'too-large' });
  });

  it('refuses a host_name that is not a DNS name', () => {
    expect(examine(buildClientHello({ sni: 'bad name\u0000' }))).toMatchObject({ status: 'error', reason: 'malformed' });
  });

  it('property: any split of a real ClientHello gives the same SNI', () => {
    fc.assert(
      fc.property(fc.array(fc.nat({ max: nodeHello.length }), { maxLength: 30 }), (cuts) => {
        const points = [...new Set(cuts)].sort((a, b) => a - b);
        const pieces: Buffer[] = [];
        let prev = 0;
        for (const p of [...points, nodeHello.length]) {
          pieces.push(nodeHello.subarray(prev, p));
          prev = p;
        }
        expect(feed(pieces)).toEqual({ status: 'done', sni: 'session-7.pcoip.example' });
      }),
      { numRuns: 300 },
    );
  });

  it('property: every proper prefix of a ClientHello needs more; nothing is decided early', () => {
    fc.assert(
      fc.property(fc.nat({ max: nodeHello.length - 1 }), (n) => {
        expect(examine(nodeHello.subarray(0, n))).toEqual({ status: 'need-more' });
      }),
      { numRuns: 300 },
    );
  });

  it('property: random bytes and corrupted hellos never throw, and always end in a bounded answer', () => {
    const corrupted = fc.tuple(fc.nat({ max: 2000 }), fc.integer({ min: 0, max: 255 })).map(([at, value]) => {
      const copy = Buffer.from(nodeHello);
      copy[at % copy.length] = value;
      return copy;
    });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 600 }).map((u) => Buffer.from(u)), corrupted), (data) => {
        const result = feed([data], 1024);
        expect(['need-more', 'done', 'error']).toContain(result.status);
        // Past the bound there is always an answer.
        if (data.length >= 1024) expect(result.status).not.toBe('need-more');
      }),
      { numRuns: 500 },
    );
  });
});
