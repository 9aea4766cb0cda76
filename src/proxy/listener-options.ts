import type { Config } from '../config/schema.ts';
import type { TcpProxyOptions } from './tcp-proxy.ts';
import type { UdpProxyOptions } from './udp-proxy.ts';
import type { TcpAdmissionOptions } from './tcp-admission.ts';

/**
 * Listener config (durations already in ms) → the options the proxies take. One place, used at
 * start and on reload, so a reloaded setting means exactly what it meant at start.
 */
type Listeners = Config['listeners'];

export function brokerOptions(l: NonNullable<Listeners['broker']>): TcpProxyOptions {
  return {
    name: 'broker',
    ...l,
    idleTimeoutMs: l.idleTimeout,
    connectTimeoutMs: l.connectTimeout,
    firstByteTimeoutMs: l.firstByteTimeout,
    upstreamPort: (c) => c.ports.broker,
  };
}

/** The limits of the terminating broker listener (the passthrough one takes them in brokerOptions). */
export function brokerAdmissionOptions(l: NonNullable<Listeners['broker']>): TcpAdmissionOptions {
  return { maxConnections: l.maxConnections, maxConnectionsPerClient: l.maxConnectionsPerClient, firstByteTimeoutMs: l.firstByteTimeout };
}

export function pcoipTcpOptions(l: NonNullable<Listeners['pcoipTcp']>): TcpProxyOptions {
  return {
    name: 'pcoipTcp',
    ...l,
    idleTimeoutMs: l.idleTimeout,
    connectTimeoutMs: l.connectTimeout,
    firstByteTimeoutMs: l.firstByteTimeout,
    upstreamPort: (c) => c.ports.pcoip,
  };
}

export function pcoipUdpOptions(l: NonNullable<Listeners['pcoipUdp']>): UdpProxyOptions {
  return { ...l, idleTimeoutMs: l.idleTimeout, maxQueueDelayMs: l.maxQueueDelay };
}
