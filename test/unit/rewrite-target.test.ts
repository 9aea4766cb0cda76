import { describe, expect, it } from 'vitest';
import { reframeResponse, rewriteAllocationBody } from '../../src/pcoip/rewrite-target.ts';
import { allocateResourceResp } from '../helpers/broker-xml.ts';
import { parseConfigText } from '../../src/config/load.ts';
import { PlbError } from '../../src/errors.ts';

const BODY = allocateResourceResp({ ipAddress: '192.0.2.5', sni: 's.example', port: 4172, sessionId: 'sid', connectTag: 'tag' });

describe('rewriteAllocationBody', () => {
  it('replaces only the target ip-address and port', () => {
    const out = rewriteAllocationBody(BODY, { address: '203.0.113.7', port: 4180 })!;
    expect(out).toBe(BODY.replace('<ip-address>192.0.2.5</ip-address>', '<ip-address>203.0.113.7</ip-address>').replace('<port>4172</port>', '<port>4180</port>'));
  });

  it('declines a body without a complete target', () => {
    expect(rewriteAllocationBody(BODY.replace(/<port>.*<\/port>/, ''), { address: 'a.example', port: 1 })).toBeUndefined();
    expect(rewriteAllocationBody('<pcoip-client/>', { address: 'a.example', port: 1 })).toBeUndefined();
  });
});

describe('reframeResponse', () => {
  const body = Buffer.from('0123456789abcdefXYZ');
  it('re-chunks a chunked response as one data chunk and the last chunk', () => {
    const head = Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=b\r\n\r\n');
    expect(reframeResponse(head, true, body).toString()).toBe(`${head}13\r\n0123456789abcdefXYZ\r\n0\r\n\r\n`);
    expect(reframeResponse(head, true, Buffer.alloc(0)).toString()).toBe(`${head}0\r\n\r\n`);
  });

  it('rewrites every Content-Length line and nothing else in the head', () => {
    const head = Buffer.from('HTTP/1.1 200 OK\r\ncontent-LENGTH: 5\r\nX-Content-Length: 5\r\nContent-Length:5\r\n\r\n');
    expect(reframeResponse(head, false, body).toString()).toBe(`HTTP/1.1 200 OK\r\ncontent-LENGTH: 19\r\nX-Content-Length: 5\r\nContent-Length:19\r\n\r\n${body}`);
  });
});

describe('listeners.broker.rewriteTarget config', () => {
  const yaml = (rewrite: string, mode = 'terminate') => `
listeners:
  broker:
    bind: "0.0.0.0:443"
    tls: ${mode === 'terminate' ? '{ mode: terminate, certificates: [{ cert: /a, key: /b }], upstream: { insecure: true } }' : '{ mode: passthrough }'}
    rewriteTarget: ${rewrite}
connectors:
  - { id: conn-a, address: 192.0.2.1 }
  - { id: conn-b, address: 192.0.2.2 }
`;
  const errors = (text: string) => {
    try {
      parseConfigText(text, 'r.yaml');
      return '';
    } catch (err) {
      return (err as PlbError).details.join('\n');
    }
  };

  it('is off by default and accepts a complete block', () => {
    expect(parseConfigText(yaml('{}'), 'r.yaml').listeners.broker!.rewriteTarget).toEqual({ enabled: false, bindAddress: '0.0.0.0', ports: {} });
    expect(errors(yaml('{ enabled: true, publicAddress: 203.0.113.1, ports: { conn-a: 4173, conn-b: 4174 } }'))).toBe('');
  });

  it('names what is missing or wrong', () => {
    const text = errors(yaml('{ enabled: true, ports: { conn-a: 4173, conn-x: 4173 } }'));
    expect(text).toContain('listeners.broker.rewriteTarget.publicAddress: required when rewriteTarget is enabled');
    expect(text).toContain('listeners.broker.rewriteTarget.ports: no port for Connector "conn-b"');
    expect(text).toContain('listeners.broker.rewriteTarget.ports.conn-x: no Connector has id "conn-x"');
    expect(text).toContain('listeners.broker.rewriteTarget.ports.conn-x: port 4173 is also used for "conn-a"');
    expect(errors(yaml('{ enabled: true, publicAddress: 203.0.113.1, ports: { conn-a: 1, conn-b: 2 } }', 'passthrough'))).toContain(
      'listeners.broker.rewriteTarget.enabled: needs listeners.broker.tls.mode: terminate',
    );
  });
});
