import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, PlbError } from '../errors.ts';
import type { KernelProto } from './plan.ts';
import { firstLines, runTool } from './tools.ts';

/**
 * Connection-tracking entries, through conntrack-tools. NAT is decided on a connection's first
 * packet and kept in its conntrack entry, so a client whose element changed keeps its old path
 * until that entry goes: deleting entries is how a switch, a re-pin or a stop takes effect.
 * Many deletions are one `conntrack -R -` run (one `-D …` command per input line).
 */

/** Which entries to delete; every field narrows. */
export interface ConntrackFilter {
  proto: KernelProto;
  family: 4 | 6;
  /** Original source: a client address or a client-key prefix (`a.b.c.0/24`). */
  source?: string;
  sourcePort?: number;
  /** Original destination: the listener's address (omit for a wildcard listener). */
  destination?: string;
  destinationPort?: number;
  /** Reply source: the Connector the entry was DNATed to. */
  replySource?: string;
}

function checkedAddress(text: string, family: 4 | 6): string {
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  if (isIP(address) !== family) throw new Error(`not an IPv${family} address: "${text}"`);
  if (slash >= 0 && !/^\d{1,3}$/.test(text.slice(slash + 1))) throw new Error(`bad prefix: "${text}"`);
  return text;
}

function checkedPort(p: number): string {
  if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`not a port: ${p}`);
  return String(p);
}

/** One `conntrack -D` command line (arguments only) for a filter. Pure. */
export function deleteCommand(f: ConntrackFilter): string {
  const args = ['-D', '-f', f.family === 4 ? 'ipv4' : 'ipv6', '-p', f.proto];
  if (f.source !== undefined) args.push('-s', checkedAddress(f.source, f.family));
  if (f.destination !== undefined) args.push('-d', checkedAddress(f.destination, f.family));
  if (f.replySource !== undefined) args.push('-r', checkedAddress(f.replySource, f.family));
  if (f.sourcePort !== undefined) args.push('--sport', checkedPort(f.sourcePort));
  if (f.destinationPort !== undefined) args.push('--dport', checkedPort(f.destinationPort));
  return args.join(' ');
}

export class Conntrack {
  private readonly bin: string;

  constructor(bin = 'conntrack') {
    this.bin = bin;
  }

  /** Deletes the entries matching any of the filters (one process for all). A filter that matches nothing is not an error. */
  async delete(filters: readonly ConntrackFilter[]): Promise<void> {
    if (filters.length === 0) return;
    const input = `${filters.map(deleteCommand).join('\n')}\n`;
    // `-R -` opens /dev/stdin, which fails on the socket Node gives a child as stdin: a file it is.
    const dir = await mkdtemp(join(tmpdir(), 'pcoip-lb-conntrack-'));
    let r;
    try {
      await writeFile(join(dir, 'commands'), input, { mode: 0o600 });
      r = await runTool(this.bin, ['-R', join(dir, 'commands')], { timeoutMs: 30_000 });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    if (r.code !== 0) throw new PlbError(ErrorCodes.KERNEL_CONNTRACK, `conntrack could not delete entries: ${firstLines(r.stderr || r.error?.message || `exit ${r.code}`)}`);
  }
}
