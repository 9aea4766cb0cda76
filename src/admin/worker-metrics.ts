import { Counter, Gauge, type Registry } from 'prom-client';
import type { AdminView } from './view.ts';

/**
 * Per-worker process figures (multi-core mode), labelled `worker`: the primary's own
 * `process_*` metrics describe the primary only, which in multi-core mode moves no traffic.
 * Read when scraped from the workers' last reports (once a second); absent in a single process.
 */
export function registerWorkerMetrics(registry: Registry, view: AdminView): void {
  const workers = view.workerProcesses?.bind(view);
  if (!workers) return;
  const registers = [registry];
  new Gauge({
    name: 'pcoip_lb_worker_up',
    help: 'Worker process listening and reporting (1) or not (0: exited, being restarted). A worker stuck at 0 means its share of new connections is refused by the kernel no more, but its restart keeps failing; see the log',
    labelNames: ['worker'],
    registers,
    collect() {
      this.reset();
      for (const w of workers()) this.set({ worker: String(w.index) }, w.up ? 1 : 0);
    },
  });
  new Counter({
    name: 'pcoip_lb_worker_restarts_total',
    help: 'Times a worker process exited unexpectedly and was restarted (its flows were lost with it)',
    labelNames: ['worker'],
    registers,
    collect() {
      this.reset();
      for (const w of workers()) this.inc({ worker: String(w.index) }, w.restarts);
    },
  });
  new Gauge({
    name: 'pcoip_lb_worker_cpu_seconds',
    help: 'CPU time used by the current worker process since it started, by mode (user, system); resets when a worker is restarted',
    labelNames: ['worker', 'mode'],
    registers,
    collect() {
      this.reset();
      for (const w of workers()) {
        this.set({ worker: String(w.index), mode: 'user' }, w.cpuUserSeconds);
        this.set({ worker: String(w.index), mode: 'system' }, w.cpuSystemSeconds);
      }
    },
  });
  new Gauge({
    name: 'pcoip_lb_worker_resident_memory_bytes',
    help: 'Resident memory of each worker process',
    labelNames: ['worker'],
    registers,
    collect() {
      this.reset();
      for (const w of workers()) this.set({ worker: String(w.index) }, w.residentBytes);
    },
  });
  new Gauge({
    name: 'pcoip_lb_worker_heap_used_bytes',
    help: 'V8 heap in use in each worker process',
    labelNames: ['worker'],
    registers,
    collect() {
      this.reset();
      for (const w of workers()) this.set({ worker: String(w.index) }, w.heapUsedBytes);
    },
  });
  // The data path's descriptors are the workers' (the primary's process_open_fds counts only its own).
  new Gauge({
    name: 'pcoip_lb_worker_open_fds',
    help: 'Open file descriptors of each worker process (sampled every 10 s); with pcoip_lb_worker_max_fds, what the fd-usage alert watches in multi-core mode',
    labelNames: ['worker'],
    registers,
    collect() {
      this.reset();
      for (const w of workers()) if (w.openFds >= 0) this.set({ worker: String(w.index) }, w.openFds);
    },
  });
  new Gauge({
    name: 'pcoip_lb_worker_max_fds',
    help: 'File descriptor limit (soft RLIMIT_NOFILE) of each worker process',
    labelNames: ['worker'],
    registers,
    collect() {
      this.reset();
      for (const w of workers()) if (w.maxFds >= 0) this.set({ worker: String(w.index) }, w.maxFds);
    },
  });
  new Gauge({
    name: 'pcoip_lb_worker_event_loop_utilization',
    help: 'Share of the last second each worker event loop was busy (0-1). Near 1 the worker is saturated: datagrams queue and latency grows',
    labelNames: ['worker'],
    registers,
    collect() {
      this.reset();
      for (const w of workers()) this.set({ worker: String(w.index) }, w.eventLoopUtilization);
    },
  });
}
