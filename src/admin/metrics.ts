import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { CONNECTOR_STATES } from '../config/schema.ts';
import { LISTENER_NAMES, type ListenerCounters } from '../proxy/flow-stats.ts';
import type { App } from '../app.ts';
import { registerRuntimeMetrics } from './runtime-metrics.ts';

/**
 * Prometheus metrics for one App, in a registry of its own (not prom-client's global one), so
 * several Apps can live in one process (tests) without their series colliding.
 * Flow, byte and packet numbers are read from FlowStats when scraped (collect callbacks): the
 * data path keeps adding to plain numbers and never touches a metric object.
 */
type Labels = Record<string, string>;
type Samples = () => Iterable<[Labels, number]>;

/**
 * A metric whose samples are computed when scraped. Counters are rebuilt from FlowStats' running
 * totals (reset, then inc by the total), which keeps them monotonic as long as the totals are.
 */
function collected(registry: Registry, type: 'counter' | 'gauge', name: string, help: string, labelNames: string[], samples: Samples): void {
  const registers = [registry];
  if (type === 'gauge') {
    new Gauge({ name, help, labelNames, registers, collect() { this.reset(); for (const [labels, v] of samples()) this.set(labels, v); } });
  } else {
    new Counter({ name, help, labelNames, registers, collect() { this.reset(); for (const [labels, v] of samples()) this.inc(labels, v); } });
  }
}

export function createMetrics(app: App): Registry {
  const registry = new Registry();
  const connectorIds = () => app.pool.all().map((c) => c.id);
  /** One sample per Connector × listener, from that listener's counters. */
  const perListener = (value: (c: ListenerCounters) => number, extra: Labels = {}): Samples =>
    function* () {
      for (const id of connectorIds()) {
        const counters = app.stats.counters(id);
        for (const listener of LISTENER_NAMES) yield [{ listener, connector: id, ...extra }, value(counters[listener])];
      }
    };
  /** Samples from a `a<sep>b` keyed count map, split into two labels. */
  const splitKeys = (map: ReadonlyMap<string, number>, sep: string, first: string, second: string): Samples =>
    function* () {
      for (const [key, n] of map) {
        const at = key.indexOf(sep);
        yield [{ [first]: key.slice(0, at), [second]: key.slice(at + 1) }, n];
      }
    };

  collected(registry, 'gauge', 'pcoip_lb_flows_active', 'Open flows, by listener and Connector', ['listener', 'connector'], perListener((c) => c.active));
  collected(registry, 'counter', 'pcoip_lb_flows_total', 'Flows opened since start, by listener and Connector', ['listener', 'connector'], perListener((c) => c.total));
  collected(
    registry,
    'counter',
    'pcoip_lb_bytes_total',
    'Payload bytes forwarded, by listener, Connector and direction (in: client to Connector; out: Connector to client)',
    ['listener', 'connector', 'direction'],
    function* () {
      yield* perListener((c) => c.bytesIn, { direction: 'in' })();
      yield* perListener((c) => c.bytesOut, { direction: 'out' })();
    },
  );
  collected(registry, 'counter', 'pcoip_lb_udp_packets_total', 'PCoIP UDP datagrams forwarded, by Connector and direction', ['connector', 'direction'], function* () {
    for (const id of connectorIds()) {
      const udp = app.stats.counters(id).pcoipUdp;
      yield [{ connector: id, direction: 'in' }, udp.packetsIn];
      yield [{ connector: id, direction: 'out' }, udp.packetsOut];
    }
  });
  collected(registry, 'gauge', 'pcoip_lb_connector_up', 'Measured health: 1 up, 0 down', ['connector'], function* () {
    for (const c of app.pool.all()) yield [{ connector: c.id }, c.health === 'up' ? 1 : 0];
  });
  collected(registry, 'gauge', 'pcoip_lb_connector_state', 'Operator state: 1 for the current state (active, drain, maint), 0 for the others', ['connector', 'state'], function* () {
    for (const c of app.pool.all()) for (const state of CONNECTOR_STATES) yield [{ connector: c.id, state }, c.state === state ? 1 : 0];
  });
  collected(registry, 'gauge', 'pcoip_lb_connector_pinned_clients', 'Clients whose affinity record names this Connector', ['connector'], function* () {
    const counts = new Map<string, number>(connectorIds().map((id) => [id, 0]));
    for (const entry of app.affinity.all()) counts.set(entry.connectorId, (counts.get(entry.connectorId) ?? 0) + 1);
    for (const [connector, n] of counts) yield [{ connector }, n];
  });
  collected(registry, 'gauge', 'pcoip_lb_affinity_entries', 'Clients in the affinity table (pinned to a Connector)', [], function* () {
    yield [{}, app.affinity.size];
  });
  collected(
    registry,
    'counter',
    'pcoip_lb_placements_total',
    'Placement decisions, by reason and Connector (pinned: followed an affinity record; placed: new client; repinned: moved off an unusable Connector)',
    ['reason', 'connector'],
    splitKeys(app.placer.decisionCounts, '|', 'reason', 'connector'),
  );
  collected(registry, 'counter', 'pcoip_lb_refusals_total', 'Flows refused, by listener and reason', ['listener', 'reason'], splitKeys(app.stats.refusals, ':', 'listener', 'reason'));
  collected(registry, 'counter', 'pcoip_lb_connect_failures_total', 'Connects to a Connector that were refused or timed out', ['connector'], function* () {
    for (const [connector, n] of app.stats.connectFailures) yield [{ connector }, n];
  });

  // Health checks run off the data path, so these are observed directly.
  const checkDuration = new Histogram({
    name: 'pcoip_lb_health_check_duration_seconds',
    help: 'Duration of active health checks, by Connector and check',
    labelNames: ['connector', 'check'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const checks = new Counter({
    name: 'pcoip_lb_health_checks_total',
    help: 'Active health checks, by Connector, check and result (pass, fail)',
    labelNames: ['connector', 'check', 'result'],
    registers: [registry],
  });
  app.health.onRound((connector, round) => {
    for (const r of round.results) {
      checkDuration.observe({ connector, check: r.check }, r.latencyMs / 1000);
      checks.inc({ connector, check: r.check, result: r.ok ? 'pass' : 'fail' });
    }
  });

  collectDefaultMetrics({ register: registry });
  registerRuntimeMetrics(registry, app);
  return registry;
}
