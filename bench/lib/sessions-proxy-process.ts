/**
 * pcoip-lb (the App) in a child process for bench:sessions, so the proxy has a core of its own
 * and its CPU time and memory can be read apart from the load generator's.
 * Protocol over the IPC channel:
 *   parent → { type: 'start', config }   child → { type: 'started', addresses } | { type: 'error', message }
 *   parent → { type: 'stop' }            child → { type: 'stopped', cpuUserUs, cpuSystemUs, maxRssBytes } and exits
 */
import { configSchema } from '../../src/config/schema.ts';
import { createLogger } from '../../src/logger.ts';
import { App } from '../../src/app.ts';

let app: App | undefined;

const send = (msg: unknown) => process.send?.(msg);

process.on('message', (msg: { type: string; config?: unknown; logLevel?: string }) => {
  if (msg.type === 'start') {
    const config = configSchema.parse(msg.config);
    app = new App(config, createLogger((msg.logLevel ?? 'warn') as 'warn'));
    app.start().then(
      (addresses) => send({ type: 'started', addresses }),
      (err: Error) => send({ type: 'error', message: err.message }),
    );
  } else if (msg.type === 'stop') {
    const stopped = app ? app.stop(0) : Promise.resolve();
    void stopped.then(() => {
      const cpu = process.cpuUsage();
      send({ type: 'stopped', cpuUserUs: cpu.user, cpuSystemUs: cpu.system, maxRssBytes: process.resourceUsage().maxRSS * 1024 });
      process.disconnect();
    });
  }
});

// The parent going away must not leave a proxy behind.
process.on('disconnect', () => process.exit(0));
