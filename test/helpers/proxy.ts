import { Writable } from 'node:stream';
import { configSchema, type Config, type ConnectorConfig } from '../../src/config/schema.ts';
import { createLogger } from '../../src/logger.ts';
import { App, type ListenerAddresses } from '../../src/app.ts';

/** Log lines a test can inspect (pino JSON, parsed). */
export class LogCapture extends Writable {
  readonly lines: Array<Record<string, unknown>> = [];
  private waiters: Array<{ match: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }> = [];

  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    for (const text of chunk.toString('utf8').split('\n')) {
      if (!text) continue;
      const line = JSON.parse(text) as Record<string, unknown>;
      this.lines.push(line);
      this.waiters = this.waiters.filter((w) => (w.match(line) ? (w.resolve(line), false) : true));
    }
    done();
  }

  /** Resolves with the first line (past or future) that matches; rejects after `timeoutMs`. */
  waitFor(match: (l: Record<string, unknown>) => boolean, timeoutMs = 5000): Promise<Record<string, unknown>> {
    const found = this.lines.find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no matching log line within timeout')), timeoutMs);
      this.waiters.push({ match, resolve: (l) => (clearTimeout(timer), resolve(l)) });
    });
  }
}

export interface TestProxy {
  app: App;
  addresses: Required<ListenerAddresses>;
  /** `http://127.0.0.1:PORT` of the admin server (empty when admin.enabled is false). */
  adminUrl: string;
  logs: LogCapture;
  stop(): Promise<void>;
}

/**
 * Builds a validated config with all three listeners on 127.0.0.1 port 0 in front of the given Connectors.
 * The admin server also binds port 0, and active health checks are off (`health.checks: []`)
 * unless `extra` says otherwise: the plain-TCP fake Connectors have no HTTPS /health.
 */
export function testConfig(connectors: ConnectorConfig[], extra: Record<string, unknown> = {}): Config {
  return configSchema.parse({
    listeners: {
      broker: { bind: '127.0.0.1:0' },
      pcoipTcp: { bind: '127.0.0.1:0' },
      pcoipUdp: { bind: '127.0.0.1:0' },
    },
    connectors,
    logging: { level: 'debug' },
    health: { checks: [] },
    admin: { bind: '127.0.0.1:0' },
    ...extra,
  });
}

export async function startTestProxy(config: Config): Promise<TestProxy> {
  const logs = new LogCapture();
  const app = new App(config, createLogger('debug', logs));
  const addresses = (await app.start()) as Required<ListenerAddresses>;
  const admin = app.adminAddress;
  return { app, addresses, adminUrl: admin ? `http://127.0.0.1:${admin.port}` : '', logs, stop: () => app.stop(0) };
}
