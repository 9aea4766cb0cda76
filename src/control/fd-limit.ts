import { MAX_KEPT_UPSTREAMS } from '../proxy/broker-connection.ts';
import { readFileSync } from 'node:fs';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../logger.ts';

/**
 * The process's file-descriptor limit (RLIMIT_NOFILE). Every client connection costs pcoip-lb
 * two descriptors (client + Connector side) and every UDP flow one, so the soft limit many
 * systems start services with (1024) is reached long before the configured connection limits.
 *
 * Raising the soft limit to the hard limit needs no privilege, and Node.js already does it
 * while it starts (src/node.cc, per-process initialisation, before any JavaScript runs; worker processes
 * are Node processes too): `prlimit --nofile=256:4096 node …` runs with 4096. What is left to
 * pcoip-lb is to say which limit it got and whether the configured limits fit in it
 * (docs/decisions.md). The hard limit itself is the service manager's (LimitNOFILE=, ulimit -Hn,
 * docker --ulimit).
 */
export interface FdLimits {
  /** Infinity for "unlimited". */
  soft: number;
  hard: number;
}

/** The "Max open files" row of /proc/<pid>/limits. */
export function parseNofile(limitsText: string): FdLimits | undefined {
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(limitsText);
  if (!m) return undefined;
  const value = (v: string) => (v === 'unlimited' ? Infinity : Number(v));
  return { soft: value(m[1]!), hard: value(m[2]!) };
}

/** This process's limits (Linux /proc), or undefined where they cannot be read. */
export function readFdLimits(pid: number | 'self' = 'self'): FdLimits | undefined {
  try {
    return parseNofile(readFileSync(`/proc/${pid}/limits`, 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * Descriptors one process may need when every limit in the config is reached: 2 per TCP
 * connection (client + Connector; a terminating broker's connection may keep up to
 * MAX_KEPT_UPSTREAMS upstreams, one per Connector its requests went to), 1 per UDP flow, 2 per
 * Connector for a health round, plus
 * the admin server's connection cap and a margin for logs, DNS and the IPC channel.
 * With workers the limits hold per worker, so this is per process too.
 */
export function fdsNeededAtLimits(config: Config, adminConnections: number): number {
  const { broker, pcoipTcp, pcoipUdp } = config.listeners;
  return (
    (broker?.tls.mode === 'terminate' ? 1 + MAX_KEPT_UPSTREAMS : 2) * (broker?.maxConnections ?? 0) +
    2 * (pcoipTcp?.maxConnections ?? 0) +
    (pcoipUdp?.maxFlows ?? 0) +
    2 * config.connectors.length +
    (config.admin.enabled ? adminConnections : 0) +
    64
  );
}

const show = (n: number) => (n === Infinity ? 'unlimited' : String(n));
const HOW_TO_RAISE = 'raise the hard limit with LimitNOFILE= (systemd), ulimit -Hn (shell) or --ulimit nofile= (docker); README "File descriptors"';

/** The one start-up line about descriptors: the limit in force, and whether the configured limits fit in it. */
export function logFdLimit(logger: Logger, limits: FdLimits | undefined, needed: number): void {
  if (!limits) {
    logger.info({ fdsNeededAtLimits: needed }, `file descriptor limit unknown (no /proc/self/limits); the configured limits may need up to ${needed}`);
    return;
  }
  const fields = { fdLimit: { soft: show(limits.soft), hard: show(limits.hard) }, fdsNeededAtLimits: needed };
  const what =
    limits.soft >= limits.hard
      ? `file descriptor limit ${show(limits.soft)} (the soft limit is the hard limit: Node.js raises it at start)`
      : `file descriptor limit ${show(limits.soft)} (below the hard limit ${show(limits.hard)}: Node.js could not raise it)`;
  if (limits.soft < needed) {
    logger.warn(
      { ...fields, code: 'PLB_W_FD_LIMIT' },
      `${what}; the configured connection and flow limits may need up to ${needed}, so clients would be refused (PLB_E_FD_EXHAUSTED) before those limits: ${HOW_TO_RAISE}`,
    );
  } else {
    logger.info(fields, `${what}; the configured limits need at most ${needed}`);
  }
}
