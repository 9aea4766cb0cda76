/** Reads CPU time and memory of processes from Linux /proc (the benches run on Linux only). */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ: 100 on every Linux architecture Node supports

interface StatFields {
  ppid: number;
  /** utime + stime, in seconds, of every thread of the process. */
  cpuSeconds: number;
}

function readStat(pid: number): StatFields | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // the process has exited
  }
  // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
  const ppid = Number(rest[1]);
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  return { ppid, cpuSeconds: (utime + stime) / CLOCK_TICKS_PER_SECOND };
}

/** The direct children of `pid` (nginx's workers under its master, for example). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    if (readStat(Number(name))?.ppid === pid) out.push(Number(name));
  }
  return out;
}

/** CPU seconds (user + system) used so far by `pid` and its direct children that are alive now. */
export function cpuSecondsOfTree(pid: number): number {
  let total = readStat(pid)?.cpuSeconds ?? 0;
  for (const child of childPids(pid)) total += readStat(child)?.cpuSeconds ?? 0;
  return total;
}

/** Resident set size in bytes (VmRSS), or undefined if the process is gone. */
export function rssBytes(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Open file descriptors of `pid` (counts entries of /proc/<pid>/fd). */
export function openFds(pid: number): number | undefined {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return undefined;
  }
}

/** The 1-minute load average, for the report header (a busy machine skews every figure). */
export function loadAverage(): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return 'unknown';
  }
}

/** The soft limit on open files of `pid` (from /proc/<pid>/limits), or undefined. */
export function openFileLimit(pid: number): number | undefined {
  try {
    const match = /^Max open files\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Inodes of the sockets `pid` holds open (from the /proc/<pid>/fd links "socket:[N]"). */
export function socketInodes(pid: number): number[] {
  const out: number[] = [];
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) out.push(Number(m[1]));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/**
 * Nanoseconds the main thread of `pid` has spent runnable but waiting for a CPU (the second
 * field of /proc/<pid>/schedstat): on a shared machine, the delay the scheduler adds on top of
 * whatever the process does itself.
 */
export function runQueueWaitNs(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]);
  } catch {
    return 0;
  }
}
