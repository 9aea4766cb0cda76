import type { Config } from '../config/schema.ts';
import { connectorsWithRuntimeState, type ConfigDiff } from '../config/diff.ts';
import { Pool } from '../pool/pool.ts';
import { Placer } from '../balance/placer.ts';
import { SessionTable } from '../balance/sessions.ts';
import { FlowStats } from '../proxy/flow-stats.ts';
import { SessionRegistry } from '../sessions/registry.ts';

/** Learned sessions (cookies, log ids, allocations) kept per kind at most; the oldest go first. */
const MAX_LEARNED_SESSIONS = 100_000;
/** The per-session view (docs/sessions.md): sessions kept at most (ended ones go first), how long ended ones stay listed, when a stalled login ends. */
const MAX_SESSION_VIEWS = 50_000;
const KEEP_ENDED_SESSIONS_MS = 10 * 60_000;
const LOGIN_TIMEOUT_MS = 10 * 60_000;

/**
 * The state owners of one process, one per kind (docs/state.md): the pool (which Connectors
 * exist, their operator state and health), the placer (affinity pins and the leases of open
 * flows), the session table (what the broker exchange taught), and the flow counters. Every
 * process role has exactly these; what differs by role is who else writes them (the health
 * monitor in a control process, a replica's remote changes in a worker or a clustered instance).
 */
export class ProcessState {
  readonly pool: Pool;
  readonly placer: Placer;
  readonly sessions: SessionTable;
  readonly stats = new FlowStats();
  /** The per-session view: broker exchange + 4172/TCP + UDP flows and their media quality (observability only). */
  readonly registry: SessionRegistry;
  private sweepTimer: NodeJS.Timeout | undefined;
  private ttlMs: number;

  constructor(config: Config) {
    this.pool = new Pool(config.connectors);
    this.placer = new Placer(this.pool, config.affinity.ttl, { ...config.balance, ...config.affinity, onDown: config.health.onDown });
    this.sessions = new SessionTable({ ttlMs: config.affinity.ttl, maxEntries: MAX_LEARNED_SESSIONS });
    this.ttlMs = config.affinity.ttl;
    this.registry = new SessionRegistry({
      maxSessions: MAX_SESSION_VIEWS,
      keepEndedMs: KEEP_ENDED_SESSIONS_MS,
      loginTimeoutMs: LOGIN_TIMEOUT_MS,
      metering: config.listeners.pcoipUdp?.mediaQuality ?? true,
    });
    // Allocations learned here or replicated from elsewhere join their sessions (and name them).
    this.sessions.onLearn((record, origin) => this.registry.learned(record, origin, Date.now()));
  }

  /** Expired pins and sessions only cost memory: sweeping once a minute (or per TTL/4) is plenty. */
  startSweeps(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = setInterval(
      () => {
        const now = Date.now();
        this.placer.sweep(now);
        this.sessions.sweep(now);
        this.registry.sweep(now);
      },
      Math.max(1000, Math.min(60_000, this.ttlMs / 4)),
    );
    this.sweepTimer.unref();
  }

  stopSweeps(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
  }

  /**
   * Applies a reloaded config to the owners: Connectors added/removed/changed (runtime state
   * kept), balance and affinity settings; pins and sessions of removed Connectors dropped.
   * Returns how many pins were dropped.
   */
  reload(from: Config, running: Config, diff: ConfigDiff, now = Date.now()): number {
    this.pool.replaceConfig(connectorsWithRuntimeState(from.connectors, running.connectors, (id) => this.pool.get(id)?.state));
    let pinsDropped = 0;
    for (const id of diff.connectors.removed) {
      pinsDropped += this.placer.forgetConnector(id, now);
      this.sessions.forgetConnector(id);
    }
    this.placer.setOptions({ ...running.balance, ...running.affinity, onDown: running.health.onDown });
    this.placer.setTtl(running.affinity.ttl);
    this.sessions.setTtl(running.affinity.ttl);
    this.registry.setMetering(running.listeners.pcoipUdp?.mediaQuality ?? true);
    if (running.affinity.ttl !== this.ttlMs) {
      this.ttlMs = running.affinity.ttl;
      if (this.sweepTimer) this.startSweeps();
    }
    return pinsDropped;
  }
}
