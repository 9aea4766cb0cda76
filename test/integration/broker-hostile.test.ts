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
