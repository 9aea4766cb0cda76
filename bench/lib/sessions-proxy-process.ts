/**
 * pcoip-lb (the App) in a child process for bench:sessions, so the proxy has a core of its own
 * and its CPU time and memory can be read apart from the load generator's.
 * Protocol over the IPC channel:
 *   parent → { type: 'start', config }   child → { type: 'started', addresses } | { type: 'error', message }
 *   parent → { type: 'stats' }           child → { type: 'stats', heapUsed, rss, sessions, sessionBytes?, brokerEvents }
 *   parent → { type: 'stop' }            child → { type: 'stopped', cpuUserUs, cpuSystemUs, maxRssBytes } and exits
 */
import { configSchema } from '../../src/config/schema.ts';
import { createLogger } from '../../src/logger.ts';
import { App } from '../../src/app.ts';
import { Supervisor } from '../../src/cluster/primary.ts';
import { resolveWorkers } from '../../src/cluster/workers.ts';
import { cpuSecondsOfTree } from './proc.ts';

/** `workers: 1` runs the App here; more runs the multi-core primary with its worker processes. */
let app: Pick<App, 'start' | 'stop'> | undefined;

const send = (msg: unknown) => process.send?.(msg);

process.on('message', (msg: { type: string; config?: unknown; logLevel?: string }) => {
  if (msg.type === 'start') {
    const config = configSchema.parse(msg.config);
    // The workers log at the config's level: the same as this process.
    config.logging.level = (msg.logLevel ?? 'warn') as 'warn';
    const logger = createLogger(config.logging.level);
    const workers = resolveWorkers(config).count;
    app = workers > 1 ? new Supervisor(config, logger, workers, (err) => send({ type: 'error', message: err.message })) : new App(config, logger);
    app.start().then(
      (addresses) => send({ type: 'started', addresses }),
      (err: Error) => send({ type: 'error', message: err.message }),
    );
  } else if (msg.type === 'stats') {
    const mem = process.memoryUsage();
    const a = app as (App & { sessions: { bytes?: Record<string, number> } }) | undefined;
    send({
      type: 'stats',
      heapUsed: mem.heapUsed,
      rss: mem.rss,
      external: mem.external,
      arrayBuffers: mem.arrayBuffers,
      sessions: a?.sessions.counts,
      // (Older builds, benched for a before/after comparison, have no byte accounting.)
      sessionBytes: a?.sessions.bytes,
      brokerEvents: Object.fromEntries((a?.stats as { brokerEvents?: Map<string, number> } | undefined)?.brokerEvents ?? []),
    });
  } else if (msg.type === 'stop') {
    // CPU of this process and its workers, read before they exit.
    const treeCpuSeconds = cpuSecondsOfTree(process.pid);
    const stopped = app ? app.stop(0) : Promise.resolve();
    void stopped.then(() => {
      const cpu = process.cpuUsage();
      send({ type: 'stopped', cpuUserUs: cpu.user, cpuSystemUs: cpu.system, treeCpuSeconds, maxRssBytes: process.resourceUsage().maxRSS * 1024 });
      process.disconnect();
    });
  }
});

// The parent going away must not leave a proxy behind.
process.on('disconnect', () => process.exit(0));
