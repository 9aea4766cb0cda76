import { connect as netConnect } from 'node:net';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { startCli, type CliProcess } from './cli-process.ts';

/**
 * Several real `pcoip-lb start` processes as one cluster (docs/ha.md) for integration tests:
 * each instance on its own loopback address (as separate hosts would be), all sharing one
 * redis-server. Configs default to what operators run: `workers: auto`, health checks on.
 */
export interface InstanceSpec {
  id: string;
  host: string;
}

export interface Instance {
  spec: InstanceSpec;
  cli: CliProcess;
  raw: Record<string, unknown>;
  broker: { host: string; port: number };
  pcoipTcp: { host: string; port: number };
  pcoipUdp: { host: string; port: number };
  admin: string;
}

export function instanceConfig(
  spec: InstanceSpec,
  redisUrl: string,
  connectors: Array<{ id: string; address: string; ports: { broker: number; pcoip: number } }>,
  extra: { broker?: Record<string, unknown>; health?: Record<string, unknown>; cluster?: Record<string, unknown> | null; top?: Record<string, unknown> } = {},
): Record<string, unknown> {
  return {
    listeners: {
      broker: { bind: `${spec.host}:0`, ...extra.broker },
      pcoipTcp: { bind: `${spec.host}:0` },
      pcoipUdp: { bind: `${spec.host}:0` },
    },
    connectors,
    health: { interval: '500ms', timeout: '400ms', rise: 1, fall: 2, ...extra.health },
    admin: { bind: `${spec.host}:0` },
    logging: { level: 'info' },
    // null: a stand-alone instance (no store), for comparisons. Look-ups get 500 ms: with the whole
    // suite running on 2 cores, 150 ms was seen to run out (the instance then decides alone, by design).
    ...(extra.cluster === null ? {} : { cluster: { instanceId: spec.id, keyPrefix: 'i10t', redis: { url: redisUrl }, timeouts: { heartbeat: '250ms', lookup: '500ms', connect: '1s' }, ...extra.cluster } }),
    ...extra.top,
  };
}

export async function startInstance(spec: InstanceSpec, raw: Record<string, unknown>): Promise<Instance> {
  const cli = await startCli(raw, [], 60_000);
  const at = (name: string) => ({ host: spec.host, port: cli.ports[name]! });
  return { spec, cli, raw, broker: at('broker'), pcoipTcp: at('pcoipTcp'), pcoipUdp: at('pcoipUdp'), admin: cli.adminUrl! };
}

export async function adminGet<T = Record<string, unknown>>(instance: Instance, path: string): Promise<T> {
  const res = await fetch(`${instance.admin}${path}`);
  if (!res.ok) throw new Error(`GET ${path} on ${instance.spec.id}: HTTP ${res.status}: ${await res.text()}`);
  return (await res.json()) as T;
}

export async function adminPost(instance: Instance, path: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${instance.admin}${path}`, { method: 'POST' });
  if (!res.ok) throw new Error(`POST ${path} on ${instance.spec.id}: HTTP ${res.status}: ${await res.text()}`);
  return (await res.json()) as Record<string, unknown>;
}

export async function metricsText(instance: Instance): Promise<string> {
  const res = await fetch(`${instance.admin}/metrics`);
  return res.text();
}

/** Where the instance would place a client it has no pin for (consistent hashing), or its pin. */
export async function placementOf(instance: Instance, client: string): Promise<{ pinned: boolean; connector: string | null }> {
  const a = await adminGet<{ pinned: boolean; connector: string | null }>(instance, `/affinity/${client}`);
  return { pinned: a.pinned, connector: a.connector };
}

/** The first address of `candidates` that consistent hashing places on a Connector other than `not`. */
export async function clientHashedAwayFrom(instance: Instance, not: string, candidates: string[]): Promise<string> {
  for (const c of candidates) if ((await placementOf(instance, c)).connector !== not) return c;
  throw new Error(`every candidate hashes to ${not}`);
}

/** One TCP connection from `localAddress`; resolves with the fake Connector's greeting line (its id). */
export function tcpGreetingVia(target: { host: string; port: number }, localAddress: string, timeoutMs = 5000): Promise<{ id: string; close: () => void }> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: target.host, port: target.port, localAddress });
    const timer = setTimeout(() => (socket.destroy(), reject(new Error(`no greeting via ${target.host}:${target.port} within ${timeoutMs} ms`))), timeoutMs);
    let text = '';
    socket.on('data', (d: Buffer) => {
      text += d.toString();
      const nl = text.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      resolve({ id: text.slice(0, nl), close: () => socket.destroy() });
    });
    socket.on('error', (err) => (clearTimeout(timer), reject(err)));
    socket.on('close', () => (clearTimeout(timer), reject(new Error(`closed via ${target.host}:${target.port} before a greeting ("${text}")`))));
  });
}

/** A UDP socket bound to `localAddress` (a client's fixed media source). */
export async function udpFrom(localAddress: string): Promise<UdpSocket> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind({ address: localAddress, port: 0 }, () => resolve()));
  return socket;
}

export async function udpAnswer(socket: UdpSocket, target: { host: string; port: number }, payload: Buffer, timeoutMs = 3000): Promise<Buffer> {
  const answer = once(socket, 'message', { signal: AbortSignal.timeout(timeoutMs) }) as Promise<[Buffer]>;
  socket.send(payload, target.port, target.host);
  return (await answer)[0];
}
