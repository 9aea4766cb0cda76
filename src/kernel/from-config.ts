import type { AddressInfo } from 'node:net';
import type { Config, DataPlane } from '../config/schema.ts';
import type { Logger } from '../logger.ts';
import { isPlbError } from '../errors.ts';
import type { Pool } from '../pool/pool.ts';
import type { Placer } from '../balance/placer.ts';
import type { FlowStats } from '../proxy/flow-stats.ts';
import { KernelDataPlane } from './data-plane.ts';
import type { BoundListener, KernelProto } from './plan.ts';

/**
 * The kernel data plane as the config asks for it: which 4172 listeners it forwards, with what
 * limits, and what `dataPlane: auto` does when the host cannot (one warning line, user space).
 */

export interface KernelListenerChoice {
  name: 'pcoipUdp' | 'pcoipTcp';
  proto: KernelProto;
  dataPlane: Exclude<DataPlane, 'user'>;
}

/** The 4172 listeners whose dataPlane is kernel or auto. Pure. */
export function kernelListeners(listeners: Config['listeners']): KernelListenerChoice[] {
  const out: KernelListenerChoice[] = [];
  if (listeners.pcoipUdp && listeners.pcoipUdp.dataPlane !== 'user') out.push({ name: 'pcoipUdp', proto: 'udp', dataPlane: listeners.pcoipUdp.dataPlane });
  if (listeners.pcoipTcp && listeners.pcoipTcp.dataPlane !== 'user') out.push({ name: 'pcoipTcp', proto: 'tcp', dataPlane: listeners.pcoipTcp.dataPlane });
  return out;
}

export interface KernelDeps {
  logger: Logger;
  state: { pool: Pool; placer: Placer; stats: FlowStats };
  /** The user-space listeners (a switched client's UDP flows are handed over). */
  data: { handOverUdp(clientKeys: readonly string[], quietMs: number): number };
  /** The running config (reload changes health.closeFlowsOnDown). */
  config: () => Config;
}

/** A user-space UDP flow handed over to the kernel closes after this long without a datagram. */
const HAND_OVER_QUIET_MS = 2000;

/** The kernel listeners where they are bound, with the limits of their config. Pure. */
export function boundKernelListeners(config: Config, bound: Partial<Record<'pcoipUdp' | 'pcoipTcp', AddressInfo>>): BoundListener[] {
  const { pcoipUdp, pcoipTcp } = config.listeners;
  return kernelListeners(config.listeners)
    .filter((l) => bound[l.name])
    .map((l) => ({
      proto: l.proto,
      address: bound[l.name]!.address,
      port: bound[l.name]!.port,
      maxFlows: l.proto === 'udp' ? pcoipUdp?.maxFlows : pcoipTcp?.maxConnections,
      maxPerClient: l.proto === 'udp' ? pcoipUdp?.maxFlowsPerClient : pcoipTcp?.maxConnectionsPerClient,
    }));
}

/**
 * Starts the kernel data plane for the listeners that ask for it, once they are bound (the rules
 * need their ports). Returns undefined when none asks, or when every one that asks said `auto`
 * and the host cannot: then one warning line says why and they stay in user space. With
 * `kernel`, a problem is the start's error.
 */
export async function startKernelDataPlane(config: Config, bound: Partial<Record<'pcoipUdp' | 'pcoipTcp', AddressInfo>>, deps: KernelDeps): Promise<KernelDataPlane | undefined> {
  const chosen = kernelListeners(config.listeners).filter((l) => bound[l.name]);
  if (chosen.length === 0) return undefined;
  const { pcoipUdp, pcoipTcp } = config.listeners;
  const udp = chosen.some((l) => l.proto === 'udp');
  const tcp = chosen.some((l) => l.proto === 'tcp');
  try {
    const plane = await KernelDataPlane.start({
      table: config.kernel.table,
      snat: config.kernel.snat,
      prefixes: { ipv4: config.affinity.ipv4Prefix, ipv6: config.affinity.ipv6Prefix },
      listeners: boundKernelListeners(config, bound),
      connectors: () => deps.state.pool.all(),
      connector: (id) => deps.state.pool.get(id),
      placer: deps.state.placer,
      stats: deps.state.stats,
      closeFlowsOnDown: () => deps.config().health.closeFlowsOnDown,
      handOver: (keys) => void deps.data.handOverUdp(keys, HAND_OVER_QUIET_MS),
      conntrackFlows: (udp ? (pcoipUdp?.maxFlows ?? 0) : 0) + (tcp ? (pcoipTcp?.maxConnections ?? 0) : 0),
      udpIdleTimeoutMs: udp ? pcoipUdp?.idleTimeout : undefined,
      dataPlaneKeys: chosen.map((l) => `listeners.${l.name}.dataPlane`),
      logger: deps.logger,
      onTraffic: (d) => {
        const c = deps.state.stats.counters(d.connectorId)[d.proto === 'udp' ? 'pcoipUdp' : 'pcoipTcp'];
        c.packetsIn += d.packetsIn;
        c.bytesIn += d.bytesIn;
        c.packetsOut += d.packetsOut;
        c.bytesOut += d.bytesOut;
      },
    });
    deps.state.pool.onChange((change) => plane.onPoolChange(change));
    return plane;
  } catch (err) {
    if (!isPlbError(err) || chosen.some((l) => l.dataPlane === 'kernel')) throw err;
    deps.logger.warn(
      { code: err.code, listeners: chosen.map((l) => l.name), problems: err.details },
      `dataPlane: auto: ${err.message}; forwarding in user space instead`,
    );
    return undefined;
  }
}
