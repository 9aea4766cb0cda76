import { createServer, type Server, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { RawReader, chunked, type RawMessage } from './raw-http.ts';
import { allocateResourceResp, simpleResp } from './broker-xml.ts';
import type { TestCert } from './tls-fixtures.ts';

/**
 * A minimal TLS broker standing in for a Connector's :443 in tests. It speaks raw bytes the test
 * controls. By default it behaves like a Connector's broker in the ways that matter for affinity:
 * `hello` issues a JSESSIONID it made (Set-Cookie, spelled so, chunked body); every later request
 * must carry a JSESSIONID this broker issued, or it answers NOT_AUTHENTICATED — so a request that
 * the proxy sent to the wrong Connector fails visibly. `allocate-resource` answers with an
 * allocation whose sni names this broker. A test can replace the answer with `script`.
 */
export interface BrokerRequest {
  path: string;
  cookie: string | undefined;
  logId: string | undefined;
  body: string;
  raw: Buffer;
}

export interface Allocated {
  sessionId: string;
  sni: string;
  connectTag: string;
}

/**
 * A scripted answer: pieces written in order, where a number waits that many ms first and 'end'
 * half-closes the connection (a Connector ending an idle keep-alive); 'close' destroys it without
 * answering; undefined: the default answer.
 */
export type Script = (req: BrokerRequest) => Array<Buffer | number | 'end'> | 'close' | undefined;

export interface FakeBroker {
  id: string;
  host: string;
  port: number;
  requests: BrokerRequest[];
  allocations: Allocated[];
  /** Bytes this broker wrote on each connection, in order (to compare with what clients got). */
  written: Buffer[];
  connections: number;
  /** Connections open right now. */
  readonly openConnections: number;
  script: Script | undefined;
  /** When set, allocate-resource answers reuse this connect tag (replay/duplicate testing). */
  fixedConnectTag: string | undefined;
  close(): Promise<void>;
}

export async function startFakeBroker(id: string, host: string, cert: TestCert): Promise<FakeBroker> {
  const sockets = new Set<TLSSocket>();
  let sessionCounter = 0;
  const issued = new Set<string>();
  const broker: FakeBroker = {
    id,
    host,
    port: 0,
    requests: [],
    allocations: [],
    written: [],
    connections: 0,
    get openConnections() {
      return sockets.size;
    },
    script: undefined,
    fixedConnectTag: undefined,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };

  const answer = (req: BrokerRequest): Array<Buffer | number | 'end'> | 'close' => {
    const scripted = broker.script?.(req);
    if (scripted !== undefined) return scripted;
    if (req.body.includes('<hello')) {
      const sid = `${id}-s${++sessionCounter}`;
      issued.add(sid);
      return xmlResponse(simpleResp('hello-resp'), [`Set-Cookie: JSESSIONID=${sid}; Path=/pcoip-broker; Secure; HttpOnly`]);
    }
    if (!req.cookie || !issued.has(req.cookie)) return xmlResponse(simpleResp('authenticate-resp', 'NOT_AUTHENTICATED'));
    if (req.body.includes('<allocate-resource')) {
      const a: Allocated = { sessionId: `${req.cookie}-pcoip`, sni: `${req.cookie}.${id}.sessions.example`, connectTag: broker.fixedConnectTag ?? `tag-${req.cookie}-${Math.random().toString(36).slice(2)}` };
      broker.allocations.push(a);
      return xmlResponse(allocateResourceResp({ ipAddress: host, sni: a.sni, port: 4172, sessionId: a.sessionId, connectTag: a.connectTag }));
    }
    const name = /<(authenticate|get-resource-list|bye)\b/.exec(req.body)?.[1] as 'authenticate' | 'get-resource-list' | 'bye' | undefined;
    return xmlResponse(simpleResp(`${name ?? 'bye'}-resp`, 'OK'));
  };

  const server: Server = createServer({ cert: cert.cert, key: cert.key, ALPNProtocols: ['http/1.1'] }, (socket) => {
    sockets.add(socket);
    broker.connections++;
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    const reader = new RawReader(socket);
    void (async () => {
      for (;;) {
        let msg: RawMessage | undefined;
        try {
          msg = await reader.next(60_000);
        } catch {
          socket.destroy();
          return;
        }
        if (!msg) return;
        const cookieHeader = msg.headers.get('cookie')?.[0];
        const req: BrokerRequest = {
          path: msg.startLine.split(' ')[1] ?? '',
          cookie: cookieHeader ? /(?:^|;\s*)JSESSIONID=([^;]+)/.exec(cookieHeader)?.[1] : undefined,
          logId: msg.headers.get('client-log-id')?.[0],
          body: msg.body.toString('utf8'),
          raw: msg.raw,
        };
        broker.requests.push(req);
        const out = answer(req);
        if (out === 'close') {
          socket.destroy();
          return;
        }
        for (const piece of out) {
          if (typeof piece === 'number') await new Promise((r) => setTimeout(r, piece));
          else if (piece === 'end') socket.end();
          else if (!socket.destroyed) {
            broker.written.push(piece);
            socket.write(piece);
          }
        }
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  broker.port = (server.address() as AddressInfo).port;
  return broker;
}

/** A 200 with a chunked XML body split in several chunks, headers spelled as a Connector does. */
export function xmlResponse(body: string, extraHeaders: string[] = []): Buffer[] {
  const head = ['HTTP/1.1 200 OK', 'Content-Type: text/xml; charset=UTF-8', ...extraHeaders, 'Transfer-Encoding: chunked'].join('\r\n') + '\r\n\r\n';
  // Two pieces on the wire: the head and the first chunk, then the rest.
  const encoded = chunked(body, [17, 40]);
  const cut = encoded.indexOf('\r\n', encoded.indexOf('\r\n') + 2) + 2;
  return [Buffer.from(head + encoded.slice(0, cut), 'latin1'), Buffer.from(encoded.slice(cut), 'latin1')];
}
