import { spawnSync } from 'node:child_process';
import { KernelDataPlane } from '../../src/kernel/data-plane.ts';
import { Pool } from '../../src/pool/pool.ts';
import { Placer } from '../../src/balance/placer.ts';
import { FlowStats } from '../../src/proxy/flow-stats.ts';
import { createLogger } from '../../src/logger.ts';

/**
 * Runs inside the lab's lb namespace (`ip netns exec … node kernel-reload-driver.ts TABLE`, from
 * kernel-reconfigure.test.ts): starts a KernelDataPlane with two Connectors, then reconfigures
 * it onto a Connector list whose table nft refuses (two targets at one address and port: nft
 * rejects the duplicate counter-map key), then reports which Connector each new forwarded flow
 * (created with `conntrack -I`) was attributed to. One JSON line on stdout.
 */

const table = process.argv[2]!;
const VIP = '198.18.0.1';
const conn = (id: string, address: string) => ({ id, address, ports: { broker: 443, pcoip: 4172 }, weight: 1, state: 'active' as const });
const pool = new Pool([conn('conn-a', '198.19.0.11'), conn('conn-b', '198.19.0.12')]);
const placer = new Placer(pool, 60_000, { algorithm: 'maglev', tableSize: 65_537, ipv4Prefix: 32, ipv6Prefix: 64, onDown: 'repin' });
const stats = new FlowStats();
let connectors = () => pool.all();

const plane = await KernelDataPlane.start({
  table,
  snat: { ipv4: '198.19.0.1' },
  prefixes: { ipv4: 32, ipv6: 64 },
  listeners: [{ proto: 'udp', address: VIP, port: 4172 }],
  connectors: () => connectors(),
  connector: (id) => pool.get(id),
  placer,
  stats,
  closeFlowsOnDown: () => false,
  conntrackFlows: 0,
  udpIdleTimeoutMs: undefined,
  dataPlaneKeys: ['listeners.pcoipUdp.dataPlane'],
  logger: createLogger('warn', process.stderr),
  counterPollMs: 0,
  resyncMs: 0,
});

// conn-b leaves, conn-c (its address taken by a second entry) comes: a table nft refuses.
const refused = [conn('conn-a', '198.19.0.11'), conn('conn-c', '198.19.0.13'), conn('conn-x', '198.19.0.11')];
connectors = () => new Pool(refused).all();
const reconfigureError = await plane.reconfigure({}).then(
  () => undefined,
  (err: Error) => err.message,
);

const insert = (sport: number, replySource: string) => {
  const r = spawnSync('conntrack', ['-I', '-p', 'udp', '-s', '198.18.1.1', '-d', VIP, '--sport', String(sport), '--dport', '4172', '-r', replySource, '-q', '198.18.1.1', '--reply-port-src', '4172', '--reply-port-dst', String(sport), '-t', '60'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`conntrack -I: ${r.stderr}`);
};
insert(7001, '198.19.0.11'); // to conn-a in the kernel's (old) table
insert(7002, '198.19.0.12'); // to conn-b in the kernel's (old) table
const deadline = Date.now() + 5000;
const opened = () => ['conn-a', 'conn-b', 'conn-c', 'conn-x'].map((id) => [id, stats.counters(id).pcoipUdp.total] as const).filter(([, n]) => n > 0);
while (opened().reduce((a, [, n]) => a + n, 0) < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
const ruleset = spawnSync('nft', ['list', 'table', 'inet', table], { encoding: 'utf8' }).stdout;
await plane.stop();
process.stdout.write(`${JSON.stringify({ reconfigureError, opened: Object.fromEntries(opened()), tableHasConnB: ruleset.includes('198.19.0.12') })}\n`);
process.exit(0);
