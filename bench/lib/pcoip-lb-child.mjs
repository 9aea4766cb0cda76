/**
 * Runs the real App in its own process for the benches, so its CPU time and RSS can be read from
 * /proc apart from the load generator's. Plain JavaScript on purpose: a .ts entry point would
 * make Node load its TypeScript stripper (~28 MiB RSS) even when the App comes from dist/.
 *
 * Started with child_process.fork(): argv[2] is a config file, argv[3] "src" (src/app.ts, Node
 * strips the types) or "dist" (dist/app.js, what `pcoip-lb start` runs; needs `npm run build`).
 * Answers IPC messages:
 *   { type: 'mem' }  → two full GCs (with --expose-gc), then { type: 'mem', gcRan, flows, affinity, ...memoryUsage }
 *   { type: 'mark' } → { type: 'mark', monotonicUs } (the clock of --cpu-prof's timestamps, to cut a profile to the load window)
 *   { type: 'stop' } → stops the App and exits 0 (so that --cpu-prof writes its profile)
 */
const [configPath, from = 'src'] = process.argv.slice(2);
if (!configPath || !process.send || (from !== 'src' && from !== 'dist')) {
  process.stderr.write('usage: fork(bench/lib/pcoip-lb-child.mjs, [config.yaml, "src"|"dist"]) with an IPC channel\n');
  process.exit(2);
}
const root = new URL(from === 'src' ? '../../src/' : '../../dist/', import.meta.url);
const ext = from === 'src' ? '.ts' : '.js';
const { loadConfigFile } = await import(new URL(`config/load${ext}`, root).href);
const { createLogger } = await import(new URL(`logger${ext}`, root).href);
const { App } = await import(new URL(`app${ext}`, root).href);

const send = (msg) => process.send?.(msg);
const config = loadConfigFile(configPath);
const app = new App(config, createLogger(config.logging.level));
const addresses = await app.start();
send({ type: 'ready', addresses });

process.on('message', (msg) => {
  if (msg?.type === 'mem') {
    const gc = globalThis.gc;
    // Two passes: the first may only queue finalisers whose memory the second frees.
    gc?.();
    gc?.();
    send({ type: 'mem', gcRan: typeof gc === 'function', flows: app.activeFlows(), affinity: app.affinity.size, ...process.memoryUsage() });
  } else if (msg?.type === 'mark') {
    send({ type: 'mark', monotonicUs: Number(process.hrtime.bigint() / 1000n) });
  } else if (msg?.type === 'stop') {
    app.stop(0).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  }
});
// The parent going away must not leave a proxy running.
process.on('disconnect', () => process.exit(0));
