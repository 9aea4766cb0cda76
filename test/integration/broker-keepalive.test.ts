import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTerminateLab, type TerminateLab } from '../helpers/terminate-lab.ts';
import { brokerCall, openBrokerClient, resultId, setCookieValue } from '../helpers/broker-client.ts';
import { rawRequest } from '../helpers/raw-http.ts';
import { clientRequest, simpleResp } from '../helpers/broker-xml.ts';
import { xmlResponse } from '../helpers/fake-broker.ts';

/**
 * Keep-alive clients (several requests on one TLS connection, as the open-source PCoIP client
 * sends them) whose requests belong to different Connectors: BrokerConnection switches upstreams
 * mid-stream (waits for the current Connector's answers, then changes), with pipelining, with
 * bytes arriving from an upstream it is done with, and a client ping-ponging its cookie.
 * Client addresses 127.0.14.100-199 (this file only).
 */
describe('terminate mode: one keep-alive client connection, two Connectors', () => {
  let lab: TerminateLab;
  const cookies = new Map<string, string>();

  beforeAll(async () => {
    lab = await startTerminateLab({ ids: ['conn-a', 'conn-b'] });
    // A session on each Connector: hello from addresses until the address hash gave us both.
    for (let i = 0; i < 60 && cookies.size < 2; i++) {
      const cookie = setCookieValue(await brokerCall(port(), `127.0.14.${100 + i}`, 'hello'))!;
      cookies.set(cookie.split('-s')[0]!, cookie);
    }
    expect([...cookies.keys()].sort()).toEqual(['conn-a', 'conn-b']);
  });

  afterAll(async () => {
    await lab.close();
  });

  const port = () => lab.proxy.addresses.broker.port;
  const to = (id: string, message: Parameters<typeof clientRequest>[0], path = '/pcoip-broker/xml') =>
    rawRequest(path, clientRequest(message), { Cookie: `JSESSIONID=${cookies.get(id)}`, Connection: 'Keep-Alive' });
  const connections = () => Object.fromEntries(lab.brokers.map((b) => [b.id, b.connections]));
  const delta = (before: Record<string, number>) => Object.fromEntries(Object.entries(connections()).map(([id, n]) => [id, n - before[id]!]));

  it('answers pipelined requests for two Connectors in order, switching mid-stream, each on its own Connector', async () => {
    const before = connections();
    const client = await openBrokerClient(port(), '127.0.14.170');
    const order: Array<[string, Parameters<typeof clientRequest>[0]]> = [
      ['conn-a', 'authenticate'],
      ['conn-a', 'get-resource-list'],
      ['conn-b', 'authenticate'],
      ['conn-a', 'bye'],
      ['conn-b', 'get-resource-list'],
      ['conn-b', 'bye'],
    ];
    // All six in one write: the relay must hold requests 3-6 until each switch is safe.
    client.socket.write(Buffer.concat(order.map(([id, m]) => to(id, m))));
    const results: string[] = [];
    for (let i = 0; i < order.length; i++) results.push(resultId((await client.reader.next())!) ?? '?');
    // A request that reached the other Connector would get NOT_AUTHENTICATED (its cookie is unknown there).
    expect(results).toEqual(order.map(() => 'OK'));
    const seen = lab.brokers.flatMap((b) => b.requests.slice(-3).map((r) => `${b.id}:${/<(\w[\w-]*)\/>/.exec(r.body)?.[1]}`));
    expect(seen.sort()).toEqual(order.map(([id, m]) => `${id}:${m}`).sort());
    // One upstream per Connector for the whole client connection (kept while idle, reused on switching back).
    expect(delta(before)).toEqual({ 'conn-a': 1, 'conn-b': 1 });
    client.close();
  });

  it.each([
    ['right behind its answer (same read)', 0],
    ['50 ms later, on the idle keep-alive', 50],
  ])("never frames bytes from an upstream it switched away from as the live exchange's answer (no 502): a 408 %s", async (_when, delayMs) => {
    const a = lab.byId('conn-a');
    const b = lab.byId('conn-b');
    // conn-a answers, then says 408 on the keep-alive and closes it (as Tomcat and nginx do on an
    // idle timeout); conn-b takes 300 ms to answer the next request, which by then is in flight.
    const late = Buffer.from('HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    a.script = (req) => {
      if (!req.path.endsWith('case=then-408')) return undefined;
      const answer = Buffer.concat(xmlResponse(simpleResp('authenticate-resp')));
      return delayMs === 0 ? [Buffer.concat([answer, late]), 'end'] : [answer, delayMs, late, 'end'];
    };
    b.script = (req) => (req.path.endsWith('case=slow') ? [300, ...xmlResponse(simpleResp('get-resource-list-resp'))] : undefined);
    try {
      const client = await openBrokerClient(port(), '127.0.14.171');
      client.socket.write(Buffer.concat([to('conn-a', 'authenticate', '/pcoip-broker/xml?case=then-408'), to('conn-b', 'get-resource-list', '/pcoip-broker/xml?case=slow')]));
      const first = (await client.reader.next())!;
      const second = (await client.reader.next())!;
      expect([first.startLine, resultId(first)]).toEqual(['HTTP/1.1 200 OK', 'OK']);
      expect([second.startLine, second.body.toString()]).toEqual(['HTTP/1.1 200 OK', simpleResp('get-resource-list-resp')]);
      // The connection is still good: conn-a again (a new upstream, the old one was closed).
      expect(resultId((await client.exchange(to('conn-a', 'get-resource-list')))!)).toBe('OK');
      expect(resultId((await client.exchange(to('conn-b', 'bye')))!)).toBe('OK');
      expect(lab.proxy.logs.lines.some((l) => l.client === '127.0.14.171' && (l.reason === 'bad-response' || l.msg === 'malformed HTTP response from Connector'))).toBe(false);
      client.close();
    } finally {
      a.script = undefined;
      b.script = undefined;
    }
  });

  it('draining a Connector closes the idle upstream a keep-alive connection kept to it, so the Connector reads as drained', async () => {
    const client = await openBrokerClient(port(), '127.0.14.175');
    try {
      expect(resultId((await client.exchange(to('conn-a', 'get-resource-list')))!)).toBe('OK');
      expect(resultId((await client.exchange(to('conn-b', 'get-resource-list')))!)).toBe('OK');
      // Current upstream conn-b; the one to conn-a is kept, idle, and counts as a broker flow of conn-a.
      const brokerFlows = (id: string) => lab.proxy.app.stats.counters(id).broker.active;
      expect(brokerFlows('conn-a')).toBe(1);
      lab.proxy.app.pool.setState('conn-a', 'drain');
      const until = Date.now() + 3000;
      while (brokerFlows('conn-a') > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      expect(brokerFlows('conn-a')).toBe(0);
      // The client's connection is untouched: its next request still reaches conn-b.
      expect(resultId((await client.exchange(to('conn-b', 'get-resource-list')))!)).toBe('OK');
    } finally {
      lab.proxy.app.pool.setState('conn-a', 'active');
      client.close();
    }
  });

  it('a client ping-ponging its cookie costs no new TLS connection per request', async () => {
    const before = connections();
    const client = await openBrokerClient(port(), '127.0.14.172');
    for (let i = 0; i < 20; i++) {
      const id = i % 2 === 0 ? 'conn-a' : 'conn-b';
      expect(resultId((await client.exchange(to(id, 'get-resource-list')))!), `request ${i} (${id})`).toBe('OK');
    }
    expect(delta(before)).toEqual({ 'conn-a': 1, 'conn-b': 1 });
    client.close();
  });

  it('re-opening to the same Connector after it closed an idle keep-alive is never limited', async () => {
    for (const b of lab.brokers) b.script = (req) => (req.path.endsWith('case=end') ? [...xmlResponse(simpleResp('get-resource-list-resp')), 'end'] : undefined);
    try {
      const client = await openBrokerClient(port(), '127.0.14.174');
      for (let i = 0; i < 24; i++) expect((await client.exchange(to('conn-a', 'get-resource-list', '/pcoip-broker/xml?case=end'))).startLine, `request ${i}`).toBe('HTTP/1.1 200 OK');
      client.close();
    } finally {
      for (const b of lab.brokers) b.script = undefined;
    }
  });

  it('a client that makes the relay open more than 16 upstreams to switch Connectors gets 421 and its connection closes', async () => {
    // Connectors that end every keep-alive after answering force a new upstream per switch.
    for (const b of lab.brokers) b.script = (req) => (req.path.endsWith('case=end') ? [...xmlResponse(simpleResp('get-resource-list-resp')), 'end'] : undefined);
    try {
      const client = await openBrokerClient(port(), '127.0.14.173');
      const statuses: string[] = [];
      // The first request opens the first upstream; each of the next 16 is a switch that needs a new one.
      for (let i = 0; i < 18; i++) {
        const reply = await client.exchange(to(i % 2 === 0 ? 'conn-a' : 'conn-b', 'get-resource-list', '/pcoip-broker/xml?case=end'));
        statuses.push(reply.startLine);
      }
      expect(statuses.slice(0, 17)).toEqual(Array(17).fill('HTTP/1.1 200 OK'));
      expect(statuses[17]).toBe('HTTP/1.1 421 Misdirected Request');
      await client.reader.untilEnd(3000);
      await lab.proxy.logs.waitFor((l) => l.client === '127.0.14.173' && l.code === 'PLB_E_CONNECTION_LIMIT');
    } finally {
      for (const b of lab.brokers) b.script = undefined;
    }
  });
});
