import { describe, expect, it } from 'vitest';
import { App } from '../../src/app.ts';
import { createLogger } from '../../src/logger.ts';
import { buildStatus } from '../../src/admin/status.ts';
import { testConfig } from '../helpers/proxy.ts';

describe('buildStatus', () => {
  it('lists every Connector with state, health, live pinned clients and active flows per listener', () => {
    const config = testConfig(
      [
        { id: 'conn-a', address: '127.0.1.1', ports: { broker: 1443, pcoip: 14172 }, weight: 2, state: 'active' },
        { id: 'conn-b', address: '127.0.1.2', ports: { broker: 2443, pcoip: 24172 }, weight: 1, state: 'drain' },
      ],
      { affinity: { ttl: '1m' } },
    );
    const app = new App(config, createLogger('silent'));
    const now = 10_000_000;
    app.pool.setHealth('conn-b', 'down', 'Cannot communicate with broker');
    app.affinity.pin('10.0.0.1', 'conn-a', now, 'placed');
    app.affinity.pin('10.0.0.2', 'conn-a', now - 30_000, 'placed');
    app.affinity.pin('10.0.0.3', 'conn-b', now, 'placed');
    // Expired: no flows and last seen longer ago than the TTL.
    app.affinity.pin('10.0.0.4', 'conn-b', now - 61_000, 'placed');
    app.stats.opened('broker', 'conn-a');
    app.stats.opened('pcoipUdp', 'conn-a');
    app.stats.opened('pcoipUdp', 'conn-a');
    app.stats.closed('pcoipUdp', 'conn-a');

    const status = buildStatus(app, now);

    expect(status.connectors).toEqual([
      {
        id: 'conn-a',
        address: '127.0.1.1',
        ports: { broker: 1443, pcoip: 14172 },
        weight: 2,
        state: 'active',
        health: 'up',
        healthReason: '',
        pinnedClients: 2,
        activeFlows: { broker: 1, pcoipTcp: 0, pcoipUdp: 1, total: 2 },
      },
      {
        id: 'conn-b',
        address: '127.0.1.2',
        ports: { broker: 2443, pcoip: 24172 },
        weight: 1,
        state: 'drain',
        health: 'down',
        healthReason: 'Cannot communicate with broker',
        pinnedClients: 1,
        activeFlows: { broker: 0, pcoipTcp: 0, pcoipUdp: 0, total: 0 },
      },
    ]);
    expect(status.pinnedClients).toBe(3);
    // Reading the status does not drop the expired entry (that is the sweeper's job).
    expect(app.affinity.size).toBe(4);
  });
});
