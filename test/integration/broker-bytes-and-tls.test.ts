import { rename } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTerminateLab, type TerminateLab } from '../helpers/terminate-lab.ts';
import { openBrokerClient, resultId } from '../helpers/broker-client.ts';
import { rawRequest } from '../helpers/raw-http.ts';
import { clientRequest } from '../helpers/broker-xml.ts';
import { makeCert } from '../helpers/tls-fixtures.ts';

/** Response bytes a Connector might send, with every detail a re-encoder would lose. */
const ODD_RESPONSE = [
  'HTTP/1.1 200 OK\r\nSet-Cookie: JSESSIONID=ByteTest-1; Path=/pcoip-broker; Secure\r\nx-lower-case: v\r\nX-UPPER:   spaced value  \r\nContent-Type: text/xml; charset=UTF-8\r\n',
  'Transfer-Encoding: chunked\r\n\r\n3;ext="q"\r\n<a>\r\n1\r\n/\r\n',
  '00a\r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\n',
];

/** Big enough to fill socket buffers both ways, so backpressure paths run. */
const LARGE = Buffer.from(Uint8Array.from({ length: 3 * 1024 * 1024 }, (_, i) => (i * 7919) & 0xff));

describe('terminate mode: bytes, ALPN and certificates', () => {
  let lab: TerminateLab;

  beforeAll(async () => {
    lab = await startTerminateLab({ ids: ['conn-a', 'conn-b'], tls: { reloadInterval: '100ms' } });
    for (const b of lab.brokers) {
      b.script = (req) => {
        if (req.path === '/bytes') return ODD_RESPONSE.map((p) => Buffer.from(p, 'latin1'));
        if (req.path === '/large') return [Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${LARGE.length}\r\n\r\n`), LARGE];
        return undefined;
      };
    }
  });

  afterAll(async () => {
    await lab.close();
  });

  it('delivers response headers and chunking byte for byte, and request bytes as the client sent them', async () => {
    const client = await openBrokerClient(lab.proxy.addresses.broker.port, '127.0.2.50');
    const request = Buffer.from('POST /bytes HTTP/1.1\r\nhost: Broker.Example\r\ncLiEnT-LoG-Id: MiXeD\r\nX-Empty:\r\nContent-Length: 5\r\n\r\nhello');
    // Two requests pipelined in one write: two responses, in order, on one upstream connection.
    client.socket.write(Buffer.concat([request, request]));
    const first = await client.reader.next();
    const second = await client.reader.next();
    const expected = Buffer.from(ODD_RESPONSE.join(''), 'latin1');
    expect(first!.raw.equals(expected)).toBe(true);
    expect(second!.raw.equals(expected)).toBe(true);
    const broker = lab.brokers.find((b) => b.requests.some((r) => r.path === '/bytes'))!;
    const seen = broker.requests.filter((r) => r.path === '/bytes');
    expect(seen).toHaveLength(2);
    for (const r of seen) expect(r.raw.equals(request)).toBe(true);
    client.close();
  });

  it('answers requests from a client that half-closes right after sending them', async () => {
    const client = await openBrokerClient(lab.proxy.addresses.broker.port, '127.0.2.55');
    const request = rawRequest('/pcoip-broker/xml', clientRequest('hello'));
    client.socket.end(Buffer.concat([request, request]));
    expect(resultId((await client.reader.next())!)).toBe('OK');
    expect(resultId((await client.reader.next())!)).toBe('OK');
    expect((await client.reader.untilEnd()).length).toBe(0);
  });

  it('closes the connections relayed to a Connector when asked (health.closeFlowsOnDown)', async () => {
    const client = await openBrokerClient(lab.proxy.addresses.broker.port, '127.0.2.56');
    await client.exchange(rawRequest('/pcoip-broker/xml', clientRequest('hello')));
    const closed = new Promise<void>((r) => client.socket.once('close', () => r()));
    const counts = lab.brokers.map((b) => lab.proxy.app.closeFlowsTo(b.id));
    await closed;
    expect(counts.reduce((a, b) => a + b, 0)).toBe(1);
    await lab.proxy.logs.waitFor((l) => l.msg === 'flow closed' && l.client === '127.0.2.56' && l.reason === 'connector-down');
  });

  it('carries multi-megabyte bodies both ways intact', async () => {
    const client = await openBrokerClient(lab.proxy.addresses.broker.port, '127.0.2.54');
    const request = Buffer.concat([Buffer.from(`POST /large HTTP/1.1\r\nContent-Length: ${LARGE.length}\r\n\r\n`), LARGE]);
    client.socket.write(request);
    const reply = await client.reader.next(15_000);
    expect(reply!.body.equals(LARGE)).toBe(true);
    const seen = lab.brokers.flatMap((b) => b.requests).find((r) => r.path === '/large')!;
    expect(seen.raw.equals(request)).toBe(true);
    client.close();
  });

  it('offers only http/1.1 by ALPN: a client that prefers h2 gets http/1.1', async () => {
    const client = await openBrokerClient(lab.proxy.addresses.broker.port, '127.0.2.51', { alpn: ['h2', 'http/1.1'] });
    expect(client.socket.alpnProtocol).toBe('http/1.1');
    client.close();
    const h2only = await openBrokerClient(lab.proxy.addresses.broker.port, '127.0.2.51', { alpn: ['h2'] }).then(
      (c) => (c.close(), c.socket.alpnProtocol),
      (err: NodeJS.ErrnoException) => err.code,
    );
    expect(h2only).not.toBe('h2');
  });

  it('refuses TLS below 1.2', async () => {
    const { connect } = await import('node:tls');
    const outcome = await new Promise<string>((resolve) => {
      const s = connect({ host: '127.0.0.1', port: lab.proxy.addresses.broker.port, rejectUnauthorized: false, maxVersion: 'TLSv1.1', minVersion: 'TLSv1' });
      s.once('secureConnect', () => (s.destroy(), resolve('connected')));
      s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    });
    expect(outcome).not.toBe('connected');
  });

  it('reloads changed certificate files for new handshakes without dropping an open connection', async () => {
    const port = lab.proxy.addresses.broker.port;
    const before = await openBrokerClient(port, '127.0.2.52');
    const oldFingerprint = before.socket.getPeerX509Certificate()!.fingerprint256;
    expect(oldFingerprint).toBe(new X509Certificate(lab.proxyCert.cert).fingerprint256);
    expect(resultId(await before.exchange(rawRequest('/pcoip-broker/xml', clientRequest('hello'))))).toBe('OK');

    // Replace both files the way a certificate tool does: write aside, rename over.
    const fresh = await makeCert(lab.dir, 'proxy-renewed', ['broker.example'], ['127.0.0.1']);
    await rename(fresh.keyPath, lab.proxyCert.keyPath);
    await rename(fresh.certPath, lab.proxyCert.certPath);
    await lab.proxy.logs.waitFor((l) => l.msg === 'certificates reloaded');

    // The old connection keeps working on its negotiated session.
    expect(before.socket.destroyed).toBe(false);
    expect(resultId(await before.exchange(rawRequest('/pcoip-broker/xml', clientRequest('hello'))))).toBe('OK');
    // A new handshake gets the new certificate.
    const after = await openBrokerClient(port, '127.0.2.53');
    expect(after.socket.getPeerX509Certificate()!.fingerprint256).toBe(new X509Certificate(fresh.cert).fingerprint256);
    after.close();
    before.close();
  });
});

describe('terminate mode: several certificates picked by SNI', () => {
  let lab: TerminateLab;
  let other: Awaited<ReturnType<typeof makeCert>>;

  beforeAll(async () => {
    lab = await startTerminateLab({ ids: ['conn-a'] });
    other = await makeCert(lab.dir, 'other', ['*.desk.example', 'other.example']);
    await lab.proxy.stop();
    const { startTestProxy } = await import('../helpers/proxy.ts');
    const { terminateConfig } = await import('../helpers/terminate-lab.ts');
    const b = lab.brokers[0]!;
    const c = lab.connectors[0]!;
    lab.proxy = await startTestProxy(
      terminateConfig([{ id: 'conn-a', address: b.host, ports: { broker: b.port, pcoip: c.pcoipPort } }], {
        certificates: [
          { cert: lab.proxyCert.certPath, key: lab.proxyCert.keyPath },
          { cert: other.certPath, key: other.keyPath },
        ],
        upstream: { ca: lab.connectorCert.certPath },
      }),
    );
  });

  afterAll(async () => {
    await lab.close();
  });

  it('serves the matching SAN (exact or wildcard), and the first pair otherwise', async () => {
    const port = lab.proxy.addresses.broker.port;
    const fp = async (servername: string) => {
      const c = await openBrokerClient(port, '127.0.2.60', { servername });
      const f = c.socket.getPeerX509Certificate()!.fingerprint256;
      c.close();
      return f;
    };
    const first = new X509Certificate(lab.proxyCert.cert).fingerprint256;
    const second = new X509Certificate(other.cert).fingerprint256;
    expect(await fp('other.example')).toBe(second);
    expect(await fp('pc7.desk.example')).toBe(second);
    expect(await fp('broker.example')).toBe(first);
    expect(await fp('unknown.example')).toBe(first);
  });
});
