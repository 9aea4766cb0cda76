import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { CONNECTOR_STATES } from '../config/schema.ts';
import { LISTENER_NAMES } from '../proxy/flow-stats.ts';
import type { App } from '../app.ts';

/**
 * Prometheus metrics for one App, in a registry of its own (not prom-client's global one), so
 * several Apps can live in one process (tests) without their series colliding.
 * Flow, byte and packet numbers are read from FlowStats when scraped (collect callbacks): the
 * data path keeps adding to plain numbers and never touches a metric object.
 */
export function createMetrics(app: App): Registry {
  const registry = new Registry();
  const registers = [registry];
  const connectorIds = () => app.pool.all().map((c) => c.id);

  new Gauge({
    name: 'pcoip_lb_flows_active',
    help: 'Open flows, by listener and Connector',
    labelNames: ['listener', 'connector'],
    registers,
    collect() {
      this.reset();
      for (const id of connectorIds()) {
        const counters = app.stats.counters(id);
        for (const listener of LISTENER_NAMES) this.set({ listener, connector: id }, counters[listener].active);
      }
    },
  });
  new Counter({
    name: 'pcoip_lb_flows_total',
    help: 'Flows opened since start, by listener and Connector',
    labelNames: ['listener', 'connector'],
    registers,
    collect() {
      this.reset();
      for (const id of connectorIds()) {
        const counters = app.stats.counters(id);
        for (const listener of LISTENER_NAMES) this.inc({ listener, connector: id }, counters[listener].total);
      }
    },
  });
  new Counter({
    name: 'pcoip_lb_bytes_total',
    help: 'Payload bytes forwarded, by listener, Connector and direction (in: client to Connector; out: Connector to client)',
    labelNames: ['listener', 'connector', 'direction'],
    registers,
    collect() {
      this.reset();
      for (const id of connectorIds()) {
        const counters = app.stats.counters(id);
        for (const listener of LISTENER_NAMES) {
          this.inc({ listener, connector: id, direction: 'in' }, counters[listener].bytesIn);
          this.inc({ listener, connector: id, direction: 'out' }, counters[listener].bytesOut);
        }
      }
    },
  });
  new Counter({
    name: 'pcoip_lb_udp_packets_total',
    help: 'PCoIP UDP datagrams forwarded, by Connector and direction',
    labelNames: ['connector', 'direction'],
    registers,
    collect() {
      this.reset();
      for (const id of connectorIds()) {
        const udp = app.stats.counters(id).pcoipUdp;
        this.inc({ connector: id, direction: 'in' }, udp.packetsIn);
        this.inc({ connector: id, direction: 'out' }, udp.packetsOut);
      }
    },
  });
  new Gauge({
    name: 'pcoip_lb_connector_up',
    help: 'Measured health: 1 up, 0 down',
    labelNames: ['connector'],
    registers,
    collect() {
      this.reset();
      for (const c of app.pool.all()) this.set({ connector: c.id }, c.health === 'up' ? 1 : 0);
    },
  });
  new Gauge({
    name: 'pcoip_lb_connector_state',
    help: 'Operator state: 1 for the current state (active, drain, maint), 0 for the others',
    labelNames: ['connector', 'state'],
    registers,
    collect() {
      this.reset();
      for (const c of app.pool.all()) for (const state of CONNECTOR_STATES) this.set({ connector: c.id, state }, c.state === state ? 1 : 0);
    },
  });
  new Gauge({
    name: 'pcoip_lb_connector_pinned_clients',
    help: 'Clients whose affinity record names this Connector',
    labelNames: ['connector'],
    registers,
    collect() {
      this.reset();
      const counts = new Map<string, number>(connectorIds().map((id) => [id, 0]));
      for (const entry of app.affinity.all()) counts.set(entry.connectorId, (counts.get(entry.connectorId) ?? 0) + 1);
      for (const [connector, n] of counts) this.set({ connector }, n);
    },
  });
  new Gauge({
    name: 'pcoip_lb_affinity_entries',
    help: 'Clients in the affinity table (pinned to a Connector)',
    registers,
    collect() {
      this.set(app.affinity.size);
    },
  });
  new Counter({
    name: 'pcoip_lb_placements_total',
    help: 'Placement decisions, by Connector and reason (pinned: followed an affinity record; placed: new client; repinned: moved off an unusable Connector)',
    labelNames: ['connector', 'reason'],
    registers,
    collect() {
      this.reset();
      for (const [key, n] of app.placer.decisionCounts) {
        const bar = key.indexOf('|');
        this.inc({ reason: key.slice(0, bar), connector: key.slice(bar + 1) }, n);
      }
    },
  });
  new Counter({
    name: 'pcoip_lb_refusals_total',
    help: 'Flows refused, by listener and reason',
    labelNames: ['listener', 'reason'],
    registers,
    collect() {
      this.reset();
      for (const [key, n] of app.stats.refusals) {
        const colon = key.indexOf(':');
        this.inc({ listener: key.slice(0, colon), reason: key.slice(colon + 1) }, n);
      }
    },
  });
  new Counter({
    name: 'pcoip_lb_connect_failures_total',
    help: 'Connects to a Connector that were refused or timed out',
    labelNames: ['connector'],
    registers,
    collect() {
      this.reset();
      for (const [connector, n] of app.stats.connectFailures) this.inc({ connector }, n);
    },
  });

  // Health checks run off the data path, so these are observed directly.
  const checkDuration = new Histogram({
    name: 'pcoip_lb_health_check_duration_seconds',
    help: 'Duration of active health checks, by Connector and check',
    labelNames: ['connector', 'check'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  const checks = new Counter({
    name: 'pcoip_lb_health_checks_total',
    help: 'Active health checks, by Connector, check and result (pass, fail)',
    labelNames: ['connector', 'check', 'result'],
    registers,
  });
  app.health.onRound((connector, round) => {
    for (const r of round.results) {
      checkDuration.observe({ connector, check: r.check }, r.latencyMs / 1000);
      checks.inc({ connector, check: r.check, result: r.ok ? 'pass' : 'fail' });
    }
  });

  collectDefaultMetrics({ register: registry });
  return registry;
}
