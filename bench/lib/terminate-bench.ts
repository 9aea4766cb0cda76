/**
 * pcoip-lb with a terminating broker listener in a child process, in front of simulated
 * Connectors (in this process), for the hostile-client benches (bench/broker-flood.ts,
 * bench/broker-pingpong.ts). The child's heap limit is set (--max-old-space-size) so a memory
 * blow-up shows as the child dying, as it would in production; its RSS is read from /proc.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { SimConnector } from '../../src/sim/connector.ts';
import { simSpecs, startSimPool } from '../../src/sim/pool.ts';
import { generateCertificate } from '../../src/sim/certs.ts';
import { Http1Framer } from '../../src/proxy/http1-framing.ts';
import type { ListenerAddresses } from '../../src/app.ts';
import { cpuSecondsOfTree, rssBytes } from './proc.ts';

export interface TerminateBench {
  sims: SimConnector[];
  pid: number;
  addresses: Required<ListenerAddresses>;
  /** The child exited (e.g. out of heap): its exit code / signal and when. */
  exited: { code: number | null; signal: string | null; atMs: number } | undefined;
  rss(): number | undefined;
  cpuSeconds(): number;
  /** What the child's App has learned (sessions table) and its heap, when it still answers. */
  stats(): Promise<ProxyStats | undefined>;
  stop(): Promise<void>;
}

export interface ProxyStats {
  heapUsed: number;
  rss: number;
  /** Memory outside the V8 heap (Buffers, TLS): process.memoryUsage().external. */
  external: number;
  sessions: { cookies: number; logIds: number; allocations: number };
  sessionBytes?: Record<string, number>;
  brokerEvents?: Record<string, number>;
}

export async function startTerminateBench(options: { connectors: number; heapMb: number; logLevel?: string; broker?: Record<string, unknown>; extraConnectors?: unknown[] }): Promise<TerminateBench> {
  const sims = await startSimPool(simSpecs(options.connectors));
  const dir = await mkdtemp(join(tmpdir(), 'pcoip-lb-bench-terminate-'));
  const pair = await generateCertificate('pcoip-lb.bench.invalid', ['127.0.0.1']);
  await writeFile(join(dir, 'broker.crt'), pair.cert);
  await writeFile(join(dir, 'broker.key'), pair.key, { mode: 0o600 });
  const started = Date.now();
  const child: ChildProcess = fork(new URL('./sessions-proxy-process.ts', import.meta.url), {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv: [...process.execArgv, `--max-old-space-size=${options.heapMb}`],
  });
  const bench: TerminateBench = {
    sims,
    pid: child.pid!,
    addresses: undefined as unknown as Required<ListenerAddresses>,
    exited: undefined,
    rss: () => rssBytes(child.pid!),
    cpuSeconds: () => cpuSecondsOfTree(child.pid!),
    stats: async () => {
      if (bench.exited || !child.connected) return undefined;
      child.send({ type: 'stats' });
      const reply = await Promise.race([once(child, 'message') as Promise<[ProxyStats & { type: string }]>, new Promise<undefined>((r) => setTimeout(() => r(undefined), 5000).unref())]);
      return reply?.[0];
    },
    stop: async () => {
      if (!bench.exited && child.connected) {
        child.send({ type: 'stop' });
        await Promise.race([once(child, 'exit'), new Promise((r) => setTimeout(r, 10_000).unref())]);
      }
      if (!bench.exited) child.kill('SIGKILL');
      await Promise.all(sims.map((s) => s.stop()));
      await rm(dir, { recursive: true, force: true });
    },
  };
  child.once('exit', (code, signal) => (bench.exited = { code, signal, atMs: Date.now() - started }));
  child.send({
    type: 'start',
    logLevel: options.logLevel ?? 'warn',
    config: {
      listeners: {
        broker: {
          bind: '127.0.0.1:0',
          tls: { mode: 'terminate', certificates: [{ cert: join(dir, 'broker.crt'), key: join(dir, 'broker.key') }], upstream: { insecure: true } },
          ...options.broker,
        },
        pcoipTcp: { bind: '127.0.0.1:0' },
        pcoipUdp: { bind: '127.0.0.1:0' },
      },
      connectors: [...sims.map((s) => s.connectorConfig()), ...(options.extraConnectors ?? [])],
      admin: { enabled: false },
      workers: 1,
    },
  });
  const [reply] = (await once(child, 'message')) as [{ type: string; addresses?: Required<ListenerAddresses>; message?: string }];
  if (reply.type !== 'started' || !reply.addresses) throw new Error(`pcoip-lb did not start: ${reply.message ?? reply.type}`);
  bench.addresses = reply.addresses;
  return bench;
}

/**
 * A raw TLS client on one keep-alive connection that keeps `depth` requests in flight and counts
 * complete responses (framed with pcoip-lb's own HTTP/1.1 framer, response mode).
 */
export class PipelinedClient {
  responses = 0;
  sent = 0;
  closed = false;
  private readonly socket: TLSSocket;
  private readonly framer = new Http1Framer('response', { maxHeaderBytes: 1 << 20, maxHeaderCount: 1000 });
  private readonly next: () => Buffer;
  private readonly method: string;
  private running = true;

  private constructor(socket: TLSSocket, next: () => Buffer, method: string) {
    this.socket = socket;
    this.next = next;
    this.method = method;
  }

  static async open(port: number, localAddress: string, next: () => Buffer, options: { method: string; depth: number }): Promise<PipelinedClient> {
    const tcp = netConnect({ host: '127.0.0.1', port, localAddress });
    tcp.on('error', () => undefined);
    const socket = tlsConnect({ socket: tcp, servername: 'pcoip-lb.bench.invalid', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
    await once(socket, 'secureConnect');
    socket.on('error', () => undefined);
    const client = new PipelinedClient(socket, next, options.method);
    socket.on('data', (chunk: Buffer) => client.onData(chunk));
    socket.on('close', () => (client.closed = true));
    for (let i = 0; i < options.depth; i++) client.send();
    return client;
  }

  stop(): void {
    this.running = false;
    this.socket.destroy();
  }

  private send(): void {
    if (!this.running || this.closed) return;
    this.framer.expectResponseTo(this.method);
    this.sent++;
    this.socket.write(this.next());
  }

  private onData(chunk: Buffer): void {
    for (const e of this.framer.push(chunk)) {
      if (e.type === 'end') {
        this.responses++;
        this.send();
      } else if (e.type === 'error') this.stop();
    }
  }
}

/** A request with an exact Content-Length (or none), headers as given. */
export function httpRequest(method: string, path: string, headers: Record<string, string>, body = ''): Buffer {
  const lines = [`${method} ${path} HTTP/1.1`, 'Host: pcoip-lb.bench.invalid', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  if (body !== '' || method === 'POST') lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n${body}`);
}
