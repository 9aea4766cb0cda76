import type { ConnectorConfig } from '../../src/config/schema.ts';
import type { App } from '../../src/app.ts';
import type { RoundResult } from '../../src/health/checks.ts';
import { startFakeConnector, type FakeConnector } from './fake-connector.ts';
import { startHttpsBroker, type HttpsBroker } from './https-connector.ts';

/**
 * A fake Connector whose broker port speaks HTTPS with a switchable `/health` (for active
 * checks) while its pcoip port greets and echoes like the plain fake.
 */
export interface CheckedConnector {
  id: string;
  host: string;
  broker: HttpsBroker;
  pcoip: FakeConnector;
  config(overrides?: Partial<ConnectorConfig>): ConnectorConfig;
  close(): Promise<void>;
}

export async function startCheckedConnector(id: string, host: string): Promise<CheckedConnector> {
  const [broker, pcoip] = await Promise.all([startHttpsBroker(id, host), startFakeConnector(id, host)]);
  return {
    id,
    host,
    broker,
    pcoip,
    config: (overrides = {}) => ({ ...pcoip.config(), ports: { broker: broker.port, pcoip: pcoip.pcoipPort }, ...overrides }),
    close: async () => {
      await Promise.all([broker.close(), pcoip.close()]);
    },
  };
}

/** Resolves after the next `n` finished health rounds of one Connector, with their results. */
export function nextRounds(app: App, id: string, n: number, timeoutMs = 10_000): Promise<RoundResult[]> {
  return new Promise((resolve, reject) => {
    const seen: RoundResult[] = [];
    let done = false;
    const timer = setTimeout(() => {
      done = true;
      unsubscribe();
      reject(new Error(`only ${seen.length} of ${n} health rounds of ${id} within ${timeoutMs} ms`));
    }, timeoutMs);
    const unsubscribe = app.health.onRound((roundId, round) => {
      if (done || roundId !== id) return;
      seen.push(round);
      if (seen.length === n) {
        done = true;
        clearTimeout(timer);
        unsubscribe();
        resolve(seen);
      }
    });
  });
}

/** A client address (127.0.2.x, from `from` on) that consistent hashing places on `connectorId` now. */
export function clientPlacedOn(app: App, connectorId: string, from = 1): string {
  for (let i = from; i < 255; i++) {
    const ip = `127.0.2.${i}`;
    if (app.placer.pickNew(app.placer.keyFor(ip)) === connectorId) return ip;
  }
  throw new Error(`no client address in 127.0.2.${from}-254 hashes to ${connectorId}`);
}
