import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { SimConnector } from '../../src/sim/connector.ts';
import { startCli, rawTestConfig, hasMsg, type CliProcess, type LogLine } from './cli-process.ts';
import { parsePrometheusText, type Exposition } from './prom-text.ts';
import { pcoipPacket } from './sim-clients.ts';
import { certDir, makeCert } from './tls-fixtures.ts';

/**
 * pcoip-lb as operators run it — the real CLI, `workers` as given (default `auto`), health checks
 * ON (HTTPS GET /health and the 4172 TCP connect, fast intervals) — in front of simulated
 * Connectors that reject what they did not broker (src/sim/connector.ts). For the multi-core and
 * state tests.
 */
// timeout may not exceed interval (config check); 500ms leaves room for HTTPS checks on a loaded 2-core machine.
export const FAST_HEALTH = { interval: '500ms', timeout: '500ms', rise: 1, fall: 1, jitter: '0%' };

export async function startSims(ids: string[], hostBase: string): Promise<SimConnector[]> {
  return Promise.all(ids.map((id, i) => SimConnector.start({ id, host: `${hostBase}${i + 1}` })));
}

/** A raw config over `sims`, with health checks on (both checks) and every listener on 127.0.0.1:0. */
export function simConfig(sims: SimConnector[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  const connectors = sims.map((s) => ({ ...s.connectorConfig(), weight: 1, state: 'active' as const }));
  return rawTestConfig(connectors, { workers: 'auto', health: FAST_HEALTH, ...extra });
}

/**
 * Simulated Connectors and a throwaway proxy certificate, for a terminating broker with sniRouting:
 * `config(extra)` is simConfig with those listeners (all on 127.0.0.1:0).
 */
export async function startTerminateSims(ids: string[], hostBase: string): Promise<{ sims: SimConnector[]; config(extra?: Record<string, unknown>): Record<string, unknown>; close(): Promise<void> }> {
  const sims = await startSims(ids, hostBase);
  const dir = await certDir();
  const cert = await makeCert(dir.dir, 'proxy', ['broker.example'], ['127.0.0.1']);
  return {
    sims,
    config: (extra = {}) =>
      simConfig(sims, {
        listeners: {
          broker: { bind: '127.0.0.1:0', tls: { mode: 'terminate', certificates: [{ cert: cert.certPath, key: cert.keyPath }], upstream: { insecure: true } } },
          pcoipTcp: { bind: '127.0.0.1:0', sniRouting: true },
          pcoipUdp: { bind: '127.0.0.1:0' },
        },
        ...extra,
      }),
    close: async () => {
      await Promise.all(sims.map((s) => s.stop()));
      await dir.cleanup();
    },
  };
}

export interface StatusConnector {
  id: string;
  health: string;
  state: string;
  pinnedClients: number;
  activeFlows: number;
  flows: Record<string, { active: number; total: number }>;
}

export interface Status {
  listeners: Record<string, string>;
  clients: number;
  connectors: StatusConnector[];
}

export async function status(cli: CliProcess): Promise<Status> {
  return (await (await fetch(`${cli.adminUrl}/status`)).json()) as Status;
}

export async function metrics(cli: CliProcess): Promise<Exposition> {
  return parsePrometheusText(await (await fetch(`${cli.adminUrl}/metrics`)).text());
}

export async function adminPost(cli: CliProcess, path: string): Promise<number> {
  return (await fetch(`${cli.adminUrl}${path}`, { method: 'POST' })).status;
}

/** Polls `/status` until `check` holds; rejects after `timeoutMs` with the last status. */
export async function statusUntil(cli: CliProcess, check: (s: Status) => boolean, timeoutMs = 5000, what = 'status'): Promise<Status> {
  const deadline = Date.now() + timeoutMs;
  let last: Status | undefined;
  while (Date.now() < deadline) {
    last = await status(cli);
    if (check(last)) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} not reached within ${timeoutMs} ms; last /status: ${JSON.stringify(last?.connectors.map((c) => ({ id: c.id, health: c.health, state: c.state })))}`);
}

export const connectorOf = (s: Status, id: string) => s.connectors.find((c) => c.id === id)!;

/** Workers that logged a 'flow closed' line matching `match`. */
export function workersThatClosed(lines: LogLine[], match: (l: LogLine) => boolean): Set<unknown> {
  return new Set(lines.filter((l) => l.msg === 'flow closed' && match(l)).map((l) => l.worker));
}

export async function startLabCli(raw: Record<string, unknown>, args: string[] = []): Promise<CliProcess & { started: LogLine }> {
  const cli = await startCli(raw, args, 20_000);
  return { ...cli, started: cli.lines.find(hasMsg('pcoip-lb started'))! };
}

/**
 * A PCoIP media flow from one fixed (address, port), as real clients send it (4172 or 50002 by
 * client generation): every session of that client reuses the same UDP 4-tuple.
 */
export class FixedPortMedia {
  readonly socket: UdpSocket;
  private readonly proxyPort: number;

  private constructor(socket: UdpSocket, proxyPort: number) {
    this.socket = socket;
    this.proxyPort = proxyPort;
  }

  static async open(localAddress: string, localPort: number, proxyPort: number): Promise<FixedPortMedia> {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind({ address: localAddress, port: localPort }, () => resolve());
    });
    return new FixedPortMedia(socket, proxyPort);
  }

  /** Sends datagram `seq` of session `spi`; resolves with the echo or undefined when none came in time. */
  async roundTrip(spi: number, seq: number, timeoutMs = 1000): Promise<Buffer | undefined> {
    const reply = once(this.socket, 'message', { signal: AbortSignal.timeout(timeoutMs) }).then(
      ([msg]) => msg as Buffer,
      () => undefined,
    );
    this.socket.send(pcoipPacket(spi, seq), this.proxyPort, '127.0.0.1');
    return reply;
  }

  close(): void {
    this.socket.close();
  }
}
