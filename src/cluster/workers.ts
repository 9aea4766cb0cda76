import { availableParallelism } from 'node:os';
import type { Config } from '../config/schema.ts';

/**
 * How many worker processes `workers` means here. "auto" is one per core, in every mode (learned
 * broker sessions are replicated between workers like pins), except where more than one cannot
 * work: SO_REUSEPORT load sharing is Linux-only, and the experimental rewriteTarget with a port 0
 * would bind a different port in every worker. Pure; the caller passes the machine.
 */
export function resolveWorkers(config: Config, cores = availableParallelism(), platform: NodeJS.Platform = process.platform): { count: number; why: string } {
  if (typeof config.workers === 'number') return { count: config.workers, why: 'workers in the config' };
  if (platform !== 'linux') return { count: 1, why: `workers: auto is 1 on ${platform} (SO_REUSEPORT load sharing needs Linux)` };
  if ([config.listeners.pcoipUdp, config.listeners.pcoipTcp].some((l) => l !== undefined && l.dataPlane !== 'user')) {
    return { count: 1, why: 'workers: auto is 1 with dataPlane kernel or auto (the kernel forwards the media; one process places the clients)' };
  }
  const rewrite = config.listeners.broker?.rewriteTarget;
  if (rewrite?.enabled && Object.values(rewrite.ports).some((p) => p === 0)) {
    return { count: 1, why: 'workers: auto is 1 with rewriteTarget ports of 0 (each worker would bind a different port)' };
  }
  return { count: Math.max(1, cores), why: `workers: auto, ${cores} core(s)` };
}
