import type { Server } from 'node:net';
import type { AddressInfo } from 'node:net';

/** Where each data listener is bound (after start). */
export interface ListenerAddresses {
  broker?: AddressInfo;
  pcoipTcp?: AddressInfo;
  pcoipUdp?: AddressInfo;
}
import type { Socket as UdpSocket } from 'node:dgram';
import { ErrorCodes, PlbError } from '../errors.ts';
import { formatHostPort, type HostPort } from '../util/address.ts';

/**
 * Binding for every listener (proxy, broker, admin): one place that turns a failed bind into a
 * PLB_E_LISTEN error naming the config key, and that attaches the listener's long-lived error
 * handler only once it is bound — so a failed bind is reported once, by the caller.
 */

function listenError(keyPath: string, where: string, err: NodeJS.ErrnoException): PlbError {
  const hint = err.code === 'EACCES' ? ' (ports below 1024 need root, CAP_NET_BIND_SERVICE or net.ipv4.ip_unprivileged_port_start; see README "Docker")' : '';
  return new PlbError(ErrorCodes.LISTEN, `${keyPath}: cannot listen on ${where}: ${err.code ?? err.message}${hint}`, [], { cause: err });
}

export function listenTcp(
  server: Server,
  keyPath: string,
  bind: HostPort,
  options: { reusePort?: boolean; onLaterError: (err: Error) => void },
): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => reject(listenError(keyPath, formatHostPort(bind.host, bind.port), err));
    server.once('error', onError);
    server.listen({ host: bind.host, port: bind.port, ...(options.reusePort ? { reusePort: true } : {}) }, () => {
      server.off('error', onError);
      server.on('error', options.onLaterError);
      resolve(server.address() as AddressInfo);
    });
  });
}

export function bindUdp(socket: UdpSocket, keyPath: string, bind: HostPort, options: { onLaterError: (err: Error) => void }): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => reject(listenError(keyPath, `${formatHostPort(bind.host, bind.port)}/udp`, err));
    socket.once('error', onError);
    socket.bind({ address: bind.host, port: bind.port }, () => {
      socket.off('error', onError);
      socket.on('error', options.onLaterError);
      resolve(socket.address());
    });
  });
}
