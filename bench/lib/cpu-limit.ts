/**
 * Confines processes to a share of one CPU, to play a proxy host that is out of CPU: a cgroup
 * with a CFS quota (v1 `cpu.cfs_quota_us`, or v2 `cpu.max`), named by the caller (prefix it with
 * something unique). Linux and root only; `limitCpu` says why not otherwise. The quota period is
 * 10 ms, so a throttled process waits at most ~10 ms at a time: the overload shows as a queue that
 * stays full, not as long freezes.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const PERIOD_US = 10_000;

export interface CpuLimit {
  add(pid: number): void;
  /** Moves the processes still in it back to the root group and removes it. */
  remove(): void;
}

export function limitCpu(name: string, percentOfOneCpu: number): CpuLimit | string {
  const quota = Math.max(1000, Math.round((PERIOD_US * percentOfOneCpu) / 100));
  const v1 = '/sys/fs/cgroup/cpu';
  const v2 = '/sys/fs/cgroup';
  let dir: string;
  let root: string;
  try {
    if (existsSync(join(v1, 'cpu.cfs_quota_us')) || existsSync(join(v1, 'cgroup.procs'))) {
      root = v1;
      dir = join(v1, name);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'cpu.cfs_period_us'), String(PERIOD_US));
      writeFileSync(join(dir, 'cpu.cfs_quota_us'), String(quota));
    } else if (existsSync(join(v2, 'cgroup.controllers')) && readFileSync(join(v2, 'cgroup.subtree_control'), 'utf8').includes('cpu')) {
      root = v2;
      dir = join(v2, name);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'cpu.max'), `${quota} ${PERIOD_US}`);
    } else {
      return 'no cgroup cpu controller found (/sys/fs/cgroup/cpu or cgroup v2 with cpu enabled)';
    }
  } catch (err) {
    return `cannot create a cgroup (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}; needs root)`;
  }
  return {
    add: (pid) => writeFileSync(join(dir, 'cgroup.procs'), String(pid)),
    remove: () => {
      try {
        for (const pid of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) writeFileSync(join(root, 'cgroup.procs'), pid);
        rmdirSync(dir);
      } catch {
        // already gone
      }
    },
  };
}
