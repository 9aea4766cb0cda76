import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import type { SimConnector } from '../../src/sim/connector.ts';
import { startSimPool } from '../../src/sim/pool.ts';
import { requests } from '../../src/sim/broker-xml.ts';
import { SessionFailure, establishSession, postBroker, sessionCookie } from '../../src/sim/client.ts';
import { OFFSET_CLIENT_SEQ, OFFSET_SEQ, OFFSET_SPI, parseTagAnswer } from '../../src/sim/wire.ts';
import { allocate, nextDatagram, pcoipPacket, post, rawHttps, tagAttempt, udpSocket, waitUntil } from '../helpers/sim-clients.ts';

/** Splits a raw HTTP/1.1 response into status line + headers and the decoded chunked body. */
function parseChunked(raw: string): { head: string; chunks: string[] } {
  const split = raw.indexOf('\r\n\r\n');
  const head = raw.slice(0, split + 2);
  let rest = raw.slice(split + 4);
  const chunks: string[] = [];
  for (let i = 0; i < 100; i++) {
    const eol = rest.indexOf('\r\n');
    const size = Number.parseInt(rest.slice(0, eol), 16);
    if (!Number.isFinite(size)) throw new Error(`bad chunk size line: ${JSON.stringify(rest.slice(0, 20))}`);
    if (size === 0) return { head, chunks };
    chunks.push(rest.slice(eol + 2, eol + 2 + size));
    rest = rest.slice(eol + 2 + size + 2);
  }
  throw new Error('too many chunks');
}

describe('simulated Connector', () => {
  let clock = 1_000_000;
  let a: SimConnector;
  let b: SimConnector;

  beforeAll(async () => {
    [a, b] = (await startSimPool(
      [
        { id: 'conn-a', host: '127.0.1.1' },
        { id: 'conn-b', host: '127.0.1.2' },
      ],
      { now: () => clock },
    )) as [SimConnector, SimConnector];
  });

  afterAll(async () => {
    await Promise.all([a.stop(), b.stop()]);
  });

  it('answers GET /health with 200 success, with 500 and the reason once switched unhealthy, and with 200 again', async () => {
    const get = async () => {
      const raw = await rawHttps(a, 'GET /health HTTP/1.1\r\nHost: conn-a\r\nConnection: close\r\n\r\n');
      return { status: raw.slice(0, raw.indexOf('\r\n')), body: JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as unknown };
    };
    expect(await get()).toEqual({ status: 'HTTP/1.1 200 OK', body: { code: 200, status: 'success' } });
    a.setHealth(false, 'Cannot communicate with broker');
    expect(await get()).toEqual({ status: 'HTTP/1.1 500 Internal Server Error', body: { code: 500, status: 'Error', reason: 'Cannot communicate with broker' } });
    a.setHealth(true);
    expect(await get()).toEqual({ status: 'HTTP/1.1 200 OK', body: { code: 200, status: 'success' } });
  });

  it('sends JSESSIONID in a header spelled exactly "Set-Cookie", as chunked text/xml; charset=UTF-8 (raw bytes)', async () => {
    const body = requests.hello('raw-client');
    const raw = await rawHttps(
      a,
      `POST /pcoip-broker/xml HTTP/1.1\r\nHost: conn-a\r\nContent-Type: text/xml; charset=UTF-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
    const { head, chunks } = parseChunked(raw);
    expect(head).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(head).toMatch(/\r\nSet-Cookie: JSESSIONID=[0-9A-F]{32}; Path=\/; Secure; HttpOnly\r\n/);
    expect(head).not.toMatch(/\r\n(?!Set-Cookie)[Ss][Ee][Tt]-[Cc][Oo][Oo][Kk][Ii][Ee]:/);
    expect(head).toContain('\r\nTransfer-Encoding: chunked\r\n');
    expect(head).toContain('\r\nContent-Type: text/xml; charset=UTF-8\r\n');
    expect(head).toContain('\r\nX-Sim-Connector: conn-a\r\n');
    expect(head).not.toMatch(/content-length/i);
    expect(chunks.length).toBeGreaterThanOrEqual(2);
    expect(chunks.join('')).toMatch(/^<\?xml version="1\.0" encoding="UTF-8"\?><pcoip-client version="2\.1"><hello-resp>.*<\/hello-resp><\/pcoip-client>$/);
  });

  it('answers "not authenticated" without a cookie, with another Connector\'s cookie, before authenticate, and after bye', async () => {
    const before = a.counters.notAuthenticated;
    const noCookie = await post(a, requests.authenticate('alice', 'secret', 'd'));
    expect([noCookie.status, noCookie.connectorId, noCookie.answer.name, noCookie.answer.resultId]).toEqual([401, 'conn-a', 'authenticate-resp', 'NOT_AUTHENTICATED']);

    const cookieOfB = sessionCookie((await post(b, requests.hello('h'))).rawHeaders)!;
    const foreign = await post(a, requests.authenticate('alice', 'secret', 'd'), cookieOfB);
    expect(foreign.answer.resultId).toBe('NOT_AUTHENTICATED');
    expect(foreign.answer.resultStr).toContain('unknown to this Connector');

    const cookie = sessionCookie((await post(a, requests.hello('h'))).rawHeaders)!;
    const early = await post(a, requests.getResourceList(), cookie);
    expect(early.answer.resultId).toBe('NOT_AUTHENTICATED');
    expect((await post(a, requests.authenticate('alice', 'secret', 'd'), cookie)).answer.resultId).toBe('AUTH_SUCCESSFUL_AND_COMPLETE');
    expect((await post(a, requests.getResourceList(), cookie)).answer.resultId).toBe('LIST_SUCCESSFUL');
    expect((await post(a, requests.bye(), cookie)).answer.name).toBe('bye-resp');
    expect((await post(a, requests.getResourceList(), cookie)).answer.resultId).toBe('NOT_AUTHENTICATED');
    expect(a.counters.notAuthenticated - before).toBe(4);
  });

  it('allocates a session: ALLOC_SUCCESSFUL and a target with ip-address, hostname, sni, port, session-id, connect-tag', async () => {
    const hello = await post(a, requests.hello('h'));
    const cookie = sessionCookie(hello.rawHeaders)!;
    await post(a, requests.authenticate('alice', 'secret', 'd'), cookie);
    const alloc = await post(a, requests.allocateResource('1'), cookie);
    expect(alloc.answer.resultId).toBe('ALLOC_SUCCESSFUL');
    expect(alloc.answer.target).toMatchObject({ ipAddress: '127.0.1.1', hostname: 'conn-a.sim.invalid', port: a.pcoipPort });
    // Realistic shapes (docs/pcoip-protocol.md): a 64-bit decimal session id, a ~100-character URL-encoded tag starting SCS1.
    const t = alloc.answer.target!;
    expect(t.sessionId).toMatch(/^\d{19}$/);
    expect(BigInt(t.sessionId) < 2n ** 64n).toBe(true);
    expect(t.sni).toBe(`${t.sessionId}.conn-a.sim.invalid`);
    expect(t.connectTag).toMatch(/^SCS1%3A[A-Za-z0-9%]+$/);
    expect(t.connectTag.length).toBeGreaterThanOrEqual(90);
    expect(t.connectTag.length).toBeLessThanOrEqual(130);
    expect(decodeURIComponent(t.connectTag)).toMatch(/^SCS1:[A-Za-z0-9+/=]+$/);
  });

  it('with ids: short, hands out the short shapes it used before', async () => {
    const [c] = await startSimPool([{ id: 'conn-s', host: '127.0.1.3' }], { ids: 'short' });
    try {
      const { target } = await allocate(c!);
      expect(target.sessionId).toMatch(/^[0-9a-f]{16}$/);
      expect(target.connectTag).toMatch(/^[A-Za-z0-9_-]{24}$/);
    } finally {
      await c!.stop();
    }
  });

  it('answers a probe hello (QueryBrokerClient) with hello-resp but opens no session', async () => {
    const before = { probes: a.counters.probeHellos };
    const probe = await post(a, requests.hello('h', 'QueryBrokerClient'));
    expect([probe.status, probe.answer.name]).toEqual([200, 'hello-resp']);
    expect(sessionCookie(probe.rawHeaders)).toBeUndefined();
    expect(a.counters.probeHellos - before.probes).toBe(1);
  });

  it('finds a session by CLIENT-LOG-ID when a request carries no cookie, and only a log id it saw (logIdSessions)', async () => {
    const logId = '6f9619ff-8b86-4011-b42d-00c04fc964ff';
    const byLogId = (xml: string, id = logId) => postBroker({ host: a.host, port: a.brokerPort }, { name: 'u', localAddress: undefined, requestTimeoutMs: 5000 }, xml, id, undefined);
    await byLogId(requests.hello('h'));
    const hits = a.counters.logIdSessionHits;
    expect((await byLogId(requests.authenticate('alice', 'secret', 'd'))).answer.resultId).toBe('AUTH_SUCCESSFUL_AND_COMPLETE');
    expect((await byLogId(requests.getResourceList())).answer.resultId).toBe('LIST_SUCCESSFUL');
    expect(a.counters.logIdSessionHits - hits).toBe(2);
    const unknown = await byLogId(requests.getResourceList(), '00000000-0000-4000-8000-000000000000');
    expect([unknown.status, unknown.answer.resultId]).toEqual([401, 'NOT_AUTHENTICATED']);
    expect(unknown.answer.resultStr).toContain('CLIENT-LOG-ID unknown to this Connector');
    expect((await byLogId(requests.bye())).answer.name).toBe('bye-resp');
    expect((await byLogId(requests.getResourceList())).answer.resultId).toBe('NOT_AUTHENTICATED');
  });

  it("with setCookieSpelling: set-cookie, a strict client ignores the cookie and says why", async () => {
    const [c] = await startSimPool([{ id: 'conn-l', host: '127.0.1.4' }], { setCookieSpelling: 'set-cookie' });
    try {
      const failure = await establishSession({ name: 'u', localAddress: undefined, requestTimeoutMs: 5000 }, { broker: { host: c!.host, port: c!.brokerPort } }).catch((e: unknown) => e);
      expect(failure).toBeInstanceOf(SessionFailure);
      expect((failure as SessionFailure).message).toBe('hello: cookie header not spelled "Set-Cookie" (PCoIP clients ignore any other spelling)');
      // A client that relies on CLIENT-LOG-ID gets through (the broker authors' fallback).
      const session = await establishSession(
        { name: 'u', localAddress: undefined, requestTimeoutMs: 5000, behaviour: { probe: true, connection: 'keep-alive', cookies: 'none', logIdHeader: 'CLIENT-LOG-ID' } },
        { broker: { host: c!.host, port: c!.brokerPort } },
      );
      session.control.destroy();
      expect(session.connectorId).toBe('conn-l');
    } finally {
      await c!.stop();
    }
  });

  it('a keep-alive client sends probe + five requests on one TLS connection; a per-request client opens one each', async () => {
    const target = { broker: { host: b.host, port: b.brokerPort } };
    const keep = await establishSession({ name: 'k', localAddress: undefined, requestTimeoutMs: 5000, behaviour: { probe: true, connection: 'keep-alive', cookies: 'jar', logIdHeader: 'CLIENT-LOG-ID' } }, target);
    const each = await establishSession({ name: 'p', localAddress: undefined, requestTimeoutMs: 5000 }, target);
    keep.control.destroy();
    each.control.destroy();
    expect(keep.broker).toEqual({ requests: 6, connections: 1 });
    expect(each.broker).toEqual({ requests: 5, connections: 5 });
  });

  it('admits its own connect tag once with the session SPI; rejects a foreign tag, a reused tag and garbage, then closes', async () => {
    const { target } = await allocate(a);

    const foreign = await tagAttempt(b, target.connectTag);
    expect(parseTagAnswer(foreign.line)).toMatchObject({ ok: false, connectorId: 'conn-b', code: 'unknown-tag' });
    await once(foreign.socket, 'close');

    const own = await tagAttempt(a, target.connectTag, false, target.sni);
    const admitted = parseTagAnswer(own.line);
    expect(admitted).toMatchObject({ ok: true, connectorId: 'conn-a', sessionId: target.sessionId });

    const reused = await tagAttempt(a, target.connectTag);
    expect(parseTagAnswer(reused.line)).toMatchObject({ ok: false, connectorId: 'conn-a', code: 'reused-tag' });
    await once(reused.socket, 'close');

    const garbage = await tagAttempt(a, 'GET / HTTP/1.0\r\n', true);
    expect(parseTagAnswer(garbage.line)).toMatchObject({ ok: false, connectorId: 'conn-a', code: 'bad-request' });
    await once(garbage.socket, 'close');
    own.socket.destroy();
  });

  it('expires a connect tag 60 s after allocation (injected clock)', async () => {
    const first = await allocate(a);
    const second = await allocate(a);
    clock += 59_999;
    const inTime = await tagAttempt(a, first.target.connectTag);
    expect(parseTagAnswer(inTime.line)).toMatchObject({ ok: true, connectorId: 'conn-a' });
    clock += 2;
    const late = await tagAttempt(a, second.target.connectTag);
    expect(parseTagAnswer(late.line)).toMatchObject({ ok: false, code: 'expired-tag' });
    expect(late.line).toContain('60001 ms old');
    inTime.socket.destroy();
  });

  it('echoes UDP only for an admitted session, with its own sequence numbers; drops unknown SPIs and short datagrams', async () => {
    const { target } = await allocate(a);
    const control = await tagAttempt(a, target.connectTag);
    const answer = parseTagAnswer(control.line);
    if (!answer?.ok) throw new Error(`not admitted: ${control.line}`);
    const spi = answer.spi;
    const unknownSpi = (spi ^ 0x5a5a5a5a) >>> 0;
    const udp = await udpSocket();
    const counters = { ...a.counters };

    // The unknown-SPI and short datagrams go first; the first reply must still be the valid one's echo.
    udp.send(pcoipPacket(unknownSpi, 1), a.pcoipPort, a.host);
    udp.send(Buffer.alloc(8), a.pcoipPort, a.host);
    udp.send(pcoipPacket(spi, 41, 1200), a.pcoipPort, a.host);
    const echo1 = await nextDatagram(udp);
    udp.send(pcoipPacket(spi, 42, 1200), a.pcoipPort, a.host);
    const echo2 = await nextDatagram(udp);

    expect(echo1.length).toBe(1200);
    // The echo leaves on the Connector's own SA: its SPI (not the client's), its sequence numbers.
    expect(answer.replySpi).not.toBe(spi);
    expect([echo1.readUInt32BE(OFFSET_SPI), echo1.readUInt32BE(OFFSET_SEQ), echo1.readUInt32BE(OFFSET_CLIENT_SEQ)]).toEqual([answer.replySpi, 1, 41]);
    expect([echo2.readUInt32BE(OFFSET_SEQ), echo2.readUInt32BE(OFFSET_CLIENT_SEQ)]).toEqual([2, 42]);
    expect(a.counters.udpUnknownSpi - counters.udpUnknownSpi).toBe(1);
    expect(a.counters.udpMalformed - counters.udpMalformed).toBe(1);
    expect(a.sawUnknownSpi(unknownSpi)).toBe(true);
    expect(a.sawUnknownSpi(spi)).toBe(false);

    // Once the 4172/TCP control connection ends, the session's SPI is no longer answered.
    const admittedBefore = a.admittedSessions;
    control.socket.end();
    await waitUntil(() => a.admittedSessions === admittedBefore - 1, 3000, 'session released');
    const unknownBefore = a.counters.udpUnknownSpi;
    udp.send(pcoipPacket(spi, 43), a.pcoipPort, a.host);
    await waitUntil(() => a.counters.udpUnknownSpi === unknownBefore + 1, 3000, 'datagram counted as unknown');
    expect(a.counters.udpOut - counters.udpOut).toBe(2);
    udp.close();
  });
});
