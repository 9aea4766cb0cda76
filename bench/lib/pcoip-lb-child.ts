/**
 * Runs the real App (src/app.ts) in its own process for the benches, so its CPU time and RSS
 * can be read from /proc apart from the load generator's. Started with child_process.fork():
 * argv[2] is a config file; it answers IPC messages:
 *   { type: 'mem' }  → runs a full GC when --expose-gc is on, then replies { type: 'mem', ... }
 *   { type: 'stop' } → stops the App and exits 0 (so --cpu-prof can write its profile)
 */
import { loadConfigFile } from '../../src/config/load.ts';
import { createLogger } from '../../src/logger.ts';
import { App } from '../../src/app.ts';

const configPath = process.argv[2];
if (!configPath || !process.send) {
  process.stderr.write('usage: fork(bench/lib/pcoip-lb-child.ts, [config.yaml]) — needs an IPC channel\n');
  process.exit(2);
}
const send = (msg: unknown) => process.send?.(msg);

const config = loadConfigFile(configPath);
const app = new App(config, createLogger(config.logging.level));
const addresses = await app.start();
send({ type: 'ready', addresses });

process.on('message', (msg: { type?: string }) => {
  if (msg.type === 'mem') {
    const gc = (globalThis as { gc?: () => void }).gc;
    // Two passes: the first may only schedule finalisers for what the second frees.
    gc?.();
    gc?.();
    send({ type: 'mem', gcRan: gc !== undefined, flows: app.activeFlows(), affinity: app.affinity.size, ...process.memoryUsage() });
  } else if (msg.type === 'stop') {
    app.stop(0).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  }
});
// The parent going away must not leave a proxy running.
process.on('disconnect', () => process.exit(0));
