import { expect } from 'vitest';
import type { App } from '../../src/app.ts';
import { waitUntil } from './flow-clients.ts';

/**
 * Asserts the proxy is back at its idle baseline after a fault: no flow open on any listener,
 * no live counter above zero, no per-client limit entry, every affinity entry without flows,
 * and nothing left in the affinity table once its TTL has run out.
 */
export async function expectDrained(app: App, timeoutMs = 5000): Promise<void> {
  // A flow leaves the table when it ends; its sockets' 'close' events (which release the
  // per-client counts) follow a moment later: wait for both.
  const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);
  await waitUntil(() => sum(app.activeFlows()) + sum(app.trackedClients()) === 0, timeoutMs, 'all flows closed');
  expect(app.activeFlows()).toEqual({ broker: 0, pcoipTcp: 0, pcoipUdp: 0 });
  for (const c of app.pool.all()) expect(app.stats.activeFlows(c.id), `active counter of ${c.id}`).toBe(0);
  expect(app.trackedClients()).toEqual({ broker: 0, pcoipTcp: 0, pcoipUdp: 0 });
  for (const entry of app.affinity.all()) expect(entry.flows, `affinity flows of ${entry.clientKey}`).toBe(0);
  app.affinity.sweep(Date.now() + app.currentConfig.affinity.ttl + 1);
  expect(app.affinity.size).toBe(0);
}
