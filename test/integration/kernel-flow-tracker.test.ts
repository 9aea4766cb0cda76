import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLab, labUnavailable, VIP, type NetnsLab } from '../helpers/netns.ts';
import { LogCapture } from '../helpers/proxy.ts';
import { KernelFlowTracker, listingArgs } from '../../src/kernel/flow-events.ts';
import { forwardedListeners, kernelTargets } from '../../src/kernel/plan.ts';
import { Pool } from '../../src/pool/pool.ts';
import { Placer } from '../../src/balance/placer.ts';
import { FlowStats } from '../../src/proxy/flow-stats.ts';
import { createLogger } from '../../src/logger.ts';

/**
 * KernelFlowTracker against the real conntrack of a network namespace: entries are created with
 * `conntrack -I` (as the kernel would create them for forwarded flows), so the tracker reads real
 * `conntrack -E` events and real `conntrack -L` listings. Needs root; skipped otherwise.
 */

const unavailable = labUnavailable();
if (unavailable) process.stdout.write(`kernel-flow-tracker.test.ts skipped: ${unavailable}\n`);

const CONNECTOR = '198.19.0.11';
const connectors = [{ id: 'conn-a', address: CONNECTOR, ports: { broker: 443, pcoip: 4172 }, weight: 1, state: 'active' as const }];
const listeners = forwardedListeners([
  { proto: 'udp', address: VIP, port: 4172 },
  { proto: 'tcp', address: VIP, port: 4172 },
]);

async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.skipIf(unavailable !== undefined)('kernel flow tracker (real conntrack in a network namespace)', () => {
  let lab: NetnsLab;
  let dir: string;
  /** conntrack run inside the lab's lb namespace. */
  let conntrackBin: string;

  beforeAll(() => {
    lab = createLab({ users: 1, connectors: 1 });
    dir = mkdtempSync(join(tmpdir(), 'i11-tracker-'));
    conntrackBin = join(dir, 'conntrack');
    writeFileSync(conntrackBin, `#!/bin/sh\nexec ip netns exec ${lab.lb} conntrack "$@"\n`);
    chmodSync(conntrackBin, 0o755);
  });
  afterAll(() => {
    lab?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const insert = (proto: 'udp' | 'tcp', client: string, sport: number, dport: number, replySource: string) =>
    lab.run(lab.lb, 'conntrack', [
      '-I', '-p', proto, '-s', client, '-d', VIP, '--sport', String(sport), '--dport', String(dport),
      '-r', replySource, '-q', client, '--reply-port-src', String(dport), '--reply-port-dst', String(sport), '-t', '120',
      ...(proto === 'tcp' ? ['--state', 'ESTABLISHED'] : []),
    ]);
  const flush = () => lab.run(lab.lb, 'conntrack', ['-F']);

  function tracker(extra: { maxListingBytes?: number; reconcileMs?: number; conntrack?: string } = {}) {
    const logs = new LogCapture();
    const placer = new Placer(new Pool(connectors), 60_000, { algorithm: 'maglev', tableSize: 65_537, ipv4Prefix: 32, ipv6Prefix: 64, onDown: 'repin' });
    const targets = new Map(kernelTargets(new Pool(connectors).all()).map((t) => [t.address, t]));
    const t = new KernelFlowTracker({
      conntrack: extra.conntrack ?? conntrackBin,
      placer,
      stats: new FlowStats(),
      logger: createLogger('info', logs),
      listeners: () => listeners,
      targets: () => targets,
      reconcileMs: extra.reconcileMs ?? 0,
      ...(extra.maxListingBytes !== undefined ? { maxListingBytes: extra.maxListingBytes } : {}),
    });
    return { t, logs };
  }

  it('lists only entries sent to its listeners (protocol, port, address), with the real conntrack', () => {
    flush();
    insert('udp', '198.18.1.1', 5000, 4172, CONNECTOR);
    insert('tcp', '198.18.1.1', 5001, 4172, CONNECTOR);
    insert('tcp', '198.18.1.1', 5002, 22, VIP);
    insert('udp', '198.18.1.1', 5003, 53, VIP);
    const listed = listingArgs(listeners).flatMap((args) => lab.run(lab.lb, 'conntrack', args).split('\n').filter((l) => l.includes('id=')));
    expect(listed).toHaveLength(2);
    expect(listed.every((l) => /dst=198\.18\.0\.1 sport=500[01] dport=4172 /.test(l))).toBe(true);
    flush();
  });

  it('ends no flow as gone when the listing was cut at the output cap, and says so once', async () => {
    flush();
    const { t, logs } = tracker({ maxListingBytes: 4000, reconcileMs: 100 });
    await t.start();
    try {
      const FLOWS = 40; // ~200 bytes a line: the listing is about twice the cap
      for (let i = 0; i < FLOWS; i++) insert('udp', '198.18.1.1', 6000 + i, 4172, CONNECTOR);
      await waitFor('every flow adopted from its NEW event', () => t.active().udp === FLOWS);
      const cut = (l: Record<string, unknown>) => typeof l.msg === 'string' && l.msg.includes('longer than the output cap');
      await logs.waitFor(cut, 5000);
      await new Promise((r) => setTimeout(r, 500)); // several more cut listings
      expect(t.active().udp).toBe(FLOWS);
      expect(logs.lines.filter((l) => l.msg === 'flow closed')).toEqual([]);
      expect(logs.lines.filter(cut)).toHaveLength(1);
    } finally {
      t.stop();
      flush();
    }
  });

  it('restarts conntrack -E after it could not even start (ENOENT), logging why, and follows flows once it runs', async () => {
    flush();
    const late = join(dir, 'late-conntrack'); // not there yet: spawn fails with 'error' + 'close', no 'exit'
    const { t, logs } = tracker({ conntrack: late });
    await t.start();
    try {
      const failed = await logs.waitFor((l) => l.msg === 'kernel data plane: conntrack -E failed', 3000);
      expect(failed).toMatchObject({ level: 40, code: 'PLB_E_KERNEL_CONNTRACK', errno: 'ENOENT' });
      expect(await logs.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('kernel data plane: conntrack -E ended'), 3000)).toMatchObject({ restartInMs: 1000 });
      copyFileSync(conntrackBin, late);
      chmodSync(late, 0o755);
      insert('udp', '198.18.1.1', 7000, 4172, CONNECTOR);
      await waitFor('the flow adopted after the restart', () => t.active().udp === 1, 8000);
    } finally {
      t.stop();
      flush();
    }
  });
});
