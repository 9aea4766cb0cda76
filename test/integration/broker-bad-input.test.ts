import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTerminateLab, type TerminateLab } from '../helpers/terminate-lab.ts';
import { brokerCall, openBrokerClient, resultId, setCookieValue } from '../helpers/broker-client.ts';
import { chunked, rawRequest } from '../helpers/raw-http.ts';
import { allocateResourceResp, clientRequest } from '../helpers/broker-xml.ts';

const ALLOC_BODY = allocateResourceResp({ ipAddress: '127.0.1.1', sni: 'bad-input.example', port: 4172, sessionId: 'sid-bad-input', connectTag: 'tag-bad-input-123' });

/** Connector answers per request path, for the bad-response cases. */
const SCRIPTS: Record<string, Buffer[] | 'close'> = {
  '/truncated-xml': [Buffer.from(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${chunked(ALLOC_BODY.slice(0, ALLOC_BODY.indexOf('<connect-tag>') + 16), [30])}`)],
  '/oversized-xml': [Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${ALLOC_BODY.length + 70_000}\r\n\r\n${ALLOC_BODY.replace('<resource-id>', `<x>${'a'.repeat(70_000 - 7)}</x><resource-id>`)}`)],
  '/json': [Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 31\r\n\r\n{"code":200,"status":"success"}')],
  '/bad-status': [Buffer.from('HTTP/1.1 abc\r\n\r\n')],
  '/hang-up': 'close',
};

describe('terminate mode: bad input', () => {
  let lab: TerminateLab;

  beforeAll(async () => {
    lab = await startTerminateLab({ ids: ['conn-a', 'conn-b'], http: { maxHeaderBytes: 2048, headerTimeout: '300ms' } });
    for (const b of lab.brokers) {
      b.script = (req) => {
        const key = req.path.replace('/pcoip-broker/xml?case=', '/');
        return SCRIPTS[key];
      };
    }
  });

  afterAll(async () => {
    await lab.close();
  });

  const port = () => lab.proxy.addresses.broker.port;
  const allocatePath = (c: string) => `/pcoip-broker/xml?case=${c.slice(1)}`;

  it('answers malformed HTTP with 400 and a log line, and stays up', async () => {
    const client = await openBrokerClient(port(), '127.0.2.20');
    const reply = await client.exchange(Buffer.from('HELLO THERE\r\n\r\n'));
    expect(reply.startLine).toBe('HTTP/1.1 400 Bad Request');
    await client.reader.untilEnd();
    await lab.proxy.logs.waitFor((l) => l.code === 'PLB_E_HTTP_MALFORMED' && l.client === '127.0.2.20' && l.reason === 'bad-start-line');
    expect(resultId(await brokerCall(port(), '127.0.2.20', 'hello'))).toBe('OK');
  });

  it('answers an earlier pipelined request before the 400 for a malformed one', async () => {
    const client = await openBrokerClient(port(), '127.0.2.21');
    client.socket.write(Buffer.concat([rawRequest('/pcoip-broker/xml', clientRequest('hello')), Buffer.from('GET / HTTP/1.1\r\nBad Header\r\n\r\n')]));
    expect(resultId((await client.reader.next())!)).toBe('OK');
    expect((await client.reader.next())!.startLine).toBe('HTTP/1.1 400 Bad Request');
  });

  it('refuses a header section over listeners.broker.http.maxHeaderBytes', async () => {
    const client = await openBrokerClient(port(), '127.0.2.22');
    const reply = await client.exchange(Buffer.from(`GET / HTTP/1.1\r\nX-Big: ${'a'.repeat(3000)}\r\n\r\n`));
    expect(reply.startLine).toBe('HTTP/1.1 400 Bad Request');
    await lab.proxy.logs.waitFor((l) => l.client === '127.0.2.22' && l.reason === 'header-too-large');
  });

  it('cuts a slow sender with 408 after headerTimeout', async () => {
    const client = await openBrokerClient(port(), '127.0.2.23');
    client.socket.write('POST /pcoip-broker/xml HTTP/1.1\r\nHost: x\r\n');
    const reply = await client.reader.next(3000);
    expect(reply!.startLine).toBe('HTTP/1.1 408 Request Timeout');
    await lab.proxy.logs.waitFor((l) => l.code === 'PLB_E_HTTP_TIMEOUT' && l.client === '127.0.2.23');
  });

  it.each([
    ['/truncated-xml', 'truncated'],
    ['/oversized-xml', 'oversized'],
    ['/json', 'not-xml'],
  ])('forwards a %s body unchanged, learns nothing, logs why', async (path, reason) => {
    const client = await openBrokerClient(port(), '127.0.2.24');
    const before = lab.proxy.app.sessions.counts.allocations;
    const reply = await client.exchange(rawRequest(allocatePath(path), clientRequest('allocate-resource')));
    const sent = Buffer.concat(SCRIPTS[path] as Buffer[]);
    expect(reply.raw.equals(sent)).toBe(true);
    await lab.proxy.logs.waitFor((l) => l.msg === 'broker XML response not understood; forwarded as is, nothing learned' && l.reason === reason);
    expect(lab.proxy.app.sessions.counts.allocations).toBe(before);
    client.close();
  });

  it('answers 502 when the Connector sends a malformed response or hangs up without answering', async () => {
    for (const [path, addr] of [
      ['/bad-status', '127.0.2.25'],
      ['/hang-up', '127.0.2.26'],
    ] as const) {
      const client = await openBrokerClient(port(), addr);
      const reply = await client.exchange(rawRequest(allocatePath(path), clientRequest('hello')));
      expect(reply.startLine).toBe('HTTP/1.1 502 Bad Gateway');
      await lab.proxy.logs.waitFor((l) => l.code === 'PLB_E_UPSTREAM_PROTOCOL' && l.client === addr);
    }
  });

  it('routes by the next rule when a cookie names a Connector that left the pool', async () => {
    const app = lab.proxy.app;
    const cookie = setCookieValue(await brokerCall(port(), '127.0.2.27', 'hello'))!;
    const owner = cookie.split('-s')[0]!;
    const remaining = app.currentConfig.connectors.filter((c) => c.id !== owner);
    app.pool.replaceConfig(remaining);
    try {
      const reply = await brokerCall(port(), '127.0.2.28', 'get-resource-list', { Cookie: `JSESSIONID=${cookie}` });
      expect(resultId(reply)).toBe('NOT_AUTHENTICATED'); // reached the other Connector, which does not know the session
      await lab.proxy.logs.waitFor((l) => l.client === '127.0.2.28' && l.why === 'connector-removed');
    } finally {
      app.pool.replaceConfig(app.currentConfig.connectors);
    }
  });

  it('answers 502 when the Connector for a session cannot be reached, instead of moving the session', async () => {
    const app = lab.proxy.app;
    const cookie = setCookieValue(await brokerCall(port(), '127.0.2.29', 'hello'))!;
    const owner = cookie.split('-s')[0]!;
    // Point the owner at a closed port: same id (the session's Connector), unreachable.
    app.pool.replaceConfig(app.currentConfig.connectors.map((c) => (c.id === owner ? { ...c, ports: { ...c.ports, broker: 1 } } : c)));
    try {
      const reply = await brokerCall(port(), '127.0.2.29', 'bye', { Cookie: `JSESSIONID=${cookie}` });
      expect(reply.startLine).toBe('HTTP/1.1 502 Bad Gateway');
      await lab.proxy.logs.waitFor((l) => l.msg === 'connect to Connector failed' && l.client === '127.0.2.29' && l.connector === owner);
    } finally {
      app.pool.replaceConfig(app.currentConfig.connectors);
    }
  });
});
