import { describe, expect, it } from 'vitest';
import { configSchema, type Config } from '../../src/config/schema.ts';
import { changedPaths, connectorsWithRuntimeState, diffConfig, effectiveConfig, isEmptyDiff } from '../../src/config/diff.ts';

const BASE = {
  listeners: {
    broker: { bind: '0.0.0.0:443' },
    pcoipTcp: { bind: '0.0.0.0:4172' },
    pcoipUdp: { bind: '0.0.0.0:4172' },
  },
  connectors: [
    { id: 'a', address: '192.0.2.1' },
    { id: 'b', address: '192.0.2.2', weight: 2 },
  ],
};

/** BASE with `patch` applied (deep merge; arrays replace). */
function cfg(patch: (raw: typeof BASE & Record<string, any>) => void = () => undefined): Config {
  const raw = structuredClone(BASE) as typeof BASE & Record<string, any>;
  patch(raw);
  return configSchema.parse(raw);
}

describe('diffConfig', () => {
  it('finds nothing between equal configs', () => {
    const diff = diffConfig(cfg(), cfg());
    expect(isEmptyDiff(diff)).toBe(true);
  });

  it.each<[string, (r: any) => void, Partial<ReturnType<typeof diffConfig>>]>([
    ['a Connector added', (r) => r.connectors.push({ id: 'c', address: '192.0.2.3' }), { connectors: { added: ['c'], removed: [], changed: [] } }],
    ['a Connector removed', (r) => r.connectors.splice(0, 1), { connectors: { added: [], removed: ['a'], changed: [] } }],
    [
      'weight, state and port of one Connector',
      (r) => Object.assign(r.connectors[1], { weight: 5, state: 'drain', ports: { pcoip: 4173 } }),
      { connectors: { added: [], removed: [], changed: [{ id: 'b', keys: ['ports.pcoip', 'weight', 'state'] }] } },
    ],
    ['list order only (ids are what count)', (r) => r.connectors.reverse(), { connectors: { added: [], removed: [], changed: [] } }],
    [
      'listener timeouts and limits',
      (r) => Object.assign(r.listeners.broker, { idleTimeout: '1m', maxConnections: 5 }),
      { listeners: { broker: ['maxConnections', 'idleTimeout'] } },
    ],
    ['UDP limit', (r) => (r.listeners.pcoipUdp.maxFlowsPerClient = 3), { listeners: { pcoipUdp: ['maxFlowsPerClient'] } }],
    ['balance and ttl', (r) => ((r.balance = { algorithm: 'rendezvous' }), (r.affinity = { ttl: '5m' })), { applied: ['balance.algorithm', 'affinity.ttl'] }],
    ['grace and log level', (r) => ((r.shutdown = { grace: '1s' }), (r.logging = { level: 'debug' })), { applied: ['shutdown.grace', 'logging.level'] }],
  ])('%s', (_name, patch, expected) => {
    const diff = diffConfig(cfg(), cfg(patch));
    expect(diff).toMatchObject({ restartRequired: [], listeners: {}, connectors: { added: [], removed: [], changed: [] }, applied: [], ...expected });
  });

  it.each<[string, (r: any) => void, string[]]>([
    ['a bind port', (r) => (r.listeners.broker.bind = '0.0.0.0:8443'), ['listeners.broker.bind']],
    ['a bind host and port', (r) => (r.listeners.pcoipTcp.bind = '127.0.0.1:4173'), ['listeners.pcoipTcp.bind']],
    ['a listener removed', (r) => delete r.listeners.pcoipUdp, ['listeners.pcoipUdp']],
    ['the client-key prefixes', (r) => (r.affinity = { ipv4Prefix: 24, ipv6Prefix: 48 }), ['affinity.ipv4Prefix', 'affinity.ipv6Prefix']],
  ])('restart required for %s', (_name, patch, paths) => {
    const diff = diffConfig(cfg(), cfg(patch));
    expect(diff.restartRequired.map((r) => r.path)).toEqual(paths);
    expect(diff.restartRequired.every((r) => r.reason.length > 10)).toBe(true);
  });

  it('restart required for any setting of a terminating broker but its limits, and for tls/sniRouting anywhere', () => {
    const from = cfg();
    expect(diffConfig(from, cfg((r: any) => (r.listeners.broker.tls = { reloadInterval: '20s' }))).restartRequired.map((r) => r.path)).toEqual(['listeners.broker.tls']);
    const terminate = (r: any) => (r.listeners.broker.tls = { mode: 'terminate', certificates: [{ cert: '/x.crt', key: '/x.key' }], upstream: { insecure: true } });
    const sni = diffConfig(cfg(terminate), cfg((r: any) => (terminate(r), (r.listeners.pcoipTcp.sniRouting = true))));
    expect(sni.restartRequired.map((r) => r.path)).toEqual(['listeners.pcoipTcp.sniRouting']);
    const changed = diffConfig(
      cfg(terminate),
      cfg((r: any) => (terminate(r), (r.listeners.broker.idleTimeout = '1m'))),
    );
    expect(changed.restartRequired.map((r) => r.path)).toEqual(['listeners.broker.idleTimeout']);
    expect(changed.listeners).toEqual({});
    const limits = diffConfig(
      cfg(terminate),
      cfg((r: any) => (terminate(r), Object.assign(r.listeners.broker, { maxConnections: 5, maxConnectionsPerClient: 2, firstByteTimeout: '1s' }))),
    );
    expect(limits.restartRequired).toEqual([]);
    expect(limits.listeners).toEqual({ broker: ['maxConnections', 'maxConnectionsPerClient', 'firstByteTimeout'] });
  });

  it('restart required for a listener added', () => {
    const from = cfg((r) => delete (r.listeners as any).broker);
    expect(diffConfig(from, cfg()).restartRequired.map((r) => r.path)).toEqual(['listeners.broker']);
  });
});

describe('effectiveConfig', () => {
  it('keeps the running value of what needs a restart and takes everything else', () => {
    const from = cfg();
    const to = cfg((r) => {
      r.listeners.broker.bind = '0.0.0.0:8443';
      (r.listeners.broker as any).idleTimeout = '1m';
      delete (r.listeners as any).pcoipUdp;
      r.affinity = { ipv4Prefix: 24, ttl: '2h' };
      r.connectors[0]!.weight = 9;
    });
    const running = effectiveConfig(from, to, diffConfig(from, to));
    expect(running.listeners.broker).toMatchObject({ bind: { host: '0.0.0.0', port: 443 }, idleTimeout: 60_000 });
    expect(running.listeners.pcoipUdp).toEqual(from.listeners.pcoipUdp);
    expect(running.affinity).toEqual({ ipv4Prefix: 32, ipv6Prefix: 64, perSession: false, ttl: 7_200_000 });
    expect(running.connectors[0]!.weight).toBe(9);
    // The diff from the running config to the effective one is exactly what was applied.
    expect(diffConfig(running, effectiveConfig(running, to, diffConfig(running, to))).restartRequired).toEqual([]);
  });

  it('does not bind a listener that was added', () => {
    const from = cfg((r) => delete (r.listeners as any).broker);
    const running = effectiveConfig(from, cfg(), diffConfig(from, cfg()));
    expect(running.listeners.broker).toBeUndefined();
  });
});

describe('changedPaths', () => {
  it.each([
    [{ a: 1 }, { a: 1 }, []],
    [{ a: 1 }, { a: 2 }, ['a']],
    [{ a: { b: 1, c: 2 } }, { a: { b: 1, c: 3 } }, ['a.c']],
    [{ a: [1, 2] }, { a: [1, 3] }, ['a[1]']],
    [{ a: [1, 2] }, { a: [1] }, ['a']],
    [{ a: 1 }, { b: 1 }, ['a', 'b']],
    [{ a: { b: 1 } }, { a: 'x' }, ['a']],
  ])('%j → %j', (a, b, paths) => {
    expect(changedPaths(a, b, [])).toEqual(paths);
  });
});

describe('connectorsWithRuntimeState', () => {
  const from = cfg().connectors;
  it.each<[string, Record<string, string>, (r: any) => void, Record<string, string>]>([
    ['a runtime drain survives an unrelated change', { a: 'drain', b: 'active' }, (r) => (r.connectors[1].weight = 7), { a: 'drain', b: 'active' }],
    ['a state the config changes wins', { a: 'drain', b: 'active' }, (r) => (r.connectors[0].state = 'maint'), { a: 'maint', b: 'active' }],
    ['a new Connector takes its config state', { a: 'active', b: 'active' }, (r) => r.connectors.push({ id: 'c', address: '192.0.2.3', state: 'drain' }), { a: 'active', b: 'active', c: 'drain' }],
  ])('%s', (_name, runtime, patch, expected) => {
    const to = cfg(patch).connectors;
    const result = connectorsWithRuntimeState(from, to, (id) => runtime[id] as 'active' | 'drain' | 'maint' | undefined);
    expect(Object.fromEntries(result.map((c) => [c.id, c.state]))).toEqual(expected);
  });
});
