/**
 * A pcoip-lb App in its own process for benches that need the proxy's own numbers (RSS, flow
 * tables, affinity size) without an admin API: the bench forks this file with the config path,
 * and asks over IPC. `reload` goes through reloadFromFile, the same code SIGHUP runs.
 *   fork('bench/lib/proxy-host.ts', [configPath], { execArgv: ['--expose-gc'] })
 */
import { Writable } from 'node:stream';
import { loadConfigFile } from '../../src/config/load.ts';
import { createLogger } from '../../src/logger.ts';
import { App } from '../../src/app.ts';
import { reloadFromFile } from '../../src/control/reload.ts';

export type HostRequest = { id: number; type: 'stats' | 'reload' | 'stop' };
export interface HostStats {
  rss: number;
  heapUsed: number;
  flows: { broker: number; pcoipTcp: number; pcoipUdp: number };
  affinity: number;
  refused: Record<string, number>;
  warnLines: number;
  errorLines: number;
  infoLines: number;
}

const configPath = process.argv[2];
if (!configPath || !process.send) throw new Error('usage: fork(proxy-host.ts, [configPath])');

// Logs are counted by level and dropped: the bench measures the proxy, not the disk.
const lineCounts = { info: 0, warn: 0, error: 0 };
const sink = new Writable({
  write(chunk: Buffer, _enc, done) {
    const text = chunk.toString('latin1');
    for (let i = text.indexOf('"level":'); i >= 0; i = text.indexOf('"level":', i + 8)) {
      const digit = text.charCodeAt(i + 8); // pino: 30 info, 40 warn, 50 error
      const level = digit >= 0x35 ? 'error' : digit === 0x34 ? 'warn' : 'info';
      lineCounts[level]++;
    }
    done();
  },
});
const config = loadConfigFile(configPath);
const logger = createLogger(config.logging.level, sink);
const app = new App(config, logger);
const addresses = await app.start();
const send = (msg: unknown) => process.send!(msg);
send({ type: 'ready', addresses, pid: process.pid });

process.on('message', (raw) => {
  const req = raw as HostRequest;
  if (req.type === 'stats') {
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.(); // sample live memory, not garbage waiting for the next collection
    const mem = process.memoryUsage();
    const stats: HostStats = {
      rss: mem.rss,
      heapUsed: mem.heapUsed,
      flows: app.activeFlows(),
      affinity: app.affinity.size,
      refused: Object.fromEntries(app.stats.refusals),
      warnLines: lineCounts.warn,
      errorLines: lineCounts.error,
      infoLines: lineCounts.info,
    };
    send({ id: req.id, type: 'stats', stats });
  } else if (req.type === 'reload') {
    const outcome = reloadFromFile(app, configPath, logger);
    send({ id: req.id, type: 'reloaded', ok: outcome.ok });
  } else if (req.type === 'stop') {
    void app.stop(0).then(() => {
      send({ id: req.id, type: 'stopped' });
      process.exit(0);
    });
  }
});
process.on('disconnect', () => process.exit(0));
