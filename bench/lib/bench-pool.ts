import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startFakeConnector, type FakeConnector } from '../../test/helpers/fake-connector.ts';

/** Fake Connectors on 127.0.1.x and a config file for the proxy under test, in a temp dir. */
export interface BenchPool {
  connectors: FakeConnector[];
  configPath: string;
  /** Writes the proxy config for the given Connectors (ids) with extra top-level settings. */
  writeConfig(ids: string[], extra?: Record<string, unknown>, weights?: Record<string, number>, states?: Record<string, string>): void;
  close(): Promise<void>;
}

export async function startBenchPool(ids: string[], base = 200): Promise<BenchPool> {
  const connectors = await Promise.all(ids.map((id, i) => startFakeConnector(id, `127.0.1.${base + i}`, { record: false })));
  const dir = mkdtempSync(join(tmpdir(), 'pcoip-lb-bench-'));
  const configPath = join(dir, 'pcoip-lb.yaml');
  const byId = new Map(connectors.map((c) => [c.id, c]));
  return {
    connectors,
    configPath,
    writeConfig(use, extra = {}, weights = {}, states = {}) {
      const raw = {
        listeners: {
          broker: { bind: '127.0.0.1:0' },
          pcoipTcp: { bind: '127.0.0.1:0' },
          pcoipUdp: { bind: '127.0.0.1:0', idleTimeout: '30s' },
        },
        connectors: use.map((id) => {
          const c = byId.get(id)!;
          return { id, address: c.host, ports: { broker: c.brokerPort, pcoip: c.pcoipPort }, weight: weights[id] ?? 1, state: states[id] ?? 'active' };
        }),
        logging: { level: 'info' },
        // The fake Connectors speak plain TCP (no HTTPS /health); no admin server is needed.
        health: { checks: [] },
        admin: { enabled: false },
        ...extra,
      };
      writeFileSync(configPath, stringify(raw));
    },
    async close() {
      // A Connector killed by the bench is already closed.
      await Promise.all(connectors.map((c) => c.close().catch(() => undefined)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
