import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { CONNECTOR_STATES } from '../config/schema.ts';
import { mayTakeNewClients } from '../pool/pool.ts';
import { CONNECT_SECONDS_BUCKETS, FLOW_SECONDS_BUCKETS, LISTENER_NAMES, type HistogramCounts, type ListenerCounters } from '../proxy/flow-stats.ts';
import { readFdLimits } from '../control/fd-limit.ts';
import type { AdminView } from './view.ts';
import { registerWorkerMetrics } from './worker-metrics.ts';
import { registerMediaMetrics } from './media-metrics.ts';
import { CountedHistogram, collected, type Labels, type Samples } from './collected-metrics.ts';
import { clientsByConnector, connectorsWithCounters, packageVersion } from './status.ts';
import { registerRuntimeMetrics } from './runtime-metrics.ts';

/**
 * Prometheus metrics for one App, in a registry of its own (not prom-client's global one), so
 * several Apps can live in one process (tests) without their series colliding.
 * Flow, byte and packet numbers — and the connect-time and flow-duration histograms — are read
 * from FlowStats when scraped (collect callbacks): the data path keeps adding to plain numbers
 * and never touches a metric object. Names and meanings: docs/metrics.md.
 */

/** What the admin server adds that App does not know. */
export interface AdminMetricsSource {
  /** Admin connections not accepted because the process was out of descriptors. */
  adminFdExhausted(): number;
}

/** `listener|connector` keyed histograms as labelled samples. */
function byListenerAndConnector(map: ReadonlyMap<string, HistogramCounts>): () => Iterable<[Labels, HistogramCounts]> {
  return function* () {
    for (const [key, h] of map) {
      const at = key.indexOf('|');
      yield [{ listener: key.slice(0, at), connector: key.slice(at + 1) }, h];
    }
  };
}

/** Samples from a `a<sep>b` keyed count map, split into two labels. */
function splitKeys(map: ReadonlyMap<string, number>, sep: string, first: string, second: string): Samples {
  return function* () {
    for (const [key, n] of map) {
      const at = key.indexOf(sep);
      yield [{ [first]: key.slice(0, at), [second]: key.slice(at + 1) }, n];
    }
  };
}

/** Flows, bytes, packets, refusals, placements, connect failures, connect-time and flow-duration histograms. */
function registerFlowMetrics(registry: Registry, app: AdminView): void {
  /** One sample per Connector × listener, from that listener's counters (Connectors removed by a reload included while their flows run). */
  const perListener = (value: (c: ListenerCounters) => number, extra: Labels = {}): Samples =>
    function* () {
      for (const id of connectorsWithCounters(app)) {
        const counters = app.stats.counters(id);
        for (const listener of LISTENER_NAMES) yield [{ listener, connector: id, ...extra }, value(counters[listener])];
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
    for (const id of connectorsWithCounters(app)) {
      const udp = app.stats.counters(id).pcoipUdp;
      yield [{ connector: id, direction: 'in' }, udp.packetsIn];
      yield [{ connector: id, direction: 'out' }, udp.packetsOut];
    }
  });
  collected(
    registry,
    'counter',
    'pcoip_lb_placements_total',
    'Placement decisions, by reason and Connector (pinned: followed an affinity record; placed: new client; repinned: moved off an unusable Connector; learned: from the broker exchange; session: a flow placed by its own session — a learned 4172 SNI, the UDP probe)',
    ['reason', 'connector'],
    splitKeys(app.placer.decisionCounts, '|', 'reason', 'connector'),
  );
  collected(registry, 'counter', 'pcoip_lb_refusals_total', 'Flows refused, by listener and reason', ['listener', 'reason'], splitKeys(app.stats.refusals, ':', 'listener', 'reason'));
  collected(
    registry,
    'counter',
    'pcoip_lb_flows_repinned_total',
    'Flows closed because their client was re-pinned to another Connector (its next datagrams open a flow there), by listener and the Connector left',
    ['listener', 'connector'],
    splitKeys(app.stats.repinMoves, '|', 'listener', 'connector'),
  );
  collected(
    registry,
    'counter',
    'pcoip_lb_broker_events_total',
    'Terminating broker: client identifiers ignored (lb-cookie-forged, lb-cookie-stale, id-too-long, log-id-limit), LB cookies issued, timeouts (body-timeout, response-timeout), upstream-limit, unsolicited-response',
    ['event'],
    function* () {
      for (const [event, n] of app.stats.brokerEvents) yield [{ event }, n];
    },
  );
  collected(registry, 'counter', 'pcoip_lb_connect_failures_total', 'Connects to a Connector that were refused or timed out', ['connector'], function* () {
    // Every Connector from 0, so rate() and increase() see the first failure.
    const ids = new Set([...app.pool.all().map((c) => c.id), ...app.stats.connectFailures.keys()]);
    for (const connector of ids) yield [{ connector }, app.stats.connectFailures.get(connector) ?? 0];
  });
  new CountedHistogram(
    registry,
    'pcoip_lb_upstream_connect_seconds',
    'Time to connect to a Connector (TCP; with tls.mode terminate, TCP plus the TLS handshake), by listener and Connector',
    ['listener', 'connector'],
    CONNECT_SECONDS_BUCKETS,
    byListenerAndConnector(app.stats.connectSeconds),
  );
  new CountedHistogram(
    registry,
    'pcoip_lb_flow_duration_seconds',
    'How long closed flows lasted (TCP: accept to close; UDP: first to last packet plus the idle timeout), by listener and Connector',
    ['listener', 'connector'],
    FLOW_SECONDS_BUCKETS,
    byListenerAndConnector(app.stats.flowSeconds),
  );
}

/** Per Connector: health, operator state, weight, drained, clients; and the pool as a whole. */
function registerConnectorMetrics(registry: Registry, app: AdminView): void {
  collected(registry, 'gauge', 'pcoip_lb_connector_up', 'Measured health: 1 up, 0 down', ['connector'], function* () {
    for (const c of app.pool.all()) yield [{ connector: c.id }, c.health === 'up' ? 1 : 0];
  });
  collected(registry, 'gauge', 'pcoip_lb_connector_state', 'Operator state: 1 for the current state (active, drain, maint), 0 for the others', ['connector', 'state'], function* () {
    for (const c of app.pool.all()) for (const state of CONNECTOR_STATES) yield [{ connector: c.id, state }, c.state === state ? 1 : 0];
  });
  collected(registry, 'gauge', 'pcoip_lb_connector_weight', 'Configured weight (share of new clients)', ['connector'], function* () {
    for (const c of app.pool.all()) yield [{ connector: c.id }, c.weight];
  });
  collected(registry, 'gauge', 'pcoip_lb_connector_drained', '1 when the Connector is in drain and has no flow left (safe to take down), else 0', ['connector'], function* () {
    for (const c of app.pool.all()) yield [{ connector: c.id }, c.state === 'drain' && app.stats.activeFlows(c.id) === 0 ? 1 : 0];
  });
  collected(registry, 'gauge', 'pcoip_lb_connector_takes_new_clients', '1 when the Connector may receive new clients (up and active), else 0', ['connector'], function* () {
    for (const c of app.pool.all()) yield [{ connector: c.id }, mayTakeNewClients(c) ? 1 : 0];
  });
  collected(registry, 'gauge', 'pcoip_lb_connectors_taking_new_clients', 'Connectors that may receive new clients; 0 is an outage for new users', [], function* () {
    yield [{}, app.pool.all().filter(mayTakeNewClients).length];
  });
  collected(
    registry,
    'gauge',
    'pcoip_lb_connector_health_last_change_seconds',
    'Seconds since the measured health last changed (time in the current state; since start-up if it never changed)',
    ['connector'],
    function* () {
      const now = Date.now();
      for (const c of app.pool.all()) yield [{ connector: c.id }, Math.max(0, now - (app.health.snapshot(c.id)?.since ?? app.startedAt)) / 1000];
    },
  );
  // Flips are counted as they happen (the pool tells every change once); both directions start at 0 so increase() works from the first scrape.
  const transitions = new Map<string, number>();
  app.pool.onChange((change) => {
    if (change.kind !== 'health') return;
    const key = `${change.id}|${change.to}`;
    transitions.set(key, (transitions.get(key) ?? 0) + 1);
  });
  collected(registry, 'counter', 'pcoip_lb_connector_health_transitions_total', 'Measured-health flips since start, by Connector and new state (up, down)', ['connector', 'to'], function* () {
    for (const c of app.pool.all()) for (const to of ['up', 'down']) yield [{ connector: c.id, to }, transitions.get(`${c.id}|${to}`) ?? 0];
  });
  collected(
    registry,
    'gauge',
    'pcoip_lb_connector_pinned_clients',
    'Clients whose affinity record names this Connector (live, or within affinity.ttl of their last flow)',
    ['connector'],
    function* () {
      const clients = clientsByConnector(app);
      for (const c of app.pool.all()) yield [{ connector: c.id }, clients.get(c.id)?.pinned ?? 0];
    },
  );
  collected(registry, 'gauge', 'pcoip_lb_connector_live_clients', 'Clients of this Connector with at least one open flow (live sessions)', ['connector'], function* () {
    const clients = clientsByConnector(app);
    for (const c of app.pool.all()) yield [{ connector: c.id }, clients.get(c.id)?.live ?? 0];
  });
  collected(registry, 'gauge', 'pcoip_lb_affinity_entries', 'Clients in the affinity table (pinned to a Connector)', [], function* () {
    yield [{}, app.affinity.size];
  });
}

/** Active health checks: observed directly (they run off the data path). */
function registerHealthMetrics(registry: Registry, app: AdminView): void {
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
}

/** The proxy itself: build, limits and their use, reloads, descriptor exhaustion, Node/process metrics. */
function registerProcessMetrics(registry: Registry, app: AdminView, admin: AdminMetricsSource): void {
  collected(registry, 'gauge', 'pcoip_lb_build_info', 'Always 1; the labels say which pcoip-lb and Node.js run', ['version', 'nodejs'], function* () {
    yield [{ version: packageVersion(), nodejs: process.versions.node }, 1];
  });
  collected(
    registry,
    'gauge',
    'pcoip_lb_limit_max',
    'Configured cap per listener (per process: with workers, each worker has its own): max-connections (TCP) or max-flows (UDP)',
    ['listener', 'limit'],
    function* () {
      const { broker, pcoipTcp, pcoipUdp } = app.currentConfig.listeners;
      if (broker) yield [{ listener: 'broker', limit: 'max-connections' }, broker.maxConnections];
      if (pcoipTcp) yield [{ listener: 'pcoipTcp', limit: 'max-connections' }, pcoipTcp.maxConnections];
      if (pcoipUdp) yield [{ listener: 'pcoipUdp', limit: 'max-flows' }, pcoipUdp.maxFlows];
    },
  );
  collected(registry, 'gauge', 'pcoip_lb_limit_current', 'What counts against pcoip_lb_limit_max now: open flows of the listener (all workers)', ['listener', 'limit'], function* () {
    const { broker, pcoipTcp, pcoipUdp } = app.currentConfig.listeners;
    // Open flows per listener, from the counters (summed over the workers; removed Connectors' flows count too).
    const open = { broker: 0, pcoipTcp: 0, pcoipUdp: 0 };
    for (const id of connectorsWithCounters(app)) for (const listener of LISTENER_NAMES) open[listener] += app.stats.counters(id)[listener].active;
    if (broker) yield [{ listener: 'broker', limit: 'max-connections' }, open.broker];
    if (pcoipTcp) yield [{ listener: 'pcoipTcp', limit: 'max-connections' }, open.pcoipTcp];
    if (pcoipUdp) yield [{ listener: 'pcoipUdp', limit: 'max-flows' }, open.pcoipUdp];
  });
  collected(registry, 'counter', 'pcoip_lb_config_reloads_total', 'Reload requests (SIGHUP, POST /reload) by result (success, failure)', ['result'], function* () {
    yield [{ result: 'success' }, app.reloadRequests.results.succeeded];
    yield [{ result: 'failure' }, app.reloadRequests.results.failed];
  });
  collected(registry, 'gauge', 'pcoip_lb_config_last_reload_successful', '1 when the last reload applied (or none was asked for yet), 0 when it was rejected', [], function* () {
    yield [{}, app.reloadRequests.results.lastOk ? 1 : 0];
  });
  collected(registry, 'gauge', 'pcoip_lb_config_last_reload_timestamp_seconds', 'When the last reload was requested (Unix time; 0: never)', [], function* () {
    yield [{}, app.reloadRequests.results.lastAt / 1000];
  });
  collected(
    registry,
    'counter',
    'pcoip_lb_fd_exhausted_total',
    'Times pcoip-lb ran out of file descriptors or socket buffers (PLB_E_FD_EXHAUSTED), by where: health-check rounds skipped, admin accepts, and each listener (accepts and Connector connects refused)',
    ['source'],
    function* () {
      yield [{ source: 'health-check' }, app.health.fdExhaustedRounds];
      yield [{ source: 'admin' }, admin.adminFdExhausted()];
      for (const listener of LISTENER_NAMES) yield [{ source: listener }, app.stats.refusals.get(`${listener}:fd-exhausted`) ?? 0];
    },
  );

  registerWorkerMetrics(registry, app);
  app.cluster?.registerMetrics(registry);
  collectDefaultMetrics({ register: registry });
  // promtool check metrics: a gauge must not end in _total. Each of these is the sum over `type` of
  // the gauge without the suffix (sum(nodejs_active_handles) is nodejs_active_handles_total).
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  // prom-client reads the fd limit once per process; start-up raises it (control/fd-limit.ts), so read it at each scrape.
  registry.removeSingleMetric('process_max_fds');
  collected(registry, 'gauge', 'process_max_fds', 'Maximum number of open file descriptors (the soft RLIMIT_NOFILE, read at each scrape).', [], function* () {
    const limits = readFdLimits();
    if (limits && Number.isFinite(limits.soft)) yield [{}, limits.soft];
  });
}

export function createMetrics(app: AdminView, admin: AdminMetricsSource = { adminFdExhausted: () => 0 }): Registry {
  const registry = new Registry();
  registerFlowMetrics(registry, app);
  registerConnectorMetrics(registry, app);
  registerHealthMetrics(registry, app);
  registerProcessMetrics(registry, app, admin);
  registerRuntimeMetrics(registry, app);
  registerMediaMetrics(registry, app.sessionViews);
  return registry;
}
