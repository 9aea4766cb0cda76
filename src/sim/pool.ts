import type { Logger } from '../logger.ts';
import { ErrorCodes, PlbError } from '../errors.ts';
import { SimConnector, type SimConnectorOptions } from './connector.ts';

/** Several simulated Connectors, each on its own loopback address; used by the demo, `simulate`, benches and tests. */

export interface SimSpec {
  id: string;
  host: string;
}

export interface SimPoolOptions {
  brokerPort?: number;
  pcoipPort?: number;
  now?: () => number;
  tagTtlMs?: number;
  advertise?: SimConnectorOptions['advertise'];
  logger?: Logger;
  ids?: SimConnectorOptions['ids'];
  setCookieSpelling?: SimConnectorOptions['setCookieSpelling'];
  logIdSessions?: SimConnectorOptions['logIdSessions'];
}

/** conn-a … conn-z, then conn-27, conn-28, … */
export function simConnectorId(index: number): string {
  return index < 26 ? `conn-${String.fromCharCode(97 + index)}` : `conn-${index + 1}`;
}

/** `count` Connectors named conn-a, conn-b, … on `${hostBase}1`, `${hostBase}2`, … */
export function simSpecs(count: number, hostBase = '127.0.1.'): SimSpec[] {
  if (!Number.isInteger(count) || count < 1 || count > 254) throw new PlbError(ErrorCodes.USAGE, `--connectors must be 1-254, got ${count}`);
  return Array.from({ length: count }, (_, i) => ({ id: simConnectorId(i), host: `${hostBase}${i + 1}` }));
}

/** Starts all Connectors; if one fails to start, stops the others and rethrows. */
export async function startSimPool(specs: readonly SimSpec[], options: SimPoolOptions = {}): Promise<SimConnector[]> {
  const results = await Promise.allSettled(specs.map((s) => SimConnector.start({ ...options, id: s.id, host: s.host })));
  const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(started.map((s) => s.stop()));
    throw failed.reason;
  }
  return started;
}

/** Which simulated Connector dropped datagrams with this SPI (for "misrouted" reports). */
export function spiLocator(sims: readonly SimConnector[]): (spi: number) => string | undefined {
  return (spi) => sims.find((s) => s.sawUnknownSpi(spi))?.id;
}

/** A `connectors:` block for pcoip-lb's config, ready to paste. */
export function connectorsYaml(sims: readonly SimConnector[]): string {
  const lines = ['connectors:'];
  for (const s of sims) lines.push(`  - { id: ${s.id}, address: ${s.host}, ports: { broker: ${s.brokerPort}, pcoip: ${s.pcoipPort} } }`);
  return lines.join('\n');
}

/**
 * Operator commands typed on stdin while simulators run (demo and `simulate`):
 * `unhealthy <id> [reason…]`, `healthy <id>`, `list`. Returns the line to print.
 */
export function simCommand(line: string, sims: readonly SimConnector[]): string {
  const [verb, id, ...rest] = line.trim().split(/\s+/);
  if (!verb) return '';
  if (verb === 'list') return sims.map((s) => `${s.id}  health ${s.health.healthy ? 'up' : `down (${s.health.reason})`}, ${s.admittedSessions} session(s)`).join('\n');
  if (verb !== 'unhealthy' && verb !== 'healthy') return `unknown command "${verb}"; try: unhealthy <id> [reason], healthy <id>, list`;
  const sim = sims.find((s) => s.id === id);
  if (!sim) return `no simulated Connector "${id ?? ''}"; known: ${sims.map((s) => s.id).join(', ')}`;
  if (verb === 'healthy') {
    sim.setHealth(true);
    return `${sim.id}: GET /health now answers 200 {"code":200,"status":"success"}`;
  }
  sim.setHealth(false, rest.length > 0 ? rest.join(' ') : undefined);
  return `${sim.id}: GET /health now answers 500 (reason: ${sim.health.reason})`;
}
