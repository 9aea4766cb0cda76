import type { AddressInfo } from 'node:net';
import type { Config, DataPlane } from '../config/schema.ts';
import type { Logger } from '../logger.ts';
import { isPlbError } from '../errors.ts';
import type { ConnectorView } from '../pool/pool.ts';
import type { FlowStats } from '../proxy/flow-stats.ts';
import { KernelDataPlane } from './data-plane.ts';
import type { KernelProto, PinView } from './plan.ts';

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
  stats: FlowStats;
  connectors: () => readonly ConnectorView[];
  connector: (id: string) => ConnectorView | undefined;
  pins: () => Iterable<PinView>;
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
    return await KernelDataPlane.start({
      table: config.kernel.table,
      snat: config.kernel.snat,
      prefixes: { ipv4: config.affinity.ipv4Prefix, ipv6: config.affinity.ipv6Prefix },
      listeners: chosen.map((l) => ({ proto: l.proto, address: bound[l.name]!.address, port: bound[l.name]!.port })),
      connectors: deps.connectors,
      connector: deps.connector,
      pins: deps.pins,
      conntrackFlows: (udp ? (pcoipUdp?.maxFlows ?? 0) : 0) + (tcp ? (pcoipTcp?.maxConnections ?? 0) : 0),
      udpIdleTimeoutMs: udp ? pcoipUdp?.idleTimeout : undefined,
      dataPlaneKeys: chosen.map((l) => `listeners.${l.name}.dataPlane`),
      logger: deps.logger,
      onTraffic: (d) => {
        const c = deps.stats.counters(d.connectorId)[d.proto === 'udp' ? 'pcoipUdp' : 'pcoipTcp'];
        c.packetsIn += d.packetsIn;
        c.bytesIn += d.bytesIn;
        c.packetsOut += d.packetsOut;
        c.bytesOut += d.bytesOut;
      },
    });
  } catch (err) {
    if (!isPlbError(err) || chosen.some((l) => l.dataPlane === 'kernel')) throw err;
    deps.logger.warn(
      { code: err.code, listeners: chosen.map((l) => l.name), problems: err.details },
      `dataPlane: auto: ${err.message}; forwarding in user space instead`,
    );
    return undefined;
  }
}
