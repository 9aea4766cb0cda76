/**
 * Simulated PCoIP users, run as a child process inside the lab's client namespace
 * (`ip netns exec <client> node test/helpers/netns-users.ts '<json>'`): each user logs in through
 * pcoip-lb's broker listener, opens 4172/TCP and streams UDP, from its own source address. Prints
 * one JSON line with the outcome (the load generator's report, trimmed) and exits.
 */
import { runLoad } from '../../src/sim/load.ts';

interface Options {
  users: number;
  broker: { host: string; port: number };
  bitrateBps: number;
  durationMs: number;
  /** The first user index (so a second run can use other addresses). */
  firstUser?: number;
  concurrency?: number;
  /** Every user's UDP media from this fixed source port. */
  udpSourcePort?: number;
}

const options = JSON.parse(process.argv[2] ?? '{}') as Options;
const first = options.firstUser ?? 0;
const userAddress = (i: number) => `198.18.${1 + Math.floor((first + i) / 254)}.${1 + ((first + i) % 254)}`;

const report = await runLoad({
  users: options.users,
  target: { broker: options.broker },
  bitrateBps: options.bitrateBps,
  durationMs: options.durationMs,
  concurrency: options.concurrency ?? 16,
  distinctSources: true,
  sourceAddress: userAddress,
  maxLossPct: 10,
  ...(options.udpSourcePort !== undefined ? { udpSourcePort: options.udpSourcePort } : {}),
});

process.stdout.write(
  `${JSON.stringify({
    users: report.users,
    ok: report.ok,
    failed: report.failed,
    failuresByKind: report.failuresByKind,
    failures: report.failures.slice(0, 5).map((f) => ({ name: f.name, address: f.localAddress, kind: f.kind, stage: f.stage, message: f.message })),
    perConnector: report.perConnector,
    udp: { sent: report.udp.sent, received: report.udp.received, lossPct: report.udp.lossPct },
  })}\n`,
);
