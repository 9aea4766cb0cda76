import type { Logger } from '../logger.ts';
import { RateLimitedLog } from '../logger.ts';
import { ErrorCodes } from '../errors.ts';
import { diffElements, type ElementChanges, type MapElement } from './plan.ts';
import { renderElementChanges } from './nft-script.ts';

/**
 * Keeps the kernel's client maps equal to what the placer says, in batches: any number of
 * changes requested while a batch is being written go into the next one, and at most one `nft`
 * process runs at a time. So a logon storm of N new clients costs a few nft runs, not N, and a
 * packet never waits for a process (it reaches user space until its element is in).
 *
 * The maps are a replica of the placer's pins; `programmed` is what this process last wrote.
 * After a failed batch the kernel's state is unknown, so the next one rewrites every element
 * (one transaction: flush + add), which also repairs an element someone deleted by hand.
 */

export interface ElementSyncDeps {
  /** Runs one nft script as one transaction; rejects with a PlbError when nft refuses it. */
  apply(script: string): Promise<void>;
  /** The elements that should be in the kernel now (see plan.ts desiredElements). */
  desired(): Map<string, MapElement>;
  /** A script that replaces every element at once (nft-script.ts renderReplaceElements). */
  replaceAll(elements: readonly MapElement[]): string;
  table: string;
  logger: Logger;
  /** How long a request waits for others to join its batch. */
  coalesceMs?: number;
  /** After a failed batch, the next try waits this long. */
  retryMs?: number;
  /**
   * Work that must wait until the elements of the batch starting now are in the kernel (deleting
   * conntrack entries, which would otherwise be re-created on the old path): taken when a batch
   * starts, run by `applied` once it succeeded, handed back with `untake` when it failed.
   */
  take?: () => unknown[];
  untake?: (items: unknown[]) => void;
  /** After a successful batch: what it changed, and what `take` gave when it started. */
  applied?: (changes: ElementChanges, taken: unknown[]) => Promise<void>;
}

export class ElementSync {
  private programmed = new Map<string, MapElement>();
  private running: Promise<void> | undefined;
  private dirty = false;
  private unknown = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly errorLog = new RateLimitedLog(10_000);
  private readonly deps: ElementSyncDeps;
  /** Counters for /status and tests. */
  readonly counts = { batches: 0, failures: 0, added: 0, deleted: 0 };

  constructor(deps: ElementSyncDeps) {
    this.deps = deps;
  }

  /** Elements this process has written and believes are in the kernel. */
  get elements(): ReadonlyMap<string, MapElement> {
    return this.programmed;
  }

  /** After the whole table was (re)written with these elements. */
  reset(written: ReadonlyMap<string, MapElement>): void {
    this.programmed = new Map(written);
    this.unknown = false;
  }

  /**
   * Asks for the kernel to match `desired()`; resolves once a batch that started after this call
   * has finished (whether it succeeded: see `counts.failures`). Never rejects.
   */
  request(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.dirty = true;
    this.running ??= this.loop();
    return this.running;
  }

  /** No more batches (the table is about to go). Waits for the one in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.running;
  }

  private async loop(): Promise<void> {
    try {
      await new Promise((r) => setTimeout(r, this.deps.coalesceMs ?? 5));
      while (this.dirty && !this.stopped) {
        this.dirty = false;
        await this.once();
      }
    } catch (err) {
      // A throw outside the nft run (rendering an element, a dependency): counted and logged, so
      // request() still never rejects; the next request (or the once-a-second resync) tries again.
      this.counts.failures++;
      this.errorLog.maybe(Date.now(), (suppressed) =>
        this.deps.logger.error({ code: ErrorCodes.KERNEL_NFT, err: (err as Error).message, suppressed }, 'kernel data plane: a client map batch failed before reaching nft'),
      );
    } finally {
      this.running = undefined;
    }
  }

  private async once(): Promise<void> {
    const taken = this.deps.take?.() ?? [];
    const desired = this.deps.desired();
    const changes = diffElements(this.programmed, desired);
    const script = this.unknown ? this.deps.replaceAll([...desired.values()]) : renderElementChanges(this.deps.table, changes);
    if (script === '') {
      if (taken.length > 0) await this.deps.applied?.(changes, taken);
      return;
    }
    this.counts.batches++;
    try {
      await this.deps.apply(script);
      this.programmed = desired;
      this.unknown = false;
      this.counts.added += changes.adds.length;
      this.counts.deleted += changes.deletes.length;
    } catch (err) {
      this.deps.untake?.(taken);
      this.counts.failures++;
      this.unknown = true;
      this.errorLog.maybe(Date.now(), (suppressed) =>
        this.deps.logger.error({ code: ErrorCodes.KERNEL_NFT, err: (err as Error).message, suppressed }, 'kernel data plane: writing client map elements failed; rewriting all of them shortly'),
      );
      if (!this.stopped && !this.retryTimer) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          void this.request();
        }, this.deps.retryMs ?? 1000);
        this.retryTimer.unref();
      }
      return;
    }
    await this.deps.applied?.(changes, taken);
  }
}
