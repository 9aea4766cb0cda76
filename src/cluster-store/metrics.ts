import { Histogram, type Registry } from 'prom-client';
import { collected } from '../admin/collected-metrics.ts';

/**
 * The cluster store's own numbers, kept as plain counters by the replica and exposed to
 * Prometheus by `registerMetrics` (the admin server's registry calls every provider it is
 * given). Look-ups are the one store call on a flow's path, so their latency is observed
 * directly into a histogram; everything else is read when scraped.
 */
export type LookupResult = 'hit' | 'miss' | 'timeout' | 'store-down' | 'invalid' | 'error';
export type InvalidSource = 'lookup' | 'message' | 'operator' | 'reconcile' | 'heartbeat';

export class ClusterStoreStats {
  up = false;
  instances = 0;
  readonly lookups = new Map<string, number>();
  readonly invalid = new Map<InvalidSource, number>();
  writes = 0;
  /** Writes not sent because the store was away (reconcile re-publishes what still matters). */
  writesSkipped = 0;
  /** Writes dropped because too many were pending (bounded memory). */
  writesDropped = 0;
  failedBatches = 0;
  /** Commands the store answered with an error (an ACL without a needed command, out of memory). */
  writesRefused = 0;
  reconciles = 0;
  readonly lookupSeconds = new Histogram({
    name: 'pcoip_lb_cluster_lookup_duration_seconds',
    help: 'Cluster store look-ups on a client\'s first flow here (answered ones), by kind',
    labelNames: ['kind'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [],
  });

  lookup(kind: string, result: LookupResult): void {
    const key = `${kind}|${result}`;
    this.lookups.set(key, (this.lookups.get(key) ?? 0) + 1);
  }

  get lookupTimeouts(): number {
    let n = 0;
    for (const [key, v] of this.lookups) if (key.endsWith('|timeout')) n += v;
    return n;
  }

  invalidValue(source: InvalidSource): void {
    this.invalid.set(source, (this.invalid.get(source) ?? 0) + 1);
  }
}

export function registerClusterMetrics(registry: Registry, stats: ClusterStoreStats): void {
  collected(registry, 'gauge', 'pcoip_lb_cluster_store_up', 'Cluster store usable (1) or not (0: this instance decides alone)', [], function* () {
    yield [{}, stats.up ? 1 : 0];
  });
  collected(registry, 'gauge', 'pcoip_lb_cluster_instances', 'Instances with a live heartbeat in the store (this one included)', [], function* () {
    yield [{}, stats.instances];
  });
  registry.registerMetric(stats.lookupSeconds);
  collected(registry, 'counter', 'pcoip_lb_cluster_lookups_total', 'Cluster store look-ups, by kind and result (hit, miss, timeout, store-down, invalid, error)', ['kind', 'result'], function* () {
    for (const [key, n] of stats.lookups) {
      const [kind, result] = key.split('|') as [string, string];
      yield [{ kind, result }, n];
    }
  });
  collected(registry, 'counter', 'pcoip_lb_cluster_lookup_timeouts_total', 'Look-ups not answered within cluster.timeouts.lookup (the instance decided alone)', [], function* () {
    yield [{}, stats.lookupTimeouts];
  });
  collected(registry, 'counter', 'pcoip_lb_cluster_invalid_values_total', 'Values read from the store that were malformed or named an unknown Connector (ignored), by where they were read', ['source'], function* () {
    for (const [source, n] of stats.invalid) yield [{ source }, n];
  });
  collected(registry, 'counter', 'pcoip_lb_cluster_writes_total', 'Writes sent to the cluster store (pins, sessions, operator state, refreshes)', [], function* () {
    yield [{}, stats.writes];
  });
  collected(registry, 'counter', 'pcoip_lb_cluster_writes_skipped_total', 'Writes not sent because the store was away, dropped because too many were pending, or refused by the store (an error reply)', ['reason'], function* () {
    yield [{ reason: 'store-down' }, stats.writesSkipped];
    yield [{ reason: 'queue-full' }, stats.writesDropped];
    yield [{ reason: 'refused' }, stats.writesRefused];
  });
  collected(registry, 'counter', 'pcoip_lb_cluster_reconciles_total', 'Reconciliations with the store (at start and after every reconnect)', [], function* () {
    yield [{}, stats.reconciles];
  });
}
