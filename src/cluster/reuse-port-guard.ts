import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { isIP } from 'node:net';
import type { Config } from '../config/schema.ts';
import { bindUdp, listenTcp } from '../proxy/listen.ts';

/**
 * Workers bind with SO_REUSEPORT, and Linux lets any socket of the same user with that option
 * join the group: a second pcoip-lb started on the same addresses would silently get a share of
 * the traffic, split between two instances that know nothing of each other. So before forking,
 * the primary binds each configured address once *without* SO_REUSEPORT: that fails with
 * EADDRINUSE when anything holds it (another instance's workers included), and the start is
 * refused with the usual PLB_E_LISTEN line naming the key. The probe sockets close again at
 * once; port 0 (tests) needs no probe, since a fresh port is free by definition.
 */
export async function assertListenersFree(config: Config): Promise<void> {
  const { broker, pcoipTcp, pcoipUdp } = config.listeners;
  const tcp: Array<[string, { host: string; port: number }]> = [];
  if (broker) tcp.push(['listeners.broker', broker.bind]);
  if (pcoipTcp) tcp.push(['listeners.pcoipTcp', pcoipTcp.bind]);
  const rewrite = broker?.rewriteTarget;
  if (rewrite?.enabled) for (const [id, port] of Object.entries(rewrite.ports)) tcp.push([`listeners.broker.rewriteTarget.ports.${id}`, { host: rewrite.bindAddress, port }]);
  for (const [key, bind] of tcp) {
    if (bind.port === 0) continue;
    const probe = createServer();
    await listenTcp(probe, key, bind, { onLaterError: () => undefined });
    await new Promise<void>((resolve) => probe.close(() => resolve()));
  }
  const udp: Array<[string, { host: string; port: number }]> = [];
  if (pcoipUdp) udp.push(['listeners.pcoipUdp', pcoipUdp.bind]);
  if (rewrite?.enabled) for (const [id, port] of Object.entries(rewrite.ports)) udp.push([`listeners.broker.rewriteTarget.ports.${id}`, { host: rewrite.bindAddress, port }]);
  for (const [key, bind] of udp) {
    if (bind.port === 0) continue;
    const probe = createSocket({ type: isIP(bind.host) === 6 ? 'udp6' : 'udp4' });
    await bindUdp(probe, key, bind, { onLaterError: () => undefined });
    await new Promise<void>((resolve) => probe.close(() => resolve()));
  }
}
