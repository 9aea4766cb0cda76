/**
 * Summarises a V8 .cpuprofile (node --cpu-prof): self time per function, busiest first.
 * Self time of a node = the time deltas of the samples that landed in it (not its callees).
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
}

interface CpuProfile {
  /** Monotonic clock, µs (the clock of process.hrtime). */
  startTime: number;
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  name: string;
  /** file:line (relative to cwd when it is a file of this project), or "native"/"node:…". */
  where: string;
  ms: number;
  /** Share of the busy (non-idle) time. */
  percent: number;
}

export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  busyMs: number;
  top: SelfTime[];
}

function location(frame: ProfileNode['callFrame']): string {
  if (!frame.url) return 'native';
  const url = frame.url.startsWith('file://') ? relative(process.cwd(), new URL(frame.url).pathname) : frame.url;
  return `${url}:${frame.lineNumber + 1}`;
}

/** A time window on the monotonic clock in µs; samples outside it (start-up, shutdown) are left out. */
export interface Window {
  fromUs: number;
  toUs: number;
}

export function summariseProfile(profile: CpuProfile, topN = 20, window?: Window): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<string, { name: string; where: string; us: number }>();
  let totalUs = 0;
  let idleUs = 0;
  let at = profile.startTime;
  profile.samples.forEach((id, i) => {
    // timeDeltas[i] is the time since the previous sample; charge it to this sample's function.
    const us = profile.timeDeltas[i] ?? 0;
    at += us;
    if (window && (at < window.fromUs || at > window.toUs)) return;
    totalUs += us;
    const node = byId.get(id);
    if (!node) return;
    const full = node.callFrame.functionName || '(anonymous)';
    // V8 names a regular expression's code after its source, which can be very long.
    const name = full.length > 60 ? `${full.slice(0, 57)}...` : full;
    if (name === '(idle)') {
      idleUs += us;
      return;
    }
    const where = location(node.callFrame);
    const key = `${name}@${where}`;
    const entry = selfUs.get(key) ?? { name, where, us: 0 };
    entry.us += us;
    selfUs.set(key, entry);
  });
  const busyUs = totalUs - idleUs;
  const top = [...selfUs.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, topN)
    .map((e) => ({ name: e.name, where: e.where, ms: e.us / 1000, percent: busyUs > 0 ? (100 * e.us) / busyUs : 0 }));
  return { totalMs: totalUs / 1000, idleMs: idleUs / 1000, busyMs: busyUs / 1000, top };
}

export function summariseProfileFile(path: string, topN = 20, window?: Window): ProfileSummary {
  return summariseProfile(JSON.parse(readFileSync(path, 'utf8')) as CpuProfile, topN, window);
}
