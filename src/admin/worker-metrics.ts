import type { Registry } from 'prom-client';
import type { AdminView, WorkerProcessView } from './view.ts';
import { collected, type Labels } from './collected-metrics.ts';

/**
 * Per-worker process figures (multi-core mode), labelled `worker`: the primary's own
 * `process_*` metrics describe the primary only, which in multi-core mode moves no traffic.
 * Read when scraped from the workers' last reports (once a second); absent in a single process.
 */
export function registerWorkerMetrics(registry: Registry, view: AdminView): void {
  const workers = view.workerProcesses?.bind(view);
  if (!workers) return;
  /** One sample per worker; `value` undefined: not known (yet), no sample. */
  const perWorker = (value: (w: WorkerProcessView) => number | undefined) =>
    function* (): Iterable<[Labels, number]> {
      for (const w of workers()) {
        const v = value(w);
        if (v !== undefined) yield [{ worker: String(w.index) }, v];
      }
    };
  const known = (n: number) => (n >= 0 ? n : undefined);
  collected(registry, 'gauge', 'pcoip_lb_worker_up',
    'Worker process listening and reporting (1) or not (0: exited, being restarted). A worker stuck at 0 means its share of new connections is refused by the kernel no more, but its restart keeps failing; see the log',
    ['worker'], perWorker((w) => (w.up ? 1 : 0)));
  collected(registry, 'counter', 'pcoip_lb_worker_restarts_total',
    'Times a worker process exited unexpectedly and was restarted (its flows were lost with it)',
    ['worker'], perWorker((w) => w.restarts));
  collected(registry, 'gauge', 'pcoip_lb_worker_cpu_seconds',
    'CPU time used by the current worker process since it started, by mode (user, system); resets when a worker is restarted',
    ['worker', 'mode'], function* () {
      for (const w of workers()) {
        yield [{ worker: String(w.index), mode: 'user' }, w.cpuUserSeconds];
        yield [{ worker: String(w.index), mode: 'system' }, w.cpuSystemSeconds];
      }
    });
  collected(registry, 'gauge', 'pcoip_lb_worker_resident_memory_bytes', 'Resident memory of each worker process', ['worker'], perWorker((w) => w.residentBytes));
  collected(registry, 'gauge', 'pcoip_lb_worker_heap_used_bytes', 'V8 heap in use in each worker process', ['worker'], perWorker((w) => w.heapUsedBytes));
  // The data path's descriptors are the workers' (the primary's process_open_fds counts only its own).
  collected(registry, 'gauge', 'pcoip_lb_worker_open_fds',
    'Open file descriptors of each worker process (sampled every 10 s); with pcoip_lb_worker_max_fds, what the fd-usage alert watches in multi-core mode',
    ['worker'], perWorker((w) => known(w.openFds)));
  collected(registry, 'gauge', 'pcoip_lb_worker_max_fds', 'File descriptor limit (soft RLIMIT_NOFILE) of each worker process', ['worker'], perWorker((w) => known(w.maxFds)));
  collected(registry, 'gauge', 'pcoip_lb_worker_event_loop_utilization',
    'Share of the last second each worker event loop was busy (0-1). Near 1 the worker is saturated: datagrams queue and latency grows',
    ['worker'], perWorker((w) => w.eventLoopUtilization));
}
