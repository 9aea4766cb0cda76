import type { Logger } from '../logger.ts';
import { RateLimitedLog } from '../logger.ts';
import type { LookupQuery, StateChange } from '../state/changes.ts';
import type { StateReplica } from '../state/replica.ts';
import type { FromWorker } from './protocol.ts';

/** A worker never waits longer than this for the primary's answer; it then decides alone. */
export const LOOKUP_TIMEOUT_MS = 1000;

/**
 * A worker's replica: its primary, over the IPC channel. Look-ups are numbered and answered in
 * `answer`; changes from the primary arrive through `deliver`. A primary that does not answer
 * in time (paused, overloaded) leaves the worker to decide by hashing — logged at most once a
 * second, with how many were suppressed.
 */
export class IpcReplica implements StateReplica {
  private readonly send: (msg: FromWorker) => void;
  private readonly logger: Logger;
  private readonly timeoutMs: number;
  private nextId = 1;
  private readonly pending = new Map<number, (change: StateChange | undefined) => void>();
  private readonly slowLog = new RateLimitedLog();
  private remote: ((change: StateChange) => void) | undefined;

  constructor(send: (msg: FromWorker) => void, logger: Logger, timeoutMs = LOOKUP_TIMEOUT_MS) {
    this.send = send;
    this.logger = logger;
    this.timeoutMs = timeoutMs;
  }

  lookup(query: LookupQuery): Promise<StateChange | undefined> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.slowLog.maybe(Date.now(), (suppressed) =>
          this.logger.warn({ query: query.kind, timeoutMs: this.timeoutMs, suppressed }, 'no answer from the primary in time; deciding locally'),
        );
        resolve(undefined);
      }, this.timeoutMs);
      this.pending.set(id, (change) => {
        clearTimeout(timer);
        resolve(change);
      });
      this.send({ type: 'lookup', id, query });
    });
  }

  /** The primary's answer to look-up `id` (late answers, after the deadline, are dropped). */
  answer(id: number, change: StateChange | undefined): void {
    const settle = this.pending.get(id);
    this.pending.delete(id);
    settle?.(change);
  }

  /** A change from the primary (another worker's, or the cluster store's). */
  deliver(change: StateChange): void {
    this.remote?.(change);
  }

  publish(change: StateChange): void {
    this.send({ type: 'publish', change });
  }

  publishLeases(deltas: ReadonlyMap<string, number>): void {
    this.send({ type: 'leases', deltas: [...deltas] });
  }

  onRemote(apply: (change: StateChange) => void): void {
    this.remote = apply;
  }

  async close(): Promise<void> {
    for (const settle of this.pending.values()) settle(undefined);
    this.pending.clear();
  }
}
