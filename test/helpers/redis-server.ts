import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A real `redis-server` (Debian's package; .ci/run installs it) for tests: loopback only, a free
 * port, its own temporary directory, persistence off (`--save '' --appendonly no`) so a restart
 * starts empty, as a crashed store without persistence would. It can be stopped (SIGTERM),
 * killed (SIGKILL), paused (SIGSTOP: a store that hangs or is partitioned) and restarted on the
 * same port. Extra arguments add a password, ACL users or TLS.
 */
export const REDIS_SERVER = '/usr/bin/redis-server';

export function redisServerAvailable(): boolean {
  return existsSync(REDIS_SERVER);
}

export interface RedisServerOptions {
  host?: string;
  /** Extra command-line arguments (`--requirepass x`, `--user …`, TLS options). */
  args?: string[];
  /** Serve TLS on the port instead of plain TCP (needs `args` with the certificate files). */
  tls?: boolean;
}

export class RedisServer {
  readonly host: string;
  port = 0;
  readonly dir: string;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private readonly options: RedisServerOptions;
  /** What the server printed (for failure messages). */
  output = '';

  constructor(options: RedisServerOptions = {}) {
    this.options = options;
    this.host = options.host ?? '127.0.0.1';
    this.dir = mkdtempSync(join(tmpdir(), 'i10-redis-'));
  }

  get url(): string {
    return `${this.options.tls ? 'rediss' : 'redis'}://${this.host}:${this.port}`;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts on a free port (first start) or on the same port again (restart). */
  async start(timeoutMs = 10_000): Promise<void> {
    if (this.running) throw new Error('redis-server already running');
    for (let attempt = 0; ; attempt++) {
      if (this.port === 0 || attempt > 0) this.port = await freePort(this.host);
      try {
        await this.spawnOnce(timeoutMs);
        return;
      } catch (err) {
        // Another process took the port between probe and bind: try another (a restart keeps its port only once).
        if (attempt >= 3 || !/Address already in use/.test(this.output)) throw err;
      }
    }
  }

  private spawnOnce(timeoutMs: number): Promise<void> {
    const portArgs = this.options.tls ? ['--port', '0', '--tls-port', String(this.port)] : ['--port', String(this.port)];
    const args = ['--bind', this.host, ...portArgs, '--dir', this.dir, '--save', '', '--appendonly', 'no', '--loglevel', 'notice', ...(this.options.args ?? [])];
    this.output = '';
    const child = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`redis-server not ready within ${timeoutMs} ms:\n${this.output}`)), timeoutMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(err);
      };
      const onData = (d: Buffer) => {
        this.output += d.toString();
        if (/Ready to accept connections/.test(this.output)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code, signal) => fail(new Error(`redis-server exited (${code ?? signal}) before it was ready:\n${this.output}`)));
    });
  }

  /** SIGTERM and wait (a clean shutdown; connections see FIN). */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.child!.kill('SIGTERM');
    await this.exited;
  }

  /** SIGKILL and wait (a crash; nothing is flushed). */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.child!.kill('SIGKILL');
    await this.exited;
  }

  /** SIGSTOP: the server holds its connections open and answers nothing (a hang or a partition). */
  pause(): void {
    if (this.running) this.child!.kill('SIGSTOP');
  }

  resume(): void {
    if (this.running) this.child!.kill('SIGCONT');
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.start();
  }

  /** Runs redis-cli against this server (test set-up: garbage values, inspection). */
  cli(...args: string[]): string {
    const tls = this.options.tls ? ['--tls', '--insecure'] : [];
    const r = spawnSync('redis-cli', ['-h', this.host, '-p', String(this.port), ...tls, '--no-auth-warning', ...args], { encoding: 'utf8', timeout: 5000 });
    if (r.status !== 0) throw new Error(`redis-cli ${args.join(' ')} failed: ${r.stderr}`);
    return r.stdout.trim();
  }

  /** Kills the server if running and removes its directory (for afterAll/afterEach). */
  async cleanup(): Promise<void> {
    this.resume();
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A port nothing listens on right now (bound to 0 and released). */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
