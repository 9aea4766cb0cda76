import { configSchema, type ClusterConfig } from '../../src/config/schema.ts';
import { createLogger } from '../../src/logger.ts';
import { RedisReplica, type SelfDescription } from '../../src/cluster-store/redis-replica.ts';
import { resolveStoreSettings } from '../../src/cluster-store/settings.ts';
import type { StateChange } from '../../src/state/changes.ts';
import { LogCapture } from './proxy.ts';

/**
 * A RedisReplica for tests, against a real redis-server (redis-server.ts): its log lines are
 * captured, what it receives from elsewhere is recorded in `remote`, and what it would re-publish
 * when reconciling is whatever the test puts in `local`.
 */
export interface TestReplica {
  replica: RedisReplica;
  logs: LogCapture;
  remote: StateChange[];
  local: StateChange[];
  self: SelfDescription;
  /** Resolves with the first remote change (past or future) that matches. */
  waitForRemote(match: (c: StateChange) => boolean, timeoutMs?: number): Promise<StateChange>;
}

export const TEST_CONNECTORS = ['conn-a', 'conn-b', 'conn-c'];

/** A parsed `cluster:` section (defaults filled as in a config file). */
export function clusterConfig(raw: Record<string, unknown>): ClusterConfig {
  const parsed = configSchema.parse({ listeners: { pcoipUdp: { bind: '127.0.0.1:0' } }, connectors: [{ id: 'x', address: '127.0.0.1' }], cluster: raw });
  return parsed.cluster!;
}

export async function startReplica(
  url: string,
  instanceId: string,
  options: { ttlMs?: number; cluster?: Record<string, unknown>; env?: NodeJS.ProcessEnv; waitUp?: boolean; connectors?: string[] } = {},
): Promise<TestReplica> {
  const logs = new LogCapture();
  const remote: StateChange[] = [];
  const local: StateChange[] = [];
  const known = new Set(options.connectors ?? TEST_CONNECTORS);
  const self: SelfDescription = {
    version: 'test',
    startedAt: Date.now(),
    listeners: {},
    connectors: [...known].map((id) => ({ id, health: 'up', state: 'active', reason: '' })),
  };
  const cfg = clusterConfig({ instanceId, keyPrefix: 'i10', redis: { url }, timeouts: { heartbeat: '200ms', connect: '500ms', lookup: '100ms' }, ...options.cluster });
  const replica = new RedisReplica({
    settings: resolveStoreSettings(cfg, options.env ?? process.env),
    affinityTtlMs: options.ttlMs ?? 60_000,
    knownConnector: (id) => known.has(id),
    localState: () => local,
    describeSelf: () => self,
    logger: createLogger('debug', logs),
  });
  const waiters: Array<{ match: (c: StateChange) => boolean; resolve: (c: StateChange) => void }> = [];
  replica.onRemote((c) => {
    remote.push(c);
    for (const w of waiters.splice(0)) (w.match(c) ? w.resolve(c) : waiters.push(w));
  });
  replica.start();
  if (options.waitUp ?? true) {
    if (!(await replica.whenUp(5000))) throw new Error(`replica ${instanceId} did not connect to ${url}:\n${logs.lines.map((l) => l.msg).join('\n')}`);
  }
  return {
    replica,
    logs,
    remote,
    local,
    self,
    waitForRemote(match, timeoutMs = 3000) {
      const found = remote.find(match);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching remote change within ${timeoutMs} ms; got ${JSON.stringify(remote)}`)), timeoutMs);
        waiters.push({ match, resolve: (c) => (clearTimeout(timer), resolve(c)) });
      });
    },
  };
}

/** Polls `check` until it returns true (bounded); resolves with how long it took (ms). */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition', pollMs = 20): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    if (await check()) return Date.now() - started;
    await new Promise((r) => setTimeout(r, pollMs));
  }
  throw new Error(`${what} not met within ${timeoutMs} ms`);
}
