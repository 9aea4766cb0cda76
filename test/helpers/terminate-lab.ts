import { configSchema, type Config } from '../../src/config/schema.ts';
import { startFakeConnector, type FakeConnector } from './fake-connector.ts';
import { startFakeBroker, type FakeBroker } from './fake-broker.ts';
import { certDir, makeCert, type TestCert } from './tls-fixtures.ts';
import { startTestProxy, type TestProxy } from './proxy.ts';

/**
 * A pool for terminate-mode tests: per Connector a fake TLS broker (443) plus the fake
 * Connector's 4172 TCP/UDP, on 127.0.1.x; certificates made by openssl into a temp dir; the
 * proxy verifies the Connectors with upstream.ca (their self-signed certificate).
 */
export interface TerminateLab {
  dir: string;
  proxyCert: TestCert;
  connectorCert: TestCert;
  brokers: FakeBroker[];
  connectors: FakeConnector[];
  proxy: TestProxy;
  byId(id: string): FakeBroker;
  close(): Promise<void>;
}

export interface LabOptions {
  ids?: string[];
  sniRouting?: boolean;
  tls?: Record<string, unknown>;
  http?: Record<string, unknown>;
  rewriteTarget?: Record<string, unknown>;
  /** Other listeners.broker keys (limits, timeouts). */
  broker?: Record<string, unknown>;
}

export async function startTerminateLab(options: LabOptions = {}): Promise<TerminateLab> {
  const ids = options.ids ?? ['conn-a', 'conn-b', 'conn-c'];
  const { dir, cleanup } = await certDir();
  const hosts = ids.map((_, i) => `127.0.1.${i + 1}`);
  const [proxyCert, connectorCert] = await Promise.all([makeCert(dir, 'proxy', ['broker.example'], ['127.0.0.1']), makeCert(dir, 'connectors', ['connector.example'], hosts)]);
  const brokers = await Promise.all(ids.map((id, i) => startFakeBroker(id, hosts[i]!, connectorCert)));
  const connectors = await Promise.all(ids.map((id, i) => startFakeConnector(id, hosts[i]!)));
  const config = terminateConfig(
    ids.map((id, i) => ({ id, address: hosts[i]!, ports: { broker: brokers[i]!.port, pcoip: connectors[i]!.pcoipPort } })),
    { certificates: [{ cert: proxyCert.certPath, key: proxyCert.keyPath }], upstream: { ca: connectorCert.certPath }, ...options.tls },
    options,
  );
  let proxy: TestProxy;
  try {
    proxy = await startTestProxy(config);
  } catch (err) {
    await Promise.all([...brokers.map((b) => b.close()), ...connectors.map((c) => c.close())]);
    await cleanup();
    throw err;
  }
  return {
    dir,
    proxyCert,
    connectorCert,
    brokers,
    connectors,
    proxy,
    byId: (id) => brokers.find((b) => b.id === id)!,
    close: async () => {
      await proxy.stop();
      await Promise.all([...brokers.map((b) => b.close()), ...connectors.map((c) => c.close())]);
      await cleanup();
    },
  };
}

export function terminateConfig(connectors: unknown[], tls: Record<string, unknown>, options: LabOptions = {}): Config {
  return configSchema.parse({
    listeners: {
      broker: {
        bind: '127.0.0.1:0',
        ...options.broker,
        tls: { mode: 'terminate', ...tls },
        ...(options.http ? { http: options.http } : {}),
        ...(options.rewriteTarget ? { rewriteTarget: options.rewriteTarget } : {}),
      },
      pcoipTcp: { bind: '127.0.0.1:0', sniRouting: options.sniRouting ?? false },
      pcoipUdp: { bind: '127.0.0.1:0' },
    },
    connectors,
    // As in testConfig(): no active health checks (the fakes serve no /health), admin on port 0.
    health: { checks: [] },
    admin: { bind: '127.0.0.1:0' },
    logging: { level: 'debug' },
  });
}
