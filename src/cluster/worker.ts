import type { AddressInfo } from 'node:net';
import { App } from '../app.ts';
import { createLogger } from '../logger.ts';
import type { Logger } from '../logger.ts';
import { SyncedAffinityTable } from './synced-affinity.ts';
import { processLoopMonitor } from '../util/event-loop-monitor.ts';
import type { FromWorker, PinMessage, ToWorker } from './protocol.ts';

/** How often flow opens/closes are sent to the primary (its TTL accounting), and counters. */
const FLOW_BATCH_MS = 100;
const STATS_EVERY_MS = 1000;
/** A worker never waits longer than this for the primary's affinity answer; it then decides alone. */
const LOOKUP_TIMEOUT_MS = 1000;

/**
 * A multi-core worker process: the data listeners (SO_REUSEPORT) of an App in 'worker' role,
 * kept in step with the primary over IPC. Signals are ignored here: the primary coordinates
 * shutdown and reload (a SIGINT from a terminal reaches the whole process group).
 */
export function runWorker(): void {
  if (!process.send) throw new Error('the worker runs as a child process with an IPC channel');
  const send = (msg: FromWorker) => {
    if (process.connected) process.send!(msg);
  };
  let app: App | undefined;
  let affinity: SyncedAffinityTable | undefined;
  let logger: Logger | undefined;
  let nextLookup = 1;
  const lookups = new Map<number, (pin: PinMessage | undefined) => void>();
  const inflight = new Map<string, Promise<void>>();
  const timers: NodeJS.Timeout[] = [];

  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => undefined);

  /** Before placing a client this worker has no entry for, ask the primary (once per client at a time). */
  const beforeDecide = (clientAddress: string): Promise<void> | undefined => {
    const key = app!.placer.keyFor(clientAddress);
    if (affinity!.get(key, Date.now())) return undefined;
    const pending = inflight.get(key);
    if (pending) return pending;
    const id = nextLookup++;
    const answer = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        lookups.delete(id);
        logger?.warn({ client: clientAddress }, 'no affinity answer from the primary in time; deciding locally');
        resolve();
      }, LOOKUP_TIMEOUT_MS);
      lookups.set(id, (pin) => {
        clearTimeout(timer);
        if (pin) affinity!.applyRemote(pin, Date.now());
        resolve();
      });
    });
    inflight.set(key, answer);
    void answer.finally(() => inflight.delete(key));
    send({ type: 'lookup', id, key });
    return answer;
  };

  const flush = () => {
    if (!affinity || !app) return;
    const deltas = affinity.takeDeltas();
    if (deltas.length > 0) send({ type: 'flows', deltas });
  };
  const statsMessage = (): FromWorker => ({
    type: 'stats',
    stats: app!.stats.snapshot(),
    flows: app!.activeFlows(),
    tracked: app!.trackedClients(),
    loop: processLoopMonitor().snapshot(),
  });
  const sendStats = () => {
    if (app) send(statsMessage());
  };

  const stop = async (graceMs: number) => {
    for (const t of timers) clearInterval(t);
    await app?.stop(graceMs);
    flush();
    // IPC sends and pino writes are asynchronous: exit only once the last stats reached the
    // primary and the last log lines (the flows closed at shutdown) are written.
    const exit = () => (logger ? logger.flush(() => process.exit(0)) : process.exit(0));
    if (app && process.connected) {
      process.send!(statsMessage(), exit);
    } else exit();
  };

  process.on('message', (raw) => {
    const msg = raw as ToWorker;
    switch (msg.type) {
      case 'init': {
        const { config, index, bindPorts } = msg;
        processLoopMonitor(); // measure the event loop from the start; snapshots go with the stats
        logger = createLogger(config.logging.level).child({ worker: index });
        affinity = new SyncedAffinityTable(config.affinity.ttl, (pin) => send({ type: 'pin', pin }));
        app = new App(config, logger, {
          role: 'worker',
          affinity,
          bindPorts,
          beforeDecide,
          onConnectFailure: (connectorId) => send({ type: 'connect-failure', connectorId }),
        });
        app.start().then(
          (addresses) => {
            send({ type: 'listening', addresses: addresses as Record<string, AddressInfo> });
            timers.push(setInterval(flush, FLOW_BATCH_MS), setInterval(sendStats, STATS_EVERY_MS));
            for (const t of timers) t.unref();
          },
          (err: unknown) => {
            const e = err as { message?: string; code?: string };
            const failed: FromWorker = { type: 'failed', message: e.message ?? String(err), code: e.code };
            process.send!(failed, () => process.exit(1));
          },
        );
        break;
      }
      case 'lookup-result':
        lookups.get(msg.id)?.(msg.pin);
        lookups.delete(msg.id);
        break;
      case 'pin':
        affinity?.applyRemote(msg.pin, Date.now());
        break;
      case 'pool':
        for (const c of msg.connectors) {
          app?.pool.setState(c.id, c.state);
          app?.pool.setHealth(c.id, c.health, c.healthReason);
        }
        break;
      case 'reload':
        try {
          app?.reload(msg.config);
        } catch (err) {
          logger?.error({ err }, 'worker could not apply the reloaded config');
        }
        break;
      case 'stop':
        void stop(msg.graceMs);
        break;
    }
  });
  // The primary is gone (crashed or killed): nobody can keep the affinity in step; stop now.
  process.on('disconnect', () => void stop(0));
}
