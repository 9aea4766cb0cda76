import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTerminateLab, type TerminateLab } from '../helpers/terminate-lab.ts';
import { brokerCall, openBrokerClient, resultId, setCookieValue } from '../helpers/broker-client.ts';
import { rawRequest } from '../helpers/raw-http.ts';
import { allocateResourceResp, clientRequest } from '../helpers/broker-xml.ts';
import { tcpGreeting, udpRoundTrip } from '../helpers/clients.ts';

const CL_BODY = allocateResourceResp({ ipAddress: '192.0.2.99', sni: 'cl.example', port: 4172, sessionId: 'sid-cl', connectTag: 'tag-content-length' });

describe('experimental rewriteTarget', () => {
  let lab: TerminateLab;

  beforeAll(async () => {
    const ids = ['conn-a', 'conn-b', 'conn-c'];
    lab = await startTerminateLab({ ids, rewriteTarget: { enabled: true, publicAddress: '127.0.0.1', bindAddress: '127.0.0.1', ports: Object.fromEntries(ids.map((id) => [id, 0])) } });
    for (const b of lab.brokers) {
      b.script = (req) => (req.path.endsWith('?case=content-length') ? [Buffer.from(`HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: ${CL_BODY.length}\r\n\r\n${CL_BODY}`)] : undefined);
    }
  });

  afterAll(async () => {
    await lab.close();
  });

  it('points the client at its Connector\'s own port, re-chunked, and that port reaches the Connector from any address', async () => {
    const port = lab.proxy.addresses.broker.port;
    const cookie = setCookieValue(await brokerCall(port, '127.0.2.90', 'hello'))!;
    const connectorId = cookie.split('-s')[0]!;
    const alloc = await brokerCall(port, '127.0.2.90', 'allocate-resource', { Cookie: `JSESSIONID=${cookie}` });
    expect(resultId(alloc)).toBe('ALLOC_SUCCESSFUL');
    const direct = lab.proxy.app.directPorts[connectorId]!;
    expect(direct).toBeGreaterThan(0);
    const broker = lab.byId(connectorId);
    const original = broker.allocations.at(-1)!;
    // Exactly the original body with ip-address and port replaced; every other byte kept.
    const expected = allocateResourceResp({ ipAddress: '127.0.0.1', sni: original.sni, port: direct, sessionId: original.sessionId, connectTag: original.connectTag });
    expect(alloc.body.toString()).toBe(expected);
    expect(alloc.headers.get('transfer-encoding')).toEqual(['chunked']);
    // Carrier-grade NAT: the media flows come from other addresses than the broker exchange.
    const tcp = await tcpGreeting(direct, '127.0.2.91');
    tcp.socket.end();
    const udp = await udpRoundTrip(direct, '127.0.2.92', Buffer.from('media'));
    expect({ tcp: tcp.id, udp: udp.toString().split('|')[0] }).toEqual({ tcp: connectorId, udp: connectorId });
    await lab.proxy.logs.waitFor((l) => l.msg === 'allocation target rewritten (experimental rewriteTarget)' && l.connector === connectorId);
  });

  it('fixes Content-Length when the body length changes', async () => {
    const client = await openBrokerClient(lab.proxy.addresses.broker.port, '127.0.2.93');
    const reply = await client.exchange(rawRequest('/pcoip-broker/xml?case=content-length', clientRequest('allocate-resource')));
    const body = reply.body.toString();
    expect(body).toContain('<ip-address>127.0.0.1</ip-address>');
    expect(body).not.toContain('192.0.2.99');
    expect(Number(reply.headers.get('content-length')![0])).toBe(Buffer.byteLength(body));
    expect(reply.raw.toString().startsWith('HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: ')).toBe(true);
    client.close();
  });

  it('leaves other broker answers byte for byte', async () => {
    const client = await openBrokerClient(lab.proxy.addresses.broker.port, '127.0.2.94');
    const reply = await client.exchange(rawRequest('/pcoip-broker/xml', clientRequest('hello')));
    const broker = lab.brokers.find((b) => b.requests.some((r) => r.raw.equals(rawRequest('/pcoip-broker/xml', clientRequest('hello')))))!;
    expect(broker.written.some((w, i) => Buffer.concat([w, broker.written[i + 1] ?? Buffer.alloc(0)]).equals(reply.raw))).toBe(true);
    client.close();
  });
});
