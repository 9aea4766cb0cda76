import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTerminateLab, type TerminateLab } from '../helpers/terminate-lab.ts';
import { brokerCall, openBrokerClient, setCookieValue } from '../helpers/broker-client.ts';
import { rawRequest, type RawMessage } from '../helpers/raw-http.ts';
import { allocateResourceResp, clientRequest } from '../helpers/broker-xml.ts';
import { xmlResponse, type Script } from '../helpers/fake-broker.ts';
import { simpleResp } from '../helpers/broker-xml.ts';
import { randomBytes } from 'node:crypto';

/**
 * Hostile Connectors and hostile clients against the terminating broker listener, through real
 * TLS sockets. Client addresses 127.0.14.x (this file only).
 */
describe('terminate mode: a hostile Connector (XML entities) and a hostile client (RFC 9112 differentials)', () => {
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

  // ---- a hostile client: what a strict parser behind us would refuse, we refuse ----

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

describe('terminate mode: malformed and slow request bodies, silent Connectors', () => {
  let lab: TerminateLab;

  beforeAll(async () => {
    lab = await startTerminateLab({ ids: ['conn-a', 'conn-b'], http: { bodyTimeout: '300ms', responseTimeout: '1s' } });
    for (const b of lab.brokers) b.script = defaultScript;
  });

  const defaultScript: Script = (req) => {
    if (req.path.endsWith('case=silent')) return [];
    if (req.path.endsWith('case=stall')) return [xmlResponse(simpleResp('hello-resp'))[0]!];
    if (req.path.endsWith('case=slow-ok')) return [700, ...xmlResponse(simpleResp('hello-resp'))];
    return undefined;
  };

  afterAll(async () => {
    await lab.close();
  });

  const port = () => lab.proxy.addresses.broker.port;
  const open = () => lab.brokers.reduce((n, b) => n + b.openConnections, 0);
  /** Waits (bounded) until the Connector side holds no connection any more. */
  const connectorSideClosed = async (timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while (open() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return open();
  };

  it('answers a malformed chunked body with 400 that reaches the client, and closes both connections promptly', async () => {
    const client = await openBrokerClient(port(), '127.0.14.40');
    const started = Date.now();
    // The head (and the first chunk) go to the Connector before the framing error shows.
    client.socket.write('POST /pcoip-broker/xml HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel');
    await new Promise((r) => setTimeout(r, 100));
    client.socket.write('loXX\r\n0\r\n\r\n');
    const reply = await client.reader.next(3000);
    expect(reply?.startLine).toBe('HTTP/1.1 400 Bad Request');
    await client.reader.untilEnd(4000);
    expect(Date.now() - started).toBeLessThan(3500);
    expect(await connectorSideClosed(2000)).toBe(0);
    await lab.proxy.logs.waitFor((l) => l.code === 'PLB_E_HTTP_MALFORMED' && l.client === '127.0.14.40' && l.reason === 'bad-chunk');
  });

  it('answers a chunk size with a trailing space with 400', async () => {
    const client = await openBrokerClient(port(), '127.0.14.41');
    client.socket.write('POST /pcoip-broker/xml HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nok\r\n0\r\n\r\n');
    const reply = await client.reader.next();
    expect(reply?.startLine).toBe('HTTP/1.1 400 Bad Request');
    await lab.proxy.logs.waitFor((l) => l.code === 'PLB_E_HTTP_MALFORMED' && l.client === '127.0.14.41' && l.reason === 'bad-chunk');
  });

  it('answers earlier pipelined requests before the 400 for a malformed body that follows them', async () => {
    const client = await openBrokerClient(port(), '127.0.14.42');
    client.socket.write(Buffer.concat([rawRequest('/pcoip-broker/xml', clientRequest('hello')), Buffer.from('POST /pcoip-broker/xml HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY')]));
    expect((await client.reader.next(3000))?.startLine).toBe('HTTP/1.1 200 OK');
    expect((await client.reader.next(3000))?.startLine).toBe('HTTP/1.1 400 Bad Request');
    await client.reader.untilEnd(4000);
  });

  it.each([
    ['stops sending its body', ['POST /pcoip-broker/xml HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n<pcoip'], 0],
    ['trickles a byte every 500 ms', ['POST /pcoip-broker/xml HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n<', 'p', 'c', 'o', 'i', 'p'], 500],
  ])('answers a client that %s with 408 after bodyTimeout, and closes both sides', async (_name, pieces, gapMs) => {
    const client = await openBrokerClient(port(), '127.0.14.43');
    const started = Date.now();
    void (async () => {
      for (const p of pieces) {
        if (client.socket.destroyed) return;
        client.socket.write(p);
        await new Promise((r) => setTimeout(r, gapMs));
      }
    })();
    const reply = await client.reader.next(3000);
    expect(reply?.startLine).toBe('HTTP/1.1 408 Request Timeout');
    expect(Date.now() - started).toBeLessThan(1500);
    await client.reader.untilEnd(4000);
    expect(await connectorSideClosed(2000)).toBe(0);
    await lab.proxy.logs.waitFor((l) => l.code === 'PLB_E_HTTP_TIMEOUT' && l.client === '127.0.14.43' && l.msg === 'request body made no progress in time; closing (slow sender)');
  });

  it('answers 504 when the Connector does not answer within responseTimeout, and closes its connection', async () => {
    const client = await openBrokerClient(port(), '127.0.14.44');
    const started = Date.now();
    const reply = await client.exchange(rawRequest('/pcoip-broker/xml?case=silent', clientRequest('hello')));
    expect(reply.startLine).toBe('HTTP/1.1 504 Gateway Timeout');
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(Date.now() - started).toBeLessThan(3000);
    await client.reader.untilEnd(4000);
    expect(await connectorSideClosed(2000)).toBe(0);
    await lab.proxy.logs.waitFor((l) => l.code === 'PLB_E_UPSTREAM_TIMEOUT' && l.client === '127.0.14.44');
  });

  it('closes the client connection when the Connector stalls mid-response (no 504 after bytes went out)', async () => {
    const client = await openBrokerClient(port(), '127.0.14.45');
    client.socket.write(rawRequest('/pcoip-broker/xml?case=stall', clientRequest('hello')));
    const rest = await client.reader.untilEnd(3000);
    expect(rest.toString('latin1')).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(rest.toString('latin1')).not.toContain('504');
    expect(await connectorSideClosed(2000)).toBe(0);
  });

  it('does not count time it is not reading against the body: a body held back while the relay waits to switch Connectors is fine', async () => {
    // Request 1 (by address) takes 700 ms (> bodyTimeout) to be answered; request 2 carries the
    // other Connector's cookie, so it waits for that answer, and the relay stops reading its
    // 300 KB body meanwhile (its queue is full): the body stalls through no fault of the client.
    const address = '127.0.14.46';
    const first = setCookieValue(await brokerCall(port(), address, 'hello'))!.split('-s')[0]!;
    let other: string | undefined;
    for (let i = 0; i < 60 && !other; i++) {
      const cookie = setCookieValue(await brokerCall(port(), `127.0.14.${120 + i}`, 'hello'))!;
      if (!cookie.startsWith(first)) other = cookie;
    }
    const client = await openBrokerClient(port(), address);
    client.socket.write(rawRequest('/pcoip-broker/xml?case=slow-ok', clientRequest('hello')));
    client.socket.write(rawRequest('/pcoip-broker/xml', 'a'.repeat(300_000), { Cookie: `JSESSIONID=${other}` }));
    expect((await client.reader.next(3000))?.startLine).toBe('HTTP/1.1 200 OK');
    expect((await client.reader.next(3000))?.startLine).toBe('HTTP/1.1 200 OK');
    client.close();
  });
});

describe('terminate mode: what a client or Connector can make pcoip-lb remember', () => {
  let lab: TerminateLab;

  beforeAll(async () => {
    lab = await startTerminateLab({ ids: ['conn-a', 'conn-b'] });
    for (const b of lab.brokers) {
      b.script = (req) => {
        if (req.path.endsWith('case=400')) return [Buffer.from('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n')];
        const cookie = /case=cookie-(\d+)/.exec(req.path)?.[1];
        if (cookie) return xmlResponse(simpleResp('hello-resp'), [`Set-Cookie: JSESSIONID=${randomBytes(Number(cookie)).toString('base64url').slice(0, Number(cookie))}; Path=/`]);
        return undefined;
      };
    }
  });

  afterAll(async () => {
    await lab.close();
  });

  const port = () => lab.proxy.addresses.broker.port;
  const sessions = () => lab.proxy.app.sessions;
  const events = (name: string) => lab.proxy.app.stats.brokerEvents.get(name) ?? 0;
  /** Sends `requests` on one keep-alive connection, `batch` pipelined at a time; returns the answers. */
  const onOneConnection = async (address: string, requests: Buffer[], batch = 50): Promise<RawMessage[]> => {
    const client = await openBrokerClient(port(), address);
    const out: RawMessage[] = [];
    for (let i = 0; i < requests.length; i += batch) {
      const slice = requests.slice(i, i + batch);
      client.socket.write(Buffer.concat(slice));
      for (let k = 0; k < slice.length; k++) out.push((await client.reader.next(5000))!);
    }
    client.close();
    return out;
  };

  it('learns a CLIENT-LOG-ID only from a broker XML POST the Connector answered with 2xx (never from GET /health)', async () => {
    const before = sessions().counts.logIds;
    const health = Buffer.from('GET /health HTTP/1.1\r\nHost: x\r\nCLIENT-LOG-ID: 0d6c3a4e-0000-4000-8000-00000000aaaa\r\n\r\n');
    await onOneConnection('127.0.14.60', [health, health]);
    const refused = rawRequest('/pcoip-broker/xml?case=400', clientRequest('hello'), { 'CLIENT-LOG-ID': '0d6c3a4e-0000-4000-8000-00000000bbbb' });
    expect((await onOneConnection('127.0.14.60', [refused]))[0]!.startLine).toBe('HTTP/1.1 400 Bad Request');
    expect(sessions().counts.logIds).toBe(before);
    const hello = rawRequest('/pcoip-broker/xml', clientRequest('hello'), { 'CLIENT-LOG-ID': '0d6c3a4e-0000-4000-8000-00000000cccc' });
    await onOneConnection('127.0.14.60', [hello]);
    expect(sessions().counts.logIds).toBe(before + 1);
  });

  it('ignores a CLIENT-LOG-ID or JSESSIONID longer than any real one (16 KB): not learned, counted, one warning, still forwarded', async () => {
    const before = { ...sessions().counts, tooLong: events('id-too-long') };
    const huge = 'x'.repeat(15_000);
    const replies = await onOneConnection('127.0.14.61', [
      rawRequest('/pcoip-broker/xml', clientRequest('hello'), { 'CLIENT-LOG-ID': huge }),
      rawRequest('/pcoip-broker/xml', clientRequest('hello'), { Cookie: `JSESSIONID=${huge}` }),
    ]);
    expect(replies.map((r) => r.startLine)).toEqual(['HTTP/1.1 200 OK', 'HTTP/1.1 200 OK']);
    expect(sessions().counts.logIds).toBe(before.logIds);
    expect(events('id-too-long')).toBe(before.tooLong + 2);
    await lab.proxy.logs.waitFor((l) => l.code === 'PLB_E_BROKER_ID_IGNORED' && l.client === '127.0.14.61' && l.event === 'id-too-long');
  });

  it('learns at most 4 distinct log ids from one client connection', async () => {
    const before = { logIds: sessions().counts.logIds, limit: events('log-id-limit') };
    const requests = Array.from({ length: 10 }, (_, i) => rawRequest('/pcoip-broker/xml', clientRequest('hello'), { 'CLIENT-LOG-ID': `1d6c3a4e-0000-4000-8000-${String(i).padStart(12, '0')}` }));
    await onOneConnection('127.0.14.62', requests);
    expect(sessions().counts.logIds - before.logIds).toBe(4);
    expect(events('log-id-limit') - before.limit).toBe(6);
  });

  it('a hostile Connector setting a new 8 KB JSESSIONID on each of 2000 responses makes pcoip-lb learn nothing', async () => {
    const before = { cookies: sessions().counts.cookies, bytes: sessions().bytes.cookies };
    const replies = await onOneConnection('127.0.14.63', Array.from({ length: 2000 }, () => rawRequest('/pcoip-broker/xml?case=cookie-8192', clientRequest('hello'))), 100);
    expect(replies.every((r) => r.startLine === 'HTTP/1.1 200 OK' && (r.headers.get('set-cookie')?.[0]?.length ?? 0) > 8192)).toBe(true);
    expect(sessions().counts.cookies).toBe(before.cookies);
    expect(sessions().bytes.cookies).toBe(before.bytes);
  });

  it('a Connector setting a new (plausible) 200-character JSESSIONID per response costs a fixed digest size per entry, not the value', async () => {
    const before = { cookies: sessions().counts.cookies, bytes: sessions().bytes.cookies };
    await onOneConnection('127.0.14.64', Array.from({ length: 2000 }, () => rawRequest('/pcoip-broker/xml?case=cookie-200', clientRequest('hello'))), 100);
    const added = sessions().counts.cookies - before.cookies;
    expect(added).toBe(2000);
    expect((sessions().bytes.cookies - before.bytes) / added).toBe(128);
  });
});
