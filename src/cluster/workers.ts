import { availableParallelism } from 'node:os';
import type { Config } from '../config/schema.ts';

/**
 * How many worker processes `workers` means here. "auto" is one per core, except where more
 * than one cannot work: SO_REUSEPORT load sharing is Linux-only, and a terminating broker (or
 * SNI routing) keeps learned sessions in one process. Pure; the caller passes the machine.
 */
export function resolveWorkers(config: Config, cores = availableParallelism(), platform: NodeJS.Platform = process.platform): { count: number; why: string } {
  if (typeof config.workers === 'number') return { count: config.workers, why: 'workers in the config' };
  if (platform !== 'linux') return { count: 1, why: `workers: auto is 1 on ${platform} (SO_REUSEPORT load sharing needs Linux)` };
  if ([config.listeners.pcoipUdp, config.listeners.pcoipTcp].some((l) => l !== undefined && l.dataPlane !== 'user')) {
    return { count: 1, why: 'workers: auto is 1 with dataPlane kernel or auto (the kernel forwards the media; one process places the clients)' };
  }
  if (config.listeners.broker?.tls.mode === 'terminate' || config.listeners.pcoipTcp?.sniRouting) {
    return { count: 1, why: 'workers: auto is 1 with a terminating broker or sniRouting (learned sessions live in one process)' };
  }
  return { count: Math.max(1, cores), why: `workers: auto, ${cores} core(s)` };
}
