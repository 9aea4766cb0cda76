import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import type { App } from '../app.ts';
import { ErrorCodes, PlbError } from '../errors.ts';
import { formatHostPort, type HostPort } from '../util/address.ts';
import { buildStatus } from './status.ts';

/**
 * A minimal admin HTTP server: `GET /status` (JSON). It serves loopback only: the status shows
 * the pool's layout, and this server has no authentication yet.
 */

export interface AdminServer {
  readonly address: AddressInfo;
  close(): Promise<void>;
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

export async function startAdminServer(app: App, bind: HostPort): Promise<AdminServer> {
  const where = formatHostPort(bind.host, bind.port);
  if (!isLoopback(bind.host)) {
    throw new PlbError(ErrorCodes.ADMIN_TOKEN_REQUIRED, `admin: refusing to serve on ${where}: only loopback addresses are allowed without a token`);
  }
  const server = createServer((req, res) => handle(app, req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new PlbError(ErrorCodes.LISTEN, `admin: cannot listen on ${where}: ${err.code ?? err.message}`, [], { cause: err })),
    );
    server.listen({ host: bind.host, port: bind.port }, () => resolve());
  });
  return {
    address: server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function handle(app: App, req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0];
  if (path !== '/status') return json(res, 404, { error: `no such path: ${path}`, code: ErrorCodes.ADMIN_REQUEST });
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    return json(res, 405, { error: `use GET for ${path}`, code: ErrorCodes.ADMIN_REQUEST });
  }
  json(res, 200, buildStatus(app));
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : text);
}
