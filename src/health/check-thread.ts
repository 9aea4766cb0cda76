import { Worker } from 'node:worker_threads';
import type { Logger } from '../logger.ts';
import { runRound, type CheckOptions, type CheckTarget, type RoundResult } from './checks.ts';
import type { RoundRequest } from './check-worker.ts';

/** The compiled build runs check-worker.js, the sources check-worker.ts (Node runs TypeScript). */
const WORKER_ENTRY = new URL(`./check-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url);
/** The thread only does TLS handshakes and small HTTP exchanges. */
const THREAD_HEAP_MB = 32;

/**
 * Runs health-check rounds on a thread of their own. An HTTPS check is a full TLS handshake
 * (agent: false, a check tests connecting too), which on the caller's event loop blocked it for
 * milliseconds per Connector per interval — in `workers: 1` that loop is the UDP data path, and
 * every datagram arriving meanwhile waited (bench/README.md, "bench:latency"). On its own thread
 * the handshake's CPU still has to be found, but the data path no longer waits for it.
 *
 * If the thread cannot start or dies, rounds run on the caller's loop again (logged once):
 * health checking never stops because of this optimisation.
 */
export class CheckThread {
  private worker: Worker | undefined;
  private failed = false;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: RoundResult) => void; target: CheckTarget; options: CheckOptions }>();
  private readonly logger: Logger;

  constructor(logger: Logger) {
    this.logger = logger;
  }

  run(target: CheckTarget, options: CheckOptions): Promise<RoundResult> {
    // Only what the checks read crosses the thread boundary (a ConnectorView has more).
    const plain: CheckTarget = { address: target.address, ports: { broker: target.ports.broker, pcoip: target.ports.pcoip } };
    const worker = this.thread();
    if (!worker) return runRound(plain, options);
    return new Promise((resolve) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve, target: plain, options });
      worker.postMessage({ id, target: plain, options } satisfies RoundRequest);
    });
  }

  /** Ends the thread; rounds still out are dropped unanswered (their monitor has stopped). */
  close(): void {
    this.pending.clear();
    void this.worker?.terminate();
    this.worker = undefined;
  }

  private thread(): Worker | undefined {
    if (this.worker || this.failed) return this.worker;
    try {
      const worker = new Worker(WORKER_ENTRY, { resourceLimits: { maxOldGenerationSizeMb: THREAD_HEAP_MB } });
      worker.unref();
      worker.on('message', (msg: { id: number; result: RoundResult }) => {
        this.pending.get(msg.id)?.resolve(msg.result);
        this.pending.delete(msg.id);
      });
      worker.on('error', (err) => this.fallBack(err));
      worker.on('exit', (code) => {
        if (this.worker === worker) this.fallBack(new Error(`health-check thread exited (${code})`));
      });
      this.worker = worker;
    } catch (err) {
      this.fallBack(err);
    }
    return this.worker;
  }

  private fallBack(err: unknown): void {
    this.failed = true;
    this.worker = undefined;
    this.logger.warn({ err }, 'health-check thread failed; running health checks on the main event loop');
    const lost = [...this.pending.values()];
    this.pending.clear();
    for (const p of lost) void runRound(p.target, p.options).then(p.resolve);
  }
}
