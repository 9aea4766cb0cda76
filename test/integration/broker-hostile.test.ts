import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTerminateLab, type TerminateLab } from '../helpers/terminate-lab.ts';
import { openBrokerClient } from '../helpers/broker-client.ts';
import { rawRequest } from '../helpers/raw-http.ts';
import { allocateResourceResp, clientRequest } from '../helpers/broker-xml.ts';
import { xmlResponse } from '../helpers/fake-broker.ts';

/**
 * Hostile Connectors and hostile clients against the terminating broker listener, through real
 * TLS sockets. Client addresses 127.0.14.x (this file only).
 */
describe('terminate mode: a hostile Connector', () => {
  let lab: TerminateLab;

  beforeAll(async () => {
    lab = await startTerminateLab({ ids: ['conn-a', 'conn-b'] });
  });

  afterAll(async () => {
    await lab.close();
  });

  const port = () => lab.proxy.addresses.broker.port;

  it('cannot make an XML entity resolve to a JavaScript built-in (&toString; and friends learn nothing)', async () => {
    const names = ['toString', 'valueOf', '__proto__', 'hasOwnProperty'];
    for (const b of lab.brokers) {
      b.script = (req) => {
        const name = /case=(\w+)/.exec(req.path)?.[1];
        if (!name) return undefined;
        return xmlResponse(allocateResourceResp({ ipAddress: b.host, sni: `&${name};`, port: 4172, sessionId: `&${name};`, connectTag: `&${name};` }));
      };
    }
    try {
      const before = lab.proxy.app.sessions.counts.allocations;
      for (const name of names) {
        const client = await openBrokerClient(port(), '127.0.14.1');
        const reply = await client.exchange(rawRequest(`/pcoip-broker/xml?case=${name}`, clientRequest('allocate-resource')));
        client.close();
        expect(reply.startLine).toBe('HTTP/1.1 200 OK');
        await lab.proxy.logs.waitFor((l) => l.msg === 'broker XML response not understood; forwarded as is, nothing learned' && l.client === '127.0.14.1' && l.reason === 'malformed');
      }
      expect(lab.proxy.app.sessions.counts.allocations).toBe(before);
      const status = await (await fetch(`${lab.proxy.adminUrl}/status`)).text();
      expect(status).not.toContain('native code');
      expect(status).not.toContain('function');
    } finally {
      for (const b of lab.brokers) b.script = undefined;
    }
  });
});

describe('terminate mode: a hostile client', () => {
  let lab: TerminateLab;

  beforeAll(async () => {
    lab = await startTerminateLab({ ids: ['conn-a', 'conn-b'] });
  });

  afterAll(async () => {
    await lab.close();
  });

  const port = () => lab.proxy.addresses.broker.port;
  const seenByConnectors = () => lab.brokers.reduce((n, b) => n + b.requests.length, 0);

  it.each([
    ['an empty Transfer-Encoding', 'POST /pcoip-broker/xml HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n0\r\n\r\n'],
    ['a Transfer-Encoding of a comma', 'POST /pcoip-broker/xml HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,\r\n\r\n0\r\n\r\n'],
    ['chunked followed by a vertical tab', 'POST /pcoip-broker/xml HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n'],
    ['identical duplicate Content-Length fields', 'POST /pcoip-broker/xml HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok'],
    ['a NUL byte in CLIENT-LOG-ID', 'POST /pcoip-broker/xml HTTP/1.1\r\nHost: x\r\nCLIENT-LOG-ID: a\x00b\r\nContent-Length: 0\r\n\r\n'],
  ])('answers %s with 400 and never forwards it to a Connector', async (_name, text) => {
    const before = seenByConnectors();
    const client = await openBrokerClient(port(), '127.0.14.20');
    const reply = await client.exchange(Buffer.from(text, 'latin1'));
    expect(reply.startLine).toBe('HTTP/1.1 400 Bad Request');
    await client.reader.untilEnd();
    await lab.proxy.logs.waitFor((l) => l.code === 'PLB_E_HTTP_MALFORMED' && l.client === '127.0.14.20');
    expect(seenByConnectors()).toBe(before);
  });
});
