import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpsServer, get as httpsGet } from 'node:https';
import { createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A TLS stand-in for a Connector's broker port: `GET /health` answers per the HP contract
 * (200 `{"status":"success"}` or 500 with a reason, switchable, or never), any other path
 * answers `<id>\n` so a test can tell, through the proxy, which Connector a 443 flow reached.
 * The certificate is self-signed, made by `openssl req` once per test process, valid for
 * 127.0.0.1, 127.0.1.1-127.0.1.40 and localhost.
 */
export interface TestCertificate {
  cert: string;
  key: string;
  certFile: string;
}

let certificates: Map<string, TestCertificate> | undefined;

/** A self-signed certificate; different `name`s give unrelated certificates (for a wrong-CA test). */
export function testCertificate(name = 'pcoip-lb-test'): TestCertificate {
  certificates ??= new Map();
  const cached = certificates.get(name);
  if (cached) return cached;
  const dir = mkdtempSync(join(tmpdir(), 'plb-cert-'));
  const ips = ['127.0.0.1', ...Array.from({ length: 40 }, (_, i) => `127.0.1.${i + 1}`)];
  const san = ['DNS:localhost', ...ips.map((ip) => `IP:${ip}`)].join(',');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-addext', `subjectAltName=${san}`, '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')],
    { stdio: 'ignore' },
  );
  const cert = { cert: readFileSync(join(dir, 'cert.pem'), 'utf8'), key: readFileSync(join(dir, 'key.pem'), 'utf8'), certFile: join(dir, 'cert.pem') };
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  certificates.set(name, cert);
  return cert;
}

export type HealthMode = { kind: 'ok' } | { kind: 'error'; reason: string } | { kind: 'hang' };

export interface HttpsBroker {
  readonly id: string;
  readonly host: string;
  readonly port: number;
  /** `/health` requests answered or held so far. */
  healthRequests: number;
  setHealth(mode: HealthMode): void;
  close(): Promise<void>;
}

export async function startHttpsBroker(id: string, host: string): Promise<HttpsBroker> {
  const { cert, key } = testCertificate();
  let mode: HealthMode = { kind: 'ok' };
  const sockets = new Set<Socket>();
  const broker: HttpsBroker = {
    id,
    host,
    port: 0,
    healthRequests: 0,
    setHealth: (m) => {
      mode = m;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = createHttpsServer({ cert, key }, (req, res) => {
    if (req.url === '/health') {
      broker.healthRequests++;
      if (mode.kind === 'hang') return; // never answer: the check must give up at its timeout
      const body = mode.kind === 'ok' ? { code: 200, status: 'success' } : { code: 500, status: 'Error', reason: mode.reason };
      res.writeHead(body.code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain', connection: 'close' });
    res.end(`${id}\n`);
  });
  server.on('secureConnection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: 0 }, () => resolve());
  });
  (broker as { port: number }).port = (server.address() as { port: number }).port;
  return broker;
}

/** HTTPS GET through the proxy's broker listener from a chosen client address; returns the Connector id that answered. */
export function httpsWhoami(port: number, localAddress: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpsGet({ host: '127.0.0.1', port, path: '/whoami', localAddress, rejectUnauthorized: false, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(body.trim()));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** A TCP port that can stop and start accepting (a Connector's 4172 whose Security Gateway died and came back). */
export interface TcpGate {
  readonly port: number;
  stopAccepting(): Promise<void>;
  startAccepting(): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpGate(host: string): Promise<TcpGate> {
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      const s = createTcpServer((socket) => {
        sockets.add(socket);
        socket.on('close', () => sockets.delete(socket));
        socket.on('error', () => socket.destroy());
        socket.write('gate\n');
      });
      s.once('error', reject);
      s.listen({ host, port }, () => {
        server = s;
        resolve((s.address() as { port: number }).port);
      });
    });
  const stop = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      if (!server) return resolve();
      server.close(() => resolve());
      server = undefined;
    });
  const port = await listen(0);
  return { port, stopAccepting: stop, startAccepting: async () => void (await listen(port)), close: stop };
}
