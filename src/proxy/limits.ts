import type { Logger } from '../logger.ts';
import { RateLimitedLog } from '../logger.ts';
import { ErrorCodes, type ErrorCode } from '../errors.ts';
import { fdExhaustedMessage } from '../util/fd-exhaustion.ts';
import type { FlowStats, ListenerName } from './flow-stats.ts';

/**
 * Per-client admission counting for the listeners: how many connections (TCP) or flows (UDP)
 * each client holds right now, against a cap. "Client" is the affinity client key (the address
 * masked by affinity.ipv4Prefix / ipv6Prefix), the same unit the affinity table pins: an
 * attacker with a whole IPv6 /64 is one client, as is an office behind one NAT address.
 * No I/O; the listeners call acquire/release.
 */
export class PerClientLimit {
  private readonly counts = new Map<string, number>();
  private max: number;

  constructor(max: number) {
    this.max = max;
  }

  /** Applies a new cap; holders above it keep what they have and new ones are refused until they drop below. */
  setMax(max: number): void {
    this.max = max;
  }

  get limit(): number {
    return this.max;
  }

  /** Counts one more for `key` and returns true, or returns false (and counts nothing) at the cap. */
  tryAcquire(key: string): boolean {
    const held = this.counts.get(key) ?? 0;
    if (held >= this.max) return false;
    this.counts.set(key, held + 1);
    return true;
  }

  release(key: string): void {
    const held = this.counts.get(key);
    if (held === undefined) return;
    if (held <= 1) this.counts.delete(key);
    else this.counts.set(key, held - 1);
  }

  held(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  /** Clients holding at least one; 0 once every flow ended (what leak checks assert). */
  get clients(): number {
    return this.counts.size;
  }
}

/**
 * Counts a refused connection or flow in FlowStats and logs it at warn level, at most once a
 * second per reason (each line says how many were suppressed), so a flood of one kind cannot
 * hide another nor fill the disk.
 */
export class RefusalLog {
  private readonly perReason = new Map<string, RateLimitedLog>();
  private readonly listener: ListenerName;
  private readonly stats: FlowStats;
  private readonly logger: Logger;

  constructor(listener: ListenerName, stats: FlowStats, logger: Logger) {
    this.listener = listener;
    this.stats = stats;
    this.logger = logger;
  }

  refuse(now: number, reason: string, code: ErrorCode, fields: Record<string, unknown>, message: string): void {
    this.stats.refused(this.listener, reason);
    let log = this.perReason.get(reason);
    if (!log) {
      log = new RateLimitedLog();
      this.perReason.set(reason, log);
    }
    log.maybe(now, (suppressed) => this.logger.warn({ listener: this.listener, reason, code, ...fields, suppressed }, message));
  }

  /**
   * pcoip-lb itself is out of descriptors (EMFILE/ENFILE/ENOBUFS): the flow is refused as
   * `fd-exhausted`, logged as PLB_E_FD_EXHAUSTED, and never counted against a Connector.
   */
  fdExhausted(now: number, errno: string, fields: Record<string, unknown>): void {
    this.refuse(now, 'fd-exhausted', ErrorCodes.FD_EXHAUSTED, { errno, ...fields }, fdExhaustedMessage(errno, 'new connections and flows are refused until descriptors are free'));
  }
}
