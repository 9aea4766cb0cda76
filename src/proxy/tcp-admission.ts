import type { Server, Socket } from 'node:net';
import type { Logger } from '../logger.ts';
import { ErrorCodes } from '../errors.ts';
import { unmapIpv4 } from '../util/address.ts';
import type { FlowStats, ListenerName } from './flow-stats.ts';
import { PerClientLimit, RefusalLog } from './limits.ts';

/** The admission settings of a TCP listener (listeners.broker / pcoipTcp). */
export interface TcpAdmissionOptions {
  /** Open connections on the listener (connecting and handshaking ones included); past it new ones are dropped. */
  maxConnections?: number;
  /** Open connections per client (affinity client key); past it new ones are closed at once. */
  maxConnectionsPerClient?: number;
  /** A client silent this long once watched (see watchFirstByte) is closed. 0 or unset: off. */
  firstByteTimeoutMs?: number;
}

export interface TcpAdmissionDeps {
  stats: FlowStats;
  logger: Logger;
  now: () => number;
  /** The affinity client key of an address (the unit maxConnectionsPerClient counts). */
  clientKey: (address: string) => string;
}

/**
 * The connection limits of one TCP listener, shared by the passthrough TcpProxy and the
 * terminating broker listener so both refuse, count (FlowStats `refused{listener,reason}`) and
 * log (RefusalLog: warn, one line per second per reason) alike:
 * - maxConnections is Node's `server.maxConnections` on the listening socket; Node closes the
 *   connection before the listener sees it and emits 'drop', which is counted here;
 * - maxConnectionsPerClient is checked by `admit` when a connection is accepted;
 * - firstByteTimeout closes a connection that read nothing in time (`watchFirstByte`); each
 *   listener decides when the clock starts.
 */
export class TcpAdmission {
  private readonly listener: Extract<ListenerName, 'broker' | 'pcoipTcp'>;
  private readonly server: Server;
  private readonly deps: TcpAdmissionDeps;
  private readonly refusals: RefusalLog;
  private readonly perClient: PerClientLimit;
  private options: TcpAdmissionOptions;

  constructor(listener: Extract<ListenerName, 'broker' | 'pcoipTcp'>, server: Server, options: TcpAdmissionOptions, deps: TcpAdmissionDeps) {
    this.listener = listener;
    this.server = server;
    this.deps = deps;
    this.options = options;
    this.refusals = new RefusalLog(listener, deps.stats, deps.logger);
    this.perClient = new PerClientLimit(options.maxConnectionsPerClient ?? Infinity);
    this.applyListenerLimit();
    server.on('drop', (info?: { remoteAddress?: string }) =>
      this.refusals.refuse(
        deps.now(),
        'max-connections',
        ErrorCodes.CONNECTION_LIMIT,
        { client: info?.remoteAddress ? unmapIpv4(info.remoteAddress) : undefined, maxConnections: this.options.maxConnections },
        `connection refused: listeners.${listener}.maxConnections reached`,
      ),
    );
  }

  /** New limits (reload): caps apply to the next connection; holders above a lowered cap keep theirs. */
  update(options: TcpAdmissionOptions): void {
    this.options = { ...options };
    this.perClient.setMax(options.maxConnectionsPerClient ?? Infinity);
    this.applyListenerLimit();
  }

  get firstByteTimeoutMs(): number {
    return this.options.firstByteTimeoutMs ?? 0;
  }

  /** Clients holding at least one connection (0 when idle: leak checks use it). */
  get trackedClients(): number {
    return this.perClient.clients;
  }

  /**
   * Counts a newly accepted connection against its client's cap. At the cap the refusal is
   * counted and logged, the socket destroyed, and false returned. Otherwise the count is
   * released on the socket's 'close', which comes once however the connection ends.
   */
  admit(socket: Socket, clientAddress: string): boolean {
    const key = this.deps.clientKey(clientAddress);
    if (!this.perClient.tryAcquire(key)) {
      this.refusals.refuse(
        this.deps.now(),
        'max-connections-per-client',
        ErrorCodes.CONNECTION_LIMIT,
        { client: clientAddress, maxConnectionsPerClient: this.perClient.limit },
        `connection refused: listeners.${this.listener}.maxConnectionsPerClient reached for this client`,
      );
      socket.destroy();
      return false;
    }
    socket.once('close', () => this.perClient.release(key));
    return true;
  }

  /**
   * Starts the firstByteTimeout clock on `socket` (no-op when off): if the socket has read
   * nothing when it runs out, the refusal is counted and logged with `fields`, and `onSilent`
   * closes the connection. Checked once when the timer fires (bytesRead), so a talking client
   * costs no per-chunk work.
   */
  watchFirstByte(socket: Socket, fields: Record<string, unknown>, onSilent: () => void): void {
    const ms = this.firstByteTimeoutMs;
    if (ms <= 0) return;
    const timer = setTimeout(() => {
      if (socket.destroyed || socket.bytesRead > 0) return;
      this.refusals.refuse(
        this.deps.now(),
        'first-byte-timeout',
        ErrorCodes.SLOW_CLIENT,
        { ...fields, firstByteTimeoutMs: ms },
        `connection closed: the client sent nothing within listeners.${this.listener}.firstByteTimeout`,
      );
      onSilent();
    }, ms);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  }

  private applyListenerLimit(): void {
    const max = this.options.maxConnections;
    if (max !== undefined && Number.isFinite(max)) this.server.maxConnections = max;
  }
}
