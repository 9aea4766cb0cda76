import type { HealthConfig } from '../config/schema.ts';
import { RateLimitedLog, type Logger } from '../logger.ts';
import type { HealthStatus, Pool } from '../pool/pool.ts';
import { readCaFile } from '../config/referenced.ts';
import { ErrorCodes } from '../errors.ts';
import { formatDuration } from '../util/duration.ts';
import { fdExhaustedMessage } from '../util/fd-exhaustion.ts';
import type { CheckOptions, CheckResult, RoundResult } from './checks.ts';
import { CheckThread } from './check-thread.ts';
import { HealthScheduler } from './scheduler.ts';
import { applyRound, FailureWindow, forceDown, initialHealth, type HealthCounters, type RiseFall } from './state.ts';

/**
 * Measures each Connector's health and tells the pool: active check rounds (scheduler + checks)
 * and passive detection (failed connects reported by the listeners) feed one rise/fall state
 * per Connector. Each flip is logged once, with its reason, and written to the pool; everything
 * else reads the pool. The data path only ever calls `reportConnectFailure`, which is O(fall).
 */
export type FlipSource = 'active' | 'passive';

export interface LastRound {
  readonly at: number;
  readonly ok: boolean;
  readonly reason: string;
  readonly checks: readonly CheckResult[];
}

export interface HealthSnapshot {
  readonly status: HealthStatus;
  readonly reason: string;
  /** When the status last changed (or checking started). */
  readonly since: number;
  readonly source: FlipSource | 'initial';
  readonly passes: number;
  readonly failures: number;
  readonly lastRound: LastRound | undefined;
  /** Failed client connects counted in the current passive window. */
  readonly recentConnectFailures: number;
}

interface Tracker {
  /** `address|broker|pcoip`: a Connector that moved is a new machine and starts afresh. */
  target: string;
  counters: HealthCounters;
  since: number;
  source: FlipSource | 'initial';
  reason: string;
  lastRound: LastRound | undefined;
  failures: FailureWindow;
}

/** While the proxy is out of descriptors every round of every Connector hits it: one line per this interval is enough. */
const FD_EXHAUSTED_LOG_INTERVAL_MS = 10_000;

export class HealthMonitor {
  private readonly trackers = new Map<string, Tracker>();
  private readonly fdExhaustedLog = new RateLimitedLog(FD_EXHAUSTED_LOG_INTERVAL_MS);
  private skippedRounds = 0;
  private readonly roundListeners: Array<(id: string, round: RoundResult) => void> = [];
  private readonly pool: Pool;
  private config: HealthConfig;
  private readonly logger: Logger;
  private readonly now: () => number;
  private riseFall: RiseFall;
  private scheduler: HealthScheduler | undefined;
  private checkOptions: CheckOptions;
  /** Rounds run off this event loop (which, with workers: 1, is also the UDP data path). */
  private readonly checks: CheckThread;

  constructor(pool: Pool, config: HealthConfig, logger: Logger, now: () => number = Date.now) {
    this.pool = pool;
    this.config = config;
    this.logger = logger;
    this.now = now;
    this.riseFall = { rise: config.rise, fall: config.fall };
    this.checkOptions = { checks: config.checks, timeoutMs: config.timeout, brokerPath: config.brokerPath, ca: undefined };
    this.checks = new CheckThread(logger);
  }

  /** Reads the CA file (if any) and starts checking every Connector in the pool. */
  start(): void {
    this.checkOptions = { ...this.checkOptions, ca: readCa(this.config) };
    this.scheduler = new HealthScheduler({ intervalMs: this.config.interval, jitter: this.config.jitter }, (id) => this.probe(id));
    this.sync();
  }

  /** Follows the pool after a config change: new Connectors get checked, removed ones forgotten. */
  sync(): void {
    const ids = this.pool.all().map((c) => c.id);
    for (const id of this.trackers.keys()) if (!ids.includes(id)) this.trackers.delete(id);
    for (const id of ids) this.tracker(id);
    this.scheduler?.sync(ids);
  }

  stop(): void {
    this.stopScheduler();
    this.checks.close();
  }

  private stopScheduler(): void {
    this.scheduler?.stop();
    this.scheduler = undefined;
  }

  /**
   * Reload: applies new health settings. Each Connector keeps its measured status and rise/fall
   * counters; a running schedule restarts with the new interval. Throws (changing nothing) when
   * a new CA file cannot be read.
   */
  reconfigure(config: HealthConfig): void {
    const ca = readCa(config);
    const running = this.scheduler !== undefined;
    this.stopScheduler();
    this.config = config;
    this.riseFall = { rise: config.rise, fall: config.fall };
    this.checkOptions = { checks: config.checks, timeoutMs: config.timeout, brokerPath: config.brokerPath, ca };
    if (running) {
      this.scheduler = new HealthScheduler({ intervalMs: config.interval, jitter: config.jitter }, (id) => this.probe(id));
      this.sync();
    }
  }

  /** Calls `listener` after each finished round (metrics: check latency, results). Returns an unsubscribe function. */
  onRound(listener: (id: string, round: RoundResult) => void): () => void {
    this.roundListeners.push(listener);
    return () => {
      const i = this.roundListeners.indexOf(listener);
      if (i >= 0) this.roundListeners.splice(i, 1);
    };
  }

  /** Rounds not counted because pcoip-lb itself was out of file descriptors (PLB_E_FD_EXHAUSTED). */
  get fdExhaustedRounds(): number {
    return this.skippedRounds;
  }

  snapshot(id: string): HealthSnapshot | undefined {
    const t = this.tracker(id);
    if (!t) return undefined;
    const view = this.pool.get(id)!;
    return {
      status: view.health,
      reason: view.healthReason,
      since: t.since,
      source: t.source,
      passes: t.counters.passes,
      failures: t.counters.failures,
      lastRound: t.lastRound,
      recentConnectFailures: t.failures.count(this.now()),
    };
  }

  /**
   * A client's connect to this Connector was refused or timed out (passive detection).
   * `passive.failures` of them within `passive.window` mark the Connector down at once.
   */
  reportConnectFailure(id: string): void {
    if (!this.config.passive.enabled) return;
    const t = this.tracker(id);
    if (!t || t.counters.status === 'down') return;
    if (!t.failures.record(this.now())) return;
    t.failures.clear();
    const outcome = forceDown(t.counters, this.riseFall);
    t.counters = outcome.next;
    const reason = `${this.config.passive.failures} failed connect(s) from clients within ${formatDuration(this.config.passive.window)}`;
    if (outcome.flipped) this.flip(id, t, 'down', reason, 'passive');
  }

  /** One active round for one Connector: run the checks, step the rise/fall state, tell the pool on a flip. */
  private async probe(id: string): Promise<void> {
    const view = this.pool.get(id);
    if (!view) return;
    const round: RoundResult =
      this.checkOptions.checks.length === 0
        ? // No active checks: each round counts as passing, so a Connector marked down by passive
          // detection is tried again after rise × interval.
          { ok: true, reason: '', results: [] }
        : await this.checks.run(view, this.checkOptions);
    const t = this.tracker(id);
    // Removed, or moved to another address while the round ran: this result is about a machine we no longer use.
    if (!t || t.target !== targetOf(view)) return;
    if (round.inconclusive !== undefined) return this.skipRound(id, round.inconclusive);
    t.lastRound = { at: this.now(), ok: round.ok, reason: round.reason, checks: round.results };
    for (const listener of [...this.roundListeners]) listener(id, round);
    const outcome = applyRound(t.counters, round.ok, this.riseFall);
    t.counters = outcome.next;
    if (outcome.flipped) this.flip(id, t, outcome.next.status, round.reason, 'active');
    else if (outcome.next.status === 'down' && !round.ok && round.reason !== t.reason) {
      // Still down, for a new reason: /status shows the latest one; no log line (not a flip).
      t.reason = round.reason;
      this.pool.setHealth(id, 'down', round.reason);
    }
  }

  /**
   * A round whose checks could not open their sockets (EMFILE, ENFILE, ENOBUFS) measured the
   * proxy, not the Connector: it changes no counter and no state, and is logged (rate-limited).
   */
  private skipRound(id: string, errno: string): void {
    this.skippedRounds++;
    this.fdExhaustedLog.maybe(this.now(), (suppressed) =>
      this.logger.error(
        { code: ErrorCodes.FD_EXHAUSTED, errno, connector: id, source: 'health-check', suppressed },
        fdExhaustedMessage(errno, 'health check rounds are skipped (Connectors keep their state) until descriptors are free'),
      ),
    );
  }

  private flip(id: string, t: Tracker, status: HealthStatus, reason: string, source: FlipSource): void {
    const now = this.now();
    const heldMs = now - t.since;
    t.since = now;
    t.source = source;
    t.reason = status === 'down' ? reason : '';
    this.pool.setHealth(id, status, t.reason);
    if (status === 'down') {
      this.logger.warn({ connector: id, health: 'down', reason, source, upForMs: heldMs }, `Connector ${id} is down: ${reason}`);
    } else {
      this.logger.info({ connector: id, health: 'up', source, downForMs: heldMs }, `Connector ${id} is up again`);
    }
  }

  /** The tracker for a Connector in the pool (created, or reset when its address or ports changed). */
  private tracker(id: string): Tracker | undefined {
    const view = this.pool.get(id);
    if (!view) return undefined;
    const target = targetOf(view);
    let t = this.trackers.get(id);
    if (!t || t.target !== target) {
      t = {
        target,
        counters: view.health === 'up' ? initialHealth(this.riseFall) : { status: 'down', passes: 0, failures: this.riseFall.fall },
        since: this.now(),
        source: 'initial',
        reason: view.healthReason,
        lastRound: undefined,
        failures: new FailureWindow(this.config.passive.failures, this.config.passive.window),
      };
      this.trackers.set(id, t);
    }
    return t;
  }
}

function targetOf(view: { address: string; ports: { broker: number; pcoip: number } } | undefined): string {
  return view ? `${view.address}|${view.ports.broker}|${view.ports.pcoip}` : '';
}

function readCa(config: HealthConfig): string | undefined {
  return config.tls.ca === undefined ? undefined : readCaFile(config.tls.ca, 'health.tls.ca', ErrorCodes.HEALTH_TLS_CA);
}
